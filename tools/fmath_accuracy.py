"""Measure fastsde's elementary functions (fastsde/kernels/fmath.py) in ulps, as
tests/test_fmath.py does, on more arguments: 10^8 per function and dtype by default.

    python tools/fmath_accuracy.py                 # 10^8 arguments per function and dtype
    python tools/fmath_accuracy.py --n 1e7 --functions tanh,exp

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

from test_fmath import (FUNCTIONS, arguments, make_runner, reference,  # noqa: E402
                        special_values, ulp_errors)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=float, default=1e8)
    parser.add_argument("--functions", default=",".join(FUNCTIONS))
    parser.add_argument("--dtypes", default="float32,float64")
    args = parser.parse_args()
    from fastsde.kernels import fmath

    runner = make_runner()
    n_total = int(args.n)
    print("| function | arguments | max ulp | at x | max ulp / allowed (tests: <= 1) | "
          "evaluations/s |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for dtype_name in args.dtypes.split(","):
        dtype = np.dtype(dtype_name).type
        for name in args.functions.split(","):
            suffix = "f32" if dtype == np.float32 else "f64"
            fname = f"{name}_{suffix}"
            run = runner(fname)
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
                err = ulp_errors(out, reference(name, x), dtype)
                excess = max(excess, float(np.max(err / fmath.allowed_ulps(name, suffix, x))))
                j = int(np.argmax(err))
                if err[j] > worst:
                    worst, where = float(err[j]), x[j]
            print(f"| {fname} | {n_total:.0e} | {worst:.3f} | {where!r} | {excess:.3f} | "
                  f"{n_total / elapsed:.3g} |", flush=True)


if __name__ == "__main__":
    main()
