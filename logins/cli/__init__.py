"""The `logins` command: one module per command group, assembled here.

click, because it gives subcommands, --help, typed options and clean errors with no code
of ours; every command takes the same LOGINS_ENV / LOGINS_CONFIG selection as the flow.

    run.py       run (the flow)                  testcases.py test (offline cases)
    setup.py     keygen, check, migrate          recovery.py  reveal, forget
    stats.py     stats                           audit.py     audit list|verify|anchor|keygen
    rotate.py    rotate new-key|run              vault.py     vault status|rekey
    purge.py     purge (retention)               session.py   checked connection, --actor note
    tokenize.py  tokenize                        dev.py       generate, demo (dev tooling)
    storage.py   storage rewrite (erasure's storage step)
    common.py    what the commands share
"""

from __future__ import annotations

import click

from logins.cli import (
    audit,
    dev,
    purge,
    recovery,
    rotate,
    run,
    schema,
    setup,
    starter,
    stats,
    storage,
    testcases,
    tokenize,
    vault,
)


@click.group()
@click.version_option(package_name="logins-etl", prog_name="logins")
def main() -> None:
    """logins-etl: user logins from SQS into PostgreSQL with the PII tokenised and vaulted.

    The configuration is chosen like the flow's: LOGINS_ENV (default local) or LOGINS_CONFIG.
    Exit codes, for every command: 0 ok, 1 a check failed, 2 unusable configuration or
    environment (or bad usage).
    """


for command in (
    run.run,
    testcases.test,
    setup.keygen,
    setup.check,
    setup.migrate,
    stats.stats,
    tokenize.tokenize,
    recovery.reveal,
    recovery.forget,
    purge.purge,
    storage.storage,
    audit.audit,
    rotate.rotate,
    vault.vault,
    dev.generate,
    dev.demo,
    schema.schema,
    starter.init,
):
    main.add_command(command)

__all__ = ["main"]
