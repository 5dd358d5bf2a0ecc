"""What the pipeline holds of the keys: a way to compute tokens (a key file, or an AWS KMS
HMAC key it can only ask) and the vault's public key (pinned by its fingerprint if set).

Its own module (not `keys.py`): `tokens.py` and `vault.py` import `keys.py`, and this module
imports both of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from logins.core.config import AppConfig, MaskStep, TokensConfig
from logins.core.keys import (
    KeyFileError,
    TokenKey,
    check_fingerprint,
    load_token_keys,
    load_vault_public_key,
)
from logins.core.kms import MAX_MESSAGE_BYTES, KmsKey
from logins.core.tokens import MacKey, Tokenizer
from logins.core.vault import Sealer


@dataclass
class Secrets:
    tokenizer: Tokenizer
    sealer: Sealer


def _kms_key(config: TokensConfig, kms_key_id: str) -> KmsKey:
    return KmsKey(
        kms_key_id,
        region=config.kms_region,
        endpoint_url=config.kms_endpoint_url,
        cache_size=config.cache_size,
        concurrency=config.kms_concurrency,
        give_up_after_seconds=config.kms_give_up_after_seconds,
    )


def load_tokenizer(config: TokensConfig) -> Tokenizer:
    """The active token key first (the key file's first line, or the KMS key), then every key
    that still verifies old tokens (the key file's other lines, `previous_*`)."""
    keys: list[TokenKey | MacKey] = []
    if config.key_file is not None:
        keys.extend(load_token_keys(config.key_file))
    if config.kms_key_id is not None:
        keys.append(_kms_key(config, config.kms_key_id))
    if config.previous_key_file is not None:
        keys.extend(load_token_keys(config.previous_key_file))
    keys.extend(_kms_key(config, kms_id) for kms_id in config.previous_kms_key_ids)
    try:
        return Tokenizer(keys)
    except ValueError as exc:
        raise KeyFileError(f"tokens: {exc}") from None


def _check_kms_limits(config: AppConfig) -> None:
    """A KMS key MACs at most 4,096 bytes: refuse at start a field whose values may be longer."""
    if config.tokens.kms_key_id is None:
        return
    validate = config.validate_step.fields
    for step in config.steps:
        for name in step.fields if isinstance(step, MaskStep) else ():
            longest = len(name.encode()) + 1 + 4 * validate[name].max_length
            if longest > MAX_MESSAGE_BYTES:
                raise KeyFileError(
                    f"tokens.kms_key_id: field {name!r} allows {validate[name].max_length}"
                    f" characters (up to {longest} bytes to MAC), over GenerateMac's"
                    f" {MAX_MESSAGE_BYTES}-byte limit: lower its max_length"
                )


def load_vault_key(config: AppConfig) -> Sealer:
    """The vault's public key, refused if it is not the pinned one."""
    path = config.vault.public_key_file
    public = load_vault_public_key(path)
    check_fingerprint(public, config.vault.public_key_fingerprint, path)
    return Sealer(public)


def load_secrets(config: AppConfig) -> Secrets:
    """The token key and the vault's public key; the private key is never read here."""
    _check_kms_limits(config)
    sealer = load_vault_key(config)
    return Secrets(load_tokenizer(config.tokens), sealer)
