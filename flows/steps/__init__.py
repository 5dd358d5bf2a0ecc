"""The dataflow's steps: validate, dedupe, mask, one module each.

validate and mask are plain Python over a batch, tested without a dataflow; dedupe is a
Bytewax `StatefulBatchLogic` (its state is snapshotted by Bytewax), tested by calling its
logic directly. flows/builder.py wires them into the dataflow.
"""
