"""CPU time of the validate step per body, for the logins schema and the sign-ups example:

    python -m bench.validate [--baseline OTHER/flows/steps/validate.py] [--rounds 60]

With --baseline, that file's Validator runs on the same bodies, alternating round by round
in this process, so both see the same machine (an A/B for a change to the hot loop). CPU
time (process_time), minimum and median over the rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path
from types import ModuleType

from logins.core.config import ValidateStep, load_config
from logins.core.keys import TokenKey
from logins.core.tokens import Tokenizer
from logins.dev.generator import generate, logins_schema
from logins.dev.samples import iter_records

SIGNUPS = Path(__file__).resolve().parent.parent / "config" / "examples" / "signups.yaml"


def _module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _signups() -> ValidateStep:
    env = {"LOGINS_CONFIG": str(SIGNUPS), "SIGNUPS_QUEUE_URL": "-", "DATABASE_URL": "-"}
    env |= {"LOGINS_TOKEN_KEY_FILE": "-", "LOGINS_VAULT_PUBLIC_KEY_FILE": "-"}
    return load_config(env).validate_step


def _round(module: ModuleType, step: ValidateStep, bodies: list[str]) -> float:
    parse = module.Validator(step, Tokenizer([TokenKey("k1", b"\x01" * 32)])).parse
    invalid = module.Invalid
    started = time.process_time()
    for body in bodies:
        try:  # noqa: SIM105 - a with block per body would be timed too
            parse(body)
        except invalid:
            pass
    return (time.process_time() - started) / len(bodies) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="another flows/steps/validate.py")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("-n", type=int, default=20_000, help="bodies per schema")
    args = parser.parse_args()
    here = _module(Path(__file__).resolve().parent.parent / "flows/steps/validate.py", "this")
    other = _module(args.baseline, "baseline") if args.baseline else None
    cases = {
        "logins": (logins_schema(), [m.body for m in generate(args.n, seed=1)]),
        "signups": (_signups(), [m.body for m in iter_records(_signups(), args.n, seed=1)]),
    }
    for name, (step, bodies) in cases.items():
        if other is not None and name != "logins":
            continue  # the baseline may not know the newer field types
        mine, theirs = [], []
        for _ in range(args.rounds):
            mine.append(_round(here, step, bodies))
            if other is not None:
                theirs.append(_round(other, step, bodies))
        line = f"{name}: {min(mine):,.0f} ns/body min, {statistics.median(mine):,.0f} median"
        if theirs:
            line += f"; baseline {min(theirs):,.0f} min, {statistics.median(theirs):,.0f} median"
        print(line)


if __name__ == "__main__":
    main()
