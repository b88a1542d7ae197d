"""CI check of the two distributions (the ``wheels`` tox environment).

1. Builds the ``sc-proto`` and ``secureconnect`` wheels (``pip wheel --no-deps``).
2. Installs the ``sc-proto`` wheel alone into a fresh virtual environment, checks that none of the
   server's dependencies (nor its packages) arrived, and runs there, from a temporary directory
   (so the source tree is not importable): the worked example of ``docs/sc_proto.md`` (as a script
   and pasted into the shell) and every conformance vector through ``check_vectors.py``.
3. Installs both wheels into a second fresh environment; checks that ``homeserver``,
   ``federation`` and ``media`` are not top-level names there; runs ``sc-homeserver version`` and
   ``generate-config``, starts a server on a free loopback port, waits for
   ``/_matrix/client/versions`` to answer, and stops it.

Usage: ``python packaging/check_wheels.py [--keep DIR]``. Needs pip to reach the package index for
the dependencies.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import venv

ROOT = pathlib.Path(__file__).resolve().parents[1]
SERVER_ONLY = (
    "twisted", "treq", "autobahn", "pillow", "psycopg2", "cryptography", "attrs", "pyyaml",
    "argon2-cffi", "prometheus-client", "pyotp", "txredisapi", "secureconnect",
)  # fmt: skip
LIBRARY_ALLOWED = {"sc-proto", "pynacl", "signedjson", "canonicaljson", "unpaddedbase64", "cffi", "pycparser",
                   "typing-extensions", "pip", "setuptools", "wheel"}  # fmt: skip


def run(*args: str | pathlib.Path, cwd: pathlib.Path | None = None) -> str:
    """Runs a command, echoing it; returns its stdout; raises on failure."""
    print("+", " ".join(str(a) for a in args), flush=True)
    done = subprocess.run(  # noqa: S603 - fixed commands over our own build paths
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"command failed ({done.returncode}): {args[0]} ...")
    return done.stdout


def build_wheels(dist: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Builds both wheels into ``dist``; returns (library wheel, server wheel)."""
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, ROOT / "packaging" / "sc-proto")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, ROOT)
    (library,) = dist.glob("sc_proto-*.whl")
    (server,) = dist.glob("secureconnect-*.whl")
    return library, server


def make_venv(path: pathlib.Path) -> pathlib.Path:
    """Creates a virtual environment with pip; returns its python."""
    venv.create(path, with_pip=True, clear=True)
    return path / ("Scripts" if os.name == "nt" else "bin") / "python"


def installed(python: pathlib.Path) -> set[str]:
    """Normalised names of the distributions installed in an environment."""
    listing = json.loads(run(python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"))
    return {entry["name"].lower().replace("_", "-") for entry in listing}


def check_library(python: pathlib.Path, wheel: pathlib.Path, work: pathlib.Path) -> None:
    """The library wheel alone: dependencies, example and vectors, from a directory outside the tree."""
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel)
    names = installed(python)
    arrived = sorted(n for n in names if n in SERVER_ONLY)
    if arrived:
        raise SystemExit(f"the library wheel pulled in server dependencies: {arrived}")
    unexpected = sorted(names - LIBRARY_ALLOWED)
    if unexpected:
        raise SystemExit(f"the library wheel pulled in unexpected distributions: {unexpected}")
    print(f"library environment holds only: {sorted(names)}")
    probe = "import importlib.util as u, sc_proto; print(sc_proto.__file__); " \
        "print([n for n in ('homeserver', 'federation', 'media') if u.find_spec(n)])"
    out = run(python, "-c", probe, cwd=work)
    if str(ROOT) in out or "[]" not in out:
        raise SystemExit(f"sc_proto was not imported from the installed wheel alone: {out}")
    shutil.copy(ROOT / "docs" / "sc_proto.md", work / "sc_proto.md")
    shutil.copy(ROOT / "scripts" / "run_doc_example.py", work / "run_doc_example.py")
    printed = run(python, "run_doc_example.py", "sc_proto.md", cwd=work)
    if printed.count("resolved topic: bananas") != 2:
        raise SystemExit(f"the worked example did not print its result twice:\n{printed}")
    vectors = work / "conformance"
    shutil.copytree(ROOT / "tests" / "sc_proto" / "conformance", vectors)
    shutil.copy(ROOT / "tests" / "sc_proto" / "conformance_adapter.py", work / "conformance_adapter.py")
    result = run(python, vectors / "check_vectors.py", "conformance_adapter.py", "--vectors", vectors, cwd=work)
    if not result.strip().endswith("315 passed, 0 failed"):
        raise SystemExit(f"conformance vectors against the installed library: {result}")
    print(result.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_server(python: pathlib.Path, wheels: tuple[pathlib.Path, pathlib.Path], work: pathlib.Path) -> None:
    """Both wheels: no generic top-level names, the console script works and a server answers."""
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *wheels)
    probe = "import importlib.util as u; print([n for n in ('homeserver', 'federation', 'media') if u.find_spec(n)])"
    out = run(python, "-c", probe, cwd=work).strip()
    if out != "[]":
        raise SystemExit(f"the server wheel installed generic top-level packages: {out}")
    script = python.parent / "sc-homeserver"
    print(run(script, "version", cwd=work).strip())
    port = _free_port()
    data = work / "data"
    config = run(script, "generate-config", "--server-name", "localhost", "--data-dir", data,
                 "--listen", f"127.0.0.1:{port}", cwd=work).strip().splitlines()[-1]  # fmt: skip
    log = (work / "server.log").open("w")
    server = subprocess.Popen(  # noqa: S603 - the installed console script, our own config
        [str(script), "run", "--config", config], cwd=work, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_matrix/client/versions", timeout=2) as r:
                    body = json.load(r)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    raise SystemExit("server did not answer:\n" + (work / "server.log").read_text()) from None
                time.sleep(0.2)
        if not body.get("versions"):
            raise SystemExit(f"/_matrix/client/versions answered without versions: {body}")
        print(f"server on 127.0.0.1:{port} answers /_matrix/client/versions: {body['versions'][:3]}...")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def main(argv: list[str]) -> int:
    """Runs every check; returns 0 (failures exit with a message)."""
    keep = pathlib.Path(argv[argv.index("--keep") + 1]) if "--keep" in argv else None
    base = keep or pathlib.Path(tempfile.mkdtemp(prefix="sc-wheels-"))
    base.mkdir(parents=True, exist_ok=True)
    try:
        dist = base / "dist"
        wheels = build_wheels(dist)
        for name in ("lib-work", "server-work"):
            (base / name).mkdir(exist_ok=True)
        check_library(make_venv(base / "lib-venv"), wheels[0], base / "lib-work")
        check_server(make_venv(base / "server-venv"), wheels, base / "server-work")
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
    print("wheels: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
