"""The audit trail is append-only (trigger) and tamper-evident (hash chain): `logins audit
verify` names the first edited, deleted or smuggled-in row, even when a superuser disabled
the trigger to do it; an anchor exposes a rewritten chain and a truncated tail; concurrent
writers still make one linear chain; an existing pii_audit is upgraded in place; and an
action whose audit row cannot be written shows and changes nothing."""

from __future__ import annotations

import json
import threading

import psycopg
import pytest

from logins.core import audit
from tests.integration.vaultkit import Vault, vault

__all__ = ["vault"]


def tamper(v: Vault, *statements: str) -> None:
    """As the superuser: switch the append-only trigger off, change things, switch it on."""
    with v.connect() as conn:
        conn.execute("ALTER TABLE pii_audit DISABLE TRIGGER ALL")
        for statement in statements:
            conn.execute(statement)
        conn.execute("ALTER TABLE pii_audit ENABLE TRIGGER ALL")


def some_actions(v: Vault, n: int = 5) -> None:
    tokens = v.add_login("u-1", "192.0.2.1", "d-1")
    for i in range(n):
        v.reveal_json(tokens["ip"] if i % 2 else tokens["device_id"])


def verify(v: Vault, *args: str) -> tuple[int, str]:
    result = v.cli("audit", "verify", *args)
    return result.exit_code, result.output


def test_actions_are_chained_listed_and_verified(vault: Vault) -> None:
    some_actions(vault, 4)
    vault.cli("forget", vault.tokenizer.token("ip", "192.0.2.1"), "--reason", "erasure")
    code, out = verify(vault)
    assert code == 0, out
    head_hash = vault.query("SELECT row_hash FROM pii_audit ORDER BY id DESC LIMIT 1")[0][0]
    assert f"ok: 5 rows; head 5:{head_hash}" in out

    rows = vault.query("SELECT id, prev_hash, row_hash FROM pii_audit ORDER BY id")
    assert rows[0][1] == audit.genesis()
    assert all(rows[i][1] == rows[i - 1][2] for i in range(1, len(rows)))

    listed = vault.cli("audit", "list", "--limit", "2")
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:5] == ["id", "at", "actor", "action", "tokens"]
    assert lines[2].split()[0] == "5" and " forget " in lines[2]
    assert len(lines) == 4
    as_json = json.loads(vault.cli("audit", "list", "--json", "--limit", "1").stdout)
    assert as_json[0]["action"] == "forget" and as_json[0]["row_hash"] == head_hash


def test_an_edited_row_is_named(vault: Vault) -> None:
    some_actions(vault)
    tamper(vault, "UPDATE pii_audit SET reason = 'nothing to see' WHERE id = 3")
    code, out = verify(vault)
    assert code == 1
    assert "TAMPERED: row 3: its contents do not match its hash: the row was edited" in out


def test_an_edited_row_with_its_hash_recomputed_breaks_the_next_link(vault: Vault) -> None:
    some_actions(vault)
    with vault.connect() as conn:
        (row,) = [r for r in audit.latest(conn, vault.config, 10) if r.id == 3]
    edited = audit.AuditRow(**{**row.__dict__, "actor": "someone else"})
    new_hash = audit.row_hash(row.prev_hash or "", edited)
    tamper(
        vault,
        f"UPDATE pii_audit SET actor = 'someone else', row_hash = '{new_hash}' WHERE id = 3",
    )
    code, out = verify(vault)
    assert code == 1 and "TAMPERED: row 4: its prev_hash is not the hash of row 3" in out


def test_a_deleted_row_is_named_by_its_successor(vault: Vault) -> None:
    some_actions(vault)
    tamper(vault, "DELETE FROM pii_audit WHERE id = 2")
    code, out = verify(vault)
    assert code == 1
    assert (
        "TAMPERED: row 3: its prev_hash is not the hash of row 1, the row before it: a row"
        " before it was deleted or changed (ids 2..2 are missing)" in out
    )
    tamper(vault, "DELETE FROM pii_audit WHERE id = 1")
    code, out = verify(vault)
    assert code == 1 and "row 3: its prev_hash is not the start of the chain" in out


def test_an_anchor_exposes_a_truncated_tail_and_a_rewritten_chain(vault: Vault) -> None:
    some_actions(vault)
    code, out = verify(vault)
    anchor = out.split("head ")[1].split()[0]  # "5:<hash>": recorded somewhere else
    assert anchor.startswith("5:")

    tamper(vault, "DELETE FROM pii_audit WHERE id = 5")
    code, out = verify(vault)
    assert code == 0 and "warning: the id sequence is at 5 but the last row is 4" in out
    code, out = verify(vault, "--anchor", anchor)
    assert code == 1 and "row 5: recorded as an anchor but no longer in the table" in out

    # Rewrite row 2 and recompute every later hash: the chain is consistent again...
    with vault.connect() as conn:
        rows = list(audit.rows(conn, vault.config))
    prev = rows[0].row_hash or ""
    statements = []
    for row in rows[1:]:
        changed = audit.AuditRow(**{**row.__dict__, "reason": "rewritten", "prev_hash": prev})
        digest = audit.row_hash(prev, changed)
        statements.append(
            f"UPDATE pii_audit SET reason = 'rewritten', prev_hash = NULL, row_hash = '{digest}'"
            f" WHERE id = {row.id}"
        )
        prev = digest
    tamper(vault, *statements)
    with vault.connect() as conn:  # prev_hash is unique: set them in a second pass
        conn.execute("ALTER TABLE pii_audit DISABLE TRIGGER ALL")
        for row in rows[1:]:
            conn.execute(
                "UPDATE pii_audit SET prev_hash = (SELECT row_hash FROM pii_audit p"
                " WHERE p.id < pii_audit.id ORDER BY p.id DESC LIMIT 1) WHERE id = %s",
                (row.id,),
            )
        conn.execute("ALTER TABLE pii_audit ENABLE TRIGGER ALL")
    assert verify(vault)[0] == 0  # ...only an anchor recorded elsewhere shows it
    early = f"2:{rows[1].row_hash}"
    code, out = verify(vault, "--anchor", early)
    assert code == 1 and "row 2: its hash differs from the recorded anchor" in out
    assert verify(vault, "--anchor", "2:nothex")[0] == 2


def test_a_row_without_a_hash_is_refused_and_if_smuggled_in_named(vault: Vault) -> None:
    some_actions(vault, 2)
    insert = (
        "INSERT INTO pii_audit (actor, reason, action, tokens, succeeded, failed)"
        " VALUES ('x', 'y', 'reveal', '{}', 0, 0)"
    )
    with (
        vault.connect() as conn,
        pytest.raises(psycopg.errors.RaiseException, match="hash-chained"),
    ):
        conn.execute(insert)
    tamper(vault, insert)
    code, out = verify(vault)
    assert code == 1 and "has no hash: inserted bypassing the chain" in out


def test_concurrent_writers_make_one_linear_chain(vault: Vault) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with vault.connect() as conn:
                for i in range(15):
                    audit.record(conn, vault.config, note=f"w{n}", reason=f"r{i}", action="reveal")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    code, out = verify(vault)
    assert code == 0 and "ok: 120 rows" in out, out
    ats = [a for (a,) in vault.query("SELECT at FROM pii_audit ORDER BY id")]
    assert ats == sorted(ats)


def test_nothing_is_shown_or_changed_when_the_audit_row_cannot_be_written(
    vault: Vault,
) -> None:
    tokens = vault.add_login("u-1", "192.0.2.1", "d-1")
    with vault.connect() as conn:
        conn.execute(
            "CREATE FUNCTION no_audit() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'audit unavailable'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER no_audit BEFORE INSERT ON pii_audit"
            " FOR EACH ROW EXECUTE FUNCTION no_audit()"
        )
    shown = vault.cli(
        "reveal", tokens["ip"], "--reason", "r", "--private-key-file", str(vault.keys["vault.key"])
    )
    assert shown.exit_code != 0 and "192.0.2.1" not in shown.output
    assert isinstance(shown.exception, psycopg.errors.RaiseException)
    forgot = vault.cli("forget", tokens["ip"], "--reason", "r")
    assert forgot.exit_code != 0
    assert vault.query("SELECT count(*) FROM pii_vault") == [(2,)]
    assert vault.query("SELECT count(*) FROM pii_erasures") == [(0,)]
