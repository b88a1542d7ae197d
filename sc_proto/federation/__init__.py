"""Server-Server API helpers: server signing keys (publish, parse, verify, notary queries)."""

from sc_proto.federation.keys import (
    MAX_KEY_VALIDITY_MS,
    MAX_KEYS_PER_RESPONSE,
    KeyQuery,
    ServerKeys,
    ServerVerifyKey,
    build_key_query_request,
    build_server_keys_response,
    key_valid_at,
    key_validity_ts,
    notary_sign,
    parse_key_query_request,
    parse_notary_entry,
    parse_notary_response,
    parse_server_keys,
)

__all__ = [
    "MAX_KEYS_PER_RESPONSE",
    "MAX_KEY_VALIDITY_MS",
    "KeyQuery",
    "ServerKeys",
    "ServerVerifyKey",
    "build_key_query_request",
    "build_server_keys_response",
    "key_valid_at",
    "key_validity_ts",
    "notary_sign",
    "parse_key_query_request",
    "parse_notary_entry",
    "parse_notary_response",
    "parse_server_keys",
]
