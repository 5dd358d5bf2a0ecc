"""One place wires the configured steps for both runners (flows/steps/chain.py): the Bytewax
dataflow (flows/builder.py) and the Lambda runner's batch (flows/batch.py) get the same steps,
in the configured order, sharing one seal cache sized by the mask steps."""

from __future__ import annotations

from pathlib import Path

from nacl.public import PrivateKey

from flows.batch import BatchSteps
from flows.builder import build_flow
from flows.steps.chain import seal_cache, stages
from logins.core.config import DedupeStep, MaskStep, load_config
from logins.core.keys import TokenKey
from logins.core.pipeline_keys import Secrets
from logins.core.records import SqsMessage
from logins.core.tokens import Tokenizer
from logins.core.vault import Sealer
from tests.helpers import make_keys

ENV = {
    "SQS_QUEUE_URL": "http://127.0.0.1:1/000000000000/q",
    "LOGINS_TOKEN_KEY_FILE": "/keys/token.key",
    "LOGINS_VAULT_PUBLIC_KEY_FILE": "/keys/vault.pub",
}


def test_the_stages_are_the_configured_steps_in_order() -> None:
    config = load_config(ENV)
    tokenizer = Tokenizer([TokenKey("k", b"\x01" * 32)])
    sealer = Sealer(PrivateKey.generate().public_key)
    chain = stages(config, tokenizer, sealer, seal_cache(config))
    assert [s.name for s in chain] == [s.name for s in config.steps]
    for stage, step in zip(chain, config.steps, strict=True):
        assert (stage.dedupe is step) == isinstance(step, DedupeStep)
        assert (stage.batch is None) == isinstance(step, DedupeStep)
    mask = next(s for s in config.steps if isinstance(s, MaskStep))
    assert seal_cache(config)._size == mask.seal_cache_size


def test_both_runners_run_the_chain(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    config = load_config(
        {
            **ENV,
            "LOGINS_TOKEN_KEY_FILE": str(keys["token.key"]),
            "LOGINS_VAULT_PUBLIC_KEY_FILE": str(keys["vault.pub"]),
        }
    )
    tokenizer = Tokenizer([TokenKey("k", b"\x01" * 32)])
    sealer = Sealer(PrivateKey.generate().public_key)
    flow = build_flow(config, secrets=Secrets(tokenizer, sealer))
    for step in config.steps:
        assert any(step.name in step_id for step_id in _step_ids(flow)), step.name
    body = '{"user_id": "u", "app_version": "1.0.0", "device_type": "ios", "ip": "192.0.2.1",'
    body += ' "locale": "US", "device_id": "d"}'
    messages = [SqsMessage(f"m{i}", "r", body, 1_760_000_000_000 + i, 1) for i in range(2)]
    events = BatchSteps(config, tokenizer, sealer)(messages)
    assert [e.duplicate for e in events] == [False, True]  # validate, dedupe, then mask
    assert all(e.masked for e in events)


def _step_ids(flow: object) -> list[str]:
    """Every operator's id in the dataflow (Bytewax's step ids: "logins.<name>...")."""
    ids, todo = [], list(getattr(flow, "substeps", []))
    while todo:
        step = todo.pop()
        ids.append(step.step_id)
        todo += list(getattr(step, "substeps", []))
    return ids
