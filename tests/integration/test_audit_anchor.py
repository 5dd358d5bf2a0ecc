"""The audit chain against its owner: `logins audit anchor` signs the head with the
auditor's Ed25519 key and writes it to a file and to S3 (moto's server on loopback, Object
Lock on one bucket); then the table's owner, a NOSUPERUSER login granted logins_owner,
rewrites history the way the issue found possible: disables the append-only trigger,
deletes the newest reveal row, resets the id sequence, rewrites actor and reason on every
row and recomputes every hash. `audit verify` alone says ok; against the anchor it fails
and names the row, and a forged or foreign anchor is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from connectors.postgres import roles
from logins.core import anchor as anchors
from logins.core import audit
from logins.dev.embedded import HOST, free_port
from tests.integration.rolekit import RoleDatabase, role_database
from tests.integration.vaultkit import Vault


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's S3 in server mode on a free loopback port; two buckets, one with Object Lock."""
    port = free_port()
    server = ThreadedMotoServer(ip_address=HOST, port=port)
    server.start()
    endpoint = f"http://{HOST}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="anchors-locked", ObjectLockEnabledForBucket=True)
    client.create_bucket(Bucket="anchors-plain")
    yield endpoint
    server.stop()


@pytest.fixture
def db(pg_admin_dsn: str, tmp_path: Path) -> Iterator[RoleDatabase]:
    with role_database(pg_admin_dsn, tmp_path) as database:
        yield database


def rewrite_as_owner(db: RoleDatabase, delete_id: int) -> None:
    """What the owner of pii_audit can do without being a superuser."""
    config = db.config
    with db.connect(roles.OWNER) as conn:
        assert conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = session_user"
        ).fetchone() == (False,)
        conn.execute("ALTER TABLE pii_audit DISABLE TRIGGER USER")
        conn.execute("DELETE FROM pii_audit WHERE id = %s", (delete_id,))
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('pii_audit', 'id'), %s)", (delete_id - 1,)
        )
        prev = audit.genesis()
        for row in list(audit.rows(conn, config)):
            changed = audit.AuditRow(
                **{**row.__dict__, "actor": "someone-else", "reason": "routine", "prev_hash": prev}
            )
            digest = audit.row_hash(prev, changed)
            conn.execute(
                "UPDATE pii_audit SET actor = 'someone-else', reason = 'routine',"
                " prev_hash = %s, row_hash = %s WHERE id = %s",
                (prev, digest, row.id),
            )
            prev = digest
        conn.execute("ALTER TABLE pii_audit ENABLE TRIGGER USER")


def test_a_rewrite_by_the_owner_fails_against_the_signed_anchor_and_names_the_row(
    db: RoleDatabase, s3: str, tmp_path: Path
) -> None:
    vault = Vault(db.env, db.keys, db.admin_dsn)
    tokens = vault.add_login("u-1", "192.0.2.1", "d-1")
    for i in range(4):
        shown = db.cli(
            roles.REVEALER, "reveal", tokens["ip"], "--reason", f"ticket {i}",
            "--private-key-file", str(db.keys["vault.key"]),
        )  # fmt: skip
        assert shown.exit_code == 0, shown.output
    keygen = db.cli(roles.AUDITOR, "audit", "keygen", str(tmp_path / "auditor"))
    assert keygen.exit_code == 0, keygen.output
    signing, public = tmp_path / "auditor/audit-anchor.key", tmp_path / "auditor/audit-anchor.pub"
    anchor_file = tmp_path / "head-4.json"
    to = [
        "audit", "anchor", "--signing-key-file", str(signing),
        "--to", str(anchor_file), "--to", "s3://anchors-locked/logins/head-4.json",
        "--to", "s3://anchors-plain/logins/head-4.json", "--s3-endpoint-url", s3,
    ]  # fmt: skip
    refused = db.cli(roles.AUDITOR, *to)  # red team finding 7: no Object Lock, not by name
    assert refused.exit_code == 1, refused.output
    assert (
        "s3://anchors-plain/logins/head-4.json: bucket anchors-plain has no Object Lock"
        in refused.output
    )
    assert "pass --allow-unlocked to write there anyway" in refused.output
    assert not anchor_file.exists()  # checked before anything is written
    anchored = db.cli(roles.AUDITOR, *to, "--allow-unlocked")
    assert anchored.exit_code == 0, anchored.output
    assert f"{anchor_file} (a local file is only as safe as its directory" in anchored.output
    head = vault.query("SELECT id, row_hash FROM pii_audit ORDER BY id DESC LIMIT 1")[0]
    assert f"anchored head {head[0]}:{head[1]} to {anchor_file}" in anchored.output
    assert "Object Lock COMPLIANCE until" in anchored.output
    assert "no Object Lock on this bucket" in anchored.output
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    locked = client.head_object(Bucket="anchors-locked", Key="logins/head-4.json")
    assert locked["ObjectLockMode"] == "COMPLIANCE"
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(
            Bucket="anchors-locked", Key="logins/head-4.json", VersionId=locked["VersionId"]
        )
    verify = ["audit", "verify", "--anchor-public-key-file", str(public), "--s3-endpoint-url", s3]
    assert db.cli(roles.AUDITOR, *verify, "--anchor", str(anchor_file)).exit_code == 0

    rewrite_as_owner(db, delete_id=4)
    alone = db.cli(roles.AUDITOR, "audit", "verify")
    assert alone.exit_code == 0 and alone.output.startswith("ok: 3 rows"), alone.output
    assert "warning" not in alone.output  # the sequence was reset too
    assert vault.query("SELECT DISTINCT actor, reason FROM pii_audit") == [
        ("someone-else", "routine")
    ]
    failed = db.cli(roles.AUDITOR, *verify, "--anchor", str(anchor_file))
    assert failed.exit_code == 1
    assert "TAMPERED: row 4: recorded as an anchor but no longer in the table" in failed.output

    # the next reveal takes id 4 again: the id is back, its hash is not the anchored one
    again = db.cli(
        roles.REVEALER, "reveal", tokens["ip"], "--reason", "after",
        "--private-key-file", str(db.keys["vault.key"]),
    )  # fmt: skip
    assert again.exit_code == 0
    assert vault.query("SELECT max(id) FROM pii_audit") == [(4,)]
    assert db.cli(roles.AUDITOR, "audit", "verify").exit_code == 0
    for anchor in (str(anchor_file), "s3://anchors-locked/logins/head-4.json"):
        failed = db.cli(roles.AUDITOR, *verify, "--anchor", anchor)
        assert failed.exit_code == 1, anchor
        assert (
            "TAMPERED: row 4: its hash differs from the recorded anchor: the chain was rewritten"
            in failed.output
        )


def test_a_forged_or_foreign_anchor_is_refused(db: RoleDatabase, tmp_path: Path) -> None:
    vault = Vault(db.env, db.keys, db.admin_dsn)
    tokens = vault.add_login("u-1", "192.0.2.1", "d-1")
    key = ["--private-key-file", str(db.keys["vault.key"])]
    for _ in range(2):
        db.cli(roles.REVEALER, "reveal", tokens["ip"], "--reason", "r", *key)
    for who in ("auditor", "stranger"):
        assert db.cli(roles.AUDITOR, "audit", "keygen", str(tmp_path / who)).exit_code == 0
    signing = tmp_path / "auditor/audit-anchor.key"
    path = tmp_path / "head.json"
    made = db.cli(
        roles.AUDITOR, "audit", "anchor", "--signing-key-file", str(signing), "--to", str(path)
    )
    assert made.exit_code == 0, made.output
    again = db.cli(
        roles.AUDITOR, "audit", "anchor", "--signing-key-file", str(signing), "--to", str(path)
    )
    assert again.exit_code == 1 and "anchors are never overwritten" in again.output

    def verify(anchor: Path, public: str = "auditor") -> str:
        result = db.cli(
            roles.AUDITOR, "audit", "verify", "--anchor", str(anchor),
            "--anchor-public-key-file", str(tmp_path / public / "audit-anchor.pub"),
        )  # fmt: skip
        assert result.exit_code != 0 or public == "auditor"
        return result.output

    assert verify(path).startswith("ok: ")
    assert "signed by key" in verify(path, public="stranger")
    document = json.loads(path.read_text())
    document["head"]["row_hash"] = "0" * 64  # the owner "corrects" the anchor to match
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    assert "the signature does not verify: altered" in verify(forged)
    unsigned = db.cli(roles.AUDITOR, "audit", "verify", "--anchor", str(path))
    assert unsigned.exit_code == 2 and "needs --anchor-public-key-file" in unsigned.output
    signing.chmod(0o644)
    loose = db.cli(
        roles.AUDITOR, "audit", "anchor", "--signing-key-file", str(signing), "--to", "x"
    )
    assert loose.exit_code == 1 and f"run `chmod 600 {signing}`" in loose.output


def test_anchor_refuses_to_sign_a_broken_chain(db: RoleDatabase, tmp_path: Path) -> None:
    vault = Vault(db.env, db.keys, db.admin_dsn)
    tokens = vault.add_login("u-1", "192.0.2.1", "d-1")
    db.cli(roles.REVEALER, "reveal", tokens["ip"], "--reason", "r",
           "--private-key-file", str(db.keys["vault.key"]))  # fmt: skip
    assert db.cli(roles.AUDITOR, "audit", "keygen", str(tmp_path / "a")).exit_code == 0
    with db.connect(roles.OWNER) as conn:
        conn.execute("ALTER TABLE pii_audit DISABLE TRIGGER USER")
        conn.execute("UPDATE pii_audit SET reason = 'nothing to see'")
    made = db.cli(
        roles.AUDITOR, "audit", "anchor", "--signing-key-file",
        str(tmp_path / "a/audit-anchor.key"), "--to", str(tmp_path / "head.json"),
    )  # fmt: skip
    assert made.exit_code == 1 and "not anchoring a broken chain" in made.output
    assert not (tmp_path / "head.json").exists()


def reveal(db: RoleDatabase, token: str, times: int) -> None:
    for i in range(times):
        shown = db.cli(
            roles.REVEALER, "reveal", token, "--reason", f"ticket {i}",
            "--private-key-file", str(db.keys["vault.key"]),
        )  # fmt: skip
        assert shown.exit_code == 0, shown.output


def delete_after(db: RoleDatabase, last_kept: int, *, reset_sequence: bool) -> None:
    """The owner deletes every audit row after `last_kept` (and may reset the id sequence)."""
    with db.connect(roles.OWNER) as conn:
        conn.execute("ALTER TABLE pii_audit DISABLE TRIGGER USER")
        conn.execute("DELETE FROM pii_audit WHERE id > %s", (last_kept,))
        if reset_sequence:
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('pii_audit', 'id'), %s)", (last_kept,)
            )
        conn.execute("ALTER TABLE pii_audit ENABLE TRIGGER USER")


def test_an_older_anchor_written_again_as_the_newest_version_is_refused_as_a_replay(
    db: RoleDatabase, s3: str, tmp_path: Path
) -> None:
    """Issue 18, item 3: with Object Lock the day-2 anchor cannot be deleted, but the day-1
    anchor can be written again as a new version of day2.json, making it the newest; after
    the owner deleted the rows after day 1 and reset the sequence, verify said ok."""
    vault = Vault(db.env, db.keys, db.admin_dsn)
    tokens = vault.add_login("u-1", "192.0.2.1", "d-1")
    assert db.cli(roles.AUDITOR, "audit", "keygen", str(tmp_path / "auditor")).exit_code == 0
    signing, public = tmp_path / "auditor/audit-anchor.key", tmp_path / "auditor/audit-anchor.pub"
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")

    def anchor(day: int) -> str:
        made = db.cli(
            roles.AUDITOR, "audit", "anchor", "--signing-key-file", str(signing),
            "--to", f"s3://anchors-locked/replay/day{day}.json", "--s3-endpoint-url", s3,
        )  # fmt: skip
        assert made.exit_code == 0, made.output
        return made.output

    reveal(db, tokens["ip"], 4)
    assert "(anchor #1)" in anchor(1)
    reveal(db, tokens["ip"], 2)
    assert "(anchor #2)" in anchor(2)  # it follows day1.json, found under the same prefix
    day1 = client.get_object(Bucket="anchors-locked", Key="replay/day1.json")["Body"].read()
    day2 = client.get_object(Bucket="anchors-locked", Key="replay/day2.json")["Body"].read()
    first, second = json.loads(day1)["head"], json.loads(day2)["head"]
    assert (first["id"], first["seq"], first["prev"]) == (4, 1, None)
    assert (second["id"], second["seq"]) == (6, 2)
    assert second["prev"] == anchors.Head(**first).digest()

    verify = ["audit", "verify", "--anchor-public-key-file", str(public), "--s3-endpoint-url", s3]
    day2_url = "s3://anchors-locked/replay/day2.json"
    assert db.cli(roles.AUDITOR, *verify, "--anchor", day2_url).exit_code == 0

    # The owner deletes the rows after day 1 and resets the sequence; the bucket's owner
    # writes the day-1 anchor again as the newest version of day2.json (Object Lock allows a
    # new version; the locked one stays).
    delete_after(db, 4, reset_sequence=True)
    assert db.cli(roles.AUDITOR, "audit", "verify").output.startswith("ok: 4 rows")
    client.put_object(Bucket="anchors-locked", Key="replay/day2.json", Body=day1)
    versions = client.list_object_versions(Bucket="anchors-locked", Prefix="replay/day2.json")
    assert len(versions["Versions"]) == 2
    assert client.get_object(Bucket="anchors-locked", Key="replay/day2.json")["Body"].read() == day1

    replayed = db.cli(roles.AUDITOR, *verify, "--anchor", day2_url)
    assert replayed.exit_code == 1, replayed.output
    # the attacker's new version has no retention: said too (the locked ones are not named)
    assert "NOT LOCKED: s3://anchors-locked/replay/day2.json (version " in replayed.output
    assert replayed.output.count("NOT LOCKED: ") == 1
    assert (
        f"TAMPERED: {day2_url} is anchor #1 (head 4, at {first['at']}), but"
        " s3://anchors-locked/replay/day2.json (version " in replayed.output
    )
    assert (
        f"is anchor #2 (head 6, at {second['at']}): an older anchor was written again as the"
        " newest (a replay)" in replayed.output
    )
    # Day 1's own object is refused the same way: a newer anchor is stored beside it.
    older = db.cli(roles.AUDITOR, *verify, "--anchor", "s3://anchors-locked/replay/day1.json")
    assert older.exit_code == 1 and "(a replay)" in older.output

    # ... and so is the day-1 anchor written as a new object beside them.
    client.put_object(Bucket="anchors-locked", Key="replay/day3.json", Body=day1)
    beside = db.cli(roles.AUDITOR, *verify, "--anchor", "s3://anchors-locked/replay/day3.json")
    assert beside.exit_code == 1 and "is anchor #2 (head 6" in beside.output

    # A replay under a prefix the attacker alone writes is caught by --at-least.
    client.put_object(Bucket="anchors-plain", Key="elsewhere/day2.json", Body=day1)
    moved = "s3://anchors-plain/elsewhere/day2.json"
    unlocked = db.cli(roles.AUDITOR, *verify, "--anchor", moved)
    assert unlocked.exit_code == 1 and "NOT LOCKED: " in unlocked.output  # and not by name
    accepted = [*verify, "--allow-unlocked"]
    assert db.cli(roles.AUDITOR, *accepted, "--anchor", moved).exit_code == 0
    known = db.cli(roles.AUDITOR, *accepted, "--anchor", moved, "--at-least", "2")
    assert known.exit_code == 1
    assert (
        f"TAMPERED: {moved} is anchor #1 (head 4, at {first['at']}), older than --at-least 2"
        in (known.output)
    )


def test_rows_deleted_after_the_anchored_head_fail_verify_against_the_anchor(
    db: RoleDatabase, tmp_path: Path
) -> None:
    """Without the sequence reset, rows deleted after the last anchor: verify alone warns
    (exit 0); verify against the anchor exits 1."""
    vault = Vault(db.env, db.keys, db.admin_dsn)
    tokens = vault.add_login("u-1", "192.0.2.1", "d-1")
    reveal(db, tokens["ip"], 3)
    assert db.cli(roles.AUDITOR, "audit", "keygen", str(tmp_path / "auditor")).exit_code == 0
    (tmp_path / "anchors").mkdir()
    made = db.cli(
        roles.AUDITOR, "audit", "anchor", "--signing-key-file",
        str(tmp_path / "auditor/audit-anchor.key"), "--to", str(tmp_path / "anchors/day1.json"),
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    reveal(db, tokens["ip"], 2)
    delete_after(db, 3, reset_sequence=False)
    alone = db.cli(roles.AUDITOR, "audit", "verify")
    assert alone.exit_code == 0 and "warning: the id sequence is at 5" in alone.output
    anchored = db.cli(
        roles.AUDITOR, "audit", "verify", "--anchor", str(tmp_path / "anchors/day1.json"),
        "--anchor-public-key-file", str(tmp_path / "auditor/audit-anchor.pub"),
    )  # fmt: skip
    assert anchored.exit_code == 1, anchored.output
    assert "TAMPERED: rows are missing after the anchored head: the id sequence is at 5" in (
        anchored.output
    )


def test_a_replay_on_a_bucket_without_object_lock_fails_verification(
    db: RoleDatabase, s3: str, tmp_path: Path
) -> None:
    """Red team finding 7 (tests/attack/test_anchor_replay.py on `attack`): on a versioned
    bucket without Object Lock the owner deletes every version of day2.json, writes day 1 in
    its place and truncates the rows: verify said ok. Now `audit anchor` refuses that bucket
    unless --allow-unlocked, and verify fails naming the version that is not retained."""
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    client.create_bucket(Bucket="anchors-versioned")
    client.put_bucket_versioning(
        Bucket="anchors-versioned", VersioningConfiguration={"Status": "Enabled"}
    )
    vault = Vault(db.env, db.keys, db.admin_dsn)
    tokens = vault.add_login("u-1", "192.0.2.1", "d-1")
    assert db.cli(roles.AUDITOR, "audit", "keygen", str(tmp_path / "a")).exit_code == 0
    signing, public = tmp_path / "a/audit-anchor.key", tmp_path / "a/audit-anchor.pub"

    def anchor(day: int, *extra: str) -> tuple[int, str]:
        made = db.cli(
            roles.AUDITOR, "audit", "anchor", "--signing-key-file", str(signing),
            "--to", f"s3://anchors-versioned/r/day{day}.json", "--s3-endpoint-url", s3, *extra,
        )  # fmt: skip
        return made.exit_code, made.output

    reveal(db, tokens["ip"], 4)
    code, said = anchor(1)
    assert code == 1 and "bucket anchors-versioned has no Object Lock" in said
    assert "Versions" not in client.list_object_versions(Bucket="anchors-versioned")
    assert anchor(1, "--allow-unlocked")[0] == 0
    reveal(db, tokens["ip"], 2)
    code, said = anchor(2, "--allow-unlocked")
    assert code == 0 and "no Object Lock on this bucket (--allow-unlocked)" in said
    day1 = client.get_object(Bucket="anchors-versioned", Key="r/day1.json")["Body"].read()
    verify = ["audit", "verify", "--anchor-public-key-file", str(public), "--s3-endpoint-url", s3]
    day2_url = "s3://anchors-versioned/r/day2.json"
    before = db.cli(roles.AUDITOR, *verify, "--anchor", day2_url)
    assert before.exit_code == 1, before.output  # unlocked, even before any attack
    assert "NOT LOCKED: s3://anchors-versioned/r/day2.json (version " in before.output
    assert "it has no Object Lock retention" in before.output

    delete_after(db, 4, reset_sequence=True)
    for v in client.list_object_versions(Bucket="anchors-versioned", Prefix="r/day2.json")[
        "Versions"
    ]:
        client.delete_object(
            Bucket="anchors-versioned", Key="r/day2.json", VersionId=v["VersionId"]
        )
    client.put_object(Bucket="anchors-versioned", Key="r/day2.json", Body=day1)
    replayed = db.cli(roles.AUDITOR, *verify, "--anchor", day2_url)
    assert replayed.exit_code == 1, replayed.output
    assert "NOT LOCKED: s3://anchors-versioned/r/day2.json (version " in replayed.output
    assert "so the bucket's owner could delete or replace it" in replayed.output
    assert "ok:" not in replayed.output
    # accepted by name: the replay goes through, with a warning naming the missing lock
    accepted = db.cli(roles.AUDITOR, *verify, "--anchor", day2_url, "--allow-unlocked")
    assert accepted.exit_code == 0, accepted.output
    assert "warning: s3://anchors-versioned/r/day2.json (version " in accepted.output
    assert "(accepted: --allow-unlocked)" in accepted.output


def test_a_file_anchor_says_it_is_only_as_safe_as_its_directory(
    db: RoleDatabase, tmp_path: Path
) -> None:
    vault = Vault(db.env, db.keys, db.admin_dsn)
    reveal(db, vault.add_login("u-1", "192.0.2.1", "d-1")["ip"], 1)
    assert db.cli(roles.AUDITOR, "audit", "keygen", str(tmp_path / "a")).exit_code == 0
    target = tmp_path / "anchors/day1.json"
    target.parent.mkdir()
    made = db.cli(
        roles.AUDITOR, "audit", "anchor", "--signing-key-file",
        str(tmp_path / "a/audit-anchor.key"), "--to", str(target),
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "a local file is only as safe as its directory" in made.output
    checked = db.cli(
        roles.AUDITOR, "audit", "verify", "--anchor", str(target),
        "--anchor-public-key-file", str(tmp_path / "a/audit-anchor.pub"),
    )  # fmt: skip
    assert checked.exit_code == 0, checked.output
    assert f"note: {target}: a local file is only as safe as its directory" in checked.output


def test_a_version_under_governance_retention_only_is_not_locked_enough(
    db: RoleDatabase, s3: str, tmp_path: Path
) -> None:
    """GOVERNANCE retention can be lifted by anyone allowed s3:BypassGovernanceRetention (the
    bucket's owner among them): the same anchor written again under it fails verification."""
    vault = Vault(db.env, db.keys, db.admin_dsn)
    reveal(db, vault.add_login("u-1", "192.0.2.1", "d-1")["ip"], 1)
    assert db.cli(roles.AUDITOR, "audit", "keygen", str(tmp_path / "a")).exit_code == 0
    url = "s3://anchors-locked/governance/day1.json"
    made = db.cli(
        roles.AUDITOR, "audit", "anchor", "--signing-key-file",
        str(tmp_path / "a/audit-anchor.key"), "--to", url, "--s3-endpoint-url", s3,
    )  # fmt: skip
    assert made.exit_code == 0 and "Object Lock COMPLIANCE until" in made.output, made.output
    verify = [
        "audit", "verify", "--anchor", url, "--s3-endpoint-url", s3,
        "--anchor-public-key-file", str(tmp_path / "a/audit-anchor.pub"),
    ]  # fmt: skip
    assert db.cli(roles.AUDITOR, *verify).exit_code == 0
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    body = client.get_object(Bucket="anchors-locked", Key="governance/day1.json")["Body"].read()
    client.put_object(
        Bucket="anchors-locked", Key="governance/day1.json", Body=body,
        ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=datetime(2100, 1, 1),
    )  # fmt: skip
    weak = db.cli(roles.AUDITOR, *verify)
    assert weak.exit_code == 1, weak.output
    assert "its retention is GOVERNANCE, which can be lifted; not COMPLIANCE" in weak.output
    assert weak.output.count("NOT LOCKED: ") == 1  # the COMPLIANCE version is fine


def test_an_ended_retention_is_a_note_on_an_older_anchor_and_a_failure_on_the_one_read(
    db: RoleDatabase, s3: str, tmp_path: Path
) -> None:
    """An older anchor whose retention has ended can be deleted now, which hides no replay of
    the newest: a note. The version verify reads must still be retained: a failure."""
    vault = Vault(db.env, db.keys, db.admin_dsn)
    tokens = vault.add_login("u-1", "192.0.2.1", "d-1")
    assert db.cli(roles.AUDITOR, "audit", "keygen", str(tmp_path / "a")).exit_code == 0
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    for day in (1, 2):
        reveal(db, tokens["ip"], 1)
        made = db.cli(
            roles.AUDITOR, "audit", "anchor", "--signing-key-file",
            str(tmp_path / "a/audit-anchor.key"), "--s3-endpoint-url", s3,
            "--to", f"s3://anchors-locked/ended/day{day}.json",
        )  # fmt: skip
        assert made.exit_code == 0, made.output
    verify = [
        "audit", "verify", "--s3-endpoint-url", s3,
        "--anchor-public-key-file", str(tmp_path / "a/audit-anchor.pub"),
    ]  # fmt: skip

    def rewrite_with_ended_retention(key: str) -> None:
        body = client.get_object(Bucket="anchors-locked", Key=key)["Body"].read()
        client.put_object(
            Bucket="anchors-locked", Key=key, Body=body,
            ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=datetime(2020, 1, 1),
        )  # fmt: skip

    rewrite_with_ended_retention("ended/day1.json")
    day2 = db.cli(roles.AUDITOR, *verify, "--anchor", "s3://anchors-locked/ended/day2.json")
    assert day2.exit_code == 0, day2.output
    assert day2.output.startswith("ok: ")
    assert "note: s3://anchors-locked/ended/day1.json (version " in day2.output
    assert "its Object Lock retention ended 2020-01-01" in day2.output

    rewrite_with_ended_retention("ended/day2.json")
    ended = db.cli(roles.AUDITOR, *verify, "--anchor", "s3://anchors-locked/ended/day2.json")
    assert ended.exit_code == 1, ended.output
    assert "NOT LOCKED: s3://anchors-locked/ended/day2.json (version " in ended.output
    assert "its Object Lock retention ended 2020-01-01" in ended.output
