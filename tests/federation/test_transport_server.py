"""The inbound transport: routing, X-Matrix verification, JSON and size limits, error rendering."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web.resource import Resource

from federation.interfaces import FederationRequest, JsonDict
from federation.transport.server import FederationTransport, NoKeysLookup
from homeserver.config.federation import FederationConfig
from homeserver.http.server import JsonResource
from sc_proto.crypto.keys import generate_signing_key
from sc_proto.crypto.signing import XMatrixAuth, format_x_matrix_header, parse_x_matrix_header, sign_request
from tests.federation.fakes import FakeKeys
from tests.unittest import FakeChannel, HomeserverTestCase

OUR_NAME = "test:8448"
REMOTE = "remote.example:8448"
REMOTE_KEY = generate_signing_key("r1")
OTHER_KEY = generate_signing_key("r2")


def signed_headers(
    method: str,
    uri: str,
    content: Any = None,
    *,
    origin: str = REMOTE,
    destination: str = OUR_NAME,
    key: Any = REMOTE_KEY,
) -> list[tuple[str, str]]:
    return [("Authorization", sign_request(method=method, uri=uri, origin=origin, destination=destination,
                                           content=content, signing_key=key))]


class _TransportCase(HomeserverTestCase):
    whitelist: tuple[str, ...] | None = None

    def create_resource(self) -> Resource:
        self.keys = FakeKeys()
        self.keys.add(REMOTE, REMOTE_KEY)
        self.seen: list[FederationRequest] = []
        resource = JsonResource("test")
        config = FederationConfig(domain_whitelist=self.whitelist, max_request_body_bytes=4096)
        self.transport = FederationTransport(resource, OUR_NAME, config, lambda: 1_700_000_000_000, self.keys)
        self.transport.register_version()

        async def echo(request: FederationRequest) -> tuple[int, JsonDict]:
            self.seen.append(request)
            return 200, {"origin": request.origin, "args": dict(request.path_args)}

        self.transport.register("GET", "/_matrix/federation/v1/event/{eventId}", echo)
        self.transport.register("PUT", "/_matrix/federation/v1/send/{txnId}", echo)
        self.transport.register("GET", "/_matrix/key/v2/server", echo, authenticated=False)
        return resource

    def get_event(self, headers: list[tuple[str, str]], path: str = "/_matrix/federation/v1/event/%24abc") -> FakeChannel:
        return self.make_request("GET", path, headers=headers)

    def assert_refused(self, channel: FakeChannel, status: int = 401, errcode: str = "M_UNAUTHORIZED") -> None:
        assert channel.code == status, channel.text_body
        assert channel.json_body["errcode"] == errcode
        assert self.seen == []


class SignedRequestTests(_TransportCase):
    """Requests signed correctly reach the servlet with the authenticated origin."""

    def test_signed_get(self) -> None:
        """A GET signed by the origin's key is accepted; path arguments keep the pattern's names."""
        path = "/_matrix/federation/v1/event/%24abc"
        channel = self.get_event(signed_headers("GET", path))
        assert channel.code == 200, channel.json_body
        assert channel.json_body == {"origin": REMOTE, "args": {"eventId": "$abc"}}
        assert self.keys.lookups == [(REMOTE, "ed25519:r1", 1_700_000_000_000)]

    def test_signed_put_with_body_and_query(self) -> None:
        """The signature covers body and query string; the servlet gets both decoded."""
        path = "/_matrix/federation/v1/send/t1?x=%C3%A9&x=2"
        body = {"pdus": [], "edus": [], "origin": REMOTE}
        channel = self.make_request("PUT", path, body, headers=signed_headers("PUT", path, body))
        assert channel.code == 200, channel.json_body
        request = self.seen[0]
        assert request.content == body
        assert request.query == {"x": ["é", "2"]}
        assert request.method == "PUT"

    def test_destination_may_be_absent(self) -> None:
        """Old servers omit destination: accepted when the signature (over our name) holds."""
        path = "/_matrix/federation/v1/event/%24abc"
        full = parse_x_matrix_header(signed_headers("GET", path)[0][1])
        header = format_x_matrix_header(XMatrixAuth(full.origin, None, full.key_id, full.signature))
        assert self.get_event([("Authorization", header)]).code == 200

    def test_one_good_header_of_several(self) -> None:
        """With one header per key, one verifying signature is enough."""
        path = "/_matrix/federation/v1/event/%24abc"
        bad = signed_headers("GET", path, key=OTHER_KEY)
        good = signed_headers("GET", path)
        assert self.get_event(bad + good).code == 200

    def test_head_is_verified_as_sent(self) -> None:
        """HEAD reaches the GET route, and the signature must cover HEAD (the method sent), not GET."""
        path = "/_matrix/federation/v1/event/%24abc"
        assert self.make_request("HEAD", path, headers=signed_headers("HEAD", path)).code == 200
        assert self.make_request("HEAD", path, headers=signed_headers("GET", path)).code == 401

    def test_unauthenticated_route(self) -> None:
        """A route registered with authenticated=False needs no header and has no origin."""
        channel = self.make_request("GET", "/_matrix/key/v2/server")
        assert channel.code == 200
        assert self.seen[0].origin is None

    def test_version(self) -> None:
        """GET /_matrix/federation/v1/version names the implementation, without authentication."""
        channel = self.make_request("GET", "/_matrix/federation/v1/version")
        assert channel.code == 200
        assert channel.json_body["server"]["name"] == "SecureConnect"
        assert isinstance(channel.json_body["server"]["version"], str)


class RefusedSignatureTests(_TransportCase):
    """Every way a signature can be missing, malformed, forged or replayed gives 401."""

    PATH = "/_matrix/federation/v1/event/%24abc"

    def test_missing_header(self) -> None:
        """No Authorization header."""
        self.assert_refused(self.get_event([]))

    def test_bearer_is_not_x_matrix(self) -> None:
        """A client access token is no federation authentication."""
        self.assert_refused(self.get_event([("Authorization", "Bearer abc")]))

    def test_malformed_headers(self) -> None:
        """Headers that do not parse (missing fields, bad quoting, bad key ID, not ASCII)."""
        for header in [
            "X-Matrix",
            'X-Matrix origin="remote.example:8448"',
            'X-Matrix origin="remote.example:8448",key="ed25519:r1"',
            'X-Matrix origin="remote.example:8448",key="nocolon",sig="abc"',
            'X-Matrix origin="remote.example:8448,key="ed25519:r1",sig="abc"',
            'X-Matrix origin="remote.example:8448",key="ed25519:r1",sig="!!!not base64"',
            "X-Matrix origin=\xe9,key=ed25519:r1,sig=abc",
        ]:
            self.assert_refused(self.get_event([("Authorization", header)]))

    def test_forged_signature(self) -> None:
        """Signed with a key that is not the origin's."""
        self.assert_refused(self.get_event(signed_headers("GET", self.PATH, key=OTHER_KEY)))

    def test_unknown_key(self) -> None:
        """A key ID the key lookup does not know."""
        headers = signed_headers("GET", self.PATH, key=generate_signing_key("zz"))
        self.assert_refused(self.get_event(headers))

    def test_wrong_destination(self) -> None:
        """A request for another server is refused, as the spec requires."""
        headers = signed_headers("GET", self.PATH, destination="other.example")
        self.assert_refused(self.get_event(headers))

    def test_replay_to_another_destination_without_destination(self) -> None:
        """A request signed for another server, replayed to us with destination stripped, fails the check."""
        signed = parse_x_matrix_header(signed_headers("GET", self.PATH, destination="other.example")[0][1])
        header = format_x_matrix_header(XMatrixAuth(signed.origin, None, signed.key_id, signed.signature))
        self.assert_refused(self.get_event([("Authorization", header)]))

    def test_tampered_request(self) -> None:
        """Signature for another path, method or body."""
        self.assert_refused(self.get_event(signed_headers("GET", "/_matrix/federation/v1/event/%24other")))
        self.assert_refused(self.get_event(signed_headers("PUT", self.PATH)))
        path = "/_matrix/federation/v1/send/t1"
        headers = signed_headers("PUT", path, {"pdus": []})
        self.assert_refused(self.make_request("PUT", path, {"pdus": [1]}, headers=headers))
        self.assert_refused(self.make_request("PUT", path, None, headers=headers))

    def test_query_string_is_signed(self) -> None:
        """Adding a query parameter breaks the signature."""
        headers = signed_headers("GET", self.PATH)
        self.assert_refused(self.get_event(headers, self.PATH + "?x=1"))

    def test_claimed_origin_is_checked(self) -> None:
        """Claiming another origin with our key, an invalid origin, or two origins."""
        self.assert_refused(self.get_event(signed_headers("GET", self.PATH, origin="evil.example")))
        self.assert_refused(self.get_event(signed_headers("GET", self.PATH, origin="not a name")))
        two = signed_headers("GET", self.PATH) + signed_headers("GET", self.PATH, origin="evil.example")
        self.assert_refused(self.get_event(two))

    def test_too_many_headers(self) -> None:
        """More than 8 X-Matrix headers is abuse, even if one is good."""
        headers = signed_headers("GET", self.PATH, key=OTHER_KEY) * 8 + signed_headers("GET", self.PATH)
        self.assert_refused(self.get_event(headers))

    def test_no_keys_lookup_refuses_everything(self) -> None:
        """The placeholder lookup (before the keyring is wired) refuses correctly signed requests."""
        self.transport._keys = NoKeysLookup()
        self.assert_refused(self.get_event(signed_headers("GET", self.PATH)))

    @settings(max_examples=60, deadline=None)
    @given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=120))
    def test_arbitrary_headers_never_500(self, suffix: str) -> None:
        """Whatever follows 'X-Matrix ', the answer is 401, never a server error."""
        self.seen = []
        channel = self.get_event([("Authorization", "X-Matrix " + suffix)])
        assert channel.code == 401, (suffix, channel.text_body)


class WhitelistTests(_TransportCase):
    """domain_whitelist refuses other origins with 403."""

    whitelist = ("friend.example",)

    def test_other_origin_forbidden(self) -> None:
        """A validly signed request from a server outside the whitelist is 403 M_FORBIDDEN."""
        path = "/_matrix/federation/v1/event/%24abc"
        self.assert_refused(self.get_event(signed_headers("GET", path)), 403, "M_FORBIDDEN")
        assert self.keys.lookups == []

    def test_listed_origin_allowed(self) -> None:
        """A listed origin passes on to the signature check."""
        friend = generate_signing_key("f1")
        self.keys.add("friend.example", friend)
        path = "/_matrix/federation/v1/event/%24abc"
        assert self.get_event(signed_headers("GET", path, origin="friend.example", key=friend)).code == 200


class BadInputTests(_TransportCase):
    """Malformed bodies, paths and methods get Matrix errors, never 500."""

    PATH = "/_matrix/federation/v1/send/t1"

    def put(self, body: bytes) -> FakeChannel:
        return self.make_request("PUT", self.PATH, body, headers=signed_headers("PUT", self.PATH))

    def test_bad_json(self) -> None:
        """Not JSON, not an object, NaN, duplicate keys, invalid UTF-8, floats, too deep."""
        for body, code in [
            (b"{", "M_NOT_JSON"),
            (b"[1]", "M_NOT_JSON"),
            (b'{"a": NaN}', "M_BAD_JSON"),
            (b'{"a": 1, "a": 2}', "M_BAD_JSON"),
            (b'{"a": "\xff"}', "M_NOT_JSON"),
            (b'{"a": 1.5}', "M_BAD_JSON"),
            (b'{"a":' * 70 + b"1" + b"}" * 70, "M_BAD_JSON"),
        ]:
            self.assert_refused(self.put(body), 400, code)

    def test_large_integers_tolerated(self) -> None:
        """Integers beyond 2^53 (room versions 1-5) reach the signature check rather than a 400."""
        channel = self.make_request(
            "PUT", self.PATH, b'{"big": 1152921504606846976}', headers=signed_headers("PUT", self.PATH, {"big": 1})
        )
        assert channel.code == 401, channel.text_body

    def test_body_too_large(self) -> None:
        """Over federation.max_request_body_bytes: 413 M_TOO_LARGE, refused while receiving."""
        self.assert_refused(self.put(b'{"a": "' + b"x" * 5000 + b'"}'), 413, "M_TOO_LARGE")

    def test_unknown_path_and_method(self) -> None:
        """Unknown endpoints are 404 M_UNRECOGNIZED; a wrong method on a known one is 405 M_UNRECOGNIZED."""
        self.assert_refused(self.make_request("GET", "/_matrix/federation/v1/nonexistent"), 404, "M_UNRECOGNIZED")
        self.assert_refused(self.make_request("POST", "/_matrix/federation/v1/version"), 405, "M_UNRECOGNIZED")

    def test_path_argument_bounds(self) -> None:
        """Over-long or non-UTF-8 path segments are 400 before any signature work."""
        self.assert_refused(self.get_event([], "/_matrix/federation/v1/event/" + "a" * 300), 400, "M_INVALID_PARAM")
        self.assert_refused(self.get_event([], "/_matrix/federation/v1/event/%FF"), 400, "M_INVALID_PARAM")

    def test_query_not_utf8(self) -> None:
        """A query parameter that is not UTF-8 is 400 M_INVALID_PARAM."""
        path = "/_matrix/federation/v1/event/%24abc?x=%FF"
        self.assert_refused(self.get_event(signed_headers("GET", path), path), 400, "M_INVALID_PARAM")

    def test_register_outside_prefixes(self) -> None:
        """Only federation and key paths can be routed through the transport."""

        async def handler(_: FederationRequest) -> tuple[int, JsonDict]:
            return 200, {}

        try:
            self.transport.register("GET", "/_matrix/client/v3/sync", handler)
        except ValueError:
            return
        raise AssertionError("registered a client path")
