"""The pure core: the stage IR, content keys, the plan and build.lock. No I/O, no console."""
