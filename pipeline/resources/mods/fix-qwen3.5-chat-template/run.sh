#!/bin/sh
# fix-qwen3.5-chat-template: writes qwen3.5.jinja (our Qwen3.5 chat template: tools, grouped tool results,
# earlier reasoning dropped, enable_thinking) into WORKSPACE_DIR; recipes pass --chat-template qwen3.5.jinja.
set -eu
: "${WORKSPACE_DIR:?WORKSPACE_DIR is set by the launcher}"
cp qwen3.5.jinja "$WORKSPACE_DIR/qwen3.5.jinja"
echo "fix-qwen3.5-chat-template: wrote $WORKSPACE_DIR/qwen3.5.jinja (use --chat-template qwen3.5.jinja)"
