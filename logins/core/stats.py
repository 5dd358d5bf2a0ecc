"""The ledger's counts, for `logins stats`, the demo report and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from logins.core.config import AppConfig, MaskStep


@dataclass
class Stats:
    rows: int = 0
    rejected: int = 0
    duplicates: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    vault_entries: int = 0
    vault_by_field: dict[str, int] = field(default_factory=dict)
    table_rows: int = 0  # every row in the table, including rows that predate the pipeline
    distinct_tokens: dict[str, int] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        """Distinct messages the pipeline committed: rows + rejected + duplicates."""
        return self.rows + self.rejected + self.duplicates

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "messages": self.messages}


def _count(conn: psycopg.Connection[Any], query: sql.Composed) -> list[tuple[Any, ...]]:
    return conn.execute(query).fetchall()


def collect(conn: psycopg.Connection[Any], config: AppConfig) -> Stats:
    sink, vault = config.sink, config.vault
    stats = Stats()
    for outcome, count in _count(
        conn,
        sql.SQL("SELECT outcome, count(*) FROM {} GROUP BY outcome").format(
            sql.Identifier(sink.ledger_table)
        ),
    ):
        setattr(
            stats,
            {"row": "rows", "rejected": "rejected", "duplicate": "duplicates"}[outcome],
            count,
        )
    stats.rejected_by_reason = dict(
        _count(
            conn,
            sql.SQL("SELECT reason, count(*) FROM {} GROUP BY reason ORDER BY 2 DESC, 1").format(
                sql.Identifier(sink.rejected_table)
            ),
        )
    )
    stats.vault_by_field = dict(
        _count(
            conn,
            sql.SQL("SELECT field, count(*) FROM {} GROUP BY field ORDER BY 1").format(
                sql.Identifier(vault.table)
            ),
        )
    )
    stats.vault_entries = sum(stats.vault_by_field.values())
    columns = [c for s in config.steps if isinstance(s, MaskStep) for c in s.fields.values()]
    selects = [sql.SQL("count(*)")] + [
        sql.SQL("count(DISTINCT {})").format(sql.Identifier(c)) for c in columns
    ]
    row = conn.execute(
        sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(selects), sql.Identifier(sink.table))
    ).fetchone()
    assert row is not None
    stats.table_rows = row[0]
    stats.distinct_tokens = dict(zip(columns, row[1:], strict=True))
    return stats
