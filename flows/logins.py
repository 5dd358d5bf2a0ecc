"""The logins dataflow, for `python -m bytewax.run flows.logins [-w N] [-i/-a] [-r/-s/-b]`.

Which environment it runs in is configuration only: LOGINS_ENV / LOGINS_CONFIG select the
YAML (see logins.config). A bad configuration or a missing key file stops here, before any
message is received, with the file and the key that are wrong.
"""

from __future__ import annotations

import logging
import sys

from flows.builder import build_flow
from logins import shutdown
from logins.config import ConfigError, load_config
from logins.keys import KeyFileError
from logins.telemetry import setup

try:
    config = load_config()
    setup(config.telemetry)
    shutdown.install(config.shutdown_timeout_seconds)
    flow = build_flow(config)
except (ConfigError, KeyFileError) as exc:
    print(f"logins: cannot start: {exc}", file=sys.stderr)
    raise SystemExit(2) from None

logging.getLogger(__name__).info(
    "logins flow built: queue %s -> table %s", config.source.queue_url, config.sink.table
)
