"""Models: downloaded once from the Hugging Face hub into this machine's cache, copied to the nodes that
lack them (only the files they lack), listed per node."""
