"""What the pipeline holds of the keys: the token key and the vault's public key.

Its own module (not `keys.py`): `tokens.py` and `vault.py` import `keys.py`, and this module
imports both of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from logins.config import AppConfig
from logins.keys import load_token_keys, load_vault_public_key
from logins.tokens import Tokenizer
from logins.vault import Sealer


@dataclass
class Secrets:
    tokenizer: Tokenizer
    sealer: Sealer


def load_secrets(config: AppConfig) -> Secrets:
    """The token key and the vault's public key; the private key is never read here."""
    return Secrets(
        Tokenizer(load_token_keys(config.tokens.key_file)),
        Sealer(load_vault_public_key(config.vault.public_key_file)),
    )
