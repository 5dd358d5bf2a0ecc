"""Which YAML files make the configuration, each read with the line of every key.

PyYAML's composer gives every node the mark (line, column) where it starts; `safe_load`
drops them. So a file is composed, the line of each key path recorded, and the same node
tree constructed by the same SafeLoader: the values are exactly `safe_load`'s. PyYAML rather
than ruamel.yaml: it is already the loader's dependency, and a second YAML parser would
read some scalars differently (ruamel's YAML 1.2 `on`/`off`, its round-trip types) from
what every other reader of these files (kubernetes, SAM, the tests) sees.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from logins.core.config.errors import ConfigError, Location

DEFAULT_ENV = "local"
# `extends: logins:base.yaml` layers a file over the configuration shipped with logins (the
# repository's config/, which the wheel carries as package data): a project made by
# `logins init` needs no copy of it and no path into site-packages.
SHIPPED_PREFIX = "logins:"


@dataclass(frozen=True)
class Layer:
    """One file of the chain: its data (without `extends`) and the line of each key path."""

    path: Path
    data: dict[str, Any]
    lines: dict[Location, int] = field(default_factory=dict)


def shipped_dir() -> Path:
    """The configuration shipped with logins: the source checkout's config/, else the copy
    the wheel installs beside this module (pyproject.toml maps config/ into the package)."""
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file() and (checkout / "config" / "base.yaml").is_file():
        return checkout / "config"
    return Path(__file__).resolve().parent / "shipped"


def config_dir() -> Path:
    """Where `<LOGINS_ENV>.yaml` is looked up: LOGINS_CONFIG_DIR; else the source checkout's
    config/; else ./config (a project `logins init` wrote); else the shipped configuration."""
    if "LOGINS_CONFIG_DIR" in os.environ:
        return Path(os.environ["LOGINS_CONFIG_DIR"])
    shipped = shipped_dir()
    if shipped.parent.joinpath("pyproject.toml").is_file():
        return shipped
    local = Path.cwd() / "config"
    return local if local.is_dir() else shipped


def selected_files(env: Mapping[str, str] | None = None) -> list[Path]:
    """The files that make the config, lowest priority first.

    LOGINS_CONFIG names a file, LOGINS_ENV a file `<env>.yaml` in the config directory; a
    file may say `extends: other.yaml` (relative to itself, or `logins:base.yaml` for the
    shipped one) to be layered over that one.
    """
    return [layer.path for layer in read_layers(env)]


def read_layers(env: Mapping[str, str] | None = None) -> list[Layer]:
    """The selected file and every file it extends, lowest priority first."""
    env = os.environ if env is None else env
    if env.get("LOGINS_CONFIG"):
        return _with_extends(Path(env["LOGINS_CONFIG"]), ())
    name = env.get("LOGINS_ENV") or DEFAULT_ENV
    directory = config_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "base")
        raise ConfigError(f"LOGINS_ENV={name!r}: no {path} (known environments: {known})")
    return _with_extends(path, ())


def _with_extends(path: Path, seen: tuple[Path, ...]) -> list[Layer]:
    if path.resolve() in seen:
        chain = " extends ".join(display(p) for p in (*seen, path.resolve()))
        raise ConfigError(f"{display(path)}: `extends` goes round in a circle: {chain}")
    data, lines = read_yaml(path)
    parent = data.pop("extends", None)
    layer = Layer(path, data, lines)
    if parent is None:
        return [layer]
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{display(path)}:{lines[('extends',)]}: extends: must be a file name")
    if parent.startswith(SHIPPED_PREFIX):
        base = shipped_dir() / parent.removeprefix(SHIPPED_PREFIX)
    else:
        base = path.parent / parent
    if not base.is_file():
        raise ConfigError(f"{display(path)}:{lines[('extends',)]}: extends: no file {base}")
    return [*_with_extends(base, (*seen, path.resolve())), layer]


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[Location, int]]:
    """A file's top-level mapping and the line (1-based) of every key and list item in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{display(path)}: cannot read: {exc.strerror}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{display(path)}:{mark.line + 1}" if mark is not None else display(path)
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if node is None or data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{display(path)}: the top level must be a mapping, got {type(data).__name__}"
        )
    lines: dict[Location, int] = {}
    _record_lines(node, (), lines)
    return data, lines


def _record_lines(node: yaml.Node, at: Location, lines: dict[Location, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                here = (*at, key.value)
                lines[here] = key.start_mark.line + 1
                _record_lines(value, here, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            here = (*at, index)
            lines[here] = item.start_mark.line + 1
            _record_lines(item, here, lines)


def locate(layers: list[Layer], at: Location) -> str:
    """`file:line` of the key at `at` in the highest layer that sets it; if none does, of its
    nearest parent that one sets (a missing key: the section it is missing from)."""
    for depth in range(len(at), 0, -1):
        for layer in reversed(layers):
            line = layer.lines.get(at[:depth])
            if line is not None:
                return f"{display(layer.path)}:{line}"
    return " + ".join(display(layer.path) for layer in layers)


def display(path: Path) -> str:
    """A path as an error shows it: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):  # not under it, or no working directory any more
        return str(path)
