"""Bad input at volume: ~3000 generated bodies, mostly malformed, through the real flow.

The source is in-process (`TestingSource`) because the thing under test is validation and
the PostgreSQL write path, and it lets us send bodies SQS itself could not carry (lone
surrogates, bodies far over the size limit). Every body must be accounted for exactly once,
rejected with the reason the validator gives it, valid injection text must be stored
verbatim (and stay inert: every table is still there), and a rejected body must open from
the vault as exactly what was sent.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from typing import Any

import psycopg
from bytewax.testing import TestingSource

from connectors.sqs.source import NoAcker
from flows.steps.validate import REASONS, Validator
from logins.core.keys import load_vault_private_key
from logins.core.pipeline_keys import load_secrets
from logins.core.records import SqsMessage
from logins.core.vault import Opener
from tests.helpers import PIPELINE_TABLES, assert_exact_ledger, config_for, fetch, run

SEED = 20_240_611
COUNT = 3000
FIELDS = ("user_id", "app_version", "device_type", "ip", "locale", "device_id")
MAX_BODY = 16384  # config/base.yaml: steps[validate].max_body_bytes (checked in the test)

INJECTION = [
    "'; DROP TABLE user_logins; --",
    "'); DROP TABLE logins_ledger; --",
    "1' OR '1'='1",
    "\\x00",
    "$$",
    "$tag$ DROP TABLE pii_vault $tag$",
    "E'\\\\'",
    "\\N",  # COPY's NULL marker, as text
    "\\.",  # COPY's end-of-data marker
    "a\tb\nc\rd",  # COPY's column and row separators
    "\\\\N\\t\\n",
    "%s %(x)s {0} {}",
    "COPY user_logins TO PROGRAM 'id'",
    "<script>alert(1)</script>",
]
UNICODE = [
    "\u200f\u202eevil\u202c",  # RTL mark, RTL override
    "שלום עולם",
    "مرحبا",
    "😀🔥",
    "👩\u200d👩\u200d👧",
    "e\u0301\u0302\u0303",  # combining marks
    "Z\u0324\u0354\u0367\u0311a\u0356\u036d",
    "\ufeffbom",
    "line\u2028sep\u2029",
    "\U0001d54f\U0001d502\U0001d59f",  # mathematical letters
    "\x7f\x01\x1f",
    "\uffff\U0010ffff",
    "ﷺ",
    "ç\u00a0\u3000全角",
]
NUL_TEXT = ["\u0000", "a\u0000b", "'; DROP TABLE user_logins; --\u0000", "\u0000\u0000  "]
VALID_COLUMNS = {"user_id": 128, "device_type": 32, "locale": 32, "app_version": 64}


class Bodies:
    """A seeded generator of message bodies, each tagged with the kind that made it."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def good(self, i: int) -> dict[str, Any]:
        rng = self.rng
        return {
            "user_id": f"user-{i:05d}-{rng.getrandbits(32):08x}",
            "app_version": rng.choice(["2.3.0", "0.96", "3.7", "3", "2.3.0-beta", "1.100"]),
            "device_type": rng.choice(["android", "iOS", "web"]),
            "ip": rng.choice(["199.172.111.135", "10.0.0.1", "2001:db8::1", "fe80::1%eth0"]),
            "locale": rng.choice(["RU", "en-US", None]),
            "device_id": f"{rng.randrange(1000):03d}-{i:05d}",
        }

    def text(self, limit: int) -> str:
        """Injection and unicode text, joined, at most `limit` characters."""
        rng = self.rng
        parts = rng.sample(INJECTION + UNICODE, rng.randint(1, 3))
        return "".join(parts)[:limit] or "x"

    def dumps(self, obj: Any) -> str:
        rng = self.rng
        if isinstance(obj, dict) and rng.random() < 0.5:
            items = list(obj.items())
            rng.shuffle(items)
            obj = dict(items)
        return json.dumps(
            obj,
            ensure_ascii=rng.random() < 0.5,
            separators=rng.choice([(",", ":"), (", ", ": "), (" ,\n", " :\t")]),
        )

    def json_value(self, depth: int = 0) -> Any:
        rng = self.rng
        choice = rng.randrange(9 if depth < 3 else 6)
        if choice == 0:
            return rng.randint(-(2**70), 2**70)
        if choice == 1:
            return rng.uniform(-1e300, 1e300)
        if choice == 2:
            return rng.choice([True, False])
        if choice == 3:
            return None
        if choice == 4:
            return rng.choice([0, 0.0, -1, 1e-300])
        if choice == 5:
            return self.text(40)
        if choice == 6:
            return [self.json_value(depth + 1) for _ in range(rng.randrange(4))]
        return {self.text(10): self.json_value(depth + 1) for _ in range(rng.randrange(4))}

    # -- the kinds ----------------------------------------------------------------------------

    def random_bytes(self, i: int) -> str:
        raw = self.rng.randbytes(self.rng.randrange(300))
        return raw.decode(self.rng.choice(["utf-8", "latin-1"]), "surrogateescape")

    def random_text(self, i: int) -> str:
        """Any code points, lone surrogates included."""
        rng = self.rng
        ranges = [(0, 0x7F), (0x80, 0x7FF), (0xD800, 0xDFFF), (0x800, 0xFFFF), (0, 0x10FFFF)]
        lo, hi = rng.choice(ranges)
        return "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randrange(200)))

    def broken_json(self, i: int) -> str:
        rng = self.rng
        text = self.dumps(self.good(i))
        variant = rng.randrange(6)
        if variant == 0:
            return text[: rng.randrange(len(text))]
        if variant == 1:
            return text + rng.choice([" trailing", "}", ",", "\x00", "\udc80"])
        if variant == 2:
            return self.dumps(self.json_value(1))  # a JSON value, mostly not an object
        if variant == 3:
            return text.replace('"', "'")
        if variant == 4:
            return rng.choice(["NaN", "Infinity", "{'a': 1}", "{,}", "", " ", "\ufeff{}", "{}"])
        return text.replace(":", "\u0000:", 1)

    def deep(self, i: int) -> str:
        rng = self.rng
        depth = rng.choice([2, 64, 512, 1023, 1024, 1025, 3000, 8000, 100_000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")])
        if opener == '[{"a":':
            depth = max(1, depth // 2)
        nested = opener * depth + "1" + closer * depth
        if rng.random() < 0.5:
            return nested
        field = rng.choice(FIELDS)
        good = self.dumps({k: v for k, v in self.good(i).items() if k != field})
        return good[:-1] + f', "{field}": {nested}' + "}"

    def huge(self, i: int) -> str:
        rng = self.rng
        obj = self.good(i)
        target = rng.choice([MAX_BODY - 200, MAX_BODY - 1, MAX_BODY, MAX_BODY + 1, 2 * MAX_BODY])
        char = rng.choice(["x", "é", "€", "😀", "\udcff"])
        width = len(char.encode("utf-8", "surrogatepass"))
        if rng.random() < 0.3:
            field = rng.choice(FIELDS)
            obj[field] = char * (target // width // 4)  # too long for its column
        else:
            obj["pad"] = ""
            size = len(self.dumps(obj).encode("utf-8", "surrogatepass"))
            obj["pad"] = char * max(0, (target - size) // width)
        return self.dumps(obj) if rng.random() < 0.8 else char * (target // width)

    def wrong_type(self, i: int) -> str:
        obj = self.good(i)
        for field in self.rng.sample(FIELDS, self.rng.randint(1, 3)):
            obj[field] = self.json_value()
        return self.dumps(obj)

    def missing(self, i: int) -> str:
        obj = self.good(i)
        for field in self.rng.sample(FIELDS, self.rng.randint(1, 3)):
            del obj[field]
        return self.dumps(obj)

    def hostile_field(self, i: int) -> str:
        """Injection/unicode text in any field: too long, NUL, blank, not an ip, or fine."""
        rng = self.rng
        obj = self.good(i)
        field = rng.choice(FIELDS)
        variant = rng.randrange(6)
        if variant == 0:
            obj[field] = self.text(1000) * 10
        elif variant == 1:
            obj[field] = rng.choice(NUL_TEXT)
        elif variant == 2:
            obj[field] = rng.choice(["", " ", "\t\n", "\u3000", "\u200f"])
        elif variant == 3:
            obj[field] = self.text(30)
        elif variant == 4:
            obj[field] = "1.2.3.4" + rng.choice(INJECTION)
        else:
            text = self.dumps(obj)
            marker = json.dumps(obj["device_id"])
            escape = rng.choice(["\\ud800", "\\udfff", "\\ud83d\\u0041", "\\udc00\\ud800"])
            return text.replace(marker, f'"{escape}"', 1)  # a lone surrogate, escaped
        return self.dumps(obj)

    def valid_hostile(self, i: int) -> str:
        """A valid login whose text columns carry injection and unicode text."""
        obj = self.good(i)
        suffix = f"#{i}"
        for field, width in VALID_COLUMNS.items():
            if field == "app_version" or self.rng.random() < 0.8:
                obj[field] = self.text(width - len(suffix)) + suffix
        return self.dumps(obj)

    def make(self, n: int) -> list[tuple[str, str]]:
        kinds = [
            (self.random_bytes, 3),
            (self.random_text, 3),
            (self.broken_json, 3),
            (self.deep, 2),
            (self.huge, 2),
            (self.wrong_type, 3),
            (self.missing, 2),
            (self.hostile_field, 5),
            (self.valid_hostile, 4),
        ]
        makers = [maker for maker, weight in kinds for _ in range(weight)]
        out = []
        for i in range(n):
            maker = self.rng.choice(makers)
            out.append((maker.__name__, maker(i)))
        return out


def has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def test_thousands_of_bad_bodies_are_each_accounted_for(
    flow_env: dict[str, str], database_url: str, keys: dict[str, Any]
) -> None:
    config = config_for(flow_env)
    step = config.validate_step
    assert step.max_body_bytes == MAX_BODY
    generated = Bodies(SEED).make(COUNT)
    bodies = {f"bad-{i:05d}": body for i, (_, body) in enumerate(generated)}
    kinds = {f"bad-{i:05d}": kind for i, (kind, _) in enumerate(generated)}
    ids = list(bodies)

    # What the validator says about each body: the flow must agree, id by id.
    validator = Validator(step, load_secrets(config).tokenizer)
    expected = {}
    for message_id, body in bodies.items():
        event = validator(SqsMessage(message_id, "rh", body, 0, 1))
        expected[message_id] = event
    valid = {m for m, e in expected.items() if e.rejection is None}
    rejected_reasons = Counter(e.rejection.reason for e in expected.values() if e.rejection)
    # the generator covers what it claims to
    assert len(valid) >= 300 and len(bodies) - len(valid) >= 2000
    assert set(rejected_reasons) == set(REASONS), rejected_reasons
    assert len({expected[m].fingerprint for m in valid}) == len(valid)  # no resends here
    assert sum(has_surrogate(b) for b in bodies.values()) >= 300
    assert max(len(b) for b in bodies.values()) >= 100_000
    assert any("\u0000" in b for b in bodies.values())

    base_ms = 1_700_000_000_000
    messages = [
        SqsMessage(m, f"rh-{m}", bodies[m], base_ms + n * 1000, 1) for n, m in enumerate(ids)
    ]
    started = time.monotonic()
    run(config, source=TestingSource(messages, batch_size=200), acker_factory=NoAcker)
    assert time.monotonic() - started < 60

    with psycopg.connect(database_url) as conn:
        outcome = assert_exact_ledger(conn, config, ids)
        assert outcome["row"] == valid
        assert outcome["rejected"] == set(ids) - valid
        assert not outcome["duplicate"]

        stored = {
            m: (reason, detail)
            for m, reason, detail in fetch(
                conn, "SELECT message_id, reason, detail FROM user_logins_rejected"
            )
        }
        for message_id, (reason, detail) in stored.items():
            rejection = expected[message_id].rejection
            assert rejection is not None
            assert (reason, detail) == (rejection.reason, rejection.detail), kinds[message_id]
        by_reason = fetch(conn, "SELECT reason, count(*) FROM user_logins_rejected GROUP BY 1")
        assert dict(by_reason) == rejected_reasons
        nul = [m for m, (_, detail) in stored.items() if detail.endswith(": contains NUL")]
        assert len(nul) >= 20  # "\u0000" in a field: rejected, not a failed COPY

        # every valid row verbatim: injection text is data, not SQL or COPY syntax
        rows = fetch(
            conn,
            "SELECT message_id, user_id, device_type, locale, app_version_text, app_version"
            " FROM user_logins",
        )
        assert len(rows) == len(valid)
        hostile = 0
        for message_id, user_id, device_type, locale, version_text, version in rows:
            fields = expected[message_id].fields
            assert fields is not None
            assert (user_id, device_type, locale, version_text, version) == (
                fields["user_id"],
                fields["device_type"],
                fields["locale"],
                fields["app_version_text"],
                fields["app_version"],
            ), kinds[message_id]
            hostile += any(t in (user_id or "") for t in INJECTION + UNICODE)
        assert hostile >= 200

        # the injection text stayed inert: every table is still there, nothing else appeared
        tables = {
            t
            for (t,) in fetch(
                conn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        }
        assert tables >= PIPELINE_TABLES
        assert fetch(conn, "SELECT count(*) FROM user_logins")[0][0] == len(valid)

        # sealed bodies open back to exactly what was sent (a sample, weighted to the odd ones)
        rng = random.Random(SEED)
        rejected_ids = sorted(outcome["rejected"])
        odd = {
            *[m for m in rejected_ids if has_surrogate(bodies[m])][:12],
            *[m for m in rejected_ids if "\u0000" in bodies[m]][:6],
            *sorted(rejected_ids, key=lambda m: len(bodies[m]))[-6:],  # the largest
        }
        rest = [m for m in rejected_ids if m not in odd]
        sample = sorted(odd | set(rng.sample(rest, 50 - len(odd))))
        assert len(sample) == 50
        assert sum(has_surrogate(bodies[m]) for m in sample) >= 12
        assert sum("\u0000" in bodies[m] for m in sample) >= 6
        opener = Opener(load_vault_private_key(keys["vault.key"]))
        sealed = dict(
            fetch(
                conn,
                "SELECT message_id, sealed_body FROM user_logins_rejected"
                " WHERE message_id = ANY(%s)",
                sample,
            )
        )
        assert len(sealed) == 50
        for message_id in sample:
            opened = opener.open_rejected(bytes(sealed[message_id]), message_id=message_id)
            sent = bodies[message_id]
            assert opened == sent
            assert opened.encode("utf-8", "surrogatepass") == sent.encode("utf-8", "surrogatepass")
