"""pds_adapter."""
