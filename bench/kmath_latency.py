#!/usr/bin/env python
"""fastsde.kmath's elementary functions one at a time, on one thread: nanoseconds per
evaluation in a dependent chain (each argument comes from the last result, as in a
kernel that runs one path's steps in turn) and in a loop over independent arguments
(what a loop the compiler does not vectorise costs).

    python bench/kmath_latency.py                    # exp, tanh, log; float64 and float32
    python bench/kmath_latency.py --functions exp --n 2e7

Run it at two commits to compare two forms of a function (the float64 exponential's
polynomial against fdlibm's rational form: docs/performance.md).
"""

import argparse
import os
import sys
import time

import numpy as np
from numba import njit

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fastsde.kernels import bits, fmath  # noqa: E402
from fastsde.kernels.target import compile_functions  # noqa: E402

#: name -> argument range of the independent loop (the chain maps y to f(-y) + a small
#: offset, which stays in range for these).
RANGES = {"exp": (-20.0, 20.0), "tanh": (-5.0, 5.0), "log": (1e-3, 1e3)}


def loops(fn, dtype):
    """The two loops of ``fn``: ``chain(n, y)`` and ``independent(x, out)``."""
    @njit(error_model="numpy")
    def chain(n, y):
        for i in range(n):
            y = fn(-y) + dtype(1e-3) * dtype(i & 7)
        return y

    @njit(error_model="numpy")
    def independent(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])

    return chain, independent


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", default="exp,tanh,log")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--n", type=float, default=2e7)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    n = int(args.n)
    ns = compile_functions(fmath, fmath.FUNCTIONS, njit(error_model="numpy"),
                           bits.cpu_primitives())
    print("| function | dtype | dependent chain, ns per call | independent arguments, "
          "ns per call |")
    print("| --- | --- | ---: | ---: |")
    for name in args.functions.split(","):
        for dtype_name in args.dtypes.split(","):
            dtype = np.dtype(dtype_name).type
            fn = getattr(ns, f"{name}_{'f32' if dtype is np.float32 else 'f64'}")
            chain, independent = loops(fn, dtype)
            lo, hi = RANGES[name]
            x = np.random.default_rng(1).uniform(lo, hi, n).astype(dtype)
            out = np.empty_like(x)
            chain(10, dtype(0.3))
            independent(x[:10], out[:10])
            best_chain = best_loop = np.inf
            for _ in range(args.repeats):
                t = time.perf_counter()
                chain(n, dtype(0.3))
                best_chain = min(best_chain, time.perf_counter() - t)
                t = time.perf_counter()
                independent(x, out)
                best_loop = min(best_loop, time.perf_counter() - t)
            print(f"| {name} | {dtype_name} | {best_chain / n * 1e9:.2f} | "
                  f"{best_loop / n * 1e9:.3f} |", flush=True)


if __name__ == "__main__":
    main()
