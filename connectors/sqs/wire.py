"""The hot SQS calls (ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch) in the
JSON protocol without botocore's per-call pipeline.

A boto3 call spends most of its client CPU outside the request itself: parameter validation
and serialisation walking the model, a dozen event hooks, endpoint rules, parsing walking the
output shape, and a pure-Python HTTP stack (http.client, email header parsing). For the three
calls every message makes, this module keeps only what a call needs: AWS's own C runtime
(`awscrt`, the optional dependency botocore itself uses for its CRT features) sends the
request over pooled keep-alive connections and signs it (SigV4, with the credentials of
botocore's chain, refreshed by botocore); bodies are written and read with orjson; retries are
botocore's standard mode itself (its RetryHandler: backoff with jitter, the retry quota);
errors are parsed by botocore's JSON parser into the same `ClientError` a boto3 call raises,
and connection failures become botocore's own exceptions, so connectors/errors.py classifies
them unchanged. Measured (docs/benchmarks.md): a one-thread drain costs ~3.5x less client CPU
than through boto3, ~2.4x less than urllib3 with botocore's SigV4Auth.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import TimeoutError as FutureTimeout
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

import orjson
from awscrt import auth, http, io
from awscrt.exceptions import AwsCrtError
from botocore.awsrequest import AWSResponse, HeadersDict
from botocore.endpoint import convert_to_response_dict
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.parsers import create_parser
from botocore.retries import quota, standard

log = logging.getLogger(__name__)
HOT_OPERATIONS = {
    "receive_message": "ReceiveMessage",
    "delete_message_batch": "DeleteMessageBatch",
    "change_message_visibility_batch": "ChangeMessageVisibilityBatch",
}
_CONTENT_TYPE = "application/x-amz-json-1.0"


class _Body:
    """What botocore's AWSResponse reads a body from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> list[bytes]:
        return [self._data]


class _Sent:
    """One attempt in flight: its connection, and the response as awscrt hands it over."""

    def __init__(self, connection: http.HttpClientConnection) -> None:
        self.connection = connection
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.done: Any = None

    def on_response(self, headers: list[tuple[str, str]], **_: Any) -> None:
        self.headers = headers

    def on_body(self, chunk: bytes, **_: Any) -> None:
        self.chunks.append(chunk)


class _Connections:
    """Keep-alive HTTP/1.1 connections to one endpoint: a call takes an idle one (or opens
    one) and gives it back when its response is complete; at most `size` are kept idle."""

    def __init__(self, url: str, connect_timeout: float, size: int) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = parts.netloc
        self._tls = None
        if parts.scheme == "https":
            options = io.TlsContextOptions()
            bundle = os.environ.get("AWS_CA_BUNDLE")  # botocore's own setting for a private CA
            if bundle:
                options.override_default_trust_store_from_path(None, bundle)
            self._tls = io.ClientTlsContext(options).new_connection_options()
            self._tls.set_server_name(self.host)
        self._socket = io.SocketOptions()
        self._socket.connect_timeout_ms = int(connect_timeout * 1000)
        self._connect_timeout = connect_timeout
        self._size = size
        self._idle: list[http.HttpClientConnection] = []
        self._lock = threading.Lock()

    def take(self) -> http.HttpClientConnection:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if connection.is_open():
                    return connection
        return http.HttpClientConnection.new(
            host_name=self.host,
            port=self.port,
            socket_options=self._socket,
            tls_connection_options=self._tls,
        ).result(self._connect_timeout + 1)

    def give_back(self, connection: http.HttpClientConnection) -> None:
        with self._lock:
            if len(self._idle) < self._size and connection.is_open():
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class JsonWire:
    """The hot calls of one SQS JSON-protocol client, made from that (boto3) client: its
    endpoint, region, timeouts, pool size and retry settings (botocore's standard mode);
    thread-safe, as boto3 clients are. `credentials` are botocore's (the chain's, or given).

    `refuse` is called with every HTTP response before retries are considered (the query-only
    server check of connectors/sqs/protocol.py raises from it)."""

    def __init__(self, client: Any, credentials: Any, refuse: Any) -> None:
        meta = client.meta
        config: Any = meta.config  # botocore's merged Config (its stubs lack the fields)
        self._model = meta.service_model
        self._operations = {
            name: self._model.operation_model(name) for name in HOT_OPERATIONS.values()
        }
        self._url = meta.endpoint_url.rstrip("/") + "/"
        self._credentials = credentials
        self._refuse = refuse
        self._parser = create_parser(self._model.protocol)
        self._read_timeout = float(config.read_timeout)
        self._connections = _Connections(
            self._url, float(config.connect_timeout), config.max_pool_connections
        )
        self._signing = auth.AwsSigningConfig(
            algorithm=auth.AwsSigningAlgorithm.V4,
            signature_type=auth.AwsSignatureType.HTTP_REQUEST_HEADERS,
            credentials_provider=auth.AwsCredentialsProvider.new_delegate(self._frozen),
            region=meta.region_name,
            service="sqs",
        )
        retries = config.retries or {}
        if retries.get("mode") != "standard":
            raise ValueError(f"JsonWire retries as botocore's standard mode, not {retries}")
        max_attempts = retries.get("total_max_attempts", standard.DEFAULT_MAX_ATTEMPTS)
        adapter = standard.RetryEventAdapter()
        throttling = standard.ThrottlingErrorDetector(adapter)
        self._quota = standard.RetryQuotaChecker(quota.RetryQuota(), throttling)
        self._retry = standard.RetryHandler(
            retry_policy=standard.RetryPolicy(
                retry_checker=standard.StandardRetryConditions(max_attempts=max_attempts),
                retry_backoff=standard.ExponentialBackoff(
                    service_name="sqs", throttling_detector=throttling
                ),
            ),
            retry_event_adapter=adapter,
            retry_quota=self._quota,  # type: ignore[arg-type]  # botocore passes the checker
            service_name="sqs",
        )

    def _frozen(self) -> auth.AwsCredentials:
        """The credentials of botocore's chain now (a refreshable set renews itself here)."""
        if self._credentials is None:
            raise NoCredentialsError()
        frozen = self._credentials.get_frozen_credentials()
        return auth.AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One call (`operation` as boto3 names it), retried as botocore's standard mode does;
        returns the parsed response, raises what a boto3 call would."""
        name = HOT_OPERATIONS[operation]
        body = orjson.dumps(params)
        return self._complete(name, body, self._attempt(name, body))

    def call_many(
        self, operation: str, many: list[dict[str, Any]], in_flight: int
    ) -> list[dict[str, Any] | Exception]:
        """`operation` once per parameters, up to `in_flight` calls at once from this thread
        (each on its own connection: no thread per call); each result is the parsed response
        or the exception a boto3 call would have raised, in the order given."""
        name = HOT_OPERATIONS[operation]
        bodies = [orjson.dumps(params) for params in many]
        results: list[dict[str, Any] | Exception] = []
        started: deque[_Sent | BotoCoreError] = deque()
        for body in bodies:
            started.append(self._start(name, body))
            if len(started) >= in_flight:
                results.append(self._settle(name, bodies[len(results)], started.popleft()))
        while started:
            results.append(self._settle(name, bodies[len(results)], started.popleft()))
        return results

    def _settle(
        self, name: str, body: bytes, sent: _Sent | BotoCoreError
    ) -> dict[str, Any] | Exception:
        first = sent if isinstance(sent, BotoCoreError) else self._finish(sent)
        try:
            return self._complete(name, body, first)
        except (BotoCoreError, ClientError) as exc:
            return exc

    def _attempt(self, name: str, body: bytes) -> AWSResponse | BotoCoreError:
        sent = self._start(name, body)
        return sent if isinstance(sent, BotoCoreError) else self._finish(sent)

    def _complete(
        self, name: str, body: bytes, outcome: AWSResponse | BotoCoreError
    ) -> dict[str, Any]:
        """Given a call's first attempt, retry it as botocore's standard mode does."""
        model = self._operations[name]
        context: dict[str, Any] = {}
        attempts = 1
        while True:
            response: AWSResponse | None = None
            caught: BotoCoreError | None = None
            if isinstance(outcome, AWSResponse):
                response = outcome
            else:
                caught = outcome
            parsed: dict[str, Any] | None = None
            if response is not None:
                self._refuse(response=(response, None), request_dict={"url": self._url})
                parsed = self._parse(response, model)
            elif isinstance(caught, ReadTimeoutError):
                # Retried without a word by botocore's rules; but what the server still did
                # counts: a receive it served after this gave up keeps its messages invisible
                # until their visibility timeout (the demo's "20 in flight" minute, moto's).
                log.warning(
                    "SQS %s: no answer within %.0f s, connection closed, call retried; messages"
                    " a receive brought meanwhile come back after their visibility timeout",
                    name,
                    self._read_timeout,
                )
            delay = self._retry.needs_retry(
                response=None if response is None else (response, parsed),
                attempts=attempts,
                operation=model,
                caught_exception=caught,
                request_dict={"context": context},
            )
            if delay is None or delay is False:
                break
            time.sleep(delay)
            attempts += 1
            outcome = self._attempt(name, body)
        if caught is not None:
            raise caught
        assert response is not None and parsed is not None
        if response.status_code >= 300:
            raise ClientError(parsed, name)  # type: ignore[arg-type]
        # what botocore's after-call hook does: the quota a retried call took comes back
        self._quota.release_retry_quota(context, response)  # type: ignore[arg-type]
        return parsed

    def _start(self, target: str, body: bytes) -> _Sent | BotoCoreError:
        """Sign and send one attempt on a pooled connection; or why it could not be sent."""
        if self._credentials is None:
            return NoCredentialsError()
        headers = http.HttpHeaders(
            [
                ("Host", self._connections.authority),
                ("Content-Type", _CONTENT_TYPE),
                ("X-Amz-Target", f"AmazonSQS.{target}"),
                ("Content-Length", str(len(body))),
            ]
        )
        request = http.HttpRequest("POST", "/", headers, BytesIO(body))
        try:
            auth.aws_sign_request(request, self._signing).result()
            connection = self._connections.take()
        except AwsCrtError as exc:
            return self._connect_error(exc)
        except FutureTimeout as exc:
            return ConnectTimeoutError(endpoint_url=self._url, error=exc)
        sent = _Sent(connection)
        stream = connection.request(request, on_response=sent.on_response, on_body=sent.on_body)
        stream.activate()
        sent.done = stream.completion_future
        return sent

    def _finish(self, sent: _Sent) -> AWSResponse | BotoCoreError:
        """The whole response of an attempt; or the connection error it ended in."""
        try:
            status = sent.done.result(self._read_timeout)
        except FutureTimeout as exc:
            sent.connection.close()
            return ReadTimeoutError(endpoint_url=self._url, error=exc)
        except AwsCrtError as exc:
            sent.connection.close()
            return ConnectionClosedError(endpoint_url=self._url, error=exc)
        self._connections.give_back(sent.connection)
        headers: Any = HeadersDict(sent.headers)  # case-insensitive, as botocore reads them
        return AWSResponse(self._url, status, headers, _Body(b"".join(sent.chunks)))

    def _connect_error(self, exc: AwsCrtError) -> BotoCoreError:
        """A connection not made, as botocore's (and errors.py's root cause) reports it."""
        cause: BaseException = exc
        if exc.name == "AWS_IO_SOCKET_CONNECTION_REFUSED":
            cause = ConnectionRefusedError(111, exc.message)
        elif exc.name.startswith("AWS_IO_DNS"):
            cause = socket.gaierror(socket.EAI_NONAME, exc.message)
        elif exc.name == "AWS_IO_SOCKET_TIMEOUT":
            return ConnectTimeoutError(endpoint_url=self._url, error=exc)
        error = EndpointConnectionError(endpoint_url=self._url, error=cause)
        error.__cause__ = cause
        return error

    def _parse(self, response: AWSResponse, model: Any) -> dict[str, Any]:
        if response.status_code < 300:
            parsed: dict[str, Any] = orjson.loads(response.content) if response.content else {}
            parsed["ResponseMetadata"] = {"HTTPStatusCode": response.status_code}
            return parsed
        error: dict[str, Any] = self._parser.parse(
            convert_to_response_dict(response, model), model.output_shape
        )
        error.setdefault("ResponseMetadata", {})["HTTPStatusCode"] = response.status_code
        return error

    def close(self) -> None:
        self._connections.close()
