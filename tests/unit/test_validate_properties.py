"""Validation properties: any body at all gets exactly one outcome, never an exception.

For every generated body (any code points incl. lone surrogates and NUL, random bytes,
deep nesting, huge strings, wrong JSON types and injection/unicode text in every field):
the validator returns one outcome; a rejection carries one of REASONS and a detail made of
field names and limits only, never the value; a valid result holds only what PostgreSQL
can store (str without NUL, valid unicode, within the column length; int or None for the
version); and the same body always gives the same result. Bodies built from JSON values
are also checked against a small independent model of the schema's rules.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.steps.validate import REASONS, Validator
from logins.core.appversion import encode_app_version
from logins.core.config import ValidateStep, load_config
from logins.core.keys import TokenKey
from logins.core.records import Event, SqsMessage
from logins.core.tokens import Tokenizer
from tests.helpers import GOOD_LOGIN

# The production schema (config/base.yaml); only the key files are dummies, never read.
STEP = load_config(
    {"SQS_QUEUE_URL": "q", "LOGINS_TOKEN_KEY_FILE": "k", "LOGINS_VAULT_PUBLIC_KEY_FILE": "v"}
).validate_step
BIG_STEP = STEP.model_copy(update={"max_body_bytes": 262_144})  # the largest allowed
FIELDS = tuple(STEP.fields)
ROW_KEYS = {*FIELDS, *(f"{n}_text" for n, s in STEP.fields.items() if s.type == "version")}

INJECTION = [
    "'; DROP TABLE user_logins; --",
    "\\x00",
    "$$",
    "E'\\\\'",
    "$q$ DROP TABLE pii_vault $q$",
    "1' OR '1'='1",
    "\\N",
    "\\.",
    "a\tb\nc",
    "%s %(x)s {}",
]
UNICODE = [
    "\u200f\u202eevil\u202c",  # RTL mark, RTL override
    "שלום",
    "😀🔥",
    "👩\u200d👩\u200d👧",
    "e\u0301\u0302",  # combining marks
    "\ufeff",
    "\u2028",
    "\uffff\U0010ffff",
    "\u3000",
    "\u0000",
    "a\u0000b",
]
HOSTILE = INJECTION + UNICODE

# Every detail the schema can produce, by reason: field names, limits and JSON type names.
_FIELD = "(" + "|".join(map(re.escape, FIELDS)) + ")"
DETAILS = {
    "too_large": re.compile(r"body over \d+ bytes"),
    "not_json": re.compile(r"body is not JSON"),
    "not_object": re.compile(r"body is a JSON (array|str|number|boolean|NoneType), not an object"),
    "missing_field": re.compile(rf"{_FIELD}: required"),
    "null_field": re.compile(rf"{_FIELD}: must not be null"),
    "wrong_type": re.compile(rf"{_FIELD}: expected string, got (object|array|boolean|number)"),
    "too_long": re.compile(rf"{_FIELD}: longer than \d+ characters"),
    "invalid_value": re.compile(rf"{_FIELD}: (empty|not an IP address|contains NUL)"),
}
# The fixed text a detail may contain, so a value that merely *is* such a word (say "null")
# is not mistaken for a leak.
VOCABULARY = [
    "body over 16384 bytes",
    "body over 262144 bytes",
    "body is not JSON",
    *(
        f"body is a JSON {t}, not an object"
        for t in ("array", "str", "number", "boolean", "NoneType")
    ),
    *(
        f"{f}: {what}"
        for f, s in STEP.fields.items()
        for what in (
            "required",
            "must not be null",
            *(f"expected string, got {t}" for t in ("object", "array", "boolean", "number")),
            f"longer than {s.max_length} characters",
            "empty",
            "not an IP address",
            "contains NUL",
        )
    ),
]

FAST = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- strategies ------------------------------------------------------------------------------

# Any code point, lone surrogates and NUL included, with the odd ones made common.
any_char = st.one_of(
    st.characters(exclude_categories=()),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
    st.sampled_from(["\x00", "\u200f", "\u202e", "\u0301", "\ufeff", "😀", "'", '"', "\\", "$"]),
)
any_text = st.text(alphabet=any_char, max_size=80)
hostile_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=4).map("".join),
    st.tuples(st.sampled_from(HOSTILE), any_text).map("".join),
    any_text,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
MISSING = object()
field_values = st.one_of(
    st.just(MISSING),
    json_values,
    hostile_text,
    st.sampled_from(["", " ", "\t", "\u3000", "2001:db8::1", "10.0.0.1", "fe80::1%eth0"]),
    st.sampled_from(["2.3.0", "0.96", "3", "2.3.0-beta", "99999999.1"]),
    st.integers(min_value=0, max_value=300).map(lambda n: "v" * n),  # around every column size
)


@st.composite
def structured_bodies(draw: st.DrawFn) -> str:
    """A JSON object from GOOD_LOGIN with any fields replaced, removed or added, serialised one way
    or another (escaped or raw non-ASCII, shuffled keys)."""
    obj: dict[str, Any] = dict(GOOD_LOGIN)
    for name in draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=len(FIELDS))):
        value = draw(field_values)
        if value is MISSING:
            del obj[name]
        else:
            obj[name] = value
    obj.update(draw(st.dictionaries(any_text, json_values, max_size=2)))
    keys = draw(st.permutations(list(obj)))
    return json.dumps({k: obj[k] for k in keys}, ensure_ascii=draw(st.booleans()))


# -- the model and the invariants ------------------------------------------------------------


def has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def model(step: ValidateStep, body: str) -> tuple[str, str] | dict[str, Any]:
    """The schema's rules as README states them: (reason, detail) or the valid fields."""
    if len(body.encode("utf-8", "surrogatepass")) > step.max_body_bytes:
        return ("too_large", f"body over {step.max_body_bytes} bytes")
    try:
        obj = json.loads(body)
    except ValueError:
        return ("not_json", "body is not JSON")
    if has_surrogate(obj):  # not unicode: the parser refuses it, as raw text or as an escape
        return ("not_json", "body is not JSON")
    if not isinstance(obj, dict):
        return ("not_object", f"body is a JSON {json_type(obj)}, not an object")
    fields: dict[str, Any] = {}
    for name, spec in step.fields.items():
        value = obj.get(name, MISSING)
        if value is MISSING and spec.required:
            return ("missing_field", f"{name}: required")
        if value is None and not spec.nullable:
            return ("null_field", f"{name}: must not be null")
        if value is not MISSING and value is not None:
            if not isinstance(value, str):
                return ("wrong_type", f"{name}: expected string, got {json_type(value)}")
            if len(value) > spec.max_length:
                return ("too_long", f"{name}: longer than {spec.max_length} characters")
            if "\x00" in value:
                return ("invalid_value", f"{name}: contains NUL")
            if not value.strip():
                return ("invalid_value", f"{name}: empty")
            if spec.format == "ip":
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    return ("invalid_value", f"{name}: not an IP address")
        value = None if value is MISSING else value
        if spec.type == "version":
            fields[name] = None if value is None else encode_app_version(value)
            fields[f"{name}_text"] = value
        else:
            fields[name] = value
    return fields


VALIDATORS = {
    step.max_body_bytes: (
        Validator(step, Tokenizer([TokenKey("k1", b"\x01" * 32)])),
        Validator(step, Tokenizer([TokenKey("k1", b"\x01" * 32)])),  # a second instance
    )
    for step in (STEP, BIG_STEP)
}


def summary(event: Event) -> tuple[Any, ...]:
    rejection = event.rejection
    return (
        event.outcome,
        rejection and (rejection.reason, rejection.detail),
        event.fields,
        event.fingerprint,
    )


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings_in(v)]]
    return []


def validate(body: str, *, step: ValidateStep = STEP, values: Any = None) -> Event:
    """Validate `body` and check every invariant; `values`: what must not leak into a detail."""
    first, second = VALIDATORS[step.max_body_bytes]
    event = first(SqsMessage("id-1", "rh", body, 1_700_000_000_000, 1))

    # exactly one outcome
    assert not event.duplicate
    assert (event.rejection is None) != (event.fields is None)
    assert event.outcome in ("row", "rejected")

    if event.rejection is not None:
        reason, detail = event.rejection.reason, event.rejection.detail
        assert reason in REASONS
        assert DETAILS[reason].fullmatch(detail), (reason, detail)
        for value in strings_in(values):
            if len(value) >= 4 and not any(value in word for word in VOCABULARY):
                assert value not in detail
        assert event.fingerprint == b""
    else:
        fields = event.fields
        assert fields is not None and set(fields) == ROW_KEYS
        for name, value in fields.items():
            spec = STEP.fields.get(name)
            if spec is not None and spec.type == "version":
                assert value is None or (isinstance(value, int) and 0 <= value < 2**31)
                continue
            if value is None:
                assert spec is not None and spec.nullable
                continue
            # what PostgreSQL text can store: no NUL, encodable as strict UTF-8, fits
            assert type(value) is str
            assert "\x00" not in value
            value.encode("utf-8")
            assert 0 < len(value) <= STEP.fields[name.removesuffix("_text")].max_length
        assert len(event.fingerprint) == 16

    # deterministic: again, and with another instance
    again = first(SqsMessage("id-1", "rh", body, 1_700_000_000_000, 1))
    other = second(SqsMessage("id-1", "rh", body, 1_700_000_000_000, 1))
    assert summary(again) == summary(other) == summary(event)
    return event


def matches_model(event: Event, step: ValidateStep, body: str) -> None:
    expected = model(step, body)
    if isinstance(expected, tuple):
        assert event.rejection is not None, expected
        assert (event.rejection.reason, event.rejection.detail) == expected
    else:
        assert event.rejection is None, (event.rejection, expected)
        assert event.fields == expected  # verbatim, injection text included


# -- properties ------------------------------------------------------------------------------


@FAST
@given(st.text(alphabet=any_char, max_size=400))
def test_any_text_gets_one_outcome(body: str) -> None:
    validate(body, values=body)


@FAST
@given(st.binary(max_size=400), st.sampled_from(["utf-8", "latin-1"]))
def test_any_bytes_get_one_outcome(raw: bytes, encoding: str) -> None:
    body = raw.decode(encoding, "surrogateescape")
    matches_model(validate(body, values=body), STEP, body)


@FAST
@given(structured_bodies())
def test_structured_bodies_follow_the_rules(body: str) -> None:
    event = validate(body, values=json.loads(body))
    matches_model(event, STEP, body)


@FAST
@given(
    st.sampled_from(FIELDS),
    hostile_text,
    st.booleans(),
)
def test_hostile_text_in_any_field_is_kept_verbatim_or_rejected(
    field: str, text: str, ascii_only: bool
) -> None:
    body = json.dumps({**GOOD_LOGIN, field: text}, ensure_ascii=ascii_only)
    event = validate(body, values=text)
    matches_model(event, STEP, body)
    if event.fields is not None:
        key = f"{field}_text" if STEP.fields[field].type == "version" else field
        assert event.fields[key] == text


@FAST
@given(
    st.sampled_from([1, 2, 100, 1023, 1024, 1025, 2000, 8000, 50_000, 100_000]),
    st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"k":', "}]"), ("[", "")]),
    st.sampled_from([None, *FIELDS]),
    st.sampled_from([STEP, BIG_STEP]),
)
def test_deep_nesting_is_refused_without_a_crash(
    depth: int, brackets: tuple[str, str], field: str | None, step: ValidateStep
) -> None:
    opener, closer = brackets
    nested = opener * depth + "1" + closer * depth
    if field is None:
        body, allowed = nested, {"not_json", "not_object", "missing_field"}
    else:
        good = json.dumps({k: v for k, v in GOOD_LOGIN.items() if k != field})
        body = good[:-1] + f', "{field}": {nested}' + "}"
        allowed = {"not_json", "wrong_type"}
    event = validate(body, step=step)
    assert event.rejection is not None
    if len(body.encode()) > step.max_body_bytes:
        assert event.rejection.reason == "too_large"
    else:
        assert event.rejection.reason in allowed
        if depth > 1100:
            assert event.rejection.reason == "not_json"  # the parser's depth limit


@FAST
@given(
    st.integers(min_value=-300, max_value=3 * STEP.max_body_bytes),
    st.sampled_from(["x", "é", "€", "😀", "\udcff", "\x00", "\u200f"]),
    st.sampled_from(["pad", "bare", *FIELDS]),
    st.booleans(),
)
def test_huge_strings(size: int, char: str, where: str, ascii_only: bool) -> None:
    """Bodies around and far over max_body_bytes, in bytes not characters, and huge fields."""
    width = len(char.encode("utf-8", "surrogatepass"))
    if where == "bare":
        body = char * max(0, (STEP.max_body_bytes + size) // width)
    elif where == "pad":
        body = json.dumps(
            {**GOOD_LOGIN, "pad": char * max(0, size // width)}, ensure_ascii=ascii_only
        )
    else:
        body = json.dumps({**GOOD_LOGIN, where: char * max(0, size // 8)}, ensure_ascii=ascii_only)
    event = validate(body, values=char * 4)
    if where != "bare":
        matches_model(event, STEP, body)
    if len(body.encode("utf-8", "surrogatepass")) > STEP.max_body_bytes:
        assert event.rejection is not None and event.rejection.reason == "too_large"


# -- the cases that matter for PostgreSQL, spelled out -----------------------------------------


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", ["\u0000", "a\u0000b", " \u0000 ", "1.2.3.4\u0000", "\u0000x"])
def test_nul_in_a_field_is_rejected(field: str, value: str) -> None:
    """JSON may carry "\\u0000"; PostgreSQL text cannot, so COPY would fail the whole batch."""
    event = validate(json.dumps({**GOOD_LOGIN, field: value}), values=value)
    assert event.rejection is not None
    assert (event.rejection.reason, event.rejection.detail) == (
        "invalid_value",
        f"{field}: contains NUL",
    )


def test_nul_is_checked_after_the_length() -> None:
    event = validate(json.dumps({**GOOD_LOGIN, "device_type": "\u0000" * 33}))
    assert event.rejection is not None
    assert event.rejection.reason == "too_long"


def test_nul_in_an_ignored_key_does_not_matter() -> None:
    event = validate(json.dumps({**GOOD_LOGIN, "extra\u0000": "a\u0000b"}))
    assert event.outcome == "row"


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "\\ud800\\u0041", "\\udc00\\ud800"])
def test_lone_surrogates_never_reach_a_field(field: str, escape: str) -> None:
    """A lone surrogate cannot be encoded as UTF-8 for PostgreSQL. orjson refuses it, escaped
    or raw, so such a body is `not_json` and no "not valid unicode" check is needed. If an
    orjson upgrade ever accepts them, this fails: then reject them in `_check_field`."""
    good = json.dumps(GOOD_LOGIN)
    escaped = good.replace(json.dumps(GOOD_LOGIN[field]), f'"{escape}"', 1)
    raw = json.dumps({**GOOD_LOGIN, field: json.loads(f'"{escape}"')}, ensure_ascii=False)
    for body in (escaped, raw):
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(body)
        event = validate(body)
        assert event.rejection is not None
        assert event.rejection.reason == "not_json"


def test_a_surrogate_pair_escape_is_one_valid_character() -> None:
    event = validate(json.dumps({**GOOD_LOGIN, "user_id": "u-😀"}))  # "u-\\ud83d\\ude00"
    assert event.fields is not None and event.fields["user_id"] == "u-😀"


@pytest.mark.parametrize("text", [t for t in HOSTILE if "\x00" not in t])
@pytest.mark.parametrize("field", ["user_id", "device_type", "locale", "device_id"])
def test_injection_and_unicode_text_is_data(field: str, text: str) -> None:
    event = validate(json.dumps({**GOOD_LOGIN, field: f"x{text}"}))
    assert event.fields is not None and event.fields[field] == f"x{text}"
