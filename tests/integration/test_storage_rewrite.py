"""The storage step of erasure (issue 18, item 7), on the suite's real PostgreSQL, reading the
tables' files on disk as someone with the host's disk (or a base backup of it) would.

After `forget`, the erased user's old row versions (their ip and device tokens), the vault's
ciphertexts and the sealed rejected body are still in the tables' files: the rows are dead,
the bytes are not. `logins storage rewrite`, run as the tables' owner, rewrites the tables:
then no token or ciphertext of the erased values is in any of their files (heap, TOAST,
indexes), and the user id and each erasure marker are only where the live row keeps them.
The WAL still holds them, as the docs and `forget`'s output say. A plain VACUUM is not
enough: a row that was the newest on its page keeps its bytes in the page's free space."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.postgres import roles
from tests.helpers import one
from tests.integration.rolekit import RoleDatabase, role_database
from tests.integration.vaultkit import Vault

ERASED_USER = "u-erased-7f3a9c"
IP, DEVICE = "203.0.113.77", "999-88-7777"
TABLES = ("user_logins", "user_logins_rejected", "pii_vault", "pii_token_aliases")


@pytest.fixture
def db(pg_admin_dsn: str, tmp_path: Path) -> Iterator[RoleDatabase]:
    with role_database(pg_admin_dsn, tmp_path) as database:
        yield database


def files_of(db: RoleDatabase, table: str, heap_only: bool = False) -> bytes:
    """The bytes of `table`'s files (its heap; unless `heap_only`, also its TOAST table, the
    TOAST index and every index), after a CHECKPOINT has written every dirty page."""
    with db.connect("superuser") as conn:
        conn.execute("CHECKPOINT")
        data_dir = Path(one(conn, "SHOW data_directory"))
        relations = [
            r
            for (r,) in conn.execute(
                "WITH t AS (SELECT oid, reltoastrelid FROM pg_class"
                "           WHERE oid = to_regclass(quote_ident(%(t)s)))"
                " SELECT pg_relation_filepath(oid) FROM t"
                " UNION ALL SELECT pg_relation_filepath(reltoastrelid) FROM t WHERE NOT %(h)s"
                " UNION ALL SELECT pg_relation_filepath(indexrelid) FROM pg_index, t"
                "  WHERE NOT %(h)s AND indrelid IN (t.oid, t.reltoastrelid)",
                {"t": table, "h": heap_only},
            ).fetchall()
            if r is not None
        ]
    assert relations
    found = b""
    for relation in relations:
        main = data_dir / relation
        for segment in [main, *sorted(main.parent.glob(f"{main.name}.[0-9]*"))]:
            found += segment.read_bytes()
    return found


def other_users(db: RoleDatabase, n: int) -> None:
    """`n` other users' rows and vault entries (token-shaped, each distinct), in one go."""
    with db.connect("superuser") as conn:
        conn.execute(
            "INSERT INTO user_logins (user_id, device_type, masked_ip, masked_device_id, locale,"
            " app_version, app_version_text, message_id, sent_at, create_date)"
            " SELECT 'u-' || i, 'ios', '0a1b2c3d.' || md5(i || 'ip'), '0a1b2c3d.' || md5(i || 'd'),"
            " 'US', 20300, '2.3.0', gen_random_uuid()::text, now(), current_date"
            " FROM generate_series(1, %s) i",
            (n,),
        )
        conn.execute(
            "INSERT INTO pii_vault (token, field, sealed, vault_key_id)"
            " SELECT '0a1b2c3d.' || md5(i || 'ip'), 'ip', decode(md5(i::text), 'hex'), 'k'"
            " FROM generate_series(1, %s) i",
            (n,),
        )


def wal_since(db: RoleDatabase, lsn: str) -> bytes:
    """The WAL segments written since `lsn` (pg_wal, on the server's disk)."""
    with db.connect("superuser") as conn:
        data_dir = Path(one(conn, "SHOW data_directory"))
        first = one(conn, "SELECT pg_walfile_name(%s::pg_lsn)", lsn)
        last = one(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    segments = sorted(p for p in (data_dir / "pg_wal").iterdir() if first <= p.name <= last)
    return b"".join(p.read_bytes() for p in segments)


def test_after_forget_the_erased_bytes_stay_on_disk_until_the_owner_rewrites_the_tables(
    db: RoleDatabase,
) -> None:
    vault = Vault(db.env, db.keys, db.admin_dsn)
    with db.connect("superuser") as conn:
        start_lsn = str(one(conn, "SELECT pg_current_wal_lsn()"))
    other_users(db, 300)  # rows before it, on the same pages
    tokens = vault.add_login(ERASED_USER, IP, DEVICE)
    rejected = vault.add_rejected(f'{{"user_id": "{ERASED_USER}", "ip": "{IP}"}}')
    sealed = {
        field: bytes(s)
        for field, s in db.query(
            "SELECT field, sealed FROM pii_vault WHERE token = ANY(%s)", list(tokens.values())
        )
    }
    ((sealed_body,),) = db.query(
        "SELECT sealed_body FROM user_logins_rejected WHERE message_id = %s", rejected
    )
    secrets = [t.encode() for t in tokens.values()] + list(sealed.values()) + [bytes(sealed_body)]

    erased = db.cli(
        roles.ERASER, "forget", "--user-id", ERASED_USER, "--reason", "art. 17 request",
        "--private-key-file", str(db.keys["vault.key"]),
    )  # fmt: skip
    assert erased.exit_code == 0, erased.output
    assert "rejected bodies naming the user, erased: 1" in erased.output
    assert (
        "not reached: the tables' files keep the erased bytes in freed space until they are"
        " rewritten: run `logins storage rewrite` as the tables' owner" in erased.output
    )
    assert "not reached: the server's WAL (pg_wal) holds the erased values' old rows" in (
        erased.output
    )
    assert "not reached: archive_mode is off: base backups and disk snapshots" in erased.output
    ((masked_ip, masked_device),) = db.query(
        "SELECT masked_ip, masked_device_id FROM user_logins WHERE user_id = %s", ERASED_USER
    )
    assert masked_ip.startswith("erased:") and masked_device.startswith("erased:")
    markers = [masked_ip.encode(), masked_device.encode()]
    # What neither forget nor the step reaches, as the output says: the WAL has them (read
    # before this test's first CHECKPOINT, after which the segments may be recycled).
    wal = wal_since(db, start_lsn)
    assert tokens["device_id"].encode() in wal and sealed["device_id"] in wal

    # Without the step the erased values' tokens, ciphertexts and sealed body are all still in
    # the files (dead row versions) ...
    before = b"".join(files_of(db, table) for table in TABLES)
    assert [s for s in secrets if s not in before] == []
    assert files_of(db, "user_logins", heap_only=True).count(ERASED_USER.encode()) > 1
    # ... and VACUUM frees their space without clearing it: a row that was the newest on its
    # page keeps its bytes in the page's free space until new rows overwrite them.
    with db.connect("superuser") as conn:
        for table in TABLES:
            conn.execute(f"VACUUM {table}")  # test-owned constant names
    assert tokens["device_id"].encode() in files_of(db, "user_logins")
    vaulted = files_of(db, "pii_vault")
    assert all(t.encode() in vaulted for t in tokens.values())
    assert all(s in vaulted for s in sealed.values())

    refused = db.cli(roles.ERASER, "storage", "rewrite")
    assert refused.exit_code == 1
    assert f"{db.logins[roles.ERASER]} does not own ['user_logins'" in refused.output
    assert "a login granted logins_owner (or a superuser)" in refused.output

    rewritten = db.cli(roles.OWNER, "storage", "rewrite")
    assert rewritten.exit_code == 0, rewritten.output
    for table in TABLES:
        assert f"rewrote {table}: " in rewritten.output
    assert "not reached: the tables' files" not in rewritten.output
    assert "not reached: the server's WAL (pg_wal)" in rewritten.output

    after = b"".join(files_of(db, table) for table in TABLES)
    assert [s for s in secrets if s in after] == []
    heap = files_of(db, "user_logins", heap_only=True)
    assert heap.count(ERASED_USER.encode()) == 1  # the live row, which keeps its markers
    assert [heap.count(m) for m in markers] == [1, 1]
    assert db.query("SELECT count(*) FROM user_logins") == [(301,)]  # every row kept


def test_the_planner_statistics_keep_an_erased_token_until_the_rewrite_analyzes(
    db: RoleDatabase,
) -> None:
    """pg_statistic holds each column's most common values: a frequent token is there, and an
    analyst (SELECT on the column) reads it in pg_stats. forget does not reach it; the
    storage step's ANALYZE does."""
    vault = Vault(db.env, db.keys, db.admin_dsn)
    other_users(db, 200)
    for _ in range(30):  # the erased user logs in often: their tokens are the most common
        tokens = vault.add_login(ERASED_USER, IP, DEVICE)
    with db.connect("superuser") as conn:
        conn.execute("ANALYZE user_logins")

    def seen_by_an_analyst() -> list[str]:
        with db.connect(roles.ANALYST) as conn:
            stats = " ".join(
                str(v)
                for (v,) in conn.execute(
                    "SELECT most_common_vals::text FROM pg_stats WHERE tablename = ANY(%s)",
                    (list(TABLES),),
                ).fetchall()
            )
        return [field for field, token in tokens.items() if token in stats]

    assert seen_by_an_analyst() == ["ip", "device_id"]
    erased = db.cli(roles.ERASER, "forget", "--user-id", ERASED_USER, "--reason", "r")
    assert erased.exit_code == 0, erased.output
    assert seen_by_an_analyst() == ["ip", "device_id"]  # forget alone leaves them there
    assert db.cli(roles.OWNER, "storage", "rewrite").exit_code == 0
    assert seen_by_an_analyst() == []


def test_the_server_log_holds_tokens_only_when_statements_are_logged(db: RoleDatabase) -> None:
    """At the server's default settings a forget leaves no token in the server log; with
    `log_statement = 'all'` every bound parameter is logged, tokens included."""
    vault = Vault(db.env, db.keys, db.admin_dsn)
    first = vault.add_login("u-quiet", "192.0.2.1", "111-11-1111")
    second = vault.add_login("u-logged", "192.0.2.2", "222-22-2222")
    with db.connect("superuser") as conn:
        log = Path(one(conn, "SHOW data_directory")) / "server.log"  # the embedded server's
        database = one(conn, "SELECT current_database()")

    def forget_and_read_the_log(user: str) -> str:
        offset = log.stat().st_size
        done = db.cli(roles.ERASER, "forget", "--user-id", user, "--reason", "r")
        assert done.exit_code == 0, done.output
        with log.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    quiet = forget_and_read_the_log("u-quiet")
    assert [t for t in first.values() if t in quiet] == []
    with db.connect("superuser") as conn:
        conn.execute(f"ALTER DATABASE \"{database}\" SET log_statement = 'all'")  # test-made name
    logged = forget_and_read_the_log("u-logged")
    assert "u-logged" in logged  # the log is where we read it
    assert [t for t in second.values() if t in logged] == list(second.values())
