"""Regression tests for the contract's holes found by trying the documented API as a new
user would (each failed, or crashed the interpreter, on the code before the fix)."""

import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastsde as fs
from fastsde.kernels import layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_python(code, timeout=600):
    """Run ``code`` in a fresh interpreter (a crash there is a failed assertion here)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}"
                                  f"\nstderr:\n{proc.stderr[-3000:]}")
    return proc.stdout


# --- 1. parameters given to a model declared without them ---------------------------

SNIPPET = """
import numpy as np
import fastsde as fs

def f(t, x, p, out): out[0] = -p[0] * x[0]
def g(t, x, p, out): out[0] = p[1]
m = fs.SDE(f, g, dim=1, noise="additive")              # no params declared
P = np.column_stack([np.repeat([0.5, 1.0, 2.0], 20000), np.ones(60000)])
"""


def test_issue_snippet_gives_the_stationary_variances():
    """The issue's snippet (it aborted the interpreter): per-path params on a model
    declared without params give sigma^2 / (2 theta) per block, within 5 SE plus the
    Euler-Maruyama bias (the EM chain's stationary variance is sigma^2 / (2 theta -
    theta^2 h))."""
    out = _run_python(SNIPPET + """
r = fs.simulate(m, x0=0.0, t_span=(0, 20), n_steps=2000, n_paths=60000, params=P, seed=1,
                device="cpu", progress=False)
for k, theta in enumerate([0.5, 1.0, 2.0]):
    x = r.x[20000 * k:20000 * (k + 1), 0]
    print(theta, x.var(ddof=1), len(x))
""")
    h = 20 / 2000
    for line in out.split("\n"):
        if not line.strip():
            continue
        theta, var, n = map(float, line.split())
        exact = 1.0 / (2 * theta)
        em_bias = 1.0 / (2 * theta - theta ** 2 * h) - exact
        se = exact * np.sqrt(2.0 / (n - 1))  # SE of a Gaussian sample variance
        assert abs(var - exact) < 5 * se + abs(em_bias), (
            f"theta={theta}: variance {var:.5f}, exact {exact:.5f}, 5 SE = {5 * se:.5f}, "
            f"EM bias {em_bias:.5f}")


def test_undeclared_params_give_the_bits_of_declared_params():
    out = _run_python(SNIPPET + """
declared = fs.SDE(f, g, dim=1, noise="additive", params=(1.0, 1.0))
for params in (P[:3000], np.array([0.8, 0.6])):
    kw = dict(x0=0.0, t_span=(0, 2), n_steps=50, n_paths=3000, params=params, seed=3,
              device="cpu", progress=False, observables={"sq": lambda t, x, p: x[0] * p[1]},
              stop_when=lambda t, x, p: x[0] - 1.0 * p[1], save_at=5, stats=True)
    a = fs.simulate(m, **kw)
    b = fs.simulate(declared, **kw)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.hit_time, b.hit_time)
    assert np.array_equal(a.obs_mean, b.obs_mean) and np.array_equal(a.mean, b.mean)
    print("same")
""")
    assert out.split() == ["same", "same"]


def test_a_declared_width_still_refuses_another_width(ou):
    with pytest.raises(ValueError, match=r"params must have shape \(2,\)"):
        fs.simulate(ou, 0.0, (0, 1), 10, 10, params=np.ones(3), device="cpu")
    with pytest.raises(ValueError, match=r"params must have shape \(2,\)"):
        fs.simulate(ou, 0.0, (0, 1), 10, 10, params=np.ones((10, 1)), device="cpu")


def test_kernel_refuses_arguments_of_another_width(linear_flow):
    """The guard in front of compiled code: an argument list built with another
    parameter width than the kernel's is refused before the call."""
    from fastsde import methods
    from fastsde.kernels import cpu

    kernel = cpu.get_kernel(linear_flow, methods.METHODS["heun"], np.float64, n_params=1)
    args = layout.empty_args(layout.kernel_sizes(1, 3, 0), np.float64)
    with pytest.raises(AssertionError, match="params has width 3, the request 1"):
        cpu.run(kernel, args)


# --- 2. large states -----------------------------------------------------------------

def test_large_states_run_with_scratch_on_the_heap():
    """dim 1500 with general 1500 x 1500 noise and dim 300000 diagonal segfaulted (the
    per-path scratch was on the stack); now the scratch goes to the heap past a size."""
    out = _run_python("""
import numpy as np
import fastsde as fs

def drift(t, x, p, out):
    for i in range(x.shape[0]):
        out[i] = -x[i]

def general(t, x, p, out):
    for i in range(out.shape[0]):
        out[i, i] = 1.0

def diagonal(t, x, p, out):
    for i in range(out.shape[0]):
        out[i] = 1.0

for model in (fs.SDE(drift, general, dim=1500, noise="general", noise_dim=1500),
              fs.SDE(drift, diagonal, dim=300000, noise="diagonal")):
    r = fs.simulate(model, 0.0, (0, 1), 2, 4, device="cpu", progress=False, seed=0)
    # Two steps of Euler-Maruyama from 0 with h = 1/2: x = 0.5 dW1 + dW2, variance 3/4.
    v = r.x.var()
    assert r.n_nonfinite == 0 and 0.5 < v < 1.0, v
    print(r.x.shape)
""")
    assert "(4, 1500)" in out and "(4, 300000)" in out


def test_cuda_refuses_a_state_beyond_thread_local_memory():
    from fastsde.kernels import cpu, cuda

    sz = layout.kernel_sizes(300000, 0, 0, 300000, (300000,))
    with pytest.raises(ValueError, match=r"dim=300000 .* local memory per thread"):
        cuda.check_scratch(sz, np.float64)
    cuda.check_scratch(layout.kernel_sizes(3, 2, 1, 3, (3,)), np.float64)
    assert not cpu.scratch_on_stack(sz, np.float64)
    assert cpu.scratch_on_stack(layout.kernel_sizes(3, 2, 1, 3, (3,)), np.float64)


# --- 3. histogram bins: numpy's rule ----------------------------------------------------

def _numpy_slots(values, edges):
    """Slots as the kernel numbers them, from numpy.histogram on the same edges."""
    bins = len(edges) - 1
    counts = np.zeros(bins + 2, np.int64)
    counts[1:-1] = np.histogram(values, bins=edges)[0]
    counts[0] = np.sum(values < edges[0])
    counts[-1] = np.sum(values > edges[-1])
    return counts


def test_hist_slot_follows_numpy_on_edges_of_random_ranges():
    rng = np.random.default_rng(7)
    mismatches = 0
    for _ in range(2000):
        lo = rng.uniform(-10, 10)
        hi = lo + 10 ** rng.uniform(-6, 3)
        bins = int(rng.integers(1, 200))
        edges = np.linspace(lo, hi, bins + 1).reshape(1, -1)
        values = np.concatenate([edges[0], np.nextafter(edges[0], np.inf),
                                 np.nextafter(edges[0], -np.inf),
                                 rng.uniform(lo - 1, hi + 1, 20)])
        ours = np.zeros(bins + 2, np.int64)
        for v in values:
            ours[layout.hist_slot(float(v), edges, 0, bins)] += 1
        mismatches += not np.array_equal(ours, _numpy_slots(values, edges[0]))
    assert mismatches == 0, f"{mismatches} of 2000 ranges differ from numpy.histogram"


def test_kernel_histogram_equals_numpy_with_states_on_the_edges():
    bm = fs.BrownianMotion(sigma=0.0)
    r = fs.simulate(bm, 0.3, (0, 1), 2, 64, device="cpu", progress=False,
                    histogram=dict(bins=50, range=(0.0, 0.3)))
    assert r.histogram.counts[-1, 0, -1] == 64 and r.histogram.above[-1, 0] == 0
    rng = np.random.default_rng(11)
    for trial in range(3):
        lo = rng.uniform(-1, 1)
        hi = lo + rng.uniform(1e-3, 3)
        edges = np.linspace(lo, hi, 38)
        x0 = np.concatenate([edges, np.nextafter(edges, np.inf),
                             rng.uniform(lo - 0.5, hi + 0.5, 100)])
        res = fs.simulate(bm, x0, (0, 1), 1, x0.size, device="cpu", progress=False,
                          histogram=dict(bins=37, range=(lo, hi)))
        assert np.array_equal(res.histogram.edges[0], edges)
        expected = _numpy_slots(res.x[:, 0], edges)
        got = np.concatenate([[res.histogram.below[-1, 0]], res.histogram.counts[-1, 0],
                              [res.histogram.above[-1, 0]]])
        assert np.array_equal(got, expected), (trial, got - expected)


# --- 4. arguments that used to pass the gate -------------------------------------------

def _ok_drift(t, x, p, out):
    out[0] = -x[0]


def _ok_diffusion(t, x, p, out):
    out[0] = 1.0


GATE_MODEL = fs.SDE(_ok_drift, _ok_diffusion, 1, params=(1.0,))
GOOD = dict(x0=0.0, t_span=(0.0, 1.0), n_steps=10, n_paths=100, device="cpu")


@pytest.mark.parametrize("changes,exc,words", [
    (dict(t_span="05"), ValueError, "t_span"),
    (dict(t_span=("0", "5")), ValueError, "t_span"),
    (dict(t_span=b"05"), ValueError, "t_span"),
    (dict(t_span=(-1e308, 1e308)), ValueError, "t_span"),
    (dict(x0=1e39, dtype="float32"), ValueError, "x0 must be representable in dtype=float32"),
    (dict(x0=fs.Normal(1e39, 1.0), dtype="float32"), ValueError, "fs.Normal mean"),
    (dict(params=[1e39], dtype="float32"), ValueError,
     "params must be representable in dtype=float32"),
    (dict(progress="no"), TypeError, "progress must be True or False; got 'no'"),
    (dict(histogram=dict(bins=5, range=(-1e308, 1e308))), ValueError, "histogram"),
    (dict(histogram=dict(bins=100, range=(1.0, 1.0 + 1e-15))), ValueError,
     "edges that are not finite and strictly increasing"),
])
def test_the_gate_refuses(changes, exc, words):
    with pytest.raises(exc, match=words.replace("(", r"\(").replace(")", r"\)")):
        fs.simulate(GATE_MODEL, **dict(GOOD, **changes))


def test_float32_accepts_values_that_fit(ou):
    r = fs.simulate(ou, 3e38, (0, 1e-3), 1, 2, device="cpu", dtype="float32",
                    params=[1.0, 0.5], progress=False)
    assert np.isfinite(r.x).all()


# --- 5. messages ------------------------------------------------------------------------

def _bad_observable(t, x, p):
    # In bounds at t0 (the Python pre-flight passes), out of bounds later in the kernel.
    return x[3] if t > 0.25 else x[0]


def _general_drift(t, x, p, out):
    out[0] = -x[0]
    out[1] = -x[1]


def _general_diffusion(t, x, p, out):
    out[0, 0] = 1.0
    out[1, 1] = 1.0


def test_debug_message_names_every_function_with_its_shapes():
    model = fs.SDE(_general_drift, _general_diffusion, 2, noise="general", noise_dim=3)
    with pytest.raises(fs.ModelError) as info:
        fs.simulate(model, 0.0, (0, 1), 2, 4, device="cpu", debug=True, progress=False,
                    observables={"bad": _bad_observable})
    text = str(info.value)
    assert "observables['bad'] '_bad_observable'" in text
    assert "out (2, 3)" in text and "x (2,)" in text and "p (0,)" in text


def test_nonfinite_message_gives_a_percentage():
    # x' = x^2 (tests/test_contract.py's model: its kernel is shared) blows up from 1.
    from test_contract import blowup_drift

    model = fs.ODE(blowup_drift, dim=1)
    with pytest.warns(RuntimeWarning, match=r"4 of 4 paths \(100%\) left the finite"):
        fs.simulate(model, 1.0, (0, 3), 3000, 4, method="euler", device="cpu",
                    on_nonfinite="warn", progress=False)


def test_simulate_signature_has_no_private_argument():
    params = inspect.signature(fs.simulate).parameters
    assert not [name for name in params if name.startswith("_")]
    assert "_rng_only" not in (fs.simulate.__doc__ or "")


# --- 6. kernels loaded from the disk cache run their own code -------------------------

def _assert_each_runs_its_own_code(code, first, second, tmp_path):
    """Run ``code`` (``python -c``; it prints "<name> <result>" for each name in its
    arguments) on ``first`` and on ``second`` alone, each compiling and caching its kernel,
    then on both in either order, both loaded from the cache: every result the same."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def run(*names):
        proc = subprocess.run([sys.executable, "-c", code, *names], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return dict(line.split() for line in proc.stdout.split("\n") if line.strip())

    alone = {**run(first), **run(second)}
    assert run(second, first) == alone
    assert run(first, second) == alone


def test_two_cached_kernels_loaded_in_one_process_each_run_their_own_code(tmp_path):
    """Kernels compiled in two processes and loaded from the disk cache into a third
    each give their own result (they shared symbol names, and the second loaded ran the
    first's code: a GBM mean of 0.953 instead of 1.053, silently)."""
    code = """
import sys
import fastsde as fs
for name in sys.argv[1:]:
    model = fs.OU(1.0, 0.5) if name == "ou" else fs.GBM(0.05, 0.2)
    r = fs.simulate(model, 1.0, (0, 1), 50, 1024, seed=1, device="cpu", progress=False)
    print(name, r.x.mean().hex())
"""
    _assert_each_runs_its_own_code(code, "ou", "gbm", tmp_path)


def test_two_models_of_one_frame_each_run_their_own_code(tmp_path):
    """Two drifts of one shape share their kernels' frame (cpu._framed_kernel): each
    kernel, merged in one process from the frame and its own step or loaded from the
    cache beside the other, gives its own result (the frame's symbols are made local to
    each kernel, so one kernel's code never stands in for the other's)."""
    code = """
import sys
import fastsde as fs
def pull(t, x, p, out):
    out[0] = -x[0]
def push(t, x, p, out):
    out[0] = 0.5 - 2.0 * x[0]
def noise(t, x, p, out):
    out[0] = 0.5
for name in sys.argv[1:]:
    model = fs.SDE(pull if name == "pull" else push, noise, dim=1, noise="additive")
    r = fs.simulate(model, 1.0, (0, 1), 50, 1024, seed=1, device="cpu", progress=False)
    print(name, r.x.mean().hex())
"""
    _assert_each_runs_its_own_code(code, "pull", "push", tmp_path)
    # Both merged in one process, from a frame lowered there (an empty cache).
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "fresh"),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code, "pull", "push"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    both = dict(line.split() for line in proc.stdout.split("\n") if line.strip())
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-c", code, "pull"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    alone = dict(line.split() for line in proc.stdout.split("\n") if line.strip())
    assert both["pull"] == alone["pull"] and both["push"] != both["pull"], (both, alone)


def test_two_cached_networks_loaded_in_one_process_each_run_their_own_code(tmp_path):
    """The same for two MLPFields, whose kernels call a lane-block forward pass compiled
    as a function of its own: a 3-4-4-2 tanh network's kernel loaded from the cache after
    a 3-4-2 relu network's kernel was made in the process called the relu network's
    forward pass (other final states, silently; NaN for other widths)."""
    code = """
import sys
import numpy as np
import fastsde as fs
for spec in sys.argv[1:]:
    widths, act = spec.split(":")
    field = fs.mlp.random_mlp([int(w) for w in widths.split("-")], act)
    r = fs.simulate(field.ode(), np.zeros(2), (0.0, 1.0), 4, 256, method="euler",
                    device="cpu", dtype="float32", seed=1, progress=False)
    print(spec, r.x[:, 0].astype(np.float64).sum().hex())
"""
    _assert_each_runs_its_own_code(code, "3-4-4-2:tanh", "3-4-2:relu", tmp_path)


# --- 7. out starts at zero --------------------------------------------------------------

def _sparse_drift(t, x, p, out):
    out[1] = -x[1]              # out[0] left unwritten: zero


def _sparse_general(t, x, p, out):
    out[0, 0] = 0.5             # every other entry left unwritten: zero


def test_entries_a_function_leaves_unwritten_are_zero():
    """out starts at zero on every call (it was uninitialised scratch: a sparse
    general-noise matrix picked up garbage, NaN on one machine)."""
    model = fs.SDE(_sparse_drift, _sparse_general, 2, noise="general", noise_dim=3)
    r = fs.simulate(model, [1.0, 1.0], (0, 1), 20, 4000, device="cpu", progress=False,
                    seed=5, stats=True)
    assert np.all(np.isfinite(r.x))
    # x0 gets only 0.5 W_1(1): mean 1, variance 0.25; x1 = e^{-1} (up to Euler's bias).
    se = 0.5 / np.sqrt(4000)
    assert abs(r.mean[-1, 0] - 1.0) < 5 * se, (r.mean[-1, 0], se)
    assert abs(r.var[-1, 0] - 0.25) < 5 * 0.25 * np.sqrt(2 / 3999), r.var[-1, 0]
    assert np.all(r.x[:, 1] == r.x[0, 1]) and abs(r.x[0, 1] - (1 - 1 / 20) ** 20) < 1e-12
