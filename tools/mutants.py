"""A curated mutation harness: each mutation breaks one important behaviour of the product, and the tests
listed with it must notice. `make mutants` runs them all, `make mutants-fast` (CI) the ones marked fast.

For each mutation the harness copies the repository (the files `git ls-files` lists, tracked or new and not
ignored) into a temporary folder, replaces the mutation's `old` snippet by its `new` one in that copy, and
runs only the mutation's tests there (cwd and PYTHONPATH set to the copy, with a timeout). The working tree is
never touched. One line per mutation:

    caught     split_hash_salted_per_process         14.2s
    SURVIVED   push_duplicates_the_same_model        61.0s   <- its tests pass with the behaviour broken

A mutation is `caught` only when one of its tests fails or errs (read from pytest's JUnit XML report: TF and
Beam sometimes crash the interpreter on exit, so the exit code cannot tell). A run where no test ran (a test
id that no longer exists, a collection error), a timeout, or a `new` snippet that does not compile is an
ERROR, not a catch. The exit code is non-zero if any mutation survives or errs, or if an `old` snippet is not
found exactly once in its file (checked for every selected mutation before anything runs). Ctrl-C or SIGTERM
ends the pytest runs in progress, with whatever they started, before the harness exits.

    python tools/mutants.py                 all mutations
    python tools/mutants.py --fast          those marked fast (each test under ~20 s; CI, under 3 minutes)
    python tools/mutants.py --fast -j 2     the same, two mutations at a time (make mutants-fast)
    python tools/mutants.py --only NAME     one mutation (repeatable)
    python tools/mutants.py --list          the table: name, fast, file, what breaks, tests
    python tools/mutants.py --baseline      the selected mutations' tests on the unmutated copy: all must pass

Adding a mutation
-----------------
1. Pick one behaviour a user relies on (not a line of code): "an unchanged span is reused, not re-read".
2. Break it the way a plausible bug would, with the smallest edit: append a `Mutation` to MUTATIONS (in
   tools/mutations.py) with a `name` (snake_case, says what is now wrong), the `file` (relative to the
   repository root), an `old` snippet that occurs exactly once in that file (long enough to stay unique; when
   a refactor moves the code, the harness fails loudly and only `file` or `old` needs updating), its `new`
   replacement, `breaks` (one line: what a user would see), and `tests` (pytest node ids, as few as catch it).
3. Run `python tools/mutants.py --only NAME`: it must say `caught`. If it says SURVIVED, strengthen a test so
   that it observes the effect (weights, bytes, rows, processes, files), not what the code reports about
   itself (a property, a log line, a history field written from the same variable).
4. Run `python tools/mutants.py --only NAME --baseline`: the listed tests must pass without the mutation.
5. Mark it `fast=True` if each listed test takes under ~20 s, so CI runs it (`make mutants-fast`, < 3 min).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutations import DEFAULT_TIMEOUT, MUTATIONS, Mutation

ROOT = Path(__file__).resolve().parent.parent
# The process groups of the pytest runs in progress, and whether the harness was told to stop.
RUNNING: set[int] = set()
STOPPED = threading.Event()


def stop_on_signals() -> None:
    """SIGTERM or SIGINT ends every pytest run in progress with what it started (servers, Beam workers,
    clusters), then the harness (exit 128 + the signal), its copies removed: none is left running."""
    def stop(signum, _frame):
        STOPPED.set()
        for group in list(RUNNING):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def check_snippets(mutations: list[Mutation], root: Path = ROOT) -> list[str]:
    """One problem line per mutation whose `old` snippet is not found exactly once in its file."""
    problems = []
    names = [m.name for m in MUTATIONS]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{name}: the name is used by more than one mutation")
    for mutation in mutations:
        path = root / mutation.file
        if not path.is_file():
            problems.append(f"{mutation.name}: {mutation.file} does not exist (moved? update `file`)")
            continue
        count = path.read_text(encoding="utf-8").count(mutation.old)
        if count != 1:
            where = "not found" if count == 0 else f"found {count} times"
            problems.append(f"{mutation.name}: the `old` snippet is {where} in {mutation.file} "
                            f"(code moved or changed? update the mutation): {mutation.old[:80]!r}")
        if mutation.old == mutation.new:
            problems.append(f"{mutation.name}: `new` equals `old`")
    return problems


def project_files(root: Path = ROOT) -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                            check=True, capture_output=True).stdout.decode().split("\0")
    return [name for name in listed if name and (root / name).is_file()]


def copy_project(destination: Path, files: list[str], root: Path = ROOT) -> None:
    for name in files:
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)


def run_tests(copy: Path, tests: tuple[str, ...],
              timeout: int) -> tuple[dict[str, int] | None, str, float, str]:
    """(counts, exit, seconds, output tail): counts of the run's tests ({"tests", "failed", "skipped"})
    read from pytest's JUnit XML report, None when pytest wrote none (a usage error, a timeout). The report,
    not the exit code, decides: TensorFlow and Beam sometimes crash the interpreter on its way out (exit -11)
    after the tests have run and been reported."""
    import xml.etree.ElementTree as ElementTree
    report = copy / ".mutant-report.xml"
    report.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--no-header",
               f"--junitxml={report}", *tests]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    RUNNING.add(process.pid)
    try:
        if STOPPED.is_set():  # the stop came between Popen and RUNNING.add
            os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=timeout)
        exit_text = f"exit {process.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the test run and whatever it started (servers, Beam workers)
        output, _ = process.communicate()
        exit_text = f"timed out after {timeout}s"
    finally:
        RUNNING.discard(process.pid)
    seconds = time.monotonic() - started
    counts = None
    if report.is_file() and exit_text.startswith("exit"):
        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {"tests": int(suite.get("tests", 0)),
                  "failed": int(suite.get("failures", 0)) + int(suite.get("errors", 0)),
                  "skipped": int(suite.get("skipped", 0))}
    return counts, exit_text, seconds, output[-4000:]


def mutate(copy: Path, mutation: Mutation) -> str | None:
    """Applies the mutation in the copy; why it cannot be tested, or None."""
    path = copy / mutation.file
    text = path.read_text(encoding="utf-8").replace(mutation.old, mutation.new, 1)
    path.write_text(text, encoding="utf-8")
    if path.suffix == ".py":
        try:
            compile(text, str(path), "exec")
        except SyntaxError as error:  # a broken mutation would be "caught" by any test that imports the file
            return f"the mutated {mutation.file} does not compile: {error}"
    return None


def run_mutation(mutation: Mutation, files: list[str], verbose: bool) -> str:
    if STOPPED.is_set():  # the harness is stopping: a queued mutation does not start
        return "stopped"
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutation.name}-") as folder:
        copy = Path(folder)
        copy_project(copy, files)
        problem = mutate(copy, mutation)
        if problem:
            counts, exit_text, seconds, output = None, problem, 0.0, ""
        else:
            counts, exit_text, seconds, output = run_tests(copy, mutation.tests, mutation.timeout)
    if STOPPED.is_set():
        return "stopped"
    if counts is None or counts["tests"] == 0:
        status = f"ERROR ({exit_text}, no test ran)"
    elif counts["failed"]:
        status = "caught"
    else:
        status = "SURVIVED" + (f" ({counts['skipped']} skipped)" if counts["skipped"] else "")
    print(f"{status.split(' (')[0]:<10} {mutation.name:<40} {seconds:6.1f}s"
          + (f"   {status}" if status.startswith(("ERROR", "SURVIVED (")) else ""), flush=True)
    if verbose or status != "caught":
        print("    " + "\n    ".join(output.rstrip().splitlines()[-25:]), flush=True)
    return status


def run_baseline(mutations: list[Mutation], files: list[str]) -> bool:
    tests = tuple(dict.fromkeys(test for m in mutations for test in m.tests))
    with tempfile.TemporaryDirectory(prefix="mutant-baseline-") as folder:
        copy_project(Path(folder), files)
        counts, exit_text, seconds, output = run_tests(Path(folder), tests, DEFAULT_TIMEOUT * 2)
    ok = (counts is not None and counts["tests"] >= len(tests) and not counts["failed"]
          and not counts["skipped"])
    print(f"{'passes' if ok else 'FAILS':<10} {'baseline (' + str(len(tests)) + ' tests, no mutation)':<40} "
          f"{seconds:6.1f}s   {counts} {exit_text}", flush=True)
    if not ok:
        print("    " + "\n    ".join(output.rstrip().splitlines()[-40:]), flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help="only the mutations marked fast (CI)")
    parser.add_argument("--only", action="append", metavar="NAME", help="only this mutation (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--baseline", action="store_true",
                        help="run the selected mutations' tests without any mutation; they must all pass")
    parser.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                        help="run N mutations at once (each in its own copy; make mutants-fast uses 2)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the pytest output of every mutation")
    args = parser.parse_args(argv)

    selected = [m for m in MUTATIONS if (not args.fast or m.fast) and (not args.only or m.name in args.only)]
    unknown = sorted(set(args.only or ()) - {m.name for m in MUTATIONS})
    if unknown:
        print(f"unknown mutation(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    if args.list:
        for m in selected:
            print(f"{m.name}  [{'fast' if m.fast else 'slow'}]  {m.file}\n    breaks: {m.breaks}")
            for test in m.tests:
                print(f"    test:   {test}")
        return 0
    problems = check_snippets(selected)
    if problems:
        print("mutations that no longer apply:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    files = project_files()
    stop_on_signals()
    if args.baseline:
        return 0 if run_baseline(selected, files) else 1
    started = time.monotonic()
    # Each mutation runs in its own copy and its own pytest process, so N of them can run at once (threads
    # only wait for their subprocess); lines come in the order the mutations finish.
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        statuses = list(pool.map(lambda m: run_mutation(m, files, args.verbose), selected))
    caught = statuses.count("caught")
    print(f"{caught} of {len(statuses)} mutations caught in {time.monotonic() - started:.0f}s", flush=True)
    return 0 if caught == len(statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
