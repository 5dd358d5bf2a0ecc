"""Embedded KMS: moto's server on a loopback port (GenerateMac, DescribeKey)."""

from __future__ import annotations

from typing import Any

from logins.dev.embedded.moto import REGION, EmbeddedMoto

__all__ = ["EmbeddedKms"]


class EmbeddedKms(EmbeddedMoto):
    """moto's KMS server (real wire protocol: GenerateMac, DescribeKey) on a loopback port.

    moto 5 implements HMAC keys (HMAC-SHA256 of the key's material) but not ImportKeyMaterial.
    `create_hmac_key(material=...)` stands in for it: the server runs in this process, so the
    new key's material is set in moto's own state, as ImportKeyMaterial sets it on AWS.
    """

    def client(self) -> Any:
        return self._boto_client("kms")

    def create_hmac_key(self, material: bytes | None = None, spec: str = "HMAC_256") -> str:
        """A new KMS HMAC key; its id. `material`: the 32 bytes it should hold (an import)."""
        meta = self.client().create_key(
            KeySpec=spec,
            KeyUsage="GENERATE_VERIFY_MAC",
            Origin="EXTERNAL" if material is not None else "AWS_KMS",
            Description="logins-etl token key (embedded)",
        )["KeyMetadata"]
        if material is not None:
            from moto.kms.models import kms_backends

            account = meta["Arn"].split(":")[4]
            kms_backends[account][REGION].keys[meta["KeyId"]].key_material = material
        key_id: str = meta["KeyId"]
        return key_id
