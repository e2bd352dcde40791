"""FHIR date/dateTime/instant strings to HL7 v3 TS values, keeping the source precision.

HL7 C-CDA on FHIR mappingGuidance: "2023" -> "2023", "2023-05-31" -> "20230531",
"2023-05-31T22:05-05:00" -> "202305312205-0500". GP Connect dateTimes without a timezone keep no
offset rather than an invented one.
"""

from __future__ import annotations

import datetime as dt
import functools
import re

_FHIR_DATE = re.compile(
    r"^\s*(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?)?)?)?\s*$"
)


def to_ts(value: object) -> str | None:
    """HL7 TS for a FHIR date/dateTime/instant string, or None when it is not one."""
    if not isinstance(value, str):
        return None
    return ts_of(value)


@functools.lru_cache(maxsize=32768)
def ts_of(value: str) -> str | None:
    """``to_ts`` for a string (memoised: records repeat the same dates)."""
    m = _FHIR_DATE.match(value)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    out = year
    if month:
        if not 1 <= int(month) <= 12:
            return None
        out += month
        if day:
            if not 1 <= int(day) <= 31:
                return None
            out += day
            if hour:
                out += hour + minute
                if second:
                    out += second
                    if frac:
                        out += frac
                if tz:
                    out += "+0000" if tz == "Z" else tz.replace(":", "")
    return out


def sort_key(ts: str) -> str:
    """A string that orders TS values chronologically (ignoring offsets), padded to seconds."""
    digits = ts[:14]
    return digits + "0" * (14 - len(digits))


def now_ts(moment: dt.datetime) -> str:
    """US Realm DTM for the document header: seconds and an explicit offset (CONF:1198-5256)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.strftime("%Y%m%d%H%M%S%z")


def display_date(value: object) -> str:
    """A human date for narrative tables: the source value trimmed to minutes, 'T' as space."""
    if value.__class__ is not str:
        return _display_date(value) if isinstance(value, str) else ""
    return _display_date(value)


@functools.lru_cache(maxsize=32768)
def _display_date(value: str) -> str:
    """``display_date`` for a string (memoised: records repeat the same dates)."""
    if not value.strip():
        return ""
    text = value.strip()
    if "T" in text:
        date_part, _, time_part = text.partition("T")
        hhmm = time_part[:5]
        if hhmm in ("00:00",):
            return date_part
        return f"{date_part} {hhmm}"
    return text
