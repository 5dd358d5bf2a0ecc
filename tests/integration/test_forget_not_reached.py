"""`logins forget` names what it cannot reach in the flow, and when each ages out (red team
findings 2 and 10: the dedupe state and the Bytewax recovery store went unmentioned), beside
the database's copies: from the config the command runs with (real PostgreSQL, the CLI)."""

from __future__ import annotations

from logins.core.config import DedupeStep, MaskStep
from logins.pii.erasure import pipeline_unreached
from tests.helpers import config_for
from tests.integration.vaultkit import Vault, vault

__all__ = ["vault"]


def test_forget_names_the_flow_state_it_cannot_reach_and_when_it_ages_out(vault: Vault) -> None:
    tokens = vault.add_login("u-1", "192.0.2.10", "d-1")
    done = vault.cli("forget", tokens["ip"], "--reason", "r")
    assert done.exit_code == 0, done.output
    lines = [x for x in done.stdout.splitlines() if x.startswith("not reached: ")]
    said = "\n".join(lines)
    # the shipped config: dedupe window 600 s, seal cache 50,000 + 2,000,000; a key file
    assert "the flow's dedupe state (steps[dedupe])" in said
    assert "at most ~3 x window_seconds (30 min here)" in said
    assert "the Bytewax recovery store (-r DIR, part-N.sqlite3)" in said
    assert (
        "SQLite's free space (and its -wal file) until the store is vacuumed or rewritten" in said
    )
    assert "seal cache (steps[mask]: up to 50000 tokens + 2000000 8-byte hashes)" in said
    assert "KMS token cache" not in said  # a key file: no value -> token cache
    assert "the server's WAL (pg_wal)" in said  # the database's, after the flow's
    assert len(lines) == 6

    dry = vault.cli("forget", tokens["ip"], "--reason", "r", "--dry-run")
    assert "not reached" not in dry.stdout  # nothing was erased


def test_the_kms_token_cache_and_another_window_are_named(vault: Vault) -> None:
    config = config_for(vault.env)
    steps = [
        s.model_copy(update={"window_seconds": 45}) if isinstance(s, DedupeStep) else s
        for s in config.steps
    ]
    kms = config.tokens.model_copy(update={"kms_key_id": "alias/t", "cache_size": 1234})
    said = "\n".join(pipeline_unreached(config.model_copy(update={"steps": steps, "tokens": kms})))
    assert "~3 x window_seconds (135 s here)" in said
    assert "KMS token cache (tokens.cache_size 1234) holds recent values" in said
    no_cache = [
        s.model_copy(update={"seal_cache_size": 0, "seal_cache_overflow_tokens": 0})
        if isinstance(s, MaskStep)
        else s
        for s in config.steps
    ]
    assert "seal cache" not in "\n".join(
        pipeline_unreached(config.model_copy(update={"steps": no_cache}))
    )
