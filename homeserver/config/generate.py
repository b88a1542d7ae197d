"""Writes a new, fully documented ``homeserver.yaml`` and the server's signing key.

The config text is rendered from the section classes themselves: every option appears with its
description and default as YAML comments. Options the administrator chose (server name, data
directory, listeners, database, registration mode, rate limiting) are written as live values; all
others are commented out, so they keep following the built-in defaults until someone uncomments them.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import textwrap
from collections.abc import Mapping
from typing import Any

import attrs

from homeserver.config._options import OptionInfo, options_of, to_plain
from homeserver.config.errors import ConfigError
from homeserver.config.loader import HomeserverConfig, load_yaml, parse_config
from homeserver.config.registration import REGISTRATION_MODES
from sc_proto.crypto.keys import generate_signing_key, write_signing_keys

CONFIG_FILENAME = "homeserver.yaml"
_WRAP = 100
_HEADER = """\
# SecureConnect homeserver configuration, written by `sc-homeserver generate-config`.
#
# Every option is listed with its description and default. Options shown as comments ('#option:')
# use the default; uncomment and edit them to change it. Relative paths are relative to this file's
# directory. Unknown options are errors, except under 'experimental:'. Full reference: docs/config.md.
# This file may contain secrets (registration tokens, database password): keep it private.
"""


@attrs.frozen
class GenerateOptions:
    """What ``generate-config`` was asked for.

    Attributes:
        server_name: the Matrix server name.
        data_dir: the data directory; the config file is written into it.
        listen: ``(host, port)`` listeners; empty means the default (127.0.0.1:8008).
        database_url: the database URL; ``None`` means SQLite in the data directory.
        registration: ``"open"``, ``"token"`` or ``"closed"``.
        rate_limits: ``False`` writes ``ratelimits.enabled: false``.
        tls_certificate_path: PEM certificate chain; with ``tls_private_key_path``, every listener
            terminates TLS (and so serves the federation and key APIs over HTTPS).
        tls_private_key_path: PEM private key.
        federation_verify_certificates: ``False`` writes ``federation.verify_certificates: false``
            (self-signed test federations only).
        federation_allow_ips: CIDR ranges written as ``federation.ip_range_whitelist`` (e.g.
            ``127.0.0.0/8`` so servers on one machine can federate; unsafe in production).
    """

    server_name: str
    data_dir: str
    listen: tuple[tuple[str, int], ...] = ()
    database_url: str | None = None
    registration: str = "closed"
    rate_limits: bool = True
    tls_certificate_path: str | None = None
    tls_private_key_path: str | None = None
    federation_verify_certificates: bool = True
    federation_allow_ips: tuple[str, ...] = ()

    @property
    def is_test_federation(self) -> bool:
        """Whether the options weaken federation safety (unverified certificates or allowed private ranges)."""
        return not self.federation_verify_certificates or bool(self.federation_allow_ips)


def parse_listen_address(text: str) -> tuple[str, int]:
    """Parses ``HOST:PORT`` (``[V6]:PORT`` for IPv6) from the command line.

    The host and port are checked again, with the YAML path in the message, when the config is
    validated.

    Raises:
        ConfigError: when the text is not of that form.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or len(port) > 5:
        raise ConfigError(f"--listen expects HOST:PORT (e.g. 127.0.0.1:8008 or [::1]:8008), got {text!r}")
    return host, int(port)


def _overrides(options: GenerateOptions, data_dir: str) -> dict[str, Any]:
    """The live (uncommented) values of the generated file, as YAML data."""
    listen = options.listen or (("127.0.0.1", 8008),)
    tls = _tls_paths(options)
    listener_tls: dict[str, Any] = {"tls": False}
    if tls is not None:
        listener_tls = {"tls": True, "tls_certificate_path": tls[0], "tls_private_key_path": tls[1]}
    server: dict[str, Any] = {
        "server_name": options.server_name,
        "data_dir": data_dir,
        "listeners": [{"bind_address": host, "port": port, **listener_tls} for host, port in listen],
    }
    if options.listen:
        scheme = "https" if tls is not None else "http"
        server["public_baseurl"] = f"{scheme}://localhost:{listen[0][1]}/"
    if options.registration not in REGISTRATION_MODES:
        raise ConfigError(f"--registration must be one of {', '.join(REGISTRATION_MODES)}")
    registration: dict[str, Any] = {"mode": options.registration}
    if options.registration == "token":
        # One ready-to-use token; more can be added here or through the admin API.
        registration["tokens"] = [secrets.token_urlsafe(24)]
    database = {"url": options.database_url or "sqlite://" + os.path.join(data_dir, "homeserver.db")}
    overrides: dict[str, Any] = {
        "server": server,
        "database": database,
        "registration": registration,
        "ratelimits": {"enabled": options.rate_limits},
    }
    federation: dict[str, Any] = {}
    if not options.federation_verify_certificates:
        federation["verify_certificates"] = False
    if options.federation_allow_ips:
        federation["ip_range_whitelist"] = list(options.federation_allow_ips)
    if federation:
        overrides["federation"] = federation
    return overrides


def _tls_paths(options: GenerateOptions) -> tuple[str, str] | None:
    """The absolute (certificate, key) paths, or None without TLS."""
    cert, key = options.tls_certificate_path, options.tls_private_key_path
    if cert is None and key is None:
        return None
    if not cert or not key:
        raise ConfigError("--tls-cert and --tls-key must be given together")
    return os.path.abspath(cert), os.path.abspath(key)


def render_config(options: GenerateOptions) -> str:
    """Renders the documented YAML text for ``options``.

    Raises:
        ConfigError: if the options do not make a valid configuration (bad server name, address...).
    """
    data_dir = os.path.abspath(options.data_dir)
    overrides = _overrides(options, data_dir)
    effective = parse_config(overrides, data_dir)
    defaults = parse_config({"server": {"server_name": options.server_name}}, data_dir)
    lines = [_HEADER]
    _render_section(HomeserverConfig, effective, defaults, overrides, 0, lines)
    text = "\n".join(lines) + "\n"
    # The file must load back to exactly what was asked for.
    if parse_config(load_yaml(text), data_dir) != effective:
        raise AssertionError("generated config does not round-trip")  # pragma: no cover
    return text


def _comment(text: str, indent: int, hang: int = 0) -> list[str]:
    prefix = " " * indent + "# "
    return textwrap.wrap(
        text, _WRAP, initial_indent=prefix, subsequent_indent=prefix + " " * hang, break_on_hyphens=False
    )


def _scalar(value: object) -> str:
    """YAML text for a value; JSON is valid YAML and quotes strings unambiguously."""
    return json.dumps(to_plain(value), ensure_ascii=False)


def _default_text(info: OptionInfo, default: object) -> str:
    if info.required:
        return "Required."
    return f"Default: {info.default_doc if info.default_doc else _scalar(default)}."


def _render_section(
    cls: type,
    effective: object,
    defaults: object,
    live: Mapping[str, Any] | None,
    indent: int,
    lines: list[str],
) -> None:
    pad = " " * indent
    for info in options_of(cls):
        value, default = getattr(effective, info.name), getattr(defaults, info.name)
        is_live = live is not None and info.name in live
        mark = "" if is_live else "#"
        if indent == 0:
            lines.append("")
        if info.vtype.section is not None:
            lines.extend(_comment(info.doc, indent))
            lines.append(f"{pad}{mark}{info.name}:")
            sub_live = live.get(info.name) if live is not None else None
            _render_section(info.vtype.section, value, default, sub_live, indent + 2, lines)
            continue
        lines.extend(_comment(f"{info.doc} {_default_text(info, default)}", indent))
        if info.vtype.item is not None and info.vtype.item.section is not None:
            _render_section_list(info, value, mark, indent, lines)
        else:
            lines.append(f"{pad}{mark}{info.name}: {_scalar(value)}")


def _render_section_list(
    info: OptionInfo, items: tuple[Any, ...], mark: str, indent: int, lines: list[str]
) -> None:
    pad = " " * indent
    item_cls = info.vtype.item.section if info.vtype.item else None
    assert item_cls is not None
    lines.extend(_comment("Each listener has these options:", indent))
    for sub in options_of(item_cls):
        lines.extend(_comment(f"- {sub.name}: {sub.doc} {_default_text(sub, sub.default)}", indent, hang=2))
    if not items:
        lines.append(f"{pad}{mark}{info.name}: []")
        return
    lines.append(f"{pad}{mark}{info.name}:")
    for item in items:
        plain = to_plain(item)
        assert isinstance(plain, dict)
        shown = [(k, v) for k, v in plain.items() if v is not None]
        for i, (key, val) in enumerate(shown):
            bullet = "- " if i == 0 else "  "
            lines.append(f"{pad}{mark}  {bullet}{key}: {_scalar(val)}")


def _new_key_version() -> str:
    alphabet = string.ascii_letters + string.digits
    return "a_" + "".join(secrets.choice(alphabet) for _ in range(4))


def _write_private(path: str, text: str, *, exclusive: bool) -> None:
    """Writes ``text`` to ``path`` readable by the owner only (atomically unless ``exclusive``)."""
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return
    tmp = f"{path}.tmp-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def generate_files(options: GenerateOptions, *, force: bool = False) -> str:
    """Writes ``DATA_DIR/homeserver.yaml`` and, if missing, ``DATA_DIR/signing.key``.

    An existing signing key is always kept (even with ``force``): replacing it would break
    federation with every server that cached the old one.

    Args:
        options: what to generate.
        force: overwrite an existing config file.

    Returns:
        The absolute path of the config file.

    Raises:
        ConfigError: invalid options, an existing config without ``force``, or an I/O failure.
    """
    text = render_config(options)
    data_dir = os.path.abspath(options.data_dir)
    config_path = os.path.join(data_dir, CONFIG_FILENAME)
    if os.path.exists(config_path) and not force:
        raise ConfigError(f"{config_path} already exists; use --force to overwrite it")
    config = parse_config(load_yaml(text), data_dir)
    try:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        _write_private(config_path, text, exclusive=False)
        key_path = config.server.signing_key_path
        if not os.path.exists(key_path):
            key = write_signing_keys([generate_signing_key(_new_key_version())])
            _write_private(key_path, key, exclusive=True)
    except OSError as e:
        raise ConfigError(f"cannot write {e.filename or data_dir}: {e.strerror or e}") from None
    return config_path
