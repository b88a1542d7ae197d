"""sc_proto.auth."""
