"""The integer encoding of `app_version` for the analysts' `integer` column.

"MAJOR[.MINOR[.PATCH]]" becomes MAJOR*10000 + MINOR*100 + PATCH, so "2.3.0" -> 20300,
"0.96" -> 9600, "3.7" -> 30700, "3" -> 30000, and integer order is version order.
A version that does not fit (a part >= 100 after the major, a major over 214747 so the
result leaves int32, more than three parts, anything that is not digits) encodes to None:
the login is still a row, the exact text is kept in `app_version_text`.
"""

from __future__ import annotations

MAX_MAJOR = 214_747  # 214747*10000 + 9999 < 2**31 - 1


def encode_app_version(text: str) -> int | None:
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    major, minor, patch = (int(p) for p in [*parts, "0", "0"][:3])
    if major > MAX_MAJOR or minor > 99 or patch > 99:
        return None
    return major * 10_000 + minor * 100 + patch
