"""Sources: git mirrors, refs and PRs resolved to commits, and checked-out trees. Used by the builder
and by deploy's launch-time PR mods."""
