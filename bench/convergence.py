#!/usr/bin/env python
"""Work against precision for fastsde's schemes, and the cost of one digit of accuracy.

Three parts, run side by side in one process:

1. **Strong error against wall time** on SDEProblemLibrary's linear problem
   (dX = 1.01 X dt + 0.87 X dW, X0 = 1/2, T = 1; exact X_T = X0 exp(0.63155 T + 0.87 W_T),
   W_T from ``fs.BrownianMotion`` with the same seed: the increments every method sees),
   for Euler-Maruyama, Milstein and SRIW1 over 2^3 ... 2^9 steps.
2. **Weak error of E[X_T^2] against wall time** for GBM (mu = 1, sigma = 0.5, X0 = 1,
   T = 1; exact e^2.25 = 9.48774) for each (method, increments). The weak error of a
   scheme at a step count is its *exact* bias, computed from the scheme itself: on GBM
   every scheme here multiplies the state by a random factor R(h) that does not depend on
   the state (the model is linear), so E[X_n^2] = X0^2 E[R^2]^n, and E[R^2] is an exact
   Gauss-Hermite sum (R is a polynomial in the normals) or a three- or two-point sum,
   evaluated with steps.py's own plain-Python step. The simulations then check that
   the kernels reproduce it (|estimate - exact scheme moment| within 5 SE).
3. **The headline**: E[X_T^2] of that GBM to relative accuracy 1e-3, i.e.
   |bias| + 2 SE <= 0.0095. For each configuration: the smallest power-of-two step count
   whose bias is within half the budget, and the paths that bring 2 SE within the rest;
   then the run itself, timed, and its measured error. fastsde's fastest configuration,
   fastsde Euler-Maruyama with Gaussian increments, and a vectorised numpy Euler-Maruyama
   (timed at 10^6 paths and the same step count, extrapolated by its measured rate: at
   full size it would run for hours; the table says so).
4. The OU benchmark (theta = 1, sigma = 0.5, 1000 steps, float32) with two-point against
   Gaussian increments, path-steps/s side by side.

5. Peers, where installed (bench/peers_sde.py: torchsde euler / milstein / srk, diffrax
   Euler / ItoMilstein; diffrax's ShARK and SRA1 are additive-noise solvers and refuse
   these problems): the same strong and weak problems, side by side, in seconds per 10^6
   paths (every engine's time grows linearly in the paths at these sizes). Set
   PEERS_TORCH_THREADS=1 on a busy 2-core machine (torch's thread barriers stall there).

    python bench/convergence.py                  # everything, writes bench/results/
    python bench/convergence.py --quick          # small sizes, no headline run
"""

import argparse
import datetime
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import fastsde as fs  # noqa: E402
from fastsde import methods  # noqa: E402
from fastsde.kernels import steps  # noqa: E402
from common import write_report  # noqa: E402

MU, SIGMA, X0, T1 = 1.0, 0.5, 1.0, 1.0
EXACT_SECOND = math.exp(2 * MU + SIGMA ** 2)  # e^2.25
BUDGET = 1e-3 * EXACT_SECOND                   # |bias| + 2 SE <= 0.0095
GBM = fs.GBM(mu=MU, sigma=SIGMA)
WEAK_CONFIGS = [("euler_maruyama", "gaussian"), ("euler_maruyama", "two_point"),
                ("milstein", "gaussian"), ("sriw1", "gaussian"), ("sriw1", "three_point")]


def linear_drift(t, x, p, out):
    out[0] = 1.01 * x[0]


def linear_diffusion(t, x, p, out):
    out[0] = 0.87 * x[0]


LINEAR = fs.SDE(linear_drift, linear_diffusion, 1, name="sde_linear")


def gbm_drift(t, x, p, out):
    out[0] = MU * x[0]


def gbm_diffusion(t, x, p, out):
    out[0] = SIGMA * x[0]


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


# --- the schemes' exact second moments on GBM -------------------------------------------

def second_moment_factor(method, increments, h):
    """E[R^2] for one step of ``method`` on GBM from X = 1, exactly: the step (steps.py's
    plain Python source) evaluated on quadrature nodes. Gaussian: Gauss-Hermite in dW
    (and dZ for the schemes that draw it), 12 nodes each (exact for the polynomials of
    degree <= 23 that R^2 is); discrete: the two or three points with their
    probabilities."""
    m = methods.METHODS[method]
    step = m.sde_factory(gbm_drift, gbm_diffusion, steps.noise_diagonal,
                         steps.increment_diagonal, steps.column_diagonal, 1, np.float64)
    if increments == "gaussian":
        nodes, weights = np.polynomial.hermite_e.hermegauss(12)
        weights = weights / weights.sum()
        dw_nodes = [(math.sqrt(h) * z, w) for z, w in zip(nodes, weights)]
        dz_nodes = dw_nodes if m.extra_normals else [(0.0, 1.0)]
    elif increments == "three_point":
        s = math.sqrt(3 * h)
        dw_nodes = [(-s, 1 / 6), (0.0, 2 / 3), (s, 1 / 6)]
        dz_nodes = [(0.0, 1.0)]
    else:
        dw_nodes = [(-math.sqrt(h), 0.5), (math.sqrt(h), 0.5)]
        dz_nodes = [(0.0, 1.0)]
    scratch = [np.zeros(1) for _ in range(9)]
    total = 0.0
    x = np.ones(1)
    for dw, pw in dw_nodes:
        for dz, pz in dz_nodes:
            x_new = np.zeros(1)
            step(0.0, 0.5 * h, h, h, x, np.zeros(1), np.array([dw]), np.array([dz]),
                 *scratch[:4], *scratch[4:8], scratch[8], x_new)
            total += pw * pz * x_new[0] ** 2
    return total


def scheme_second_moment(method, increments, n_steps):
    """E[X_n^2] of the scheme on GBM (X0 = 1, T = 1): the product of n identical steps."""
    return X0 ** 2 * second_moment_factor(method, increments, T1 / n_steps) ** n_steps


def steps_for_bias(method, increments, half_budget, max_steps=2 ** 16):
    """Smallest power-of-two step count whose exact bias is within ``half_budget``."""
    n = 1
    while n <= max_steps:
        if abs(scheme_second_moment(method, increments, n) - EXACT_SECOND) <= half_budget:
            return n
        n *= 2
    raise RuntimeError(f"{method}/{increments}: bias above {half_budget} at {max_steps} steps")


# --- fastsde runs ------------------------------------------------------------------------

def square(t, x, p):
    return x[0] * x[0]


def fastsde_second_moment(method, increments, n_steps, n_paths, seed=1):
    """(estimate, SE, seconds) of E[X_T^2] from a statistics-only run (constant memory)."""
    res, seconds = _timed(lambda: fs.simulate(
        GBM, X0, (0.0, T1), n_steps, n_paths, method=method, increments=increments,
        seed=seed, keep_x=False, observables={"x2": square}, progress=False))
    est = res.estimate("x2")
    return est.value, est.se, seconds


def numpy_em_second_moment(n_steps, n_paths, seed=0, batch=1_000_000):
    """The vectorised numpy Euler-Maruyama a user writes; returns (mean X_T^2, seconds)."""
    def run():
        rng = np.random.default_rng(seed)
        h = T1 / n_steps
        acc, done = 0.0, 0
        while done < n_paths:
            m = min(batch, n_paths - done)
            x = np.full(m, X0)
            z = np.empty(m)
            for _ in range(n_steps):
                rng.standard_normal(out=z)
                x += x * (MU * h + SIGMA * math.sqrt(h) * z)
            acc += float(np.sum(x * x))
            done += m
        return acc / n_paths
    return _timed(run)


# --- the parts -----------------------------------------------------------------------------

#: (label, seconds, error) points of the two work-precision panels, for the figure.
FIGURE = {"strong": [], "weak": [], "strong_per_path": []}


def strong_part(n_paths, lines):
    lines += ["## Strong error on the linear problem", "",
              f"E|X_N - X(1)| over {n_paths} paths (float64, one run per cell; wall time of "
              f"the run, kernel compiled beforehand).", "",
              "| method | steps | error | seconds |", "| --- | ---: | ---: | ---: |"]
    bm = fs.BrownianMotion(1.0)
    for method in ("euler_maruyama", "milstein", "sriw1"):
        fs.compile(LINEAR, 0.5, method=method)
        for n in (8, 16, 32, 64, 128, 256, 512):
            w = fs.simulate(bm, 0.0, (0.0, 1.0), n, n_paths, seed=3).x[:, 0]
            res = fs.simulate(LINEAR, 0.5, (0.0, 1.0), n, n_paths, method=method, seed=3)
            err = float(np.mean(np.abs(res.x[:, 0] - 0.5 * np.exp(0.63155 + 0.87 * w))))
            lines.append(f"| {method} | {n} | {err:.3e} | {res.elapsed_s:.4f} |")
            FIGURE["strong"].append((f"fastsde {method}", res.elapsed_s, err))
            print(lines[-1], flush=True)
    lines.append("")


def weak_part(n_paths, lines):
    lines += ["## Weak error of E[X_T^2] on GBM", "",
              f"Bias: the scheme's exact E[X_n^2] minus e^2.25 (quadrature over the step, see "
              f"the script). Check: a run of {n_paths} paths, |estimate - scheme's "
              f"E[X_n^2]| / SE (should be below 5). Seconds: that run (statistics only).", "",
              "| method | increments | steps | bias | estimate | SE | (est - scheme)/SE | "
              "seconds |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    failures = []
    for method, increments in WEAK_CONFIGS:
        fastsde_second_moment(method, increments, 1, 2)  # compile
        for n in (2, 4, 8, 16, 32, 64, 128, 256):
            exact_scheme = scheme_second_moment(method, increments, n)
            est, se, seconds = fastsde_second_moment(method, increments, n, n_paths)
            z = (est - exact_scheme) / se
            if abs(z) > 5:
                failures.append(f"{method}/{increments} n={n}: z = {z:.1f}")
            FIGURE["weak"].append((f"fastsde {method} {increments}", seconds,
                                   abs(exact_scheme - EXACT_SECOND)))
            lines.append(f"| {method} | {increments} | {n} | {exact_scheme - EXACT_SECOND:+.3e}"
                         f" | {est:.5f} | {se:.1e} | {z:+.2f} | {seconds:.3f} |")
            print(lines[-1], flush=True)
    lines += ["", "Kernels against their scheme's exact moment: " +
              ("all within 5 SE." if not failures else "FAILED: " + "; ".join(failures)), ""]


def headline_part(lines, numpy_paths=1_000_000):
    half = BUDGET / 2
    lines += ["## Headline: E[X_T^2] of GBM to relative accuracy 1e-3", "",
              f"Target |bias| + 2 SE <= {BUDGET:.5f} (exact {EXACT_SECOND:.5f}). Steps: the "
              f"smallest power of two with |bias| <= {half:.5f} (the scheme's exact bias); "
              f"paths: var(X_T^2) / SE^2 with 2 SE = budget - |bias| (var(X_T^2) = "
              f"e^5.5 - e^4.5 for the exact law).", "",
              "| configuration | steps | paths | path-steps | seconds | estimate | "
              "|error| | within budget |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    var_x2 = math.exp(4 * MU + 6 * SIGMA ** 2) - math.exp(4 * MU + 2 * SIGMA ** 2)
    rows = {}
    for method, increments in WEAK_CONFIGS:
        n = steps_for_bias(method, increments, half)
        bias = abs(scheme_second_moment(method, increments, n) - EXACT_SECOND)
        se_target = (BUDGET - bias) / 2
        paths = int(math.ceil(var_x2 / se_target ** 2 / 512) * 512)
        rows[(method, increments)] = (n, paths)
    # Run every configuration within 10x of the cheapest by path-steps x diffusion
    # evaluations (the schemes with few steps; the discrete increments' lower cost per
    # step is what the run itself measures), and Euler-Maruyama with Gaussian increments.
    cost = {k: n * p * max(1, methods.METHODS[k[0]].diffusion_evals) for k, (n, p) in rows.items()}
    cheapest = min(cost.values())
    to_run = [k for k in rows if cost[k] <= 10 * cheapest] + [("euler_maruyama", "gaussian")]
    timed = {}
    for key in dict.fromkeys(to_run):
        n, paths = rows[key]
        fastsde_second_moment(key[0], key[1], 1, 2)
        est, se, seconds = fastsde_second_moment(key[0], key[1], n, paths, seed=11)
        timed[key] = seconds
        err = abs(est - EXACT_SECOND)
        lines.append(f"| fastsde {key[0]}, {key[1]} | {n} | {paths:.3g} | {n * paths:.3g} | "
                     f"{seconds:.2f} | {est:.5f} | {err:.5f} | {'yes' if err <= BUDGET else 'no'} "
                     f"(2 SE = {2 * se:.5f}) |")
        print(lines[-1], flush=True)
    fastest = min(timed, key=timed.get)
    n, paths = rows[("euler_maruyama", "gaussian")]
    value, seconds = numpy_em_second_moment(n, numpy_paths)
    rate = n * numpy_paths / seconds
    numpy_full = n * paths / rate
    lines.append(f"| numpy Euler-Maruyama (timed at {numpy_paths:.0e} paths, extrapolated by "
                 f"its rate {rate:.3g} path-steps/s) | {n} | {paths:.3g} | {n * paths:.3g} | "
                 f"{numpy_full:.0f} (extrapolated) | - | - | - |")
    print(lines[-1], flush=True)
    f_s = timed[fastest]
    lines += ["", "Step counts and paths of every configuration: " + "; ".join(
        f"{m}/{i}: {n} steps x {p:.3g} paths" for (m, i), (n, p) in rows.items()), "",
        f"fastsde {fastest[0]} with {fastest[1]} increments: {f_s:.2f} s; against fastsde "
        f"Euler-Maruyama (Gaussian) {timed[('euler_maruyama', 'gaussian')] / f_s:.1f}x "
        f"faster, against numpy Euler-Maruyama (extrapolated) {numpy_full / f_s:.0f}x "
        f"faster.", ""]


def increments_part(lines, n_paths, n_steps=1000):
    ou = fs.OU(theta=1.0, sigma=0.5)
    lines += ["## OU, float32: two-point against Gaussian increments", "",
              f"{n_paths} paths x {n_steps} steps, final state only, Euler-Maruyama, best of "
              f"3 runs each, alternating.", "", "| increments | path-steps/s |",
              "| --- | ---: |"]
    best = {}
    for kind in ("gaussian", "two_point"):
        fs.compile(ou, 0.0, dtype="float32", increments=kind)
    for _ in range(3):
        for kind in ("gaussian", "two_point"):
            res = fs.simulate(ou, 1.0, (0.0, 1.0), n_steps, n_paths, dtype="float32",
                              increments=kind, seed=2, progress=False)
            best[kind] = max(best.get(kind, 0.0), res.path_steps_per_s)
    for kind, rate in best.items():
        lines.append(f"| {kind} | {rate:.3g} |")
    lines += ["", f"two-point / Gaussian: {best['two_point'] / best['gaussian']:.2f}x", ""]
    print("\n".join(lines[-6:]), flush=True)


def write_figure(path):
    """Work against precision, log-log: strong error (left) and |bias of E[X_T^2]| (right)
    against the run's wall time. Needs matplotlib; returns the path or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    strong_key = "strong_per_path" if FIGURE["strong_per_path"] else "strong"
    for ax, key, ylabel in ((axes[0], strong_key, "strong error E|X_N - X(1)| (linear problem)"),
                            (axes[1], "weak", "|bias of E[X_T^2]| (GBM)")):
        labels = dict.fromkeys(label for label, _, _ in FIGURE[key])
        for label in labels:
            pts = sorted((s, e) for lab, s, e in FIGURE[key] if lab == label and e > 0)
            if pts:
                ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o-", ms=3, label=label)
        xlabel = ("seconds per 10^6 paths" if key == "strong_per_path"
                  else "wall time of the run (s)")
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _peer_functions():
    """{(library, solver): (strong_fn, weak_fn)} for the peers that import here."""
    try:
        import peers_sde
    except ImportError:
        return {}
    found = {}
    try:
        import torch  # noqa: F401 - present: the functions below import it
        import torchsde  # noqa: F401
        for solver in peers_sde.TORCHSDE_SOLVERS:
            found[("torchsde", solver)] = (
                lambda n, m, s, solver=solver: peers_sde.torchsde_linear(solver, n, m, s),
                lambda n, m, s, solver=solver: peers_sde.torchsde_gbm(solver, n, m, s))
    except ImportError:
        pass
    try:
        import diffrax  # noqa: F401
        for solver in peers_sde.DIFFRAX_SOLVERS:
            found[("diffrax", solver)] = (
                lambda n, m, s, solver=solver: peers_sde.diffrax_linear(solver, n, m, s),
                lambda n, m, s, solver=solver: peers_sde.diffrax_gbm(solver, n, m, s,
                                                                     brownian="unsafe"))
    except ImportError:
        pass
    return found


def peers_part(lines, strong_paths, weak_paths):
    peers = _peer_functions()
    lines += ["## Peers on the same problems", ""]
    if not peers:
        lines += ["No peer library is installed here (pip install torchsde diffrax).", ""]
        return
    import peers_sde
    from importlib import metadata
    versions = []
    for name in ("torch", "torchsde", "jax", "diffrax"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    lines += [f"Installed: {', '.join(versions)}.", ""]
    lines += [f"Strong error on the linear problem ({strong_paths} paths) and E[X_T^2] of GBM "
              f"({weak_paths} paths), with fastsde at the same sizes; seconds of the run and "
              f"seconds per 10^6 paths. torch threads: {peers_sde.TORCH_THREADS}. diffrax "
              f"runs E[X_T^2] with UnsafeBrownianPath (its fast fixed-step path) and the "
              f"strong error with VirtualBrownianTree (to read W_T).", "",
              "| engine | solver | problem | steps | error or estimate +- SE | seconds | "
              "s per 10^6 paths |", "| --- | --- | --- | ---: | --- | ---: | ---: |"]
    bm = fs.BrownianMotion(1.0)
    rows = []
    for method in ("euler_maruyama", "milstein", "sriw1"):
        fs.compile(LINEAR, 0.5, method=method)
        fs.compile(GBM, 1.0, method=method, observables={"x2": square})
        for n in (8, 16, 32, 64, 128, 256):
            w = fs.simulate(bm, 0.0, (0.0, 1.0), n, strong_paths, seed=5).x[:, 0]
            res = fs.simulate(LINEAR, 0.5, (0.0, 1.0), n, strong_paths, method=method, seed=5)
            err = float(np.mean(np.abs(res.x[:, 0] - 0.5 * np.exp(0.63155 + 0.87 * w))))
            rows.append(("fastsde", method, "linear", n, f"{err:.3e}", res.elapsed_s,
                         strong_paths))
            est, se, seconds = fastsde_second_moment(method, "gaussian", n, weak_paths, seed=5)
            rows.append(("fastsde", method, "gbm", n, f"{est:.4f} +- {se:.4f}", seconds,
                         weak_paths))
    for (library, solver), (strong_fn, weak_fn) in peers.items():
        for n in (8, 16, 32, 64, 128, 256):
            r = strong_fn(n, strong_paths, 5)
            rows.append((library, solver, "linear", n, f"{r['strong_error']:.3e}",
                         r["seconds"], strong_paths))
            r = weak_fn(n, weak_paths, 5)
            rows.append((library, solver, "gbm", n, f"{r['estimate']:.4f} +- {r['se']:.4f}",
                         r["seconds"], weak_paths))
            print(rows[-2], rows[-1], flush=True)
    for engine, solver, problem, n, value, seconds, paths in rows:
        per = seconds * 1e6 / paths
        lines.append(f"| {engine} | {solver} | {problem} | {n} | {value} | {seconds:.4f} | "
                     f"{per:.3f} |")
        if problem == "linear":
            FIGURE["strong_per_path"].append((f"{engine} {solver}", per, float(value)))
    lines.append("")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, no headline")
    parser.add_argument("--parts", default="strong,weak,headline,increments,peers")
    parser.add_argument("--out", default=None, help="results file (default: "
                        "bench/results/convergence-<date>.md; '-' prints only)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    date = datetime.date.today().isoformat()
    lines = [f"# Convergence and cost per digit, {date}", "",
             f"Command: `python bench/convergence.py {' '.join(argv or sys.argv[1:])}`; "
             f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}, numpy {np.__version__}, fastsde {fs.__version__}, "
             f"device cpu, float64 unless stated.", ""]
    if "strong" in parts:
        strong_part(2_000 if args.quick else 20_000, lines)
    if "weak" in parts:
        weak_part(200_000 if args.quick else 4_000_000, lines)
    if "headline" in parts and not args.quick:
        headline_part(lines)
    if "increments" in parts:
        increments_part(lines, 100_000 if args.quick else 4_000_000)
    if "peers" in parts:
        peers_part(lines, 2_000 if args.quick else 10_000, 10_000 if args.quick else 200_000)
    text = "\n".join(lines) + "\n"
    print(text)
    write_report(text, args.out, f"convergence-{date}", write_figure)


if __name__ == "__main__":
    main()
