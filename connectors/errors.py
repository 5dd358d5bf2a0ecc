"""What a failed call to SQS or PostgreSQL means, in words an operator can act on: the
service, where (endpoint, queue URL, host/database/user; never a password), the server's own
error code and message, and whether waiting can help.

Permanent (waiting cannot help): no such queue, access denied, bad or missing credentials, a bad
signature, an unknown host (at start), PostgreSQL's 28P01/28000 (authentication), 3D000 (no such
database), 42501 (insufficient privilege), 42P01 (no such table). Everything else (refused
connections, timeouts, 5xx, throttling, a server starting up) is transient and retried.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Any

import psycopg
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

from connectors.sqs.protocol import QueryProtocolRequired


@dataclass(frozen=True)
class Failure:
    """One failed call, described."""

    service: str  # "SQS" | "PostgreSQL"
    where: str  # the endpoint / queue URL, or host:port/database (user ...)
    code: str  # the server's code (SQLSTATE, SQS error code) or the connection's (UnknownHost)
    message: str
    permanent: bool

    def __str__(self) -> str:
        return f"{self.service} {self.where}: {self.code}: {self.message}"


class ServiceError(Exception):
    """A permanent failure: the flow stops (exit 2) instead of retrying."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(str(failure))
        self.failure = failure


# --- SQS ----------------------------------------------------------------------------------------

SQS_PERMANENT_CODES = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",  # the query protocol's and awsQueryError's
        "QueueDoesNotExist",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",  # unknown access key
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",  # wrong secret key
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "AuthFailure",
        "ExpiredToken",
        "InvalidSecurity",
        "InvalidAddress",  # a queue URL SQS cannot parse
        "KMS.AccessDeniedException",
        "KmsAccessDenied",
    }
)


def sqs_failure(exc: BaseException, where: str, *, at_start: bool = False) -> Failure:
    """Describe a botocore exception. An unknown host is permanent at start only: a name that
    never resolved is a typo, one that stops resolving while running is an outage."""
    if isinstance(exc, ClientError):
        error: dict[str, Any] = dict(exc.response.get("Error", {}))
        code = str(error.get("Code") or "Unknown")
        raw = str(error.get("Message") or error.get("message") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code.isdigit():  # an XML body the JSON parser could not read: its code, or the status
            code = _xml_field(raw, "Code") or f"HTTP{code}"
        message = _xml_field(raw, "Message") or raw
        permanent = code in SQS_PERMANENT_CODES or status in (401, 403)
        return Failure("SQS", where, code, message or f"HTTP {status}", permanent)
    if isinstance(exc, QueryProtocolRequired):
        return Failure("SQS", where, "QueryProtocolOnly", str(exc), True)
    if isinstance(exc, NoCredentialsError):
        return Failure("SQS", where, "NoCredentials", str(exc), True)
    if isinstance(exc, ParamValidationError):
        return Failure("SQS", where, "ParamValidation", " ".join(str(exc).split()), True)
    cause = _root_cause(exc)
    if isinstance(cause, socket.gaierror):
        return Failure("SQS", where, "UnknownHost", f"{cause.strerror or cause}", at_start)
    if isinstance(cause, ConnectionRefusedError):
        return Failure("SQS", where, "ConnectionRefused", f"{exc}: connection refused", False)
    if isinstance(exc, BotoCoreError):
        return Failure("SQS", where, type(exc).__name__, str(exc), False)
    return Failure("SQS", where, type(exc).__name__, str(exc), False)


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: botocore wraps urllib3's, which wraps the socket's."""
    seen: set[int] = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "kwargs", {}).get("error") if hasattr(current, "kwargs") else None
        nxt = current.__cause__ or current.__context__ or inner
        if not isinstance(nxt, BaseException):
            break
        current = nxt
    return current


def _xml_field(text: str, name: str) -> str | None:
    """<Code> or <Message> of an XML error body (what a JSON client shows of a query server)."""
    found = re.search(rf"<{name}>(.*?)</{name}>", text, re.S)
    return found.group(1) if found else None


def sqs_where(queue_url: str, endpoint_url: str | None) -> str:
    if endpoint_url and not queue_url.startswith(endpoint_url.rstrip("/")):
        return f"queue {queue_url} (endpoint {endpoint_url})"
    return f"queue {queue_url}"


# --- PostgreSQL ---------------------------------------------------------------------------------

PG_PERMANENT_STATES = frozenset({"28P01", "28000", "3D000", "42501", "42P01", "3F000"})
# libpq reports a failed connection as text only (no SQLSTATE reaches the client), so the
# server's FATAL messages are mapped to their SQLSTATE here (PostgreSQL's English texts).
_CONNECT_MESSAGES = tuple(
    (re.compile(pattern), state)
    for pattern, state in (
        (r"password authentication failed", "28P01"),
        (r"permission denied for database", "42501"),
        (r'database ".*" does not exist', "3D000"),
        (r'role ".*" (does not exist|is not permitted to log in)', "28000"),
        (r"no pg_hba\.conf entry", "28000"),
        (r"the database system is (starting up|shutting down)", "57P03"),
        (r"too many (clients|connections)", "53300"),
    )
)


def pg_failure(exc: BaseException, where: str, *, at_start: bool = False) -> Failure:
    """Describe a psycopg exception; the message is the server's, never the DSN."""
    if isinstance(exc, psycopg.ProgrammingError) and exc.sqlstate is None:
        # libpq refused the DSN itself; its message may quote the password: not shown.
        return Failure("PostgreSQL", where, "InvalidDSN", "sink.dsn cannot be parsed", True)
    message = _first_line(str(exc))
    code = exc.sqlstate if isinstance(exc, psycopg.Error) and exc.sqlstate else None
    if code is None:
        code = _connect_code(message)
    if code in PG_PERMANENT_STATES:
        return Failure("PostgreSQL", where, code, _server_part(message), True)
    if code == "UnknownHost":
        return Failure("PostgreSQL", where, code, message, at_start)
    return Failure("PostgreSQL", where, code, _server_part(message), False)


def _connect_code(message: str) -> str:
    lowered = message.lower()
    if "failed to resolve host" in lowered or "could not translate host name" in lowered:
        return "UnknownHost"
    if "connection refused" in lowered:
        return "ConnectionRefused"
    if "timeout expired" in lowered:
        return "ConnectTimeout"
    if "fatal:" in lowered:
        fatal = message[lowered.index("fatal:") :]
        for pattern, state in _CONNECT_MESSAGES:
            if pattern.search(fatal):
                return state
    return "ConnectionFailed"


def _first_line(text: str) -> str:
    return " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""


def _server_part(message: str) -> str:
    """'connection failed: connection to server at ... failed: FATAL: x' -> 'FATAL: x'."""
    index = message.find("FATAL:")
    return message[index:] if index >= 0 else message


def pg_where(dsn: str) -> str:
    """host:port/database (user U) of a DSN: what to look at, never the password."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(sink.dsn: unparseable)"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port") or "5432"
    database = parts.get("dbname") or parts.get("user") or "?"
    user = parts.get("user")
    return f"{host}:{port}/{database}" + (f" (user {user})" if user else "")
