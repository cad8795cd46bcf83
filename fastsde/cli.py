"""The ``fastsde`` command: ``fastsde demo [ou|generative]`` and ``fastsde run``."""

import argparse
import json
import math
import sys
import time

import numpy as np

from . import __version__
from .api import simulate
from .errors import FastSDEError
from .methods import METHODS
from .models import GBM, OU, BrownianMotion


def ou_discrete_stationary_var(method, theta, sigma, h):
    """Stationary variance of a scheme's own recursion on OU (its h-dependent bias).

    Euler-Maruyama: x' = (1 - a) x + sigma sqrt(h) z with a = theta h, so
    v = sigma^2 h / (1 - (1 - a)^2). Stochastic Heun: x' = (1 - a + a^2 / 2) x
    + (1 - a / 2) sigma sqrt(h) z.
    """
    a = theta * h
    if method == "euler_maruyama":
        return sigma**2 * h / (1.0 - (1.0 - a) ** 2)
    if method == "heun":
        return sigma**2 * h * (1.0 - a / 2.0) ** 2 / (1.0 - (1.0 - a + a * a / 2.0) ** 2)
    raise ValueError(method)


def _demo_plot(model, t1, n_steps, dtype, seed, x_final, path_png):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fan = simulate(model, 0.0, (0.0, t1), n_steps, 60, method="euler_maruyama", device="cpu",
                   seed=seed, dtype=dtype, save_at=n_steps)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    ax0.plot(fan.t, fan.paths[:, :, 0], lw=0.6, alpha=0.7)
    sd = math.sqrt(model.stationary_var)
    band = np.sqrt(model.var(fan.t))
    ax0.fill_between(fan.t, -2 * band, 2 * band, color="k", alpha=0.12,
                     label="exact mean ± 2 sd")
    ax0.set(xlabel="t", ylabel="X_t", title=f"{model.name}: 60 of the paths")
    ax0.legend(loc="upper right")
    grid = np.linspace(-4.5 * sd, 4.5 * sd, 400)
    ax1.hist(x_final, bins=200, range=(grid[0], grid[-1]), density=True, alpha=0.6,
             label=f"X_{t1:g}, {x_final.size:,} paths")
    ax1.plot(grid, np.exp(-grid**2 / (2 * sd**2)) / math.sqrt(2 * math.pi * sd**2), "k",
             label="N(0, sigma^2 / (2 theta))")
    ax1.set(xlabel="x", ylabel="density", title="final state vs stationary density")
    ax1.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path_png, dpi=110)
    plt.close(fig)
    return path_png


def demo(args):
    """``fastsde demo [ou|generative]``."""
    if args.which == "generative":
        return demo_generative(args)
    return demo_ou(args)


def demo_ou(args):
    """OU to stationarity: simulated vs exact variance with its standard error."""
    if args.dtype is None:
        args.dtype = "float32"
    if args.png is None:
        args.png = "fastsde-demo.png"
    theta, sigma = 0.25, 1.0
    model = OU(theta=theta, sigma=sigma)
    t1, n_steps, n_paths = args.t1, args.steps, args.paths
    h = t1 / n_steps
    exact = model.stationary_var
    print(f"fastsde {__version__} demo: {model.name}, x0 = 0, t in [0, {t1:g}], "
          f"{n_steps} steps (h = {h:g}), {n_paths:,} paths, {args.dtype}, device={args.device}")
    print(f"exact stationary variance sigma^2 / (2 theta) = {exact:.6f}; at t = {t1:g} the "
          f"exact variance is {model.var(t1):.6f}")
    print()
    print(f"{'method':<15} {'simulated var':>14} {'SE':>9} {'(sim-exact)/SE':>15} "
          f"{'scheme own var':>15} {'path-steps/s':>13}")
    last = None
    for method in ("euler_maruyama", "heun"):
        res = simulate(model, 0.0, (0.0, t1), n_steps, n_paths, method=method,
                       device=args.device, seed=args.seed, dtype=args.dtype, stats=True)
        var = float(res.var[-1, 0])
        n = int(res.count[-1, 0])
        # SE of the sample variance of a normal sample: var * sqrt(2 / (n - 1)).
        se = var * math.sqrt(2.0 / (n - 1))
        exact_t = float(model.var(t1))
        own = ou_discrete_stationary_var(method, theta, sigma, h)
        print(f"{method:<15} {var:>14.6f} {se:>9.6f} {(var - exact_t) / se:>15.2f} "
              f"{own:>15.6f} {res.path_steps_per_s:>13.3e}")
        last = res
    print()
    print("Euler-Maruyama's stationary variance carries a bias of about theta*h/2 relative "
          "('scheme own var' is the exact stationary variance of its recursion); stochastic "
          "Heun's is O(h^2).")
    print(f"kernel time {last.elapsed_s:.3f} s for {n_paths * n_steps:.3g} path-steps "
          f"(device {last.device}, n_nonfinite {last.n_nonfinite})")
    if not args.no_plot:
        x_final = simulate(model, 0.0, (0.0, t1), n_steps, n_paths, method="euler_maruyama",
                           device=args.device, seed=args.seed, dtype=args.dtype).x[:, 0]
        png = _demo_plot(model, t1, n_steps, args.dtype, args.seed, x_final, args.png)
        if png:
            print(f"wrote {png}")
        else:
            print("matplotlib is not installed: no figure (pip install matplotlib)")
    return 0


def _parse_step_counts(text):
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        counts = []
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"--step-counts must be a comma-separated list of ints >= 1; got "
                         f"{text!r}")
    return sorted(set(counts))


#: The generative demo's target: 8 equal Gaussians of std 0.3 on a circle of radius 4.
RING = dict(n_components=8, radius=4.0, std=0.3)
#: Its diffusion's constant noise level sigma_t.
RING_SIGMA = 1.0
#: Paths used for the flow-map error (against Heun with REF_STEPS steps).
MAP_PATHS, REF_STEPS = 10_000, 1024


def demo_generative(args):
    """Flow and diffusion samplers of an 8-Gaussian ring against its exact law."""
    from .generative import GaussianMixturePath
    from .metrics import SlicedW1, component_errors, occupation_test
    from .model import Normal

    dtype = args.dtype or "float32"
    steps_list = _parse_step_counts(args.step_counts)
    n = args.paths
    if n < 2:
        raise ValueError(f"--paths must be >= 2 for the generative demo; got {n}")
    path = GaussianMixturePath.ring(**RING)
    samplers = [("flow", "euler", path.flow()), ("flow", "heun", path.flow()),
                ("diffusion", "euler_maruyama", path.diffusion(RING_SIGMA))]
    print(f"fastsde {__version__} demo generative: {path.n_components} Gaussians (std "
          f"{RING['std']:g}) on a circle of radius {RING['radius']:g} in 2-D; X_0 ~ N(0, I), "
          f"t in [0, 1], {n:,} particles, {dtype}, device={args.device}")
    print(f"flow dX = u_t(X) dt with the exact u_t; diffusion dX = [u_t + sigma^2/2 grad log "
          f"p_t] dt + sigma dW, sigma = {RING_SIGMA:g}")
    start = time.perf_counter()
    ref = path.sample(n, 1.0, seed=args.seed + 1)
    sw = SlicedW1(ref, n_projections=args.projections, seed=0)
    floor = sw.floor(n)
    exact = path.sample(n, 1.0, seed=args.seed + 2)
    occ_exact = occupation_test(exact, path)
    err_exact = component_errors(exact, path)
    m = min(MAP_PATHS, n)
    x_map = simulate(path.flow(), Normal(0.0, 1.0), (0.0, 1.0), REF_STEPS, m, method="heun",
                     device=args.device, seed=args.seed, dtype="float64", progress=False).x
    print(f"reference: {n:,} exact samples; sliced W1 over {args.projections} random "
          f"directions; flow-map error = median |X_1 - X_1^ref| over the first "
          f"{m:,} particles, X_1^ref from Heun with {REF_STEPS} steps (float64, same X_0)")
    print()
    header = (f"{'steps':>5} {'sampler':<26} {'sliced W1':>10} {'occ. chi2 p':>11} "
              f"{'max|z| occ':>10} {'max|mean err|':>13} {'flow-map err':>12} "
              f"{'path-steps/s':>12} {'wall s':>7}")
    print(header)
    print("-" * len(header))
    print(f"{'':>5} {'exact vs exact, expected':<26} {floor:>10.5f}")
    print(f"{'':>5} {'exact vs exact, one draw':<26} {sw(exact):>10.5f} "
          f"{occ_exact.p_value:>11.3g} {np.max(np.abs(occ_exact.z)):>10.2f} "
          f"{err_exact.max_mean_error:>13.5f}")
    rows = []
    for steps in steps_list:
        for kind, method, model in samplers:
            res = simulate(model, Normal(0.0, 1.0), (0.0, 1.0), steps, n, method=method,
                           device=args.device, seed=args.seed, dtype=dtype, progress=False)
            x = res.x.astype(np.float64)
            finite = np.all(np.isfinite(x), axis=1)
            xf = x[finite]
            occ = occupation_test(xf, path)
            err = component_errors(xf, path)
            swv = sw(xf)
            map_err = (float(np.median(np.linalg.norm(x[:m] - x_map, axis=1)))
                       if kind == "flow" else float("nan"))
            label = f"{kind} {method}"
            rows.append(dict(steps=steps, sampler=label, method=method, sw=swv,
                             p=occ.p_value, zmax=float(np.max(np.abs(occ.z))),
                             mean_err=err.max_mean_error, map_err=map_err,
                             rate=res.path_steps_per_s, wall=res.elapsed_s,
                             nonfinite=res.n_nonfinite))
            map_txt = f"{map_err:>12.3e}" if kind == "flow" else f"{'-':>12}"
            print(f"{steps:>5} {label:<26} {swv:>10.5f} {occ.p_value:>11.3g} "
                  f"{rows[-1]['zmax']:>10.2f} {err.max_mean_error:>13.5f} {map_txt} "
                  f"{res.path_steps_per_s:>12.3e} {res.elapsed_s:>7.2f}"
                  + (f"  ({res.n_nonfinite} non-finite)" if res.n_nonfinite else ""))
    print()
    for method in ("euler", "heun"):
        pts = [(r["steps"], r["map_err"]) for r in rows if r["method"] == method]
        if len(pts) >= 2:
            s, e = np.array(pts).T
            slope = -np.polyfit(np.log(s), np.log(e), 1)[0]
            last = -np.log(e[-1] / e[-2]) / np.log(s[-1] / s[-2])
            print(f"flow {method}: flow-map error order {slope:.2f} fitted over steps "
                  f"{int(s[0])}-{int(s[-1])}, {last:.2f} between the last two")
    print(f"The sliced W1 of two exact sample sets of {n:,} is about {floor:.5f} (expected "
          f"value; one draw varies by tens of percent): a sampler below it is "
          f"indistinguishable from exact by this measure. 'occ.' assigns each particle to "
          f"its most likely component and tests the counts against the weights.")
    print(f"total {time.perf_counter() - start:.1f} s (including compilation)")
    if not args.no_plot:
        png = _generative_plot(path, samplers, steps_list, rows, floor, args,
                               args.png or "fastsde-generative.png")
        print(f"wrote {png}" if png else
              "matplotlib is not installed: no figure (pip install matplotlib)")
    return 0


def _generative_plot(path, samplers, steps_list, rows, floor, args, png):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return None
    from .model import Normal

    steps = max(steps_list)
    n_show = min(args.paths, 8_000)
    fig, axes = plt.subplots(len(samplers), 4, figsize=(16, 4 * len(samplers)))
    for row, (kind, method, model) in enumerate(samplers):
        res = simulate(model, Normal(0.0, 1.0), (0.0, 1.0), steps, n_show, method=method,
                       device=args.device, seed=args.seed, dtype=args.dtype or "float32",
                       save_at=2, progress=False)
        for col, t in enumerate(res.t):
            ax = axes[row, col]
            ax.scatter(res.paths[col, :, 0], res.paths[col, :, 1], s=0.3, alpha=0.3)
            ax.set(xlim=(-6, 6), ylim=(-6, 6), aspect="equal",
                   title=f"{kind} {method}, {steps} steps: t = {t:g}")
    ax = axes[0, 3]
    for method, marker in (("euler", "o"), ("heun", "s")):
        pts = np.array([(r["steps"], r["map_err"]) for r in rows if r["method"] == method])
        ax.loglog(pts[:, 0], pts[:, 1], marker + "-", label=f"flow {method}")
    s = np.array(steps_list, dtype=float)
    # Guides through the finest point of each method, where the error is asymptotic.
    last = {m: [r["map_err"] for r in rows if r["method"] == m][-1] for m in ("euler", "heun")}
    ax.loglog(s, last["euler"] * (s[-1] / s), "k:", label="order 1")
    ax.loglog(s, last["heun"] * (s[-1] / s) ** 2, "k--", label="order 2")
    ax.set(xlabel="steps", ylabel="flow-map error (median)", title="flow-map error vs steps")
    ax.legend()
    ax = axes[1, 3]
    for label in dict.fromkeys(r["sampler"] for r in rows):
        pts = np.array([(r["steps"], r["sw"]) for r in rows if r["sampler"] == label])
        ax.loglog(pts[:, 0], pts[:, 1], "o-", label=label)
    ax.axhline(floor, color="k", ls=":", label="exact vs exact")
    ax.set(xlabel="steps", ylabel="sliced W1 to exact", title="sliced W1 vs steps")
    ax.legend()
    for ax in axes[:2, 3]:
        ax.set_xticks(steps_list, [str(v) for v in steps_list])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax = axes[2, 3] if len(samplers) > 2 else None
    if ax is not None:
        ref = path.sample(n_show, 1.0, seed=args.seed + 1)
        ax.scatter(ref[:, 0], ref[:, 1], s=0.3, alpha=0.3, color="k")
        ax.set(xlim=(-6, 6), ylim=(-6, 6), aspect="equal", title="exact samples of p_1")
    fig.tight_layout()
    fig.savefig(png, dpi=64)
    plt.close(fig)
    return png


_MODELS = {
    "ou": lambda a: OU(theta=a.theta, sigma=a.sigma, dim=a.dim),
    "bm": lambda a: BrownianMotion(sigma=a.sigma, dim=a.dim),
    "gbm": lambda a: GBM(mu=a.mu, sigma=a.sigma, dim=a.dim),
}


def run(args):
    """Simulate a built-in model and print a summary (or JSON)."""
    model = _MODELS[args.model](args)
    common = dict(method=args.method, device=args.device, seed=args.seed, dtype=args.dtype,
                  save_at=args.save_at)
    if args.dask:
        from . import distributed

        # Paths stay on the workers: the summary comes from the merged statistics.
        def on(client):
            return distributed.simulate(model, args.x0, (args.t0, args.t1), args.steps,
                                        args.paths, stats=True, client=client,
                                        paths_per_task=args.paths_per_task, **common)

        if args.dask.strip() == "local":
            res = on(None)  # checks the arguments before it starts the local cluster
        else:
            with distributed.connect(args.dask) as client:
                res = on(client)
    else:
        if args.paths_per_task is not None:
            raise ValueError("--paths-per-task applies only with --dask")
        res = simulate(model, args.x0, (args.t0, args.t1), args.steps, args.paths,
                       stats=args.stats, **common)
    if res.x is not None:
        x = res.x.astype(np.float64)
        finite = np.all(np.isfinite(x), axis=1)
        final_mean = x[finite].mean(axis=0).tolist()
        final_var = x[finite].var(axis=0, ddof=1).tolist() if finite.sum() > 1 else None
    else:
        final_mean = res.mean[-1].tolist()
        final_var = res.var[-1].tolist() if np.all(res.count[-1] > 1) else None
    summary = {
        "model": model.name, "method": res.method, "device": res.device, "dtype": res.dtype,
        "seed": args.seed, "n_paths": res.n_paths, "n_steps": res.n_steps,
        "t": res.t.tolist(), "final_mean": final_mean, "final_var": final_var,
        "n_nonfinite": res.n_nonfinite, "elapsed_s": res.elapsed_s,
        "path_steps_per_s": res.path_steps_per_s, "rng_version": res.rng_version,
    }
    if res.mean is not None:
        summary["mean"] = res.mean.tolist()
        summary["var"] = res.var.tolist()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(res)
        print(f"final mean {np.round(summary['final_mean'], 6).tolist()}  "
              f"final var {np.round(summary['final_var'], 6).tolist() if summary['final_var'] else None}")
        print(f"{res.path_steps_per_s:.3e} path-steps/s over {res.elapsed_s:.3f} s")
    return 0


def build_parser():
    ap = argparse.ArgumentParser(prog="fastsde", description="Fast ODE/SDE Monte Carlo.")
    ap.add_argument("--version", action="version", version=f"fastsde {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="ou (default): OU process to stationarity against its "
                                    "exact variance; generative: flow and diffusion "
                                    "samplers of a Gaussian mixture against exact samples")
    d.add_argument("which", nargs="?", choices=("ou", "generative"), default="ou")
    d.add_argument("--paths", type=int, default=1_000_000)
    d.add_argument("--steps", type=int, default=1000, help="ou: number of steps")
    d.add_argument("--t1", type=float, default=40.0, help="ou: final time")
    d.add_argument("--step-counts", default="4,8,16,32,64",
                   help="generative: comma-separated step counts")
    d.add_argument("--projections", type=int, default=32,
                   help="generative: random directions of the sliced W1")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="default float32")
    d.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    d.add_argument("--png", default=None, help="figure path (needs matplotlib); default "
                                               "fastsde-demo.png / fastsde-generative.png")
    d.add_argument("--no-plot", action="store_true")
    d.set_defaults(func=demo)

    r = sub.add_parser("run", help="simulate a built-in model and print a summary")
    r.add_argument("--model", choices=sorted(_MODELS), default="ou")
    r.add_argument("--theta", type=float, default=1.0)
    r.add_argument("--mu", type=float, default=0.05)
    r.add_argument("--sigma", type=float, default=0.5)
    r.add_argument("--dim", type=int, default=1)
    r.add_argument("--x0", type=float, default=1.0)
    r.add_argument("--t0", type=float, default=0.0)
    r.add_argument("--t1", type=float, default=1.0)
    r.add_argument("--steps", type=int, default=1000)
    r.add_argument("--paths", type=int, default=100_000)
    r.add_argument("--method", choices=sorted(METHODS), default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    r.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    r.add_argument("--save-at", type=int, default=None,
                   help="K: keep K + 1 evenly spaced times (K divides --steps)")
    r.add_argument("--stats", action="store_true", help="in-kernel mean/var at save times")
    r.add_argument("--json", action="store_true")
    r.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="run on Dask: 'local' (a local cluster, one worker process per "
                        "core) or a scheduler address tcp://HOST:PORT; keeps statistics, "
                        "not paths")
    r.add_argument("--paths-per-task", type=int, default=None,
                   help="with --dask: paths per task (a multiple of 512)")
    r.set_defaults(func=run)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError, OSError, FastSDEError) as exc:
        # One line: a compiler's multi-line diagnosis is cut to its first line.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"fastsde: error: {first}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
