"""Presence: online/unavailable/offline per user, derived from activity (spec module "Presence")."""

__all__: list[str] = []
