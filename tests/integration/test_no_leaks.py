"""Proof that no raw ip or device id comes out anywhere but inside a ciphertext.

The whole flow runs in-process with two workers against a real PostgreSQL and SQS server, on
generated logins (valid, resends, every kind of malformed body) plus bodies crafted to carry
PII where it is easy to leak: unknown extra keys, an invalid ip, a NUL character, a wrong
type, text that is not JSON, a body too large, unicode. Then every raw value that went in is
searched, as a whole word and in its escaped forms, in:

* every column of every table, as text, except the vault's ciphertexts and sealed bodies
  (and those are checked to hold no value's plain bytes);
* every log record at DEBUG, formatted as text and as JSON, and everything written to
  stdout/stderr (the Rust side of Bytewax included);
* every span and span attribute (in-memory exporter);
* every metric (prometheus_client's registry, as served);
* the error paths: a row the database refuses (parked as poison, logged, stored with a
  detail) and a database error that stops the flow (its exception and traceback).

Loggers of the libraries the flow quietens (botocore, boto3, urllib3: WARNING, as
logins.core.telemetry.setup does) are quietened here too (the `telemetry` fixture,
tests/integration/conftest.py): at DEBUG botocore logs whole HTTP responses, which hold the
message bodies. That is why setup() pins them.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from logins.dev.generator import GeneratedMessage, generate
from tests.helpers import PIPELINE_TABLES, assert_exact_ledger, config_for, run
from tests.integration.conftest import Telemetry
from tests.integration.leaks import EXTRA_PII, LeakSearch, crafted, raw_values
from tests.integration.vaultkit import Vault


def database_dump(dsn: str) -> tuple[dict[str, str], list[bytes]]:
    """{table.column: every value as text} for every column that is not a ciphertext, and the
    ciphertexts themselves."""
    texts: dict[str, str] = {}
    sealed: list[bytes] = []
    with psycopg.connect(dsn) as conn:
        columns = conn.execute(
            "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
            " JOIN information_schema.tables t USING (table_schema, table_name)"
            " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
        ).fetchall()
        assert {t for t, _, _ in columns} >= PIPELINE_TABLES | {"pii_erasures", "pii_token_aliases"}
        for table, column, kind in columns:
            values = conn.execute(f'SELECT "{column}" FROM "{table}"').fetchall()
            if kind == "bytea":
                assert (table, column) in {
                    ("pii_vault", "sealed"),
                    ("pii_vault_inbox", "sealed"),  # the pipeline's entries, until flushed
                    ("user_logins_rejected", "sealed_body"),
                }, f"an unexpected binary column {table}.{column}"
                sealed += [bytes(v) for (v,) in values if v is not None]
            else:
                as_text = conn.execute(f'SELECT "{column}"::text FROM "{table}"').fetchall()
                texts[f"{table}.{column}"] = "\n".join(str(v) for (v,) in as_text)
    return texts, sealed


def everything_put_out(
    database_url: str, telemetry: Telemetry
) -> tuple[dict[str, str], list[bytes]]:
    """{place: its text} (every column that is not a ciphertext, and `telemetry`'s places),
    and the ciphertexts."""
    texts, sealed = database_dump(database_url)
    columns = {f"column {name}": text for name, text in texts.items()}
    return {**columns, **telemetry.places()}, sealed


def assert_nothing_found(search: LeakSearch, places: dict[str, str], sealed: list[bytes]) -> None:
    """No value in any place, and none of their plain bytes in any ciphertext."""
    assert search.hits(places) == {}
    assert [search.find_bytes(s) for s in sealed if search.find_bytes(s)] == []


def searched_values(messages: list[GeneratedMessage], bodies: list[str]) -> LeakSearch:
    values: set[str] = set(EXTRA_PII)
    for body in [m.body for m in messages] + bodies:
        values |= raw_values(body)
    search = LeakSearch(values)
    # The search is not vacuous: it finds what each body holds, in that body.
    for body in bodies + [m.body for m in messages[:50]]:
        assert set(search.find(body)) >= {v for v in raw_values(body) if v in body}
    assert len(search.values) > len(messages) // 2
    return search


def test_nothing_leaks_from_a_run_with_two_workers(
    send_to_queue: Callable[[list[str]], list[str]],
    queue_vault: Callable[..., Vault],
    telemetry: Telemetry,
) -> None:
    vault = queue_vault(LOGINS_LOG_LEVEL="DEBUG")
    messages = generate(250, seed=31)
    bodies = crafted()
    search = searched_values(messages, bodies)
    sent = send_to_queue([m.body for m in messages] + bodies)

    run(vault.config, workers=2)

    # the run did what it should: every message accounted for, each value sealed once
    with psycopg.connect(vault.dsn) as conn:
        outcome = assert_exact_ledger(conn, vault.config, sent)
    assert len(outcome["row"]) == sum(m.kind == "valid" for m in messages) + 2
    valid = [json.loads(b) for b in [m.body for m in messages if m.kind == "valid"] + bodies[-2:]]
    distinct = {f: {v[f] for v in valid} for f in ("ip", "device_id")}
    assert dict(vault.query("SELECT field, count(*) FROM pii_vault GROUP BY field")) == {
        f: len(values) for f, values in distinct.items()
    }
    tokenizer, opener = vault.tokenizer, vault.opener
    assert {t for (t,) in vault.query("SELECT masked_ip FROM user_logins")} == {
        tokenizer.token("ip", ip) for ip in distinct["ip"]
    }
    opened: dict[str, list[str]] = {"ip": [], "device_id": []}
    for token, field, sealed in vault.query("SELECT token, field, sealed FROM pii_vault"):
        opened[field].append(opener.open(bytes(sealed), field=field, token=token))
    assert {f: sorted(v) for f, v in opened.items()} == {  # each distinct value exactly once
        f: sorted(values) for f, values in distinct.items()
    }

    places, sealed = everything_put_out(vault.dsn, telemetry)
    assert telemetry.spans.get_finished_spans(), "no span: the search would be vacuous"
    assert telemetry.logs.records, "no log record captured: the search would be vacuous"
    assert_nothing_found(search, places, sealed)
    assert len(sealed) > len(distinct["ip"])


def test_nothing_leaks_from_the_error_paths(
    tmp_path: Path,
    send_to_queue: Callable[[list[str]], list[str]],
    queue_vault: Callable[..., Vault],
    telemetry: Telemetry,
) -> None:
    """A row the database refuses is parked as poison (logged, stored with a detail); then a
    database error that is not the row's stops the flow with an exception."""
    vault = queue_vault()
    config = config_for(vault.env, tmp_path, "sink:\n  poison_after_attempts: 1\n")
    with vault.connect() as conn:  # the analysts' table refuses ios logins
        conn.execute("ALTER TABLE user_logins ADD CONSTRAINT no_web CHECK (device_type <> 'ios')")
    messages = generate(100, seed=32)
    later = generate(20, seed=33)
    search = searched_values(messages + later, crafted())
    send_to_queue([m.body for m in messages] + crafted())
    run(config)
    parked = vault.query(
        "SELECT count(*), min(detail) FROM user_logins_rejected WHERE reason = 'poison'"
    )
    assert parked[0][0] > 0
    assert parked[0][1] == "the database refused the row: SQLSTATE 23514 (CheckViolation)"

    with vault.connect() as conn:  # now the database fails in a way that is not the row's
        conn.execute(
            "CREATE FUNCTION broken() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION USING ERRCODE = 'XX000', MESSAGE = 'storage failure'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER broken BEFORE INSERT ON logins_ledger"
            " FOR EACH ROW EXECUTE FUNCTION broken()"
        )
    send_to_queue([m.body for m in later])
    with pytest.raises(Exception) as failure:
        run(config)
    crash = "".join(traceback.format_exception(failure.value))
    assert "psycopg.errors.InternalError_: storage failure" in crash

    places, sealed = everything_put_out(vault.dsn, telemetry)
    places["exception"] = crash
    assert "parked as poison" in places["logs"]
    assert_nothing_found(search, places, sealed)
