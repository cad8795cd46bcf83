"""Measure fastsde's elementary functions (fastsde/kernels/fmath.py) in ulps, as
tests/test_fmath.py does, on more arguments: 10^8 per function and dtype by default.

    python tools/fmath_accuracy.py                 # 10^8 arguments per function and dtype
    python tools/fmath_accuracy.py --n 1e7 --functions tanh,exp
    python tools/fmath_accuracy.py --every-float32 --functions sin,cos   # all 2^32 inputs

Prints the largest error, where it occurs, the largest ratio of the error to the bound
the tests enforce (``fmath.allowed_ulps``: MAX_ULP, plus the growth of silu's and gelu's
error in their far negative tails), and the evaluation rate of the compiled function over
the arguments (all threads).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from test_fmath import (FUNCTIONS, arguments, ld, make_runner,  # noqa: E402
                        pow_arguments, reference, reference_for, special_values,
                        ulp_errors)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=float, default=1e8)
    parser.add_argument("--functions", default=",".join(FUNCTIONS + ("pow",)),
                        help="comma list; pow takes (x, y) pairs from the tests' "
                             "pow_arguments")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--every-float32", action="store_true",
                        help="every float32 bit pattern (2^32 arguments) instead of --n "
                             "random ones; float32 only")
    args = parser.parse_args()
    from fastsde.kernels import fmath

    runner = make_runner()
    n_total = int(args.n)
    print("| function | arguments | max ulp | at x | max ulp / allowed (tests: <= 1) | "
          "evaluations/s |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    if args.every_float32:
        every_float32(runner, args.functions.split(","), fmath)
        return
    for dtype_name in args.dtypes.split(","):
        dtype = np.dtype(dtype_name).type
        for name in args.functions.split(","):
            suffix = "f32" if dtype == np.float32 else "f64"
            fname = f"{name}_{suffix}"
            run = runner(fname)
            if name == "pow":
                measure_pow(run, dtype, n_total, fmath.MAX_ULP[fname])
                continue
            worst, where, elapsed, excess = 0.0, None, 0.0, 0.0
            for i, start in enumerate(range(0, n_total, 5_000_000)):
                x = arguments(name, dtype, min(5_000_000, n_total - start), seed=1000 + i)
                if i == 0:
                    x = np.concatenate([special_values(dtype), x])
                    run(x[:10], np.empty(10, dtype))
                out = np.empty_like(x)
                t = time.perf_counter()
                run(x, out)
                elapsed += time.perf_counter() - t
                err = ulp_errors(out, reference_for(name, x, dtype), dtype)
                excess = max(excess, float(np.max(err / fmath.allowed_ulps(name, suffix, x))))
                j = int(np.argmax(err))
                if err[j] > worst:
                    worst, where = float(err[j]), x[j]
            print(f"| {fname} | {n_total:.0e} | {worst:.3f} | {where!r} | {excess:.3f} | "
                  f"{n_total / elapsed:.3g} |", flush=True)


def measure_pow(run, dtype, n_total, allowed):
    """pow on n_total (x, y) pairs, as the other functions (its bound: MAX_ULP)."""
    worst, where, elapsed = 0.0, None, 0.0
    for i, start in enumerate(range(0, n_total, 5_000_000)):
        x, y = pow_arguments(dtype, min(5_000_000, n_total - start), seed=3000 + i)
        out = np.empty_like(x)
        if i == 0:
            run(x[:10], y[:10], out[:10])
        t = time.perf_counter()
        run(x, y, out)
        elapsed += time.perf_counter() - t
        precision = np.float64 if dtype == np.float32 else ld
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            err = ulp_errors(out, np.power(x.astype(precision), y.astype(precision)), dtype)
        j = int(np.argmax(err))
        if err[j] > worst:
            worst, where = float(err[j]), (x[j], y[j])
    suffix = "f32" if dtype == np.float32 else "f64"
    print(f"| pow_{suffix} | {n_total:.0e} pairs | {worst:.3f} | {where!r} | "
          f"{worst / allowed:.3f} | {n_total / elapsed:.3g} |", flush=True)


def every_float32(runner, names, fmath):
    """The float32 version of each function at every float32 (2^32 arguments, in blocks
    of 2^24), against the reference computed in float64 (erf's in long double): within
    2^-29 of a float32 ulp, and much faster than long double's for huge arguments of sin
    and cos."""
    block = 1 << 24
    for name in names:
        run = runner(f"{name}_f32")
        worst, where, elapsed, excess = 0.0, None, 0.0, 0.0
        for start in range(0, 1 << 32, block):
            x = np.arange(start, start + block, dtype=np.uint64).astype(np.uint32).view(
                np.float32)
            out = np.empty_like(x)
            t = time.perf_counter()
            run(x, out)
            elapsed += time.perf_counter() - t
            err = ulp_errors(out, reference(name, x, np.float64), np.float32)
            excess = max(excess, float(np.max(err / fmath.allowed_ulps(name, "f32", x))))
            j = int(np.argmax(err))
            if err[j] > worst:
                worst, where = float(err[j]), x[j]
        print(f"| {name}_f32 | every float32 (2^32) | {worst:.3f} | {where!r} | {excess:.3f} | "
              f"{(1 << 32) / elapsed:.3g} |", flush=True)


if __name__ == "__main__":
    main()
