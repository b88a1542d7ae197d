"""The composition root and the ``sc-homeserver`` command line."""
