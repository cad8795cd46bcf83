"""fastsde vs a vectorised numpy Euler-Maruyama loop, side by side in one process.

Problem: OU dX = -theta X dt + sigma dW, theta = 1, sigma = 0.5, x0 = 1, t in [0, 1],
1000 steps, final state only, 10^6 paths (``--paths`` to change), float32 and float64.

    python bench/ou_vs_numpy.py [--paths N] [--steps K] [--repeat R]

Prints path-steps/s for each and the ratio fastsde / numpy.
"""

import argparse
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastsde as fs  # noqa: E402

THETA, SIGMA, X0, T1 = 1.0, 0.5, 1.0, 1.0


def numpy_em(n_paths, n_steps, dtype, seed=0):
    """The loop a numpy user writes: one vectorised update per step, in place."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    h = T1 / n_steps
    a = dtype.type(1.0 - THETA * h)
    b = dtype.type(SIGMA * math.sqrt(h))
    x = np.full(n_paths, X0, dtype=dtype)
    z = np.empty(n_paths, dtype=dtype)
    for _ in range(n_steps):
        rng.standard_normal(out=z, dtype=dtype)
        z *= b
        x *= a
        x += z
    return x


def best_of(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    n, k = args.paths, args.steps
    model = fs.OU(theta=THETA, sigma=SIGMA)
    print(f"# OU Euler-Maruyama, {n} paths x {k} steps, final state only")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"numpy {np.__version__}, fastsde {fs.__version__}")
    exact_mean = X0 * math.exp(-THETA * T1)
    exact_var = model.var(T1)
    print("| dtype | engine | path-steps/s | ns/path-step | ratio to numpy | mean X_1 | var X_1 |")
    print("|---|---|---|---|---|---|---|")
    for dtype in ("float32", "float64"):
        fs.simulate(model, X0, (0.0, T1), k, 1000, dtype=dtype, device="cpu", progress=False)  # compile
        # Alternating within each round: a change of machine speed hits both alike.
        t_fs = t_np = float("inf")
        for _ in range(args.repeat):
            t_round, res = best_of(lambda: fs.simulate(model, X0, (0.0, T1), k, n, dtype=dtype,
                                                       device="cpu", progress=False), 1)
            t_fs = min(t_fs, t_round)
            t_round, x_np = best_of(lambda: numpy_em(n, k, dtype), 1)
            t_np = min(t_np, t_round)
        rate_fs, rate_np = n * k / t_fs, n * k / t_np
        for name, rate, x in (("fastsde", rate_fs, res.x[:, 0]), ("numpy", rate_np, x_np)):
            print(f"| {dtype} | {name} | {rate:.3e} | {1e9 / rate:.2f} | {rate / rate_np:.1f} | "
                  f"{x.mean():.5f} | {x.var():.5f} |")
    print(f"# exact: mean {exact_mean:.5f}, var {exact_var:.5f}")


if __name__ == "__main__":
    main()
