"""Offline test cases for a configuration (`logins test`): messages in, expected outcome out.

The cases run through the configured validate, dedupe and mask steps exactly as the flow wires
them (`flows.batch.BatchSteps`, the Lambda runner's in-memory pipeline), in order and as one
batch, so a resend is a duplicate of an earlier case; with a throwaway token key and vault key
made for the run, so no SQS, no PostgreSQL and no real key is needed. A row is the sink's
row: the table's columns from `connectors.postgres.schema.table_schema`.

    cases:
      - name: a login as the producer sends it
        message: {"user_id": "u-1", "ip": "199.172.111.135", ...}  # a mapping (sent as JSON)
        sent_at: "2026-12-01T10:00:00Z"                            # optional SentTimestamp
        expect:
          row: {app_version: 20300, masked_ip: {token_of: "199.172.111.135"}}  # columns named
      - name: not a login
        message: '{"foo": "oops"}'                                 # a string: sent as is
        expect: {rejected: missing_field}
      - name: the same login again
        message: {...}
        expect: {duplicate: true}
"""

from __future__ import annotations

import base64
import difflib
import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from nacl.public import PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from connectors.postgres.schema import TableSchema, table_schema
from flows.batch import BatchSteps
from logins.core.config import AppConfig, MaskStep
from logins.core.keys import TokenKey, hmac_key_id
from logins.core.records import REASONS, Event, SqsMessage
from logins.core.tokens import Tokenizer
from logins.core.vault import Sealer


class CaseFileError(Exception):
    """A test file that cannot be run; the message names the file and the case."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenOf(_Strict):
    """An expected token column: the token of this value under the run's token key."""

    token_of: str


class Expect(_Strict):
    """Exactly one outcome: a row (only the columns named are compared), a rejection with
    its reason code, or a recognised duplicate."""

    row: dict[str, TokenOf | Any] | None = None
    rejected: str | None = None
    duplicate: bool | None = None

    @model_validator(mode="after")
    def _one(self) -> Expect:
        given = [k for k in ("row", "rejected", "duplicate") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of row, rejected, duplicate"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.duplicate is False:
            raise ValueError("duplicate: only `true` is an outcome (expect a row instead)")
        if self.rejected is not None and self.rejected not in REASONS:
            raise ValueError(
                f"rejected: {self.rejected!r} is not a reason code"
                f"{_did_you_mean(self.rejected, REASONS)} ({', '.join(REASONS)})"
            )
        return self

    @property
    def outcome(self) -> str:
        return "row" if self.row is not None else "rejected" if self.rejected else "duplicate"


class Case(_Strict):
    name: str = Field(min_length=1)
    message: dict[str, Any] | str
    sent_at: datetime | None = None
    expect: Expect


class CaseFile(_Strict):
    cases: list[Case] = Field(min_length=1)


@dataclass(frozen=True)
class Difference:
    """One thing a case expected and did not get: what (a column or `outcome`), both sides."""

    what: str
    expected: str
    actual: str


@dataclass(frozen=True)
class CaseResult:
    file: Path
    case: Case
    differences: list[Difference]

    @property
    def passed(self) -> bool:
        return not self.differences


def load_cases(path: Path, schema: TableSchema, token_columns: dict[str, str]) -> list[Case]:
    """The cases of `path`, checked against the table's columns; CaseFileError if malformed."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CaseFileError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CaseFileError(f"{path}: not valid YAML: {exc}") from None
    try:
        cases = CaseFile.model_validate(raw).cases
    except ValidationError as exc:
        raise CaseFileError(_describe(path, raw, exc)) from None
    columns = [c.name for c in schema.row]
    for number, case in enumerate(cases, 1):
        for column, value in (case.expect.row or {}).items():
            where = f"{path}: case {number} ({case.name!r}): expect.row.{column}"
            if column not in columns:
                raise CaseFileError(
                    f"{where}: not a column of {schema.table}{_did_you_mean(column, columns)}"
                    f" (columns: {', '.join(columns)})"
                )
            if isinstance(value, dict) and "token_of" in value:
                raise CaseFileError(
                    f'{where}: write {{token_of: "VALUE"}}, a string and nothing else'
                )
            if isinstance(value, TokenOf) and column not in token_columns:
                raise CaseFileError(
                    f"{where}: token_of is for a masked field's token column"
                    f" ({', '.join(token_columns)})"
                )
    return cases


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _describe(path: Path, raw: Any, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if len(loc) >= 2 and loc[0] == "cases" and isinstance(loc[1], int):
            number = loc[1] + 1
            name = _case_name(raw, loc[1])
            rest = ".".join(str(p) for p in loc[2:] if p not in ("TokenOf", "any")) or "(case)"
            where = f"case {number}" + (f" ({name!r})" if name else "") + f": {rest}"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{path}: {where}: {message}")
    return "\n".join(dict.fromkeys(problems))


def _case_name(raw: Any, index: int) -> str | None:
    try:
        name = raw["cases"][index]["name"]
    except (KeyError, IndexError, TypeError):
        return None
    return name if isinstance(name, str) else None


class Runner:
    """The configured steps with throwaway keys, and the table the rows would go to."""

    def __init__(self, config: AppConfig) -> None:
        secret = secrets.token_bytes(32)
        self.tokenizer = Tokenizer([TokenKey(hmac_key_id(secret), secret)])
        self._steps = BatchSteps(config, self.tokenizer, Sealer(PrivateKey.generate().public_key))
        self.schema = table_schema(config)
        # token column -> the field whose token it holds
        self.token_columns = {
            column: field
            for step in config.steps
            if isinstance(step, MaskStep)
            for field, column in step.fields.items()
        }
        self._started = datetime.now(timezone.utc)

    def run(self, path: Path) -> list[CaseResult]:
        cases = load_cases(path, self.schema, self.token_columns)
        messages = [self._message(case) for case in cases]
        by_id = {e.message.message_id: e for e in self._steps(messages)}
        return [
            CaseResult(path, case, self._compare(case, by_id[message.message_id]))
            for case, message in zip(cases, messages, strict=True)
        ]

    def _message(self, case: Case) -> SqsMessage:
        body = (
            case.message
            if isinstance(case.message, str)
            else json.dumps(case.message, default=str, ensure_ascii=False)
        )
        sent = case.sent_at or self._started
        if sent.tzinfo is None:
            sent = sent.replace(tzinfo=timezone.utc)
        return SqsMessage(
            message_id=str(uuid.uuid4()),
            receipt_handle=base64.b64encode(secrets.token_bytes(12)).decode(),
            body=body,
            sent_timestamp_ms=int(sent.timestamp() * 1000),
            receive_count=1,
        )

    def row(self, event: Event) -> dict[str, Any]:
        """The event's row as the sink writes it: {column: value}."""
        fields = event.fields or {}
        sent_at = datetime.fromtimestamp(event.message.sent_timestamp_ms / 1000, tz=timezone.utc)
        delivery = {
            "message_id": event.message.message_id,
            "sent_at": sent_at,
            "create_date": sent_at.date(),
        }
        return {
            c.name: fields.get(c.key) if c.key is not None else delivery.get(c.name)
            for c in self.schema.row
        }

    def _compare(self, case: Case, event: Event) -> list[Difference]:
        expect = case.expect
        reason = event.rejection.reason if event.rejection is not None else None
        if event.outcome != expect.outcome or reason != expect.rejected:
            return [Difference("outcome", _outcome_text(expect), _actual_outcome(event))]
        if expect.row is None:
            return []
        row = self.row(event)
        differences = []
        for column, wanted in expect.row.items():
            actual = row[column]
            if isinstance(wanted, TokenOf):
                token = self.tokenizer.token(self.token_columns[column], wanted.token_of)
                if actual != token:
                    differences.append(
                        Difference(
                            column,
                            f"token_of {_show(wanted.token_of)}",
                            "NULL" if actual is None else "the token of another value",
                        )
                    )
            elif not _equal(wanted, actual):
                shown = wanted if isinstance(actual, date) and isinstance(wanted, str) else None
                differences.append(Difference(column, shown or _show(wanted), _show(actual)))
        return differences


def _outcome_text(expect: Expect) -> str:
    if expect.rejected is not None:
        return f"rejected: {expect.rejected}"
    return expect.outcome


def _actual_outcome(event: Event) -> str:
    if event.rejection is not None:
        return f"rejected: {event.rejection.reason} ({event.rejection.detail})"
    return event.outcome


def _equal(wanted: Any, actual: Any) -> bool:
    """YAML's value against the row's: times and dates by instant/day (written as text or
    as YAML timestamps), booleans only equal booleans, numbers by value."""
    if isinstance(actual, datetime):
        wanted = _as_datetime(wanted)
        return wanted is not None and wanted == actual
    if isinstance(actual, date):
        if isinstance(wanted, str):
            try:
                wanted = date.fromisoformat(wanted)
            except ValueError:
                return False
        return type(wanted) is date and wanted == actual
    if isinstance(actual, bool) or isinstance(wanted, bool):
        return type(actual) is type(wanted) and actual == wanted
    return bool(wanted == actual)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, str):
        text = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _show(value: Any) -> str:
    """A value as YAML would spell it (NULL for nothing), for the side-by-side table."""
    if value is None:
        return "NULL"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, default=str, ensure_ascii=False)
