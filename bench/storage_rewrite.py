"""`python -m bench.storage_rewrite`: what erasure's storage step (`logins storage rewrite`,
logins/pii/storage.py: VACUUM (FULL, ANALYZE) of each table erasure changes) costs on a
1M-row table, side by side with the plain VACUUM that leaves the erased bytes on disk.

The database is the project's own schema (its migrations); `user_logins` gets N rows and
`pii_vault` N entries, written server-side (generate_series; token-shaped text, random-sized
ciphertext-like bytes). Each repeat first erases 1% of them as `forget` does (markers into
the masked cells, vault entries deleted), then times one statement per table: wall time
(how long the table is locked: the pipeline's inserts wait that long), the backend's CPU
(/proc of its process, when the server is on this machine), WAL written, size before and
after. Medians of the repeats.

    python -m bench.storage_rewrite [--rows 1000000] [--repeats 3]
    BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python -m bench.storage_rewrite
"""

from __future__ import annotations

from statistics import median
from typing import Any

import psycopg
from psycopg import sql

from bench.common import WORK, flow_env, log, parser, session
from bench.server import Server
from connectors.postgres.migrations import migrate
from logins.core.config import load_config
from logins.pii.storage import erased_tables

FILL = {
    "user_logins": (
        "INSERT INTO user_logins (user_id, device_type, masked_ip, masked_device_id, locale,"
        " app_version, app_version_text, message_id, sent_at, create_date)"
        " SELECT gen_random_uuid()::text, 'ios', '0a1b2c3d.' || md5(i || 'ip'),"
        " '0a1b2c3d.' || md5(i || 'dev'), 'US', 20300, '2.3.0', gen_random_uuid()::text,"
        " now() - i * interval '1 second', current_date FROM generate_series(1, %(n)s) i"
    ),
    "pii_vault": (
        "INSERT INTO pii_vault (token, field, sealed, vault_key_id)"
        " SELECT '0a1b2c3d.' || md5(i || 'ip'), 'ip',"
        " decode(md5(i || 'a') || md5(i || 'b') || md5(i || 'c'), 'hex'), '5e6f7a8b'"
        " FROM generate_series(1, %(n)s) i"
    ),
}
ERASE = {
    "user_logins": (
        "UPDATE user_logins SET masked_ip = 'erased:' || md5(random()::text)"
        " WHERE masked_ip LIKE '0a1b2c3d.%%' AND random() < %(share)s"
    ),
    "pii_vault": "DELETE FROM pii_vault WHERE random() < %(share)s",
}


SIZE_MB = "SELECT pg_total_relation_size(%s::regclass) / 1048576.0"


def measure(server: Server, conn: psycopg.Connection[Any], form: str, table: str) -> dict[str, Any]:
    """One statement of `form` on `table`: Server.measured's figures, the table's size before
    and after."""
    before = conn.execute(SIZE_MB, (table,)).fetchone()
    with server.measured(conn) as got:
        conn.execute(sql.SQL(form).format(sql.Identifier(table)))
    after = conn.execute(SIZE_MB, (table,)).fetchone()
    assert before is not None and after is not None
    return got | {"wal_mb": got["wal_bytes"] / 2**20, "before": before[0], "after": after[0]}


def row(statement: str, runs: list[dict[str, Any]]) -> str:
    """The statement's table row: medians of its runs."""

    def m(key: str, form: str) -> str:
        known = [float(r[key]) for r in runs if r[key] is not None]
        return form.format(median(known)) if known else "n/a"

    return (
        f"| `{statement}` | {m('seconds', '{:.2f}')} | {m('backend_cpu', '{:.2f}')} |"
        f" {m('wal_mb', '{:.0f}')} | {m('before', '{:.0f}')} -> {m('after', '{:.0f}')} |"
    )


def main() -> None:
    args = parser("python -m bench.storage_rewrite", __doc__, rows=1_000_000, repeats=3,
                  erase_share=0.01, work=WORK).parse_args()  # fmt: skip
    with session(args.work, shared=False) as (server, keyfiles):
        dsn = server.fresh_database("bench_storage_rewrite")
        config = load_config(flow_env(keyfiles, dsn))
        assert set(FILL) <= set(erased_tables(config))
        rows = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn, config)
            for table, fill in FILL.items():
                log(f"filling {table} with {args.rows:,} rows")
                conn.execute(fill, {"n": args.rows})
            conn.execute("VACUUM ANALYZE")
            for form in ("VACUUM (FULL, ANALYZE) {}", "VACUUM {}"):
                for table in FILL:
                    runs = []
                    for i in range(args.repeats):
                        conn.execute(ERASE[table], {"share": args.erase_share})
                        runs.append(measure(server, conn, form, table))
                        log(f"{form.format(table)} #{i + 1}: {runs[-1]['seconds']:.2f} s")
                    rows.append(row(form.format(table), runs))
        info = server.describe()
        server.drop_database("bench_storage_rewrite")
    print(
        f"{args.rows:,} rows per table, {args.erase_share:.0%} erased before each repeat,"
        f" medians of {args.repeats}; PostgreSQL {info['version']} ({info['where']},"
        f" fsync {info['fsync']}, shared_buffers {info['shared_buffers']})\n"
    )
    print("| statement | wall s (table locked) | backend CPU s | WAL MB | MB before -> after |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
