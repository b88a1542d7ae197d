"""sc_proto tests."""
