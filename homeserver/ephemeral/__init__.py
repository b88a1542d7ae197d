"""Ephemeral and per-user room data: typing notifications, read receipts, read markers, unread counts
(spec client-server-api modules "Typing Notifications", "Receipts", "Read and unread markers")."""

__all__: list[str] = []
