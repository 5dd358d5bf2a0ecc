"""The dataflow's steps: validate, dedupe, mask. Each is plain Python, testable without Bytewax."""
