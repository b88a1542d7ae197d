"""Events: the frozen model, builder, hashes, event IDs, redaction and validation."""
