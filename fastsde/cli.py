"""The ``fastsde`` command: ``fastsde demo`` and ``fastsde run``."""

import argparse
import json
import math
import sys

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
    """OU to stationarity: simulated vs exact variance with its standard error."""
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

    d = sub.add_parser("demo", help="OU process to stationarity: simulated vs exact variance")
    d.add_argument("--paths", type=int, default=1_000_000)
    d.add_argument("--steps", type=int, default=1000)
    d.add_argument("--t1", type=float, default=40.0)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    d.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    d.add_argument("--png", default="fastsde-demo.png", help="figure path (needs matplotlib)")
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
