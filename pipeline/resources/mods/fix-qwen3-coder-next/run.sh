#!/bin/sh
# fix-qwen3-coder-next: Triton's scratch allocations go through PyTorch's CUDA caching allocator
# (spark_triton_alloc.py, a hook run when triton is imported), so Qwen3-Coder-Next's kernels run on
# GB10 (vLLM issue #33857).
set -eu
. ./install_hook.sh
install_hook triton spark_triton_alloc
