"""moto's threaded server (the real AWS wire protocol, every service) on a loopback port: the
base of the embedded SQS (sqs.py) and KMS (kms.py) servers, and the fixes they need."""

from __future__ import annotations

import threading
from typing import Any, Self

from logins.dev.embedded.server import HOST, LoopbackServer, PortTaken

REGION = "us-east-1"
DUMMY_AWS_KEY = "testing"  # moto accepts any credentials; these never reach AWS

_MOTO_SERVER_CLASS: Any = None


def _moto_server_class() -> Any:
    """ThreadedMotoServer that reports a failed bind instead of hanging in start().

    Upstream sets its "ready" event only after make_server() succeeds, so a port conflict
    kills the server thread and leaves start() waiting forever.
    """
    global _MOTO_SERVER_CLASS
    if _MOTO_SERVER_CLASS is not None:
        return _MOTO_SERVER_CLASS
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as err:
        raise RuntimeError(
            "the embedded SQS needs moto[server]: pip install 'logins-etl[embedded]'"
        ) from err

    class _MotoServer(ThreadedMotoServer):
        startup_error: BaseException | None = None

        def _server_entry(self) -> None:
            try:
                super()._server_entry()
            except BaseException as err:
                if self._server_ready_event.is_set():
                    raise
                self.startup_error = err
                self._server_ready_event.set()

    _MOTO_SERVER_CLASS = _MotoServer
    return _MOTO_SERVER_CLASS


class EmbeddedMoto(LoopbackServer):
    """moto's threaded server (the real AWS wire protocol, every service) on a loopback port."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self._server: Any = None
        self._session: Any = None  # one boto3 Session: each new one reloads the service models
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; clients are

    def start(self) -> Self:
        """Start serving; returns once the socket is listening."""
        if self._server is not None:
            return self
        server_class = _moto_server_class()
        _quiet_werkzeug()
        _serialise_sqs_queue_changes()
        _retention_check_without_attributes()

        def listen(port: int) -> None:
            server = server_class(ip_address=HOST, port=port, verbose=False)
            server.start()
            if server.startup_error is not None:
                raise PortTaken(f"moto could not listen on {HOST}:{port}") from (
                    server.startup_error
                )
            self._server = server

        self._listen(listen)
        return self

    def stop(self) -> None:
        """Stop serving and release the port (upstream stop() leaves the socket open)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()
        if server._server is not None:
            server._server.server_close()

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _boto_client(self, service: str) -> Any:
        """A new boto3 client for this server, with dummy credentials (os.environ untouched)."""
        import boto3

        with self._lock:
            if self._session is None:
                self._session = boto3.session.Session()
            return self._session.client(
                service,
                endpoint_url=self.endpoint_url,
                region_name=REGION,
                aws_access_key_id=DUMMY_AWS_KEY,
                aws_secret_access_key=DUMMY_AWS_KEY,
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(endpoint_url={self.endpoint_url if self._port else None!r})"


def _serialise_sqs_queue_changes() -> None:
    """Make moto's SQS delete and receive under the queue's lock, as it adds a message.

    moto 5 (up to 5.2.5) changes a queue's messages from server threads without the lock
    `add_message` holds:
    * a delete rebuilds the message list from a pass over the old one: a send that lands
      between that pass and the assignment, while another delete overlaps, vanishes (its id
      was returned to the producer and no consumer ever gets it: the rare "missing message
      ids" of the fault tests, whose producers send while flows delete);
    * two receives scan the queue at once and can both take the same message (a second
      delivery at once, not after its visibility timeout), or fail with "Set changed size
      during iteration".
    Real SQS and LocalStack lose nothing. The receive's long poll waits on that lock's
    condition, which releases it while waiting, so sends and other calls go on meanwhile.
    Applied once per process, to moto's classes: every embedded server shares them."""
    from moto.sqs.models import Queue, SQSBackend

    if getattr(Queue.delete_message, "_logins_serialised", False):
        return
    delete_unlocked = Queue.delete_message
    receive_unlocked = SQSBackend.receive_message

    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            delete_unlocked(self, receipt_handle)

    def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        with self.get_queue(queue_name)._messages_lock:
            return receive_unlocked(self, queue_name, *args, **kwargs)

    delete_message._logins_serialised = True  # type: ignore[attr-defined]
    Queue.delete_message = delete_message  # type: ignore[method-assign]
    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]


def _retention_check_without_attributes() -> None:
    """Make moto's receive check a message's retention period by reading the queue's period.

    moto 5 (up to 5.2.5) computes every queue attribute for each message a receive hands out,
    three times (each a few passes over all messages): a 10-message receive from 500 messages
    costs ~0.5 s of CPU, under the queue's lock. Sixteen receivers (two workers' receive calls)
    then wait on that lock past the client's read timeout; the client gives up and retries,
    moto still serves the abandoned receive, and its messages stay invisible until their
    visibility timeout (the demo stalled a minute at "20 in flight"). Same result, one read."""
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    def valid(self: Any, queue_name: str, message: Any) -> bool:
        period = int(self.get_queue(queue_name).message_retention_period)
        return bool(period + message.sent_timestamp / 1000 > unix_time())

    SQSBackend.is_message_valid_based_on_retention_period = valid  # type: ignore[method-assign]


def _quiet_werkzeug() -> None:
    """Werkzeug logs every request to stderr unless its logger has a level; leave a set one."""
    import logging

    logger = logging.getLogger("werkzeug")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
