"""sc_proto.media."""
