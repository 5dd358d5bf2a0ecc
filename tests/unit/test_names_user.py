"""`names_user` at any depth (issue 18, item 7): a rejected body that names the user through
deeply nested JSON, or through JSON encoded inside JSON strings, is found; the search is a
work list, so no depth hits Python's recursion limit."""

from __future__ import annotations

import json
import sys
import time

import pytest

from logins.pii.erasure import names_user

ESCAPED = '"\\u0075-1"'  # "u-1" with a JSON escape: not in the raw text as a word


def encoded(document: str, times: int) -> str:
    """`document` as a JSON string inside a JSON object, `times` times over."""
    for _ in range(times):
        document = json.dumps({"payload": document})
    return document


def nested(inner: str, depth: int) -> str:
    return '{"a": [' * depth + inner + "]}" * depth


def test_an_escaped_id_deeper_than_the_recursion_limit_is_found() -> None:
    depth = 50 * sys.getrecursionlimit()
    assert "u-1" not in nested(ESCAPED, depth)
    assert names_user(nested(ESCAPED, depth), "u-1")
    assert not names_user(nested('"\\u0075-10"', depth), "u-1")
    with pytest.raises(RecursionError):
        json.loads(nested(ESCAPED, depth))  # what a tree parser does with it


@pytest.mark.parametrize("times", [1, 2, 5, 12])
def test_json_encoded_inside_json_strings_is_decoded_and_searched(times: int) -> None:
    body = encoded('{"user_id": ' + ESCAPED + ', "ip": "192.0.2.1"}', times)
    assert "u-1" not in body
    assert names_user(body, "u-1")
    assert names_user(body, "U-1")
    assert not names_user(body, "u-2")
    stranger = encoded('{"user_id": "\\u0075-10"}', times)
    assert not names_user(stranger, "u-1")


def test_a_numeric_id_inside_encoded_json_is_compared_as_a_number() -> None:
    assert names_user(encoded('{"user_id": 4.711e3}', 3), "4711")
    assert names_user(nested(encoded('{"user_id": 4711.0}', 2), 5000), "4711")
    assert not names_user(encoded('{"user_id": 47110}', 3), "4711")
    assert not names_user(encoded('{"app_version": "4711.2", "id": "u-4711"}', 3), "4711")


def test_a_deep_body_mixing_nesting_and_encoding_with_broken_json_around_it() -> None:
    inner = nested(encoded(nested('{"k": ' + ESCAPED + "}", 3000), 4), 3000)
    body = '{"broken": "\\q" ' + inner + " trailing garbage {"
    assert names_user(body, "u-1")
    assert not names_user(body.replace("\\\\u0075", "\\\\u0076"), "u-1")


def test_quotes_that_start_no_string_do_not_stop_the_search() -> None:
    assert names_user('"unterminated \\q" then {"user_id": ' + ESCAPED + "}", "u-1")
    assert not names_user('"' * 10_001, "u-1")


# Finding 8 of the red team's report (tests/attack/test_names_user_evasions.py on `attack`):
# bodies a real producer sends that name the user, which the search used to miss.
EVASIONS = {
    # a truncated body (a typical reason for rejection), the id written with an escape
    "truncated-escaped": ('{"user_id": "\\u0061lice', "alice"),
    # a bad escape later in the same literal no longer sinks the whole literal's decoding
    "bad-escape-same-literal": ('{"user_id": "\\u0061lice\\x"}', "alice"),
    "bad-escape-only-word": ('{"user_id": "\\u0061lice\\q-x"}', "alice"),
    "lone-backslash-at-the-end": ('{"user_id": "\\u0061lice\\', "alice"),
    # the same id in another Unicode normal form: NFD body, NFC id, and the other way round
    "nfd": ('{"user_id": "jose\u0301"}', "jos\u00e9"),
    "nfc-id-nfd": ('{"user_id": "jos\u00e9"}', "jose\u0301"),
    "nfd-escaped": ('{"user_id": "jose\\u0301"}', "jos\u00e9"),
    "nfkc-fullwidth": ('{"user_id": "\uff41\uff4c\uff49\uff43\uff45"}', "alice"),
    # form / percent encoding, also inside a JSON string and percent-encoded twice
    "percent": ("user_id=%61lice&ip=1.2.3.4", "alice"),
    "percent-in-json": ('{"form": "user_id=%41LICE&x=1"}', "alice"),
    "percent-twice": ("user_id=%2561lice", "alice"),
    "form-plus": ("user_id=john+doe&ip=1.2.3.4", "john doe"),
}


@pytest.mark.parametrize("case", sorted(EVASIONS))
def test_a_body_naming_the_user_in_an_evasive_form_is_found(case: str) -> None:
    body, user = EVASIONS[case]
    assert names_user(body, user), case


@pytest.mark.parametrize(
    ("body", "user"),
    [
        ('{"user_id": "\\u0061lice2', "alice"),  # truncated, another id
        ('{"user_id": "\\u0061lice\\x2"}', "alice2"),  # the bad escape is not the id
        ('{"user_id": "jose"}', "jos\u00e9"),  # an accent is not dropped
        ('{"user_id": "jos\u00e9"}', "jose"),
        ("user_id=%61lice2&ip=1.2.3.4", "alice"),
        ("user_id=%2561lice", "%61lice2"),
    ],
)
def test_the_lenient_decoding_still_matches_whole_ids_only(body: str, user: str) -> None:
    assert not names_user(body, user)


SIZE = 256 * 1024
ADVERSARIAL = {
    "quotes": '"' * SIZE,
    "escaped-quotes": '"' + '\\"' * (SIZE // 2),
    "bad-escapes": '"' + "\\x" * (SIZE // 2),
    "quote-backslash": '"\\' * (SIZE // 2),
    "percent-of-percent": "%" + "25" * (SIZE // 2),
    "percent-quotes": "%22" * (SIZE // 3),
    "mixed": '"\\u0061\\x%61+' * (SIZE // 16),
    "nfkc-expands-18x": "\ufdfa" * (SIZE // 3),  # 3 bytes in UTF-8, 18 characters in NFKC
    "encoded-12-times": encoded('{"user_id": "u-2"}', 12),
}


@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_an_adversarial_256_kb_body_is_searched_in_a_quarter_second(case: str) -> None:
    """The work stays about linear (n log n): a literal holding a quote needs its escapes
    doubled per level, and percent-decoding is done twice at most along one chain. CPU
    time, the best of 3 (the machine is shared)."""
    body = ADVERSARIAL[case][:SIZE]
    spent = []
    for _ in range(3):
        started = time.process_time()
        assert not names_user(body, "alice")
        spent.append(time.process_time() - started)
    assert min(spent) < 0.25, (case, spent)
