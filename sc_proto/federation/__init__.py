"""Federation: transactions, the checks on received PDUs, and server ACLs."""

from sc_proto.federation.acl import SERVER_ACL_TYPE, is_server_allowed_by_acl
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
    "EDU",
    "MAX_EDUS_PER_TRANSACTION",
    "MAX_PDUS_PER_TRANSACTION",
    "SERVER_ACL_TYPE",
    "HashCheck",
    "SignatureCheck",
    "Transaction",
    "apply_content_hash",
    "build_transaction",
    "is_server_allowed_by_acl",
    "key_validity_ts",
    "parse_pdu",
    "parse_transaction",
    "required_signers",
    "signature_checks",
    "verify_signatures",
]
