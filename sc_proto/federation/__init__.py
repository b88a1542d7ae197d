"""sc_proto.federation: Server-Server API protocol logic (server-name resolution as steps)."""

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

__all__ = [
    "DEFAULT_FEDERATION_PORT",
    "WELL_KNOWN_DEFAULT_CACHE_S",
    "WELL_KNOWN_ERROR_CACHE_MAX_S",
    "WELL_KNOWN_ERROR_CACHE_MIN_S",
    "WELL_KNOWN_MAX_CACHE_S",
    "WELL_KNOWN_MIN_CACHE_S",
    "WELL_KNOWN_PATH",
    "FetchWellKnown",
    "LookupSrv",
    "Resolved",
    "SrvRecord",
    "Step",
    "order_srv_records",
    "parse_well_known",
    "plan",
    "well_known_cache_period",
]
