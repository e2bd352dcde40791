"""WSDL 1.1 documents (SOAP 1.2 binding, WS-Addressing metadata actions) for our endpoints.

Shaped like the IHE/IPF WSDLs (ITI TF-2x Appendix V), with our own address in soap12:address.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from soap_edge.soap.ns import HL7, QUERY, WSAM, WSDL, WSDL_SOAP12, XDSB, XSD, q

TARGET_NS = "urn:xcagw:soap-edge"


@dataclass(frozen=True)
class Operation:
    name: str
    action: str
    response_action: str
    request_element: tuple[str, str]
    response_element: tuple[str, str]


OPERATIONS: dict[str, Operation] = {
    "ITI-38": Operation(
        "RespondingGateway_CrossGatewayQuery",
        "urn:ihe:iti:2007:CrossGatewayQuery",
        "urn:ihe:iti:2007:CrossGatewayQueryResponse",
        (QUERY, "AdhocQueryRequest"),
        (QUERY, "AdhocQueryResponse"),
    ),
    "ITI-39": Operation(
        "RespondingGateway_CrossGatewayRetrieve",
        "urn:ihe:iti:2007:CrossGatewayRetrieve",
        "urn:ihe:iti:2007:CrossGatewayRetrieveResponse",
        (XDSB, "RetrieveDocumentSetRequest"),
        (XDSB, "RetrieveDocumentSetResponse"),
    ),
    "ITI-47": Operation(
        "PDSupplier_PRPA_IN201305UV02",
        "urn:hl7-org:v3:PRPA_IN201305UV02",
        "urn:hl7-org:v3:PRPA_IN201306UV02",
        (HL7, "PRPA_IN201305UV02"),
        (HL7, "PRPA_IN201306UV02"),
    ),
    "ITI-47-continue": Operation(
        "PDSupplier_QUQI_IN000003UV01_Continue",
        "urn:hl7-org:v3:QUQI_IN000003UV01_Continue",
        "urn:hl7-org:v3:PRPA_IN201306UV02",
        (HL7, "QUQI_IN000003UV01"),
        (HL7, "PRPA_IN201306UV02"),
    ),
    "ITI-47-cancel": Operation(
        "PDSupplier_QUQI_IN000003UV01_Cancel",
        "urn:hl7-org:v3:QUQI_IN000003UV01_Cancel",
        "urn:hl7-org:v3:MCCI_IN000002UV01",
        (HL7, "QUQI_IN000003UV01"),
        (HL7, "MCCI_IN000002UV01"),
    ),
    "ITI-55": Operation(
        "RespondingGateway_PRPA_IN201305UV02",
        "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery",
        "urn:hl7-org:v3:PRPA_IN201306UV02:CrossGatewayPatientDiscovery",
        (HL7, "PRPA_IN201305UV02"),
        (HL7, "PRPA_IN201306UV02"),
    ),
}


def build_wsdl(service: str, operations: list[str], address: str) -> bytes:
    """A WSDL describing `operations` at `address`."""
    ops = [OPERATIONS[o] for o in operations]
    nsmap = {
        None: WSDL,
        "tns": TARGET_NS,
        "xsd": XSD,
        "soap12": WSDL_SOAP12,
        "wsam": WSAM,
        "query": QUERY,
        "xdsb": XDSB,
        "hl7": HL7,
    }
    prefix = {QUERY: "query", XDSB: "xdsb", HL7: "hl7"}
    defs = etree.Element(q(WSDL, "definitions"), nsmap=nsmap)
    defs.set("name", service)
    defs.set("targetNamespace", TARGET_NS)
    types = etree.SubElement(defs, q(WSDL, "types"))
    schema = etree.SubElement(types, q(XSD, "schema"))
    schema.set("elementFormDefault", "qualified")
    for ns in sorted({o.request_element[0] for o in ops} | {o.response_element[0] for o in ops}):
        etree.SubElement(schema, q(XSD, "import")).set("namespace", ns)
    for op in ops:
        for suffix, (ns, local) in (
            ("_Message", op.request_element),
            ("Response_Message", op.response_element),
        ):
            msg = etree.SubElement(defs, q(WSDL, "message"))
            msg.set("name", op.name + suffix)
            part = etree.SubElement(msg, q(WSDL, "part"))
            part.set("name", "body")
            part.set("element", f"{prefix[ns]}:{local}")
    port_type = etree.SubElement(defs, q(WSDL, "portType"))
    port_type.set("name", f"{service}_PortType")
    for op in ops:
        o = etree.SubElement(port_type, q(WSDL, "operation"))
        o.set("name", op.name)
        inp = etree.SubElement(o, q(WSDL, "input"))
        inp.set("message", f"tns:{op.name}_Message")
        inp.set(q(WSAM, "Action"), op.action)
        out = etree.SubElement(o, q(WSDL, "output"))
        out.set("message", f"tns:{op.name}Response_Message")
        out.set(q(WSAM, "Action"), op.response_action)
    binding = etree.SubElement(defs, q(WSDL, "binding"))
    binding.set("name", f"{service}_Binding_Soap12")
    binding.set("type", f"tns:{service}_PortType")
    sb = etree.SubElement(binding, q(WSDL_SOAP12, "binding"))
    sb.set("style", "document")
    sb.set("transport", "http://schemas.xmlsoap.org/soap/http")
    for op in ops:
        o = etree.SubElement(binding, q(WSDL, "operation"))
        o.set("name", op.name)
        etree.SubElement(o, q(WSDL_SOAP12, "operation")).set("soapActionRequired", "false")
        for io in ("input", "output"):
            body = etree.SubElement(etree.SubElement(o, q(WSDL, io)), q(WSDL_SOAP12, "body"))
            body.set("use", "literal")
    svc = etree.SubElement(defs, q(WSDL, "service"))
    svc.set("name", f"{service}_Service")
    port = etree.SubElement(svc, q(WSDL, "port"))
    port.set("name", f"{service}_Port_Soap12")
    port.set("binding", f"tns:{service}_Binding_Soap12")
    etree.SubElement(port, q(WSDL_SOAP12, "address")).set("location", address)
    return bytes(etree.tostring(defs, xml_declaration=True, encoding="UTF-8", pretty_print=True))
