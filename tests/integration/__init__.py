"""Integration tests: real server processes on loopback, real databases, real Matrix client libraries."""
