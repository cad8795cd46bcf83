#!/usr/bin/env python
"""fastsde.kmath against libm, function by function, in the loop a kernel runs them in.

Each function is evaluated over 10^7 arguments in a ``numba.njit(parallel=True)`` loop
(all threads), once with the kmath version (the stand-in the CPU kernel inlines into
users' functions, marked for LLVM to inline before vectorising) and once with ``math``'s
(libm's call), the two alternating, best of ``--repeats`` after a warm-up. Arguments are
uniform on the ranges below, the same for both; float32 and float64. The ratio is
kmath's evaluations per second over libm's.

    python bench/kmath_vs_libm.py                      # all functions
    python bench/kmath_vs_libm.py --functions sin,pow --n 1e6

A function alone is the least favourable case for kmath: in a model's step, a libm call
also keeps the rest of the step from vectorising (bench/drifts.py measures whole models).
"""

import argparse
import math
import os
import sys
import time

import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fastsde import kmath  # noqa: E402

#: name -> (libm function, argument range, second argument's range for pow)
CASES = {"exp": (math.exp, (-20.0, 20.0)), "log": (math.log, (1e-3, 1e3)),
         "tanh": (math.tanh, (-5.0, 5.0)), "erf": (math.erf, (-3.0, 3.0)),
         "sin": (math.sin, (-10.0, 10.0)), "cos": (math.cos, (-10.0, 10.0)),
         "pow": (math.pow, (0.1, 10.0), (-3.0, 3.0))}


def loops(name):
    ours, theirs = kmath.INLINE[name], CASES[name][0]
    if name == "pow":
        @njit(parallel=True)
        def run_ours(x, y, out):
            for i in prange(x.size):
                out[i] = ours(x[i], y[i])

        @njit(parallel=True)
        def run_libm(x, y, out):
            for i in prange(x.size):
                out[i] = x[i] ** y[i]
    else:
        @njit(parallel=True)
        def run_ours(x, y, out):
            for i in prange(x.size):
                out[i] = ours(x[i])

        @njit(parallel=True)
        def run_libm(x, y, out):
            for i in prange(x.size):
                out[i] = theirs(x[i])
    return run_ours, run_libm


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", default=",".join(CASES))
    parser.add_argument("--n", type=float, default=1e7)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = int(args.n)
    rng = np.random.default_rng(0)
    print("| function | dtype | arguments | kmath evaluations/s | libm evaluations/s | "
          "kmath / libm |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for name in args.functions.split(","):
        run_ours, run_libm = loops(name)
        case = CASES[name]
        for dtype in (np.float32, np.float64):
            x = rng.uniform(*case[1], n).astype(dtype)
            y = (rng.uniform(*case[2], n) if name == "pow" else np.zeros(n)).astype(dtype)
            out = np.empty_like(x)
            best = {}
            for run in (run_ours, run_libm):
                run(x, y, out)
            for _ in range(args.repeats):
                for label, run in (("kmath", run_ours), ("libm", run_libm)):
                    start = time.perf_counter()
                    run(x, y, out)
                    best[label] = min(best.get(label, math.inf), time.perf_counter() - start)
            ranges = f"x in [{case[1][0]:g}, {case[1][1]:g}]" + (
                f", y in [{case[2][0]:g}, {case[2][1]:g}]" if name == "pow" else "")
            print(f"| {name} | {np.dtype(dtype).name} | {ranges} | {n / best['kmath']:.3g} | "
                  f"{n / best['libm']:.3g} | {best['libm'] / best['kmath']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
