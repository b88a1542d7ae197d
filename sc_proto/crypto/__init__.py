"""sc_proto.crypto."""
