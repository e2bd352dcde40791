"""The one SOAP 1.2 / WS-Addressing / MTOM layer shared by every transaction."""
