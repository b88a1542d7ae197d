"""The core's ports (DESIGN.md 2.2, 2.3): what the core needs from outside, and what it offers adapters.

* :mod:`homeserver.api.ports` — Protocols the core calls when it must reach other servers
  (``FederationSender``, ``RemoteEventFetcher``, ``RemoteRoomMembership``, ``RemoteKeyQuerier``,
  ``RemoteMediaFetcher``, ``RemoteProfileQuerier``, ``RemoteDirectoryQuerier``). ``federation/``
  implements them; :mod:`homeserver.api.local` holds the local-only implementations (today's
  behaviour: remote work is refused with the errors clients saw before federation existed).
* :mod:`homeserver.api.services` — Protocols the core offers adapters (``RoomEventsAPI.receive_pdu``,
  ``MembershipAPI``, ``AuthAPI``, ``DeviceKeysAPI``, ``SyncSourceRegistry``), implemented by core
  services and injected by ``homeserver/app``.

Adapters (``federation``, ``media``) import these modules, never the core's internals.
"""

__all__: list[str] = []
