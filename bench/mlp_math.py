"""MLPField's activations from fastsde.kmath (math="fastsde", the default) against libm's
(math="libm"), side by side: the same networks, paths and steps, the two kernels
alternating within each repeat.

    python bench/mlp_math.py                 # writes bench/results/mlp-math-<date>.md
    python bench/mlp_math.py --out -         # print only

Each row: ``fs.simulate`` of ``MLPField.ode()`` (Euler, t in [0, 1], 8 steps, N(0, I)
initial states) on the CPU, path-steps per second from the wall time of the call, best of
``--repeats`` after a compile run of each kernel; "agree" is the largest relative
difference of the final states between the two (both are the same network; kmath's
functions are within a few ulps of the correctly rounded values, docs/performance.md).
"""

import argparse
import datetime
import os
import platform
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastsde as fs  # noqa: E402
from common import cpu_description, write_report  # noqa: E402

#: (widths, paths) for the rows; the sizes of bench/drifts.py's MLP rows.
NETWORKS = (((3, 64, 64, 2), 100_000), ((3, 256, 256, 2), 20_000))
N_STEPS = 8


def timed(model, n_paths, dtype):
    start = time.perf_counter()
    res = fs.simulate(model, fs.Normal(0.0, 1.0), (0.0, 1.0), N_STEPS, n_paths,
                      method="euler", dtype=dtype, device="cpu", seed=1)
    return time.perf_counter() - start, res.x


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--activations", default="tanh,silu,gelu")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies path counts")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = ["| network | activation | dtype | paths x steps | math=\"fastsde\" | "
             "math=\"libm\" | ratio | agree |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | --- |"]
    for widths, paths in NETWORKS:
        n = max(2, int(paths * args.scale))
        for act in args.activations.split(","):
            fields = {m: fs.mlp.random_mlp(list(widths), act, math=m) for m in ("fastsde", "libm")}
            for dtype in args.dtypes.split(","):
                best, final = {}, {}
                for m, f in fields.items():
                    timed(f.ode(), 2, dtype)  # compile
                for _ in range(args.repeats):
                    for m, f in fields.items():
                        seconds, final[m] = timed(f.ode(), n, dtype)
                        best[m] = min(best.get(m, np.inf), seconds)
                rate = {m: n * N_STEPS / best[m] for m in best}
                diff = np.max(np.abs(final["fastsde"] - final["libm"])
                              / (1.0 + np.abs(final["libm"])))
                line = (f"| {'-'.join(map(str, widths))} | {act} | {dtype} | {n:.0e} x "
                        f"{N_STEPS} | {rate['fastsde']:.3g} | {rate['libm']:.3g} | "
                        f"**{rate['fastsde'] / rate['libm']:.2f}x** | max rel diff {diff:.1e} |")
                print(line, flush=True)
                lines.append(line)
    date = datetime.date.today().isoformat()
    command = " ".join(["python bench/mlp_math.py"] + sys.argv[1:])
    text = (f"# MLPField activations: fastsde.kmath against libm, {date}\n\n"
            f"Command: `{command}`; "
            f"{platform.platform()}, {cpu_description()}, {os.cpu_count()} CPUs; Python "
            f"{platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}, "
            f"fastsde {fs.__version__}; Numba threads {numba.get_num_threads()}.\n\n"
            + __doc__.split("\n\n")[2] + "\n\n" + "\n".join(lines) + "\n")
    write_report(text, args.out, f"mlp-math-{date}")


if __name__ == "__main__":
    main()
