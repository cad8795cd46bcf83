#!/usr/bin/env python
"""Time to first result: a new model's first answer, in a fresh process, Numba cache empty.

Each measurement runs in its own Python process with its own empty ``NUMBA_CACHE_DIR``,
from before ``import fastsde`` to the first result (1000 paths x 100 steps of the README's
damped oscillator, ``fs.SDE`` dim 2 with diagonal noise), beside a naive
``@numba.njit(parallel=True)`` kernel of the same model (``np.random`` normals in a
``prange`` loop, the user's drift and diffusion as ``njit`` functions): what a user who
writes the loop by hand waits before the first answer. The runs of fastsde and of the
naive kernel alternate; each row is the best of ``--repeats``.

fastsde rows also give the share of the time that Numba spends compiling (its
``numba:compile`` events) and, of that, holding the LLVM lock (``numba:llvm_lock``:
optimisation and machine code); the rest is Numba's front end (typing, lowering). On the
GPU the compiling column adds the time numba-cuda holds its own compiler lock
(``numba-cuda:compiler_lock`` events: typing, lowering, NVVM), and the LLVM column is
left empty (numba-cuda fires no event for NVVM alone).

Variants that compile a new kernel (float32, the stochastic Heun method (the same model
declared with additive noise, which it has), observables with statistics, ``stop_when``,
and the oscillator made a pendulum, ``-sin(x)`` for ``-x``, with math="fastsde" (kmath's
sin inlined) and math="libm", and a drift whose loop's count is read from p, which
runs through its lane form) are each timed as a first result in a fresh process with an
empty cache. The "next model" row is the user's usual case: another model (the oscillator with a cubic drift term) run
in a fresh process after the first model ran with the same cache, so that what every
kernel shares (the RNG's lane loops, the launcher, the save point) comes from the cache
and only the model's own code compiles; the "next model of 3 components" row does the same
with a model of another state width. ``fastsde demo`` is timed too (first run with an
empty cache, then a second run that reads it). The "same model again" row runs the first
model a second time in the cache it filled: a user's rerun of an unchanged script.

fastsde is byte-compiled first (``compileall``, as ``pip install`` does), so every run
reads its bytecode as an installed copy's runs do.

``--device cuda`` runs fastsde's rows on the GPU (``device="cuda"``) beside a naive
``numba.cuda.jit`` kernel of the same model (one thread per path, the user's functions as
device functions, ``numba.cuda.random``'s xoroshiro128p normals)::

    python bench/first_result.py                 # best of 3, writes bench/results/
    python bench/first_result.py --repeats 1 --only naive,base --out /tmp/x.md
    python bench/first_result.py --device cuda --only naive,base,float32,new_model,rerun

The table is printed and written to ``bench/results/first-result-<date>.md``.
"""

import argparse
import ast
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def _example_functions(path, names):
    """The source of the functions ``names`` defined in the script ``path`` (read, not
    imported: the example runs a simulation when imported)."""
    with open(path) as f:
        text = f.read()
    found = {node.name: ast.get_source_segment(text, node)
             for node in ast.parse(text).body if isinstance(node, ast.FunctionDef)}
    return "\n\n\n".join(found[name] for name in names) + "\n"


#: The README's damped oscillator, from examples/damped_oscillator.py.
MODEL_SOURCE = "\n" + _example_functions(
    os.path.join(ROOT, "examples", "damped_oscillator.py"), ("drift", "diffusion"))

#: Shared by the children: wall-clock union of Numba's compile and LLVM-lock events.
TIMING_SOURCE = """
import time
_T0 = time.perf_counter()
from numba.core import event as _event


class _Spans(_event.Listener):
    def __init__(self):
        self.depth = 0
        self.start = 0.0
        self.total = 0.0

    def on_start(self, ev):
        if self.depth == 0:
            self.start = time.perf_counter()
        self.depth += 1

    def on_end(self, ev):
        self.depth -= 1
        if self.depth == 0:
            self.total += time.perf_counter() - self.start


_compile, _llvm = _Spans(), _Spans()
_event.register("numba:compile", _compile)
_event.register("numba:llvm_lock", _llvm)
import os as _os
if _os.environ.get("FASTSDE_BENCH_DEVICE") == "cuda":
    # numba-cuda compiles with its own copy of Numba's core and its own events; 0.30
    # fires no "numba-cuda:compile", but holds its compiler lock while it compiles.
    from numba.cuda.core import event as _cuda_event

    class _CudaSpans(_cuda_event.Listener):
        def on_start(self, ev):
            _compile.on_start(ev)

        def on_end(self, ev):
            _compile.on_end(ev)

    _cuda_event.register("numba-cuda:compiler_lock", _CudaSpans())
"""

FASTSDE_CHILD = TIMING_SOURCE + """
import json
import numpy as np
import fastsde as fs
_T_IMPORT = time.perf_counter() - _T0
""" + MODEL_SOURCE + """
osc = fs.SDE(drift, diffusion, dim=2, noise="diagonal", params=(1.0, 0.1, 0.3),
             name="oscillator")
kw = dict(x0=[1.0, 0.0], t_span=(0.0, 10.0), n_steps=100, n_paths=1000, seed=0,
          progress=False, device={device!r})
VARIANT = {variant!r}
if VARIANT == "float32":
    kw["dtype"] = "float32"
elif VARIANT == "heun":
    # Stochastic Heun needs additive noise; the oscillator's noise is additive.
    osc = fs.SDE(drift, diffusion, dim=2, noise="additive", params=(1.0, 0.1, 0.3),
                 name="oscillator")
    kw["method"] = "heun"
elif VARIANT == "observables":
    def energy(t, x, p):
        return 0.5 * (x[1] * x[1] + p[0] * x[0] * x[0])
    kw.update(observables={{"energy": energy}}, stats=True)
elif VARIANT == "stop_when":
    def far(t, x, p):
        return abs(x[0]) - 3.0
    kw["stop_when"] = far
elif VARIANT in ("pendulum", "pendulum_libm"):
    # The oscillator made a pendulum: math.sin in the drift, compiled as fastsde.kmath's
    # sin (the default math="fastsde") or as libm's call.
    import math

    def pendulum(t, x, p, out):
        out[0] = x[1]
        out[1] = -p[0] * math.sin(x[0]) - p[1] * x[1]
    osc = fs.SDE(pendulum, diffusion, dim=2, noise="diagonal", params=(1.0, 0.1, 0.3),
                 name="pendulum", math="libm" if VARIANT == "pendulum_libm" else "fastsde")
    from fastsde.kernels import unroll
    assert unroll.lowers_math(pendulum), "math.sin is not compiled as kmath's"
elif VARIANT == "lane_form":
    # A drift with a loop whose count is read from p (extra cubic springs): the kernel
    # compiles the drift's lane form (fastsde/kernels/lanes.py).
    def springs(t, x, p, out):
        out[0] = x[1]
        force = -p[0] * x[0] - p[1] * x[1]
        for k in range(3, p.shape[0]):
            force -= p[k] * x[0] * x[0] * x[0]
        out[1] = force
    osc = fs.SDE(springs, diffusion, dim=2, noise="diagonal",
                 params=(1.0, 0.1, 0.3, 0.05, 0.02), name="springs")
    assert osc.lane_block is not None, "the drift has no lane form"
elif VARIANT == "rerun":
    pass  # the first model again, run after "base" in the same cache folder
elif VARIANT == "new_model":
    # The user's next model: the oscillator made a Duffing oscillator. Run after "base"
    # in the same cache folder, so what fastsde shares between models is cached.
    def duffing(t, x, p, out):
        out[0] = x[1]
        out[1] = -p[0] * x[0] - p[1] * x[1] - 0.1 * x[0] * x[0] * x[0]
    osc = fs.SDE(duffing, diffusion, dim=2, noise="diagonal", params=(1.0, 0.1, 0.3),
                 name="duffing")
elif VARIANT == "new_width":
    # A next model of another state width: the oscillator with a third, relaxing
    # component that feeds its velocity. Run after "base" in the same cache folder.
    def relaxed(t, x, p, out):
        out[0] = x[1]
        out[1] = -p[0] * x[0] - p[1] * x[1] + 0.1 * x[2]
        out[2] = x[0] - x[2]

    def diffusion3(t, x, p, out):
        out[0] = 0.0
        out[1] = p[2]
        out[2] = 0.1
    osc = fs.SDE(relaxed, diffusion3, dim=3, noise="diagonal", params=(1.0, 0.1, 0.3),
                 name="relaxed oscillator")
    kw["x0"] = [1.0, 0.0, 0.5]
res = fs.simulate(osc, **kw)
assert np.all(np.isfinite(res.x)), "the first result is not finite"
print(json.dumps(dict(total=time.perf_counter() - _T0, import_s=_T_IMPORT,
                      compile_s=_compile.total, llvm_s=_llvm.total)))
"""

NAIVE_CHILD = TIMING_SOURCE + """
import json
import numba
import numpy as np
from numba import njit, prange
""" + MODEL_SOURCE + """
drift_j = njit(drift)
diffusion_j = njit(diffusion)


@njit(parallel=True)
def simulate(x0, p, t0, t1, n_steps, n_paths, seed):
    h = (t1 - t0) / n_steps
    sqrt_h = np.sqrt(h)
    x_out = np.empty((n_paths, 2))
    for i in prange(n_paths):
        np.random.seed(seed + i)
        x = x0.copy()
        f = np.empty(2)
        g = np.empty(2)
        for k in range(n_steps):
            t = t0 + k * h
            drift_j(t, x, p, f)
            diffusion_j(t, x, p, g)
            for j in range(2):
                x[j] = x[j] + f[j] * h + g[j] * sqrt_h * np.random.standard_normal()
        x_out[i] = x
    return x_out


x = simulate(np.array([1.0, 0.0]), np.array([1.0, 0.1, 0.3]), 0.0, 10.0, 100, 1000, 0)
assert np.all(np.isfinite(x))
print(json.dumps(dict(total=time.perf_counter() - _T0, import_s=0.0,
                      compile_s=_compile.total, llvm_s=_llvm.total)))
"""

NAIVE_CUDA_CHILD = TIMING_SOURCE + """
import json
import math
import numpy as np
from numba import cuda, float64
from numba.cuda.random import create_xoroshiro128p_states, xoroshiro128p_normal_float64
""" + MODEL_SOURCE + """
drift_d = cuda.jit(device=True)(drift)
diffusion_d = cuda.jit(device=True)(diffusion)


@cuda.jit
def kernel(x0, p, t0, t1, n_steps, states, x_out):
    i = cuda.grid(1)
    if i >= x_out.shape[0]:
        return
    h = (t1 - t0) / n_steps
    sqrt_h = math.sqrt(h)
    x = cuda.local.array(2, float64)
    f = cuda.local.array(2, float64)
    g = cuda.local.array(2, float64)
    for j in range(2):
        x[j] = x0[j]
    for k in range(n_steps):
        t = t0 + k * h
        drift_d(t, x, p, f)
        diffusion_d(t, x, p, g)
        for j in range(2):
            x[j] = x[j] + f[j] * h + g[j] * sqrt_h * xoroshiro128p_normal_float64(states, i)
    for j in range(2):
        x_out[i, j] = x[j]


n_paths = 1000
states = create_xoroshiro128p_states(n_paths, seed=0)
x_out = cuda.device_array((n_paths, 2))
kernel[(n_paths + 127) // 128, 128](np.array([1.0, 0.0]), np.array([1.0, 0.1, 0.3]), 0.0,
                                    10.0, 100, states, x_out)
x = x_out.copy_to_host()
assert np.all(np.isfinite(x))
print(json.dumps(dict(total=time.perf_counter() - _T0, import_s=0.0,
                      compile_s=_compile.total, llvm_s=_llvm.total)))
"""

VARIANTS = ("base", "float32", "heun", "observables", "stop_when", "pendulum",
            "pendulum_libm", "lane_form", "new_model", "new_width", "rerun")
#: Rows measured in a cache folder that "base" filled first (their own run is timed).
AFTER_BASE = ("new_model", "new_width", "rerun")
ROW_NAMES = {"new_model": "fastsde, the next model (cache holds the first's)",
             "new_width": "fastsde, a next model of 3 components (cache holds the first's)",
             "rerun": "fastsde, the same model again (cache holds it)",
             "pendulum": "fastsde, a pendulum (math.sin as kmath's sin)",
             "pendulum_libm": "fastsde, the pendulum with math=\"libm\"",
             "lane_form": "fastsde, a drift whose loop count is read from p (lane form)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="runs per row; best kept (3)")
    p.add_argument("--only", default="",
                   help="comma-separated rows: naive," + ",".join(VARIANTS) + ",demo "
                        "(default: all)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where fastsde runs; the naive kernel is then a numba.cuda kernel "
                        "(xoroshiro128p normals, one thread per path) (cpu)")
    p.add_argument("--out", default=None,
                   help="markdown output (default bench/results/first-result-<date>.md)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1; got {args.repeats}")
    return args


def run_child(source, cache_dir, device="cpu"):
    """Run ``source`` in a fresh interpreter with ``cache_dir`` as Numba's cache; the
    last line of its output is a JSON dict of seconds."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, FASTSDE_BENCH_DEVICE=device,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # A script file, not ``python -c``: the kernel reads the model's source (to unroll
    # its loops, compile math as kmath's, build a lane form), which ``-c`` code lacks.
    with tempfile.NamedTemporaryFile("w", suffix=".py", dir=cache_dir, delete=False) as f:
        f.write(source)
    out = subprocess.run([sys.executable, f.name], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_demo(cache_dir, plot=False):
    """Wall seconds of ``fastsde demo`` (its default sizes) with ``cache_dir``: with
    ``--no-plot``, or with its figure (written into ``cache_dir``) when ``plot``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    flags = ["--png", os.path.join(cache_dir, "demo.png")] if plot else ["--no-plot"]
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "fastsde", "demo"] + flags,
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"fastsde demo failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t


#: The demo's rows: (key in the results, with its figure, label).
DEMO_ROWS = (("demo", False, "`fastsde demo --no-plot`"),
             ("demo_plot", True, "`fastsde demo` (README's, with its figure)"))


def _has_matplotlib():
    import importlib.util
    return importlib.util.find_spec("matplotlib") is not None


def fresh(fn):
    d = tempfile.mkdtemp(prefix="fastsde-first-")
    try:
        return fn(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _gpu_name():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip().splitlines()[0]
    except Exception:  # the name is only a label in the table
        return "unnamed"


def byte_compile_fastsde():
    """Byte-compile the checkout's fastsde (its ``__pycache__`` folders), as ``pip install``
    does for an installed copy: every run then reads its bytecode, as a user's runs do.
    Without it, under PYTHONDONTWRITEBYTECODE (set on some machines) each child compiled
    fastsde's sources again, about 0.09 s of every row (stop 44: `python -v` listed all
    30 of fastsde's modules compiled from source in a second demo run)."""
    import compileall

    if not compileall.compile_dir(os.path.join(ROOT, "fastsde"), quiet=1):
        raise RuntimeError("compileall could not byte-compile fastsde")


def main(argv=None):
    args = parse_args(argv)
    byte_compile_fastsde()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    want = (lambda s: not only or s in only)
    rows = [v for v in VARIANTS if want(v)]
    best = {}
    for r in range(args.repeats):
        # Alternate: naive, then each fastsde row, so slow drifts of the machine's speed
        # hit both sides alike.
        if want("naive"):
            naive_source = NAIVE_CUDA_CHILD if args.device == "cuda" else NAIVE_CHILD
            res = fresh(lambda d: run_child(naive_source, d, args.device))
            print(f"  run {r + 1}: naive kernel {res['total']:.2f} s", flush=True)
            if "naive" not in best or res["total"] < best["naive"]["total"]:
                best["naive"] = res
        for v in rows:
            def measure(d, v=v):
                if v in AFTER_BASE:
                    run_child(FASTSDE_CHILD.format(variant="base", device=args.device), d,
                              args.device)
                return run_child(FASTSDE_CHILD.format(variant=v, device=args.device), d,
                                 args.device)
            res = fresh(measure)
            print(f"  run {r + 1}: fastsde {v} {res['total']:.2f} s (compile "
                  f"{res['compile_s']:.2f} s, LLVM {res['llvm_s']:.2f} s)", flush=True)
            if v not in best or res["total"] < best[v]["total"]:
                best[v] = res
        for key, plot, label in DEMO_ROWS:
            if not want("demo") or (plot and not _has_matplotlib()):
                continue
            first, second = fresh(lambda d, plot=plot: (run_demo(d, plot), run_demo(d, plot)))
            print(f"  run {r + 1}: {label}: first {first:.2f} s, second {second:.2f} s",
                  flush=True)
            old = best.get(key, (first, second))
            best[key] = (min(first, old[0]), min(second, old[1]))

    naive = best.get("naive", {}).get("total")
    date = datetime.date.today().isoformat()
    where = "the CPU" if args.device == "cpu" else "the GPU (" + _gpu_name() + ")"

    def llvm_cell(row):  # numba-cuda reports no LLVM/NVVM time of its own
        return f"{row['llvm_s']:.2f}" if args.device == "cpu" else "-"

    naive_name = ("naive `njit(parallel=True)` kernel" if args.device == "cpu" else
                  "naive `numba.cuda.jit` kernel (xoroshiro128p normals)")
    lines = [f"# Time to first result, {date}", "",
             f"Command: `python bench/first_result.py {' '.join(argv or sys.argv[1:])}`; "
             f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}; fresh process and empty Numba cache per run, "
             f"best of {args.repeats}, fastsde and the naive kernel alternating, both on "
             f"{where}. Model: the "
             f"README's damped oscillator (dim 2, diagonal noise), 1000 paths x 100 steps, "
             f"float64 Euler-Maruyama unless the row says otherwise. The next model: "
             f"the oscillator with a cubic term added to its drift, run after the first "
             f"model in the same Numba cache (what every model shares is cached); a next "
             f"model of 3 components: the oscillator with a third, relaxing component, "
             f"likewise; the same "
             f"model again: the first model run a second time in the same cache.", "",
             "| what | first result s | import s | compiling s | of which LLVM s | "
             "vs naive kernel |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    if naive is not None:
        n = best["naive"]
        lines.append(f"| {naive_name} | {n['total']:.2f} | - | "
                     f"{n['compile_s']:.2f} | {llvm_cell(n)} | 1.00x |")
    for v in rows:
        b = best[v]
        ratio = f"{b['total'] / naive:.2f}x" if naive else "-"
        what = ROW_NAMES.get(v, "fastsde" + ("" if v == "base" else f", {v}"))
        lines.append(f"| {what} | {b['total']:.2f} | {b['import_s']:.2f} | "
                     f"{b['compile_s']:.2f} | {llvm_cell(b)} | {ratio} |")
    for key, _, label in DEMO_ROWS:
        if key in best:
            for run, seconds in zip(("first run (empty cache)", "second run (cache filled)"),
                                    best[key]):
                lines.append(f"| {label}, {run} | {seconds:.2f} | - | - | - | - |")
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    out = args.out or os.path.join(ROOT, "bench", "results", f"first-result-{date}.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
