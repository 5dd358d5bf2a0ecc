"""CPU time of the validate step per body, for the logins schema and the sign-ups example:

    python -m bench.validate [--baseline OTHER/flows/steps/validate.py] [--rounds 60]

With --baseline, that file's Validator runs on the same bodies, alternating round by round
in this process, so both see the same machine (an A/B for a change to the hot loop). CPU
time (process_time), minimum and median over the rounds.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from pathlib import Path
from types import ModuleType

from bench.common import parser
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
    args = parser("python -m bench.validate", __doc__, rounds=60,
                  baseline=(None, "another flows/steps/validate.py"),
                  messages=(20_000, "bodies per schema")).parse_args()  # fmt: skip
    here = _module(Path(__file__).resolve().parent.parent / "flows/steps/validate.py", "this")
    other = _module(Path(args.baseline), "baseline") if args.baseline else None
    cases = {
        "logins": (logins_schema(), [m.body for m in generate(args.messages, seed=1)]),
        "signups": (_signups(), [m.body for m in iter_records(_signups(), args.messages, seed=1)]),
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
