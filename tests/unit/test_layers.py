"""Every module has a layer: the import contract in pyproject.toml (checked by `make lint`)
would silently not check a module that no layer names, so a new one must be placed."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [m.strip() for layer in contract["layers"] for m in layer.replace("|", ":").split(":")]


def _modules(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if len(parts) > 1:
            found.append(".".join(parts))
    return found


def test_every_module_is_in_a_layer() -> None:
    layers = _layers()
    unplaced = [
        module
        for package in ("logins", "flows", "connectors")
        for module in _modules(package)
        if not any(module == layer or module.startswith(f"{layer}.") for layer in layers)
    ]
    assert unplaced == [], f"place these in [tool.importlinter] layers: {unplaced}"
