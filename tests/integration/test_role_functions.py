"""Roles act only through audited functions, and nobody can stall an erasure: tried as each
role's holder would, through real PostgreSQL logins (tests/integration/rolekit.py).

* Every direct write on a PII-bearing table (the vault, its inbox, the aliases, the
  erasures, the token columns, the rejected bodies, the audit) is refused with SQLSTATE
  42501 for the eraser, the rotator, the revealer and the pipeline: the attacks of the
  review (issue 18 item 4) included. The permitted operation, through the role's function,
  is done and audited with the login as the actor.
* The pipeline cannot tell whether a value is in the vault (item 5): a rolled-back put of a
  guessed token shows the same row count, result, error and relation counters whether the
  token is in the vault or not; nor after a flush in the same transaction, nor by a second
  session's lock wait, nor in the global counters (issue 18's review, finding 1). A guess
  it commits costs a vault entry that no row uses, which an auditor sees.
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
from tests.helpers import one
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
        done = one(
            conn,
            "SELECT pii_forget(%s, '{}', 'erasure 18', 'someone-else', '{}')",
            [tokens["ip"]],
        )
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
        conn.execute(
            "SELECT pii_rotate('yearly', 'admin', %s, 0, 0, '{}', '{}', '{}', '{}')",
            (json.dumps({"phase": "start", "to_token_key": "k2"}),),
        )
        rotated = one(
            conn,
            "SELECT pii_rotate('yearly', 'admin', '{\"phase\": \"batch\"}', 0, 0, %s, %s, %s, %s)",
            [tokens["ip"], "k1.22222222222222222222222222222222"],
            [new, "k2.33333333333333333333333333333333"],
            [b"s", b"t"],
            ["v", "v"],
        )
        conn.execute(
            "SELECT pii_rekey('new pair', NULL, %s, 0, 0, false, '{}', '{}', '', '')",
            (json.dumps({"phase": "start", "from_vault_key": "v", "to_vault_key": "v2"}),),
        )
        rekeyed = one(
            conn,
            "SELECT pii_rekey('new pair', NULL, '{}', 0, 0, false, %s, %s, %s, %s)",
            [new],
            [b"resealed"],
            "v",
            "v2",
        )
    assert (rotated, rekeyed) == (1, 1)  # an old token not in the vault gets no alias
    assert db.query("SELECT old_token, field FROM pii_token_aliases WHERE new_token = %s", new) == [
        (tokens["ip"], "ip")
    ]
    assert db.query(
        "SELECT actor, action, succeeded FROM pii_audit WHERE id > %s ORDER BY id", before
    ) == [
        (db.logins[roles.ROTATOR], "rotate", 0),  # the start rows
        (db.logins[roles.ROTATOR], "rotate", 1),
        (db.logins[roles.ROTATOR], "rekey", 0),
        (db.logins[roles.ROTATOR], "rekey", 1),
    ]


def test_a_revealer_cannot_append_a_forget_row(db: RoleDatabase) -> None:
    forged = [
        "SELECT * FROM pii_audit_append('forget', 'forged', NULL, 50, 0, '{}')",
        "SELECT pii_forget('{}', '{}', 'forged', NULL, '{}')",
        "SELECT pii_purge('forged', NULL)",
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


def offer(conn: psycopg.Connection[Any], db: RoleDatabase, field: str, value: str) -> str:
    """The attacker's put of one guessed value (tests/attack/test_db_attacks.py, branch attack)."""
    (token,) = put(conn, db, {field: value})
    return token


VAULT_INSERTS = (
    "SELECT COALESCE(max(n_tup_ins), 0) FROM pg_stat_xact_user_tables WHERE relname = 'pii_vault'"
)


def put_flush_counters(db: RoleDatabase, field: str, guess: str) -> tuple[Any, ...]:
    """The review's oracle, as the pipeline's login: put(guess); flush(); put(guess) again
    (its flush too); read this transaction's counters of the vault and the inbox; roll back."""
    with db.connect(roles.PIPELINE, autocommit=False) as conn:
        offer(conn, db, field, guess)
        conn.execute("SELECT pii_vault_flush()")  # moved our own uncommitted row before
        offer(conn, db, field, guess)
        seen = (conn.execute(VAULT_INSERTS).fetchone(), *conn.execute(COUNTERS).fetchall())
        conn.rollback()
    return seen


def test_put_then_flush_in_one_transaction_tells_nothing(db: RoleDatabase) -> None:
    """Issue 18 review, finding 1: the flush no longer moves rows its own transaction put, so
    the vault's counters are the same for a member and a stranger (they were 0 and 1)."""
    login_row(db, "oracle-member", "198.51.100.123", "123-45-6123")
    member = put_flush_counters(db, "ip", "198.51.100.123")
    stranger = put_flush_counters(db, "ip", "198.51.100.124")
    assert member == stranger
    assert member[0] == (0,)  # nothing reached the vault in the attacker's transaction
    with db.connect(roles.PIPELINE, autocommit=False) as conn:  # the rate test's loop, once
        before = conn.execute(VAULT_INSERTS).fetchone()
        offer(conn, db, "ip", "198.51.100.124")
        conn.execute("SELECT pii_vault_flush()")
        assert conn.execute(VAULT_INSERTS).fetchone() == before
        conn.rollback()


def lock_wait(db: RoleDatabase, field: str, guess: str) -> bool:
    """Two pipeline logins put and flush the same guess, uncommitted; does B's flush wait on
    A's (lock_timeout 55P03)? It used to iff the guess was new."""
    with (
        db.connect(roles.PIPELINE, autocommit=False) as a,
        db.connect(roles.PIPELINE, autocommit=False) as b,
    ):
        offer(a, db, field, guess)
        a.execute("SELECT pii_vault_flush()")
        b.execute("SET lock_timeout = '300ms'")
        offer(b, db, field, guess)
        try:
            b.execute("SELECT pii_vault_flush()")
            waited = False
        except psycopg.errors.LockNotAvailable:
            waited = True
        a.rollback()
        b.rollback()
    return waited


def test_a_second_sessions_flush_waits_alike_for_a_member_and_a_stranger(
    db: RoleDatabase,
) -> None:
    login_row(db, "oracle-lock", "198.51.100.177", "123-45-6177")
    assert lock_wait(db, "ip", "198.51.100.177") is False
    assert lock_wait(db, "ip", "198.51.100.178") is False


def test_rolled_back_guesses_move_nothing_the_global_counters_count(db: RoleDatabase) -> None:
    """pg_stat_user_tables (every login reads it) counts rolled-back inserts too: a rolled-back
    put and flush adds an inbox insert, never a vault insert, member or not."""
    login_row(db, "oracle-global", "198.51.100.190", "123-45-6190")

    def totals() -> tuple[int, int]:
        with db.connect(roles.PIPELINE) as conn:
            got = dict(
                conn.execute(
                    "SELECT relname::text, n_tup_ins FROM pg_stat_user_tables"
                    " WHERE relname IN ('pii_vault', 'pii_vault_inbox')"
                ).fetchall()
            )
        return int(got["pii_vault"]), int(got["pii_vault_inbox"])

    def probe_global(guess: str) -> int:
        vault, inbox = totals()
        put_flush_counters(db, "ip", guess)  # two puts, a flush; rolled back; disconnected
        deadline = time.monotonic() + 5
        while (now := totals())[1] < inbox + 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the ended backend's counters reach the shared stats
        assert now[1] >= inbox + 2, "the probe's counters never arrived"
        return now[0] - vault

    assert probe_global("198.51.100.190") == probe_global("198.51.100.191") == 0


def test_a_committed_guess_costs_a_vault_entry_an_auditor_sees(db: RoleDatabase) -> None:
    """What is left (docs/vault.md, "What the pipeline can learn of the vault"): a guess the
    pipeline commits reaches the vault at the next flush, where a counter can tell whether it
    was new; but it stays there, an entry that no row uses."""
    token = tokenizer(db).token("ip", "198.51.100.199")
    with db.connect(roles.PIPELINE, autocommit=False) as conn:
        offer(conn, db, "ip", "198.51.100.199")
        conn.commit()
        conn.execute("SELECT pii_vault_flush()")  # a fresh transaction: moves committed rows
        assert conn.execute(VAULT_INSERTS).fetchone() == (1,)  # new
        conn.commit()
    orphans = db.query(
        "SELECT v.token FROM pii_vault v WHERE NOT EXISTS (SELECT 1 FROM user_logins u"
        " WHERE u.masked_ip = v.token OR u.masked_device_id = v.token)"
    )
    assert (token,) in orphans


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


def test_an_open_flush_of_the_victims_entry_fails_forget_in_seconds_naming_it(
    db: RoleDatabase,
) -> None:
    """Review finding 6: the pipeline's login commits a put of the victim's token, then leaves
    a flush open (it holds the inbox row): forget used to wait for ever, holding the erasure
    lock. Now it fails after its lock_timeout naming the pipeline's login and pid, with the
    way to end an idle-in-transaction session; once that ends, forget erases."""
    victim = login_row(db, "stall-victim", "203.0.113.200", "777-00-0001")
    with db.connect(roles.PIPELINE, autocommit=False) as p:
        offer(p, db, "ip", "203.0.113.200")  # a copy of the victim's ip into the inbox
        p.commit()
        p.execute("SELECT pii_vault_flush()")  # moves (locks) that inbox row; left open
        pid = p.info.backend_pid
        started = time.monotonic()
        stalled = db.cli(roles.ERASER, "forget", victim["ip"], "--reason", "gdpr")
        waited = time.monotonic() - started
        p.rollback()
    assert stalled.exit_code != 0, stalled.output
    assert waited < 12
    said = " ".join(stalled.output.split())
    assert f"held by login {db.logins[roles.PIPELINE]} (pid {pid}" in said, said
    assert "pg_terminate_backend" in said
    forgot = db.cli(roles.ERASER, "forget", victim["ip"], "--reason", "gdpr", "--json")
    assert forgot.exit_code == 0, forgot.output
    assert victim["ip"] in json.loads(forgot.stdout)[0]["erased"]


def test_an_open_reveal_fails_forget_and_purge_in_seconds_naming_the_revealer(
    db: RoleDatabase,
) -> None:
    """Review finding 6: a revealer's open transaction holds the audit lock. Every forget and
    purge meanwhile fails within seconds naming the revealer's login and how to end it."""
    row = login_row(db, "rev-block", "203.0.113.95", "695-00-0001")
    with db.connect(roles.REVEALER, autocommit=False) as revealer:
        revealer.execute("SELECT * FROM pii_audit_reveal('look', NULL, 0, 0, '{}')")
        started = time.monotonic()
        forgot = db.cli(roles.ERASER, "forget", row["ip"], "--reason", "gdpr")
        purged = db.cli(roles.ERASER, "purge")
        waited = time.monotonic() - started
        revealer.rollback()
    assert waited < 15
    for result in (forgot, purged):
        # logins purge does not catch the error yet (logins/cli/purge.py): its message
        said = " ".join((result.output or str(result.exception)).split())
        assert result.exit_code != 0, said
        assert f"held by login {db.logins[roles.REVEALER]}" in said, said
        assert "pg_terminate_backend" in said
    assert db.query("SELECT count(*) FROM pii_vault WHERE token = %s", row["ip"]) == [(1,)]


def rotate_start(conn: psycopg.Connection[Any], to_token_key: str) -> None:
    conn.execute(
        "SELECT pii_rotate('yearly', NULL, %s, 0, 0, '{}', '{}', '{}', '{}')",
        (json.dumps({"phase": "start", "to_token_key": to_token_key}),),
    )


def test_a_rotator_cannot_alias_a_raw_value_or_another_values_token(db: RoleDatabase) -> None:
    """Review finding 4, as the rotator's login: a raw ip as the new token (it reached the
    analysts' view), a victim's token aliased to another user's (forget --user-id then kept
    the victim's value as shared; forget of one erased the other's). Each refused, 22023,
    nothing written; a rotation declared to the old tokens' own key refused as well."""
    a = login_row(db, "alias-a", "203.0.113.67", "667-00-0001")
    b = login_row(db, "alias-b", "198.51.100.67", "667-00-0002")
    key = a["ip"].split(".")[0]
    before = db.query("SELECT count(*) FROM pii_token_aliases")
    batch = "SELECT pii_rotate('yearly', NULL, '{}', 0, 0, %s, %s, %s, %s)"
    tried = {
        "raw ip": ([a["ip"]], ["203.0.113.67"]),
        "another user's token": ([a["ip"]], [b["ip"]]),
        "another field's token": ([a["ip"]], [b["device_id"]]),
        "a made-up key": ([a["ip"]], ["k9." + "0" * 32]),
    }
    with db.connect(roles.ROTATOR) as conn:
        for old, new in tried.values():  # no rotation started to the other token's key
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                conn.execute(batch, (old, new, [b"junk"], ["v"]))
        rotate_start(conn, key)  # declared to the key the tokens are already under
        for old, new in tried.values():
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                conn.execute(batch, (old, new, [b"junk"], ["v"]))
        rotate_start(conn, "k9")  # a new key: still not a token under it, or a raw value
        for old, new in list(tried.values())[:3]:
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                conn.execute(batch, (old, new, [b"junk"], ["v"]))
    assert db.query("SELECT count(*) FROM pii_token_aliases") == before
    forgot = db.cli(roles.ERASER, "forget", "--user-id", "alias-a", "--reason", "gdpr", "--json")
    assert forgot.exit_code == 0, forgot.output
    assert json.loads(forgot.stdout)[0]["shared_kept"] == []
    assert db.query("SELECT masked_ip FROM user_logins WHERE user_id = 'alias-b'") == [(b["ip"],)]


def test_a_rotator_cannot_overwrite_through_rekey_to_the_same_key(db: RoleDatabase) -> None:
    """Review finding 5, as the rotator's login: rekey with from = to set a vault entry's
    sealed value to junk (recorded only as a rekey) and re-sealed a rejected body for another
    message id (forget --user-id then skipped it silently). Refused, 22023, nothing written,
    nothing on record; and a rekey other than the one its start row declared, likewise."""
    from logins.core.vault import Sealer as Seal

    row = login_row(db, "shred-me", "203.0.113.68", "668-00-0001")
    key_id = db.query("SELECT vault_key_id FROM pii_vault WHERE token = %s", row["ip"])[0][0]
    sealed = db.query("SELECT sealed FROM pii_vault WHERE token = %s", row["ip"])
    seal: Seal = sealer(db)
    body = json.dumps({"user_id": "hidden-u", "ip": "203.0.113.69", "device_id": "x"})
    with db.connect(roles.PIPELINE) as conn:
        conn.execute(
            "INSERT INTO user_logins_rejected (message_id, reason, detail, sealed_body,"
            " vault_key_id) VALUES ('m-hidden', 'bad', '{}', %s, %s)",
            (seal.seal_rejected("m-hidden", body), seal.key_id),
        )
    before = db.query("SELECT max(id) FROM pii_audit")[0][0] or 0
    rekey = "SELECT pii_rekey('routine', NULL, '{}', 0, 0, %s, %s, %s, %s, %s)"
    with db.connect(roles.ROTATOR) as conn:
        for start in (None, {"from_vault_key": key_id, "to_vault_key": key_id}):
            if start:
                conn.execute(
                    "SELECT pii_rekey('routine', NULL, %s, 0, 0, false, '{}', '{}', '', '')",
                    (json.dumps({"phase": "start", **start}),),
                )
            for args in (
                (False, [row["ip"]], [b"\x00garbage"], key_id, key_id),
                (True, ["m-hidden"], [seal.seal_rejected("m-other", body)], key_id, key_id),
                (False, [row["ip"]], [b"\x00garbage"], key_id, "undeclared"),
            ):
                with pytest.raises(psycopg.errors.InvalidParameterValue):
                    conn.execute(rekey, args)
    assert db.query("SELECT sealed FROM pii_vault WHERE token = %s", row["ip"]) == sealed
    assert db.query("SELECT action, succeeded FROM pii_audit WHERE id > %s", before) == [
        ("rekey", 0)  # the start row only
    ]
    forgot = db.cli(
        roles.ERASER, "forget", "--user-id", "hidden-u", "--reason", "gdpr", "--json",
        "--private-key-file", str(db.keys["vault.key"]),
    )  # fmt: skip
    assert forgot.exit_code == 0, forgot.output
    assert json.loads(forgot.stdout)[0]["rejected_erased"] == ["m-hidden"]


def test_an_erasers_detail_cannot_stand_for_what_forget_did(db: RoleDatabase) -> None:
    """Review finding 9: the eraser's p_detail was merged into the audit row's detail, so it
    could name another user as `detail.user` or forge the counts. Now the caller's words are
    kept apart, under `requested`, and the function's own keys are what it did."""
    row = login_row(db, "real-user", "203.0.113.70", "670-00-0001")
    claim = {"user": "somebody-else", "entries": ["forged"], "rows_rewritten": 99}
    with db.connect(roles.ERASER) as conn:
        done = one(
            conn,
            "SELECT pii_forget(%s, '{}', 'gdpr', NULL, %s::jsonb)",
            [row["ip"]],
            json.dumps(claim),
        )
    ((detail,),) = db.query("SELECT detail FROM pii_audit WHERE id = %s", done["audit_id"])
    assert "user" not in detail and detail["requested"] == claim
    assert detail["rows_rewritten"] == 1 and detail["entries"] != ["forged"]


def test_purge_uses_the_owners_retention_not_the_erasers(db: RoleDatabase) -> None:
    """Review finding 9: pii_purge(1, ...) emptied every body older than a day, whatever
    sink.rejected_retention_days said. The retention is now the owner's setting in
    logins_control (written by migrate); the eraser passes none, and cannot write it."""
    days = db.config.sink.rejected_retention_days
    assert days is not None and days > 2
    with db.connect(roles.PIPELINE) as conn:
        conn.execute(
            "INSERT INTO user_logins_rejected (message_id, reason, detail, sealed_body,"
            " vault_key_id) VALUES ('m-fresh', 'bad', '{}', '\\x01', 'k')"
        )
    db.query(
        "UPDATE user_logins_rejected SET rejected_at = now() - interval '2 days'"
        " WHERE message_id = 'm-fresh' RETURNING 1"
    )
    tried = [
        "SELECT pii_purge(1, 'cleanup', NULL)",
        "UPDATE logins_control SET value = 1 WHERE name = 'user_logins_rejected:retention_days'",
    ]
    assert refusals(db, roles.ERASER, tried) == dict(zip(tried, ["42883", "42501"], strict=True))
    with db.connect(roles.ERASER) as conn:
        got = one(conn, "SELECT pii_purge('cleanup', NULL)")
    assert got["retention_days"] == days
    assert db.query(
        "SELECT octet_length(sealed_body) FROM user_logins_rejected WHERE message_id = 'm-fresh'"
    ) == [(1,)]


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
