#!/bin/sh
# diffusiongemma: checks that the image's vLLM serves DiffusionGemma (stops the deploy with what is
# missing if not, before a long model load) and writes diffusiongemma.jinja, a chat template without the
# thinking channel, into WORKSPACE_DIR; the recipe passes --chat-template diffusiongemma.jinja.
set -eu
: "${WORKSPACE_DIR:?WORKSPACE_DIR is set by the launcher}"
python3 check_vllm.py
cp diffusiongemma.jinja "$WORKSPACE_DIR/diffusiongemma.jinja"
echo "diffusiongemma: wrote $WORKSPACE_DIR/diffusiongemma.jinja (use --chat-template diffusiongemma.jinja)"
