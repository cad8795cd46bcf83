"""The contract as users read it: argument mixes drawn by hypothesis, each run with the
drivers' own code compiled with bounds checking and compared with the fast kernel.

The cases run in subprocesses (one per kernel configuration, two at a time on separate
cores, sharing the session's Numba disk cache), each printing the case it is about to
run: a case that kills the interpreter (the heap corruption this test was written for) is
a failure that names the case, not a dead test session.
"""

import json
import os
import subprocess
import sys

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


def _run_groups(groups, tmp_path, parallel=2):
    """Run each group of cases in its own subprocess, ``parallel`` at a time; returns
    {config: (returncode, output)}."""
    # The session's Numba disk cache (NUMBA_CACHE_DIR as set, or Numba's default): the
    # pieces that do not depend on the model (launchers, block ends, lane arrays) are then
    # read from it instead of compiled again in the first processes.
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pending = sorted(groups)
    running = {}
    results = {}
    while pending or running:
        while pending and len(running) < parallel:
            config = pending.pop(0)
            path = tmp_path / f"{config}.json"
            path.write_text(json.dumps(groups[config]))
            log = open(tmp_path / f"{config}.log", "w+")
            proc = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "contract_cases.py"), str(path)],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            running[config] = (proc, log)
        done = None
        for config, (proc, log) in running.items():
            if proc.poll() is not None:
                done = config
                break
        if done is None:
            next(iter(running.values()))[0].wait(timeout=900)
            continue
        proc, log = running.pop(done)
        log.seek(0)
        results[done] = (proc.returncode, log.read())
        log.close()
    return results


def _problems(groups, results):
    """Failures and dead processes in the subprocess outputs, each naming its case."""
    problems = []
    for config, (code, output) in sorted(results.items()):
        lines = output.splitlines()
        if code not in (0, 1) or not any(line.startswith("DONE") for line in lines):
            started = [line for line in lines if line.startswith("CASE")]
            last = started[-1] if started else "(before any case)"
            problems.append(f"{config}: the process died (exit {code}) during {last}\n"
                            + "\n".join(lines[-15:]))
        for line in lines:
            if line.startswith("FAIL"):
                i = int(line.split()[1].rstrip(":"))
                problems.append(f"{config}: {line}\n  case: {json.dumps(groups[config][i])}")
    return problems


@pytest.mark.slow
def test_argument_mixes_bounds_checked_equal_fast(drawn_cases, tmp_path):
    groups = {}
    for case in drawn_cases:
        groups.setdefault(case["config"], []).append(case)
    problems = _problems(groups, _run_groups(groups, tmp_path))
    assert not problems, "\n".join(problems)


def test_the_harness_reports_a_killed_process_and_a_mismatch(tmp_path, monkeypatch):
    """A case whose process dies, or whose two runs differ, is reported with the case:
    the harness cannot pass what it exists to catch."""
    case = draw_cases()[0]
    fake = tmp_path / "contract_cases.py"
    fake.write_text("import os, signal, sys\n"
                    "if 'die' in sys.argv[1]:\n"
                    "    print('CASE 0 x', flush=True)\n"
                    "    os.kill(os.getpid(), signal.SIGSEGV)\n"
                    "print('CASE 0 x', flush=True)\nprint('FAIL 0: x: differs', flush=True)\n"
                    "print('DONE 1 cases, 1 failed', flush=True)\nsys.exit(1)\n")
    monkeypatch.setattr(sys.modules[__name__], "HERE", str(tmp_path))
    groups = {"die": [case], "mismatch": [case]}
    problems = _problems(groups, _run_groups(groups, tmp_path))
    assert len(problems) == 2
    assert "died" in problems[0] and "CASE 0" in problems[0]
    assert "x: differs" in problems[1] and json.dumps(case) in problems[1]
