"""The requesting organisation's ODS code: one resolution for every service that sends it.

token-service puts it in the GP Connect JWT (`requesting_organization`, GP Connect 1.6 audit and
provenance) and pds-adapter sends it as `NHSD-End-User-Organisation-ODS` (nhs-apis.md §1.3:
mandatory for apps serving several end-user organisations, the **requesting** organisation's
code). Both start from RequestContext.organization_id (the XUA subject:organization-id), which a
partner may send as an ODS code or as another identifier (e.g. an OID) that the deployment maps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# ODS organisation codes are 3 to 10 upper-case letters and digits (e.g. X26, RXX01, Y12345).
ODS_CODE = re.compile(r"^[A-Z0-9]{3,10}$")


def is_ods_code(value: str) -> bool:
    """True when `value` is shaped like an ODS organisation code (no surrounding whitespace)."""
    return ODS_CODE.fullmatch(value) is not None


def resolve_ods_code(organization_id: str, ods_map: Mapping[str, str], default: str) -> str:
    """The requesting organisation's ODS code, or `default` (which may be empty).

    In order: the configured map's value for the organisation id, the organisation id itself when
    it is an ODS code, else `default`. The id is compared without surrounding whitespace; the map's
    values and `default` are returned as given (callers validate them when loading settings).
    """
    org = organization_id.strip()
    if org and org in ods_map:
        return ods_map[org]
    if is_ods_code(org):
        return org
    return default


def validate_ods_map(ods_map: Mapping[str, str]) -> dict[str, str]:
    """The map with keys and values stripped; ValueError naming the first bad entry.

    For settings validators: a wrong value would otherwise only show up as a header or claim
    that NHS services reject (or record against the wrong organisation) at request time.
    """
    cleaned: dict[str, str] = {}
    for key, value in ods_map.items():
        org = key.strip()
        ods = value.strip()
        if not org:
            raise ValueError("organisation ids in the ODS map must not be empty")
        if not is_ods_code(ods):
            raise ValueError(
                f"ODS map value {value!r} for {org!r} is not an ODS code "
                "(3-10 upper-case letters/digits)"
            )
        if org in cleaned and cleaned[org] != ods:
            raise ValueError(f"organisation id {org!r} is mapped twice to different ODS codes")
        cleaned[org] = ods
    return cleaned
