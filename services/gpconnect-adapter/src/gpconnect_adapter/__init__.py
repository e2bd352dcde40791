"""gpconnect_adapter."""
