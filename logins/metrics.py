"""Prometheus metrics. Labels are fixed vocabularies (outcome, reason code), never data.

Bytewax serves prometheus_client's default registry next to its own metrics on
:3030/metrics when BYTEWAX_DATAFLOW_API_ENABLED=1.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES = Counter(
    "logins_messages", "Messages committed, by outcome (row, rejected, duplicate)", ["outcome"]
)
REDELIVERED = Counter(
    "logins_redelivered", "Deliveries whose message was already in the ledger (no effect)"
)
REJECTED = Counter("logins_rejected", "Rejected deliveries by reason code", ["reason"])
VAULT_SEALED = Counter("logins_vault_entries", "New vault entries committed")
SQS_RECEIVED = Counter("logins_sqs_received", "Messages received from SQS")
SQS_DELETED = Counter("logins_sqs_deleted", "Messages deleted from SQS after commit")
SQS_DELETE_FAILED = Counter(
    "logins_sqs_delete_failed", "Deletes SQS refused; those messages come back and are no-ops"
)
SQS_VISIBILITY_EXTENDED = Counter(
    "logins_sqs_visibility_extended", "Messages whose visibility was extended during a slow write"
)
POISON = Counter("logins_poison", "Messages the database refused, by what happened", ["action"])
SQS_ERRORS = Counter("logins_sqs_receive_errors", "ReceiveMessage calls that failed after retries")
DB_RETRIES = Counter("logins_db_retries", "Database write attempts that failed and were retried")
BATCH_SECONDS = Histogram(
    "logins_sink_batch_seconds",
    "Time to commit one batch (write + commit)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
