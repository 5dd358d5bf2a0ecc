"""Reveal round-trips every value through the real database: any string hypothesis finds
(unicode, control characters, NUL, lone surrogates, long ones), and a set of edge cases
through the CLI path (`reveal --json`, `reveal --file -`)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logins.pii.reveal import reveal
from tests.integration.vaultkit import Vault, vault

__all__ = ["vault"]

EDGE_CASES = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\n\r",
    "\x1b[31mred",
    "é",
    "e\u0301",
    "日本語",
    "😀👍🏽",
    "\u202eevil",  # right-to-left override
    "\u200b",
    '"quoted" \\ back',
    "' OR 1=1 --",
    "%s %(x)s {}",
    "\ud800",  # a lone surrogate: not UTF-8, kept exactly
    "x" * 10_000,
    "::ffff:192.0.2.1",
]


def seal_all(v: Vault, values: list[str], field: str = "device_id") -> list[str]:
    tokenizer, sealer = v.tokenizer, v.sealer
    tokens = [tokenizer.token(field, value) for value in values]
    with v.connect() as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO pii_vault (token, field, sealed, vault_key_id) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (token) DO NOTHING",
            [
                (t, field, sealer.seal(field, t, value), sealer.key_id)
                for t, value in zip(tokens, values, strict=True)
            ],
        )
    return tokens


def test_any_string_round_trips_through_the_database(vault: Vault) -> None:
    opener, tokenizer = vault.opener, vault.tokenizer

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.text(st.characters(exclude_categories=()), max_size=200), max_size=12))
    def round_trip(values: list[str]) -> None:
        tokens = seal_all(vault, values)
        with vault.connect() as conn:
            shown = reveal(
                conn,
                vault.config,
                opener=opener,
                tokenizer=tokenizer,
                tokens=tokens,
                reason="property test",
                note="hypothesis",
            )
        by_token = dict(zip(tokens, values, strict=True))
        assert [(r.token, r.value, r.error) for r in shown] == [
            (t, by_token[t], None) for t in dict.fromkeys(tokens)
        ]

    round_trip()
    verified = vault.cli("audit", "verify")
    assert verified.exit_code == 0 and verified.output.startswith("ok: ")


def test_edge_cases_round_trip_through_the_cli(vault: Vault) -> None:
    tokens = seal_all(vault, EDGE_CASES)
    code, shown = vault.reveal_json(*tokens)
    assert code == 0
    assert [r["value"] for r in shown] == EDGE_CASES
    code, shown = vault.reveal_json("--file", "-", input="\n".join(tokens) + "\n")
    assert code == 0 and [r["value"] for r in shown] == EDGE_CASES
    table = vault.cli(
        "reveal", *tokens, "--reason", "r", "--private-key-file", str(vault.keys["vault.key"])
    )
    assert table.exit_code == 0
    assert "\x1b" not in table.stdout and "\u202e" not in table.stdout
    assert json.loads(json.dumps(EDGE_CASES)) == EDGE_CASES
