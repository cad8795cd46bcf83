#!/usr/bin/env python
"""fastsde on a GPU: the CUDA tests for real, then throughput against the usual peers.

One invocation, from the working tree, needs nothing beyond numba, numba-cuda and numpy
(CuPy, JAX with diffrax and PyTorch are measured when importable, otherwise skipped with a
line saying so)::

    PYTHONPATH=. python bench/gpu.py            # on a machine with an NVIDIA GPU
    PYTHONPATH=. python bench/gpu.py --dry-run  # every section at toy sizes on the CUDA
                                                # simulator (checks the script, no timings)

Sections (each timed after a warm-up run, median of ``--repeats`` runs):

* tests: ``pytest -m cuda tests/test_cuda.py`` on the real device (no simulator);
* OU Euler-Maruyama (theta = 1, sigma = 0.5, x0 = 0, t in [0, 1]) at 10^7 and 10^8 paths
  x 1000 steps, float32 and float64, final state only and statistics only: the kernels
  alone between CUDA events, and ``fs.simulate`` end to end (host copies included); also
  float32 with fast-math, which is not the default;
* the RNG-only ceiling: the same kernel with the scheme replaced by x += dW;
* a CuPy vectorised Euler-Maruyama loop, a jax.lax.scan loop, diffrax (Euler, an
  UnsafeBrownianPath, vmapped over paths) and a PyTorch loop, all on the GPU;
* the reductions alone: the statistics kernel (per-chunk Welford, float32 and float64
  values) and the histogram kernel (100 bins) over a device buffer of saved values
  (10^7 paths x 1 save time, and 10^6 paths x 100 save times), beside a device-to-device
  copy of the same buffer (one read and one write of it: the memory-bound floor);
* the DiffEqGPU.jl configuration: 3-dimensional GBM dX = 1.5 X dt + 0.01 X dW, x0 = 0.1,
  t in [0, 1], 8,388,608 paths, 256 steps, float32, final state only (716 ms in their
  paper's data).

The table is printed and written to bench/results/gpu-<gpu name>-<date>.md.
"""

import argparse
import datetime
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: numba.cuda, bound in main() once NUMBA_ENABLE_CUDASIM is settled. Kernels must see it as
#: a module global: the simulator swaps that binding for its per-thread fake module.
cuda = None

#: DiffEqGPU.jl's published time for the GBM configuration (EnsembleGPUKernel, GPUEM).
DIFFEQGPU_MS = 716.0
THETA, SIGMA = 1.0, 0.5

FULL = dict(ou_paths=(10**7, 10**8), ou_steps=1000, peer_paths=10**7, peer_steps=1000,
            diffrax_paths=10**6, gbm_paths=8_388_608, gbm_steps=256,
            reduction_shapes=((10**7, 1), (10**6, 100)))
DRY = dict(ou_paths=(40,), ou_steps=6, peer_paths=64, peer_steps=6, diffrax_paths=16,
           gbm_paths=40, gbm_steps=6, reduction_shapes=((1100, 1), (600, 3)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Run fastsde's CUDA tests on the GPU, then time fastsde against the "
                    "RNG-only ceiling, CuPy, JAX (lax.scan and diffrax), PyTorch and the "
                    "DiffEqGPU.jl GBM configuration; writes a markdown table to "
                    "bench/results/gpu-<gpu>-<date>.md.")
    p.add_argument("--dry-run", action="store_true",
                   help="run every section at toy sizes on the CUDA simulator "
                        "(NUMBA_ENABLE_CUDASIM=1) to check the script; timings meaningless, "
                        "nothing written unless --out is given")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed runs per measurement after one warm-up run (default 5)")
    p.add_argument("--skip-tests", action="store_true", help="do not run pytest -m cuda")
    p.add_argument("--only", default="",
                   help="comma-separated sections to run: tests,ou,rng,cupy,jax,diffrax,"
                        "torch,diffeqgpu,reductions (default: all)")
    p.add_argument("--max-paths", type=float, default=None,
                   help="cap every path count (e.g. 1e7 on a small GPU)")
    p.add_argument("--out", default=None,
                   help="output markdown file (default bench/results/gpu-<gpu>-<date>.md)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1; got {args.repeats}")
    return args


# --- timing --------------------------------------------------------------------------

class Timings:
    """Median, min and max seconds of the timed runs."""

    def __init__(self, seconds):
        self.seconds = list(seconds)
        self.median = statistics.median(self.seconds)
        self.min = min(self.seconds)
        self.max = max(self.seconds)


def time_numba(fn, repeats, simulator):
    """Time ``fn`` (which launches kernels) with CUDA events after one warm-up call."""
    from numba import cuda

    fn()
    cuda.synchronize()
    out = []
    for _ in range(repeats):
        if simulator:  # the simulator's events record no time
            t = time.perf_counter()
            fn()
            cuda.synchronize()
            out.append(time.perf_counter() - t)
            continue
        start, end = cuda.event(), cuda.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        out.append(cuda.event_elapsed_time(start, end) / 1e3)
    return Timings(out)


def time_synced(fn, sync, repeats):
    """Time ``fn`` with a wall clock between device synchronisations, after a warm-up."""
    fn()
    sync()
    out = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return Timings(out)


def ou_check(x, n_steps):
    """Whether the final states of OU Euler-Maruyama from x0 = 0 over [0, 1] look right:
    the sample variance against the scheme's exact variance
    sigma^2 h (1 - a^(2n)) / (1 - a^2), a = 1 - theta h, with its standard error
    var sqrt(2 / (n - 1)) (normal samples). A peer or kernel returning wrong numbers fast
    is flagged in the table instead of being credited."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64).reshape(-1)
    h = 1.0 / n_steps
    a = 1.0 - THETA * h
    exact = SIGMA**2 * h * (1.0 - a ** (2 * n_steps)) / (1.0 - a * a)
    var = float(np.var(x, ddof=1))
    se = exact * math.sqrt(2.0 / (x.size - 1))
    z = (var - exact) / se
    verdict = "ok" if abs(z) < 5 and np.all(np.isfinite(x)) else "WRONG"
    return f"var {var:.5g} vs {exact:.5g} ({z:+.1f} SE): {verdict}"


def gbm_check(x, n_steps, mu=1.5, x0=0.1):
    """The sample mean of each component against the scheme's exact mean
    x0 (1 + mu h)^n (Euler-Maruyama on GBM), within 5 standard errors."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    exact = x0 * (1.0 + mu / n_steps) ** n_steps
    mean = x.mean(axis=0)
    se = x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])
    z = float(np.max(np.abs(mean - exact) / se))
    verdict = "ok" if z < 5 and np.all(np.isfinite(x)) else "WRONG"
    return f"mean {mean.mean():.6g} vs {exact:.6g} (max {z:.1f} SE): {verdict}"


def brownian_check(x):
    """RNG-only kernel from x0 = 0 over [0, 1]: the state is the sum of the increments,
    a Brownian motion at t = 1, variance 1."""
    import numpy as np

    v = np.asarray(x, dtype=np.float64).reshape(-1)
    var = float(np.var(v, ddof=1))
    z = (var - 1.0) / math.sqrt(2.0 / (v.size - 1))
    return f"var {var:.5g} vs 1 ({z:+.1f} SE): {'ok' if abs(z) < 5 else 'WRONG'}"


# --- fastsde -------------------------------------------------------------------------

def fastsde_kernel(model, dtype, rng_only=False, fastmath=None):
    """fastsde's compiled CUDA kernels for Euler-Maruyama on ``model``; ``fastmath``
    overrides the backend's choice for this dtype (kernels are cached per setting)."""
    import numpy as np

    from fastsde import methods
    from fastsde.kernels import cuda as kc

    dtype = np.dtype(dtype).type
    saved = kc.FASTMATH[dtype]
    if fastmath is not None:
        kc.FASTMATH[dtype] = bool(fastmath)
    try:
        return kc.get_kernel(model, methods.METHODS["euler_maruyama"], dtype,
                             rng_only=rng_only)
    finally:
        kc.FASTMATH[dtype] = saved


def fastsde_launcher(model, dtype, n_paths, n_steps, stats, x0=0.0, rng_only=False,
                     fastmath=None):
    """A closure launching fastsde's kernels on preallocated device arrays, as
    ``fastsde.kernels.cuda.run`` does (same ``launch``), without host transfers; and a
    function that copies the final states back (for the result check)."""
    import numpy as np

    from fastsde import api
    from fastsde.kernels import cuda as kc
    from fastsde.streams import key_from_seed

    dim = model.dim
    kernel = fastsde_kernel(model, dtype, rng_only, fastmath)
    chunk = api.CHUNK_PATHS
    n_chunks = -(-n_paths // chunk)
    key0, key1 = key_from_seed(0)
    d_rows = cuda.to_device(np.full((1, dim), x0, dtype))
    zeros = cuda.to_device(np.zeros(dim, dtype))
    d_params = cuda.to_device(model.params.reshape(1, -1).astype(dtype))
    d_save_steps = cuda.to_device(np.array([n_steps], np.int64))
    d_x = cuda.device_array((n_paths, dim), dtype)
    d_save = cuda.device_array((1, n_paths, dim) if stats else (0, 0, dim), dtype)
    d_bad = cuda.to_device(np.zeros(n_chunks, np.int64))
    reductions = []
    if stats:
        shape = (n_chunks, 1, dim)
        d_stats = (cuda.device_array(shape, np.int64), cuda.device_array(shape, np.float64),
                   cuda.device_array(shape, np.float64))
        reductions.append(("stats", kernel.stats, d_save, 1, 0, d_stats))
    h = 1.0 / n_steps
    args = (d_rows, 0, zeros, zeros, d_params, 0.0, h, 1.0, n_steps, d_save_steps, key0,
            key1, np.uint64(0), chunk, 0, d_x, d_save,
            cuda.device_array((0, 0, 1), dtype), cuda.device_array(0, np.float64), d_bad)

    def go():
        kc.launch(kernel, args, reductions)

    return go, d_x.copy_to_host


# --- peers ---------------------------------------------------------------------------

def cupy_em(n_paths, n_steps, dtype_name):
    import cupy as cp

    dtype = cp.dtype(dtype_name)
    h = 1.0 / n_steps
    a, b = dtype.type(-THETA * h), dtype.type(SIGMA * math.sqrt(h))
    gen = cp.random.default_rng(0)
    x = cp.zeros(n_paths, dtype)

    def go():
        x.fill(0)
        for _ in range(n_steps):
            z = gen.standard_normal(n_paths, dtype=dtype)
            x[...] += a * x + b * z

    return go, cp.cuda.Device().synchronize, lambda: cp.asnumpy(x)


def jax_scan_em(n_paths, n_steps, dtype_name):
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(dtype_name)
    h = 1.0 / n_steps
    a, b = -THETA * h, SIGMA * math.sqrt(h)

    @jax.jit
    def em(key):
        def body(carry, _):
            x, key = carry
            key, sub = jax.random.split(key)
            z = jax.random.normal(sub, (n_paths,), dtype)
            return (x + a * x + b * z, key), None

        (x, _), _ = jax.lax.scan(body, (jnp.zeros(n_paths, dtype), key), None,
                                 length=n_steps)
        return x

    key = jax.random.PRNGKey(0)
    state = {}

    def go():
        state["x"] = em(key)

    def sync():
        if "x" in state:
            state["x"].block_until_ready()

    return go, sync, lambda: jax.device_get(state["x"])


def diffrax_em(n_paths, n_steps, dtype_name):
    import diffrax
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(dtype_name)
    h = 1.0 / n_steps

    # UnsafeBrownianPath (one normal per step, no tree) needs forward-mode adjoints.
    adjoint = getattr(diffrax, "ForwardMode", diffrax.DirectAdjoint)()

    def one(key):
        bm = diffrax.UnsafeBrownianPath(shape=(), key=key)
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, args: -THETA * y),
            diffrax.ControlTerm(lambda t, y, args: jnp.asarray(SIGMA, dtype), bm))
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, 1.0, dt0=h,
                                  y0=jnp.zeros((), dtype), saveat=diffrax.SaveAt(t1=True),
                                  max_steps=n_steps + 2, adjoint=adjoint)
        return sol.ys[-1]

    solve = jax.jit(jax.vmap(one))
    keys = jax.random.split(jax.random.PRNGKey(0), n_paths)
    state = {}

    def go():
        state["x"] = solve(keys)

    def sync():
        if "x" in state:
            state["x"].block_until_ready()

    return go, sync, lambda: jax.device_get(state["x"])


def torch_em(n_paths, n_steps, dtype_name):
    import torch

    # The CPU only stands in for a dry run on a machine without a GPU (row says "on cpu").
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, dtype_name)
    h = 1.0 / n_steps
    a, b = -THETA * h, SIGMA * math.sqrt(h)
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    x = torch.zeros(n_paths, device=device, dtype=dtype)
    z = torch.empty_like(x)

    def go():
        x.zero_()
        for _ in range(n_steps):
            z.normal_(generator=gen)
            x.add_(a * x + b * z)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return go, sync, lambda: x.cpu().numpy()


# --- the run -------------------------------------------------------------------------

class Report:
    def __init__(self):
        self.rows = []
        self.notes = []

    def add(self, section, what, dtype, paths, steps, t, note=""):
        ps = paths * steps / t.median if t.median > 0 else float("nan")
        self.rows.append(dict(section=section, what=what, dtype=dtype, paths=paths,
                              steps=steps, median_ms=t.median * 1e3, min_ms=t.min * 1e3,
                              max_ms=t.max * 1e3, rate=ps, note=note))
        print(f"  {section:10s} {what:46s} {dtype:8s} {paths:>11,d} x {steps:<5d} "
              f"median {t.median * 1e3:10.2f} ms  {ps:10.3e} path-steps/s {note}",
              flush=True)
        return ps

    def note(self, text):
        self.notes.append(text)
        print(f"  - {text}", flush=True)

    def markdown(self, header):
        lines = [header, "",
                 "| section | what | dtype | paths | steps | median ms | min ms | max ms | "
                 "path-steps/s | note |",
                 "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for r in self.rows:
            lines.append(f"| {r['section']} | {r['what']} | {r['dtype']} | {r['paths']:,} | "
                         f"{r['steps']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | "
                         f"{r['max_ms']:.2f} | {r['rate']:.3e} | {r['note']} |")
        if self.notes:
            lines += ["", "Notes:", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def run_tests(report, dry_run):
    """The cuda-marked tests on this machine's device (the simulator in a dry run)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
           os.path.join(ROOT, "tests", "test_cuda.py")]
    if dry_run:
        cmd += ["-k", "known_answers or launch_arguments"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if not dry_run:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    summary = (out.stdout.strip().splitlines() or ["(no output)"])[-1]
    status = "passed" if out.returncode == 0 else f"FAILED (exit {out.returncode})"
    report.note(f"`pytest -m cuda tests/test_cuda.py`"
                f"{' (dry run: a subset, on the simulator)' if dry_run else ''}: {status}: "
                f"{summary} ({time.perf_counter() - t:.0f} s)")
    if out.returncode != 0:
        print(out.stdout[-4000:] + out.stderr[-2000:], flush=True)
    return out.returncode == 0


def section_ou(report, sizes, repeats, sim):
    import numpy as np

    import fastsde as fs

    model = fs.OU(theta=THETA, sigma=SIGMA)
    steps = sizes["ou_steps"]
    rates = {}
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        for paths in sizes["ou_paths"]:
            for stats in (False, True):
                what = "OU EM kernels, " + ("stats only" if stats else "final state")
                go, fetch = fastsde_launcher(model, dtype, paths, steps, stats)
                t = time_numba(go, repeats, sim)
                rates[(name, paths, stats)] = report.add("fastsde", what, name, paths, steps,
                                                         t, ou_check(fetch(), steps))
            if dtype == np.float32:
                go, fetch = fastsde_launcher(model, dtype, paths, steps, False,
                                             fastmath=True)
                t = time_numba(go, repeats, sim)
                report.add("fastsde", "OU EM kernels, final state, fastmath", name, paths,
                           steps, t, ou_check(fetch(), steps) + "; not the default "
                           "(bits differ from the CPU's)")
            for stats in (False, True):
                def sim_run(stats=stats):
                    fs.simulate(model, 0.0, (0.0, 1.0), steps, paths, device="cuda",
                                dtype=name, stats=stats, progress=False)
                t = time_synced(sim_run, lambda: None, repeats)
                what = "OU EM fs.simulate end to end, " + ("stats=True" if stats
                                                           else "final state")
                report.add("fastsde", what, name, paths, steps, t,
                           "host copies of x (and stats) included")
    return rates


def section_rng(report, sizes, repeats, sim, ou_rates):
    import numpy as np

    import fastsde as fs

    model = fs.OU(theta=THETA, sigma=SIGMA)
    steps = sizes["ou_steps"]
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        for paths in sizes["ou_paths"]:
            go, fetch = fastsde_launcher(model, dtype, paths, steps, False, rng_only=True)
            t = time_numba(go, repeats, sim)
            rate = report.add("ceiling", "RNG only (same kernel, x += dW, no scheme)", name,
                              paths, steps, t, brownian_check(fetch()))
            ou = ou_rates.get((name, paths, False)) if ou_rates else None
            if ou and not sim:
                report.note(f"{name}, {paths:,} paths: OU EM final-state kernel at "
                            f"{ou / rate:.0%} of the RNG-only ceiling")


def section_peer(report, label, factory, paths, steps, repeats, dtypes=("float32",)):
    for name in dtypes:
        try:
            go, sync, fetch = factory(paths, steps, name)
            t = time_synced(go, sync, repeats)
            check = ou_check(fetch(), steps)
            if label.startswith(("jax", "diffrax")):
                import jax

                check = f"on {jax.devices()[0].platform}; " + check
            elif label.startswith("PyTorch"):
                import torch

                check = f"on {'cuda' if torch.cuda.is_available() else 'cpu'}; " + check
        except ImportError as exc:
            report.note(f"{label}: skipped ({exc.name or exc} is not installed)")
            return None
        except Exception as exc:  # noqa: BLE001 - a peer failing must not stop the run
            report.note(f"{label} {name}: failed: {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:300]}")
            traceback.print_exc()
            continue
        report.add("peer", label, name, paths, steps, t, check)


def section_diffeqgpu(report, sizes, repeats, sim):
    import numpy as np

    import fastsde as fs

    model = fs.GBM(mu=1.5, sigma=0.01, dim=3)
    paths, steps = sizes["gbm_paths"], sizes["gbm_steps"]
    go, fetch = fastsde_launcher(model, np.float32, paths, steps, stats=False, x0=0.1)
    def versus(t):
        return "dry run" if sim else f"{DIFFEQGPU_MS / (t.median * 1e3):.1f}x faster than 716 ms"

    t = time_numba(go, repeats, sim)
    report.add("DiffEqGPU", "GBM 3-dim EM kernel (their 716 ms)", "float32", paths, steps, t,
               versus(t) + "; " + gbm_check(fetch(), steps))
    go, fetch = fastsde_launcher(model, np.float32, paths, steps, stats=False, x0=0.1,
                                 fastmath=True)
    t = time_numba(go, repeats, sim)
    report.add("DiffEqGPU", "GBM 3-dim EM kernel, fastmath (not the default)", "float32",
               paths, steps, t, versus(t) + "; " + gbm_check(fetch(), steps))

    def sim_run():
        fs.simulate(model, 0.1, (0.0, 1.0), steps, paths, device="cuda", dtype="float32",
                    progress=False)
    t = time_synced(sim_run, lambda: None, repeats)
    report.add("DiffEqGPU", "GBM 3-dim fs.simulate end to end", "float32", paths, steps, t,
               versus(t) + ", x copied back")


def section_reductions(report, sizes, repeats, sim):
    """The statistics and histogram kernels alone over a filled device buffer of saved
    values, and a device copy of that buffer for scale. Each result is checked: the
    chunks' Welford means merged on the host against numpy's mean of the same values,
    and the histogram's total count against the number of values."""
    import numpy as np

    from fastsde import api
    from fastsde.kernels import cuda as kc

    rng = np.random.default_rng(0)
    chunk = api.CHUNK_PATHS
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        stats = kc._stats_dispatcher(dtype)
        # The part of a CudaKernel the reductions' launch reads: the dispatchers of the
        # dtype and the blocks that fill the device.
        kernel = kc.CudaKernel(None, None, dtype, None, stats)
        for paths, n_save in sizes["reduction_shapes"]:
            host = rng.standard_normal((n_save, paths, 1)).astype(dtype)
            d_buf = cuda.to_device(host)
            d_copy = cuda.device_array_like(d_buf)
            n_chunks = -(-paths // chunk)
            shape = (n_chunks, n_save, 1)
            out = (cuda.device_array(shape, np.int64), cuda.device_array(shape, np.float64),
                   cuda.device_array(shape, np.float64))
            edges = np.linspace(-4.0, 4.0, 101).reshape(1, -1)
            d_edges = cuda.to_device(edges)
            d_hist = cuda.to_device(np.zeros((n_save, 1, 102), np.int64))
            values = paths * n_save

            def copy():
                d_copy.copy_to_device(d_buf)

            def run_stats():
                kc.launch_reductions(kernel, chunk, [("stats", stats, d_buf, 1, 0, out)])

            def run_hist():
                kc.launch_reductions(kernel, chunk, [("hist", d_buf, d_edges, d_hist)])

            t_copy = time_numba(copy, repeats, sim)
            report.add("reductions", f"device copy of the buffer ({n_save} saves)", name,
                       values, 1, t_copy, "memory-bound floor; rate = values/s")
            t = time_numba(run_stats, repeats, sim)
            count, mean = out[0].copy_to_host(), out[1].copy_to_host()
            merged = float((count * mean).sum() / count.sum())
            exact = float(host.astype(np.float64).mean())
            ok = int(count.sum()) == values and abs(merged - exact) <= 1e-9 * (1 + abs(exact))
            report.add("reductions", f"statistics kernel ({n_save} saves)", name, values, 1,
                       t, f"{t.median / t_copy.median:.1f}x the copy; merged mean "
                          f"{'ok' if ok else 'WRONG'} ({merged:.3e} vs {exact:.3e})")
            d_hist.copy_to_device(np.zeros((n_save, 1, 102), np.int64))
            t = time_numba(run_hist, repeats, sim)
            total = int(d_hist.copy_to_host().sum())
            runs = repeats + 1  # the histogram adds up over the warm-up and timed runs
            ok = total == values * runs
            report.add("reductions", f"histogram kernel, 100 bins ({n_save} saves)", name,
                       values, 1, t, f"{t.median / t_copy.median:.1f}x the copy; counts "
                                     f"{'ok' if ok else 'WRONG'}")


def gpu_name(sim):
    if sim:
        return "simulator"
    from numba import cuda

    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        # Before numba is imported: the simulator cannot be switched on later.
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    sys.path.insert(0, ROOT)
    sizes = dict(DRY if args.dry_run else FULL)
    if args.max_paths:
        cap = int(args.max_paths)
        sizes = {k: (tuple(min(p, cap) for p in v) if isinstance(v, tuple) else
                     (min(v, cap) if k.endswith("paths") else v)) for k, v in sizes.items()}
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    want = (lambda s: not only or s in only)

    import numba
    import numba.cuda

    global cuda
    cuda = numba.cuda
    from fastsde.kernels import cuda_available

    ok, why = cuda_available()
    if not ok:
        print(f"CUDA is not usable here: {why}\n(use --dry-run for the simulator)",
              file=sys.stderr)
        return 2
    from fastsde.kernels import cuda as kc

    sim = kc.simulator_enabled()
    report = Report()
    name = gpu_name(sim)
    print(f"device: {name}; numba {numba.__version__}; repeats {args.repeats}", flush=True)

    if want("tests") and not args.skip_tests:
        run_tests(report, args.dry_run)
    ou_rates = section_ou(report, sizes, args.repeats, sim) if want("ou") else None
    if want("rng"):
        section_rng(report, sizes, args.repeats, sim, ou_rates)
    peer_paths, peer_steps = sizes["peer_paths"], sizes["peer_steps"]
    if want("cupy"):
        section_peer(report, "CuPy vectorised EM loop", cupy_em, peer_paths, peer_steps,
                     args.repeats, ("float32", "float64"))
    if want("jax"):
        section_peer(report, "jax.lax.scan EM loop (jit)", jax_scan_em, peer_paths,
                     peer_steps, args.repeats)
    if want("diffrax"):
        section_peer(report, "diffrax Euler, UnsafeBrownianPath, vmap", diffrax_em,
                     sizes["diffrax_paths"], peer_steps, args.repeats)
    if want("torch"):
        section_peer(report, "PyTorch EM loop", torch_em, peer_paths, peer_steps,
                     args.repeats, ("float32", "float64"))
    if want("diffeqgpu"):
        section_diffeqgpu(report, sizes, args.repeats, sim)
    if want("reductions"):
        section_reductions(report, sizes, args.repeats, sim)

    date = datetime.date.today().isoformat()
    header = (f"# fastsde GPU benchmark: {name}, {date}\n\n"
              f"{'DRY RUN on the CUDA simulator: timings are meaningless.' if sim else ''}\n"
              f"Command: `PYTHONPATH=. python bench/gpu.py "
              f"{' '.join(argv if argv is not None else sys.argv[1:])}`; "
              f"numba {numba.__version__}, Python {platform.python_version()}; "
              f"OU: theta={THETA}, sigma={SIGMA}, x0=0, t in [0, 1]. Kernel rows are timed "
              f"with CUDA events, others with synchronised wall clocks; median of "
              f"{args.repeats} runs after a warm-up.")
    text = report.markdown(header)
    print()
    print(text)
    out = args.out
    if out is None and not args.dry_run:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
        out = os.path.join(ROOT, "bench", "results", f"gpu-{slug}-{date}.md")
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text)
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
