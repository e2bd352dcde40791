"""xcagw_common."""
