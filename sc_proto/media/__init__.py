"""sc_proto.media: Matrix content (``mxc://``) URIs."""

from sc_proto.media.mxc import MXCUri, parse_mxc

__all__ = ["MXCUri", "parse_mxc"]
