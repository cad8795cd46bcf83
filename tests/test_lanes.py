"""Users' drifts whose loops stay, evaluated for a block of paths (fastsde/kernels/lanes.py).

A drift with a loop the kernel cannot unroll (its trip count read from ``p``) gets a lane
form: its loops outside, a loop over the block's lanes around each run of per-path
statements. These tests pin what that promises: the generated block computes, lane by
lane, what the one-path function computes (in plain Python, and compiled: the bits of the
path-by-path kernel for several methods and both dtypes); the drifts it refuses get a
reason and run path by path; and the rest of the kernel's rules (math lowering, the
opt-outs) hold.
"""

import math
import types

import numba
import numpy as np
import pytest

import fastsde as fs
from fastsde import methods
from fastsde.kernels import cpu, lanes, unroll

SCALE = 0.5


def mixture_drift(t, x, p, out):
    """p = [mu_x (K) | mu_y (K) | 1 / (2 s^2)]: K read from p, so the loop stays."""
    K = (p.shape[0] - 1) // 2
    c = p[2 * K]
    num0 = 0.0
    num1 = 0.0
    den = 0.0
    for k in range(K):
        dx = p[k] - x[0]
        dy = p[K + k] - x[1]
        w = math.exp(-(dx * dx + dy * dy) * c)
        num0 += w * dx
        num1 += w * dy
        den += w
    out[0] = num0 / den
    out[1] = num1 / den


def mixed_drift(t, x, p, out):
    """Uniform ifs and loops around per-path statements, out[...] accumulated, x indexed
    from the end, len(x), a per-path name carried between lane loops (s), one kept in
    its loop (q), a hoisted uniform statement (b), a per-path if statement (nested) and a
    per-path select."""
    n = len(x)
    K = p.shape[0] - 2
    a = p[K] * t
    s = 0.0
    for k in range(K):
        if k % 2 == 0:
            s += math.tanh(p[k] * x[0] + a)
        else:
            s -= math.exp(-x[-1] * x[-1]) * p[k]
        for j in range(n):
            out[j] += SCALE * s * x[j] / (1.0 + k)
    q = x[0] * x[1]
    b = p[K + 1]
    if q > b:
        r = q - b
        out[0] -= 0.1 * r
    else:
        r = b
        if x[1] < 0.0:
            out[1] += 0.05 * r
    out[n - 1] += q * b if q > 0.0 else -q
    return


def mixed_sigma(t, x, p, out):
    out[0] = 0.3
    out[1] = 0.2 + 0.1 * x[0] * x[0]


def int_accumulator(t, x, p, out):
    den = 0  # an int: float64 once a float is added, not the run's float32
    for k in range(p.shape[0]):
        den += math.exp(-(x[0] - p[k]) ** 2)
    out[0] = den


def _mixture_params(K):
    angles = 2 * np.pi * np.arange(K) / K
    return np.concatenate([2 * np.cos(angles), 2 * np.sin(angles), [1 / (2 * 0.49)]])


MIXED_PARAMS = np.array([0.3, -0.2, 0.5, 0.1, 0.7, 0.2, -0.4])


def _block_in_python(fn, dim, x, p, t):
    """The lane form of ``fn`` run as plain Python for the paths ``x`` (n, dim), n <= 64,
    with the parameter row ``p`` (n_params,), or a row per path (n, n_params)."""
    per_path = p.ndim == 2
    form = lanes.lane_form(fn, dim, 64, p.shape[1] if per_path else None)
    X = np.zeros(dim * 64)
    X.reshape(dim, 64)[:, :len(x)] = x.T
    if per_path:
        rows = np.zeros((p.shape[1], 64))
        rows[:, :len(x)] = p.T
        p = rows.ravel()
    F = np.full(dim * 64, np.nan)
    S = np.full(max(1, len(form.scratch)) * 64, np.nan)
    form.function()(np.full(64, t), X, p, F, S)
    return F.reshape(dim, 64)[:, :len(x)].T


@pytest.mark.parametrize("fn,params,dim", [
    (mixture_drift, _mixture_params(20), 2),
    (mixed_drift, MIXED_PARAMS, 2),
    (int_accumulator, np.array([0.1, -0.3, 0.8]), 1),
])
def test_block_in_plain_python_computes_what_the_function_computes(fn, params, dim):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(37, dim)) * 2
    rows = params * rng.uniform(0.5, 1.5, size=(37, len(params)))
    for p in (np.tile(params, (37, 1)), rows):
        expected = np.zeros_like(x)
        for i in range(len(x)):
            fn(0.3, x[i], p[i], expected[i])
        np.testing.assert_array_equal(_block_in_python(fn, dim, x, p, 0.3), expected)
    # The shared row's form (p uniform) gives the same.
    np.testing.assert_array_equal(_block_in_python(fn, dim, x, params, 0.3),
                                  _block_in_python(fn, dim, x, np.tile(params, (37, 1)), 0.3))


def _pair(model):
    """``model`` and its twin without the lane form (the path-by-path kernel)."""
    if model.kind == "ode":
        twin = fs.ODE(model.drift, model.dim, params=model.params, name="path by path")
    else:
        twin = fs.SDE(model.drift, model.diffusion, model.dim, noise=model.noise,
                      params=model.params, name="path by path")
    twin.lane_block = None
    return model, twin


# ~3-5 s to compile each kernel: the mixture in Euler (one drift call), the mixed drift
# in RK4 (four calls, at t + h/2 and t + h) and in Milstein as an SDE, both dtypes.
CASES = [
    ("mixture", "ode", "euler", "float32"),
    ("mixed", "ode", "rk4", "float64"),
    ("mixed", "sde", "milstein", "float32"),
]


@pytest.mark.parametrize("field,kind,method,dtype", CASES)
def test_lane_form_gives_the_bits_of_the_path_by_path_kernel(field, kind, method, dtype):
    if field == "mixture":
        model = fs.ODE(mixture_drift, 2, params=_mixture_params(20))
    elif kind == "ode":
        model = fs.ODE(mixed_drift, 2, params=MIXED_PARAMS)
    else:
        model = fs.SDE(mixed_drift, mixed_sigma, 2, params=MIXED_PARAMS)
    assert isinstance(model.lane_block, lanes.UserLaneBlock)
    runs = []
    x0 = np.random.default_rng(3).normal(size=(150, 2))  # the last block part empty
    pair = _pair(model)
    for m in pair:
        runs.append(fs.simulate(m, x0, (0.0, 1.0), 8, 150, method=method, dtype=dtype,
                                seed=5, device="cpu", save_at=[0.5, 1.0]))
    kernels = [cpu.get_kernel(m, methods.METHODS[method], np.dtype(dtype).type)
               for m in pair]
    assert [k.lane_block for k in kernels] == [True, False]
    assert np.isfinite(runs[0].x).all() and np.abs(runs[0].x).max() > 0.5
    np.testing.assert_array_equal(runs[0].x, runs[1].x)
    np.testing.assert_array_equal(runs[0].paths, runs[1].paths)


def test_rows_per_path_run_the_lane_form_with_the_bits_of_the_path_kernel():
    """A row of parameters per path (a sweep): the block reads the lanes' rows (p is then
    per path in the lane form); the bits are the path-by-path kernel's, stopped paths
    included, and a shared row gives the bits of the same row given to every path."""
    params = _mixture_params(20)
    model, twin = _pair(fs.ODE(mixture_drift, 2, params=params))
    rng = np.random.default_rng(4)
    n = 150
    rows = np.tile(params, (n, 1))
    rows[:, :40] += 0.3 * rng.normal(size=(n, 40))
    rows[:, 40] = rng.uniform(0.5, 2.0, n)
    x0 = rng.normal(size=(n, 2))
    kwargs = dict(x0=x0, t_span=(0.0, 1.0), n_steps=8, n_paths=n, method="euler",
                  dtype="float32", device="cpu", save_at=[0.5, 1.0],
                  stop_when=lambda t, x, p: x[0] - p[0] + 1.5)
    runs = [fs.simulate(m, params=rows, **kwargs) for m in (model, twin)]
    euler = methods.METHODS["euler"]
    assert [cpu.get_kernel(m, euler, np.float32, per_path_params=True).lane_block
            for m in (model, twin)] == [True, False]
    assert 0 < runs[0].hit_count < n
    for name in ("x", "paths", "hit_time"):
        np.testing.assert_array_equal(getattr(runs[0], name), getattr(runs[1], name))
    shared = fs.simulate(model, **kwargs)
    tiled = fs.simulate(model, params=np.tile(params, (n, 1)), **kwargs)
    np.testing.assert_array_equal(shared.x, tiled.x)


def _prepare(model, dtype):
    jit = numba.njit(inline="always", **cpu._JIT)
    return jit, cpu.function_preparer(model, dtype, jit)


def test_carried_names_of_another_type_than_the_runs_fall_back_to_path_by_path():
    """The scratch holds the run's float type: an int-started accumulator (float64 in a
    float32 run) is refused when typed, and float64 accepts it."""
    model = fs.ODE(int_accumulator, 1, params=[0.1, -0.3, 0.8])
    assert isinstance(model.lane_block, lanes.UserLaneBlock)
    assert model.lane_block.make(64, *_prepare(model, np.float32)) is None
    made = fs.ODE(mixture_drift, 2, params=_mixture_params(3)).lane_block.make(
        64, *_prepare(model, np.float32))
    assert made is not None and made[1] == 3 * 64


def count_from_p_values(t, x, p, out):
    for k in range(int(p[0])):
        out[0] += p[1 + k] * x[0]


def test_a_loop_counted_by_a_parameters_value_has_a_lane_form_only_for_a_shared_row():
    model = fs.ODE(count_from_p_values, 1, params=[2.0, 0.5, -0.5])
    assert isinstance(model.lane_block, lanes.UserLaneBlock)
    jit, prepare = _prepare(model, np.float64)
    assert model.lane_block.make(64, jit, prepare) is not None
    assert model.lane_block.make(64, jit, prepare, per_path_params=3) is None
    with pytest.raises(lanes.NoLaneForm, match="depends on the path"):
        lanes.lane_form(count_from_p_values, 1, 64, n_params=3)


def _one(t, x, p, out):
    out[0] = x[0]


REFUSED = {
    "depends on the path": "def f(t, x, p, out):\n    for k in range(int(x[0])):\n"
                           "        out[0] += p[k]\n",
    "per-path condition (line 3) holds a For": (
        "def f(t, x, p, out):\n    for k in range(p.shape[0]):\n"
        "        if x[0] > p[k]:\n            for j in range(k):\n"
        "                out[0] += p[j]\n"),
    "While": "def f(t, x, p, out):\n    k = 0\n    while k < p.shape[0]:\n"
             "        out[0] += p[k] * x[0]\n        k += 1\n",
    "Break": "def f(t, x, p, out):\n    for k in range(p.shape[0]):\n"
             "        out[0] += p[k] * x[0]\n        break\n",
    "returns a value": "def f(t, x, p, out):\n    for k in range(p.shape[0]):\n"
                       "        out[0] += p[k] * x[0]\n    return 1.0\n",
    "used whole": "def f(t, x, p, out):\n    for k in range(p.shape[0]):\n"
                  "        out[0] += g(x)\n",
    "per-path index": "def f(t, x, p, out):\n    for k in range(p.shape[0]):\n"
                      "        out[0] += x[int(x[0])]\n",
    "other than a name": "def f(t, x, p, out):\n    for k in range(p.shape[0]):\n"
                         "        a, b = x[0], p[k]\n        out[0] += a * b\n",
    "assigns its argument": "def f(t, x, p, out):\n    for k in range(p.shape[0]):\n"
                            "        t = t + p[k]\n        out[0] += x[0] * t\n",
}


@pytest.mark.parametrize("reason", sorted(REFUSED))
def test_drifts_without_a_lane_form_are_refused_with_the_reason(reason, tmp_path,
                                                                 monkeypatch):
    path = tmp_path / f"refused_{abs(hash(reason))}.py"
    path.write_text(REFUSED[reason] + "\n\ndef g(x):\n    return x[0]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    fn = namespace["f"]
    assert unroll.loops_stay(fn)
    assert reason in lanes.why_not(fn)
    assert fs.ODE(fn, 1, params=[1.0, 2.0]).lane_block is None
    # libm's calls stay where the loop runs path by path.
    assert not unroll.lowers_math(fn)


def test_which_drifts_get_a_lane_form():
    # Unrolled to straight-line code (a constant loop): the step's lane loop vectorises.
    def bumps(t, x, p, out):
        for k in range(8):
            out[0] += math.exp(-(x[0] - p[k]) ** 2)

    assert not unroll.loops_stay(bumps) and fs.ODE(bumps, 1, params=np.zeros(8)).lane_block \
        is None
    params = _mixture_params(5)
    assert isinstance(fs.ODE(mixture_drift, 2, params=params).lane_block,
                      lanes.UserLaneBlock)
    # libm's calls do not vectorise: no lane form asked for.
    assert fs.ODE(mixture_drift, 2, params=params, math="libm").lane_block is None
    # The drift's math is kmath's in every form (path by path, block, CUDA), so that
    # all give the same bits; a diffusion is never evaluated per block, so the same
    # function as a diffusion keeps libm's calls in its loop.
    assert unroll.lowers_math(mixture_drift)
    assert not unroll.lowers_math(mixture_drift, lane_form=False)
    as_diffusion = types.FunctionType(mixture_drift.__code__, mixture_drift.__globals__,
                                      "mixture_drift")
    sde = fs.SDE(mixture_drift, as_diffusion, 2, params=params)
    assert isinstance(sde.lane_block, lanes.UserLaneBlock)
    drift, diffusion = unroll.plain_functions(sde)
    assert drift is not mixture_drift and diffusion is as_diffusion
    # The built-in models keep their own lane blocks.
    assert not isinstance(fs.GaussianMixturePath.ring(32, 3.0, 0.3).flow().lane_block,
                          lanes.UserLaneBlock)
    assert fs.ODE(_one, 1).lane_block is None
    # A loop over the state's components only (OU's drift: range(out.shape[0])) has a
    # trip count the kernel knows, which LLVM unrolls: no lane form, libm's math kept.
    ou = fs.OU(theta=1.0, sigma=0.5)
    assert unroll.loops_stay(ou.drift) and not lanes.needs_lane_form(ou.drift)
    assert ou.lane_block is None and not unroll.lowers_math(ou.drift)
