"""The federation transport over real loopback sockets and real TLS (self-signed certificates made here).

Runs on the global reactor (pytest-twisted). Covers certificate verification by name and by IP, SNI
(sent for names, not for IPs), ``verify_certificates: false``, the default deny list refusing a
hostname that resolves to loopback (real ``twisted.names`` lookups through ``/etc/hosts``), the time
limit against a server that never answers and the size limit against one that streams forever, and
a server process generated with the test-federation flags serving client, federation and key paths on
one TLS listener.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl as stdlib_ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.protocol import Factory, Protocol

from bench.common import free_port, homeserver_command, run_cli
from federation.discovery import ServerNameResolver, TwistedDns, WellKnownClient
from federation.interfaces import FederationRequest, JsonDict, RemoteUnreachable
from federation.transport.client import FederationClient
from federation.transport.connect import AddressPolicy, CheckedConnector, DestinationRefused, TLSPolicy
from federation.transport.server import FederationTransport
from homeserver.config.federation import FederationConfig
from homeserver.http.server import JsonResource
from homeserver.http.site import SCSite
from sc_proto.crypto.keys import generate_signing_key
from tests.federation.fakes import FakeKeys

pytestmark = pytest.mark.integration

US = "us.example"
OUR_KEY = generate_signing_key("k1")


def _reactor() -> Any:
    from twisted.internet import reactor  # the global reactor pytest-twisted runs

    return reactor


def make_certificate(names: list[str], ips: list[str]) -> tuple[bytes, bytes]:
    """A self-signed certificate (PEM) and its key, valid for the DNS names and IP addresses."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (names or ips)[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class _SniRecordingOptions(ssl.CertificateOptions):
    """Server TLS options that record the SNI each client sent (None when it sent none)."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, seen: list[str | None]) -> None:
        cert = ssl.PrivateCertificate.loadPEM(cert_pem + key_pem)
        super().__init__(privateKey=cert.privateKey.original, certificate=cert.original)
        self._seen = seen

    def getContext(self) -> SSL.Context:
        context = super().getContext()

        def on_servername(connection: SSL.Connection) -> None:
            name = connection.get_servername()
            self._seen.append(name.decode() if name else None)

        context.set_tlsext_servername_callback(on_servername)
        return context


class _Peer:
    """A remote homeserver's federation transport on a real TLS port of 127.0.0.1."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, server_name_of: Any) -> None:
        self.sni: list[str | None] = []
        resource = JsonResource("peer")
        keys = FakeKeys()
        keys.add(US, OUR_KEY)
        self.transport = FederationTransport(resource, "", FederationConfig(), lambda: int(time.time() * 1000), keys)

        async def whoami(request: FederationRequest) -> tuple[int, JsonDict]:
            return 200, {"origin": request.origin}

        self.transport.register("GET", "/_matrix/federation/v1/whoami", whoami)
        site = SCSite(resource, _reactor(), 1024 * 1024)
        self.port = _reactor().listenSSL(0, site, _SniRecordingOptions(cert_pem, key_pem, self.sni), interface="127.0.0.1")
        self.number = self.port.getHost().port
        self.transport.server_name = server_name_of(self.number)

    def stop(self) -> Any:
        return self.port.stopListening()


def make_client(config: FederationConfig, trust_root: Any = None) -> FederationClient:
    dns = TwistedDns()
    tls = TLSPolicy(config.verify_certificates, trust_root)
    connector = CheckedConnector(_reactor(), dns, AddressPolicy.from_config(config), tls)
    resolver = ServerNameResolver(dns, WellKnownClient(_reactor(), connector), _reactor().seconds)
    return FederationClient(_reactor(), US, OUR_KEY, config, resolver, connector)


LOOPBACK = FederationConfig(ip_range_whitelist=("127.0.0.0/8",), request_timeout_s=10)


@pytest.fixture
def certificate() -> tuple[bytes, bytes]:
    return make_certificate(["localhost"], ["127.0.0.1"])


class VerifiedTlsTests:
    """Certificates are verified by name or IP, with SNI per the spec."""

    @pytest_twisted.ensureDeferred
    async def test_hostname_with_trusted_certificate(self, certificate: tuple[bytes, bytes]) -> None:
        """localhost:PORT resolves through /etc/hosts, the certificate verifies for 'localhost', SNI is sent,
        and the peer's transport accepts our signature."""
        peer = _Peer(*certificate, lambda port: f"localhost:{port}")
        try:
            client = make_client(LOOPBACK, ssl.Certificate.loadPEM(certificate[0]))
            answer = await client.get_json(f"localhost:{peer.number}", "/_matrix/federation/v1/whoami")
            assert answer == {"origin": US}
            assert peer.sni == ["localhost"]
            await client.close()
        finally:
            await peer.stop()

    @pytest_twisted.ensureDeferred
    async def test_ip_literal_without_sni(self, certificate: tuple[bytes, bytes]) -> None:
        """An IP-literal server name verifies against the certificate's IP address and sends no SNI."""
        peer = _Peer(*certificate, lambda port: f"127.0.0.1:{port}")
        try:
            client = make_client(LOOPBACK, ssl.Certificate.loadPEM(certificate[0]))
            answer = await client.get_json(f"127.0.0.1:{peer.number}", "/_matrix/federation/v1/whoami")
            assert answer == {"origin": US}
            assert peer.sni == [None]
            await client.close()
        finally:
            await peer.stop()

    @pytest_twisted.ensureDeferred
    async def test_untrusted_certificate_refused(self, certificate: tuple[bytes, bytes]) -> None:
        """With the platform's trust store a self-signed certificate fails: no request is answered."""
        peer = _Peer(*certificate, lambda port: f"localhost:{port}")
        try:
            client = make_client(LOOPBACK)
            with pytest.raises(RemoteUnreachable):
                await client.get_json(f"localhost:{peer.number}", "/_matrix/federation/v1/whoami")
        finally:
            await peer.stop()

    @pytest_twisted.ensureDeferred
    async def test_name_mismatch_refused(self) -> None:
        """A trusted certificate for another name (no IP SAN) fails for an IP-literal destination."""
        cert = make_certificate(["elsewhere.example"], [])
        peer = _Peer(*cert, lambda port: f"127.0.0.1:{port}")
        try:
            client = make_client(LOOPBACK, ssl.Certificate.loadPEM(cert[0]))
            with pytest.raises(RemoteUnreachable):
                await client.get_json(f"127.0.0.1:{peer.number}", "/_matrix/federation/v1/whoami")
        finally:
            await peer.stop()

    @pytest_twisted.ensureDeferred
    async def test_verification_off(self) -> None:
        """verify_certificates: false accepts any certificate and still sends SNI."""
        cert = make_certificate(["elsewhere.example"], [])
        peer = _Peer(*cert, lambda port: f"localhost:{port}")
        try:
            config = FederationConfig(ip_range_whitelist=("127.0.0.0/8",), verify_certificates=False)
            client = make_client(config)
            assert await client.get_json(f"localhost:{peer.number}", "/_matrix/federation/v1/whoami") == {"origin": US}
            assert peer.sni == ["localhost"]
            await client.close()
        finally:
            await peer.stop()


class DenyListTests:
    """The default deny list holds for real resolutions."""

    @pytest_twisted.ensureDeferred
    async def test_localhost_refused_by_default(self, certificate: tuple[bytes, bytes]) -> None:
        """Without a whitelist, localhost (127.0.0.1 and ::1 from /etc/hosts) is never connected to."""
        peer = _Peer(*certificate, lambda port: f"localhost:{port}")
        try:
            client = make_client(FederationConfig(), ssl.Certificate.loadPEM(certificate[0]))
            with pytest.raises(DestinationRefused):
                await client.get_json(f"localhost:{peer.number}", "/_matrix/federation/v1/whoami")
            with pytest.raises(DestinationRefused):
                await client.get_json(f"127.0.0.1:{peer.number}", "/_matrix/federation/v1/whoami")
            assert peer.sni == []
        finally:
            await peer.stop()


class _Silent(Protocol):
    """Accepts and never answers."""


class _Streamer(Protocol):
    """Answers any request with a chunked body that never ends."""

    def dataReceived(self, data: bytes) -> None:
        if not getattr(self, "started", False):
            self.started = True
            self.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")  # type: ignore[union-attr]
            self.more()

    def more(self) -> None:
        if self.transport is not None and not getattr(self, "lost", False):
            self.transport.write(b"4000\r\n" + b"x" * 0x4000 + b"\r\n")
            _reactor().callLater(0, self.more)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


class LimitTests:
    """Time and size limits over real sockets."""

    @pytest_twisted.ensureDeferred
    async def test_never_answering_server_times_out(self, certificate: tuple[bytes, bytes]) -> None:
        """A TLS server that accepts but never answers: RemoteUnreachable after the call's timeout."""
        options = _SniRecordingOptions(*certificate, [])
        port = _reactor().listenSSL(0, Factory.forProtocol(_Silent), options, interface="127.0.0.1")
        try:
            client = make_client(LOOPBACK, ssl.Certificate.loadPEM(certificate[0]))
            started = time.monotonic()
            with pytest.raises(RemoteUnreachable, match="within 1s"):
                await client.get_json(f"127.0.0.1:{port.getHost().port}", "/x", timeout_s=1)
            assert time.monotonic() - started < 5
        finally:
            await port.stopListening()

    @pytest_twisted.ensureDeferred
    async def test_endless_body_is_cut(self, certificate: tuple[bytes, bytes]) -> None:
        """A body that never ends is aborted at max_response_bytes."""
        options = _SniRecordingOptions(*certificate, [])
        port = _reactor().listenSSL(0, Factory.forProtocol(_Streamer), options, interface="127.0.0.1")
        try:
            config = FederationConfig(ip_range_whitelist=("127.0.0.0/8",), max_response_bytes=200_000)
            client = make_client(config, ssl.Certificate.loadPEM(certificate[0]))
            with pytest.raises(RemoteUnreachable, match="max_response_bytes"):
                await client.get_json(f"127.0.0.1:{port.getHost().port}", "/x")
        finally:
            await port.stopListening()


@pytest.fixture
def tls_server(tmp_path: Path, certificate: tuple[bytes, bytes]) -> Iterator[int]:
    """A server process generated with --tls-cert/--tls-key and the test-federation flags; yields its port."""
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(certificate[0])
    key_path.write_bytes(certificate[1])
    port = free_port()
    done = run_cli(
        "generate-config", "--server-name", f"localhost:{port}", "--data-dir", str(tmp_path / "data"),
        "--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert_path), "--tls-key", str(key_path),
        "--federation-verify-certificates", "false", "--federation-allow-ip", "127.0.0.0/8",
    )
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen([*homeserver_command(), "run", "--config", done.stdout.strip()],
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    context = stdlib_ssl.create_default_context(cadata=certificate[0].decode())
    deadline = time.monotonic() + 30
    try:
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"https://localhost:{port}/_matrix/client/versions",
                                            context=context, timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "server not ready"
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        if os.environ.get("SC_KEEP_LOGS"):
            print((tmp_path / "server.log").read_text())


class GeneratedTestFederationTests:
    """generate-config's test-federation flags give one TLS listener for every API."""

    @pytest_twisted.ensureDeferred
    async def test_one_tls_listener_serves_client_and_federation(
        self, tls_server: int, certificate: tuple[bytes, bytes]
    ) -> None:
        """Over the same TLS port: the client API answered (fixture) and the federation version endpoint."""
        client = make_client(LOOPBACK, ssl.Certificate.loadPEM(certificate[0]))
        version = await client.get_json(f"localhost:{tls_server}", "/_matrix/federation/v1/version", signed=False)
        assert version["server"]["name"] == "SecureConnect"
        with pytest.raises(Exception) as unknown:
            await client.get_json(f"localhost:{tls_server}", "/_matrix/federation/v1/nonexistent")
        assert getattr(unknown.value, "status", None) == 404
        await client.close()
