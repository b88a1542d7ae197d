"""End-to-end encryption structures the server checks: device keys, one-time and fallback keys."""

from sc_proto.e2ee.keys import (
    DeviceKeys,
    InvalidKeysError,
    OneTimeKey,
    canonical_key_json,
    parse_device_keys,
    parse_fallback_keys,
    parse_one_time_keys,
    split_key_id,
    verify_device_keys,
    verify_signed_by,
)

__all__ = [
    "DeviceKeys",
    "InvalidKeysError",
    "OneTimeKey",
    "canonical_key_json",
    "parse_device_keys",
    "parse_fallback_keys",
    "parse_one_time_keys",
    "split_key_id",
    "verify_device_keys",
    "verify_signed_by",
]
