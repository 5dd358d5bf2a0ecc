"""SQS's body and batch rules, checked before sending (connectors/sqs/limits.py)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sized

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.sqs.limits import batches, entry_size, refusal

# The rules as SQS documents them, restated here rather than imported.
ALLOWED = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]+")


def accepted(body: str) -> bool:
    return bool(ALLOWED.fullmatch(body)) and len(body.encode("utf-8")) <= 262_144


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("", "empty"),
        ("x" * 262_145, "262145 bytes, over SQS's 262144"),
        ("\u00e9" * 131_073, "262146 bytes"),  # the limit is in bytes, not characters
        ("a\x00b", "U+0000 at position 1"),
        ("\x08", "U+0008 at position 0"),
        ("ok\ufffe", "U+FFFE at position 2"),
        ("\ud800", "U+D800"),  # a lone surrogate
    ],
)
def test_refused_bodies_name_the_rule(body: str, words: str) -> None:
    reason = refusal(body)
    assert reason is not None and words in reason


@pytest.mark.parametrize(
    "body", [" ", "\t\n\r", "x" * 262_144, "\ud7ff\ue000\ufffd", "\U00010000\U0010ffff", "\x7f"]
)
def test_accepted_bodies(body: str) -> None:
    assert refusal(body) is None


@settings(max_examples=500, deadline=None, database=None)
@given(st.text(st.characters(blacklist_categories=()), max_size=40))
def test_refusal_agrees_with_the_documented_rules(body: str) -> None:
    assert (refusal(body) is None) == accepted(body)


def entries(*bodies: str) -> list[dict[str, str]]:
    return [{"MessageBody": body} for body in bodies]


def sizes(groups: Iterable[Sized]) -> list[int]:
    return [len(group) for group in groups]


def test_batches_hold_ten_messages_and_256_kib_at_most() -> None:
    assert sizes(batches(entries(*["x"] * 25))) == [10, 10, 5]
    big = "y" * 100_000
    assert sizes(batches(entries(big, big, big, "z", big))) == [2, 3]
    for batch in batches(entries(*[big] * 5, *["z"] * 30)):
        assert len(batch) <= 10 and sum(entry_size(e) for e in batch) <= 262_144


def test_message_attributes_count_towards_the_size() -> None:
    attribute = {"traceparent": {"DataType": "String", "StringValue": "00-" + "a" * 50}}
    entry = {"MessageBody": "x" * 1000, "MessageAttributes": attribute}
    assert entry_size(entry) == 1000 + len("traceparent") + len("String") + 53
    near = {"MessageBody": "x" * 262_100, "MessageAttributes": attribute}  # body alone fits
    with pytest.raises(ValueError, match="with its attributes, over SQS's 262144"):
        list(batches([near]))


def test_a_refused_body_stops_before_its_batch_names_the_index_not_the_content() -> None:
    groups = batches(entries("secret-1", "secret-2", "", "secret-4"))
    with pytest.raises(ValueError, match=r"^message 2: SQS would refuse its body: empty") as caught:
        list(groups)
    assert "secret" not in str(caught.value)
