"""ITI-55 Cross Gateway Patient Discovery, responding gateway: the PDQ query with XCPD actions.

XCPD specifics (ITI TF-2b 3.55.4.4): the custodian is our homeCommunityId with code
NotHealthDataLocator, and "too many matches" comes back as NF plus a reasonOf/detectedIssueEvent
telling the initiator which demographic to add.
"""

from __future__ import annotations

from soap_edge.exchange import Exchange, Gateway, Reply
from soap_edge.iti47 import BODY_ROOT, answer_query

ACTION = "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery"
RESPONSE_ACTION = "urn:hl7-org:v3:PRPA_IN201306UV02:CrossGatewayPatientDiscovery"

__all__ = ["ACTION", "BODY_ROOT", "RESPONSE_ACTION", "handle"]


async def handle(gw: Gateway, ex: Exchange) -> Reply:
    return await answer_query(gw, ex, xcpd=True)
