#!/bin/sh
# chatml-chat-template: drop a ChatML chat template (Qwen-family format, with tool calls and thinking
# blocks kept) into WORKSPACE_DIR, for `vllm serve … --chat-template chatml.jinja`. The toolkit's
# fix-qwen3.5-chat-template mod works the same way with its own template.
set -eu
: "${WORKSPACE_DIR:?WORKSPACE_DIR is set by the launcher}"
cp chatml.jinja "$WORKSPACE_DIR/chatml.jinja"
echo "chatml-chat-template: wrote $WORKSPACE_DIR/chatml.jinja (use --chat-template chatml.jinja)"
