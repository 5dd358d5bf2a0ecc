"""A rejected message that names the user only deep inside (issue 18, item 7): nested deeper
than Python's recursion limit, inside JSON encoded in a JSON string, the id written with a
JSON escape. The flow rejects it and seals its body (real SQS-protocol server, real
PostgreSQL); `logins forget --user-id` with the vault key finds it and empties it, and leaves
a stranger's body built the same way."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from tests.helpers import run
from tests.integration.vaultkit import Vault

DEPTH = 3 * sys.getrecursionlimit()


def deep_body(escaped_user_id: str) -> str:
    """A rejected shape (no login fields) naming the user 3x the recursion limit deep, in
    JSON encoded inside a JSON string, the id with a JSON escape (not in the text as is)."""
    inner = '{"a": [' * DEPTH + '{"user_id": "' + escaped_user_id + '"}' + "]}" * DEPTH
    return json.dumps({"kind": "crash-report", "context": json.dumps({"state": inner})})


def test_forget_erases_a_rejected_body_naming_the_user_deep_inside(
    send_to_queue: Callable[[list[str]], list[str]], queue_vault: Callable[..., Vault]
) -> None:
    v = queue_vault()
    theirs, strangers = deep_body("\\u0075-1"), deep_body("\\u0075-10")
    assert "u-1" not in theirs
    login = {"user_id": "u-1", "app_version": "2.3.0", "device_type": "ios", "locale": "US",
             "ip": "192.0.2.10", "device_id": "d-1"}  # fmt: skip
    send_to_queue([json.dumps(login), theirs, strangers])
    run(v.config)
    rejected = v.query("SELECT message_id, sealed_body FROM user_logins_rejected")
    assert len(rejected) == 2
    bodies = {
        v.opener.open_rejected(bytes(sealed), message_id=message_id): message_id
        for message_id, sealed in rejected
    }
    assert set(bodies) == {theirs, strangers}

    done = v.cli(
        "forget", "--user-id", "u-1", "--reason", "r",
        "--private-key-file", str(v.keys["vault.key"]), "--json",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    (result,) = json.loads(done.stdout)
    assert result["rejected_erased"] == [bodies[theirs]]
    emptied = dict(
        v.query(
            "SELECT message_id, octet_length(sealed_body) = 0 AND body_erased_at IS NOT NULL"
            " FROM user_logins_rejected"
        )
    )
    assert emptied == {bodies[theirs]: True, bodies[strangers]: False}
