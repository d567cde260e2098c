"""Graph-to-graph passes, one per file; `manager` runs them as named pipelines."""
