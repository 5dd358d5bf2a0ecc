"""Fault tests: real runs of the flow with a fault injected, then the ledger checked."""
