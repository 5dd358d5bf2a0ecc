"""SQS clients that speak the server's protocol: JSON, or query (XML) for LocalStack before 3.0.

botocore >= 1.31.81 speaks only SQS's JSON protocol; LocalStack 2.x and older (the producer
team's image) speak only the query protocol and answer every JSON call with HTTP 500
"Operation detection failed. Missing Action in request for query-protocol service". botocore no
longer ships the query model, but its data loader reads service models from extra folders (the
`data_path` setting, which AWS_DATA_PATH also sets): the query client's own botocore session
puts `query_model/` (botocore 1.31.80's model, Apache-2.0) first on that path. Only that
session does: both models carry API version 2012-11-05, so the JSON client must not see it.

`protocol`: `json` or `query` forces one; `auto` starts with JSON and, on that HTTP 500 (any
call, before botocore retries it), switches to query for good: for this client, and for every
client this process makes for the same endpoint afterwards. It says so once in the log.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError

from connectors.sqs.wire import HOT_OPERATIONS, JsonWire

log = logging.getLogger(__name__)

Protocol = Literal["auto", "json", "query"]
PROTOCOLS: tuple[Protocol, ...] = ("auto", "json", "query")
QUERY_MODEL_DIR = Path(__file__).resolve().with_name("query_model")
# What LocalStack < 3.0 answers to a JSON-protocol call (HTTP 500, an XML error body).
_QUERY_ONLY_TEXT = (b"Operation detection failed", b"Missing Action in request for query-protocol")
# Parameters the JSON model has and the older query model names differently.
_QUERY_RENAMES = {"receive_message": {"MessageSystemAttributeNames": "AttributeNames"}}

_query_only: set[str] = set()  # endpoints found to speak only the query protocol (this process)
_lock = threading.Lock()
# One session per protocol and process: a new session reloads the service models (~0.3 s).
# Sessions are not thread-safe, the clients they make are: clients are made under the lock.
_sessions: dict[str, boto3.session.Session] = {}
_session_lock = threading.Lock()


class QueryProtocolRequired(BotoCoreError):
    """The server refused the JSON protocol: it speaks only SQS's query protocol."""

    fmt = (
        "SQS at {endpoint} speaks only the query protocol (LocalStack before 3.0?): HTTP 500 "
        "{detail!r}. Set source.protocol to auto or query"
    )


def make_client(
    protocol: Protocol = "auto",
    *,
    region_name: str | None,
    endpoint_url: str | None = None,
    config: Config | None = None,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    fast: bool = True,
) -> SqsClient:
    """An SQS client for `protocol` (credentials: boto3's chain unless given). With `fast`
    (and botocore's standard retry mode), the JSON protocol's hot calls go through
    connectors/sqs/wire.py instead of botocore's per-call pipeline."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")

    def build(kind: Literal["json", "query"]) -> Any:
        with _session_lock:
            if kind not in _sessions:
                _sessions[kind] = _query_session() if kind == "query" else boto3.session.Session()
            client = _sessions[kind].client(
                "sqs",
                region_name=region_name,
                endpoint_url=endpoint_url,
                config=config,
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
            )
        actual = client.meta.service_model.protocol
        if actual != kind:  # e.g. the vendored model missing from an install
            raise RuntimeError(f"the {kind} SQS client loaded a {actual!r} model")
        if kind == "json":
            client.meta.events.register_first("needs-retry.sqs", _refuse_query_only)
        return client

    def wire(client: Any) -> JsonWire | None:
        if not fast or (client.meta.config.retries or {}).get("mode") != "standard" or _proxied():
            return None
        if aws_access_key_id is not None and aws_secret_access_key is not None:
            credentials: Any = Credentials(aws_access_key_id, aws_secret_access_key)
        else:
            with _session_lock:  # botocore's chain, as the boto3 client resolved it
                credentials = _sessions["json"].get_credentials()
        return JsonWire(client, credentials, _refuse_query_only)

    return SqsClient(protocol, build, endpoint_url or f"AWS SQS ({region_name})", wire)


def _proxied() -> bool:
    """An HTTP(S) proxy is set: the hot calls stay on boto3, which honours it."""
    return any(
        os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
    )


def _query_session() -> boto3.session.Session:
    """A session whose loader finds the vendored query model before botocore's JSON one."""
    core = botocore.session.get_session()
    paths = [str(QUERY_MODEL_DIR)]
    existing = core.get_config_variable("data_path")
    if existing:
        paths.append(existing)
    core.set_config_variable("data_path", os.pathsep.join(paths))
    return boto3.session.Session(botocore_session=core)


def _refuse_query_only(response: Any = None, request_dict: Any = None, **_: Any) -> None:
    """botocore's needs-retry hook: a query-only server's answer is final, not retried."""
    if response is None:
        return
    http = response[0]
    if http.status_code == 500 and any(text in http.content for text in _QUERY_ONLY_TEXT):
        detail = _error_message(http.content.decode("utf-8", "replace"))
        endpoint = (request_dict or {}).get("url", "?")
        raise QueryProtocolRequired(endpoint=endpoint, detail=detail)


def _error_message(body: str) -> str:
    """The <Message> of an XML error body, else the body's start."""
    start, end = body.find("<Message>"), body.find("</Message>")
    if 0 <= start < end:
        return body[start + len("<Message>") : end]
    return body[:200]


class SqsClient:
    """A boto3 SQS client (operations as attributes) that follows the server's protocol."""

    def __init__(
        self,
        protocol: Protocol,
        build: Callable[[Literal["json", "query"]], Any],
        endpoint: str,
        wire: Callable[[Any], JsonWire | None] | None = None,
    ) -> None:
        self._requested = protocol
        self._build = build
        self._make_wire = wire
        self._endpoint = endpoint
        self._clients: dict[str, Any] = {}
        self._wire: JsonWire | None = None
        self._lock = threading.Lock()

    @property
    def protocol(self) -> Literal["json", "query"]:
        """The protocol the next call uses."""
        if self._requested == "auto":
            return "query" if self._endpoint in _query_only else "json"
        return self._requested

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def _client(self, kind: Literal["json", "query"]) -> Any:
        with self._lock:  # boto3 sessions are not thread-safe; the clients they make are
            if kind not in self._clients:
                self._clients[kind] = client = self._build(kind)
                if kind == "json" and self._make_wire is not None:
                    self._wire = self._make_wire(client)
            return self._clients[kind]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attribute = getattr(self._client(self.protocol), name)
        if not callable(attribute) or name in ("close", "get_paginator", "get_waiter"):
            return attribute
        return functools.partial(self._call, name)

    def _call(self, operation: str, **kwargs: Any) -> Any:
        if self.protocol == "json":
            try:
                client = self._client("json")
                if self._wire is not None and operation in HOT_OPERATIONS:
                    return self._wire.call(operation, kwargs)
                return getattr(client, operation)(**kwargs)
            except QueryProtocolRequired:
                if self._requested != "auto":
                    raise
                self._switch()
        renames = _QUERY_RENAMES.get(operation, {})
        query_kwargs = {renames.get(k, k): v for k, v in kwargs.items()}
        return getattr(self._client("query"), operation)(**query_kwargs)

    def call_many(
        self, operation: str, many: list[dict[str, Any]], in_flight: int
    ) -> list[Any] | None:
        """`operation` once per parameters, up to `in_flight` at once from the calling thread,
        through the fast path (connectors/sqs/wire.py): each result is the response or the
        exception a call raised. None when this client has no fast path for it (the query
        protocol, a retry mode other than standard): the caller makes the calls itself."""
        if self.protocol != "json" or operation not in HOT_OPERATIONS:
            return None
        self._client("json")
        if self._wire is None:
            return None
        results = self._wire.call_many(operation, many, in_flight)
        if any(isinstance(r, QueryProtocolRequired) for r in results):
            if self._requested != "auto":
                return results
            self._switch()
            return None
        return results

    def _switch(self) -> None:
        with _lock:
            if self._endpoint in _query_only:
                return
            _query_only.add(self._endpoint)
        log.warning(
            "SQS at %s refused the JSON protocol (HTTP 500 'Operation detection failed', as "
            "LocalStack before 3.0 does): using the query protocol from now on",
            self._endpoint,
        )


def forget_detected() -> None:
    """Forget which endpoints were found query-only (tests that reuse a port)."""
    with _lock:
        _query_only.clear()
