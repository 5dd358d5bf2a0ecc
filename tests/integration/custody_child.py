"""A pipeline host's process, for the custody attacks: loads the pipeline's secrets from the
environment's configuration exactly as the flow does, computes tokens for the values it is
given on the command line (the pipeline's own traffic), prints them as JSON, then waits on
stdin so that the test can read its memory."""

from __future__ import annotations

import json
import sys

from logins.core.config import load_config
from logins.core.pipeline_keys import load_secrets


def main() -> None:
    secrets = load_secrets(load_config())
    tokens = secrets.tokenizer.tokens([("ip", ip) for ip in sys.argv[1:]])
    print(json.dumps(tokens), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
