"""Typed builders and parsers of the Server-Server API membership dances.

Covers ``make_join``/``send_join`` (v2), ``make_leave``/``send_leave`` (v2), ``make_knock``/
``send_knock`` and ``invite`` (v2), request and response bodies (spec server-server-api.md "Joining
Rooms", "Knocking upon a room", "Inviting to a room", "Leaving Rooms").

Theory of operation. A remote dance is two requests: the *make* request asks a resident server for
an event template (``{"event": ..., "room_version": ...}``); the joining server fills the template
in (:func:`fill_membership_template`: our timestamp, origin and content, keeping what the resident
server put there such as ``join_authorised_via_users_server``), signs it and sends it with the *send*
request. The resident server checks the event (:func:`check_membership_event`) like any PDU and
answers. Every parser here is lenient about unknown keys and strict about the types of the keys it
reads: a malformed body raises :class:`~sc_proto.errors.RemoteProtocolError` (400 ``M_BAD_JSON``),
so hosts can map a peer's garbage to one error.

Room versions: the joining server lists the versions it supports in ``ver`` query parameters
(:func:`ver_query`, :func:`parse_ver_query`); without any, the spec says only version 1 is
supported. :func:`check_room_version_supported` raises 400 ``M_INCOMPATIBLE_ROOM_VERSION`` with the
``room_version`` field the spec requires.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sc_proto.errors import Codes, MatrixError, RemoteProtocolError
from sc_proto.events.builder import build_event
from sc_proto.events.model import Event
from sc_proto.identifiers import UserID
from sc_proto.room_versions import RoomVersion

JsonDict = dict[str, Any]

JOIN = "join"
LEAVE = "leave"
KNOCK = "knock"
INVITE = "invite"
MEMBER = "m.room.member"

DEFAULT_REMOTE_VERSIONS: tuple[str, ...] = ("1",)
"""What a server that sent no ``ver`` parameter supports (spec: "defaults to [1]")."""

ALLOWED_TEMPLATE_CONTENT: frozenset[str] = frozenset({"join_authorised_via_users_server"})
"""Content keys of a resident server's template that the joiner keeps (restricted joins)."""


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, Codes.BAD_JSON)


def _object(value: object, what: str) -> JsonDict:
    if not isinstance(value, Mapping):
        raise _bad(f"{what} must be an object")
    return dict(value)


def _objects(value: object, what: str) -> list[JsonDict]:
    if not isinstance(value, list):
        raise _bad(f"{what} must be a list")
    out: list[JsonDict] = []
    for item in value:
        out.append(_object(item, f"entries of {what}"))
    return out


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _bad(f"{what} must be a string")
    return value


def _domain(user_id: object) -> str | None:
    try:
        return UserID.parse(user_id, historical=True).domain
    except MatrixError:
        return None


# --- room versions ------------------------------------------------------------------------


def ver_query(supported: Iterable[str]) -> dict[str, list[str]]:
    """The ``ver`` query parameters of a ``make_join``/``make_knock`` request."""
    return {"ver": list(supported)}


def parse_ver_query(query: Mapping[str, Sequence[str]]) -> list[str]:
    """The room versions a joining server supports, from its ``ver`` query parameters."""
    versions = [v for v in query.get("ver", ()) if isinstance(v, str)]
    return versions or list(DEFAULT_REMOTE_VERSIONS)


def check_room_version_supported(room_version: str, supported: Iterable[str]) -> None:
    """Refuses a dance when the other server does not support the room's version.

    Raises:
        MatrixError: 400 ``M_INCOMPATIBLE_ROOM_VERSION`` with ``room_version`` set.
    """
    if room_version not in set(supported):
        raise MatrixError(
            400,
            Codes.INCOMPATIBLE_ROOM_VERSION,
            "Your homeserver does not support the features required to interact with this room",
            {"room_version": room_version},
        )


# --- make_join / make_leave / make_knock ----------------------------------------------------


@dataclass(frozen=True)
class MakeMembershipResponse:
    """The answer of ``make_join``, ``make_leave`` or ``make_knock``: a template and the room version.

    Attributes:
        room_version: the room's version identifier.
        event: the unsigned event template.
    """

    room_version: str
    event: JsonDict

    def to_json(self) -> JsonDict:
        """The response body."""
        return {"room_version": self.room_version, "event": dict(self.event)}

    @classmethod
    def parse(cls, body: object, *, default_version: str = "1") -> MakeMembershipResponse:
        """Parses a ``make_*`` response (``room_version`` absent means v1 per the spec).

        Raises:
            RemoteProtocolError: the body is malformed.
        """
        obj = _object(body, "response")
        version = obj.get("room_version", default_version)
        return cls(_string(version, "room_version"), _object(obj.get("event"), "event"))


def build_membership_template(
    *,
    room_version: RoomVersion,
    room_id: str,
    user_id: str,
    membership: str,
    origin: str,
    prev_event_ids: Sequence[str],
    auth_event_ids: Sequence[str],
    depth: int,
    origin_server_ts: int,
    content: Mapping[str, Any] | None = None,
) -> JsonDict:
    """The template a resident server answers ``make_*`` with (no hashes or signatures), in the
    room version's format (in rooms v1-v2 with an ``event_id`` the joiner replaces).

    Args:
        origin: the resident server (the joiner sets its own ``origin`` when it fills the template).
    """
    body: dict[str, Any] = dict(content or {})
    body["membership"] = membership
    return build_event(
        room_version=room_version, room_id=room_id, type=MEMBER, sender=user_id, content=body,
        prev_event_ids=prev_event_ids, auth_event_ids=auth_event_ids, depth=depth,
        origin_server_ts=origin_server_ts, state_key=user_id, origin=origin,
    )


def fill_membership_template(
    template: Mapping[str, Any],
    *,
    room_id: str,
    user_id: str,
    membership: str,
    origin: str,
    origin_server_ts: int,
    content: Mapping[str, Any] | None = None,
) -> JsonDict:
    """Checks a resident server's template and fills in our parts; the host then signs it.

    The template must be our user's ``m.room.member`` event in the room with the expected
    membership. We set ``origin``, ``origin_server_ts`` and the content (ours, plus the template's
    ``join_authorised_via_users_server``); hashes and signatures of the template are dropped.

    Raises:
        RemoteProtocolError: the template is not the event we asked for (400 ``M_BAD_JSON``).
    """
    pdu = _object(template, "event")
    for key, expected in (("type", MEMBER), ("room_id", room_id), ("sender", user_id), ("state_key", user_id)):
        if pdu.get(key) != expected:
            raise _bad(f"template has the wrong {key}")
    template_content = _object(pdu.get("content", {}), "content")
    if template_content.get("membership") != membership:
        raise _bad("template has the wrong membership")
    filled: dict[str, Any] = {k: v for k, v in template_content.items() if k in ALLOWED_TEMPLATE_CONTENT}
    filled.update(content or {})
    filled["membership"] = membership
    for key in ("prev_events", "auth_events"):
        if not isinstance(pdu.get(key), list):
            raise _bad(f"template has no {key}")
    depth = pdu.get("depth")
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise _bad("template has no depth")
    out = {k: v for k, v in pdu.items() if k not in ("hashes", "signatures", "unsigned")}
    out["content"] = filled
    out["origin"] = origin
    out["origin_server_ts"] = origin_server_ts
    return out


# --- send_join / send_leave / send_knock ------------------------------------------------------


def check_membership_event(
    event: Event,
    *,
    origin: str,
    room_id: str,
    event_id: str,
    membership: str,
) -> None:
    """The checks a resident server runs on a ``send_join``/``send_leave``/``send_knock`` event
    before the PDU checks: the event is the one the path names, it is the sender's own
    ``m.room.member`` event with the expected membership, and the sender belongs to ``origin``.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` when the event does not match the request; 403
            ``M_FORBIDDEN`` when the sender is not a user of the origin server.
    """
    if event.event_id != event_id:
        raise _bad("The event ID does not match the event")
    if event.room_id != room_id:
        raise _bad("The room ID does not match the event")
    if event.type != MEMBER or event.state_key != event.sender:
        raise _bad("The event is not the sender's membership event")
    if event.membership != membership:
        raise _bad(f"The event's membership is not {membership}")
    if _domain(event.sender) != origin:
        raise MatrixError(403, Codes.FORBIDDEN, "The sender is not a user of the requesting server")


@dataclass(frozen=True)
class SendJoinResponse:
    """The answer of ``PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}``.

    Attributes:
        state: the room state before the join event (PDUs).
        auth_chain: the auth chain of that state and of the join event (PDUs).
        event: the join event as the resident server signed it (restricted joins), or None.
        members_omitted: whether member events were left out of ``state`` (partial state).
        servers_in_room: the servers in the room (with ``members_omitted`` only).
    """

    state: list[JsonDict]
    auth_chain: list[JsonDict]
    event: JsonDict | None = None
    members_omitted: bool = False
    servers_in_room: list[str] | None = None
    origin: str = ""

    def to_json(self) -> JsonDict:
        """The response body."""
        body: JsonDict = {
            "origin": self.origin,
            "state": [dict(e) for e in self.state],
            "auth_chain": [dict(e) for e in self.auth_chain],
            "members_omitted": self.members_omitted,
        }
        if self.event is not None:
            body["event"] = dict(self.event)
        if self.servers_in_room is not None:
            body["servers_in_room"] = list(self.servers_in_room)
        return body

    @classmethod
    def parse(cls, body: object) -> SendJoinResponse:
        """Parses a ``send_join`` v2 response.

        Raises:
            RemoteProtocolError: the body is malformed.
        """
        obj = _object(body, "response")
        event = obj.get("event")
        servers = obj.get("servers_in_room")
        if servers is not None and not (isinstance(servers, list) and all(isinstance(s, str) for s in servers)):
            raise _bad("servers_in_room must be a list of strings")
        omitted = obj.get("members_omitted", False)
        if not isinstance(omitted, bool):
            raise _bad("members_omitted must be a boolean")
        origin = obj.get("origin", "")
        return cls(
            state=_objects(obj.get("state"), "state"),
            auth_chain=_objects(obj.get("auth_chain"), "auth_chain"),
            event=_object(event, "event") if event is not None else None,
            members_omitted=omitted,
            servers_in_room=list(servers) if servers is not None else None,
            origin=origin if isinstance(origin, str) else "",
        )


@dataclass(frozen=True)
class SendKnockResponse:
    """The answer of ``PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}``.

    Attributes:
        knock_room_state: stripped state for the knocking user's client.
    """

    knock_room_state: list[JsonDict] = field(default_factory=list)

    def to_json(self) -> JsonDict:
        """The response body."""
        return {"knock_room_state": [dict(e) for e in self.knock_room_state]}

    @classmethod
    def parse(cls, body: object) -> SendKnockResponse:
        """Parses a ``send_knock`` response (a missing ``knock_room_state`` is empty).

        Raises:
            RemoteProtocolError: the body is malformed.
        """
        obj = _object(body, "response")
        return cls(parse_stripped_state(obj.get("knock_room_state", [])))


# --- invite v2 ----------------------------------------------------------------------------------


def parse_stripped_state(value: object) -> list[JsonDict]:
    """Stripped state events (``type``, ``state_key``, ``content``, ``sender``); other keys are kept.

    Raises:
        RemoteProtocolError: not a list of objects with the four keys of the right types.
    """
    out = _objects(value, "stripped state")
    for entry in out:
        _string(entry.get("type"), "type")
        _string(entry.get("state_key"), "state_key")
        _string(entry.get("sender"), "sender")
        _object(entry.get("content"), "content")
    return out


@dataclass(frozen=True)
class InviteRequest:
    """The body of ``PUT /_matrix/federation/v2/invite/{roomId}/{eventId}``.

    Attributes:
        room_version: the room's version.
        event: the invite event, signed by the inviting server.
        invite_room_state: stripped state for the invitee's client.
    """

    room_version: str
    event: JsonDict
    invite_room_state: list[JsonDict] = field(default_factory=list)

    def to_json(self) -> JsonDict:
        """The request body."""
        return {
            "room_version": self.room_version,
            "event": dict(self.event),
            "invite_room_state": [dict(e) for e in self.invite_room_state],
        }

    @classmethod
    def parse(cls, body: object) -> InviteRequest:
        """Parses an invite v2 request body.

        Raises:
            RemoteProtocolError: the body is malformed.
        """
        obj = _object(body, "request")
        return cls(
            _string(obj.get("room_version"), "room_version"),
            _object(obj.get("event"), "event"),
            parse_stripped_state(obj.get("invite_room_state", [])),
        )


def check_invite_event(event: Event, *, origin: str, room_id: str, event_id: str) -> None:
    """The checks an invitee's server runs on an invite before signing it: the event is the one the
    path names, an ``m.room.member`` invite, and its sender belongs to ``origin``. The host checks
    that ``state_key`` is one of its own users.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` when the event does not match; 403 ``M_FORBIDDEN`` when the
            sender is not a user of the origin server.
    """
    if event.event_id != event_id:
        raise _bad("The event ID does not match the event")
    if event.room_id != room_id:
        raise _bad("The room ID does not match the event")
    if event.type != MEMBER or event.state_key is None or event.membership != INVITE:
        raise _bad("The event is not an invite")
    if _domain(event.sender) != origin:
        raise MatrixError(403, Codes.FORBIDDEN, "The sender is not a user of the requesting server")
    if _domain(event.state_key) is None:
        raise _bad("The invitee is not a user ID")


def parse_invite_response(body: object) -> JsonDict:
    """The countersigned invite event of an invite v2 response (``{"event": ...}``).

    Raises:
        RemoteProtocolError: the body is malformed.
    """
    return _object(_object(body, "response").get("event"), "event")


def parse_event_response(body: object) -> JsonDict | None:
    """The ``event`` of a v1-style ``[200, {...}]`` or v2 ``{...}`` body, for send_leave/knock
    answers that carry one (None otherwise)."""
    if isinstance(body, list) and len(body) == 2 and isinstance(body[1], Mapping):
        body = body[1]
    if isinstance(body, Mapping) and isinstance(body.get("event"), Mapping):
        return dict(body["event"])
    return None
