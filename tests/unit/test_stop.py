"""A flow's stop (logins/core/stop.py) belongs to that flow: `build_flow` hands one to the
source and the sink, so a stop or a permanent error of one flow never reaches another flow
built in the same process (tests, a benchmark, a reused Lambda sandbox)."""

from __future__ import annotations

from typing import Any

from nacl.public import PrivateKey

from flows.builder import build_flow
from logins.core.config import load_config
from logins.core.keys import TokenKey
from logins.core.pipeline_keys import Secrets
from logins.core.stop import Stop
from logins.core.tokens import Tokenizer
from logins.core.vault import Sealer

ENV = {
    "SQS_QUEUE_URL": "http://127.0.0.1:1/000000000000/q",
    "LOGINS_TOKEN_KEY_FILE": "/keys/token.key",
    "LOGINS_VAULT_PUBLIC_KEY_FILE": "/keys/vault.pub",
}


def _stops(flow: Any) -> tuple[Stop, Stop]:
    """The stop the flow's SQS source and its PostgreSQL sink were given."""
    steps = {step.step_id: step for step in flow.substeps}
    return steps["logins.sqs"].source.stop, steps["logins.postgres"].sink.stop


def test_two_flows_in_one_process_do_not_share_a_stop() -> None:
    config = load_config(ENV)
    secrets = Secrets(
        Tokenizer([TokenKey("k", b"\x01" * 32)]),
        Sealer(PrivateKey.generate().public_key),
    )
    first_source, first_sink = _stops(build_flow(config, secrets=secrets))
    assert first_source is first_sink  # one stop per flow, for its source and its sink
    first_source.fail("the queue was deleted")

    second_source, second_sink = _stops(build_flow(config, secrets=secrets))
    assert second_source is second_sink
    assert second_source is not first_source
    assert not second_source.is_set() and second_source.failure is None
    assert first_source.is_set() and first_source.failure == "the queue was deleted"

    given = Stop()  # a caller's own (flows/logins.py's signal handlers, an in-process source)
    assert _stops(build_flow(config, secrets=secrets, stop=given)) == (given, given)


def test_fail_records_only_the_first_reason() -> None:
    stop = Stop()
    assert not stop.is_set() and stop.failure is None
    stop.fail("access denied")
    stop.fail("the queue was deleted")
    assert stop.is_set()
    assert stop.failure == "access denied"


def test_a_request_alone_is_no_failure() -> None:
    """A signal or a failed writer thread stops receiving; only `fail` makes the exit 2."""
    stop = Stop()
    stop.request()
    assert stop.is_set() and stop.failure is None
