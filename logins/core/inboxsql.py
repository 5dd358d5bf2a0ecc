"""The vault's inbox: how the pipeline's vault entries reach the vault without telling it
which of its values were there already.

The pipeline's `<vault>_put` appends every offered entry to `<vault>_inbox` (no conflict
check) and moves the rows already committed by then into the vault (skipped if another
session is moving them); `<vault>_flush` moves them too. Either moves only in a transaction
that has written nothing yet: a transaction sees its own uncommitted rows, so a flush after a
put in one transaction would move the caller's own guess and its counters would say whether
it was new. So nothing the pipeline can observe in its own transaction (a row count, an
error, the relation's counters in `pg_stat_xact_user_tables`) depends on whether a value is
already in the vault; what a committed guess still tells is in docs/vault.md. The functions
themselves are defined with the others in logins/core/vaultsql.py.
"""

from __future__ import annotations

from psycopg import sql

from logins.core.config import AppConfig

__all__ = ["flush_body", "inbox_statements", "inbox_table", "put_body"]


def inbox_table(config: AppConfig) -> str:
    return f"{config.vault.table}_inbox"


def inbox_statements(config: AppConfig) -> list[sql.Composed]:
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (token text NOT NULL, field text NOT NULL,"
            " sealed bytea NOT NULL, vault_key_id text NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(inbox_table(config)))
    ]


def flush_body(schema: str, config: AppConfig, *, always: bool = False) -> sql.Composed:
    """Move the inbox's committed rows into the vault; rows another session is moving are
    skipped (it moves them). In token order: two sessions never deadlock on the vault.

    Unless `always` (forget: the eraser cannot put), nothing is moved when the calling
    transaction has already written (it has a transaction id): its own uncommitted inbox
    rows would be visible to it and moved, and the vault's counters of that transaction
    would say which of its guesses were new (the membership oracle of issue 18's review)."""
    guard = sql.SQL(
        "" if always else " IF pg_catalog.pg_current_xact_id_if_assigned() IS NULL THEN"
    )
    return sql.SQL(
        "{guard} WITH moved AS (DELETE FROM {inbox} i WHERE i.ctid = ANY (ARRAY("
        "  SELECT j.ctid FROM {inbox} j FOR UPDATE SKIP LOCKED)) RETURNING i.*)"
        " INSERT INTO {vault} (token, field, sealed, vault_key_id)"
        "  SELECT DISTINCT ON (m.token) m.token, m.field, m.sealed, m.vault_key_id FROM moved m"
        "  ORDER BY m.token, m.created_at ON CONFLICT DO NOTHING;{end}"
    ).format(
        guard=guard,
        end=sql.SQL("" if always else " END IF;"),
        inbox=sql.Identifier(schema, inbox_table(config)),
        vault=sql.Identifier(schema, config.vault.table),
    )


def put_body(schema: str, config: AppConfig) -> sql.Composed:
    """The pipeline's vault write: move what earlier batches committed into the vault, then
    append this batch's entries to the inbox, every one of them. Returns nothing."""
    return sql.SQL(
        "BEGIN{flush}"
        " INSERT INTO {inbox} (token, field, sealed, vault_key_id)"
        "  SELECT x.t, x.f, x.s, x.k FROM unnest(p_tokens, p_fields, p_sealed,"
        "  p_key_ids) AS x(t, f, s, k);"
        " END"
    ).format(flush=flush_body(schema, config), inbox=sql.Identifier(schema, inbox_table(config)))
