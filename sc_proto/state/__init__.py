"""sc_proto.state."""
