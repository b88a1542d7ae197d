"""sc_proto.federation: Server-Server API protocol logic, sans-I/O.

Server-name resolution as steps (``discovery``), transactions (``transaction``), the checks on
received PDUs (``pdu_checks``) and server ACLs (``acl``).
"""

from sc_proto.federation.acl import SERVER_ACL_TYPE, is_server_allowed_by_acl
from sc_proto.federation.discovery import (
    DEFAULT_FEDERATION_PORT,
    WELL_KNOWN_DEFAULT_CACHE_S,
    WELL_KNOWN_ERROR_CACHE_MAX_S,
    WELL_KNOWN_ERROR_CACHE_MIN_S,
    WELL_KNOWN_MAX_CACHE_S,
    WELL_KNOWN_MIN_CACHE_S,
    WELL_KNOWN_PATH,
    FetchWellKnown,
    LookupSrv,
    Resolved,
    SrvRecord,
    Step,
    order_srv_records,
    parse_well_known,
    plan,
    well_known_cache_period,
)
from sc_proto.federation.pdu_checks import (
    HashCheck,
    SignatureCheck,
    apply_content_hash,
    key_validity_ts,
    parse_pdu,
    required_signers,
    signature_checks,
    verify_signatures,
)
from sc_proto.federation.transaction import (
    EDU,
    MAX_EDUS_PER_TRANSACTION,
    MAX_PDUS_PER_TRANSACTION,
    Transaction,
    build_transaction,
    parse_transaction,
)

__all__ = [
    "DEFAULT_FEDERATION_PORT",
    "EDU",
    "MAX_EDUS_PER_TRANSACTION",
    "MAX_PDUS_PER_TRANSACTION",
    "SERVER_ACL_TYPE",
    "WELL_KNOWN_DEFAULT_CACHE_S",
    "WELL_KNOWN_ERROR_CACHE_MAX_S",
    "WELL_KNOWN_ERROR_CACHE_MIN_S",
    "WELL_KNOWN_MAX_CACHE_S",
    "WELL_KNOWN_MIN_CACHE_S",
    "WELL_KNOWN_PATH",
    "FetchWellKnown",
    "HashCheck",
    "LookupSrv",
    "Resolved",
    "SignatureCheck",
    "SrvRecord",
    "Step",
    "Transaction",
    "apply_content_hash",
    "build_transaction",
    "is_server_allowed_by_acl",
    "key_validity_ts",
    "order_srv_records",
    "parse_pdu",
    "parse_transaction",
    "parse_well_known",
    "plan",
    "required_signers",
    "signature_checks",
    "verify_signatures",
    "well_known_cache_period",
]
