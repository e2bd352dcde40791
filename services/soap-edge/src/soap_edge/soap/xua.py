"""homeCommunityId normalisation, shared with the XUA layer.

The XUA (ITI-40) assertion itself is verified and read by `soap_edge.security.xua`.
"""

from __future__ import annotations

from soap_edge.security.partners import normalise_hcid

__all__ = ["normalise_hcid"]
