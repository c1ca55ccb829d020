#!/usr/bin/env bash
# What build.yml runs under `dagger run`: the build with the workflow's inputs (from the environment,
# never pasted into a script), then what the upload step keeps in ci-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
prs=$(printf '%s' "${VLLM_PRS:-}" | tr -s ' ,' ',' | sed 's/^,//; s/,$//')
if [[ -n $prs && ! $prs =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  echo "VLLM_PRS: expected PR numbers, got '${VLLM_PRS}'" >&2
  exit 2
fi
mkdir -p ci-out
# Only what the run was given overrides build.yaml (a push or the nightly build takes it as it is).
.venv/bin/python -m pipeline plan ${GPU_ARCH:+--gpu-arch "$GPU_ARCH"} ${VLLM_REF:+--vllm-ref "$VLLM_REF"} \
  ${prs:+--set "vllm.prs=[$prs]"} --json > ci-out/plan.json
.venv/bin/python -m pipeline build ${GPU_ARCH:+--gpu-arch "$GPU_ARCH"} ${VLLM_REF:+--vllm-ref "$VLLM_REF"} \
  ${prs:+--set "vllm.prs=[$prs]"} ${REMOTE_STORE:+--remote-store "$REMOTE_STORE"} --json > ci-out/build.json
.venv/bin/python -m pipeline store ls --json > ci-out/store.json   # every entry's manifest: files, sizes, sha256
