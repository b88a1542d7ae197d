"""sc_proto.state: auth chains and state resolution (v2 for rooms v2-v11, v2.1 for room v12).

Sans I/O: :func:`prepare` says which events the host must load, :func:`resolve` is pure.
"""

from sc_proto.state.auth_chain import (
    MissingEventsError,
    auth_chain_difference,
    conflicted_subgraph,
    get_auth_chain,
    get_auth_closure,
)
from sc_proto.state.v2 import (
    AuthChecker,
    InconsistentStateInputError,
    StateResPrep,
    full_conflicted_set,
    is_power_event,
    prepare,
    resolve,
    separate,
)

__all__ = [
    "AuthChecker",
    "InconsistentStateInputError",
    "MissingEventsError",
    "StateResPrep",
    "auth_chain_difference",
    "conflicted_subgraph",
    "full_conflicted_set",
    "get_auth_chain",
    "get_auth_closure",
    "is_power_event",
    "prepare",
    "resolve",
    "separate",
]
