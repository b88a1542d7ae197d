"""The error raised for any problem in the homeserver configuration."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem, naming where in the YAML it is.

    The string form is ``"<path>: <problem>"`` (for example
    ``"database.pool_max: expected a positive integer, got 'ten'"``), or just the problem when it is
    not tied to one option (an unreadable file, invalid YAML).

    Args:
        message: what is wrong, phrased for the person editing the file.
        path: the dotted YAML path of the offending option (``server.listeners[0].port``), or
            ``None`` when the problem concerns the whole file.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        self.message = message
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)
