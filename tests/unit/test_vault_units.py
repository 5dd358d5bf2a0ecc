"""Pure parts of the vault's operations: the audit hash chain's canonical form, the token
key file rotation, how an erasure recognises a user in a rejected body, table names."""

from __future__ import annotations

import dataclasses
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logins.core import audit
from logins.core.keys import KeyFileError, generate_keys, load_token_keys, prepend_token_key
from logins.core.vaultschema import _prefix
from logins.pii.erasure import names_user

ROW = audit.AuditRow(
    id=7,
    at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2))),
    actor="ann",
    reason="ticket 12",
    action="reveal",
    tokens=["k1." + "0" * 32],
    succeeded=1,
    failed=0,
    detail={"user": "u-1", "n": 2},
)


V2 = dataclasses.replace(ROW, note="ticket", hash_version=2, tokens=[], detail_text='{"n": 2}')


def test_version_2_is_length_prefixed_text_of_every_field() -> None:
    assert audit.canonical_v2(V2) == b"".join(
        len(f.encode()).to_bytes(4, "big") + f.encode()
        for f in (
            "logins-audit-v2", "7", "2026-01-02T01:04:05.678901Z", "ann", "ticket",
            "ticket 12", "reveal", "[]", "1", "0", '{"n": 2}',
        )
    )  # fmt: skip
    assert audit.canonical_v2(dataclasses.replace(V2, note=None)).count(b"\xff\xff\xff\xff") == 1
    same_instant = dataclasses.replace(V2, at=V2.at.astimezone(timezone.utc))
    assert audit.row_hash("p", same_instant) == audit.row_hash("p", V2)
    assert audit.row_hash("q", V2) != audit.row_hash("p", V2)


@pytest.mark.parametrize(
    "change",
    [
        {"id": 8},
        {"at": ROW.at + timedelta(microseconds=1)},
        {"actor": "bob"},
        {"note": "other"},
        {"note": None},
        {"reason": "ticket 13"},
        {"action": "forget"},
        {"tokens": ["k1." + "0" * 32]},
        {"succeeded": 0},
        {"failed": 1},
        {"detail_text": '{"n": 3}'},
        {"detail_text": None},
    ],
)
def test_every_field_is_covered_by_the_version_2_hash(change: dict[str, Any]) -> None:
    assert audit.row_hash("p", dataclasses.replace(V2, **change)) != audit.row_hash("p", V2)


@given(st.text(), st.text())
def test_version_2_field_boundaries_cannot_be_shifted(a: str, b: str) -> None:
    if b:
        assert audit.canonical_v2(dataclasses.replace(V2, actor=a, note=b)) != audit.canonical_v2(
            dataclasses.replace(V2, actor=a + b, note="")
        )


def test_prepend_token_key_keeps_the_old_lines(tmp_path: Path) -> None:
    path = generate_keys(tmp_path / "k")["token.key"]
    old = path.read_text()
    new = prepend_token_key(path)
    assert path.read_text().endswith(old)
    assert load_token_keys(path)[0].key_id == new.key_id
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    prepend_token_key(path)
    assert len(load_token_keys(path)) == 3
    assert list(tmp_path.glob("k/.*tmp")) == []
    with pytest.raises(KeyFileError, match="no such file"):
        prepend_token_key(tmp_path / "missing.key")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('{"user_id": "u-1", "ip": "1.2.3.4"}', True),
        ('{"user_id": "u-10"}', False),
        ('[{"deep": {"list": ["x", "u-1"]}}]', True),
        ('{"u-1": 1}', True),
        # issue 9: another case, a duplicate key, JSON escapes: the user is named
        ('{"user_id": "U-1"}', True),
        ('{"USER_ID": "u-1"}', True),
        ('{"user_id": "u-1", "user_id": "u-2"}', True),
        ('{"user_id": "u-2", "user_id": "u-1"}', True),
        ('{"user_id": "\\u0055-1"}', True),
        ("{'user_id': 'u-1'}", True),  # not JSON: as a whole word
        ("user u-1x", False),
        ("user=u-1;", True),
        ("xu-1", False),
        ("user u-1.", True),
        ("u-1.5", False),
    ],
)
def test_a_rejected_body_names_a_user(body: str, named: bool) -> None:
    assert names_user(body, "u-1") is named


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('{"user_id": 4711}', True),  # a number where a string belongs
        ('{"user_id": 4711.0}', True),
        ('{"user_id": 4.711e3}', True),
        ('{"user_id": "4711"}', True),
        ('{"user_id": 47110}', False),
        ('{"app_version": "4711.2"}', False),
        ('{"user_id": 1, "user_id": 4711}', True),
        ("[" * 5000 + "4711" + "]" * 5000, True),  # too deep to parse: the raw text still counts
        ("[" * 5000 + "4712" + "]" * 5000, False),
    ],
)
def test_a_numeric_user_id_is_found_whatever_its_json_type(body: str, named: bool) -> None:
    assert names_user(body, "4711") is named


def test_side_table_names_follow_the_vault_table() -> None:
    assert _prefix("pii_vault") == "pii_"
    assert _prefix("eu_vault") == "eu_"
    assert _prefix("vault") == "vault_"
    assert _prefix("secrets") == "secrets_"
