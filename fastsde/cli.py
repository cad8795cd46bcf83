"""The ``fastsde`` command: ``fastsde demo [ou|generative]`` and ``fastsde run``."""

import argparse
import ast
import gc
import inspect
import json
import keyword
import math
import numbers
import os
import pickle
import re
import subprocess
import sys
import threading
import time

import numpy as np

from . import __version__
from .api import simulate
from .errors import FastSDEError, ModelError
from .methods import INCREMENTS, METHODS
from .models import GBM, OU, BrownianMotion
from .montecarlo import HIT_ESTIMATES, MAX_BINS
from . import _demo_figure as demo_figure


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


def _demo_figure_layout(model, t1, n_steps, n_paths, path_png):
    """What the demo's figure shows that is known before anything runs: the times of the
    ``n_fan`` paths it draws (``t``, shape (n_steps + 1,)), the exact +-2 sd band there,
    the stationary density on ``grid`` (400 points, the histogram's range) and the
    histogram's number of bins (``n_bins``)."""
    sd = math.sqrt(model.stationary_var)
    t = np.arange(n_steps + 1) * (t1 / n_steps)
    grid = np.linspace(-4.5 * sd, 4.5 * sd, 400)
    return dict(png=path_png, name=model.name, t1=t1, n_final=int(n_paths), t=t,
                band=np.sqrt(model.var(t)), grid=grid, n_fan=60, n_bins=200,
                stationary=np.exp(-grid**2 / (2 * sd**2)) / math.sqrt(2 * math.pi * sd**2))


def _demo_figure_data(model, t1, n_steps, dtype, seed, x_final, layout):
    """What the demo's figure shows from the run: the layout's ``n_fan`` Euler-Maruyama
    paths (``paths``, shape (n_steps + 1, n_fan)) and the histogram of ``x_final`` on its
    ``n_bins`` bins over its grid (``density``, ``edges``)."""
    fan = simulate(model, 0.0, (0.0, t1), n_steps, layout["n_fan"], method="euler_maruyama",
                   device="cpu", seed=seed, dtype=dtype, save_at=n_steps)
    grid = layout["grid"]
    density, edges = np.histogram(x_final, bins=layout["n_bins"], range=(grid[0], grid[-1]),
                                  density=True)
    return dict(paths=np.ascontiguousarray(fan.paths[:, :, 0]), density=density,
                edges=edges)


class _FigureProcess:
    """The demo's figure drawn in a second process. Importing matplotlib and drawing take
    about half a second, as long as the rest of a second run of the demo; a process
    started first imports and draws what is known before the run while this one loads
    and runs its kernels, and draws the run's paths and histogram while this one runs
    its second method. The figure is the one drawn here would be: when the process fails
    for any reason but a missing matplotlib, this process draws it instead."""

    def __init__(self, layout):
        self.layout = layout
        self.data = None
        # One BLAS thread: the figure does no linear algebra, and numpy's OpenBLAS starts
        # a thread per core on import that spins for a while (0.05-0.1 s of CPU taken
        # from the demo's kernels on a 2-core machine).
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import runpy, sys; runpy.run_path(sys.argv[1], "
             "run_name='__main__')", demo_figure.__file__],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env)
        self.writer = self._write(layout)

    def _write(self, obj, last=False):
        # From a thread: a pickle larger than the pipe's buffer must not hold up this
        # process until the other one reads it.
        blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

        def write():
            try:
                self.process.stdin.write(blob)
                self.process.stdin.flush()
                if last:
                    self.process.stdin.close()
            except OSError:  # the process ended first (no matplotlib, or it failed)
                pass

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        return thread

    def send(self, data):
        """Hand over the run's data (:func:`_demo_figure_data`) without waiting."""
        self.data = data
        self.writer.join()
        self.writer = self._write(data, last=True)

    def close(self):
        """End the process if it still runs (the demo failed before :meth:`finish`)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def finish(self):
        """The figure's path (after :meth:`send`), or None without matplotlib."""
        answer = self.process.stdout.readline().decode(errors="replace").strip()
        self.process.wait()
        self.writer.join()
        if answer == "no matplotlib":
            return None
        if self.process.returncode == 0 and answer.startswith("wrote "):
            return answer[len("wrote "):]
        drawing = demo_figure.draw(self.layout)
        return None if drawing is None else demo_figure.finish(drawing, self.layout,
                                                               self.data)


def demo(args):
    """``fastsde demo [ou|generative]``."""
    if args.which == "generative":
        return demo_generative(args)
    return demo_ou(args)


def _compile_in_a_second_process(theta, sigma, methods, dtype, device):
    """Start a process that compiles, into Numba's disk cache, the demo's OU kernels for
    ``methods`` that are neither held here nor in the cache (a first run), while this
    process compiles its first kernel: Numba compiles on one core, so on two cores the
    demo's two compiles take the time of one. Returns the process, or None when there is
    nothing to compile (a second run: no process started) or the run is not on the CPU.
    The caller waits for it before it needs those kernels, which it then loads from the
    cache (or compiles itself if the process failed: same kernel, same bits)."""
    from .api import _resolve_device
    from .kernels import cpu

    if _resolve_device(device) != "cpu":
        return None
    model = OU(theta=theta, sigma=sigma)
    missing = [m for m in methods if not cpu.kernel_is_ready(model, METHODS[m], dtype)]
    if not missing:
        return None
    code = (f"import fastsde as fs\nm = fs.OU(theta={theta!r}, sigma={sigma!r})\n"
            f"for method in {missing!r}:\n"
            f"    fs.compile(m, 0.0, method=method, dtype={dtype!r}, device='cpu')\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    process.methods = missing
    return process


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
    x_final = None
    methods = ("euler_maruyama", "heun")
    layout = _demo_figure_layout(model, t1, n_steps, n_paths, args.png)
    figure = None if args.no_plot else _FigureProcess(layout)
    try:
        helper = _compile_in_a_second_process(theta, sigma, methods[1:], args.dtype,
                                              args.device)
        for method in methods:
            if method != methods[0] and helper is not None:
                helper.wait()
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
            if x_final is None:
                # The figure's histogram: the Euler-Maruyama final states, kept with the
                # statistics (keep_x), so the figure costs no second run. The figure process
                # draws while this one runs the next method.
                x_final = res.x[:, 0]
                if figure is not None:
                    figure.send(_demo_figure_data(model, t1, n_steps, args.dtype, args.seed,
                                                  x_final, layout))
        print()
        print("Euler-Maruyama's stationary variance carries a bias of about theta*h/2 relative "
              "('scheme own var' is the exact stationary variance of its recursion); stochastic "
              "Heun's is O(h^2).")
        print(f"kernel time {last.elapsed_s:.3f} s for {n_paths * n_steps:.3g} path-steps "
              f"(device {last.device}, n_nonfinite {last.n_nonfinite})")
        if helper is not None:
            print(f"first run: the {', '.join(helper.methods)} kernel compiled in a second "
                  f"process while this one compiled {methods[0]}'s (exit status "
                  f"{helper.returncode})")
        if figure is not None:
            png = figure.finish()
            if png:
                print(f"wrote {png}")
            else:
                print("matplotlib is not installed: no figure (pip install matplotlib)")
    finally:
        if figure is not None:
            figure.close()
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


class CLIError(ValueError):
    """A bad command-line value; the message names the flag as the user typed it."""


#: The built-in models of ``fastsde run``, built from the parsed arguments.
_MODELS = {
    "ou": lambda a: OU(theta=a.theta, sigma=a.sigma, dim=a.dim),
    "bm": lambda a: BrownianMotion(sigma=a.sigma, dim=a.dim),
    "gbm": lambda a: GBM(mu=a.mu, sigma=a.sigma, dim=a.dim),
}
_MODEL_HELP = ("built-in model, its parameters p from the flags: ou = OU, dX = -theta X dt "
               "+ sigma dW, p = (--theta, --sigma); bm = BrownianMotion, dX = sigma dW, "
               "p = (--sigma,); gbm = GBM, dX = mu X dt + sigma X dW, p = (--mu, --sigma); "
               "each of --dim independent components")

#: Functions and constants of ``math`` an --observable may use, bare or as ``math.NAME``
#: (those Numba cannot compile are reported when the kernel is compiled).
_MATH_NAMES = frozenset(n for n in dir(math) if not n.startswith("_"))
_MATH_CONSTANTS = frozenset(n for n in _MATH_NAMES if isinstance(getattr(math, n), float))
_MATH_FUNCTIONS = _MATH_NAMES - _MATH_CONSTANTS
#: Builtins an --observable may call; Numba compiles them on scalars.
_OBS_BUILTINS = {"abs": abs, "min": min, "max": max}
_OBS_ALLOWED = ("NAME=EXPR with NAME an identifier and EXPR a Python expression in t, x[i] "
                "(state component, i an integer, -dim <= i < dim), p[j] (the model's "
                "parameters), numbers, + - * / // % **, comparisons, and/or/not, "
                "'a if c else b', the functions and constants of math (exp, log, sqrt, "
                "sin, cos, tanh, erf, pi, e, ...; also as math.exp), abs, min and max")


class _Reject(Exception):
    """Why an --observable expression is refused (turned into a CLIError)."""


class _ObservableChecker(ast.NodeTransformer):
    """Accept only the whitelisted syntax of an --observable expression.

    Every node is checked against an allow-list (a deny-list would miss attribute and
    call tricks); bare math names become ``math.NAME`` so that the generated function's
    globals need only ``math``; numbers become floats so that ``2**-1`` or ``10**10**10``
    mean what they do on floats in the compiled kernel (and cannot stall the pre-flight
    on huge Python ints).
    """

    _PASS = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
             ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
             ast.UAdd, ast.USub, ast.Not, ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt,
             ast.LtE, ast.Gt, ast.GtE)

    def __init__(self, sizes):
        self.sizes = sizes  # {"x": dim, "p": n_params}

    def generic_visit(self, node):
        if not isinstance(node, self._PASS):
            what = type(node).__name__
            if isinstance(node, ast.expr):
                what += f" {ast.unparse(node)!r}"
            raise _Reject(f"{what} is not allowed")
        return super().generic_visit(node)

    def visit_Constant(self, node):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Reject(f"the constant {value!r} is not allowed (numbers only)")
        try:
            return ast.copy_location(ast.Constant(float(value)), node)
        except OverflowError:
            raise _Reject(f"the number {value!r} is too large for a float") from None

    def visit_Name(self, node):
        if node.id == "t":
            return node
        if node.id in self.sizes:
            raise _Reject(f"{node.id} must be indexed by an integer, as in {node.id}[0]")
        if node.id in _MATH_CONSTANTS:
            return self._math(node.id, node)
        if node.id in _MATH_FUNCTIONS or node.id in _OBS_BUILTINS:
            raise _Reject(f"the function {node.id} must be called, as in {node.id}(x[0])")
        raise _Reject(f"unknown name {node.id!r}")

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id == "math" \
                and node.attr in _MATH_CONSTANTS:
            return node
        raise _Reject(f"the attribute {ast.unparse(node)!r} is not allowed")

    def visit_Subscript(self, node):
        name = node.value.id if isinstance(node.value, ast.Name) else None
        if name is not None and name not in self.sizes:
            self.visit(node.value)  # an unknown name is reported as such
        index = node.slice
        negative = isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub)
        const = index.operand if negative else index
        if name not in self.sizes or not isinstance(const, ast.Constant) or \
                isinstance(const.value, bool) or not isinstance(const.value, int):
            raise _Reject(f"{ast.unparse(node)!r}: only x[i] and p[j] with an integer "
                          f"constant index may be subscripted")
        i, size = -const.value if negative else const.value, self.sizes[name]
        if not -size <= i < size:
            raise _Reject(f"{ast.unparse(node)!r} is out of range: {name} has {size} "
                          f"element{'s' if size != 1 else ''}")
        return node

    def visit_Call(self, node):
        func = node.func
        if node.keywords:
            raise _Reject(f"{ast.unparse(node)!r}: keyword arguments are not allowed")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise _Reject(f"{ast.unparse(node)!r}: *arguments are not allowed")
        if isinstance(func, ast.Name) and func.id in _OBS_BUILTINS:
            pass
        elif isinstance(func, ast.Name) and func.id in _MATH_FUNCTIONS:
            node.func = self._math(func.id, func)
        elif not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                  and func.value.id == "math" and func.attr in _MATH_FUNCTIONS):
            raise _Reject(f"{ast.unparse(func)!r} is not an allowed function")
        node.args = [self.visit(a) for a in node.args]
        return node

    @staticmethod
    def _math(attr, node):
        return ast.copy_location(ast.Attribute(ast.Name("math", ast.Load()), attr,
                                               ast.Load()), node)


def parse_observable(text, model, t0=0.0, x0=0.0):
    """Turn ``--observable NAME=EXPR`` into ``(NAME, f)`` with ``f(t, x, p) -> float``.

    Parameters
    ----------
    text : str
        The flag's value.
    model : fastsde.SDE
        The run's model: ``x`` has ``model.dim`` components and ``p`` is
        ``model.params``.
    t0, x0 : float
        The initial time and state at which the function is tried once in Python.

    Returns
    -------
    name : str
    fn : function
        A plain Python function, built by ``exec`` from the validated expression, whose
        globals hold only ``math`` and the builtins abs, min and max (what Numba needs
        to compile it into the kernel).

    Raises
    ------
    CLIError
        The text is not ``NAME=EXPR`` or the expression uses something not allowed; the
        message names --observable, quotes the text and says what is allowed.
    """
    def bad(why):
        return CLIError(f"argument --observable: {text!r}: {why}; expected {_OBS_ALLOWED}")

    name, sep, expr = text.partition("=")
    name = name.strip()
    if not sep:
        raise bad("missing '='")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise bad(f"NAME {name!r} is not a valid identifier")
    if name in HIT_ESTIMATES:
        raise bad(f"NAME {name!r} is reserved for stopping statistics")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise bad(f"syntax error in EXPR ({exc.msg})") from None
    except (ValueError, RecursionError, MemoryError):
        raise bad("EXPR cannot be parsed") from None
    try:
        tree = _ObservableChecker({"x": model.dim, "p": model.n_params}).visit(tree)
    except _Reject as exc:
        raise bad(str(exc)) from None
    except RecursionError:
        raise bad("EXPR is nested too deeply") from None
    # 1.0 * (...): a comparison gives a bool, which the kernel wants as a number, and
    # Numba has no float(bool); the product is exact for every float.
    source = (f"def observable_{name}(t, x, p):\n"
              f"    return 1.0 * ({ast.unparse(tree.body)})\n")
    namespace = {"math": math, "__builtins__": dict(_OBS_BUILTINS)}
    exec(compile(source, f"<fastsde --observable {name}>", "exec"), namespace)
    fn = namespace.pop(f"observable_{name}")  # its globals: math and builtins only
    # One call in Python catches what the syntax cannot: a wrong number or kind of
    # arguments (exp(x[0], 1), max(x[0])). Domain errors are NaN or inf when compiled.
    x = np.full(model.dim, float(x0))
    try:
        with np.errstate(all="ignore"):
            value = fn(np.float64(t0), x, np.asarray(model.params, dtype=np.float64))
    except TypeError as exc:
        raise bad(str(exc)) from None
    except (ArithmeticError, ValueError):
        value = 0.0
    if not isinstance(value, (numbers.Real, np.number)):
        raise bad(f"EXPR gives {value!r}, not a number")
    return name, fn


def parse_histogram(text):
    """``--histogram BINS:LO:HI`` as ``dict(bins=BINS, range=(LO, HI))``.

    Raises
    ------
    CLIError
        Not three fields, BINS not an int in [1, fastsde.montecarlo.MAX_BINS], LO or HI
        not finite, or LO >= HI.
    """
    parts = text.split(":")
    why = None
    if len(parts) != 3:
        why = f"{len(parts)} field{'s' if len(parts) != 1 else ''} instead of 3"
    else:
        try:
            bins = int(parts[0])
        except ValueError:
            bins = None
        try:
            lo, hi = float(parts[1]), float(parts[2])
        except ValueError:
            lo = hi = None
        if bins is None or not 1 <= bins <= MAX_BINS:
            why = f"BINS must be an integer in [1, {MAX_BINS}]"
        elif lo is None or not (math.isfinite(lo) and math.isfinite(hi)):
            why = "LO and HI must be finite numbers"
        elif not lo < hi:
            why = "LO must be < HI"
    if why:
        raise CLIError(f"argument --histogram: {text!r}: {why}; expected BINS:LO:HI, "
                       f"e.g. 50:-3:3")
    return dict(bins=bins, range=(lo, hi))


def _check_run_args(args):
    """Check ``fastsde run``'s values up front, so that errors name the flags."""
    for flag, value, low in (("--steps", args.steps, 1), ("--paths", args.paths, 1),
                             ("--dim", args.dim, 1), ("--seed", args.seed, 0),
                             ("--save-at", args.save_at, 1),
                             ("--paths-per-task", args.paths_per_task, 1)):
        if value is not None and value < low:
            raise CLIError(f"{flag} must be >= {low}; got {value}")
    for flag in ("--theta", "--mu", "--sigma", "--x0", "--t0", "--t1"):
        value = getattr(args, flag[2:])
        if not math.isfinite(value):
            raise CLIError(f"{flag} must be a finite number; got {value}")
    if args.sigma < 0:
        raise CLIError(f"--sigma must be >= 0; got {args.sigma}")
    if not args.t1 > args.t0:
        raise CLIError(f"--t1 must be > --t0; got --t0 {args.t0} --t1 {args.t1}")
    if args.save_at is not None and args.steps % args.save_at:
        raise CLIError(f"--save-at K must divide --steps={args.steps} (K + 1 evenly "
                       f"spaced times); got {args.save_at}")
    if args.paths_per_task is not None and not args.dask:
        raise CLIError("--paths-per-task applies only with --dask")


#: simulate's argument names as the flags of ``fastsde run`` (for messages that reach
#: the user from the library; the flags' own checks come first).
_FLAG_NAMES = {"n_steps": "--steps", "n_paths": "--paths", "save_at": "--save-at",
               "t_span": "(--t0, --t1)", "x0": "--x0", "paths_per_task": "--paths-per-task",
               "observables": "--observable", "histogram": "--histogram"}
_FLAG_RE = re.compile(r"(?<![\w.'\"-])(" + "|".join(_FLAG_NAMES) + r")(?!\w)")


def cli_names(message):
    """``message`` with simulate's argument names replaced by the flags of ``fastsde run``."""
    return _FLAG_RE.sub(lambda m: _FLAG_NAMES[m.group(1)], message)


def _observable_compile_error(exc, texts):
    """A ModelError about an observable, as a CLIError naming --observable (or None)."""
    match = re.match(r"observables\['(\w+)'\]", str(exc))
    if match is None or match.group(1) not in texts:
        return None
    lines = [ln.strip() for ln in str(exc).splitlines()[1:]]
    reason = next((ln for ln in lines if ln and not ln.startswith("Failed in")),
                  str(exc).splitlines()[0])
    reason = re.sub(r"<module '(\w+)' from [^>]*>", r"\1", reason)
    return CLIError(f"argument --observable: {texts[match.group(1)]!r}: Numba cannot "
                    f"compile it ({reason[:200]}); expected {_OBS_ALLOWED}")


def run(args):
    """Simulate a built-in model and print a summary (or JSON)."""
    _check_run_args(args)
    try:
        model = _MODELS[args.model](args)
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    observables, texts = {}, {}
    for text in args.observable or ():
        name, fn = parse_observable(text, model, args.t0, args.x0)
        if name in observables:
            raise CLIError(f"argument --observable: {text!r}: NAME {name!r} is given "
                           f"twice (first as {texts[name]!r}); expected {_OBS_ALLOWED}")
        observables[name], texts[name] = fn, text
    histogram = parse_histogram(args.histogram) if args.histogram is not None else None
    extra = {}
    if observables:
        extra["observables"] = observables
    if histogram is not None:
        extra["histogram"] = histogram
    common = dict(method=args.method, device=args.device, seed=args.seed, dtype=args.dtype,
                  save_at=args.save_at, increments=args.increments)
    try:
        res = _simulate(args, model, common, extra)
    except ModelError as exc:
        raise _observable_compile_error(exc, texts) or exc
    _report(args, model, res, list(observables), histogram)
    return 0


def _simulate(args, model, common, extra):
    if args.dask:
        from . import distributed

        accepted = inspect.signature(distributed.simulate).parameters
        for key, flag in (("observables", "--observable"), ("histogram", "--histogram")):
            if key in extra and key not in accepted:
                raise CLIError(f"{flag} is not available with --dask")

        # Paths stay on the workers: the summary comes from the merged statistics.
        def on(client):
            return distributed.simulate(model, args.x0, (args.t0, args.t1), args.steps,
                                        args.paths, stats=True, client=client,
                                        paths_per_task=args.paths_per_task, **common,
                                        **extra)

        if args.dask.strip() == "local":
            return on(None)  # checks the arguments before it starts the local cluster
        with distributed.connect(args.dask) as client:
            return on(client)
    return simulate(model, args.x0, (args.t0, args.t1), args.steps, args.paths,
                    stats=args.stats, **common, **extra)


def _report(args, model, res, obs_names, histogram):
    """Print the run's summary, as text or as JSON."""
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
    estimates = {name: res.estimate(name) for name in obs_names}
    if estimates:
        summary["estimates"] = {name: dict(value=e.value, se=e.se, ci=list(e.ci), n=e.n)
                                for name, e in estimates.items()}
    hist = res.histogram
    if histogram is not None:
        # The final time only, to keep the output short (Result.histogram has them all).
        summary["histogram"] = dict(bins=histogram["bins"], range=list(histogram["range"]),
                                    t=float(res.t[-1]), counts=hist.counts[-1].tolist(),
                                    below=hist.below[-1].tolist(),
                                    above=hist.above[-1].tolist())
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(res)
    print(f"final mean {np.round(summary['final_mean'], 6).tolist()}  "
          f"final var {np.round(summary['final_var'], 6).tolist() if summary['final_var'] else None}")
    t1 = float(res.t[-1])
    for name, e in estimates.items():
        print(f"{name} at t = {t1:g}: {e.value:.6g} (SE {e.se:.3g}, 95% CI "
              f"[{e.ci[0]:.6g}, {e.ci[1]:.6g}], n {e.n})")
    if histogram is not None:
        lo, hi = histogram["range"]
        print(f"histogram at t = {t1:g}, {histogram['bins']} bins on [{lo:g}, {hi:g}]:")
        for j in range(hist.counts.shape[1]):
            print(f"  x[{j}]: below {hist.below[-1, j]}  counts "
                  f"{' '.join(str(c) for c in hist.counts[-1, j])}  above "
                  f"{hist.above[-1, j]}")
    print(f"{res.path_steps_per_s:.3e} path-steps/s over {res.elapsed_s:.3f} s")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: ...)" to every option's help unless the help states it."""

    def _get_help_string(self, action):
        if "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser():
    ap = argparse.ArgumentParser(prog="fastsde", description="Fast ODE/SDE Monte Carlo.")
    ap.add_argument("--version", action="version", version=f"fastsde {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", formatter_class=_HelpFormatter,
                       help="ou (default): OU process to stationarity against its "
                            "exact variance; generative: flow and diffusion "
                            "samplers of a Gaussian mixture against exact samples",
                       description="ou: OU(theta=0.25, sigma=1) from x0 = 0 to stationarity, "
                                   "Euler-Maruyama and Heun against the exact variance; "
                                   "generative: flow and diffusion samplers of an "
                                   "8-Gaussian ring against exact samples")
    d.add_argument("which", nargs="?", choices=("ou", "generative"), default="ou",
                   help="which demo")
    d.add_argument("--paths", type=int, default=1_000_000, help="number of paths")
    d.add_argument("--steps", type=int, default=250, help="ou: number of steps")
    d.add_argument("--t1", type=float, default=40.0, help="ou: final time")
    d.add_argument("--step-counts", default="4,8,16,32,64",
                   help="generative: comma-separated step counts")
    d.add_argument("--projections", type=int, default=32,
                   help="generative: random directions of the sliced W1")
    d.add_argument("--seed", type=int, default=0, help="random seed")
    d.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="floating-point type of the paths")
    d.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="auto: cuda when a usable GPU is present, else cpu")
    d.add_argument("--png", default=None, help="figure path, needs matplotlib (default: "
                                               "fastsde-demo.png / fastsde-generative.png)")
    d.add_argument("--no-plot", action="store_true", help="skip the figure")
    d.set_defaults(func=demo)

    r = sub.add_parser("run", formatter_class=_HelpFormatter,
                       help="simulate a built-in model and print a summary",
                       description="Simulate a built-in model and print a summary; "
                                   "optionally Monte Carlo estimates of observables "
                                   "(--observable) and a histogram (--histogram) of the "
                                   "final state.")
    r.add_argument("--model", choices=sorted(_MODELS), default="ou", help=_MODEL_HELP)
    r.add_argument("--theta", type=float, default=1.0, help="ou: mean-reversion rate")
    r.add_argument("--mu", type=float, default=0.05, help="gbm: drift rate")
    r.add_argument("--sigma", type=float, default=0.5,
                   help="noise level of every model (ou, bm, gbm), >= 0")
    r.add_argument("--dim", type=int, default=1, help="number of independent components")
    r.add_argument("--x0", type=float, default=1.0, help="initial value of every component")
    r.add_argument("--t0", type=float, default=0.0, help="initial time")
    r.add_argument("--t1", type=float, default=1.0, help="final time")
    r.add_argument("--steps", type=int, default=1000, help="number of time steps")
    r.add_argument("--paths", type=int, default=100_000, help="number of paths")
    r.add_argument("--method", choices=sorted(METHODS), default=None,
                   help="scheme (default: euler_maruyama, the SDE default)")
    r.add_argument("--increments", choices=INCREMENTS, default="gaussian",
                   help="random increments: gaussian (Wiener), three_point (weak order 2 "
                        "methods) or two_point (weak order 1 methods); discrete ones give "
                        "expectations only")
    r.add_argument("--seed", type=int, default=0, help="random seed, >= 0")
    r.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="floating-point type of the paths")
    r.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="auto: cuda when a usable GPU is present, else cpu")
    r.add_argument("--save-at", type=int, default=None, metavar="K",
                   help="keep K + 1 evenly spaced times, K divides --steps (default: the "
                        "final time only)")
    r.add_argument("--stats", action="store_true", help="in-kernel mean/var at save times")
    r.add_argument("--observable", action="append", default=None, metavar="NAME=EXPR",
                   help="estimate E[EXPR] at the final time, EXPR a Python expression in "
                        "t, x[i] (state) and p[j] (the model's parameters, see --model), "
                        "with numbers, arithmetic, comparisons and math functions, e.g. "
                        "call='max(x[0] - 1, 0)' or sq='x[0]**2'; repeatable (default: "
                        "none)")
    r.add_argument("--histogram", default=None, metavar="BINS:LO:HI",
                   help="count each component at the final time in BINS equal bins on "
                        "[LO, HI], plus those below and above (default: none)")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.add_argument("--dask", metavar="ADDRESS", default=None,
                   help="run on Dask: 'local' (a local cluster, one worker process per "
                        "core) or a scheduler address tcp://HOST:PORT; keeps statistics, "
                        "not paths (default: no Dask)")
    r.add_argument("--paths-per-task", type=int, default=None,
                   help="with --dask: paths per task, rounded up to the 512-path chunk grid "
                        "(default: chosen from the cluster's size)")
    r.set_defaults(func=run)
    return ap


def main(argv=None):
    """Run the ``fastsde`` command; returns its exit status (2 for a bad argument).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``fastsde``; default ``sys.argv[1:]``.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, ImportError, OSError, FastSDEError) as exc:
        # One line: a compiler's multi-line diagnosis is cut to its first line.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if args.command == "run" and not isinstance(exc, CLIError):
            first = cli_names(first)
        print(f"fastsde {args.command}: error: {first}", file=sys.stderr)
        return 2


def program():
    """The ``fastsde`` program (its console script and ``python -m fastsde``): :func:`main`
    on ``sys.argv``, then the process's exit. Returns the exit status."""
    status = main()
    # Nothing is left to collect in a process that is ending, but Python's exit collects
    # anyway, walking every object Numba's compiler made: 0.1 s of a 1 s demo. Frozen
    # objects are skipped (gc.freeze). Not in main, which tests call in-process.
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(program())
