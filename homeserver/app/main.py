"""The ``sc-homeserver`` command line.

Subcommands:

* ``generate-config``: write a documented ``homeserver.yaml`` and a signing key into a data directory.
* ``run --config FILE``: check the config, set up logging and start the server.
* ``register-user --config FILE USER [--password P] [--admin]``: create an account.
* ``rotate-signing-key --config FILE [--key-version V]``: replace the server's signing key; the old key
  is published in ``old_verify_keys`` from the next start (docs/federation-keys.md).
* ``version``: print the version.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from typing import TextIO

from homeserver.config.errors import ConfigError
from homeserver.config.generate import GenerateOptions, generate_files, parse_listen_address
from homeserver.config.loader import HomeserverConfig, load_config
from homeserver.config.registration import REGISTRATION_MODES
from sc_proto._version import __version__

PROG = "sc-homeserver"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
_COMPOSITION = "homeserver.app.composition"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog=PROG, description="SecureConnect Matrix homeserver.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    gen = commands.add_parser("generate-config", help="write a new config file and signing key")
    gen.add_argument("--server-name", required=True, help="the Matrix server name, e.g. example.org")
    gen.add_argument("--data-dir", required=True, help="data directory; homeserver.yaml is written here")
    gen.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="HTTP listener (repeatable; default 127.0.0.1:8008)",
    )
    gen.add_argument("--database-url", help="database URL (default: SQLite in the data directory)")
    gen.add_argument("--registration", choices=REGISTRATION_MODES, default="closed", help="default: closed")
    gen.add_argument("--no-rate-limits", action="store_true", help="write ratelimits.enabled: false")
    gen.add_argument("--force", action="store_true", help="overwrite an existing config (never the key)")
    gen.add_argument("--tls-cert", metavar="FILE", help="PEM certificate: listeners serve HTTPS (with --tls-key)")
    gen.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    gen.add_argument(
        "--federation-verify-certificates",
        choices=("true", "false"),
        default="true",
        help="false: accept any certificate from other servers (self-signed test federations only; unsafe)",
    )
    gen.add_argument(
        "--federation-allow-ip",
        action="append",
        default=[],
        metavar="CIDR",
        help="let federation reach this range despite the deny list (e.g. 127.0.0.0/8; repeatable; unsafe)",
    )

    run = commands.add_parser("run", help="run the homeserver")
    run.add_argument("--config", required=True, metavar="FILE", help="path to homeserver.yaml")

    reg = commands.add_parser("register-user", help="create a user account")
    reg.add_argument("--config", required=True, metavar="FILE", help="path to homeserver.yaml")
    reg.add_argument("user", metavar="USER", help="localpart or full user ID")
    reg.add_argument(
        "--password",
        help="the password (visible to other local users in the process list; omit to be prompted)",
    )
    reg.add_argument("--admin", action="store_true", help="make the user a server admin")

    rot = commands.add_parser("rotate-signing-key", help="replace the signing key (the old one stays published)")
    rot.add_argument("-c", "--config", required=True, metavar="FILE", help="path to homeserver.yaml")
    rot.add_argument("--key-version", help="the new key's version, [a-zA-Z0-9_]+ (default: random)")

    commands.add_parser("version", help="print the version")
    return parser


def _generate_config(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        options = GenerateOptions(
            server_name=args.server_name,
            data_dir=args.data_dir,
            listen=tuple(parse_listen_address(text) for text in args.listen),
            database_url=args.database_url,
            registration=args.registration,
            rate_limits=not args.no_rate_limits,
            tls_certificate_path=args.tls_cert,
            tls_private_key_path=args.tls_key,
            federation_verify_certificates=args.federation_verify_certificates == "true",
            federation_allow_ips=tuple(args.federation_allow_ip),
        )
        path = generate_files(options, force=args.force)
    except ConfigError as e:
        print(f"error: {e}", file=err)
        return EXIT_USAGE
    if options.is_test_federation:
        print(
            "warning: this config weakens federation safety (unverified certificates or allowed private "
            "addresses); use it only for test federations, never in production (docs/federation.md)",
            file=err,
        )
    print(path, file=out)
    return EXIT_OK


def _load(path: str, err: TextIO) -> HomeserverConfig | None:
    try:
        return load_config(path)
    except ConfigError as e:
        print(f"error in config: {e}", file=err)
        return None


def _composition_missing(e: ModuleNotFoundError, err: TextIO) -> int:
    if e.name != _COMPOSITION:
        raise e
    print(f"error: {_COMPOSITION} is not available in this build", file=err)
    return EXIT_FAILURE


def _run(args: argparse.Namespace, err: TextIO) -> int:
    config = _load(args.config, err)
    if config is None:
        return EXIT_USAGE
    from homeserver.logging.setup import setup_logging

    try:
        setup_logging(config.logging, capture_twisted=True)
    except ConfigError as e:
        print(f"error in config: {e}", file=err)
        return EXIT_USAGE
    try:
        from homeserver.app.composition import run  # type: ignore[import-not-found,unused-ignore]  # written by the lead
    except ModuleNotFoundError as e:
        return _composition_missing(e, err)
    result = run(config)
    return result if isinstance(result, int) else EXIT_OK


def _read_new_password(err: TextIO) -> str | None:
    first = getpass.getpass("Password: ")
    if not first:
        print("error: the password must not be empty", file=err)
        return None
    if getpass.getpass("Confirm password: ") != first:
        print("error: the passwords do not match", file=err)
        return None
    return first


def _register_user(args: argparse.Namespace, err: TextIO) -> int:
    config = _load(args.config, err)
    if config is None:
        return EXIT_USAGE
    password = args.password if args.password is not None else _read_new_password(err)
    if not password:
        if args.password is not None:
            print("error: the password must not be empty", file=err)
        return EXIT_USAGE
    try:
        from homeserver.app.composition import register_user  # type: ignore[import-not-found,unused-ignore]  # written by the lead
    except ModuleNotFoundError as e:
        return _composition_missing(e, err)
    result = register_user(config, args.user, password, args.admin)
    return result if isinstance(result, int) else EXIT_OK


def _rotate_signing_key(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    config = _load(args.config, err)
    if config is None:
        return EXIT_USAGE
    import time

    from federation.local_keys import KeyFileError, old_keys_path, rotate_signing_key

    path = config.server.signing_key_path
    try:
        old_id, new_id = rotate_signing_key(path, int(time.time() * 1000), version=args.key_version)
    except KeyFileError as e:
        print(f"error: {e}", file=err)
        return EXIT_FAILURE
    except OSError as e:
        print(f"error: cannot write the key files next to {path}: {e.strerror or e}", file=err)
        return EXIT_FAILURE
    print(f"new signing key {new_id} in {path}", file=out)
    print(f"old key {old_id} kept as an old verify key in {old_keys_path(path)}", file=out)
    print("restart the server (every worker) to sign with the new key", file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Runs the command line.

    Args:
        argv: the arguments (without the program name); ``sys.argv[1:]`` when ``None``.
        out: standard output (for tests).
        err: standard error (for tests).

    Returns:
        The process exit code.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse reports usage errors and --help/--version this way
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command == "generate-config":
        return _generate_config(args, out, err)
    if args.command == "run":
        return _run(args, err)
    if args.command == "register-user":
        return _register_user(args, err)
    if args.command == "rotate-signing-key":
        return _rotate_signing_key(args, out, err)
    if args.command == "version":
        print(f"{PROG} {__version__}", file=out)
        return EXIT_OK
    parser.print_help(err)
    return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
