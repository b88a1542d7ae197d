"""Tests for homeserver.util."""
