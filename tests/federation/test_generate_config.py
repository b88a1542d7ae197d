"""``sc-homeserver generate-config`` for test federations: TLS listeners, relaxed federation checks."""

from __future__ import annotations

import io
from pathlib import Path

from homeserver.app.main import main
from homeserver.config import load_config


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


class GenerateTestFederationTests:
    """The flags write a config whose one listener serves every API over TLS and reaches loopback peers."""

    def test_tls_and_loopback_federation(self, tmp_path: Path) -> None:
        """--tls-cert/--tls-key make the listener TLS; the federation flags land in the file, with a warning."""
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        code, out, err = run(
            "generate-config", "--server-name", "localhost:8448", "--data-dir", str(tmp_path / "data"),
            "--listen", "127.0.0.1:8448", "--tls-cert", str(cert), "--tls-key", str(key),
            "--federation-verify-certificates", "false", "--federation-allow-ip", "127.0.0.0/8",
        )
        assert code == 0, err
        assert "never in production" in err
        config = load_config(out.strip())
        [listener] = config.server.listeners
        assert listener.tls and listener.port == 8448
        assert listener.tls_certificate_path == str(cert)
        assert listener.tls_private_key_path == str(key)
        assert config.server.public_baseurl.startswith("https://")
        assert config.federation.enabled
        assert config.federation.verify_certificates is False
        assert config.federation.ip_range_whitelist == ("127.0.0.0/8",)
        text = Path(out.strip()).read_text()
        assert "\nfederation:\n" in text and "  verify_certificates: false" in text

    def test_defaults_stay_safe(self, tmp_path: Path) -> None:
        """Without the flags: no TLS, certificates verified, no whitelist, no warning."""
        code, out, err = run("generate-config", "--server-name", "example.org", "--data-dir", str(tmp_path))
        assert code == 0 and err == ""
        config = load_config(out.strip())
        assert not config.server.listeners[0].tls
        assert config.federation.verify_certificates is True
        assert config.federation.ip_range_whitelist == ()

    def test_tls_flags_go_together(self, tmp_path: Path) -> None:
        """A certificate without a key (or the reverse) is a usage error."""
        code, _, err = run("generate-config", "--server-name", "example.org", "--data-dir", str(tmp_path),
                           "--tls-cert", str(tmp_path / "c.pem"))
        assert code == 2 and "--tls-key" in err

    def test_bad_cidr(self, tmp_path: Path) -> None:
        """An invalid range is refused with the option's path."""
        code, _, err = run("generate-config", "--server-name", "example.org", "--data-dir", str(tmp_path),
                           "--federation-allow-ip", "not-a-range")
        assert code == 2 and "ip_range_whitelist" in err
