"""The package version, shared by sc_proto and the homeserver distribution."""

__version__ = "0.1.0"
