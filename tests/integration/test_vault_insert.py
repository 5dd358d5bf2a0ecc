"""The sink's vault insert against a real PostgreSQL: a plain INSERT first, in a savepoint,
and `ON CONFLICT DO NOTHING` when a staged token is already in the vault (a redelivery after
a restart emptied the seal cache). Either way the batch commits, its other entries are
written, the counts are right and no token is in the vault twice (connectors/postgres.py)."""

from __future__ import annotations

import psycopg

from connectors.migrations import migrate
from connectors.postgres import PostgresWriter
from connectors.schema import table_schema
from flows.steps.mask import Masker
from flows.steps.validate import Validator
from logins.config import AppConfig, MaskStep, ValidateStep
from logins.dev.generator import generate
from logins.records import Event, SqsMessage
from logins.sealcache import SealCache
from logins.secrets import load_secrets
from tests.helpers import config_for, fetch


def _events(config: AppConfig, messages: list[SqsMessage]) -> list[Event]:
    """Validated and masked with a fresh seal cache: every token is staged for the vault."""
    secrets = load_secrets(config)
    validate = next(s for s in config.steps if isinstance(s, ValidateStep))
    mask = next(s for s in config.steps if isinstance(s, MaskStep))
    validator = Validator(validate, secrets.tokenizer)
    masker = Masker(mask, secrets.tokenizer, secrets.sealer, SealCache(1000))
    return masker.batch([validator(m) for m in messages])


def _tokens(events: list[Event]) -> set[str]:
    return {v.token for e in events for v in e.vault_entries}


def test_a_batch_with_tokens_already_in_the_vault_commits_its_new_ones(
    flow_env: dict[str, str], database_url: str
) -> None:
    config = config_for(flow_env)
    with psycopg.connect(database_url) as conn:
        migrate(conn, config)
    bodies = [m.body for m in generate(40, seed=11) if m.kind == "valid"][:12]
    messages = [SqsMessage(f"id-{i}", f"r-{i}", b, 1_780_000_000_000 + i, 1) for i, b in
                enumerate(bodies)]  # fmt: skip
    first_events, new_events = _events(config, messages[:6]), _events(config, messages[6:])
    new_tokens = _tokens(new_events) - _tokens(first_events)
    assert new_tokens
    writer = PostgresWriter(config.sink, table_schema(config), vault_table=config.vault.table)
    try:
        first = writer.write(first_events)
        assert first.rows == 6
        assert first.vault_entries == len(_tokens(first_events))
        # the first batch redelivered with its vault entries staged again (as after a restart
        # emptied the seal cache), with six new messages: conflicts, so the ON CONFLICT path
        again = writer.write(first_events + new_events)
        assert (again.rows, again.redelivered) == (6, 6)
        assert again.vault_entries == len(new_tokens)
        # only tokens the vault already holds: nothing new, no error
        assert writer.write(first_events).vault_entries == 0
    finally:
        writer.close()
    with psycopg.connect(database_url) as conn:
        assert fetch(conn, "SELECT count(*), count(DISTINCT token) FROM pii_vault") == [
            (len(_tokens(first_events) | new_tokens), len(_tokens(first_events) | new_tokens))
        ]
