"""Where the test suite's time goes in compiling: a pytest plugin, and its report.

Each pytest process (xdist workers included) records every top-level Numba compile
(``numba:compile`` events; nested ones are inside their parent's time) with the test
that caused it, one JSON line per compile, in ``$SUITE_COMPILES_DIR/<pid>.jsonl``::

    export SUITE_COMPILES_DIR=$(mktemp -d)
    PYTHONPATH=tools PYTEST_PLUGINS=suite_compiles \\
        python -m pytest -q -n auto --maxprocesses 4 --dist loadfile
    python tools/suite_compiles.py $SUITE_COMPILES_DIR

The report sums the seconds per compiled function and per test file. Subprocesses that
tests start (the CUDA simulator run, the contract cases) inherit PYTEST_PLUGINS only
where they run pytest; their compiles are not counted otherwise. CUDA's PTX compiles are
not ``numba:compile`` events of the CPU target and are not counted. The CUDA simulator
check (tests/test_cuda.py::test_device_tests_under_the_simulator) fails under the
plugin: its subprocess gets PYTEST_PLUGINS but a PYTHONPATH without ``tools/``.
"""

import collections
import json
import os
import re
import sys
import time

_state = {"node": "(collection)", "depth": 0, "start": 0.0, "name": "?", "out": None}


def _listener():
    from numba.core import event

    class Listener(event.Listener):
        def on_start(self, ev):
            _state["depth"] += 1
            if _state["depth"] == 1:
                _state["start"] = time.perf_counter()
                fn = getattr((ev.data or {}).get("dispatcher"), "py_func", None)
                _state["name"] = (f"{fn.__module__}.{fn.__qualname__}" if fn is not None
                                  else "?")

        def on_end(self, ev):
            _state["depth"] -= 1
            if _state["depth"] == 0 and _state["out"] is not None:
                _state["out"].write(json.dumps(
                    [_state["node"], _state["name"],
                     time.perf_counter() - _state["start"]]) + "\n")
                _state["out"].flush()

    return event, Listener()


def pytest_configure(config):
    folder = os.environ.get("SUITE_COMPILES_DIR")
    if not folder:
        return
    os.makedirs(folder, exist_ok=True)
    _state["out"] = open(os.path.join(folder, f"{os.getpid()}.jsonl"), "w")
    event, listener = _listener()
    event.register("numba:compile", listener)


def pytest_runtest_setup(item):
    _state["node"] = item.nodeid


def report(folder, top=20):
    rows = []
    for name in os.listdir(folder):
        if name.endswith(".jsonl"):
            with open(os.path.join(folder, name)) as f:
                rows.extend(json.loads(line) for line in f if line.strip())
    by_function, count, by_file = (collections.Counter(), collections.Counter(),
                                   collections.Counter())
    for node, function, seconds in rows:
        function = re.sub(r"_[0-9a-f]{24}$", "", function)  # cpu._named's fingerprint
        by_function[function] += seconds
        count[function] += 1
        by_file[node.split("::")[0]] += seconds
    print(f"{len(rows)} top-level compiles, {sum(by_function.values()):.1f} s")
    print("\nseconds  count  function")
    for function, seconds in by_function.most_common(top):
        print(f"{seconds:7.1f}  {count[function]:5d}  {function}")
    print("\nseconds  test file")
    for path, seconds in by_file.most_common(top):
        print(f"{seconds:7.1f}  {path}")


if __name__ == "__main__":
    report(sys.argv[1])
