"""`logins run`: the flow, through Bytewax's own runner.

It is `python -m bytewax.run flows.logins` with the options turned into that runner's
arguments and the environment the flow reads, then Bytewax's `bytewax.run` module executed as
`__main__` in this process (runpy): the same argument handling (its environment defaults,
the helm chart's pod name and host file, the recovery checks), the same flow module, the same
exit codes. Only the metrics port is checked here first, before anything starts.
"""

from __future__ import annotations

import os
import runpy
import sys
import tempfile
from pathlib import Path

import click

from logins.cli.common import EXIT_UNUSABLE
from logins.core import metricsport

FLOW_MODULE = "flows.logins"
PROGRESS_INTERVAL_ENV = "LOGINS_PROGRESS_INTERVAL"
STOP_WHEN_IDLE_ENV = "LOGINS_STOP_WHEN_IDLE"
API_CACHE_ENV = "BYTEWAX_DATAFLOW_API_CACHE_PATH"


@click.command(context_settings={"show_default": True})
@click.option(
    "-w",
    "--workers-per-process",
    type=click.IntRange(min=1),
    default=None,
    help="Worker threads in this process (Bytewax's -w).  [default: 1]",
)
@click.option(
    "-i",
    "--process-id",
    type=click.IntRange(min=0),
    default=None,
    help="This process's index in a cluster (Bytewax's -i; needs -a).",
)
@click.option(
    "-a",
    "--addresses",
    default=None,
    help="Every cluster process's host:port, separated by ';' (Bytewax's -a).",
)
@click.option(
    "-r",
    "--recovery-directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Bytewax recovery partitions (Bytewax's -r; needs -s and -b).",
)
@click.option(
    "-s",
    "--snapshot-interval",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds between recovery snapshots (Bytewax's -s).",
)
@click.option(
    "-b",
    "--backup-interval",
    type=click.IntRange(min=0),
    default=None,
    help="Seconds of extra snapshots kept (Bytewax's -b).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=metricsport.DEFAULT_PORT,
    help="Serve /metrics on this port (0: no metrics endpoint). Checked before the flow"
    " starts: a port in use exits 2 naming what holds it.",
)
@click.option(
    "--stop-when-idle",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="End once the queue was empty this long (batch mode); default: run until stopped.",
)
@click.option(
    "--progress-interval",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="A progress line every SECONDS (0: none).  [default: LOGINS_PROGRESS_INTERVAL, else 30]",
)
def run(
    workers_per_process: int | None,
    process_id: int | None,
    addresses: str | None,
    recovery_directory: Path | None,
    snapshot_interval: int | None,
    backup_interval: int | None,
    metrics_port: int,
    stop_when_idle: float | None,
    progress_interval: float | None,
) -> None:
    """Run the flow: receive from SQS, validate, dedupe, mask, commit, delete.

    The same as `python -m bytewax.run flows.logins` with these options; the configuration
    is chosen like every command's (LOGINS_ENV or LOGINS_CONFIG). Exit 0 when it stopped
    cleanly (SIGTERM, or idle with --stop-when-idle), 2 when it cannot start."""
    if metrics_port:
        try:
            metricsport.check_port(metrics_port)
        except metricsport.PortUnavailable as exc:
            click.echo(f"logins: cannot start: {exc}", err=True)
            raise SystemExit(EXIT_UNUSABLE) from None
        os.environ[metricsport.ENABLED] = "1"
        os.environ[metricsport.PORT] = str(metrics_port)
        # Bytewax writes dataflow.json there at start (default: the working directory, which
        # may be read-only: a bare FileNotFoundError); it is only the API's cache.
        os.environ.setdefault(API_CACHE_ENV, tempfile.gettempdir())
    else:
        os.environ.pop(metricsport.ENABLED, None)
    if stop_when_idle is not None:
        os.environ[STOP_WHEN_IDLE_ENV] = str(stop_when_idle)
    if progress_interval is not None:
        os.environ[PROGRESS_INTERVAL_ENV] = str(progress_interval)
    sys.argv = [
        "python -m bytewax.run",
        *bytewax_arguments(
            workers_per_process=workers_per_process,
            process_id=process_id,
            addresses=addresses,
            recovery_directory=recovery_directory,
            snapshot_interval=snapshot_interval,
            backup_interval=backup_interval,
        ),
    ]
    runpy.run_module("bytewax.run", run_name="__main__", alter_sys=True)


def bytewax_arguments(
    *,
    workers_per_process: int | None = None,
    process_id: int | None = None,
    addresses: str | None = None,
    recovery_directory: Path | None = None,
    snapshot_interval: int | None = None,
    backup_interval: int | None = None,
) -> list[str]:
    """`python -m bytewax.run`'s arguments for these options (unset ones left to Bytewax's
    own environment defaults)."""
    arguments = [FLOW_MODULE]
    for flag, value in (
        ("-w", workers_per_process),
        ("-i", process_id),
        ("-a", addresses),
        ("-r", recovery_directory),
        ("-s", snapshot_interval),
        ("-b", backup_interval),
    ):
        if value is not None:
            arguments += [flag, str(value)]
    return arguments
