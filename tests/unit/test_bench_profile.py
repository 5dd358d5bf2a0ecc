"""The profile summary puts each py-spy sample in the step whose code was running."""

from __future__ import annotations

from bench.profile import _step_of

RUN = "<module> (bytewax/run.py:355)"


def test_the_sink_and_source_partitions_count_as_their_steps() -> None:
    # The partitions' classes are private (a leading underscore): their frames still name
    # their step, and the worker blocked on the writer's queue is waiting for PostgreSQL.
    put = [RUN, "_PostgresPartition.write_batch (connectors/postgres/sink.py:520)",
           "Queue.put (queue.py:140)"]  # fmt: skip
    assert _step_of(put) == "sink: waiting for PostgreSQL"
    assert _step_of([RUN, "_PostgresPartition._drain (connectors/postgres/sink.py:530)"]) == "sink"
    assert _step_of([RUN, "WriterPool._drain (connectors/postgres/pool.py:150)"]) == "sink"
    generated = [RUN, "_GeneratedPartition.next_batch (bench/generated.py:190)"]
    assert _step_of(generated) == "source"
    assert _step_of([RUN, "_SqsPartition.next_batch (connectors/sqs/source.py:300)"]) == "source"


def test_a_sample_in_no_step_is_bytewax_and_the_rest() -> None:
    assert _step_of([RUN]) == "Bytewax and the rest"
    assert _step_of([RUN, "Validator.batch (flows/steps/validate.py:260)"]) == "validate"
