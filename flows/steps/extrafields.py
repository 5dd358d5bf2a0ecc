"""Keys beyond the schema: counted, and their names logged at most once a minute.

The validate step ignores keys it does not declare (the producer may add fields; they are not
stored), but a producer that starts sending `email` is news: every such message counts in
`logins_messages_with_extra_fields_total`, and a warning names the keys, never their values:
at most `MAX_NAMES` names, each cut to `MAX_NAME_CHARS` characters with control characters
escaped (a key is the producer's text too), at most once per `interval` seconds per process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from logins.core import metrics

log = logging.getLogger(__name__)

MAX_NAMES = 5
MAX_NAME_CHARS = 32


def shown_name(name: str) -> str:
    """A key as the log shows it: cut to MAX_NAME_CHARS, invisible characters escaped."""
    cut = name[:MAX_NAME_CHARS] + ("..." if len(name) > MAX_NAME_CHARS else "")
    return cut if cut.isprintable() else cut.encode("unicode_escape").decode()


class ExtraFields:
    """Counts messages with undeclared keys and logs their names, throttled."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._logged_at: float | None = None
        self._messages = 0  # since the last warning
        self._names: dict[str, None] = {}  # first seen first, at most MAX_NAMES

    def add(self, messages: int, names: Iterable[str]) -> None:
        """`messages` of a batch carried undeclared keys, among them `names`."""
        if not messages:
            return
        metrics.EXTRA_FIELDS.inc(messages)
        with self._lock:
            self._messages += messages
            for name in names:
                if len(self._names) >= MAX_NAMES:
                    break
                self._names.setdefault(shown_name(name), None)
            now = self._clock()
            if self._logged_at is not None and now - self._logged_at < self._interval:
                return
            since = "" if self._logged_at is None else f" in the last {now - self._logged_at:.0f}s"
            count, shown = self._messages, list(self._names)
            self._logged_at, self._messages, self._names = now, 0, {}
        log.warning(
            "%d message(s)%s carried keys the schema does not declare (ignored, not stored),"
            " among them: %s",
            count,
            since,
            ", ".join(shown),
            extra={"extra_field_messages": count, "extra_field_names": shown},
        )


EXTRA = ExtraFields()
