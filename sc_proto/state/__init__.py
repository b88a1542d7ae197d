"""sc_proto.state: auth chains and state resolution (v1 for room v1, v2 for rooms v2-v11, v2.1
for room v12).

Sans I/O: :func:`prepare` says which events the host must load, :func:`resolve` is pure and
dispatches on ``room_version.state_res``. For room version 1, :func:`prepare_v1` asks for fewer
events than :func:`prepare` (whose result also works).
"""

from sc_proto.state.auth_chain import (
    MissingEventsError,
    auth_chain_difference,
    conflicted_subgraph,
    get_auth_chain,
    get_auth_closure,
)
from sc_proto.state.v1 import StateResPrepV1
from sc_proto.state.v1 import prepare as prepare_v1
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
    "StateResPrepV1",
    "auth_chain_difference",
    "conflicted_subgraph",
    "full_conflicted_set",
    "get_auth_chain",
    "get_auth_closure",
    "is_power_event",
    "prepare",
    "prepare_v1",
    "resolve",
    "separate",
]
