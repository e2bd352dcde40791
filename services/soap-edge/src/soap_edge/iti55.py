"""ITI-55 Cross Gateway Patient Discovery, responding gateway: the PDQ query with XCPD actions.

XCPD specifics (ITI TF-2b 3.55.4.2, implemented in iti47.answer_query with xcpd=True): the
custodian is our homeCommunityId with code NotHealthDataLocator (3.55.4.2.2.4-5); "too many
matches" is AA/OK with no subject and a reasonOf/detectedIssueEvent/triggerFor/actOrderRequired
per demographic to add (Case 3, 3.55.4.2.2.6), or AE/AE with mitigatedBy AnswerNotAvailable when
there is nothing left to ask for (Case 5, 3.55.4.2.2.7); a livingSubjectId in a domain we do not
know (the initiating community's own id, 3.55.1) is left out rather than refused; the queryAck
carries no quantities and initialQuantity is ignored.
"""

from __future__ import annotations

from soap_edge.exchange import Exchange, Gateway, Reply
from soap_edge.iti47 import BODY_ROOT, answer_query

ACTION = "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery"
RESPONSE_ACTION = "urn:hl7-org:v3:PRPA_IN201306UV02:CrossGatewayPatientDiscovery"

__all__ = ["ACTION", "BODY_ROOT", "RESPONSE_ACTION", "handle"]


async def handle(gw: Gateway, ex: Exchange) -> Reply:
    return await answer_query(gw, ex, xcpd=True)
