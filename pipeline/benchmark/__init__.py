"""`bench`: llama-benchy against a served endpoint, results keyed by build key, recipe and node count."""
