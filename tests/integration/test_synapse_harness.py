"""The federation test harness works today: real Synapses federate over loopback TLS, ours serves TLS.

Two Synapse processes (``127.0.0.1:<port>`` server names, self-signed certificates, no notary) and
one SecureConnect process are started once for the module. Federation between Synapse and
SecureConnect (issue 13) is tested elsewhere once it lands; these tests prove the configuration
those tests will use: IP-literal server names resolve without DNS, unverified self-signed
certificates are accepted, loopback is reachable, keys are fetched from the origin.
"""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sc_proto.crypto.keys import decode_verify_key_base64, parse_key_id
from sc_proto.crypto.signing import verify_json
from sc_proto.identifiers import parse_server_name
from tests.integration import synapse_harness as harness
from tests.integration.synapse_harness import Homeserver, SecureConnectHomeserver, SynapseHomeserver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def synapses(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SynapseHomeserver, SynapseHomeserver]]:
    """Two Synapses, started in parallel, stopped (exit 0 asserted) after the module."""
    python = harness.synapse_python()
    base = tmp_path_factory.mktemp("synapses")
    a, b = harness.start_parallel(
        lambda: harness.start_synapse(base / "a", python=python),
        lambda: harness.start_synapse(base / "b", python=python),
    )
    assert isinstance(a, SynapseHomeserver) and isinstance(b, SynapseHomeserver)
    yield a, b
    problems = harness.stop_all([a, b])
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureConnectHomeserver]:
    """One SecureConnect server with a TLS listener and the loopback federation settings."""
    server = harness.start_secureconnect(tmp_path_factory.mktemp("ours") / "hs")
    yield server
    problems = harness.stop_all([server])
    assert not problems, "\n".join(problems)


def _attach(request: pytest.FixtureRequest, *names: str) -> None:
    servers: list[Homeserver] = []
    for name in names:
        value = request.getfixturevalue(name)
        servers.extend(value if isinstance(value, tuple) else [value])
    harness.attach_logs(request.node, servers)


class SynapseToolTests:
    """How the harness finds Synapse (no process needed)."""

    def test_unset_variable_skips_outside_ci(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(harness.SYNAPSE_ENV, raising=False)
        monkeypatch.setenv("CI", "false")
        with pytest.raises(pytest.skip.Exception):
            harness.synapse_python()

    def test_unset_variable_fails_in_ci(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(harness.SYNAPSE_ENV, raising=False)
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception, match="SC_TEST_SYNAPSE"):
            harness.synapse_python()

    def test_missing_interpreter_fails_in_ci(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.setenv(harness.SYNAPSE_ENV, str(tmp_path / "nope" / "python"))
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception, match="not a file"):
            harness.synapse_python()

    def test_certificate_names_the_loopback_addresses(self, tmp_path: Path) -> None:
        from cryptography import x509

        cert_path, key_path = harness.write_self_signed_certificate(tmp_path)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
        assert names.get_values_for_type(x509.DNSName) == ["localhost"]
        assert key_path.stat().st_mode & 0o077 == 0


    def test_synapse_config_opens_loopback_only(self, tmp_path: Path) -> None:
        config = harness.synapse_config(tmp_path, 12345, "s3cret")
        blocked = set(config["federation_ip_range_blacklist"])
        assert {"10.0.0.0/8", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7"} <= blocked
        assert not blocked & set(harness.LOOPBACK_RANGES)
        assert config["ip_range_whitelist"] == list(harness.LOOPBACK_RANGES)
        assert config["server_name"] == "127.0.0.1:12345"
        assert config["trusted_key_servers"] == [] and config["federation_verify_certificates"] is False
        assert "federation_domain_whitelist" not in config


class SynapseServerTests:
    """One Synapse: the three APIs answer over TLS and its key document is valid."""

    @pytest.fixture(autouse=True)
    def _logs(self, request: pytest.FixtureRequest) -> None:
        _attach(request, "synapses")

    def test_server_name_is_an_ip_literal_with_port(self, synapses: tuple[SynapseHomeserver, ...]) -> None:
        a, _ = synapses
        host, port = parse_server_name(a.server_name)
        assert (host, port) == ("127.0.0.1", int(a.base_url.rsplit(":", 1)[1]))

    def test_federation_version_is_synapse(self, synapses: tuple[SynapseHomeserver, ...]) -> None:
        a, _ = synapses
        status, body = harness.https_json("GET", a.base_url + "/_matrix/federation/v1/version")
        assert status == 200
        assert body["server"]["name"] == "Synapse"
        assert body["server"]["version"].startswith(harness.synapse_version(harness.synapse_python()))

    def test_key_document_is_self_signed_by_its_server_name(
        self, synapses: tuple[SynapseHomeserver, ...]
    ) -> None:
        a, _ = synapses
        status, body = harness.https_json("GET", a.base_url + "/_matrix/key/v2/server")
        assert status == 200
        assert body["server_name"] == a.server_name
        ((key_id, key),) = body["verify_keys"].items()
        algorithm, version = parse_key_id(key_id)
        verify_json(body, a.server_name, decode_verify_key_base64(algorithm, version, key["key"]))
        tampered = {**body, "valid_until_ts": body["valid_until_ts"] + 1}
        with pytest.raises(Exception, match="does not verify"):
            verify_json(tampered, a.server_name, decode_verify_key_base64(algorithm, version, key["key"]))

    def test_plain_http_is_refused_on_the_tls_port(self, synapses: tuple[SynapseHomeserver, ...]) -> None:
        a, _ = synapses
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(
                a.base_url.replace("https:", "http:") + "/_matrix/client/versions", timeout=5
            )

    def test_registration_needs_the_shared_secret(self, synapses: tuple[SynapseHomeserver, ...]) -> None:
        a, _ = synapses
        status, body = harness.https_json("GET", a.base_url + "/_synapse/admin/v1/register")
        forged = {"nonce": body["nonce"], "username": "mallory", "password": "pw-123456", "mac": "00" * 20}
        status, body = harness.https_json("POST", a.base_url + "/_synapse/admin/v1/register", forged)
        assert status == 403, body
        user = a.register("carol")
        assert user.user_id == a.user_id("carol")
        assert a.login("carol", user.password).user_id == user.user_id


class SynapseFederationTests:
    """Two Synapses federate over loopback with self-signed certificates and IP-literal names."""

    @pytest.fixture(autouse=True)
    def _logs(self, request: pytest.FixtureRequest) -> None:
        _attach(request, "synapses")

    def test_join_by_alias_and_messages_both_ways(self, synapses: tuple[SynapseHomeserver, ...]) -> None:
        a, b = synapses
        alice, bob = a.register(), b.register()
        room_id = bob.create_room(alias="lobby")
        assert alice.join(f"#lobby:{b.server_name}") == room_id
        bob.wait_for_member(room_id, alice.user_id)
        bob.send_message(room_id, "hello from B")
        alice.wait_for_message(room_id, "hello from B")
        event = alice.send_message(room_id, "hello from A")
        seen = bob.wait_for_message(room_id, "hello from A")
        assert (seen["event_id"], seen["sender"]) == (event, alice.user_id)
        assert alice.joined_members(room_id) == bob.joined_members(room_id) == {alice.user_id, bob.user_id}

    def test_join_by_room_id_via_server_and_state_agrees(
        self, synapses: tuple[SynapseHomeserver, ...]
    ) -> None:
        a, b = synapses
        alice, bob = a.register(), b.register()
        room_id = alice.create_room(name="state check")
        bob.join(room_id, via=[a.server_name])
        alice.set_state(room_id, "m.room.topic", {"topic": "federated topic"})

        def topic_on_b() -> bool:
            return any(
                e["type"] == "m.room.topic" and e["content"].get("topic") == "federated topic"
                for e in bob.state(room_id)
            )

        harness.poll(topic_on_b, 20, what="topic on B")
        key = {(e["type"], e["state_key"]): e["event_id"] for e in alice.state(room_id)}
        assert key == {(e["type"], e["state_key"]): e["event_id"] for e in bob.state(room_id)}

    def test_invite_to_a_private_room_over_federation(self, synapses: tuple[SynapseHomeserver, ...]) -> None:
        a, b = synapses
        alice, bob = a.register(), b.register()
        room_id = alice.create_room(public=False)
        with pytest.raises(AssertionError, match="403"):
            bob.join(room_id, via=[a.server_name])
        alice.invite(room_id, bob.user_id)
        bob.join(room_id, via=[a.server_name])
        alice.wait_for_member(room_id, bob.user_id)

    def test_public_room_directory_over_federation(self, synapses: tuple[SynapseHomeserver, ...]) -> None:
        a, b = synapses
        bob = b.register()
        room_id = bob.create_room(name="listed on B")
        alice = a.register()
        answer = alice.request("GET", f"/_matrix/client/v3/publicRooms?server={b.server_name}&limit=100")
        assert room_id in {room["room_id"] for room in answer["chunk"]}


class SecureConnectTlsTests:
    """Our server, started the way the federation tests will start it."""

    @pytest.fixture(autouse=True)
    def _logs(self, request: pytest.FixtureRequest) -> None:
        _attach(request, "ours")

    def test_client_versions_over_https(self, ours: SecureConnectHomeserver) -> None:
        status, body = harness.https_json("GET", ours.base_url + "/_matrix/client/versions")
        assert status == 200 and body["versions"]
        assert ours.server_name == "127.0.0.1:" + ours.base_url.rsplit(":", 1)[1]

    def test_presents_the_harness_certificate(self, ours: SecureConnectHomeserver) -> None:
        port = int(ours.base_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with harness.loopback_tls_context().wrap_socket(raw) as tls:
                served = tls.getpeercert(binary_form=True)
        expected = (ours.data_dir / "tls" / "tls.crt").read_text()
        assert served is not None and ssl.DER_cert_to_PEM_cert(served).strip() == expected.strip()

    def test_verifying_clients_reject_the_self_signed_certificate(
        self, ours: SecureConnectHomeserver
    ) -> None:
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(ours.base_url + "/_matrix/client/versions", timeout=5)

    def test_register_and_create_room_over_tls(self, ours: SecureConnectHomeserver) -> None:
        user = ours.register()
        assert user.user_id.endswith(":" + ours.server_name)
        room_id = user.create_room(name="tls room")
        user.send_message(room_id, "over tls")
        assert user.wait_for_message(room_id, "over tls")["sender"] == user.user_id

    def test_federation_section_is_written(self, ours: SecureConnectHomeserver) -> None:
        from homeserver.config.loader import load_config

        config = load_config(ours.process.config_path)
        assert config.federation.verify_certificates is False
        assert set(config.federation.ip_range_whitelist) == set(harness.LOOPBACK_RANGES)
        assert config.server.listeners[0].tls is True
