"""Recovery and erasure through the CLI against a real PostgreSQL: reveal one token, a list
(file or stdin) and a user's values; tampering in the database is reported, never shown;
forget erases for good, by token or by user (shared values kept unless asked), rejected
bodies included, leaving random markers where the tokens were; a later login with the same
value is new data, not linked to the erased one."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from logins.dev.embedded import EmbeddedSqs
from logins.dev.seed import send_bodies
from tests.helpers import REPO, run
from tests.integration.vaultkit import Vault, vault

__all__ = ["vault"]

KEY = "--private-key-file"


def test_reveal_one_a_list_from_a_file_or_stdin_and_a_user(vault: Vault, tmp_path) -> None:
    a = vault.add_login("u-1", "203.0.113.7", "111-22-3333")
    b = vault.add_login("u-2", "2001:db8::7", "444-55-6666")

    code, shown = vault.reveal_json(a["ip"])
    assert code == 0 and shown == [
        {"token": a["ip"], "field": "ip", "value": "203.0.113.7", "error": None}
    ]

    listing = tmp_path / "tokens.txt"
    listing.write_text(f"# tokens from a ticket\n{a['device_id']}\n\n{b['ip']}\n{a['device_id']}\n")
    code, shown = vault.reveal_json("--file", str(listing))
    assert code == 0
    assert [(r["token"], r["value"]) for r in shown] == [
        (a["device_id"], "111-22-3333"),
        (b["ip"], "2001:db8::7"),
    ]  # each token once, in the order given

    code, shown = vault.reveal_json("--file", "-", input=f"{b['device_id']}\n")
    assert code == 0 and [r["value"] for r in shown] == ["444-55-6666"]

    code, shown = vault.reveal_json("--user-id", "u-1")
    assert code == 0
    assert {(r["field"], r["value"]) for r in shown} == {
        ("ip", "203.0.113.7"),
        ("device_id", "111-22-3333"),
    }

    table = vault.cli(
        "reveal", "--user-id", "u-2", KEY, str(vault.keys["vault.key"]), "--reason", "ticket 9"
    )
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["token", "field", "value"] and set(lines[1]) <= {"-", " "}
    assert any(b["ip"] in line and "2001:db8::7" in line for line in lines[2:])

    audit = vault.query(
        "SELECT actor, reason, action, tokens, succeeded, detail, note FROM pii_audit ORDER BY id"
    )
    assert len(audit) == 5
    entry = dict(vault.query("SELECT token, entry_id::text FROM pii_vault"))
    # the audit names vault entries by their random ids, never by token; the actor is the
    # database login, --actor only a note
    assert [row[3] for row in audit] == [[]] * 5
    assert audit[1][5]["entries"] == [entry[a["device_id"]], entry[b["ip"]]]
    assert audit[1][5]["asked"] == 2
    assert {k: audit[3][5][k] for k in ("user", "tokens_in_rows")} == {
        "user": "u-1",
        "tokens_in_rows": 2,
    }
    assert sorted(audit[3][5]["entries"]) == sorted([entry[a["ip"]], entry[a["device_id"]]])
    assert {(row[0], row[6]) for row in audit[:4]} == {("postgres", "tester")}
    assert audit[4][1] == "ticket 9" and audit[4][4] == 2 and audit[4][6] is None


def test_reveal_needs_a_reason_and_tokens(vault: Vault) -> None:
    empty = vault.cli("reveal", "a.b", KEY, str(vault.keys["vault.key"]), "--reason", "  ")
    assert empty.exit_code == 2 and "--reason must say why" in empty.output
    nothing = vault.cli("reveal", KEY, str(vault.keys["vault.key"]), "--reason", "r")
    assert nothing.exit_code == 2 and "give tokens, --file or --user-id" in nothing.output
    nobody = vault.reveal_json("--user-id", "nobody")
    assert nobody == (1, [])
    assert vault.query("SELECT count(*) FROM pii_audit") == [(1,)]  # the lookup is on record


def test_the_table_escapes_what_would_move_the_cursor(vault: Vault) -> None:
    sneaky = "dev\x1b[2J\rreal-id\u200b\n"
    tokens = vault.add_login("u-1", "198.51.100.1", sneaky)
    code, shown = vault.reveal_json(tokens["device_id"])
    assert code == 0 and shown[0]["value"] == sneaky  # JSON is exact
    table = vault.cli(
        "reveal", tokens["device_id"], KEY, str(vault.keys["vault.key"]), "--reason", "r"
    )
    assert "\x1b" not in table.stdout and "\r" not in table.stdout
    assert "dev\\x1b[2J\\rreal-id\\u200b\\n" in table.stdout


def test_ciphertexts_swapped_in_the_database_are_reported_not_shown(vault: Vault) -> None:
    a = vault.add_login("u-1", "192.0.2.10", "aaa-11-1111")
    b = vault.add_login("u-2", "192.0.2.20", "bbb-22-2222")
    with vault.connect() as conn:
        conn.execute(
            "UPDATE pii_vault v SET sealed = o.sealed FROM pii_vault o"
            " WHERE (v.token, o.token) IN ((%s, %s), (%s, %s))",
            (a["ip"], b["ip"], b["ip"], a["ip"]),
        )
    code, shown = vault.reveal_json(a["ip"], b["ip"], a["device_id"])
    assert code == 1
    assert [r["error"] for r in shown[:2]] == [
        f"token {a['ip']}: the vault entry was sealed for another token",
        f"token {b['ip']}: the vault entry was sealed for another token",
    ]
    assert [r["value"] for r in shown] == [None, None, "aaa-11-1111"]
    table = vault.cli("reveal", a["ip"], KEY, str(vault.keys["vault.key"]), "--reason", "r")
    assert table.exit_code == 1 and "192.0.2" not in table.stdout
    assert vault.query("SELECT succeeded, failed FROM pii_audit ORDER BY id")[0] == (1, 2)


def test_a_value_sealed_by_someone_else_for_the_right_token_fails_the_token_check(
    vault: Vault,
) -> None:
    """The public key is not secret: with write access to the vault, anyone can seal a value
    of their choosing for an existing token. Recomputing the token catches it."""
    a = vault.add_login("u-1", "192.0.2.10", "aaa-11-1111")
    forged = vault.sealer.seal("ip", a["ip"], "192.0.2.99")
    with vault.connect() as conn:
        conn.execute("UPDATE pii_vault SET sealed = %s WHERE token = %s", (forged, a["ip"]))
    code, shown = vault.reveal_json(a["ip"])
    assert (code, shown[0]["value"], shown[0]["error"]) == (
        1,
        None,
        "the opened value does not match its token",
    )


def test_forget_tokens_erases_for_good_and_reveal_says_when(vault: Vault) -> None:
    a = vault.add_login("u-1", "192.0.2.10", "aaa-11-1111")
    vault.add_login("u-1", "192.0.2.10", "aaa-11-1111")  # the same login again: same tokens
    dry = vault.cli("forget", a["ip"], "--reason", "GDPR 17", "--dry-run")
    assert dry.exit_code == 0 and "would erase 1 vault entries" in dry.stdout
    assert vault.query("SELECT count(*) FROM pii_vault") == [(2,)]
    assert vault.query("SELECT count(*) FROM pii_audit") == [(0,)]

    entry = vault.query("SELECT entry_id::text FROM pii_vault WHERE token = %s", a["ip"])[0][0]
    done = vault.cli("forget", a["ip"], "--reason", "GDPR 17", "--actor", "dpo")
    assert done.exit_code == 0, done.output
    assert "erased 1 vault entries (audit row 1)" in done.stdout
    assert vault.query("SELECT token FROM pii_vault") == [(a["device_id"],)]
    # the token is gone from the rows; a random marker, the same in both, keeps counts working
    assert vault.query("SELECT count(*), count(DISTINCT masked_ip) FROM user_logins") == [(2, 1)]
    ((marker,),) = vault.query("SELECT DISTINCT masked_ip FROM user_logins")
    assert re.fullmatch(r"erased:[0-9a-f]{32}", marker)
    assert vault.query("SELECT actor, note, action, tokens, succeeded FROM pii_audit") == [
        ("postgres", "dpo", "forget", [], 1)
    ]
    (detail,) = vault.query("SELECT detail FROM pii_audit")[0]
    assert detail["entries"] == [entry] and detail["rows_rewritten"] == 2
    assert vault.query("SELECT marker, field, audit_id FROM pii_erasures") == [(marker, "ip", 1)]

    code, shown = vault.reveal_json(a["ip"], a["device_id"])
    assert code == 1 and shown[1]["value"] == "aaa-11-1111"
    assert shown[0]["error"] == "not in the vault (never sealed, or erased)"
    code, shown = vault.reveal_json("--user-id", "u-1")
    assert code == 1 and {r["token"]: r["value"] for r in shown} == {
        marker: None,
        a["device_id"]: "aaa-11-1111",
    }
    assert re.fullmatch(
        r"erased on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(logins forget\)",
        next(r["error"] for r in shown if r["token"] == marker),
    )
    never = a["ip"][:-4] + "0000"
    code, shown = vault.reveal_json(never)
    assert shown[0]["error"] == "not in the vault (never sealed, or erased)"

    bad = vault.cli("forget", "not-a-token", "--reason", "r")
    assert bad.exit_code == 2 and "not a token" in bad.output


def test_forget_a_user_keeps_values_other_users_share_unless_asked(vault: Vault) -> None:
    mine = vault.add_login("u-1", "192.0.2.10", "aaa-11-1111")
    vault.add_login("u-1", "192.0.2.11", "aaa-11-1111")
    theirs = vault.add_login("u-2", "192.0.2.10", "bbb-22-2222")  # the same ip (a NAT)
    only_mine = vault.tokenizer.token("ip", "192.0.2.11")

    first = vault.cli("forget", "--user-id", "u-1", "--reason", "erasure request", "--json")
    assert first.exit_code == 0, first.output
    (result,) = json.loads(first.stdout)
    assert sorted(result["erased"]) == sorted([mine["device_id"], only_mine])
    assert result["shared_kept"] == [mine["ip"]]
    assert result["rejected_unsearched"] == 0
    code, shown = vault.reveal_json(theirs["ip"])
    assert code == 0 and shown[0]["value"] == "192.0.2.10"  # u-2 still has their ip

    second = vault.cli(
        "forget", "--user-id", "u-1", "--include-shared", "--reason", "erasure request", "--json"
    )
    (result,) = json.loads(second.stdout)
    assert result["erased"] == [mine["ip"]] and result["shared_kept"] == []
    # what the first call erased left no token behind in u-1's rows to find again
    assert result["absent"] == []
    assert vault.query(
        "SELECT count(*) FROM user_logins WHERE user_id = 'u-1'"
        " AND (masked_ip NOT LIKE 'erased:%%' OR masked_device_id NOT LIKE 'erased:%%')"
    ) == [(0,)]
    code, shown = vault.reveal_json("--user-id", "u-2")
    assert code == 1  # the shared ip is erased for u-2 too: their row holds its marker
    ((marker,),) = vault.query("SELECT masked_ip FROM user_logins WHERE user_id = 'u-2'")
    assert marker.startswith("erased:")
    assert {r["token"]: r["value"] for r in shown} == {
        marker: None,
        theirs["device_id"]: "bbb-22-2222",
    }
    assert vault.query("SELECT count(*) FROM user_logins WHERE masked_ip = %s", theirs["ip"]) == [
        (0,)
    ]
    details = [d for (d,) in vault.query("SELECT detail FROM pii_audit WHERE action = 'forget'")]
    assert [d["requested"]["include_shared"] for d in details] == [False, True]
    assert details[0]["requested"]["shared_kept"] == 1


def test_forget_a_user_erases_their_sealed_rejected_bodies_with_the_key(vault: Vault) -> None:
    vault.add_login("u-1", "192.0.2.10", "aaa-11-1111")
    theirs = [
        vault.add_rejected('{"user_id": "u-1", "ip": "192.0.2.10"}'),
        vault.add_rejected('{"nested": {"who": ["u-1"]}, "device_id": "aaa-11-1111"}'),
        vault.add_rejected("not json, user u-1 at 192.0.2.10"),
    ]
    others = [
        vault.add_rejected('{"user_id": "u-10", "ip": "192.0.2.99"}'),
        vault.add_rejected("user u-12, not u-1x"),
        vault.add_rejected('{"user_id": "u-2"}'),
    ]
    without_key = vault.cli("forget", "--user-id", "u-1", "--reason", "r", "--json")
    (result,) = json.loads(without_key.stdout)
    assert result["rejected_erased"] == [] and result["rejected_unsearched"] == 6
    assert without_key.stderr == ""  # nothing searched: no progress
    assert "not searched: 6" in vault.cli("forget", "--user-id", "u-1", "--reason", "r").stdout

    dry = vault.cli(
        "forget", "--user-id", "u-1", "--reason", "r", KEY, str(vault.keys["vault.key"]),
        "--dry-run",
    )  # fmt: skip
    assert "rejected bodies naming the user, to erase: 3" in dry.stdout
    assert "forget: rejected bodies searched: 6/6 done in" in dry.stderr  # progress, not a tty
    assert "would erase 0 vault entries" in dry.stdout  # erased by the calls above
    assert vault.query(
        "SELECT count(*) FROM user_logins_rejected WHERE body_erased_at IS NULL"
    ) == [(6,)]

    with_key = vault.cli(
        "forget", "--user-id", "u-1", "--reason", "r", KEY, str(vault.keys["vault.key"]), "--json"
    )
    (result,) = json.loads(with_key.stdout)
    assert sorted(result["rejected_erased"]) == sorted(theirs)
    rows = dict(
        vault.query(
            "SELECT message_id, octet_length(sealed_body) = 0 AND body_erased_at IS NOT NULL"
            " FROM user_logins_rejected"
        )
    )
    assert rows == {**dict.fromkeys(theirs, True), **dict.fromkeys(others, False)}
    opener = vault.opener
    for message_id, sealed in vault.query(
        "SELECT message_id, sealed_body FROM user_logins_rejected WHERE message_id = ANY(%s)",
        others,
    ):
        assert "u-1" not in opener.open_rejected(bytes(sealed), message_id=message_id).split('"')


def test_an_erased_value_that_comes_back_is_new_data_not_linked_to_the_erased_one(
    sqs: EmbeddedSqs, queue_url: str, queue_vault: Callable[..., Vault]
) -> None:
    """The pipeline sees the erased ip again: the new row carries its ordinary token and the
    value is sealed again (it is a new login), while the erased row keeps its marker, which
    nothing links to the new token."""
    v = queue_vault()
    login = {"user_id": "u-1", "app_version": "2.3.0", "device_type": "ios", "locale": "US"}
    send_bodies(
        sqs.client(), queue_url, [json.dumps({**login, "ip": "192.0.2.10", "device_id": "d-1"})]
    )
    run(v.config)
    token = v.tokenizer.token("ip", "192.0.2.10")
    assert v.cli("forget", token, "--reason", "r").exit_code == 0

    send_bodies(
        sqs.client(), queue_url, [json.dumps({**login, "ip": "192.0.2.10", "device_id": "d-2"})]
    )
    run(v.config)
    rows = v.query("SELECT masked_ip FROM user_logins ORDER BY sent_at")
    assert rows[0][0].startswith("erased:") and rows[1][0] == token
    assert v.query("SELECT count(*) FROM pii_vault WHERE token = %s", token) == [(1,)]
    code, shown = v.reveal_json(token)
    assert code == 0 and shown[0]["value"] == "192.0.2.10"
    code, shown = v.reveal_json(rows[0][0])
    assert code == 1 and shown[0]["error"].startswith("erased on ")


def test_forget_a_user_finds_their_rejected_bodies_whatever_the_json_says(vault: Vault) -> None:
    """The matching rules of logins.pii.erasure.names_user, end to end: a number where the id's
    string belongs, another case, a duplicate key, JSON escapes, a body that is not JSON."""
    theirs = [
        vault.add_rejected('{"user_id": 4711, "ip": "192.0.2.10"}'),
        vault.add_rejected('{"user_id": 4.711e3}'),
        vault.add_rejected('{"user_id": "x", "user_id": "4711"}'),
        vault.add_rejected('{"USER_ID": "\\u0034711"}'),
        vault.add_rejected("user_id=4711&ip=192.0.2.10"),
    ]
    others = [
        vault.add_rejected('{"user_id": 47110}'),
        vault.add_rejected('{"app_version": "4711.2"}'),
        vault.add_rejected('{"user_id": "u-4711x"}'),
    ]
    done = vault.cli(
        "forget", "--user-id", "4711", "--reason", "r", KEY, str(vault.keys["vault.key"]), "--json"
    )
    assert done.exit_code == 0, done.output
    (result,) = json.loads(done.stdout)
    assert sorted(result["rejected_erased"]) == sorted(theirs)
    emptied = dict(vault.query("SELECT message_id, octet_length(sealed_body) = 0 FROM"
                               " user_logins_rejected"))  # fmt: skip
    assert emptied == {**dict.fromkeys(theirs, True), **dict.fromkeys(others, False)}


def test_purge_empties_sealed_bodies_past_the_retention_on_record(vault: Vault, tmp_path) -> None:
    old = [vault.add_rejected(f'{{"ip": "198.51.100.{i}"}}') for i in range(3)]
    recent = [vault.add_rejected('{"ip": "198.51.100.9"}'), vault.add_rejected("x")]
    with vault.connect() as conn:
        conn.execute(
            "UPDATE user_logins_rejected SET rejected_at = now() - interval '31 days'"
            " WHERE message_id = ANY(%s)",
            (old,),
        )
    dry = vault.cli("purge", "--dry-run", "--json")
    assert dry.exit_code == 0 and json.loads(dry.stdout)["purged"] == 3
    assert vault.query("SELECT count(*) FROM pii_audit") == [(0,)]

    done = vault.cli("purge")
    assert done.exit_code == 0, done.output
    assert "purged 3 sealed rejected bodies older than 30 days" in done.stdout
    rows = dict(
        vault.query(
            "SELECT message_id, octet_length(sealed_body) = 0 AND body_erased_at IS NOT NULL"
            " FROM user_logins_rejected"
        )
    )
    assert rows == {**dict.fromkeys(old, True), **dict.fromkeys(recent, False)}
    assert vault.query("SELECT count(*) FROM user_logins_rejected") == [(5,)]  # rows stay
    ((action, succeeded, detail),) = vault.query("SELECT action, succeeded, detail FROM pii_audit")
    assert (action, succeeded, detail["retention_days"]) == ("purge", 3, 30)
    again = vault.cli("purge")
    assert "purged 0 sealed rejected bodies" in again.stdout  # idempotent, still on record

    shorter = vault.cli("purge", LOGINS_REJECTED_RETENTION_DAYS="1")
    assert shorter.exit_code == 0 and "purged 0" in shorter.stdout  # the recent ones are today's
    forever = tmp_path / "forever.yaml"
    forever.write_text(
        "extends: " + str(REPO / "config/local.yaml") + "\nsink:\n  rejected_retention_days: null\n"
    )
    kept = vault.cli("purge", LOGINS_CONFIG=str(forever))
    assert kept.exit_code == 2 and "kept forever" in kept.output
