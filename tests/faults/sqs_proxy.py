"""A reverse proxy in front of the SQS server that injects real network faults.

Every request (method, path, headers, body) is forwarded to the upstream endpoint and the
response is relayed, except for a chosen fraction that is answered with an SQS throttling
error or a 5xx instead. `down()` closes the listening socket and cuts every open connection,
in flight or idle, so clients see connection refused/reset; `up()` listens again on the same
port. Point the flow's SQS_ENDPOINT_URL at `endpoint_url`: boto3 sends every call to the
endpoint, while the queue URL (which names moto's own host:port) only travels in the body.

`fail_entries(fraction)` answers SendMessageBatch (JSON protocol) as SQS does when some of a
batch's entries fail: that fraction of the entries is withheld from the upstream server and
listed under `Failed` (`SenderFault` false, `InternalError`, or true and `InvalidParameterValue`),
the rest forwarded and their `Successful` entries relayed.

`refuse_json()` makes it behave like LocalStack before 3.0 (the producer team's image): a
JSON-protocol call (it carries `X-Amz-Target`) gets LocalStack 2.3.2's own answer, HTTP 500
with an XML body "... Operation detection failed. Missing Action in request for query-protocol
service ServiceModel(sqs)."; query-protocol calls (form bodies with `Action=`) are forwarded.

The throttling answer is what SQS's JSON protocol sends, and what botocore's `standard` and
`adaptive` modes classify as throttling (retryable): `__type` ...#RequestThrottled, and
`x-amzn-query-error: RequestThrottled;Sender`, from which botocore takes the error code.
(`AWS.SimpleQueueService.RequestThrottled` in that header would NOT be retried.)
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import re
import socket
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}
_THROTTLED = ("RequestThrottled", "Rate exceeded")
_SERVER_ERRORS = {500: "InternalError", 502: "BadGateway", 503: "ServiceUnavailable"}
# What LocalStack 2.3.2 answers to a JSON-protocol SQS call (captured from a real one).
_QUERY_ONLY_BODY = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    '<ErrorResponse xmlns="http://queue.amazonaws.com/doc/2012-11-05/"><Error>'
    "<Code>InternalError</Code><Message>exception while calling sqs with unknown operation: "
    "Operation detection failed. Missing Action in request for query-protocol service "
    "ServiceModel(sqs).</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
)


class SqsFaultProxy:
    def __init__(self, upstream: str, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or HOST, parts.port or 80)
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._throttle = 0.0
        self._fail = 0.0
        self._fail_status = 503
        self._refuse_json = False
        self._fail_entries = (0.0, False)
        self._delay = 0.0
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.counts: Counter[tuple[str, str]] = Counter()  # (outcome, operation) -> requests
        self.deliveries: Counter[str] = Counter()  # message id -> ReceiveMessage responses relayed
        self.lost_messages = 0  # messages in ReceiveMessage responses that a cut never relayed
        self.port = 0
        self.up()

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- faults

    def throttle(self, fraction: float) -> None:
        with self._lock:
            self._throttle = fraction

    def fail(self, fraction: float, status: int = 503) -> None:
        with self._lock:
            self._fail, self._fail_status = fraction, status

    def delay(self, seconds: float) -> None:
        """Hold every forwarded call `seconds` before relaying it (a distant server's round
        trip: real SQS answers in 10-30 ms)."""
        with self._lock:
            self._delay = seconds

    def fail_entries(self, fraction: float, sender_fault: bool = False) -> None:
        """Fail `fraction` of each SendMessageBatch's entries, on SQS's side or the sender's."""
        with self._lock:
            self._fail_entries = (fraction, sender_fault)

    def _withhold(self, body: bytes) -> tuple[bytes, list[dict[str, Any]]]:
        """A SendMessageBatch body without the entries chosen to fail, and their `Failed`."""
        with self._lock:
            fraction, sender_fault = self._fail_entries
            request = json.loads(body)
            failed = [e for e in request["Entries"] if self._random.random() < fraction]
            self.counts["entry_failed", "SendMessageBatch"] += len(failed)
        request["Entries"] = [e for e in request["Entries"] if e not in failed]
        code = "InvalidParameterValue" if sender_fault else "InternalError"
        return json.dumps(request).encode(), [
            {"Id": e["Id"], "SenderFault": sender_fault, "Code": code, "Message": "injected"}
            for e in failed
        ]

    def refuse_json(self, refuse: bool = True) -> None:
        """Answer JSON-protocol calls as LocalStack before 3.0 does (HTTP 500)."""
        with self._lock:
            self._refuse_json = refuse

    def heal(self) -> None:
        self.throttle(0.0)
        self.fail(0.0)

    def total(self, outcome: str) -> int:
        with self._lock:
            return sum(n for (kind, _), n in self.counts.items() if kind == outcome)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {f"{kind}:{op}": n for (kind, op), n in sorted(self.counts.items())}

    def _decide(self, operation: str, json_protocol: bool) -> tuple[str, int]:
        with self._lock:
            draw = self._random.random()
            if self._server is None:  # read just as down() cut it: never answered
                outcome, status = "cut", 0
            elif json_protocol and self._refuse_json:
                outcome, status = "refused_json", 500
            elif draw < self._throttle:
                outcome, status = "throttled", 400
            elif draw < self._throttle + self._fail:
                outcome, status = "failed", self._fail_status
            else:
                outcome, status = "forwarded", 200
            self.counts[outcome, operation] += 1
            return outcome, status

    # -- lifecycle

    def up(self) -> None:
        """Listen (again) on the same port; the first call picks a free one."""
        with self._lock:
            if self._server is not None:
                return
            server = ThreadingHTTPServer((HOST, self.port), _handler(self))
            server.daemon_threads = True
            self._server, self.port = server, server.server_address[1]
            self._thread = threading.Thread(
                target=server.serve_forever, args=(0.05,), name="sqs-proxy", daemon=True
            )
            self._thread.start()

    def down(self) -> None:
        """Stop listening (connection refused) and reset every open connection."""
        with self._lock:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
            connections, self._connections = self._connections, set()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        for conn in connections:  # in flight or idle keep-alive: the client sees it closed
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self.counts["closed", "connections"] += len(connections)
        if thread is not None:
            thread.join(5)

    def close(self) -> None:
        self.down()

    def _record_receive(self, message_ids: list[str], relayed: bool) -> None:
        """Counts ids only (never bodies): deliveries per id, and responses the cut lost."""
        with self._lock:
            if relayed:
                self.deliveries.update(message_ids)
            else:
                self.lost_messages += len(message_ids)

    def redelivered(self) -> int:
        """Deliveries to the client beyond each message's first."""
        with self._lock:
            return sum(n - 1 for n in self.deliveries.values())

    def _track(self, conn: socket.socket, open_: bool) -> bool:
        with self._lock:
            if open_ and self._server is None:
                return False
            (self._connections.add if open_ else self._connections.discard)(conn)
            return True

    def _forward(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any, bytes]:
        upstream = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            forwarded = {  # http.client sets Content-Length: a body may have been rewritten
                k: v
                for k, v in headers.items()
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"
            }
            upstream.request(method, path, body=body, headers=forwarded)
            response = upstream.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            upstream.close()


def _message_ids(payload: bytes) -> list[str]:
    """Message ids of a ReceiveMessage response, JSON or (query protocol) XML."""
    if payload.lstrip().startswith(b"<"):
        return [m.decode() for m in re.findall(rb"<MessageId>([^<]+)</MessageId>", payload)]
    with contextlib.suppress(ValueError, AttributeError):
        return [m["MessageId"] for m in json.loads(payload).get("Messages", [])]
    return []


def _with_failed(payload: bytes, failed: list[dict[str, Any]]) -> bytes:
    """A SendMessageBatch response with `failed` added to its `Failed` entries."""
    response = json.loads(payload or b"{}")
    response["Failed"] = [*response.get("Failed", []), *failed]
    return json.dumps(response).encode()


def _query_action(body: bytes) -> str:
    """The Action of a query-protocol (form-encoded) request, '' for any other body."""
    with contextlib.suppress(UnicodeDecodeError):
        return parse_qs(body.decode("ascii")).get("Action", [""])[0]
    return ""


def _fault_body(code: str, message: str) -> bytes:
    return json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message}).encode()


def _handler(proxy: SqsFaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

        def setup(self) -> None:
            super().setup()
            self.refused = not proxy._track(self.connection, True)

        def finish(self) -> None:
            proxy._track(self.connection, False)
            with contextlib.suppress(OSError):
                super().finish()

        def handle(self) -> None:
            if self.refused:  # accepted just as down() closed the listener
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            with contextlib.suppress(OSError):  # a connection cut by down()
                super().handle()

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            target = self.headers.get("X-Amz-Target", "")
            operation = target.rsplit(".", 1)[-1] or _query_action(body) or self.command
            outcome, status = proxy._decide(operation, json_protocol=bool(target))
            if outcome == "cut":
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if outcome == "refused_json":
                payload = _QUERY_ONLY_BODY.format(request_id=uuid.uuid4()).encode()
                self._reply(500, payload, "text/xml")
                return
            if outcome == "throttled":
                self._answer(400, _fault_body(*_THROTTLED), "RequestThrottled;Sender")
                return
            if outcome == "failed":
                code = _SERVER_ERRORS.get(status, "ServiceUnavailable")
                self._answer(status, _fault_body(code, "injected fault"), f"{code};Receiver")
                return
            if proxy._delay:
                time.sleep(proxy._delay)
            withheld: list[dict[str, Any]] = []
            if operation == "SendMessageBatch" and target and proxy._fail_entries[0]:
                body, withheld = proxy._withhold(body)
                if not json.loads(body)["Entries"]:  # all withheld: SQS would answer alone
                    payload = json.dumps({"Successful": [], "Failed": withheld}).encode()
                    self._reply(200, payload, "application/x-amz-json-1.0")
                    return
            try:
                status, headers, payload = proxy._forward(
                    self.command, self.path, self.headers, body
                )
            except OSError:
                self.close_connection = True  # upstream gone: drop the client's connection too
                return
            if withheld:
                payload = _with_failed(payload, withheld)
            received = _message_ids(payload) if operation == "ReceiveMessage" else []
            try:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
            except OSError:
                proxy._record_receive(received, relayed=False)
                raise
            proxy._record_receive(received, relayed=True)

        do_GET = do_POST

        def _reply(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _answer(self, status: int, payload: bytes, query_error: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("x-amzn-query-error", query_error)
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
