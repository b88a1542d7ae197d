"""Server ACLs (``m.room.server_acl``): whether a server may take part in a room.

The event's content, in the spec's order ("Server ACL" event schema):

1. no ``m.room.server_acl`` in the room state: allow;
2. the server name is an IP literal and ``allow_ip_literals`` is ``false``: deny (missing or not a
   boolean counts as ``true``);
3. the server name matches a ``deny`` glob: deny;
4. it matches an ``allow`` glob: allow;
5. otherwise deny (a missing ``allow`` denies everyone).

Server names are compared without their port, case-insensitively, with the appendices' glob
syntax (``*`` any run of characters, ``?`` one character). Entries that are not strings are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sc_proto.errors import InvalidIdentifierError
from sc_proto.identifiers import ServerName

__all__ = ["SERVER_ACL_TYPE", "is_server_allowed_by_acl"]

SERVER_ACL_TYPE = "m.room.server_acl"


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    parts = ["." if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _globs(content: Mapping[str, Any], key: str) -> list[str]:
    value = content.get(key)
    return [p for p in value if isinstance(p, str)] if isinstance(value, list) else []


def is_server_allowed_by_acl(server_name: str, acl_content: Mapping[str, Any] | None) -> bool:
    """Whether ``server_name`` may take part in a room whose ACL content is ``acl_content``.

    Args:
        server_name: the server (a port, if any, is ignored).
        acl_content: the ``m.room.server_acl`` content in the room's state, or None when there is none.

    Returns:
        True when allowed; a malformed server name is denied when an ACL exists.
    """
    if acl_content is None:
        return True
    try:
        parsed = ServerName.parse(server_name)
    except InvalidIdentifierError:
        return False
    allow_ip = acl_content.get("allow_ip_literals", True)
    if parsed.is_ip_literal and allow_ip is False:
        return False
    host = parsed.host
    if any(_glob(p).fullmatch(host) for p in _globs(acl_content, "deny")):
        return False
    return any(_glob(p).fullmatch(host) for p in _globs(acl_content, "allow"))
