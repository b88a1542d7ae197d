#!/usr/bin/env bash
# Installs SecureConnect into ./.venv and starts a homeserver on the embedded default (SQLite, no other
# service), listening on 127.0.0.1:8008 with server name "localhost" and open registration (demo only).
# Re-running it reuses the existing config and data in ./data.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER_NAME="${SC_SERVER_NAME:-localhost}"
DATA_DIR="${SC_DATA_DIR:-data}"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
if [ ! -f "$DATA_DIR/homeserver.yaml" ]; then
  .venv/bin/sc-homeserver generate-config --server-name "$SERVER_NAME" --data-dir "$DATA_DIR" \
    --listen 127.0.0.1:8008 --registration open
fi
exec .venv/bin/sc-homeserver run --config "$DATA_DIR/homeserver.yaml"
