"""Mutation testing (mutmut 3) of the I/O-free modules, each against its own unit tests only.

    python3 scripts/mutation.py                                  # every module of MODULES
    python3 scripts/mutation.py avatarsdk/_frames.py avatarsdk/errors.py
    python3 scripts/mutation.py --sample 100 --seed 1 avatarsdk/_frames.py   # 100 of its mutants, seeded
    python3 -m nox -s mutation -- avatarsdk/_frames.py           # the same, in a venv with mutmut pinned

For each module, a scratch directory ``.mutation/<module>/`` (git-ignored) gets a copy of the package, of
tests/ and of setup.cfg with a ``[mutmut]`` section that mutates that module alone and selects its tests (the
MODULES table); ``mutmut run`` runs there (its ``mutants/`` directory included), ``mutmut results`` is read,
and the scratch directory is removed (``--keep`` leaves it, for ``mutmut show NAME`` or ``mutmut browse``
inside it). Then a table: mutants, killed, survived, timeout/suspicious, other (no tests, segfault, ...), and
the score, (killed + timeout + suspicious) / mutants checked. Surviving mutants are listed by name;
``--show`` prints their diffs. A module whose tests are slow (threads: a dispatcher) gets a default sample size
in its row of MODULES, and ``--sample N`` (0: all) overrides it.

A module is measured against its own unit tests, not the whole suite: a mutant that only an end-to-end test
notices is a hole in the unit tests. Docs: docs/MUTATION.md (how to read the table, the survivors left and why).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutation"


@dataclass(frozen=True)
class Target:
    """A module's own unit tests (pytest arguments, relative to the repository root) and, for a module whose
    tests are slow (threads), how many mutants a run samples by default (None: all of them)."""

    tests: Tuple[str, ...]
    sample: Optional[int] = None


# Module -> its own unit tests (pytest arguments). One row per I/O-free module; add more here.
MODULES: Dict[str, Target] = {
    "avatarsdk/_frames.py": Target(
        (
            "tests/test_frames.py",
            "tests/test_properties.py",
            "-k",
            "frames",  # the frame properties of test_properties.py (test_frames.py's names all match too)
        )
    ),
    "avatarsdk/errors.py": Target(("tests/test_errors.py",)),
    "avatarsdk/_protocol.py": Target(("tests/test_protocol.py",)),
    "avatarsdk/_protocol_v1.py": Target(
        ("tests/test_protocol_v1.py", "tests/test_generations.py::test_segment_rule_and_counter")
    ),
    "avatarsdk/_http_errors.py": Target(("tests/test_http_errors.py",)),
    "avatarsdk/_faults.py": Target(("tests/test_fault_errors.py",)),
    "avatarsdk/_token.py": Target(("tests/test_token.py",)),
    # conftest builds a ReconnectPolicy at import, which calls _validation: a mutant there would stop the
    # collection itself (mutmut then aborts); this module's tests need nothing of conftest.
    "avatarsdk/_validation.py": Target(("tests/test_validation.py", "--noconftest")),
    "avatarsdk/_config_checks.py": Target(("tests/test_config_checks.py",)),
    "avatarsdk/_options.py": Target(("tests/test_options.py",)),
    "avatarsdk/_backoff.py": Target(("tests/test_backoff.py",)),
    "avatarsdk/_deadline.py": Target(("tests/test_deadline.py",)),
    "avatarsdk/_lifecycle.py": Target(("tests/test_lifecycle.py",)),
    "avatarsdk/_ledger.py": Target(("tests/test_ledger.py",)),
    "avatarsdk/_queue.py": Target(("tests/test_queue.py",)),
    "avatarsdk/_ingress.py": Target(("tests/test_ingress.py",)),
    "avatarsdk/_pool_state.py": Target(("tests/test_pool_state.py",)),
    "avatarsdk/_pool_config.py": Target(("tests/test_pool_config.py",)),
    # Threads: every mutant runs the dispatcher's tests, so a run samples them (seeded).
    "avatarsdk/_dispatch.py": Target(("tests/test_dispatch.py",), sample=120),
}

# mutmut's exit-code statuses, as `mutmut results` prints them, in the table's columns.
KILLED = {"killed"}
CAUGHT = {"timeout", "suspicious"}  # the mutant made the tests hang or crash oddly: noticed, not a survivor
NOT_COUNTED = {"skipped", "not checked"}  # not run (outside a sample, or pragma'd away)
RESULT_LINE = re.compile(r"^\s+(\S+): (.+)$")

# mutmut has no command that lists mutants without testing them: for --sample, its own generator names them
# (what `mutmut run` calls), run in the scratch directory so that it reads the [mutmut] section there.
NAMES_OF_MUTANTS = """\
import json, sys
from pathlib import Path
from mutmut.mutation.file_mutation import mutate_file_contents
from mutmut.utils.format_utils import get_mutant_name
path = Path(sys.argv[1])
mutated = mutate_file_contents(str(path), path.read_text(encoding="utf-8"))
print(json.dumps([get_mutant_name(path, name) for name in mutated.mutant_names]))
"""


@dataclass
class Outcome:
    module: str
    statuses: Dict[str, str]  # mutant name -> status
    sampled: Optional[int] = None

    def count(self, names: set[str]) -> int:
        return sum(1 for status in self.statuses.values() if status in names)

    @property
    def checked(self) -> int:
        return sum(1 for status in self.statuses.values() if status not in NOT_COUNTED)

    @property
    def survivors(self) -> List[str]:
        return sorted(name for name, status in self.statuses.items() if status == "survived")

    @property
    def score(self) -> float:
        caught = self.count(KILLED | CAUGHT)
        return 100.0 * caught / self.checked if self.checked else 0.0


def plain(output: str) -> str:
    """mutmut's output without its spinner: each carriage-return-separated status update but the last."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in output.splitlines())


def mutmut_command() -> str:
    """The ``mutmut`` script beside this interpreter (``python -m mutmut`` re-executes mutmut's __main__ in its
    workers), else the one on PATH."""
    beside = Path(sys.executable).parent / "mutmut"
    if beside.exists():
        return str(beside)
    found = shutil.which("mutmut")
    if not found:
        sys.exit("mutmut is not installed: python3 -m pip install mutmut==3.8.1 (or run: python3 -m nox -s mutation)")
    return found


def config_section(module: str, tests: Sequence[str]) -> str:
    """setup.cfg's [mutmut] section: mutate ``module`` only, run ``tests`` only."""

    def lines(values: Sequence[str]) -> str:
        return "".join(f"\n    {value}" for value in values)

    return (
        "\n[mutmut]\n"
        "source_paths = avatarsdk\n"
        f"only_mutate = {module}\n"
        f"pytest_add_cli_args_test_selection ={lines(tests)}\n"
        f"pytest_add_cli_args ={lines(['-p', 'no:cacheprovider'])}\n"
        "use_git_change_detection = false\n"
    )


def prepare(module: str, target: Target) -> Path:
    """A fresh scratch directory for ``module``: the package, tests/, setup.cfg with its [mutmut] section."""
    scratch = SCRATCH / Path(module).stem
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    shutil.copytree(ROOT / "avatarsdk", scratch / "avatarsdk", ignore=ignore)
    shutil.copytree(ROOT / "tests", scratch / "tests", ignore=ignore)
    setup_cfg = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    (scratch / "setup.cfg").write_text(setup_cfg + config_section(module, target.tests), encoding="utf-8")
    return scratch


def environment() -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the mutated copy must be what the tests import
    # tests/conftest.py's "ci" hypothesis profile: the same examples on every run, so scores do not wander.
    env["CI"] = "true"
    return env


def sample_names(scratch: Path, module: str, size: int, seed: int) -> List[str]:
    """``size`` of the module's mutants, drawn with ``seed`` (the names mutmut gives them)."""
    listing = subprocess.run(
        [sys.executable, "-c", NAMES_OF_MUTANTS, module],
        cwd=scratch,
        env=environment(),
        capture_output=True,
        text=True,
        check=True,
    )
    names: List[str] = json.loads(listing.stdout)
    if size >= len(names):
        return names
    return sorted(random.Random(seed).sample(names, size))


def run_module(module: str, target: Target, args: argparse.Namespace) -> Outcome:
    for test in target.tests:
        if test.startswith("tests/") and not (ROOT / test.split("::")[0]).exists():
            sys.exit(f"{module}: its unit tests {test} do not exist")
    scratch = prepare(module, target)
    try:
        size = target.sample if args.sample is None else args.sample
        names = sample_names(scratch, module, size, args.seed) if size else []
        print(f"\n=== {module}: {' '.join(target.tests)}" + (f" ({len(names)} mutants sampled)" if names else ""))
        mutmut = mutmut_command()
        command = [mutmut, "run", "--max-children", str(args.jobs), *names]
        started = time.monotonic()
        run = subprocess.run(command, cwd=scratch, env=environment(), capture_output=True, text=True, check=False)
        if run.returncode != 0:
            print(plain(run.stdout + run.stderr))
            sys.exit(f"{module}: mutmut run failed (exit code {run.returncode}); its output is above (--keep keeps it)")
        print(f"    mutmut run: {time.monotonic() - started:.0f} s")
        results = subprocess.run(
            [mutmut, "results", "--all", "true"],
            cwd=scratch,
            env=environment(),
            capture_output=True,
            text=True,
            check=True,
        )
        statuses: Dict[str, str] = {}
        for line in results.stdout.splitlines():
            match = RESULT_LINE.match(line)
            if match:
                statuses[match.group(1)] = match.group(2).strip()
        if names:
            drawn = set(names)
            statuses = {name: status for name, status in statuses.items() if name in drawn}
        outcome = Outcome(module, statuses, len(names) or None)
        for name in outcome.survivors:
            if args.show:
                shown = subprocess.run(
                    [mutmut, "show", name], cwd=scratch, env=environment(), capture_output=True, text=True, check=False
                )
                print(shown.stdout.rstrip() + "\n")
        return outcome
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
            if SCRATCH.exists() and not any(SCRATCH.iterdir()):
                SCRATCH.rmdir()


def table(outcomes: Sequence[Outcome]) -> str:
    header = ("module", "mutants", "killed", "survived", "timeout/suspicious", "other", "score %")
    rows = [header]
    for o in outcomes:
        other = o.checked - o.count(KILLED | CAUGHT | {"survived"})
        mutants = f"{o.checked}" + (" (sample)" if o.sampled else "")
        rows.append(
            (
                o.module,
                mutants,
                str(o.count(KILLED)),
                str(o.count({"survived"})),
                str(o.count(CAUGHT)),
                str(other),
                f"{o.score:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "| "
            + " | ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            + " |"
        )
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("modules", nargs="*", help=f"modules to mutate (default: all of {', '.join(MODULES)})")
    parser.add_argument("--sample", type=int, help="mutants per module, drawn at random (0: all; default: the table's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample's draw (default 0)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutmut's --max-children")
    parser.add_argument("--show", action="store_true", help="print the diff of each surviving mutant")
    parser.add_argument("--keep", action="store_true", help="keep .mutation/<module>/ (mutmut show / browse there)")
    args = parser.parse_args(argv)
    modules = [Path(m).as_posix() for m in args.modules] or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"not in scripts/mutation.py's MODULES table: {', '.join(unknown)}")
    outcomes = [run_module(module, MODULES[module], args) for module in modules]
    print("\n" + table(outcomes))
    for o in outcomes:
        if o.survivors:
            print(f"\nsurvivors in {o.module}:\n    " + "\n    ".join(o.survivors))
    kinds = Counter(status for o in outcomes for status in o.statuses.values())
    odd = {k: v for k, v in kinds.items() if k not in KILLED | CAUGHT | NOT_COUNTED | {"survived"}}
    if odd:
        print(f"\nother statuses: {odd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
