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

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import ROOT, flow_env, keys, log, median
from bench.server import Server, backend_cpu_seconds
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


@dataclass
class Measured:
    statement: str
    table: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    wal_mb: list[float] = field(default_factory=list)
    mb_before: list[float] = field(default_factory=list)
    mb_after: list[float] = field(default_factory=list)

    def row(self) -> str:
        cpu = f"{median(self.cpu):.2f}" if self.cpu else "n/a"
        return (
            f"| `{self.statement}` | {median(self.seconds):.2f} | {cpu} |"
            f" {median(self.wal_mb):.0f} | {median(self.mb_before):.0f} ->"
            f" {median(self.mb_after):.0f} |"
        )


def one(conn: psycopg.Connection[Any], statement: str, params: Any = None) -> Any:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return row[0]


def measure(conn: psycopg.Connection[Any], statement: sql.Composed, into: Measured) -> None:
    pid = one(conn, "SELECT pg_backend_pid()")
    size = "SELECT pg_total_relation_size(%s::regclass) / 1048576.0"
    into.mb_before.append(float(one(conn, size, (into.table,))))
    lsn = one(conn, "SELECT pg_current_wal_lsn()")
    cpu = backend_cpu_seconds(pid)
    started = time.perf_counter()
    conn.execute(statement)
    into.seconds.append(time.perf_counter() - started)
    after = backend_cpu_seconds(pid)
    if cpu is not None and after is not None:
        into.cpu.append(after - cpu)
    into.wal_mb.append(
        float(one(conn, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s) / 1048576.0", (lsn,)))
    )
    into.mb_after.append(float(one(conn, size, (into.table,))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--erase-share", type=float, default=0.01)
    p.add_argument("--work", type=Path, default=ROOT / "bench" / ".work")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    server = Server(args.work, os.environ.get("BENCH_DATABASE_URL"))
    try:
        dsn = server.fresh_database("bench_storage_rewrite")
        config = load_config(flow_env(keys(args.work), dsn))
        assert set(FILL) <= set(erased_tables(config))
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn, config)
            for table, fill in FILL.items():
                log(f"filling {table} with {args.rows:,} rows")
                conn.execute(fill, {"n": args.rows})
            conn.execute("VACUUM ANALYZE")
            results = []
            for form in ("VACUUM (FULL, ANALYZE) {}", "VACUUM {}"):
                for table in FILL:
                    got = Measured(form.format(table), table)
                    for i in range(args.repeats):
                        conn.execute(ERASE[table], {"share": args.erase_share})
                        measure(conn, sql.SQL(form).format(sql.Identifier(table)), got)
                        log(f"{got.statement} #{i + 1}: {got.seconds[-1]:.2f} s")
                    results.append(got)
        info = server.describe()
        print(
            f"{args.rows:,} rows per table, {args.erase_share:.0%} erased before each repeat,"
            f" medians of {args.repeats}; PostgreSQL {info['version']} ({info['where']},"
            f" fsync {info['fsync']}, shared_buffers {info['shared_buffers']})\n"
        )
        print("| statement | wall s (table locked) | backend CPU s | WAL MB | MB before -> after |")
        print("|---|---|---|---|---|")
        for got in results:
            print(got.row())
        server.drop_database("bench_storage_rewrite")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
