"""Jobs of the workflow: packs of runs, the cost plan, stage fingerprints and the cached validated config."""
