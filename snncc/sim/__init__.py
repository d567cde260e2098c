"""Executors of the IR: the reference interpreter and the deployed-graph simulators."""
