"""Accounts, sessions and user-interactive authentication."""
