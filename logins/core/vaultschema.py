"""Names of the vault's tables and what the mask step masked, derived from the configuration.

The configuration names the vault table (`vault.table`, default `pii_vault`) and the audit
table. The two tables that rotation and erasure add are named after the vault table, so a
second pipeline with its own vault gets its own: `pii_vault` gives `pii_token_aliases` and
`pii_erasures`; a vault table `eu_vault` gives `eu_token_aliases`, `eu_erasures`; any other
name `X` gives `X_token_aliases`, `X_erasures`. The view mapping every masked column to its
newest token is `<sink table>_unified`.
"""

from __future__ import annotations

from dataclasses import dataclass

from logins.core.config import AppConfig, MaskStep


@dataclass(frozen=True)
class VaultTables:
    vault: str
    audit: str
    aliases: str
    erasures: str
    sink: str
    rejected: str
    unified_view: str
    masked: dict[str, str]  # input field -> the sink column holding its token


def _prefix(vault_table: str) -> str:
    if vault_table.endswith("vault") and len(vault_table) > len("vault"):
        return vault_table[: -len("vault")]
    return f"{vault_table}_"


def tables(config: AppConfig) -> VaultTables:
    masked: dict[str, str] = {}
    for step in config.steps:
        if isinstance(step, MaskStep):
            masked.update(step.fields)
    prefix = _prefix(config.vault.table)
    return VaultTables(
        vault=config.vault.table,
        audit=config.vault.audit_table,
        aliases=f"{prefix}token_aliases",
        erasures=f"{prefix}erasures",
        sink=config.sink.table,
        rejected=config.sink.rejected_table,
        unified_view=f"{config.sink.table}_unified",
        masked=masked,
    )
