#!/bin/sh
# instanttensor-hybrid-draft-loader: with --load-format instanttensor, the speculative draft model loads
# with lazy safetensors while the target keeps InstantTensor (a hook on vLLM's get_model(), in
# spark_draft_loader.py). A no-op for other load formats, so it is safe on any recipe.
set -eu
. ./install_hook.sh
install_hook vllm spark_draft_loader
