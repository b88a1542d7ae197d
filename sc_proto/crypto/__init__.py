"""Keys and signatures: Ed25519 signing keys, key IDs, JSON/event signing and ``X-Matrix``."""

from sc_proto.crypto.keys import (
    SigningKey,
    VerifyKey,
    decode_signing_key_base64,
    decode_verify_key_base64,
    encode_verify_key_base64,
    generate_signing_key,
    get_key_id,
    get_verify_key,
    read_signing_keys,
    write_signing_keys,
)
from sc_proto.crypto.signing import (
    XMatrixAuth,
    build_request_json,
    parse_x_matrix_header,
    sign_event,
    sign_json,
    sign_request,
    verify_event_signature,
    verify_json,
    verify_request,
)

__all__ = [
    "SigningKey",
    "VerifyKey",
    "XMatrixAuth",
    "build_request_json",
    "decode_signing_key_base64",
    "decode_verify_key_base64",
    "encode_verify_key_base64",
    "generate_signing_key",
    "get_key_id",
    "get_verify_key",
    "parse_x_matrix_header",
    "read_signing_keys",
    "sign_event",
    "sign_json",
    "sign_request",
    "verify_event_signature",
    "verify_json",
    "verify_request",
    "write_signing_keys",
]
