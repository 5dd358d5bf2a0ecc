"""Least privilege, tried role by role: one database migrated by the superuser over a
producer-team `user_logins` that already has rows, a login user granted each logins role,
and every command and statement run through that login's own DSN.

Each role is shown doing its job (the pipeline runs the real flow end to end; the analyst
reads the rows, the view and `logins stats`; the revealer, eraser, rotator and auditor run
their commands) and being refused what it must not do, as an attacker holding that login
would try it: DDL, disabling a trigger, rewriting the audit, reading a ciphertext.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from connectors.postgres import roles
from connectors.postgres.schemaversion import SCHEMA_VERSION
from logins.core.keys import generate_keys, load_token_keys, load_vault_private_key
from logins.core.tokens import Tokenizer
from logins.core.vault import Opener
from logins.dev.embedded import EmbeddedSqs
from logins.dev.generator import GeneratedMessage, generate
from logins.dev.seed import send_bodies
from logins.pii.reveal import reveal
from tests.helpers import config_for, run
from tests.integration.rolekit import RoleDatabase, role_database

PRODUCER_TABLE = (
    "CREATE TABLE user_logins (user_id varchar(128), device_type varchar(32),"
    " masked_ip varchar(256), masked_device_id varchar(256), locale varchar(32),"
    " app_version integer, create_date date);"
    " INSERT INTO user_logins VALUES ('legacy-1', 'ios', 'x', 'y', 'US', 20300, '2024-01-01'),"
    " ('legacy-2', 'android', 'x', 'z', 'RU', 9600, '2024-01-02')"
)
APPEND = "SELECT * FROM pii_audit_append('reveal', 'forged', 'someone-else', 1, 0, NULL)"


@pytest.fixture(scope="module")
def db(pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleDatabase]:
    with role_database(
        pg_admin_dsn, tmp_path_factory.mktemp("roles"), before_migrate=PRODUCER_TABLE
    ) as database:
        yield database


@dataclass
class Loaded:
    messages: list[GeneratedMessage]
    sent: list[str]
    valid: list[dict[str, str]]


@pytest.fixture(scope="module")
def loaded(db: RoleDatabase, sqs: EmbeddedSqs, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    """The real flow, run as the pipeline's login: first with the local config (sink.migrate
    true, so only the version check keeps it from DDL), then with sink.migrate false."""
    queue = sqs.create_queue(f"roles-{db.logins[roles.PIPELINE]}")
    env = {
        "SQS_QUEUE_URL": queue,
        "SQS_ENDPOINT_URL": sqs.endpoint_url,
        "LOGINS_STOP_WHEN_IDLE": "1",
    }
    messages = generate(80, seed=91)
    half = len(messages) // 2
    sent = send_bodies(sqs.client(), queue, [m.body for m in messages[:half]])
    run(db.config_as(roles.PIPELINE, **env))
    sent += send_bodies(sqs.client(), queue, [m.body for m in messages[half:]])
    no_migrate = config_for(
        db.env_as(roles.PIPELINE, **env),
        tmp_path_factory.mktemp("cfg"),
        "sink:\n  migrate: false\n",
    )
    assert no_migrate.sink.migrate is False
    run(no_migrate)
    valid = [json.loads(m.body) for m in messages if m.kind == "valid"]
    return Loaded(messages, sent, valid)


def refused(db: RoleDatabase, role: str, statements: list[str]) -> dict[str, str]:
    """{statement: what happened} for every statement the role was NOT refused."""
    allowed: dict[str, str] = {}
    with db.connect(role) as conn:
        for statement in statements:
            try:
                with conn.transaction():
                    conn.execute(statement)  # the attacker's SQL
                    allowed[statement] = "ran"
                    raise _Undo
            except _Undo:
                pass
            except psycopg.errors.InsufficientPrivilege:
                continue
            except psycopg.Error as exc:
                allowed[statement] = f"{type(exc).__name__}: {exc}"
    return allowed


def causes(exc: BaseException | None) -> str:
    """The exception and every cause under it (Bytewax wraps what a partition raised)."""
    found = []
    while exc is not None:
        found.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(found)


class _Undo(Exception):
    """Roll back a statement that should have been refused, after recording it."""


def can(db: RoleDatabase, role: str, statements: list[str]) -> None:
    with db.connect(role) as conn:
        for statement in statements:
            with conn.transaction():
                conn.execute(statement)


# -- the schema and its owner -------------------------------------------------------------------


def test_migrate_makes_nologin_roles_and_logins_owner_owns_every_object(db: RoleDatabase) -> None:
    found = db.query(
        "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolbypassrls FROM pg_roles"
        " WHERE rolname = ANY(%s)",
        list(roles.ROLES),
    )
    assert sorted(found) == sorted((r, False, False, False, False) for r in roles.ROLES)
    owned = db.query(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'S')"  # p: the ledger
    )
    names = {name for name, _ in owned}
    assert names >= {
        "user_logins",  # the producer team's table, taken over
        "user_logins_unified",
        "user_logins_rejected",
        "user_logins_duplicates",
        "logins_ledger",
        "pii_vault",
        "pii_audit",
        "pii_audit_id_seq",
        "pii_erasures",
        "pii_token_aliases",
        "pii_vault_inbox",
        "logins_control",
        "logins_schema_version",
    }
    assert {owner for _, owner in owned} == {roles.OWNER}
    functions = db.query(
        "SELECT proname, pg_get_userbyid(proowner), prosecdef, proconfig FROM pg_proc"
        " WHERE pronamespace = 'public'::regnamespace ORDER BY proname"
    )
    path = ["search_path=pg_catalog, pg_temp"]
    definer = {
        name: (roles.OWNER, True, path)
        for name in (
            "pii_audit_append",
            "pii_audit_reveal",
            "pii_rekey",
            "pii_rotate",
            "pii_vault_flush",
            "pii_vault_put",
        )
    }
    assert dict((name, tuple(rest)) for name, *rest in functions) == {
        "logins_append_only": (roles.OWNER, False, path),
        "logins_audit_chained": (roles.OWNER, False, path),
        "logins_ledger_maintain": (roles.OWNER, True, [*path, "lock_timeout=2s"]),
        "logins_take_lock": (roles.OWNER, False, path),
        # an erasure waits for no row for ever (review of issue 18, finding 6)
        "pii_forget": (roles.OWNER, True, [*path, "lock_timeout=5s"]),
        "pii_purge": (roles.OWNER, True, [*path, "lock_timeout=5s"]),
        **definer,
    }
    # the ledger's partition maintenance: the pipeline (and the owner) only
    assert db.query(
        "SELECT grantee::regrole::text FROM aclexplode((SELECT proacl FROM pg_proc"
        " WHERE proname = 'logins_ledger_maintain')) WHERE privilege_type = 'EXECUTE'"
        " ORDER BY 1"
    ) == sorted([(r,) for r in (roles.OWNER, roles.PIPELINE)])
    # nobody may call the generic append function or the lock, PUBLIC included; each
    # function of an action only the role of that action
    for function, allowed in {
        "pii_audit_append": (),
        "logins_take_lock": (),
        "pii_audit_reveal": (roles.REVEALER,),
        "pii_forget": (roles.ERASER,),
        "pii_purge": (roles.ERASER,),
        "pii_rotate": (roles.ROTATOR,),
        "pii_rekey": (roles.ROTATOR,),
        "pii_vault_put": (roles.PIPELINE,),
        "pii_vault_flush": (roles.PIPELINE, roles.REVEALER, roles.ERASER, roles.ROTATOR),
    }.items():
        assert db.query(
            "SELECT grantee::regrole::text FROM aclexplode((SELECT proacl FROM pg_proc"
            " WHERE proname = %s)) WHERE privilege_type = 'EXECUTE' ORDER BY 1",
            function,
        ) == sorted([(r,) for r in (roles.OWNER, *allowed)]), function
    # the producer team's rows are still there, untouched
    assert db.query(
        "SELECT user_id, masked_ip, app_version FROM user_logins WHERE message_id IS NULL"
        " ORDER BY 1"
    ) == [("legacy-1", "x", 20300), ("legacy-2", "x", 9600)]
    assert db.query("SELECT scope, version FROM logins_schema_version") == [
        ("user_logins", SCHEMA_VERSION)
    ]


def test_the_owner_and_a_superuser_migrate_again_and_no_other_role_can(db: RoleDatabase) -> None:
    for role in (roles.OWNER, "superuser"):
        result = db.cli(role, "migrate")
        assert result.exit_code == 0, result.output
        assert f"schema version {SCHEMA_VERSION}" in result.output
    for role in roles.GRANTEES:
        result = db.cli(role, "migrate")
        assert result.exit_code == 2, (role, result.output)
        assert "cannot migrate as this login" in result.output
    owners = db.query(
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
        " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v', 'S')"
    )
    assert owners == [(roles.OWNER,)]


def test_objects_an_earlier_release_left_to_the_flow_login_are_taken_over(
    db: RoleDatabase,
) -> None:
    """Before roles, the flow's own login owned everything (it migrated at every start)."""
    old_owner = db.logins[roles.PIPELINE]
    with db.connect("superuser") as conn:
        for (name,) in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
            " AND relkind IN ('r', 'v')"
        ).fetchall():
            conn.execute(f'ALTER TABLE "{name}" OWNER TO "{old_owner}"')
        conn.execute(f'ALTER FUNCTION logins_append_only() OWNER TO "{old_owner}"')
    assert db.cli("superuser", "migrate").exit_code == 0
    owners = db.query(
        "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
        " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'v', 'S')"
        " UNION SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc"
        " WHERE pronamespace = 'public'::regnamespace"
    )
    assert owners == [(roles.OWNER,)]


# -- the pipeline -------------------------------------------------------------------------------


def test_the_pipeline_role_runs_the_real_flow_end_to_end(db: RoleDatabase, loaded: Loaded) -> None:
    tables = {"row": "user_logins", "rejected": "user_logins_rejected"}
    tables["duplicate"] = "user_logins_duplicates"
    outcome = {
        kind: {m for (m,) in db.query(f"SELECT message_id FROM {t} WHERE message_id IS NOT NULL")}
        for kind, t in tables.items()
    }
    assert set().union(*outcome.values()) == set(loaded.sent)
    assert sum(len(v) for v in outcome.values()) == len(loaded.sent)
    kinds = [m.kind for m in loaded.messages]
    assert len(outcome["rejected"]) == kinds.count("malformed")
    # a restart forgets the dedupe window: a resend of a first-run login may become a row
    assert len(outcome["row"]) + len(outcome["duplicate"]) == len(kinds) - kinds.count("malformed")
    assert len(outcome["row"]) >= kinds.count("valid") and outcome["duplicate"]
    assert dict(db.query("SELECT outcome, count(*) FROM logins_ledger GROUP BY 1")) == {
        k: len(v) for k, v in outcome.items()
    }
    assert db.query("SELECT count(*) FROM pii_vault") == [
        (len({v["ip"] for v in loaded.valid}) + len({v["device_id"] for v in loaded.valid}),)
    ]


def test_the_pipeline_role_is_refused_all_else(db: RoleDatabase, loaded: Loaded) -> None:
    assert (
        refused(
            db,
            roles.PIPELINE,
            [
                "ALTER TABLE pii_audit DISABLE TRIGGER USER",
                "ALTER TABLE pii_audit DISABLE TRIGGER logins_append_only",
                "ALTER TABLE user_logins ADD COLUMN stolen text",
                "CREATE TABLE public.stolen (a int)",
                "DROP TABLE pii_erasures",
                "UPDATE pii_audit SET reason = 'nothing to see'",
                "DELETE FROM pii_audit",
                "INSERT INTO pii_audit (actor, reason, action, tokens, succeeded, failed,"
                " prev_hash, row_hash) VALUES ('x', 'y', 'reveal', '{}', 0, 0, 'a', 'b')",
                "SELECT * FROM pii_audit",
                APPEND,
                "SELECT sealed FROM pii_vault",
                "SELECT token FROM pii_vault",
                "SELECT field FROM pii_vault",
                "SELECT sealed_body FROM user_logins_rejected",
                "SELECT user_id, masked_ip FROM user_logins",
                "UPDATE user_logins SET masked_ip = 'x'",
                "UPDATE pii_vault SET sealed = ''",
                "DELETE FROM user_logins",
                "DELETE FROM pii_vault",
                "TRUNCATE logins_ledger",
                "TRUNCATE pii_vault",
                "SELECT * FROM pii_erasures",
                "SELECT * FROM pii_token_aliases",
                "DELETE FROM pii_token_aliases",
                "SET ROLE logins_owner",
            ],
        )
        == {}
    )


# -- analysts -----------------------------------------------------------------------------------


def test_an_analyst_reads_the_rows_the_view_and_the_counts_and_nothing_sealed(
    db: RoleDatabase, loaded: Loaded
) -> None:
    can(
        db,
        roles.ANALYST,
        [
            "SELECT * FROM user_logins",
            "SELECT masked_ip_current, count(*) FROM user_logins_unified GROUP BY 1",
            "SELECT * FROM user_logins_duplicates",
            "SELECT * FROM logins_ledger",
            "SELECT message_id, reason, detail, rejected_at FROM user_logins_rejected",
            "SELECT field, count(*) FROM pii_vault GROUP BY field",
            "SELECT * FROM pii_token_aliases",
        ],
    )
    stats = db.cli(roles.ANALYST, "stats", "--json")
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout) == json.loads(db.cli("superuser", "stats", "--json").stdout)
    assert json.loads(stats.stdout)["messages"] == len(loaded.sent)
    assert (
        refused(
            db,
            roles.ANALYST,
            [
                "SELECT sealed FROM pii_vault",
                "SELECT token FROM pii_vault",
                "SELECT * FROM pii_vault",
                "SELECT sealed_body FROM user_logins_rejected",
                "SELECT * FROM user_logins_rejected",
                "SELECT * FROM pii_audit",
                "SELECT * FROM pii_erasures",
                "INSERT INTO user_logins (user_id) VALUES ('x')",
                "UPDATE user_logins SET user_id = 'x'",
                "DELETE FROM user_logins_duplicates",
                APPEND,
            ],
        )
        == {}
    )


# -- revealers ----------------------------------------------------------------------------------


def test_a_revealer_is_recorded_as_its_login_whatever_it_claims(
    db: RoleDatabase, loaded: Loaded
) -> None:
    login = loaded.valid[0]
    key = str(db.keys["vault.key"])
    shown = db.cli(
        roles.REVEALER,
        "reveal", "--user-id", login["user_id"], "--reason", "ticket 7",
        "--private-key-file", key, "--actor", "someone-else", "--json",
        USER="someone-else",
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert {r["value"] for r in json.loads(shown.stdout)} >= {login["ip"], login["device_id"]}
    last = db.query("SELECT actor, note, reason, action FROM pii_audit ORDER BY id DESC LIMIT 1")
    assert last == [(db.logins[roles.REVEALER], "someone-else", "ticket 7", "reveal")]

    # calling its own append function directly: allowed, a reveal row recording who logged in
    with db.connect(roles.REVEALER) as conn:
        (actor,) = conn.execute(
            "SELECT audit_actor FROM pii_audit_reveal('direct', 'admin', 0, 0, NULL)"
        ).fetchone() or ("",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET ROLE logins_owner")
    assert actor == db.logins[roles.REVEALER]
    assert db.query("SELECT actor, action FROM pii_audit ORDER BY id DESC LIMIT 1") == [
        (db.logins[roles.REVEALER], "reveal")
    ]
    assert (
        refused(
            db,
            roles.REVEALER,
            [
                "INSERT INTO pii_audit (actor, reason, action, tokens, succeeded, failed,"
                " prev_hash, row_hash) VALUES ('x', 'y', 'reveal', '{}', 0, 0, 'a', 'b')",
                "UPDATE pii_audit SET actor = 'someone-else'",
                "DELETE FROM pii_audit",
                "SELECT * FROM pii_audit",
                "ALTER TABLE pii_audit DISABLE TRIGGER USER",
                "DELETE FROM pii_vault",
                "UPDATE pii_vault SET sealed = ''",
                "SELECT sealed_body FROM user_logins_rejected",
                "UPDATE user_logins SET masked_ip = 'x'",
                # a revealer records reveals and nothing else
                APPEND,
                "SELECT * FROM pii_audit_append('forget', 'forged', NULL, 1, 0, NULL)",
                "SELECT pii_forget(ARRAY['k.00000000000000000000000000000000'], '{}', 'x',"
                " NULL, '{}')",
                "SELECT pii_purge('x', NULL)",
                "SELECT pii_rotate('x', NULL, '{}', 0, 0, '{}', '{}', '{}', '{}')",
                "SELECT pii_vault_put('{}', '{}', '{}', '{}')",
            ],
        )
        == {}
    )
    assert db.cli("superuser", "audit", "verify").exit_code == 0


def test_reveal_commits_its_audit_row_before_returning_whatever_the_connection(
    db: RoleDatabase, loaded: Loaded
) -> None:
    login = loaded.valid[1]
    tokenizer = Tokenizer(load_token_keys(db.keys["token.key"]))
    token = tokenizer.token("ip", login["ip"])
    opener = Opener(load_vault_private_key(db.keys["vault.key"]))
    config = db.config_as(roles.REVEALER)
    before = db.query("SELECT count(*) FROM pii_audit")[0][0]
    with db.connect(roles.REVEALER, autocommit=False) as conn:
        shown = reveal(
            conn, config, opener=opener, tokenizer=tokenizer, tokens=[token], reason="r1"
        )
        assert [r.value for r in shown] == [login["ip"]]
        conn.rollback()  # the caller changes its mind: the row was committed before the value
        with conn.transaction(), pytest.raises(ValueError, match="inside a transaction"):
            reveal(conn, config, opener=opener, tokenizer=tokenizer, tokens=[token], reason="r2")
    assert [r for (r,) in db.query("SELECT reason FROM pii_audit WHERE id > %s", before)] == ["r1"]


# -- erasers ------------------------------------------------------------------------------------


def test_an_eraser_forgets_and_purges_and_can_do_nothing_else(
    db: RoleDatabase, loaded: Loaded
) -> None:
    login = loaded.valid[2]
    forgot = db.cli(
        roles.ERASER,
        "forget", "--user-id", login["user_id"], "--include-shared", "--reason", "erasure 3",
        "--private-key-file", str(db.keys["vault.key"]), "--json",
    )  # fmt: skip
    assert forgot.exit_code == 0, forgot.output
    (result,) = json.loads(forgot.stdout)
    assert len(result["erased"]) >= 2 and result["rows_rewritten"] >= 2
    purged = db.cli(roles.ERASER, "purge", "--json")
    assert purged.exit_code == 0, purged.output
    assert json.loads(purged.stdout)["retention_days"] == 30
    actions = db.query("SELECT actor, action FROM pii_audit ORDER BY id DESC LIMIT 2")
    assert actions == [(db.logins[roles.ERASER], "purge"), (db.logins[roles.ERASER], "forget")]
    assert (
        refused(
            db,
            roles.ERASER,
            [
                "SELECT sealed FROM pii_vault",
                "UPDATE user_logins SET user_id = 'x'",
                "DELETE FROM user_logins",
                "INSERT INTO pii_vault (token, field, sealed, vault_key_id)"
                " VALUES ('a', 'b', '', 'c')",
                "INSERT INTO pii_audit (actor, reason, action, tokens, succeeded, failed,"
                " prev_hash, row_hash) VALUES ('x', 'y', 'forget', '{}', 0, 0, 'a', 'b')",
                "UPDATE pii_audit SET reason = 'x'",
                "SELECT * FROM pii_audit",
                "ALTER TABLE pii_vault DISABLE TRIGGER USER",
                "TRUNCATE user_logins_rejected",
                "DELETE FROM user_logins_rejected",
            ],
        )
        == {}
    )


# -- rotators -----------------------------------------------------------------------------------


def test_a_rotator_rotates_and_rekeys_and_can_do_nothing_else(
    db: RoleDatabase, loaded: Loaded, tmp_path: Path
) -> None:
    token_file = tmp_path / "token.key"
    shutil.copy(db.keys["token.key"], token_file)
    token_file.chmod(0o600)
    new_key = db.cli(roles.ROTATOR, "rotate", "new-key", LOGINS_TOKEN_KEY_FILE=str(token_file))
    assert new_key.exit_code == 0, new_key.output
    rotated = db.cli(
        roles.ROTATOR,
        "rotate", "run", "--reason", "yearly", "--private-key-file", str(db.keys["vault.key"]),
        "--json", LOGINS_TOKEN_KEY_FILE=str(token_file),
    )  # fmt: skip
    assert rotated.exit_code == 0, rotated.output
    assert json.loads(rotated.stdout)["remaining"] == 0
    status = db.cli(
        roles.ROTATOR, "vault", "status", "--json", LOGINS_TOKEN_KEY_FILE=str(token_file)
    )
    assert status.exit_code == 0 and json.loads(status.stdout)["pending_rotation"] == 0
    pair = generate_keys(tmp_path / "new-vault")
    rekeyed = db.cli(
        roles.ROTATOR,
        "vault", "rekey", "--old-private-key-file", str(db.keys["vault.key"]),
        "--new-public-key-file", str(pair["vault.pub"]), "--reason", "new pair", "--json",
    )  # fmt: skip
    assert rekeyed.exit_code == 0, rekeyed.output
    summary = json.loads(rekeyed.stdout)
    assert summary["vault_rekeyed"] > 0 and summary["rejected_rekeyed"] > 0
    assert (summary["remaining_vault"], summary["remaining_rejected"]) == (0, 0)
    assert db.query("SELECT DISTINCT actor FROM pii_audit WHERE action IN ('rotate', 'rekey')") == [
        (db.logins[roles.ROTATOR],)
    ]
    assert (
        refused(
            db,
            roles.ROTATOR,
            [
                "DELETE FROM pii_vault",
                "DELETE FROM pii_token_aliases",
                "UPDATE user_logins SET masked_ip = 'x'",
                "SELECT * FROM pii_audit",
                "UPDATE pii_audit SET reason = 'x'",
                "ALTER TABLE pii_vault DISABLE TRIGGER USER",
                "TRUNCATE pii_vault",
            ],
        )
        == {}
    )


# -- auditors -----------------------------------------------------------------------------------


def test_an_auditor_reads_and_verifies_the_trail_and_nothing_else(
    db: RoleDatabase, loaded: Loaded
) -> None:
    listed = db.cli(roles.AUDITOR, "audit", "list", "--json", "--limit", "100")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)
    verified = db.cli(roles.AUDITOR, "audit", "verify")
    assert verified.exit_code == 0 and verified.output.startswith("ok: "), verified.output
    assert (
        refused(
            db,
            roles.AUDITOR,
            [
                "SELECT sealed FROM pii_vault",
                "SELECT * FROM user_logins",
                "SELECT sealed_body FROM user_logins_rejected",
                "UPDATE pii_audit SET reason = 'x'",
                "INSERT INTO pii_audit (actor, reason, action, tokens, succeeded, failed,"
                " prev_hash, row_hash) VALUES ('x', 'y', 'reveal', '{}', 0, 0, 'a', 'b')",
                APPEND,
                "ALTER TABLE pii_audit DISABLE TRIGGER USER",
            ],
        )
        == {}
    )


# -- the schema version check -------------------------------------------------------------------


def test_an_older_schema_stops_the_flow_and_the_commands_with_what_to_do(
    db: RoleDatabase, loaded: Loaded, sqs: EmbeddedSqs, tmp_path: Path
) -> None:
    queue = sqs.create_queue(f"roles-old-{db.logins[roles.PIPELINE]}")
    env = {
        "SQS_QUEUE_URL": queue,
        "SQS_ENDPOINT_URL": sqs.endpoint_url,
        "LOGINS_STOP_WHEN_IDLE": "1",
    }
    db.query("UPDATE logins_schema_version SET version = 0 RETURNING 1")
    try:
        no_migrate = config_for(
            db.env_as(roles.PIPELINE, **env), tmp_path, "sink:\n  migrate: false\n"
        )
        with pytest.raises(Exception) as info:
            run(no_migrate)
        stopped = causes(info.value)
        assert f"schema version 0, older than the {SCHEMA_VERSION} this release needs" in stopped
        assert "sink.migrate is false" in stopped
        assert "run `logins migrate` as the owner" in stopped
        with pytest.raises(Exception) as info:
            run(db.config_as(roles.PIPELINE, **env))  # sink.migrate true, but no DDL allowed
        stopped = causes(info.value)
        assert f"{db.logins[roles.PIPELINE]} may not migrate it (42501" in stopped
        assert "run `logins migrate` as the owner" in stopped
        shown = db.cli(roles.AUDITOR, "audit", "verify")
        assert shown.exit_code == 2 and "run `logins migrate` as the owner" in shown.output
        assert db.query("SELECT version FROM logins_schema_version") == [(0,)]  # untouched
    finally:
        db.query("UPDATE logins_schema_version SET version = %s RETURNING 1", SCHEMA_VERSION)
    assert db.cli(roles.AUDITOR, "audit", "verify").exit_code == 0
