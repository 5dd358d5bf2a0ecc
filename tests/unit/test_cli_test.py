"""`logins test`: offline cases through the configured steps, with a throwaway key; exit 0 when
all pass, 1 with each failing case's expected and actual side by side, 2 for a malformed file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from logins.cli import main
from tests.helpers import GOOD_LOGIN, REPO

EXAMPLE = REPO / "config/examples/logins.test.yaml"


def logins_test(*files: Path, **env: str | None) -> Result:
    # No key file and no service: nothing of the kind may be needed.
    base: dict[str, str | None] = {
        "LOGINS_ENV": "local",
        "LOGINS_CONFIG": None,
        "LOGINS_TOKEN_KEY_FILE": None,
        "LOGINS_TOKEN_KMS_KEY_ID": None,
        "LOGINS_VAULT_PUBLIC_KEY_FILE": None,
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "SQS_ENDPOINT_URL": "http://127.0.0.1:1",
    }
    return CliRunner().invoke(main, ["test", *map(str, files)], env={**base, **env})


def write(tmp_path: Path, cases: list[dict[str, object]], name: str = "t.test.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"cases": cases}))  # JSON is YAML
    return path


def test_the_projects_example_passes_offline() -> None:
    result = logins_test(EXAMPLE)
    assert result.exit_code == 0, result.output
    assert "6 passed, 0 failed" in result.output
    assert "FAIL" not in result.output


def test_key_files_are_never_read(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such.key")
    result = logins_test(
        EXAMPLE, LOGINS_TOKEN_KEY_FILE=missing, LOGINS_VAULT_PUBLIC_KEY_FILE=missing
    )
    assert result.exit_code == 0, result.output


def test_each_failing_case_shows_expected_and_actual_side_by_side(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"name": "passes", "message": GOOD_LOGIN, "expect": {"row": {"app_version": 20300}}},
            {
                "name": "wrong columns",
                "message": {**GOOD_LOGIN, "app_version": "2.3.1"},
                "sent_at": "2026-12-01T23:59:59Z",
                "expect": {
                    "row": {
                        "app_version": 20300,
                        "masked_ip": {"token_of": "199.172.111.136"},
                        "create_date": "2026-12-02",
                        "device_type": "android",
                    }
                },
            },
            {"name": "not a row", "message": {"foo": 1}, "expect": {"row": {}}},
            {"name": "other reason", "message": "[1]", "expect": {"rejected": "not_json"}},
        ],
    )
    result = logins_test(path)
    assert result.exit_code == 1, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert "ok passes" in lines
    assert f"FAIL wrong columns ({path})" in lines
    assert "app_version 20300 20301" in lines
    assert 'masked_ip token_of "199.172.111.136" the token of another value' in lines
    assert "create_date 2026-12-02 2026-12-01" in lines
    assert not any(line.startswith("device_type") for line in lines)  # it matched
    assert f"FAIL not a row ({path})" in lines
    assert "outcome row rejected: missing_field (user_id: required)" in lines
    assert any(line.startswith("outcome rejected: not_json rejected: not_object") for line in lines)
    assert "1 passed, 3 failed" in result.output


def test_cases_run_in_order_through_the_real_dedupe_window(tmp_path: Path) -> None:
    def at(time: str, expect: Mapping[str, object]) -> dict[str, object]:
        return {"name": time, "message": GOOD_LOGIN, "sent_at": time, "expect": expect}

    row = {"row": {"masked_ip": {"token_of": "199.172.111.135"}}}
    path = write(
        tmp_path,
        [
            at("2026-12-01T10:00:00Z", row),
            at("2026-12-01T10:09:00Z", {"duplicate": True}),  # inside the 10-minute window
            at("2026-12-01T10:30:00Z", row),  # past it: a login again
        ],
    )
    result = logins_test(path)
    assert result.exit_code == 0, result.output
    assert "3 passed, 0 failed" in result.output
    first_is_duplicate = write(tmp_path, [at("2026-12-01T10:00:00Z", {"duplicate": True})], "d")
    assert logins_test(first_is_duplicate).exit_code == 1


@pytest.mark.parametrize(
    ("cases", "words"),
    [
        ([{"name": "a", "message": "x", "expect": {"rejected": "not_jsn"}}],
         ["case 1 ('a')", "'not_jsn' is not a reason code", "did you mean 'not_json'?"]),
        ([{"name": "a", "message": "x", "expect": {"row": {"masked_ipp": 1}}}],
         ["case 1 ('a'): expect.row.masked_ipp: not a column of user_logins",
          "did you mean 'masked_ip'?"]),
        ([{"name": "a", "message": "x", "expect": {"row": {"user_id": {"token_of": "v"}}}}],
         ["case 1 ('a'): expect.row.user_id: token_of is for a masked field's token column"]),
        ([{"name": "a", "message": "x", "expect": {"row": {"masked_ip": {"token_of": 1}}}}],
         ["case 1 ('a'): expect.row.masked_ip: write {token_of: \"VALUE\"}"]),
        ([{"name": "a", "message": "x", "expect": {"rejected": "not_json"}},
          {"name": "b", "message": "x", "expect": {"rejected": "not_json", "duplicate": True}}],
         ["case 2 ('b'): expect: give exactly one of row, rejected, duplicate"]),
        ([{"message": "x", "expect": {"duplicate": True}}], ["case 1: name: Field required"]),
        ([{"name": "a", "message": "x", "expect": {"duplicate": True}, "sent": "2026"}],
         ["case 1 ('a'): sent: Extra inputs are not permitted"]),
        ([], ["cases: List should have at least 1 item"]),
    ],
)  # fmt: skip
def test_a_malformed_file_exits_2_naming_the_file_and_the_case(
    tmp_path: Path, cases: list[dict[str, object]], words: list[str]
) -> None:
    path = write(tmp_path, cases)
    result = logins_test(EXAMPLE, path)
    assert result.exit_code == 2, result.output
    assert f"{path}: " in result.output
    for word in words:
        assert word in result.output, result.output


def test_a_file_that_is_not_yaml_or_missing_exits_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("cases: [\n")
    result = logins_test(broken)
    assert result.exit_code == 2 and f"{broken}: not valid YAML" in result.output
    result = logins_test(tmp_path / "absent.yaml")
    assert result.exit_code == 2 and "absent.yaml" in result.output
