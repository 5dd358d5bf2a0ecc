"""The sink's vault insert against a real PostgreSQL, through the owner's `<vault>_put`: when
a staged token is already in the vault (a redelivery after a restart emptied the seal
cache) the batch commits, its other entries are written and no token is in the vault twice
(connectors/postgres/writer.py, logins/core/vaultsql.py). The sink learns only how many
entries it offered, never how many were new: that count would tell it which values the
vault already held."""

from __future__ import annotations

import psycopg

from connectors.postgres.migrations import migrate
from connectors.postgres.schema import table_schema
from connectors.postgres.writer import PostgresWriter
from logins.core.config import AppConfig
from logins.core.records import Event, SqsMessage
from logins.dev.generator import generate
from tests.helpers import config_for, fetch, masked_batches


def _events(config: AppConfig, messages: list[SqsMessage]) -> list[Event]:
    """Validated and masked with a fresh seal cache: every token is staged for the vault."""
    return masked_batches(config, [messages])[0]


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
        # emptied the seal cache), with six new messages: some staged tokens conflict
        again = writer.write(first_events + new_events)
        assert (again.rows, again.redelivered) == (6, 6)
        offered = _tokens(first_events) | _tokens(new_events)
        assert again.vault_entries == len(offered)  # offered, not "new": no oracle
        # only tokens the vault already holds: nothing new, no error
        assert writer.write(first_events).vault_entries == len(_tokens(first_events))
    finally:
        writer.close()
    with psycopg.connect(database_url) as conn:
        assert fetch(conn, "SELECT count(*), count(DISTINCT token) FROM pii_vault") == [
            (len(_tokens(first_events) | new_tokens), len(_tokens(first_events) | new_tokens))
        ]
