"""xcagw_devstack."""
