"""Tests for homeserver.config."""
