"""AWS Lambda entry point, `flows.lambda_handler.handler`, for an SQS event source mapping with
`FunctionResponseTypes: [ReportBatchItemFailures]` (deploy/lambda/template.yaml).

One invocation is one batch. Its records go through the flow's own steps (validate, dedupe,
mask: flows/batch.py) and the sink's own commit (connectors/postgres/committer.py
`BatchCommitter`: the same ledger, the same poison rule). The answer lists every record that
did not commit, so Lambda deletes exactly the committed ones; the handler itself never calls
SQS.

* A record the database refuses because of its data is listed, and comes back after the
  queue's visibility timeout, until it was received `sink.poison_after_attempts` times; then
  it is parked as a rejected row (`poison`) and not listed.
* A database that stays away longer than `sink.retry.give_up_after_seconds` (seconds, in
  config/lambda.yaml), or refuses the batch for another reason, lists every record.

The configuration, the keys (files or secretsmanager:/ssm: references) and the database
connection are built on the first invocation and kept for the next ones in the same
execution environment. Logs carry message ids, counts and reason codes, never a value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from connectors.postgres.committer import BatchCommitter
from connectors.postgres.writer import DatabaseUnavailable
from connectors.sqs.source import to_message
from flows.batch import BatchSteps, batch_committer
from logins.core.config import ConfigError, load_config
from logins.core.keys import KeyFileError
from logins.core.pipeline_keys import load_secrets
from logins.core.records import SqsMessage

log = logging.getLogger(__name__)

Response = dict[str, list[dict[str, str]]]


@dataclass
class _Runtime:
    steps: BatchSteps
    committer: BatchCommitter


_runtime: _Runtime | None = None


def handler(event: Mapping[str, Any], context: Any) -> Response:
    """Commit the event's records; answer the ones that did not commit."""
    messages = [lambda_record_to_message(r, i) for i, r in enumerate(event.get("Records") or [])]
    if not messages:
        return {"batchItemFailures": []}
    failed = _process(_get_runtime(), messages)
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


def lambda_record_to_message(record: Mapping[str, Any], index: int = 0) -> SqsMessage:
    """A record of Lambda's SQS event (camelCase keys, string attributes) as the flow's
    SqsMessage, through the SQS source's own mapping (the same defaults when an attribute is
    missing)."""
    if not isinstance(record, Mapping) or not record.get("messageId"):
        raise ValueError(f"Records[{index}] is not an SQS record: it has no messageId")
    raw = {
        "MessageId": record["messageId"],
        "ReceiptHandle": record.get("receiptHandle", ""),
        "Body": record.get("body") or "",
        "Attributes": record.get("attributes") or {},
    }
    return to_message(raw, time.time())


def _process(runtime: _Runtime, messages: list[SqsMessage]) -> list[str]:
    ids = list(dict.fromkeys(m.message_id for m in messages))  # event order, each id once
    events = runtime.steps(messages)
    try:
        committed = runtime.committer.commit(events)
    except DatabaseUnavailable as exc:
        log.error("%s; all %d records go back to the queue", exc, len(ids))
        return ids
    except psycopg.Error as exc:  # not the rows' data (that is poison) nor an outage
        log.error(
            "the database refused the batch: SQLSTATE %s (%s); all %d records go back to the queue",
            exc.sqlstate,
            type(exc).__name__,
            len(ids),
        )
        return ids
    done = committed.events
    runtime.steps.cache.mark_committed(v.token for e in done for v in e.vault_entries)
    for event, reason in committed.refused:
        log.warning(
            "message %s refused by the database (delivery %d): %s; back to the queue",
            event.message.message_id,
            event.message.receive_count,
            reason,
        )
    committed_ids = {e.message.message_id for e in done}
    failed = [i for i in ids if i not in committed_ids]
    result = committed.result
    log.info(
        "committed %d records (%d rows, %d rejected, %d duplicates, %d redelivered);"
        " %d back to the queue",
        len(committed_ids),
        result.rows,
        result.rejected,
        result.duplicates,
        result.redelivered,
        len(failed),
    )
    return failed


def _get_runtime() -> _Runtime:
    """Built on the first invocation, kept for the next ones (the connection opens lazily, on
    the first write, and reopens after an outage)."""
    global _runtime
    if _runtime is None:
        try:
            config = load_config()
            secrets = load_secrets(config)
        except (ConfigError, KeyFileError) as exc:
            log.error("cannot start: %s", exc)
            raise
        _runtime = _Runtime(
            BatchSteps(config, secrets.tokenizer, secrets.sealer),
            batch_committer(config, secrets.sealer),
        )
    return _runtime


def reset() -> None:
    """Close the connection and forget config and keys: the next invocation starts cold."""
    global _runtime
    if _runtime is not None:
        _runtime.committer.writer.close()
    _runtime = None
