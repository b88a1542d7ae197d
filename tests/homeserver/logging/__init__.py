"""Tests for homeserver.logging."""
