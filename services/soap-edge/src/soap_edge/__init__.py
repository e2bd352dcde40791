"""soap_edge."""
