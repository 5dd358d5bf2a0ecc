"""The production posture: what a production start refuses unless the configuration accepts
it by name (`security.allow_token_key_file`, `security.allow_unpinned_vault_key`).

A token key file can be copied, and whoever holds a copy computes every token and enumerates
low-entropy values (all of IPv4) offline; under KMS each token is a logged `GenerateMac`
call. An unpinned `vault.pub` can be swapped by whoever writes the key's location, and every
value sealed after that opens with their key. Both are fine on a laptop and a choice in
production, so production (`LOGINS_ENV=prod`, or a configuration that extends `prod.yaml`)
starts with them only when the configuration says so, and `logins check` prints the posture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from logins.core.config import AppConfig

PRODUCTION = "prod"


def is_production(env: Mapping[str, str], files: Sequence[Path]) -> bool:
    """LOGINS_ENV=prod, or a selected file is a `prod.yaml` (LOGINS_CONFIG=my.yaml that
    extends the shipped prod.yaml counts: it is production all the same)."""
    return env.get("LOGINS_ENV") == PRODUCTION or any(f.name == "prod.yaml" for f in files)


def refusals(config: AppConfig, production: bool) -> list[tuple[tuple[str, ...], str]]:
    """(config key, why and the fix) for each thing production refuses here."""
    if not production:
        return []
    found: list[tuple[tuple[str, ...], str]] = []
    if config.tokens.key_file is not None and not config.security.allow_token_key_file:
        found.append(
            (
                ("tokens", "key_file"),
                "production (LOGINS_ENV=prod) refuses a token key file"
                f" ({config.tokens.key_file}): whoever holds a copy computes every token and"
                " enumerates every IPv4 address offline."
                " Keep the token key in AWS KMS (tokens.kms_key_id, LOGINS_TOKEN_KMS_KEY_ID;"
                " docs/vault.md, Key custody), or accept the file by name in your"
                " configuration: `security: {allow_token_key_file: true}`",
            )
        )
    if config.vault.public_key_fingerprint is None and not config.security.allow_unpinned_vault_key:
        found.append(
            (
                ("vault", "public_key_fingerprint"),
                "production (LOGINS_ENV=prod) refuses an unpinned vault key: whoever can replace"
                f" {config.vault.public_key_file} has every value sealed after that to their"
                " key. Pin it: vault.public_key_fingerprint (LOGINS_VAULT_PUBLIC_KEY_FINGERPRINT)"
                " = the `sha256:...` that `logins keygen` printed, or accept it by name in your"
                " configuration: `security: {allow_unpinned_vault_key: true}`",
            )
        )
    return found


def summary(config: AppConfig, production: bool) -> list[str]:
    """The posture as `logins check` prints it, one fact a line."""
    tokens, security = config.tokens, config.security
    custody = f"KMS ({tokens.kms_key_id})" if tokens.kms_key_id else f"file ({tokens.key_file})"
    pinned = config.vault.public_key_fingerprint
    return [
        "environment: "
        + ("production (LOGINS_ENV=prod or prod.yaml)" if production else "not production"),
        f"token key custody: {custody}",
        f"vault key: {'pinned ' + pinned if pinned else 'not pinned'}",
        f"security.allow_token_key_file: {str(security.allow_token_key_file).lower()}",
        f"security.allow_unpinned_vault_key: {str(security.allow_unpinned_vault_key).lower()}",
    ]
