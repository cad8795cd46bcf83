"""CPU benchmark runner: fastsde against its RNG ceiling, numpy, Numba, torch and JAX peers.

    python bench/run.py [--paths 1000000] [--peer-paths 100000] [--quick] [--no-scaling]

Everything is measured in one process on one problem, side by side:

    OU  dX = -theta X dt + sigma dW,  theta = 1, sigma = 0.5, X0 = 1, t in [0, 1],
    1000 Euler-Maruyama steps, final state only, float32 and float64.

Engines: fastsde; fastsde's RNG-only ceiling (the same kernel with the state update
replaced by adding the increments); a vectorised numpy loop; a naive Numba kernel with
``np.random`` inside ``prange``; and, where installed, a plain torch loop, torchsde, a
``jax.lax.scan`` loop and diffrax. The peers run ``--peer-paths`` paths (torchsde and
diffrax a tenth of that): throughput is per path-step, so the figures compare, and the
table gives each size.
Each timing is the best of ``--repeat`` runs after a warm-up run (compilation excluded).

Also: scaling (10^4 to 10^7 paths, 1 and 2 threads, dimension 1, 3, 10, Heun on an
additive-noise problem) and cold start (a fresh interpreter to its first result, with an
empty and with a filled Numba disk cache).

Writes ``bench/results/cpu-<date>.md`` and ``bench/results/cpu-<date>.png`` (a bar chart,
when matplotlib is installed), and prints the markdown.
"""

import argparse
import datetime
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import numba  # noqa: E402

import fastsde as fs  # noqa: E402
from ou_vs_numpy import numpy_em  # noqa: E402
from common import cpu_description  # noqa: E402

THETA, SIGMA, X0, T1, STEPS = 1.0, 0.5, 1.0, 1.0, 1000
EXACT_MEAN = X0 * math.exp(-THETA * T1)
EXACT_VAR = SIGMA**2 / (2 * THETA) * (1 - math.exp(-2 * THETA * T1))


def best_of(fn, repeat):
    fn()  # warm-up: compilation, caches, page faults
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def best_of_interleaved(fns, repeat):
    """Best time of each function over ``repeat`` rounds, the functions alternating within a
    round: a change of machine speed during the run then hits all of them alike, so their
    ratios stay fair. Returns (times, last outputs), in the order of ``fns``."""
    for fn in fns:
        fn()  # warm-up: compilation, caches, page faults
    best = [float("inf")] * len(fns)
    outs = [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best, outs


def with_threads(fn, threads):
    """``fn`` run on ``threads`` Numba threads (the previous count restored after)."""
    def run():
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            return fn()
        finally:
            numba.set_num_threads(previous)
    return run


def decay_drift(t, x, p, out):
    out[0] = -p[0] * x[0]


# ---------------------------------------------------------------- engines
def engine_fastsde(n, dtype, rng_only=False, model=None, method=None, x0=X0):
    model = model or fs.OU(theta=THETA, sigma=SIGMA)

    def run():
        return fs.api._simulate(model, x0, (0.0, T1), STEPS, n, method=method, dtype=dtype,
                           device="cpu", progress=False, rng_only=rng_only).x[:, 0]
    return run


def engine_numpy(n, dtype):
    return lambda: numpy_em(n, STEPS, dtype)


def _make_naive_numba():
    @numba.njit(parallel=True)
    def naive(n, n_steps, h, theta, sigma, x0, out):
        sq = math.sqrt(h)
        for i in numba.prange(n):
            x = x0
            for _ in range(n_steps):
                x = x - theta * x * h + sigma * sq * np.random.standard_normal()
            out[i] = x
    return naive


_NAIVE = None


def engine_naive_numba(n, dtype):
    global _NAIVE
    if _NAIVE is None:
        _NAIVE = _make_naive_numba()
    out = np.empty(n, dtype)
    d = np.dtype(dtype).type

    def run():
        _NAIVE(n, STEPS, d(T1 / STEPS), d(THETA), d(SIGMA), d(X0), out)
        return out
    return run


def engine_torch_loop(n, dtype):
    import torch

    tdtype = getattr(torch, dtype)
    h = T1 / STEPS
    gen = torch.Generator().manual_seed(0)

    def run():
        with torch.no_grad():
            x = torch.full((n,), X0, dtype=tdtype)
            z = torch.empty(n, dtype=tdtype)
            for _ in range(STEPS):
                z.normal_(generator=gen)
                x.mul_(1 - THETA * h).add_(z, alpha=SIGMA * math.sqrt(h))
        return x.numpy()
    return run


def engine_torchsde(n, dtype):
    import torch
    import torchsde

    tdtype = getattr(torch, dtype)

    class OU(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return -THETA * y

        def g(self, t, y):
            return torch.full_like(y, SIGMA)

    sde = OU()
    ts = torch.tensor([0.0, T1], dtype=tdtype)

    def run():
        with torch.no_grad():
            y0 = torch.full((n, 1), X0, dtype=tdtype)
            ys = torchsde.sdeint(sde, y0, ts, method="euler", dt=T1 / STEPS)
        return ys[-1, :, 0].numpy()
    return run


def _jax_setup(dtype):
    import jax

    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    return jax


def engine_jax_scan(n, dtype):
    jax = _jax_setup(dtype)
    jnp = jax.numpy
    h = T1 / STEPS
    jdtype = getattr(jnp, dtype)

    @jax.jit
    def solve(key):
        def body(carry, _):
            x, key = carry
            key, sub = jax.random.split(key)
            z = jax.random.normal(sub, (n,), dtype=jdtype)
            return (x - THETA * x * h + SIGMA * math.sqrt(h) * z, key), None
        (x, _), _ = jax.lax.scan(body, (jnp.full((n,), X0, jdtype), key), None, length=STEPS)
        return x

    key = jax.random.PRNGKey(0)
    return lambda: np.asarray(solve(key).block_until_ready())


def engine_diffrax(n, dtype):
    jax = _jax_setup(dtype)
    import diffrax

    jnp = jax.numpy
    jdtype = getattr(jnp, dtype)
    drift = diffrax.ODETerm(lambda t, y, args: -THETA * y)

    @jax.jit
    def solve(keys):
        def one(key):
            bm = diffrax.UnsafeBrownianPath(shape=(), key=key, levy_area=diffrax.BrownianIncrement)
            terms = diffrax.MultiTerm(drift, diffrax.ControlTerm(lambda t, y, a: SIGMA, bm))
            sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, T1, dt0=T1 / STEPS,
                                      y0=jnp.asarray(X0, jdtype), max_steps=STEPS + 1,
                                      saveat=diffrax.SaveAt(t1=True),
                                      adjoint=diffrax.ForwardMode())
            return sol.ys[-1]
        return jax.vmap(one)(keys)

    keys = jax.random.split(jax.random.PRNGKey(0), n)
    return lambda: np.asarray(solve(keys).block_until_ready())


# (name, engine, module needed, fraction of --peer-paths it runs: the slowest peers run
# fewer paths so that the runner finishes in minutes; throughput is per path-step).
PEERS = [("naive Numba (np.random in prange)", engine_naive_numba, None, 1.0),
         ("torch loop", engine_torch_loop, "torch", 1.0),
         ("torchsde", engine_torchsde, "torchsde", 0.1),
         ("jax.lax.scan loop", engine_jax_scan, "jax", 1.0),
         ("diffrax", engine_diffrax, "diffrax", 0.1)]


def installed(module):
    if module is None:
        return True
    try:
        __import__(module)
        return True
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return False


# ---------------------------------------------------------------- sections
def main_table(args, lines, chart):
    lines += ["## OU Euler-Maruyama, 1000 steps, final state only", "",
              "| dtype | engine | paths | path-steps/s | ns/path-step | x numpy | "
              "of RNG ceiling | mean X_1 (exact %.5f) | var X_1 (exact %.5f) |"
              % (EXACT_MEAN, EXACT_VAR),
              "|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for dtype in ("float32", "float64"):
        rows = []
        n = args.paths
        (t_np, t_ceil, t_fs), (x_np, _, x_fs) = best_of_interleaved(
            [engine_numpy(n, dtype), engine_fastsde(n, dtype, rng_only=True),
             engine_fastsde(n, dtype)], args.repeat)
        rate_np = n * STEPS / t_np
        rate_ceil = n * STEPS / t_ceil
        rows.append(("fastsde", n, n * STEPS / t_fs, x_fs))
        rows.append(("fastsde RNG-only ceiling", n, rate_ceil, None))
        rows.append(("numpy (vectorised)", n, rate_np, x_np))
        for name, make, module, fraction in PEERS:
            if not installed(module):
                if dtype == "float32":
                    skipped.append(f"- {name}: skipped, `{module}` is not installed "
                                   f"(see bench/README.md)")
                continue
            m = max(100, int(args.peer_paths * fraction))
            try:
                t, x = best_of(make(m, dtype), max(1, args.repeat - 1))
            except Exception as exc:  # noqa: BLE001 - report, do not hide
                skipped.append(f"- {name} ({dtype}): failed: {type(exc).__name__}: {exc}")
                continue
            rows.append((name, m, m * STEPS / t, x))
        for name, m, rate, x in rows:
            mean = f"{np.mean(x, dtype=np.float64):.5f}" if x is not None else "-"
            var = f"{np.var(x, dtype=np.float64):.5f}" if x is not None else "-"
            lines.append(f"| {dtype} | {name} | {m:.0e} | {rate:.3e} | {1e9 / rate:.2f} | "
                         f"{rate / rate_np:.1f} | {rate / rate_ceil:.0%} | {mean} | {var} |")
            chart.append((f"{name} {dtype}", rate))
    se_mean = math.sqrt(EXACT_VAR / args.paths)
    lines += ["", f"Standard error of the mean at {args.paths:.0e} paths: {se_mean:.1e}; "
              f"of the variance: {EXACT_VAR * math.sqrt(2 / args.paths):.1e}. "
              f"(Euler-Maruyama's own bias on the variance at h = 1e-3 is about "
              f"{EXACT_VAR * 1e-3:.0e}.)", ""]
    lines += skipped + [""] if skipped else []


def scaling(args, lines):
    lines += ["## Scaling (float32 unless noted, best of %d)" % args.repeat, "",
              "| case | threads | paths | path-steps/s |", "|---|---|---|---|"]
    max_threads = numba.config.NUMBA_NUM_THREADS
    sizes = [10**4, 10**5, 10**6, 10**7] if not args.quick else [10**3, 10**4]
    thread_counts = sorted({1, min(2, max_threads)})
    speedups = []
    for n in sizes:
        # 1 and 2 threads alternate, so that their ratio is measured side by side.
        times, _ = best_of_interleaved(
            [with_threads(engine_fastsde(n, "float32"), threads) for threads in thread_counts],
            args.repeat if n < 10**7 else 2)
        for threads, t in zip(thread_counts, times):
            lines.append(f"| OU dim 1 | {threads} | {n:.0e} | {n * STEPS / t:.3e} |")
        speedups.append(f"{n:.0e} paths: {times[0] / times[-1]:.2f}x")
    numba.set_num_threads(max_threads)
    n = sizes[-2] if not args.quick else sizes[-1]
    for dim in (1, 3, 10):
        model = fs.OU(theta=THETA, sigma=SIGMA, dim=dim)
        t, _ = best_of(engine_fastsde(n, "float32", model=model, x0=np.ones(dim)), args.repeat)
        lines.append(f"| OU dim {dim} (isotropic), per path-step | {max_threads} | {n:.0e} | "
                     f"{n * STEPS / t:.3e} |")
    model = fs.OU(theta=THETA, sigma=SIGMA)
    t, _ = best_of(engine_fastsde(n, "float32", model=model, method="heun"), args.repeat)
    lines.append(f"| OU (additive noise), stochastic Heun | {max_threads} | {n:.0e} | "
                 f"{n * STEPS / t:.3e} |")
    # No noise: what the time loop, the step and the freeze of non-finite paths cost alone.
    model = fs.ODE(decay_drift, 1, params=(THETA,), name="decay")
    t, _ = best_of(engine_fastsde(n, "float32", model=model, method="euler"), args.repeat)
    lines.append(f"| ODE dx/dt = -x, Euler (no random numbers) | {max_threads} | {n:.0e} | "
                 f"{n * STEPS / t:.3e} |")
    lines += ["", f"{thread_counts[-1]} threads / 1 thread (interleaved runs): "
              + ", ".join(speedups) + ".", ""]


COLD = ("import time; t = time.perf_counter(); import fastsde as fs; "
        "r = fs.simulate(fs.OU(1.0, 0.5), 1.0, (0.0, 1.0), 1000, 1000, device='cpu', "
        "dtype='float32', progress=False); print(time.perf_counter() - t)")


def cold_start(lines):
    lines += ["## Cold start (fresh interpreter: import, compile or load, 1000 x 1000 OU)", ""]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        times = []
        for label in ("first run (empty Numba cache)", "second run (disk cache)"):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", COLD], env=env, capture_output=True,
                                 text=True, cwd=os.path.join(HERE, ".."), check=True)
            wall = time.perf_counter() - start
            times.append(f"- {label}: {wall:.2f} s wall for the process, "
                         f"{float(out.stdout.strip()):.2f} s from `import fastsde` to the "
                         f"result")
        lines += times + [""]


def write_chart(chart, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [c[0] for c in chart]
    rates = [c[1] for c in chart]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(chart) + 1.5))
    colors = ["tab:red" if n.startswith("fastsde") else "tab:gray" for n in names]
    ax.barh(names[::-1], rates[::-1], color=colors[::-1])
    ax.set_xscale("log")
    ax.set_xlabel("path-steps per second (log scale)")
    ax.set_title("OU Euler-Maruyama, 1000 steps, final state only (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=1_000_000)
    ap.add_argument("--peer-paths", type=int, default=100_000,
                    help="paths for torch/torchsde/jax/diffrax (slow or memory-hungry)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the runner")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--no-cold-start", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    if args.quick:
        args.paths, args.peer_paths, args.repeat = 20_000, 2_000, 1
    date = datetime.date.today().isoformat()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"# fastsde CPU benchmark, {date}", "",
             f"`python bench/run.py{' --quick' if args.quick else ''}` on "
             f"{cpu_description()}, {os.cpu_count()} CPUs, "
             f"Numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads), "
             f"numpy {np.__version__}, fastsde {fs.__version__} (RNG_VERSION "
             f"{fs.RNG_VERSION}); 1-minute load average at start {load:.2f}.", ""]
    chart = []
    main_table(args, lines, chart)
    if not args.no_scaling:
        scaling(args, lines)
    if not args.no_cold_start:
        cold_start(lines)
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"cpu-{date}{'-quick' if args.quick else ''}")
    with open(stem + ".md", "w") as fh:
        fh.write(text + "\n")
    if write_chart(chart, stem + ".png"):
        print(f"\nwrote {stem}.md and {stem}.png")


if __name__ == "__main__":
    main()
