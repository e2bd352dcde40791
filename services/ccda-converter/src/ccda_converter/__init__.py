"""ccda_converter."""
