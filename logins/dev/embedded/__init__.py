"""Embedded PostgreSQL and SQS (and KMS) servers, so the demo and the tests need nothing but
Python.

All are real network servers on 127.0.0.1, spoken to over TCP exactly as in production:
PostgreSQL runs from the binaries bundled in the ``pgserver`` wheel (postgres.py: we run
``initdb`` and ``postgres`` ourselves, because ``pgserver.get_server`` only ever listens on a
unix socket), and SQS and KMS are moto's threaded server, which speaks the real AWS wire
protocol (moto.py, sqs.py, kms.py). What they share (a loopback port, start/stop, use as a
context manager) is server.py's LoopbackServer. Install them with
``pip install 'logins-etl[embedded]'``; production never imports them.
"""

from logins.dev.embedded.kms import EmbeddedKms
from logins.dev.embedded.postgres import EmbeddedPostgres, dsn_with_database
from logins.dev.embedded.server import HOST, free_port
from logins.dev.embedded.sqs import EmbeddedSqs

__all__ = [
    "HOST",
    "EmbeddedKms",
    "EmbeddedPostgres",
    "EmbeddedSqs",
    "dsn_with_database",
    "free_port",
]
