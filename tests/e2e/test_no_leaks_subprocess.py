"""The flow as operators run it, at its most talkative: `python -m bytewax.run flows.logins
-w 2` with LOGINS_LOG_LEVEL=DEBUG, JSON logs and every span printed (LOGINS_TRACES=console).
Nothing it writes holds a raw ip or device id, including from the bodies it rejects, and
neither does any table (ciphertexts aside), nor what `logins stats` and `logins audit list`
print afterwards. (tests/integration/test_no_leaks.py adds metrics and the error paths.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg

from logins.dev.generator import generate
from tests.helpers import run_module
from tests.integration.leaks import EXTRA_PII, LeakSearch, crafted, raw_values


def test_debug_output_json_logs_and_console_spans_hold_no_raw_value(
    flow_env: dict[str, str], keys: dict[str, Path], send_to_queue: Callable[[list[str]], list[str]]
) -> None:
    env = {
        **flow_env,
        "LOGINS_LOG_LEVEL": "DEBUG",
        "LOGINS_LOG_FORMAT": "json",
        "LOGINS_TRACES": "console",
    }
    bodies = [m.body for m in generate(200, seed=41)] + crafted()
    search = LeakSearch(set(EXTRA_PII).union(*(raw_values(b) for b in bodies)))
    assert search.hits({"bodies": "\n".join(bodies)})  # the search finds them where they are
    send_to_queue(bodies)

    flow = run_module(["bytewax.run", "flows.logins", "-w", "2"], env)
    assert flow.returncode == 0, flow.stderr[-3000:]
    assert '"name": "logins.sink.write_batch"' in flow.stderr  # spans were printed
    assert '"level": "DEBUG"' in flow.stderr  # and DEBUG records, as JSON

    stats = run_module(["logins", "stats"], env)
    reveal = run_module(
        ["logins", "reveal", "--user-id", "u-leak", "--reason", "check", "--json",
         "--private-key-file", str(keys["vault.key"])],
        env,
    )  # fmt: skip
    audit = run_module(["logins", "audit", "list", "--json"], env)
    assert stats.returncode == 0 and audit.returncode == 0
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        tables = [
            (t, c)
            for t, c in conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND data_type <> 'bytea'"
            )
        ]
        dump = {
            f"{t}.{c}": "\n".join(str(v) for (v,) in conn.execute(f'SELECT "{c}"::text FROM "{t}"'))
            for t, c in tables
        }
    places = {
        "flow stdout": flow.stdout,
        "flow stderr": flow.stderr,
        "stats": stats.stdout + stats.stderr,
        "audit list": audit.stdout + audit.stderr,
        "reveal stderr": reveal.stderr,
        **dump,
    }
    assert search.hits(places) == {}
    # reveal is the one place values come out, on purpose and on record
    revealed = {r["value"] for r in json.loads(reveal.stdout)}
    assert {"198.51.100.235", "dev-ZX81-0007", "203.0.113.196", "dév-ïd-ü-0002"} <= revealed
