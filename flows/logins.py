"""The logins dataflow, for `python -m bytewax.run flows.logins [-w N] [-i/-a] [-r/-s/-b]`.

Which environment it runs in is configuration only: LOGINS_ENV / LOGINS_CONFIG select the
YAML (see logins.core.config). A bad configuration or a missing key file stops here, before any
message is received, with the file and the key that are wrong; so does a queue or database
that refuses (connectors/preflight.py): exit 2, with the endpoint and the server's own error.
"""

from __future__ import annotations

import logging
import sys

from connectors import preflight
from flows.builder import build_flow, tune_gc
from logins.core import shutdown
from logins.core.config import ConfigError, load_config
from logins.core.keys import KeyFileError
from logins.core.telemetry import setup

log = logging.getLogger(__name__)
shutdown.exit_nonzero_after_failure()  # first: atexit runs it after the telemetry's hooks

try:
    config = load_config()
    setup(config.telemetry)
    shutdown.install(config.shutdown_timeout_seconds)
    flow = build_flow(config)
except (ConfigError, KeyFileError) as exc:
    print(f"logins: cannot start: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

_failed = False
for outcome in preflight.run(config, config.startup_timeout_seconds, migrate=True):
    if outcome.ok:
        log.info("start-up check %s: ok: %s", outcome.name, outcome.detail)
    else:
        log.error("start-up check %s failed: %s", outcome.name, outcome.detail)
        print(f"logins: cannot start: {outcome.detail}", file=sys.stderr)
        _failed = True
if _failed:
    raise SystemExit(2)

log.info("logins flow built: queue %s -> table %s", config.source.queue_url, config.sink.table)
tune_gc()
