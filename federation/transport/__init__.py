"""The federation transport: the outbound client (``client``), the inbound resource (``server``) and
the connection checks they share (``connect``)."""
