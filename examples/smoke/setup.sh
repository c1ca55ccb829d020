#!/usr/bin/env bash
# Prepare a Debian/Ubuntu machine for the smoke build, saying what it does before doing it:
#   1. apt-get install docker.io debootstrap git (only those missing)
#   2. start dockerd in the background if no Docker daemon answers (log: /tmp/spark-pipeline-dockerd.log)
#   3. pip install -e . (spark-pipeline and its Python dependencies)
# Needs root (for apt and dockerd). Nothing else is changed.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '\033[1m== %s\033[0m\n' "$*"; }
[ "$(id -u)" = 0 ] || { echo "run as root (apt-get and dockerd need it)" >&2; exit 2; }

need=""
for pkg in docker.io debootstrap git; do dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"; done
if [ -n "$need" ]; then
  say "installing with apt-get:$need"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
else
  say "docker.io, debootstrap and git are installed"
fi

if /usr/bin/docker version >/dev/null 2>&1; then
  say "a Docker daemon answers"
else
  say "starting dockerd in the background (log: /tmp/spark-pipeline-dockerd.log, pid file /var/run/docker.pid)"
  setsid dockerd >/tmp/spark-pipeline-dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do /usr/bin/docker version >/dev/null 2>&1 && break; sleep 1; done
  /usr/bin/docker version --format 'docker {{.Server.Version}} is up' || { echo "dockerd did not start" >&2; exit 1; }
fi

say "installing spark-pipeline (pip install -e .)"
python3 -m pip install -q -e .
say "ready: python -m examples.smoke.fixtures /tmp/smoke && python -m pipeline build -f /tmp/smoke/build.yaml"
