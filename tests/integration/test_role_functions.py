"""Roles act only through audited functions, and nobody can stall an erasure: tried as each
role's holder would, through real PostgreSQL logins (tests/integration/rolekit.py).

* Every direct write on a PII-bearing table (the vault, its inbox, the aliases, the
  erasures, the token columns, the rejected bodies, the audit) is refused with SQLSTATE
  42501 for the eraser, the rotator, the revealer and the pipeline: the attacks of the
  review (issue 18 item 4) included. The permitted operation, through the role's function,
  is done and audited with the login as the actor.
* The pipeline cannot tell whether a value is in the vault (item 5): a rolled-back put of a
  guessed token shows the same row count, result, error and relation counters whether the
  token is in the vault or not.
* Erasure's lock is a control row nobody but the owner's functions can lock (item 6): an
  analyst's advisory locks do not stall it, a second erasure fails fast naming the login
  and pid of the first, and the pipeline's writes go on while an erasure is open.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timezone
from typing import Any

import psycopg
import pytest

from connectors.postgres import roles
from logins.core.keys import load_token_keys, load_vault_public_key
from logins.core.tokens import Tokenizer
from logins.core.vault import Sealer
from tests.integration.rolekit import RoleDatabase, role_database

TOKEN = "k1.00000000000000000000000000000000"
INSERTS = {
    "vault": "INSERT INTO pii_vault (token, field, sealed, vault_key_id)"
    " VALUES ('a', 'ip', '', 'k')",
    "inbox": "INSERT INTO pii_vault_inbox (token, field, sealed, vault_key_id)"
    " VALUES ('a', 'ip', '', 'k')",
    "alias": "INSERT INTO pii_token_aliases (old_token, new_token, field) VALUES ('a', 'b', 'ip')",
    "erasure": "INSERT INTO pii_erasures (marker, field) VALUES ('erased:0', 'ip')",
    "audit": "INSERT INTO pii_audit (actor, reason, action, tokens, succeeded, failed,"
    " prev_hash, row_hash) VALUES ('x', 'y', 'forget', '{}', 0, 0, 'a', 'b')",
}
DIRECT_WRITES = [
    *INSERTS.values(),
    "DELETE FROM pii_vault",
    "UPDATE pii_vault SET sealed = ''",
    "UPDATE pii_vault SET vault_key_id = 'x'",
    "DELETE FROM pii_vault_inbox",
    "UPDATE pii_vault_inbox SET sealed = ''",
    "DELETE FROM pii_token_aliases",
    "UPDATE pii_token_aliases SET new_token = 'x'",
    "DELETE FROM pii_erasures",
    "UPDATE user_logins SET masked_ip = '177.151.186.149'",
    "UPDATE user_logins SET masked_device_id = 'x'",
    "DELETE FROM user_logins",
    "UPDATE user_logins_rejected SET sealed_body = ''",
    "UPDATE user_logins_rejected SET vault_key_id = 'x'",
    "DELETE FROM user_logins_rejected",
    "UPDATE pii_audit SET reason = 'x'",
    "UPDATE logins_control SET value = 1",
    "SELECT * FROM logins_control FOR UPDATE",
    "SELECT * FROM pii_audit_append('forget', 'forged', NULL, 1, 0, NULL)",
    "SELECT logins_take_lock('pii_vault:erasure', '1s')",
]


@pytest.fixture(scope="module")
def db(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleDatabase]:
    with role_database(pg_admin_dsn, tmp_path_factory.mktemp("rolefn")) as database:
        yield database


def tokenizer(db: RoleDatabase) -> Tokenizer:
    return Tokenizer(load_token_keys(db.keys["token.key"]))


def sealer(db: RoleDatabase) -> Sealer:
    return Sealer(load_vault_public_key(db.keys["vault.pub"]))


def put(conn: psycopg.Connection[Any], db: RoleDatabase, values: dict[str, str]) -> list[str]:
    """As the pipeline does: each (field -> value) sealed and offered through the put function."""
    tok, seal = tokenizer(db), sealer(db)
    tokens = [tok.token(name, value) for name, value in values.items()]
    conn.execute(
        "SELECT pii_vault_put(%s, %s, %s, %s)",
        (
            tokens,
            list(values),
            [seal.seal(n, t, v) for (n, v), t in zip(values.items(), tokens, strict=True)],
            [seal.key_id] * len(tokens),
        ),
    )
    return tokens


def login_row(db: RoleDatabase, user: str, ip: str, device: str) -> dict[str, str]:
    """A user's row and its vault entries, written as the pipeline's login writes them."""
    with db.connect(roles.PIPELINE, autocommit=False) as conn:
        ip_token, device_token = put(conn, db, {"ip": ip, "device_id": device})
        conn.execute(
            "INSERT INTO user_logins (user_id, device_type, masked_ip, masked_device_id,"
            " locale, app_version, app_version_text, message_id, sent_at, create_date)"
            " VALUES (%s, 'ios', %s, %s, 'US', 20300, '2.3.0', %s, %s, %s)",
            (user, ip_token, device_token, str(uuid.uuid4()), datetime.now(timezone.utc),
             date.today()),
        )  # fmt: skip
        conn.commit()
        conn.execute("SELECT pii_vault_flush()")
        conn.commit()
    return {"ip": ip_token, "device_id": device_token}


def refusals(db: RoleDatabase, role: str, statements: list[str]) -> dict[str, str]:
    """{statement: SQLSTATE or 'ran'} for each statement; each in a rolled-back transaction."""
    found: dict[str, str] = {}
    with db.connect(role, autocommit=False) as conn:
        for statement in statements:
            try:
                conn.execute(statement)  # the attacker's SQL
                found[statement] = "ran"
            except psycopg.Error as exc:
                found[statement] = str(exc.sqlstate)
            conn.rollback()
    return found


@pytest.mark.parametrize("role", [roles.ERASER, roles.ROTATOR, roles.REVEALER, roles.PIPELINE])
def test_no_vault_role_writes_a_pii_table_directly(db: RoleDatabase, role: str) -> None:
    login_row(db, f"direct-{role}", "203.0.113.5", "555-00-0001")
    assert refusals(db, role, DIRECT_WRITES) == {s: "42501" for s in DIRECT_WRITES}


def test_an_eraser_erases_only_through_forget_which_records_its_login(db: RoleDatabase) -> None:
    tokens = login_row(db, "erase-me", "203.0.113.77", "999-88-7777")
    # the review's attacks, one by one: each refused, nothing changed, nothing on record
    attacks = [
        "DELETE FROM pii_vault",
        "UPDATE user_logins SET masked_ip = '177.151.186.149'",
        "DELETE FROM pii_token_aliases",
        "UPDATE user_logins_rejected SET sealed_body = ''",
    ]
    assert refusals(db, roles.ERASER, attacks) == {s: "42501" for s in attacks}
    before = db.query("SELECT count(*) FROM pii_audit")[0][0]
    with db.connect(roles.ERASER) as conn:
        (done,) = conn.execute(
            "SELECT pii_forget(%s, '{}', 'erasure 18', 'someone-else', '{}')",
            ([tokens["ip"]],),
        ).fetchone() or (None,)
    assert done["erased"] == [tokens["ip"]] and done["rows_rewritten"] == 1
    assert db.query("SELECT count(*) FROM pii_vault WHERE token = %s", tokens["ip"]) == [(0,)]
    (marker,) = db.query("SELECT masked_ip FROM user_logins WHERE user_id = 'erase-me'")[0]
    assert marker.startswith("erased:") and len(marker) == len("erased:") + 32
    assert db.query(
        "SELECT actor, note, action, succeeded FROM pii_audit WHERE id > %s", before
    ) == [(db.logins[roles.ERASER], "someone-else", "forget", 1)]
    assert db.query("SELECT audit_id FROM pii_erasures WHERE marker = %s", marker) == [
        (done["audit_id"],)
    ]
    purged = db.cli(roles.ERASER, "purge", "--json")
    assert purged.exit_code == 0, purged.output
    assert db.query("SELECT actor, action FROM pii_audit ORDER BY id DESC LIMIT 1") == [
        (db.logins[roles.ERASER], "purge")
    ]


def test_a_rotator_writes_only_through_rotate_and_rekey_which_record_its_login(
    db: RoleDatabase,
) -> None:
    tokens = login_row(db, "rotate-me", "203.0.113.9", "111-22-3333")
    attacks = [
        "UPDATE pii_vault SET sealed = 'overwritten'",
        f"INSERT INTO pii_token_aliases (old_token, new_token, field) VALUES"
        f" ('{tokens['ip']}', '{tokens['device_id']}', 'ip')",
        "INSERT INTO pii_vault (token, field, sealed, vault_key_id) VALUES ('x', 'ip', '', 'k')",
    ]
    assert refusals(db, roles.ROTATOR, attacks) == {s: "42501" for s in attacks}
    before = db.query("SELECT max(id) FROM pii_audit")[0][0] or 0
    new = "k2.11111111111111111111111111111111"
    with db.connect(roles.ROTATOR) as conn:
        (rotated,) = conn.execute(
            "SELECT pii_rotate('yearly', 'admin', '{\"phase\": \"batch\"}', 0, 0, %s, %s, %s, %s)",
            ([tokens["ip"], "k1.not-in-the-vault"], [new, "k2.x"], [b"s", b"t"], ["v", "v"]),
        ).fetchone() or (None,)
        (rekeyed,) = conn.execute(
            "SELECT pii_rekey('new pair', NULL, '{}', 0, 0, false, %s, %s, %s, %s)",
            ([new], [b"resealed"], "v", "v2"),
        ).fetchone() or (None,)
    assert (rotated, rekeyed) == (1, 1)  # an old token not in the vault gets no alias
    assert db.query("SELECT old_token, field FROM pii_token_aliases WHERE new_token = %s", new) == [
        (tokens["ip"], "ip")
    ]
    assert db.query(
        "SELECT actor, action, succeeded FROM pii_audit WHERE id > %s ORDER BY id", before
    ) == [(db.logins[roles.ROTATOR], "rotate", 1), (db.logins[roles.ROTATOR], "rekey", 1)]


def test_a_revealer_cannot_append_a_forget_row(db: RoleDatabase) -> None:
    forged = [
        "SELECT * FROM pii_audit_append('forget', 'forged', NULL, 50, 0, '{}')",
        "SELECT pii_forget('{}', '{}', 'forged', NULL, '{}')",
        "SELECT pii_purge(1, 'forged', NULL)",
    ]
    assert refusals(db, roles.REVEALER, forged) == {s: "42501" for s in forged}
    with db.connect(roles.REVEALER) as conn:
        row = conn.execute(
            "SELECT audit_actor FROM pii_audit_reveal('ticket', 'admin', 0, 0, '{}')"
        ).fetchone()
    assert row == (db.logins[roles.REVEALER],)
    assert db.query("SELECT action FROM pii_audit ORDER BY id DESC LIMIT 1") == [("reveal",)]


# -- the pipeline: no membership oracle ----------------------------------------------------------


COUNTERS = (
    "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd, seq_scan, idx_scan,"
    " seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables"
    " WHERE relname IN ('pii_vault', 'pii_vault_inbox') ORDER BY 1"
)


def probe(db: RoleDatabase, field: str, guess: str) -> tuple[Any, ...]:
    """Everything the pipeline's login can see of a rolled-back put of one guessed value:
    the statement's rows and result, any error, and the vault's and inbox's counters in
    its own transaction."""
    tok, seal = tokenizer(db), sealer(db)
    token = tok.token(field, guess)
    with db.connect(roles.PIPELINE, autocommit=False) as conn:
        seen: list[Any] = []
        try:
            cur = conn.execute(
                "SELECT pii_vault_put(%s, %s, %s, %s)",
                ([token], [field], [seal.seal(field, token, guess)], [seal.key_id]),
            )
            seen += [cur.rowcount, cur.fetchall(), cur.statusmessage]
            seen += conn.execute(COUNTERS).fetchall()
        except psycopg.Error as exc:
            seen.append(exc.sqlstate)
        conn.rollback()
    return tuple(seen)


def test_the_pipeline_cannot_tell_whether_a_value_is_in_the_vault(db: RoleDatabase) -> None:
    login_row(db, "member", "198.51.100.23", "123-45-6789")
    member = probe(db, "ip", "198.51.100.23")
    stranger = probe(db, "ip", "198.51.100.24")
    assert member == stranger
    assert member[:2] == (1, [("",)])  # one row, an empty (void) result
    # no direct way either: no INSERT on the vault, no token to read
    tried = [
        "INSERT INTO pii_vault (token, field, sealed, vault_key_id) VALUES ('a', 'ip', '', 'k')"
        " ON CONFLICT DO NOTHING RETURNING 1",
        "SELECT token FROM pii_vault",
        "SELECT token FROM pii_vault_inbox",
        "SELECT count(*) FROM pii_vault",
    ]
    assert refusals(db, roles.PIPELINE, tried) == {s: "42501" for s in tried}


def test_what_the_pipeline_puts_reaches_the_vault_once(db: RoleDatabase) -> None:
    first = login_row(db, "twice-1", "198.51.100.40", "222-00-0001")
    second = login_row(db, "twice-2", "198.51.100.40", "222-00-0002")  # the same ip again
    assert first["ip"] == second["ip"]
    assert db.query(
        "SELECT count(*) FROM pii_vault WHERE token = ANY(%s)", [*first.values(), *second.values()]
    ) == [(3,)]
    assert db.query("SELECT count(*) FROM pii_vault_inbox") == [(0,)]


# -- erasure nobody can stall --------------------------------------------------------------------


def test_an_analyst_cannot_stall_an_erasure(db: RoleDatabase) -> None:
    tokens = login_row(db, "stall-1", "203.0.113.130", "333-00-0001")
    with db.connect(roles.ANALYST, autocommit=False) as analyst:
        # every advisory lock id the project ever used, held; the control row, refused
        analyst.execute("SELECT pg_advisory_lock(7417301), pg_advisory_lock(7417302)")
        analyst.execute("SELECT pg_advisory_lock(7417302, hashtext('logins_ledger'))")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            analyst.execute("SELECT 1 FROM logins_control FOR UPDATE")
        analyst.rollback()
        analyst.execute("SELECT pg_advisory_lock(7417301), pg_advisory_lock(7417302)")
        started = time.monotonic()
        forgot = db.cli(roles.ERASER, "forget", tokens["ip"], "--reason", "erasure 19", "--json")
        assert forgot.exit_code == 0, forgot.output
        assert time.monotonic() - started < 5
        assert json.loads(forgot.stdout)[0]["erased"] == [tokens["ip"]]


def test_a_second_erasure_fails_fast_naming_who_holds_the_lock(db: RoleDatabase) -> None:
    one = login_row(db, "lock-1", "203.0.113.140", "444-00-0001")
    two = login_row(db, "lock-2", "203.0.113.141", "444-00-0002")
    with db.connect(roles.ERASER, autocommit=False) as first:
        first.execute(
            "SELECT pii_forget(%s, '{}', 'erasure 20', NULL, '{}')", ([one["ip"]],)
        )  # holds the erasure lock until it commits
        pid = first.info.backend_pid
        started = time.monotonic()
        second = db.cli(roles.ERASER, "forget", two["ip"], "--reason", "erasure 21")
        waited = time.monotonic() - started
        assert second.exit_code != 0
        assert f"held by login {db.logins[roles.ERASER]} (pid {pid}" in second.output
        assert "pii_vault:erasure" in second.output
        assert waited < 10
        first.commit()
    assert db.query("SELECT count(*) FROM pii_vault WHERE token = %s", two["ip"]) == [(1,)]


def test_the_pipeline_writes_on_while_an_erasure_is_open(db: RoleDatabase) -> None:
    erased = login_row(db, "open-1", "203.0.113.150", "555-00-0001")
    with db.connect(roles.ERASER, autocommit=False) as eraser:
        eraser.execute(
            "SELECT pii_forget(%s, '{}', 'erasure 22', NULL, '{}')", ([erased["ip"]],)
        )  # erased, not committed: its locks are held
        done: list[dict[str, str]] = []

        def pipeline() -> None:
            done.append(login_row(db, "open-2", "203.0.113.151", "555-00-0002"))

        worker = threading.Thread(target=pipeline)
        worker.start()
        worker.join(5)
        assert done, "the pipeline's write waited behind the open erasure"
        eraser.commit()
    assert db.query(
        "SELECT count(*) FROM pii_vault WHERE token = ANY(%s)", list(done[0].values())
    ) == [(2,)]


# -- schema public before PostgreSQL 15 ----------------------------------------------------------


def test_migrate_closes_schema_public_or_refuses_with_the_statement(db: RoleDatabase) -> None:
    """PostgreSQL 13 and 14 grant CREATE on `public` to PUBLIC; the suite's server does not,
    so the grant is made here first, as such a server has it."""
    with db.connect("superuser") as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
    try:
        assert refusals(db, roles.PIPELINE, ["CREATE TABLE public.stolen (a int)"]) == {
            "CREATE TABLE public.stolen (a int)": "ran"
        }  # what the grant allows: the reason for the revoke
        refused_migrate = db.cli(roles.OWNER, "migrate")
        assert refused_migrate.exit_code == 2  # an unusable environment: exit 2, as everywhere
        assert 'REVOKE CREATE ON SCHEMA "public" FROM PUBLIC' in refused_migrate.output
        assert db.query("SELECT has_schema_privilege('public', 'public', 'CREATE')") == [(True,)]
        done = db.cli("superuser", "migrate")
        assert done.exit_code == 0, done.output
        assert db.query("SELECT has_schema_privilege('public', 'public', 'CREATE')") == [(False,)]
        tried = ["CREATE TABLE public.stolen (a int)", "CREATE FUNCTION public.f() RETURNS int"
                 " LANGUAGE sql AS 'SELECT 1'"]  # fmt: skip
        assert refusals(db, roles.PIPELINE, tried) == {s: "42501" for s in tried}
    finally:
        with db.connect("superuser") as conn:
            conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")


def test_forget_erases_an_entry_still_in_the_inbox(db: RoleDatabase) -> None:
    """A batch committed and not yet flushed (the pipeline died between the two): its entry
    sits in the inbox, and `forget` erases it there too."""
    with db.connect(roles.PIPELINE, autocommit=False) as conn:
        (token,) = put(conn, db, {"ip": "203.0.113.160"})
        conn.commit()  # no flush
    assert db.query("SELECT count(*) FROM pii_vault_inbox WHERE token = %s", token) == [(1,)]
    forgot = db.cli(roles.ERASER, "forget", token, "--reason", "erasure 23", "--json")
    assert forgot.exit_code == 0, forgot.output
    assert json.loads(forgot.stdout)[0]["erased"] == [token]  # counted as in the vault
    assert db.query("SELECT count(*) FROM pii_vault_inbox WHERE token = %s", token) == [(0,)]
    assert db.query("SELECT count(*) FROM pii_vault WHERE token = %s", token) == [(0,)]
