#!/bin/sh
# gpu-mem-util-gb: adds `--gpu-memory-utilization-gb N` to vllm serve (N GiB instead of a fraction of
# GB10's unified memory), as a hook on vllm.engine.arg_utils (spark_gpu_mem_gb.py), not an edit of
# vLLM's files.
set -eu
. ./install_hook.sh
install_hook vllm spark_gpu_mem_gb
