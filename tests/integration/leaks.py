"""Searching output for raw PII: which values went in, and where any of them came out.

A value matches only as a whole: "1.2.3.4" is not found in "11.2.3.45" or "1.2.3.4.5",
"123-45-6789" not in "0123-45-67890". Each value is also searched in the forms a log line or
a JSON document would give it (JSON-escaped, Python-escaped).
"""

from __future__ import annotations

import ast
import ipaddress
import json
import re
from collections.abc import Iterable
from typing import Any

import orjson

PII_KEYS = ("ip", "device_id")
MIN_LENGTH = 4  # shorter strings ("", "1", "x") occur everywhere and identify nobody

_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d]|\.\d)")
_DEVICE = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
_IPV6_CANDIDATE = re.compile(r"[0-9A-Fa-f:]*:[0-9A-Fa-f:]+")


def _strings_under(value: Any, keys: tuple[str, ...]) -> Iterable[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in keys and isinstance(v, str):
                yield v
            elif k in keys and isinstance(v, list):
                yield from (x for x in v if isinstance(x, str))
            yield from _strings_under(v, keys)
    elif isinstance(value, list):
        for v in value:
            yield from _strings_under(v, keys)


def raw_values(body: str, keys: tuple[str, ...] = PII_KEYS) -> set[str]:
    """Every PII value a message body holds, whatever its shape: the string values of the PII
    keys at any depth (JSON, or a Python literal as some producers send), and anything in the
    text that looks like an IPv4 or IPv6 address or a device id."""
    found: set[str] = set()
    parsed: Any = None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            parsed = ast.literal_eval(body)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            parsed = None
    found.update(_strings_under(parsed, keys))
    found.update(_IPV4.findall(body))
    found.update(_DEVICE.findall(body))
    for candidate in _IPV6_CANDIDATE.findall(body):
        try:
            if isinstance(ipaddress.ip_address(candidate.strip(":")), ipaddress.IPv6Address):
                found.add(candidate.strip(":"))
        except ValueError:
            pass
    return {v for v in found if len(v.strip()) >= MIN_LENGTH}


def _forms(value: str) -> set[str]:
    forms = {value, json.dumps(value)[1:-1], value.encode("unicode_escape").decode("ascii")}
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.add(repr(value)[1:-1])  # as %r or a dataclass repr would print it
    return {f for f in forms if f}


class LeakSearch:
    """One compiled pattern for every value and its escaped forms, bounded on both sides."""

    def __init__(self, values: Iterable[str]) -> None:
        self.values = sorted(set(values))
        self._form_of: dict[str, str] = {}
        for value in self.values:
            for form in _forms(value):
                self._form_of.setdefault(form, value)
        alternatives = "|".join(
            re.escape(f) for f in sorted(self._form_of, key=lambda f: (-len(f), f))
        )
        self._pattern = re.compile(
            rf"(?<![0-9A-Za-z_])(?<!\d\.)(?:{alternatives})(?![0-9A-Za-z_])(?!\.\d)"
        )
        self._bytes = [(v, v.encode("utf-8", "surrogatepass")) for v in self.values]

    def find(self, text: str) -> list[str]:
        """The raw values found in `text` (each once)."""
        return sorted({self._form_of[m.group(0)] for m in self._pattern.finditer(text)})

    def find_bytes(self, data: bytes) -> list[str]:
        """Raw values whose UTF-8 bytes occur anywhere in `data` (for ciphertexts: no bounds)."""
        return [v for v, b in self._bytes if len(b) >= 7 and b in data]

    def hits(self, places: dict[str, str]) -> dict[str, list[str]]:
        """{place: values found there}, only the places with a hit."""
        found = {place: self.find(text) for place, text in places.items()}
        return {place: values for place, values in found.items() if values}


LOGIN = {"user_id": "u-leak", "app_version": "2.3.0", "device_type": "ios", "locale": "US"}
# Searched besides what raw_values() extracts: PII in unknown keys, and the readable part of
# values that are long or hold a NUL (a partial leak of those would otherwise go unseen).
EXTRA_PII = ("alice.leak@example.com", "+1-202-555-0143", "dev-ZX81-0006", "ZX81-0008")


def crafted() -> list[str]:
    """Bodies built to carry PII into the places it must not reach."""

    def body(**fields: Any) -> str:
        return json.dumps({**LOGIN, **fields})

    return [
        json.dumps({"ip": "203.0.113.195", "device_id": "dev-ZX81-0001"}),  # missing fields
        body(ip="999.0.113.197", device_id="dev-ZX81-0003"),  # invalid ip
        "not json at all: ip=198.51.100.233 device=dev-ZX81-0004",
        body(ip="2001:db8:85a3::8a2e:370:7334", device_id="dev-ZX81-0005", app_version=3),
        body(ip="198.51.100.234", device_id="dev-ZX81-0006\u0000x"),  # NUL: invalid value
        body(ip="198.51.100.236", device_id="d" * 300 + "-ZX81-0008"),  # too long
        body(ip="198.51.100.237", device_id="dev-ZX81-0009", pad="x" * 20000),  # too large
        body(ip="198.51.100.238", device_id=None),  # null field
        body(ip=["198.51.100.239"], device_id="dev-ZX81-0010"),  # wrong type: a list
        # valid rows: unknown keys holding PII are dropped; unicode survives tokenising
        body(
            ip="198.51.100.235",
            device_id="dev-ZX81-0007",
            email=EXTRA_PII[0],
            phone=EXTRA_PII[1],
        ),
        body(ip="203.0.113.196", device_id="dév-ïd-ü-0002"),
    ]
