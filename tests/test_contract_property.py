"""The contract as users read it: argument mixes drawn by hypothesis, each run with the
drivers' own code compiled with bounds checking and compared with the fast kernel.

The cases run in two subprocesses (on separate cores, each taking whole kernel
configurations, sharing the session's Numba disk cache), each printing the case it is
about to run: a case that kills the interpreter (the heap corruption this test was
written for) is a failure that names the case, not a dead test session, and a new
process runs the cases after it.
"""

import json
import os
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contract_cases  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
#: Examples drawn per kernel configuration (each configuration compiles two kernels; the
#: examples of one share them). FASTSDE_CONTRACT_EXAMPLES=N draws more for a deeper run.
EXAMPLES_PER_CONFIG = int(os.environ.get("FASTSDE_CONTRACT_EXAMPLES", "8"))
#: Path counts across the lane (64) and chunk (512) edges.
PATH_COUNTS = (1, 2, 63, 64, 65, 130, 511, 512, 513, 1026)


@st.composite
def cases(draw, config):
    c = contract_cases.CONFIGS[config]
    antithetic = draw(st.booleans())
    n_paths = draw(st.sampled_from(PATH_COUNTS))
    first_path = draw(st.sampled_from((0, 2, 7, 2**40 + 4)))
    if antithetic:
        n_paths += n_paths % 2
        first_path += first_path % 2
    # A model declared without params given none runs with width 0: another kernel, so
    # such models always get rows of the configuration's width (width 0: none at all).
    if c["width"] == 0:
        params = "absent"
    elif c["declared"]:
        params = draw(st.sampled_from(("absent", "shared", "rows")))
    else:
        params = draw(st.sampled_from(("shared", "rows")))
    save_at = draw(st.sampled_from((None, "int", "times")))
    stats = draw(st.booleans())
    keep_paths = draw(st.sampled_from((None, True, False)))
    histogram = draw(st.booleans())
    keeps_something = (stats or histogram or c["obs"]
                       or keep_paths or (keep_paths is None and save_at and not stats))
    keep_x = draw(st.booleans()) if keeps_something else True
    return dict(config=config, n_paths=n_paths, first_path=first_path,
                n_steps=draw(st.integers(1, 7)), seed=draw(st.integers(0, 2**32)),
                x0=draw(st.sampled_from(("number", "vector", "rows", "normal"))),
                params=params, save_at=save_at, stats=stats, keep_paths=keep_paths,
                histogram=histogram, antithetic=antithetic, keep_x=keep_x)


def draw_cases():
    drawn = []
    for config in sorted(contract_cases.CONFIGS):
        @settings(derandomize=True, max_examples=EXAMPLES_PER_CONFIG, database=None,
                  deadline=None, suppress_health_check=list(HealthCheck))
        @given(cases(config))
        def collect(case):
            drawn.append(case)

        collect()
    return drawn


@pytest.fixture(scope="module")
def drawn_cases():
    return draw_cases()


def test_every_configuration_is_drawn(drawn_cases):
    configs = {case["config"] for case in drawn_cases}
    assert configs == set(contract_cases.CONFIGS), (
        f"configurations never drawn: {set(contract_cases.CONFIGS) - configs}")


def _batches(cases, n):
    """The cases in ``n`` batches, one per process: a configuration's cases stay together
    (they share its kernels) and the configurations are dealt to the batches in turn."""
    by_config = {}
    for case in cases:
        by_config.setdefault(case["config"], []).append(case)
    batches = [[] for _ in range(n)]
    for i, config in enumerate(sorted(by_config)):
        batches[i % n].extend(by_config[config])
    return [batch for batch in batches if batch]


def _died(code, lines):
    return code not in (0, 1) or not any(line.startswith("DONE") for line in lines)


def _run_batches(batches, tmp_path, parallel=2):
    """Run each batch of cases in a subprocess, ``parallel`` at a time. A process that
    dies (a segfault, a heap abort) is followed by a new one for the cases after the one
    it died in, so that one crash leaves no case unrun. Returns the runs, one per
    process: ``(cases, returncode, output)``."""
    # The session's Numba disk cache (NUMBA_CACHE_DIR as set, or Numba's default): the
    # pieces that do not depend on the model (launchers, block ends, lane arrays) are then
    # read from it instead of compiled again in each process.
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pending = [list(batch) for batch in batches if batch]
    running = []
    runs = []
    started = 0
    while pending or running:
        while pending and len(running) < parallel:
            cases = pending.pop(0)
            path = tmp_path / f"batch-{started}.json"
            started += 1
            path.write_text(json.dumps(cases))
            log = open(path.with_suffix(".log"), "w+")
            proc = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "contract_cases.py"), str(path)],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            running.append((proc, log, cases))
        done = [run for run in running if run[0].poll() is not None]
        if not done:
            time.sleep(0.1)
            continue
        for run in done:
            running.remove(run)
            proc, log, cases = run
            log.seek(0)
            output = log.read()
            log.close()
            runs.append((cases, proc.returncode, output))
            lines = output.splitlines()
            begun = [line for line in lines if line.startswith("CASE")]
            if _died(proc.returncode, lines) and begun:
                rest = cases[int(begun[-1].split()[1]) + 1:]
                if rest:
                    pending.insert(0, rest)
    return runs


def _problems(runs):
    """Failures and dead processes in the subprocess outputs, each naming its case."""
    problems = []
    for cases, code, output in runs:
        lines = output.splitlines()
        if _died(code, lines):
            begun = [line for line in lines if line.startswith("CASE")]
            last = begun[-1] if begun else "(before any case)"
            config = cases[int(last.split()[1])]["config"] if begun else cases[0]["config"]
            problems.append(f"{config}: the process died (exit {code}) during {last}\n"
                            + "\n".join(lines[-15:]))
        for line in lines:
            if line.startswith("FAIL"):
                case = cases[int(line.split()[1].rstrip(":"))]
                problems.append(f"{case['config']}: {line}\n  case: {json.dumps(case)}")
    return problems


@pytest.mark.slow
def test_argument_mixes_bounds_checked_equal_fast(drawn_cases, tmp_path):
    problems = _problems(_run_batches(_batches(drawn_cases, 2), tmp_path))
    assert not problems, "\n".join(problems)


def test_the_harness_reports_a_killed_process_and_a_mismatch(tmp_path, monkeypatch):
    """A case whose process dies, or whose two runs differ, is reported with the case,
    and the cases after the one that killed its process still run: the harness cannot
    pass what it exists to catch."""
    case = draw_cases()[0]
    fake = tmp_path / "contract_cases.py"
    fake.write_text("import json, os, signal, sys\n"
                    "for i, case in enumerate(json.load(open(sys.argv[1]))):\n"
                    "    print(f'CASE {i} {case[\"fake\"]}', flush=True)\n"
                    "    if case['fake'] == 'die':\n"
                    "        os.kill(os.getpid(), signal.SIGSEGV)\n"
                    "    if case['fake'] == 'mismatch':\n"
                    "        print(f'FAIL {i}: x: differs', flush=True)\n"
                    "    else:\n"
                    "        print(f'OK {i}', flush=True)\n"
                    "print('DONE', flush=True)\n")
    monkeypatch.setattr(sys.modules[__name__], "HERE", str(tmp_path))
    die, after, mismatch = (dict(case, fake=kind) for kind in ("die", "after", "mismatch"))
    runs = _run_batches([[die, after], [mismatch]], tmp_path)
    problems = _problems(runs)
    assert len(problems) == 2, problems
    died = [p for p in problems if "died" in p]
    assert len(died) == 1 and "CASE 0 die" in died[0] and case["config"] in died[0]
    differs = [p for p in problems if "x: differs" in p]
    assert len(differs) == 1 and json.dumps(mismatch) in differs[0]
    # The case after the one that killed its process ran, in a process of its own.
    assert any(cases == [after] and "OK 0" in output for cases, _, output in runs), runs
