"""`names_user` at any depth (issue 18, item 7): a rejected body that names the user through
deeply nested JSON, or through JSON encoded inside JSON strings, is found; the search is a
work list, so no depth hits Python's recursion limit."""

from __future__ import annotations

import json
import sys

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
