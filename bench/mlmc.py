#!/usr/bin/env python
"""Multilevel against plain Monte Carlo, run to the same accuracy, side by side.

Problem: GBM S0 = K = 100, r = 0.05, sigma = 0.2, T = 1 (Giles's test case); payoffs the
discounted European call (Black-Scholes 10.4506) and the digital call (0.532325). For each
eps in {0.02, 0.01, 0.005, 0.002}:

* ``fs.mlmc`` with Milstein and with Euler-Maruyama (n0 = 1, M = 2);
* plain Monte Carlo with fastsde Euler-Maruyama: the step count of the Euler-Maruyama
  MLMC run's finest level (the one whose estimated bias passed the eps / sqrt(2) test,
  i.e. the steps chosen from the measured bias) and ceil(2 Var(P_L) / eps^2) paths (the
  variance part within eps^2 / 2), a statistics-only run with the payoff as an observable;
* the same plain Monte Carlo as a vectorised numpy loop, timed at 10^6 paths (or fewer
  when the full run is smaller) and extrapolated by its measured rate when the full run
  has more paths (the table says so).

Each row gives the value, its error against Black-Scholes, the cost in path-steps and the
wall time. All runs are float64, fastsde's on ``--device`` (cpu by default; cuda for the
GPU kernels, MLMC and plain Monte Carlo alike), numpy's on the CPU.

    python bench/mlmc.py                 # writes bench/results/mlmc-<date>.md
    python bench/mlmc.py --eps 0.02,0.01 --out -
    python bench/mlmc.py --device cuda --parts compare
    python bench/mlmc.py --parts giles   # fs.mlmc_test of the call, Milstein, L = 8:
                                         # bench/results/mlmc_test-<date>.txt and .png
"""

import argparse
import datetime
import math
import os
import platform
import sys
import time

import numpy as np
from scipy.stats import norm

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastsde as fs  # noqa: E402
from common import write_report  # noqa: E402

R, SIGMA, S0, K, T = 0.05, 0.2, 100.0, 100.0, 1.0
D1 = (math.log(S0 / K) + (R + SIGMA ** 2 / 2) * T) / (SIGMA * math.sqrt(T))
D2 = D1 - SIGMA * math.sqrt(T)
EXACT = {"call": S0 * norm.cdf(D1) - K * math.exp(-R * T) * norm.cdf(D2),
         "digital": math.exp(-R * T) * norm.cdf(D2)}
GBM = fs.GBM(mu=R, sigma=SIGMA)


def call(t, x, p):
    return math.exp(-0.05) * max(x[0] - 100.0, 0.0)


def digital(t, x, p):
    return math.exp(-0.05) if x[0] > 100.0 else 0.0


PAYOFFS = {"call": call, "digital": digital}
#: (payoff, engine) -> [(eps, cost in path-steps, seconds, extrapolated)] for the figure.
POINTS = {}


def _point(kind, engine, eps, cost, seconds, extrapolated=False):
    POINTS.setdefault((kind, engine), []).append((eps, cost, seconds, extrapolated))


def write_figure(path):
    """The complexity figure: eps^2 x cost (path-steps) and wall time against eps, per
    payoff and engine (extrapolated numpy times drawn hollow). Needs matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    kinds = sorted({k for k, _ in POINTS})
    fig, axes = plt.subplots(len(kinds), 2, figsize=(11, 4 * len(kinds)), squeeze=False)
    for row, kind in enumerate(kinds):
        for (k, engine), pts in POINTS.items():
            if k != kind:
                continue
            pts = sorted(pts)
            eps = [p[0] for p in pts]
            axes[row, 0].loglog(eps, [e * e * p[1] for e, p in zip(eps, pts)], "o-",
                                label=engine)
            filled = [(p[0], p[2]) for p in pts if not p[3]]
            hollow = [(p[0], p[2]) for p in pts if p[3]]
            line, = axes[row, 1].loglog([e for e, _ in filled], [t for _, t in filled], "o-",
                                        label=engine)
            if hollow:
                axes[row, 1].loglog([e for e, _ in hollow], [t for _, t in hollow], "o--",
                                    mfc="none", color=line.get_color(),
                                    label=f"{engine} (extrapolated)")
        axes[row, 0].set(xlabel="eps", ylabel="eps^2 x cost (path-steps)",
                         title=f"{kind}: complexity")
        axes[row, 1].set(xlabel="eps", ylabel="wall time (s)", title=f"{kind}: time")
        for ax in axes[row]:
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def numpy_plain_mc(kind, n_steps, n_paths, seed=0, batch=1_000_000):
    """The loop a numpy user writes; returns (estimate, seconds)."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    h = T / n_steps
    total, done = 0.0, 0
    while done < n_paths:
        m = min(batch, n_paths - done)
        x = np.full(m, S0)
        z = np.empty(m)
        for _ in range(n_steps):
            rng.standard_normal(out=z)
            x += x * (R * h + SIGMA * math.sqrt(h) * z)
        if kind == "call":
            total += float(np.sum(math.exp(-R * T) * np.maximum(x - K, 0.0)))
        else:
            total += float(np.sum(math.exp(-R * T) * (x > K)))
        done += m
    return total / n_paths, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eps", default="0.02,0.01,0.005,0.002")
    parser.add_argument("--payoffs", default="call,digital")
    parser.add_argument("--out", default=None)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--parts", default="compare,giles",
                        help="compare: the table above; giles: fs.mlmc_test's report")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    eps_list = [float(e) for e in args.eps.split(",")]
    date = datetime.date.today().isoformat()
    dev = args.device
    if "giles" in parts:
        report = fs.mlmc_test(GBM, S0, (0.0, T), call, 100_000, 8, eps_list,
                              print_report=True, device=dev)
        base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                            f"mlmc_test-{dev + '-' if dev != 'cpu' else ''}{date}")
        with open(base + ".txt", "w") as f:
            f.write(f"python bench/mlmc.py {' '.join(argv or sys.argv[1:])}: "
                    f"fs.mlmc_test(GBM(0.05, 0.2), 100, (0, 1), discounted call, "
                    f"n_paths=100000, L=8, eps_list={eps_list})\n\n{report.text}\n")
        try:
            import matplotlib
            matplotlib.use("Agg")
            report.plot().savefig(base + ".png", dpi=110)
            print(f"wrote {base}.txt and .png")
        except ImportError:
            print(f"wrote {base}.txt (matplotlib is not installed: no figure)")
        if "compare" not in parts:
            return
    lines = [f"# Multilevel against plain Monte Carlo, {date}", "",
             f"Command: `python bench/mlmc.py {' '.join(argv or sys.argv[1:])}`; "
             f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}, numpy {np.__version__}, fastsde {fs.__version__}; "
             f"float64, fastsde on {dev}. GBM S0 = K = 100, r = 0.05, sigma = 0.2, T = 1.",
             ""]
    for kind in args.payoffs.split(","):
        payoff = PAYOFFS[kind]
        exact = EXACT[kind]
        # compile everything first: the table times runs, not compilers
        for method in ("milstein", "euler_maruyama"):
            fs.mlmc(GBM, S0, (0.0, T), payoff, 0.5, method=method, progress=False,
                    device=dev)
        fs.compile(GBM, S0, observables={"payoff": payoff}, device=dev)
        lines += [f"## {kind} (exact {exact:.6f})", "",
                  "| eps | engine | levels / steps | paths | cost (path-steps) | seconds | "
                  "value | error | error / eps | beta |",
                  "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for eps in eps_list:
            runs = {}
            for method in ("milstein", "euler_maruyama"):
                res = fs.mlmc(GBM, S0, (0.0, T), payoff, eps, method=method, progress=False,
                              device=dev)
                runs[method] = res
                _point(kind, f"MLMC {method}", eps, res.cost, res.elapsed_s)
                err = abs(res.value - exact)
                lines.append(f"| {eps:g} | MLMC {method} | L = {len(res.levels) - 1} | "
                             f"{sum(lv.n_paths for lv in res.levels):.3g} | {res.cost:.3g} | "
                             f"{res.elapsed_s:.3f} | {res.value:.6f} | {err:.2e} | "
                             f"{err / eps:.2f} | {res.beta:.2f} |")
                print(lines[-1], flush=True)
            em = runs["euler_maruyama"]
            n_steps = em.levels[-1].n_steps
            n_paths = int(math.ceil(2 * em.levels[-1].var_p / eps ** 2))
            res = fs.simulate(GBM, S0, (0.0, T), n_steps, n_paths, keep_x=False,
                              observables={"payoff": payoff}, seed=11, progress=False,
                              device=dev)
            value = res.estimate("payoff").value
            _point(kind, "plain MC, fastsde EM", eps, n_steps * n_paths, res.elapsed_s)
            err = abs(value - exact)
            lines.append(f"| {eps:g} | plain MC, fastsde Euler-Maruyama | {n_steps} steps | "
                         f"{n_paths:.3g} | {n_steps * n_paths:.3g} | {res.elapsed_s:.3f} | "
                         f"{value:.6f} | {err:.2e} | {err / eps:.2f} | - |")
            print(lines[-1], flush=True)
            timed_paths = min(n_paths, 1_000_000)
            value_np, seconds = numpy_plain_mc(kind, n_steps, timed_paths)
            _point(kind, "plain MC, numpy EM", eps, n_steps * n_paths,
                   seconds * n_paths / timed_paths, timed_paths != n_paths)
            if timed_paths == n_paths:
                err = abs(value_np - exact)
                lines.append(f"| {eps:g} | plain MC, numpy Euler-Maruyama | {n_steps} steps | "
                             f"{n_paths:.3g} | {n_steps * n_paths:.3g} | {seconds:.3f} | "
                             f"{value_np:.6f} | {err:.2e} | {err / eps:.2f} | - |")
            else:
                full = seconds * n_paths / timed_paths
                lines.append(f"| {eps:g} | plain MC, numpy Euler-Maruyama (timed at "
                             f"{timed_paths:.0e} paths, extrapolated) | {n_steps} steps | "
                             f"{n_paths:.3g} | {n_steps * n_paths:.3g} | {full:.1f} | - | - | "
                             f"- | - |")
            print(lines[-1], flush=True)
        lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    write_report(text, args.out, f"mlmc-{dev + '-' if dev != 'cpu' else ''}{date}",
                 write_figure)


if __name__ == "__main__":
    main()
