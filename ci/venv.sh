#!/usr/bin/env bash
# The runner's Python environment for the workflows: .venv with spark-pipeline installed from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
.venv/bin/python -m pipeline --version
