"""Tests of the federation adapter (issue 13)."""
