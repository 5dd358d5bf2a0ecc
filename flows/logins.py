"""The logins dataflow, for `python -m bytewax.run flows.logins [-w N] [-i/-a] [-r/-s/-b]`
(`logins run` runs this same module through Bytewax's own runner).

First of all, with BYTEWAX_DATAFLOW_API_ENABLED set, the metrics port must be free: Bytewax
itself would exit 0 silently (`-w 2`) or run on without metrics (`-w 1`) if it is not, so
this exits 2 naming the port and what holds it (logins.core.metricsport).

Which environment it runs in is configuration only: LOGINS_ENV / LOGINS_CONFIG select the
YAML (see logins.core.config). A bad configuration or a missing key file stops here, before any
message is received, with the file and the key that are wrong; so does a queue or database
that refuses (connectors/preflight.py): exit 2, with the endpoint and the server's own error.

The flow's stop (logins/core/stop.py) is made here, so the process's handlers reach it:
SIGTERM/SIGINT request it, and a permanent error it records exits 2 (logins.core.shutdown).
"""

from __future__ import annotations

import logging
import math
import os
import sys

from connectors import preflight
from flows.builder import build_flow, tune_gc
from logins.core import metricsport, shutdown
from logins.core.config import ConfigError, load_config
from logins.core.keys import KeyFileError
from logins.core.progress import DEFAULT_FLOW_INTERVAL, FlowProgress
from logins.core.stop import Stop
from logins.core.telemetry import setup

log = logging.getLogger(__name__)
try:
    metricsport.check_configured()
except metricsport.PortUnavailable as exc:
    print(f"logins: cannot start: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
stop = Stop()
shutdown.exit_nonzero_after_failure(stop)  # first: atexit runs it after the telemetry's hooks

PROGRESS_INTERVAL_ENV = "LOGINS_PROGRESS_INTERVAL"


def _progress_interval() -> float:
    """Seconds between progress lines: LOGINS_PROGRESS_INTERVAL (`logins run
    --progress-interval`), 30 by default, 0 for none."""
    text = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    try:
        interval = float(text) if text else DEFAULT_FLOW_INTERVAL
    except ValueError:
        interval = -1.0
    if not (interval >= 0 and math.isfinite(interval)):
        raise ConfigError(f"{PROGRESS_INTERVAL_ENV}={text!r}: not a number of seconds (>= 0)")
    return interval


try:
    progress_interval = _progress_interval()
    config = load_config()
    setup(config.telemetry)
    shutdown.install(stop, config.shutdown_timeout_seconds)
    flow = build_flow(config, stop=stop)
except (ConfigError, KeyFileError) as exc:
    print(f"logins: cannot start: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

_failed = False
for outcome in preflight.run(config, config.startup_timeout_seconds, migrate=True):
    fields = {"check": outcome.name, "ok": outcome.ok}  # JSON logs: fields, not only text
    if outcome.ok:
        log.info("start-up check %s: ok: %s", outcome.name, outcome.detail, extra=fields)
    else:
        log.error("start-up check %s failed: %s", outcome.name, outcome.detail, extra=fields)
        print(f"logins: cannot start: {outcome.detail}", file=sys.stderr)
        _failed = True
if _failed:
    raise SystemExit(2)

log.info(
    "logins flow built: queue %s -> table %s",
    config.source.queue_url,
    config.sink.table,
    extra={"queue_url": config.source.queue_url, "table": config.sink.table},
)
FlowProgress(progress_interval).start()
tune_gc()
