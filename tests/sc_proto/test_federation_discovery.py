"""Server-name resolution steps (server-server API, "Resolving server names"), table and property tests."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sc_proto.errors import InvalidIdentifierError
from sc_proto.federation import (
    DEFAULT_FEDERATION_PORT,
    WELL_KNOWN_DEFAULT_CACHE_S,
    WELL_KNOWN_ERROR_CACHE_MAX_S,
    WELL_KNOWN_ERROR_CACHE_MIN_S,
    WELL_KNOWN_MAX_CACHE_S,
    WELL_KNOWN_MIN_CACHE_S,
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


def drive(
    server_name: str,
    well_known: str | None = None,
    srv: dict[str, Sequence[SrvRecord]] | None = None,
) -> tuple[Resolved, list[str]]:
    """Runs the steps with canned answers; returns the result and the I/O asked for, in order."""
    asked: list[str] = []
    step: Step = plan(server_name)
    while not isinstance(step, Resolved):
        if isinstance(step, FetchWellKnown):
            asked.append(f"GET {step.url}")
            step = step.feed(well_known)
        else:
            asked.append(f"SRV {step.name}")
            step = step.feed((srv or {}).get(step.name, ()))
    return step, asked


class PlanTableTests:
    """Every branch of the spec's resolution process, one row each."""

    @pytest.mark.parametrize(
        ("server_name", "host_header", "tls_name", "sni", "endpoints"),
        [
            # Step 1: IP literals, with and without port.
            ("1.2.3.4", "1.2.3.4", "1.2.3.4", None, (("1.2.3.4", 8448),)),
            ("1.2.3.4:1234", "1.2.3.4:1234", "1.2.3.4", None, (("1.2.3.4", 1234),)),
            ("[::1]", "[::1]", "::1", None, (("::1", 8448),)),
            ("[::1]:8448", "[::1]:8448", "::1", None, (("::1", 8448),)),
            ("[2001:DB8::0:1]:443", "[2001:DB8::0:1]:443", "2001:db8::1", None, (("2001:db8::1", 443),)),
            # Step 2: hostname with explicit port.
            ("example.org:8449", "example.org:8449", "example.org", "example.org", (("example.org", 8449),)),
            ("test:8448", "test:8448", "test", "test", (("test", 8448),)),
        ],
    )
    def test_answers_at_once(
        self, server_name: str, host_header: str, tls_name: str, sni: str | None, endpoints: tuple[tuple[str, int], ...]
    ) -> None:
        """IP literals and explicit ports need no I/O; Host keeps the port as written."""
        result, asked = drive(server_name)
        assert asked == []
        assert result == Resolved(server_name, host_header, tls_name, sni, endpoints)

    def test_hostname_without_port_fetches_well_known(self) -> None:
        """Step 3: a bare hostname starts with the well-known fetch over HTTPS."""
        step = plan("example.org")
        assert step == FetchWellKnown("example.org", "example.org")
        assert isinstance(step, FetchWellKnown)
        assert step.url == "https://example.org/.well-known/matrix/server"

    @pytest.mark.parametrize("bad", ["", "exa mple.org", "example.org:0", "example.org:65536", "[::1", "[zz::1]", 5, None])
    def test_invalid_server_name_raises(self, bad: object) -> None:
        """A malformed server name is refused before any I/O."""
        with pytest.raises(InvalidIdentifierError):
            plan(bad)  # type: ignore[arg-type]  # wrong types on purpose


class DelegationTests:
    """Step 3.1 to 3.5: a valid well-known answer."""

    def test_delegated_ip_literal(self) -> None:
        """3.1: the delegated IP and port; Host is the IP (with port when given); no SNI."""
        result, asked = drive("example.org", well_known="[2001:db8::5]:9000")
        assert asked == ["GET https://example.org/.well-known/matrix/server"]
        assert result == Resolved("example.org", "[2001:db8::5]:9000", "2001:db8::5", None, (("2001:db8::5", 9000),))
        result, _ = drive("example.org", well_known="10.0.0.1")
        assert result == Resolved("example.org", "10.0.0.1", "10.0.0.1", None, (("10.0.0.1", 8448),))

    def test_delegated_host_and_port(self) -> None:
        """3.2: A/AAAA of the delegated host on its port; Host is delegated_hostname:port; no SRV."""
        result, asked = drive("example.org", well_known="matrix.example.net:1234")
        assert asked == ["GET https://example.org/.well-known/matrix/server"]
        assert result == Resolved(
            "example.org", "matrix.example.net:1234", "matrix.example.net", "matrix.example.net",
            (("matrix.example.net", 1234),),
        )

    def test_delegated_host_srv_matrix_fed(self) -> None:
        """3.3: SRV _matrix-fed._tcp of the delegated host; Host and certificate are the delegated host."""
        srv = {"_matrix-fed._tcp.deleg.example.net": [SrvRecord(10, 5, 8500, "srv.example.net.")]}
        result, asked = drive("example.org", well_known="deleg.example.net", srv=srv)
        assert asked == ["GET https://example.org/.well-known/matrix/server", "SRV _matrix-fed._tcp.deleg.example.net"]
        assert result == Resolved(
            "example.org", "deleg.example.net", "deleg.example.net", "deleg.example.net", (("srv.example.net", 8500),)
        )

    def test_delegated_host_deprecated_srv(self) -> None:
        """3.4: without _matrix-fed, the deprecated _matrix._tcp record of the delegated host."""
        srv = {"_matrix._tcp.deleg.example.net": [SrvRecord(0, 0, 8000, "old.example.net")]}
        result, asked = drive("example.org", well_known="deleg.example.net", srv=srv)
        assert asked[1:] == ["SRV _matrix-fed._tcp.deleg.example.net", "SRV _matrix._tcp.deleg.example.net"]
        assert result.endpoints == (("old.example.net", 8000),)
        assert result.host_header == "deleg.example.net"

    def test_delegated_host_no_srv(self) -> None:
        """3.5: no SRV: the delegated host's A/AAAA on 8448, Host is the delegated host."""
        result, asked = drive("example.org", well_known="deleg.example.net")
        assert len(asked) == 3
        assert result == Resolved(
            "example.org", "deleg.example.net", "deleg.example.net", "deleg.example.net", (("deleg.example.net", 8448),)
        )

    def test_no_second_delegation(self) -> None:
        """A delegated hostname is never fetched for a well-known of its own."""
        _, asked = drive("example.org", well_known="deleg.example.net")
        assert sum(a.startswith("GET") for a in asked) == 1


class WellKnownErrorTests:
    """Steps 4 to 6: the well-known fetch failed or was invalid."""

    def test_srv_matrix_fed(self) -> None:
        """4: SRV _matrix-fed._tcp of the hostname; Host and certificate are the hostname."""
        srv = {"_matrix-fed._tcp.example.org": [SrvRecord(1, 1, 443, "fed.example.org")]}
        result, asked = drive("example.org", srv=srv)
        assert asked == ["GET https://example.org/.well-known/matrix/server", "SRV _matrix-fed._tcp.example.org"]
        assert result == Resolved("example.org", "example.org", "example.org", "example.org", (("fed.example.org", 443),))

    def test_deprecated_srv(self) -> None:
        """5: then the deprecated _matrix._tcp record."""
        srv = {"_matrix._tcp.example.org": [SrvRecord(1, 1, 8009, "legacy.example.org")]}
        result, asked = drive("example.org", srv=srv)
        assert asked[-1] == "SRV _matrix._tcp.example.org"
        assert result.endpoints == (("legacy.example.org", 8009),)
        assert result.host_header == "example.org"

    def test_matrix_fed_wins_over_deprecated(self) -> None:
        """When both exist the deprecated record is not even asked for."""
        srv = {
            "_matrix-fed._tcp.example.org": [SrvRecord(1, 1, 1, "new.example.org")],
            "_matrix._tcp.example.org": [SrvRecord(1, 1, 2, "old.example.org")],
        }
        result, asked = drive("example.org", srv=srv)
        assert result.endpoints == (("new.example.org", 1),)
        assert "SRV _matrix._tcp.example.org" not in asked

    def test_default_port(self) -> None:
        """6: no SRV: A/AAAA of the hostname on 8448."""
        result, _ = drive("example.org")
        assert result == Resolved("example.org", "example.org", "example.org", "example.org", (("example.org", 8448),))

    @pytest.mark.parametrize("bad", ["", "not a name", "example.org:99999", "[::1"])
    def test_invalid_delegation_is_an_error(self, bad: str) -> None:
        """A well-known value that is not a server name counts as an error (step 4 onwards)."""
        step = FetchWellKnown("example.org", "example.org").feed(bad)
        assert step == LookupSrv("example.org", "example.org", 0)

    def test_dot_target_means_no_record(self) -> None:
        """An SRV target of "." (service decidedly absent) and port 0 are skipped."""
        step = LookupSrv("example.org", "example.org", 0).feed([SrvRecord(0, 0, 8448, "."), SrvRecord(0, 0, 0, "x.org")])
        assert step == LookupSrv("example.org", "example.org", 1)


class SrvOrderTests:
    """RFC 2782 ordering of SRV records."""

    def test_priority_then_weight(self) -> None:
        """Lower priority first; without randomness, heavier weight first within a priority."""
        records = [SrvRecord(20, 0, 1, "c"), SrvRecord(10, 1, 2, "b"), SrvRecord(10, 9, 3, "a")]
        assert [r.target for r in order_srv_records(records)] == ["a", "b", "c"]

    def test_weighted_choice_uses_rand(self) -> None:
        """With a random source, a low draw picks the first record of the running sum."""
        records = [SrvRecord(0, 1, 1, "light"), SrvRecord(0, 99, 2, "heavy")]
        assert [r.target for r in order_srv_records(records, lambda: 0.0)] == ["light", "heavy"]
        assert [r.target for r in order_srv_records(records, lambda: 0.5)] == ["heavy", "light"]

    @given(
        st.lists(
            st.builds(SrvRecord, st.integers(0, 3), st.integers(0, 5), st.integers(1, 65535), st.sampled_from("abcdef")),
            max_size=12,
        ),
        st.floats(0, 0.999999),
    )
    def test_order_is_a_permutation_sorted_by_priority(self, records: list[SrvRecord], draw: float) -> None:
        """Every record appears once, and priorities never decrease."""
        ordered = order_srv_records(records, lambda: draw)
        assert sorted(ordered, key=repr) == sorted(records, key=repr)
        assert [r.priority for r in ordered] == sorted(r.priority for r in records)


_hostnames = st.from_regex(r"[a-z][a-z0-9\-]{0,10}(\.[a-z][a-z0-9]{0,6}){0,2}", fullmatch=True)
_ports = st.integers(1, 65535)


class ResolutionPropertyTests:
    """Properties over arbitrary names and answers."""

    @given(
        _hostnames,
        st.one_of(st.none(), _hostnames, st.tuples(_hostnames, _ports).map(lambda t: f"{t[0]}:{t[1]}")),
        st.booleans(),
        st.booleans(),
    )
    def test_any_answers_terminate_with_consistent_tls(
        self, host: str, well_known: str | None, fed_srv: bool, old_srv: bool
    ) -> None:
        """Resolution ends after at most three I/O steps; SNI is the certificate name of a DNS host; the
        signed-for name stays the original server name; Host never comes from an SRV target."""
        delegated_host = None if well_known is None else well_known.split(":")[0]
        base = delegated_host or host
        srv: dict[str, Sequence[SrvRecord]] = {}
        if fed_srv:
            srv[f"_matrix-fed._tcp.{base}"] = [SrvRecord(0, 0, 1111, "target.invalid")]
        if old_srv:
            srv[f"_matrix._tcp.{base}"] = [SrvRecord(0, 0, 2222, "target2.invalid")]
        result, asked = drive(host, well_known, srv)
        assert 1 <= len(asked) <= 3
        assert result.server_name == host
        assert result.sni == result.tls_name
        assert result.tls_name == base
        assert "target" not in result.host_header
        assert result.host_header.split(":")[0] == base
        assert result.endpoints and all(1 <= port <= 65535 for _, port in result.endpoints)

    @given(st.ip_addresses(), st.one_of(st.none(), _ports))
    def test_ip_literals_never_send_sni(self, address: object, port: int | None) -> None:
        """An IP-literal server name resolves at once, to itself, without SNI, on its port or 8448."""
        text = str(address)
        host = f"[{text}]" if ":" in text else text
        name = host if port is None else f"{host}:{port}"
        step = plan(name)
        assert isinstance(step, Resolved)
        assert step.sni is None
        assert step.host_header == name
        assert step.endpoints == ((text, port or DEFAULT_FEDERATION_PORT),)

    @given(st.text(max_size=40))
    def test_feeding_garbage_never_raises(self, value: str) -> None:
        """Any well-known value leads to a step; invalid ones fall back to SRV on the original name."""
        step = FetchWellKnown("example.org", "example.org").feed(value)
        assert isinstance(step, (Resolved, LookupSrv))


class ParseWellKnownTests:
    """Validity of a well-known response."""

    @pytest.mark.parametrize(
        ("status", "body", "expected"),
        [
            (200, b'{"m.server": "deleg.example.net:443"}', "deleg.example.net:443"),
            (200, b'{"m.server": "[::1]:8448", "other": 1.5}', "[::1]:8448"),
            (404, b'{"m.server": "deleg.example.net"}', None),
            (200, b"<html>", None),
            (200, b"[]", None),
            (200, b'{"m.server": 5}', None),
            (200, b'{"m.server": "bad name"}', None),
            (200, b"{}", None),
            (200, b'{"m.server": "a", "m.server": "b"}', None),
            (200, b"\xff\xfe", None),
            (200, b"[" * 100 + b"]" * 100, None),
        ],
    )
    def test_validity(self, status: int, body: bytes, expected: str | None) -> None:
        """Only a 200 JSON object with a valid ``m.server`` string delegates."""
        assert parse_well_known(status, body) == expected

    @given(st.binary(max_size=200))
    def test_never_raises(self, body: bytes) -> None:
        """Arbitrary bytes give a server name or None, never an exception."""
        result = parse_well_known(200, body)
        assert result is None or isinstance(result, str)


class CachePeriodTests:
    """Cache lifetimes of well-known outcomes."""

    NOW = 1_700_000_000.0

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({}, WELL_KNOWN_DEFAULT_CACHE_S),
            ({"Cache-Control": "max-age=3600"}, 3600.0),
            ({"cache-control": "public, max-age=7200, must-revalidate"}, 7200.0),
            ({"Cache-Control": "max-age=999999999"}, WELL_KNOWN_MAX_CACHE_S),
            ({"Cache-Control": "max-age=1"}, WELL_KNOWN_MIN_CACHE_S),
            ({"Cache-Control": "no-store"}, WELL_KNOWN_MIN_CACHE_S),
            ({"Cache-Control": "private"}, WELL_KNOWN_DEFAULT_CACHE_S),
            ({"Expires": "Tue, 14 Nov 2023 23:13:20 GMT"}, 3600.0),
            ({"Expires": "garbage"}, WELL_KNOWN_MIN_CACHE_S),
            ({"Expires": "Tue, 14 Nov 2023 23:13:20 GMT", "Cache-Control": "max-age=600"}, 600.0),
        ],
    )
    def test_valid_answers(self, headers: dict[str, str], expected: float) -> None:
        """Headers are respected within [5 min, 48 h]; 24 h without them; Cache-Control beats Expires."""
        assert well_known_cache_period(valid=True, headers=headers, now_s=self.NOW) == pytest.approx(expected)

    def test_expires_relative_to_now(self) -> None:
        """``Expires`` counts from the given now."""
        # 1_700_003_600 is Tue, 14 Nov 2023 23:13:20 GMT.
        period = well_known_cache_period(valid=True, headers={"Expires": "Tue, 14 Nov 2023 23:13:20 GMT"}, now_s=self.NOW)
        assert period == pytest.approx(3600.0)

    def test_errors_back_off_up_to_an_hour(self) -> None:
        """Errors: 2 min, doubling with each consecutive failure, capped at 1 h, whatever the headers."""
        periods = [
            well_known_cache_period(valid=False, headers={"Cache-Control": "max-age=99999"}, now_s=self.NOW,
                                    consecutive_failures=n)
            for n in range(1, 10)
        ]
        assert periods[0] == WELL_KNOWN_ERROR_CACHE_MIN_S
        assert periods[1] == 2 * WELL_KNOWN_ERROR_CACHE_MIN_S
        assert periods == sorted(periods)
        assert periods[-1] == WELL_KNOWN_ERROR_CACHE_MAX_S

    @given(st.dictionaries(st.sampled_from(["Cache-Control", "Expires", "X"]), st.text(max_size=30)), st.booleans(),
           st.integers(0, 1000))
    def test_always_bounded(self, headers: dict[str, str], valid: bool, failures: int) -> None:
        """Any headers give a period within the spec's bounds."""
        period = well_known_cache_period(valid=valid, headers=headers, now_s=self.NOW, consecutive_failures=failures)
        if valid:
            assert WELL_KNOWN_MIN_CACHE_S <= period <= WELL_KNOWN_MAX_CACHE_S
        else:
            assert WELL_KNOWN_ERROR_CACHE_MIN_S <= period <= WELL_KNOWN_ERROR_CACHE_MAX_S
