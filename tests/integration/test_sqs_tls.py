"""The hot calls over TLS, as real SQS serves them (https): a TLS front to the real SQS-protocol
server (moto) with a certificate of a private CA, trusted through AWS_CA_BUNDLE (botocore's
own setting), and refused without it."""

from __future__ import annotations

import datetime as dt
import http.client
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.sqs.protocol import SqsClient, make_client
from logins.dev.embedded import EmbeddedSqs
from logins.dev.seed import send_bodies

pytestmark = pytest.mark.integration


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def tls_front(sqs: EmbeddedSqs, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """https://localhost:PORT forwarding every call to moto; yields it and its CA file."""
    upstream = urlsplit(sqs.endpoint_url)
    cert_file, key_file = _certificate(tmp_path)

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            conn = http.client.HTTPConnection(upstream.hostname or "", upstream.port, timeout=30)
            skip = {"connection", "content-length"}
            conn.request("POST", self.path, body, {k: v for k, v in self.headers.items()
                                                   if k.lower() not in skip})  # fmt: skip
            answer = conn.getresponse()
            payload = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in skip | {"transfer-encoding"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    # the handshake in each connection's own thread, not in accept(): a client that gives up
    # on the certificate must not hold the listener
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}", cert_file
    server.shutdown()
    server.server_close()


def _client(endpoint: str, connect_timeout: float = 5) -> SqsClient:
    return make_client(
        "json",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(
            retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=connect_timeout
        ),
    )


def test_the_hot_calls_go_over_tls_and_check_the_certificate(
    tls_front: tuple[str, Path], sqs: EmbeddedSqs, queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, ca_file = tls_front
    send_bodies(sqs.client(), queue_url, ["over tls"])
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca_file))
    client = _client(endpoint)
    received = client.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1)
    assert [m["Body"] for m in received["Messages"]] == ["over tls"]
    deleted = client.delete_message_batch(
        QueueUrl=queue_url,
        Entries=[{"Id": "0", "ReceiptHandle": received["Messages"][0]["ReceiptHandle"]}],
    )
    assert deleted["Successful"] == [{"Id": "0"}]
    assert client._wire is not None  # these went through connectors/sqs/wire.py, not botocore

    monkeypatch.delenv("AWS_CA_BUNDLE")
    untrusted = _client(endpoint, connect_timeout=1)
    with pytest.raises(BotoCoreError):  # a certificate no trusted CA signed: refused
        untrusted.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1)
