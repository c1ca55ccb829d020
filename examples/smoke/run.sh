#!/usr/bin/env bash
# The main job on the smoke stack, end to end on this machine, each command printed before it runs:
#   1. generate the fixtures (sources, wheel indexes, fixture models, corpus, smoke recipe) in DIR
#   2. build the smoke stack (every stage, then the runtime image vllm-node-smoke)
#   3. serve it here from the smoke recipe (deploy: container "smoke", port $PORT)
#   4. benchmark it with llama-benchy's quick profile: table on screen, JSON and PNG chart on disk
# It leaves the server running: python -m pipeline stop --name smoke
# No GPU is needed (the smoke vllm serve is a deterministic fixture), nor privileges: the container runs
# with --gpus none and without --privileged. After examples/smoke/setup.sh; DIR defaults to /tmp/smoke.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-/tmp/smoke}
PORT=${PORT:-8000}
step() { printf '\033[1m$ %s\033[0m\n' "$*" >&2; "$@"; }

step python3 -m examples.smoke.fixtures "$DIR"
step python3 -m pipeline build -f "$DIR/build.yaml"
step python3 -m pipeline recipe run "$DIR/smoke.yaml" --solo --name smoke --port "$PORT" \
  --gpus none --non-privileged --nofile 16384 --mem-limit-gb 4 --shm-size-gb 1 --timeout 120
step python3 -m pipeline bench run "$DIR/smoke.yaml" --url "http://127.0.0.1:$PORT/v1"
echo "the smoke server keeps running: python3 -m pipeline stop --name smoke" >&2
