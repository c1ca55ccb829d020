#!/bin/sh
# drop-caches: every 60 s, `sync; echo 3 > /proc/sys/vm/drop_caches`, so the page cache of a huge
# safetensors load does not crowd out GB10's unified memory (toolkit issue #82). Needs a privileged
# container (the default). Idempotent: a second run keeps the loop that is already there.
set -eu
PIDFILE=/tmp/drop_caches.pid
LOG=/tmp/drop_caches.log
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "drop-caches: already running (pid $(cat "$PIDFILE"))"
  exit 0
fi
if ! ( : > /proc/sys/vm/drop_caches ) 2>/dev/null; then
  echo "drop-caches: /proc/sys/vm/drop_caches is not writable here (not a privileged container); skipped"
  exit 0
fi
nohup sh -c 'while true; do sync; echo 3 > /proc/sys/vm/drop_caches; echo "$(date -u +%FT%TZ) dropped" >> '"$LOG"'; sleep 60; done' \
  >/dev/null 2>&1 &
echo $! > "$PIDFILE"
echo "drop-caches: started (pid $(cat "$PIDFILE"), log $LOG)"
