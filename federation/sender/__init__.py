"""Outbound sending: per-destination queues with a persistent outbox, transactions, backoff (issue 13).

See :mod:`federation.sender.service` for the theory of operation and docs/federation-sending.md.
"""

from federation.sender.backoff import BackoffPolicy, RetryState
from federation.sender.queue import DestinationQueue, QueueSettings
from federation.sender.service import (
    PERSISTENT_EDU_TYPES,
    FederationSenderService,
    SenderSettings,
    destination_shard,
)
from federation.sender.transactions import MAX_EDUS_PER_TRANSACTION, MAX_PDUS_PER_TRANSACTION

__all__ = [
    "MAX_EDUS_PER_TRANSACTION",
    "MAX_PDUS_PER_TRANSACTION",
    "PERSISTENT_EDU_TYPES",
    "BackoffPolicy",
    "DestinationQueue",
    "FederationSenderService",
    "QueueSettings",
    "RetryState",
    "SenderSettings",
    "destination_shard",
]
