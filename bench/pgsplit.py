"""Where PostgreSQL's CPU per message goes: the sink's statements replayed one by one.

    python -m bench.pgsplit -n N [--variants base,direct_vault_insert] [--rounds R]

Runs the core path once into a fresh database (kept), then replays its batches, in the order
the flow committed them, into fresh databases migrated by the project (one per variant,
variants alternating round by round): for each batch the sink's own statements (COPY into
stage_events, the claim-and-insert, COPY into stage_vault, the vault insert, COMMIT), with
the batch's rows and the vault entries first used in it. Each statement's cost is the
replaying backend's own CPU time (/proc/<pid>/schedstat, nanoseconds), so other clients of
a shared server do not count; the WAL is the database's own (pg_current_wal_lsn around each
statement, on a server nobody else writes to it is exact, else an upper bound). Reported per
message, by segment of the run (the first 50k messages, ..., the last), so the growth with
the tables' size shows. Prints one JSON object.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any

import psycopg
from psycopg import sql

from bench import core
from bench.common import WORK, Rig, dataset, flow_env, log, parser, prepare_schema, session
from bench.server import Server, backend_cpu_seconds
from connectors.postgres.pool import Writers
from connectors.postgres.schema import table_schema
from logins.core.config import AppConfig, load_config
from logins.core.vaultschema import tables

PHASES = ("copy_events", "insert", "copy_vault", "insert_vault", "commit", "flush_vault")
# base: the sink's own statements; direct_vault_insert: the vault insert before the put
# function and its inbox (INSERT ... ON CONFLICT, counted), as docs/vault.md compares them.
VARIANTS = ("base", "direct_vault_insert")


def load_batches(
    dsn: str, config: AppConfig, batch: int, seal_cache: int | None = None
) -> list[tuple[list[tuple], list[tuple]]]:
    """The run's row messages in the order they were committed, in batches of `batch`, each
    with the vault entries whose token it uses first; or, with `seal_cache`, what the mask
    step stages with a seal cache of that size (logins/core/sealcache.py, an LRU of committed
    tokens): every token of the batch it does not remember, so also the tokens it forgot,
    which the vault already holds."""
    names = [c.name for c in table_schema(config).row]
    masked = list(tables(config).masked.values())
    with psycopg.connect(dsn) as conn:
        vault = {
            token: (token, field, bytes(sealed), key_id)
            for token, field, sealed, key_id in conn.execute(
                sql.SQL("SELECT token, field, sealed, vault_key_id FROM {}").format(
                    sql.Identifier(config.vault.table)
                )
            )
        }
        rows = conn.execute(
            sql.SQL(
                "SELECT {} FROM {} t JOIN {} l USING (sent_at, message_id)"
                " ORDER BY l.committed_at, l.message_id"
            ).format(
                sql.SQL(", ").join(sql.Identifier("t", n) for n in names),
                sql.Identifier(config.sink.table),
                sql.Identifier(config.sink.ledger_table),
            )
        ).fetchall()
    where = [names.index(c) for c in masked]
    seen: set[str] = set()
    lru: OrderedDict[str, None] = OrderedDict()
    out = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        entries = []
        staged: set[str] = set()
        for row in chunk:
            for j in where:
                token = row[j]
                if token not in vault:
                    continue
                if seal_cache is None:
                    if token not in seen:
                        seen.add(token)
                        entries.append(vault[token])
                elif token in lru:
                    lru.move_to_end(token)
                elif token not in staged:
                    staged.add(token)
                    entries.append(vault[token])
        for token in staged:  # committed with the batch
            lru[token] = None
            if len(lru) > (seal_cache or 0):
                lru.popitem(last=False)
        out.append((chunk, entries))
    return out


def replay(
    server: Server,
    config: AppConfig,
    batches: list[tuple[list[tuple], list[tuple]]],
    variant: str,
    segment: int,
) -> dict[str, Any]:
    dbname = f"bench_pgsplit_{variant}"
    dsn = server.fresh_database(dbname)
    prepare_schema(dsn, config)
    writer = Writers.for_config(config, check_schema=False).writer()
    st = writer.statements
    row_cols = table_schema(config).row
    names = [c.name for c in row_cols]
    copy_events = sql.SQL(
        "COPY stage_events ({}, _outcome, _receive_count) FROM STDIN (FORMAT BINARY)"
    ).format(sql.SQL(", ").join(sql.Identifier(n) for n in names))
    types = [c.copy_type for c in row_cols] + ["text", "int4"]
    segs: list[dict[str, float]] = []
    messages = 0
    with psycopg.connect(dsn) as conn:
        conn.execute(st["create_stage"])
        conn.commit()
        pid = conn.info.backend_pid
        cur = conn.cursor()
        acc = dict.fromkeys(PHASES, 0.0) | {f"{p}_wall": 0.0 for p in PHASES}
        acc |= {"messages": 0, "vault_entries": 0, "wal": 0.0}
        wal0 = server.wal_lsn()

        def timed_phase(name: str, fn: Any, *args: Any) -> None:
            c0, w0 = backend_cpu_seconds(pid) or 0.0, time.perf_counter()
            fn(*args)
            acc[name] += (backend_cpu_seconds(pid) or 0.0) - c0
            acc[f"{name}_wall"] += time.perf_counter() - w0

        def copy(statement: sql.Composed, kinds: list[str], rows: list[tuple], *tail: Any) -> None:
            with cur.copy(statement) as out:
                out.set_types(kinds)
                for row in rows:
                    out.write_row((*row, *tail))

        def run(statement: sql.Composed) -> None:
            cur.execute(statement).fetchone()

        def flush() -> None:  # as the sink: move the batch's entries in from the inbox
            cur.execute(st["flush_vault"])
            conn.commit()

        vault_insert = st["insert_vault"] if variant == "base" else _direct_vault(config)
        for rows, entries in batches:
            timed_phase("copy_events", copy, copy_events, types, rows, "row", 1)
            timed_phase("insert", run, st["insert"])
            if entries:
                timed_phase("copy_vault", copy, st["copy_vault"], VAULT_TYPES, entries)
                timed_phase("insert_vault", run, vault_insert)
                acc["vault_entries"] += len(entries)
            timed_phase("commit", conn.commit)
            if entries and variant == "base":
                timed_phase("flush_vault", flush)
            acc["messages"] += len(rows)
            messages += len(rows)
            if acc["messages"] >= segment:
                acc["wal"] = server.wal_bytes(wal0)
                segs.append(_per_message(acc, messages))
                acc = dict.fromkeys(acc, 0.0)
                wal0 = server.wal_lsn()
        if acc["messages"]:
            acc["wal"] = server.wal_bytes(wal0)
            segs.append(_per_message(acc, messages))
        sizes = conn.execute(
            "SELECT c.relname::text, pg_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            " AND c.relkind IN ('r', 'i') AND pg_relation_size(c.oid) > 1000000"
        ).fetchall()
    server.drop_database(dbname)
    return {"variant": variant, "segments": segs,
            "sizes_mb": {name: round(size / 2**20, 1) for name, size in sizes}}  # fmt: skip


VAULT_TYPES = ["text", "text", "bytea", "text"]


def _direct_vault(config: AppConfig) -> sql.Composed:
    """The vault insert before `<vault>_put` (whose row count told the pipeline which values
    the vault held): ON CONFLICT DO NOTHING straight into the vault, counted."""
    return sql.SQL(
        "WITH ins AS (INSERT INTO {} (token, field, sealed, vault_key_id)"
        " SELECT token, field, sealed, vault_key_id FROM stage_vault ORDER BY token"
        " ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM ins"
    ).format(sql.Identifier(config.vault.table))


def _per_message(acc: dict[str, float], upto: int) -> dict[str, float]:
    n = acc["messages"]
    out = {"upto": upto, "messages": n, "vault_per_msg": round(acc["vault_entries"] / n, 3)}
    for p in PHASES:
        out[f"{p}_cpu_us"] = round(acc[p] / n * 1e6, 2)
        out[f"{p}_wall_us"] = round(acc[f"{p}_wall"] / n * 1e6, 2)
    out["cpu_us"] = round(sum(acc[p] for p in PHASES) / n * 1e6, 2)
    out["wall_us"] = round(sum(acc[f"{p}_wall"] for p in PHASES) / n * 1e6, 2)
    out["wal_bytes"] = round(acc["wal"] / n, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser("python -m bench.pgsplit", __doc__, messages=1_000_000, seed=1, segment=50_000,
                  rounds=1, seal_cache=(0, "stage as a seal cache of N"),
                  variants=(",".join(VARIANTS), ",".join(VARIANTS)), work=WORK
                  ).parse_args(argv)  # fmt: skip
    args.seal_cache = args.seal_cache or None  # fmt: skip
    results: list[dict[str, Any]] = []
    with session(args.work) as (server, keyfiles):
        data, _ = dataset(args.work, args.messages, args.seed)
        run, dsn = core.run_flow(Rig(server, args.work, keyfiles, data), name="pgsplit_src",
                                 messages=args.messages, workers=1, keep_database=True)  # fmt: skip
        config = load_config(flow_env(keyfiles, dsn))
        batches = load_batches(dsn, config, config.source.max_batch, args.seal_cache)
        server.drop_database("bench_pgsplit_src")
        log(f"replaying {len(batches)} batches")
        for r in range(args.rounds):
            for variant in args.variants.split(","):
                result = replay(server, config, batches, variant, args.segment)
                result["round"] = r
                first, last = result["segments"][0], result["segments"][-1]
                log(f"{variant} round {r}: first {first['cpu_us']} µs/msg, last"
                    f" {last['cpu_us']} µs/msg of backend CPU")  # fmt: skip
                results.append(result)
    print(json.dumps({"messages": args.messages, "seal_cache": args.seal_cache,
                      "flow_backend_cpu_s": run.backend_cpu_seconds,
                      "flow_msgs_per_s": run.msgs_per_s,
                      "flow_postgres_cpu_s": run.postgres_cpu_seconds,
                      "results": results}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
