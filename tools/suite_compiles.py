"""Where the test suite's time goes: its compiles and its processes, subprocesses included.

    python tools/suite_compiles.py [--out DIR] [PYTEST ARGS...]
    python tools/suite_compiles.py --report DIR

Runs the README's test command (``python -m pytest -q -n auto --maxprocesses 4 --dist
loadfile`` unless PYTEST ARGS are given) from an empty Numba cache, with a start-up hook
in every Python process of this environment: the pytest-xdist workers, and the processes
that tests start (the CUDA simulator run, the contract cases, the cache and CLI checks).
The hook is a ``.pth`` file put in this environment's site-packages for the run and
removed after it. Each process writes, to ``DIR/<pid>.jsonl``:

* each top-level Numba compile (``numba:compile`` events; nested ones are inside their
  parent's time): the test that caused it (``PYTEST_CURRENT_TEST``, which a subprocess
  inherits from the test that started it), the function, wall seconds; a framed
  kernel's merge (``fastsde_stage="merge"``) is named ``merge:<frame>``;
* at exit, its command line, parent, wall seconds and CPU seconds (user + system).

The report gives the CPU seconds per process (the suite is CPU-bound on two cores: its
wall time is about the sum over processes divided by the cores), and the compile seconds
per function, per test file and per process. Compile seconds are wall time, so they
include waiting for a core where more processes run than there are cores. CUDA's PTX
compiles (numba-cuda) are not ``numba:compile`` events of the CPU target and are not
counted as compiles; they are in their process's CPU seconds.
"""

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time

HOOK_MODULE = "_fastsde_suite_census"
HOOK = '''"""Installed by tools/suite_compiles.py for one test run; removed after it."""
import atexit, importlib.machinery, json, os, sys, time

_folder = os.environ.get("FASTSDE_SUITE_CENSUS")
_start = time.time()
_out = []


def _write(row):
    if not _out:
        _out.append(open(os.path.join(_folder, f"{os.getpid()}.jsonl"), "a"))
    _out[0].write(json.dumps(row) + "\\n")
    _out[0].flush()


def _listen():
    from numba.core import event
    state = {"depth": 0}

    class Listener(event.Listener):
        def on_start(self, ev):
            state["depth"] += 1
            if state["depth"] == 1:
                data = ev.data or {}
                fn = getattr(data.get("dispatcher"), "py_func", None)
                name = f"{fn.__module__}.{fn.__qualname__}" if fn is not None else "?"
                if data.get("fastsde_stage") == "merge":
                    name = "merge:" + name
                state["name"], state["start"] = name, time.perf_counter()

        def on_end(self, ev):
            state["depth"] -= 1
            if state["depth"] == 0:
                _write(["compile", os.environ.get("PYTEST_CURRENT_TEST", ""),
                        state["name"], time.perf_counter() - state["start"]])

    event.register("numba:compile", Listener())


class _AfterNumbaEvent:
    """Registers the listener as soon as numba.core.event is imported (Numba imports
    it while it starts, before any compile)."""

    def find_spec(self, name, path=None, target=None):
        if name != "numba.core.event":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        real = spec.loader

        class Loader:
            def create_module(self, spec):
                return real.create_module(spec)

            def exec_module(self, module):
                real.exec_module(module)
                sys.modules[name] = module
                _listen()

        spec.loader = Loader()
        return spec


@atexit.register
def _at_exit():
    times = os.times()
    _write(["process", " ".join(sys.argv)[:200], os.getppid(), time.time() - _start,
            times.user + times.system])


if _folder:
    sys.meta_path.insert(0, _AfterNumbaEvent())
'''

README_COMMAND = ["-q", "-n", "auto", "--maxprocesses", "4", "--dist", "loadfile"]


def run(folder, pytest_args):
    """Run pytest with the hook installed; returns (exit status, wall seconds)."""
    site = sysconfig.get_paths()["purelib"]
    module = os.path.join(site, HOOK_MODULE + ".py")
    pth = os.path.join(site, HOOK_MODULE + ".pth")
    os.makedirs(folder, exist_ok=True)
    env = dict(os.environ, FASTSDE_SUITE_CENSUS=os.path.abspath(folder),
               NUMBA_CACHE_DIR=tempfile.mkdtemp(prefix="suite-census-numba-"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as .ci/run
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        with open(module, "w") as f:
            f.write(HOOK)
        with open(pth, "w") as f:
            f.write(f"import {HOOK_MODULE}\n")
        start = time.time()
        status = subprocess.call([sys.executable, "-m", "pytest"] + pytest_args, env=env,
                                 cwd=root)
        return status, time.time() - start
    finally:
        for path in (pth, module):
            try:
                os.unlink(path)
            except OSError:
                pass


def report(folder, top=20):
    compiles, processes = [], []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".jsonl"):
            continue
        pid = int(name.split(".")[0])
        with open(os.path.join(folder, name)) as f:
            for line in f:
                row = json.loads(line)
                (compiles if row[0] == "compile" else processes).append([pid] + row[1:])
    by_function, count = collections.Counter(), collections.Counter()
    by_file, by_pid = collections.Counter(), collections.Counter()
    for pid, test, function, seconds in compiles:
        function = re.sub(r"_[0-9a-f]{24}$", "", function)  # cpu._named's fingerprint
        by_function[function] += seconds
        count[function] += 1
        by_file[test.split("::")[0] or "(outside a test)"] += seconds
        by_pid[pid] += seconds
    cpu_total = sum(p[4] for p in processes)
    print(f"{len(processes)} Python processes, {cpu_total:.1f} CPU s in all; "
          f"{len(compiles)} top-level compiles, {sum(by_function.values()):.1f} s")
    print("\n  CPU s   wall s  compile s  process")
    for pid, argv, _, wall, cpu in sorted(processes, key=lambda p: -p[4])[:top]:
        print(f"{cpu:7.1f}  {wall:7.1f}  {by_pid[pid]:9.1f}  {pid} {argv[:90]}")
    print("\nseconds  count  function")
    for function, seconds in by_function.most_common(top):
        print(f"{seconds:7.1f}  {count[function]:5d}  {function}")
    print("\nseconds  test file")
    for path, seconds in by_file.most_common(top):
        print(f"{seconds:7.1f}  {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="folder for the records")
    parser.add_argument("--report", metavar="DIR", help="only print DIR's report")
    args, pytest_args = parser.parse_known_args()
    if args.report:
        report(args.report)
        return 0
    folder = args.out or tempfile.mkdtemp(prefix="suite-census-")
    status, wall = run(folder, pytest_args or README_COMMAND)
    print(f"\npytest exit status {status}, {wall:.1f} s wall; records in {folder}\n")
    report(folder)
    return status


if __name__ == "__main__":
    sys.exit(main())
