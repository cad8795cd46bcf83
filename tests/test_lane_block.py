"""The CPU kernel's lane-block drift: an MLP field, or a mixture's path too large to unroll,
evaluated for a block of paths at once (128 in float32, 64 in float64:
``cpu.BLOCK_LANES``).

Where a run passes one parameter row for every path, the CPU kernel evaluates an
:class:`fastsde.MLPField`'s layers as matrix products over a block of lanes
(``mlp.make_mlp_block_drift``), and the step gets the drift's values by replay
(``cpu._make_replay_drift``): one pass over the lanes per drift call of the step, plus
one. These tests pin what that promises: the bits of the path-by-path kernel, for every
method, activation and math source, with the freezing, stopping, observables and
antithetic variates of the last pass.
"""

import numpy as np
import pytest

import fastsde as fs
from fastsde import methods
from fastsde.kernels import cpu, steps
from fastsde.mlp import ACTIVATIONS, make_mlp_block_drift, random_mlp


def _path_by_path(model):
    """The same model without its lane-block drift (the kernel then evaluates the drift
    path by path, as before)."""
    if model.kind == "ode":
        twin = fs.ODE(model.drift, model.dim, params=model.params, name="path by path",
                      math=model.math)
    else:
        twin = fs.SDE(model.drift, model.diffusion, model.dim, noise=model.noise,
                      params=model.params, name="path by path", math=model.math)
    # A plain model whose drift keeps a loop may get a lane form of its own
    # (fastsde/kernels/lanes.py): the twin runs path by path.
    twin.lane_block = None
    assert twin.fingerprint != model.fingerprint
    return twin


# (activation, math, model kind, method, dtype): the methods with the most drift calls
# per step (rk4: 4, dri1: 3) and one whose second call is at t + 3h/4 (sra1), both
# dtypes and both math sources; ~5 s to compile each kernel, so a few cases. Every
# activation and math source is compared as plain Python below, and silu in float32
# Euler-Maruyama in the next test.
CASES = [
    ("tanh", "fastsde", "ode", "rk4", "float32"),
    ("gelu", "libm", "sde", "sra1", "float32"),
    ("relu", "fastsde", "sde", "dri1", "float64"),
]


@pytest.mark.parametrize("activation,math_source,kind,method,dtype", CASES)
def test_lane_block_gives_the_bits_of_the_path_by_path_kernel(activation, math_source, kind,
                                                               method, dtype):
    # Widths that leave remainders for the 4 x 4 register tile (inputs 3 and 7, outputs
    # 6 and 7), and a path count that leaves the last block part empty.
    field = random_mlp([3, 6, 7, 2], activation, seed=11, scale=2.0, math=math_source)
    model = field.ode() if kind == "ode" else field.sde((0.8, 0.3))
    twin = _path_by_path(model)
    x0 = np.random.default_rng(3).normal(size=(150, 2))
    runs = [fs.simulate(m, x0, (0.0, 1.0), 8, 150, method=method, dtype=dtype, seed=5,
                        device="cpu", save_at=[0.5, 1.0]) for m in (model, twin)]
    kernels = [cpu.get_kernel(m, methods.METHODS[method], np.dtype(dtype).type)
               for m in (model, twin)]
    assert [k.lane_block for k in kernels] == [True, False]
    assert np.isfinite(runs[0].x).all()
    np.testing.assert_array_equal(runs[0].x, runs[1].x)
    np.testing.assert_array_equal(runs[0].paths, runs[1].paths)


def test_lane_block_last_pass_freezes_stops_observes_and_mirrors_as_the_path_kernel():
    """Euler-Maruyama in float32 with antithetic pairs, a stopping rule, an observable,
    statistics, and 16 paths that start at 3e38 and overflow in the first layer: hit
    times, moments, observables, states and the count of non-finite paths all equal the
    path-by-path kernel's."""
    field = random_mlp([3, 9, 2], "silu", seed=2, scale=3.0)
    model = field.sde((3.0, 3.0))
    twin = _path_by_path(model)
    x0 = np.random.default_rng(0).normal(size=(256, 2))
    x0[::17] = (3e38, -3e38)
    kwargs = dict(x0=x0, t_span=(0.0, 1.0), n_steps=40, n_paths=256, seed=9,
                  dtype="float32", device="cpu", method="euler_maruyama", antithetic=True,
                  stats=True, save_at=[0.25, 1.0],
                  observables={"r2": lambda t, x, p: x[0] * x[0] + x[1] * x[1]},
                  stop_when=lambda t, x, p: x[1] - 3.0)
    a, b = (fs.simulate(m, **kwargs) for m in (model, twin))
    assert 0 < np.isfinite(a.hit_time).sum() < 256, "the stopping rule must matter"
    assert a.n_nonfinite == b.n_nonfinite == 16
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.hit_time, b.hit_time)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.var, b.var)
    np.testing.assert_array_equal(a.obs_mean, b.obs_mean)


@pytest.mark.parametrize("kind,method,dtype", [("flow", "heun", "float32"),
                                               ("diffusion", "sra1", "float64"),
                                               ("langevin", "euler_maruyama", "float32")])
def test_mixture_lane_block_gives_the_bits_of_the_path_by_path_kernel(kind, method, dtype):
    """A mixture too large for the kernel to unroll (19 components, stds that differ, so
    the one-path form's cached per-std terms are recomputed): its lane-block field gives
    the path-by-path kernel's bits, from N(0, I) starts that put most components far
    away (the capped log-sum-exp's far tail)."""
    rng = np.random.default_rng(4)
    law = fs.GaussianMixturePath(rng.dirichlet(np.ones(19)), rng.normal(0, 3, (19, 2)),
                                 rng.choice([0.3, 0.5], 19))
    model = {"flow": law.flow, "diffusion": lambda: law.diffusion((0.8, 0.3)),
             "langevin": law.langevin}[kind]()
    assert model.lane_block is not None
    twin = _path_by_path(model)
    x0 = rng.normal(size=(150, 2))
    a, b = (fs.simulate(m, x0, (0.0, 1.0), 8, 150, method=method, dtype=dtype, seed=5,
                        device="cpu") for m in (model, twin))
    assert np.isfinite(a.x).all()
    np.testing.assert_array_equal(a.x, b.x)
    assert cpu.get_kernel(model, methods.METHODS[method], np.dtype(dtype).type).lane_block


def test_per_path_weights_and_debug_runs_use_the_path_kernel_with_the_same_bits():
    """Rows of weights per path, and debug (bounds-checked) kernels, evaluate the network
    path by path; with one row repeated they give the lane-block kernel's bits."""
    field = random_mlp([3, 8, 2], "tanh", seed=4)
    model = field.ode()
    x0 = np.random.default_rng(1).normal(size=(100, 2))
    shared = fs.simulate(model, x0, (0.0, 1.0), 5, 100, method="heun", device="cpu")
    rows = fs.simulate(model, x0, (0.0, 1.0), 5, 100, method="heun", device="cpu",
                       params=np.tile(field.params, (100, 1)))
    debug = fs.simulate(model, x0, (0.0, 1.0), 5, 100, method="heun", device="cpu",
                        debug=True)
    np.testing.assert_array_equal(shared.x, rows.x)
    np.testing.assert_array_equal(shared.x, debug.x)
    heun = methods.METHODS["heun"]
    assert cpu.get_kernel(model, heun, np.float64).lane_block
    assert not cpu.get_kernel(model, heun, np.float64, per_path_params=True).lane_block
    assert not cpu.get_kernel(model, heun, np.float64, debug=True).lane_block


@pytest.mark.parametrize("name", sorted(methods.METHODS))
@pytest.mark.parametrize("kind", ["ode", "sde"])
def test_each_step_calls_the_drift_as_often_as_its_method_says(name, kind):
    """The replay runs one pass per drift call that the method declares
    (``Method.drift_evals``) after the first; a step that called the drift more often
    would read zeros in the last pass. Each step, run as plain Python with a counting
    drift, makes exactly that many calls, each with a time in [t, t + h], and the first
    at (t, x), the lane's own time and state (the kernel evaluates the block's field
    there before any pass)."""
    method = methods.METHODS[name]
    factory = method.ode_factory if kind == "ode" else method.sde_factory
    if factory is None:
        pytest.skip(f"{name} has no {kind} step")
    dim, noise_dim = 2, 2
    calls = []

    def drift(t, x, p, out):
        calls.append((t, x.copy()))
        out[:] = -x

    def diffusion(t, x, p, out):
        out[:] = 0.5

    step = factory(drift, diffusion, steps.noise_diagonal, steps.increment_diagonal,
                   steps.column_diagonal, dim, np.float64)
    z = np.zeros(dim)
    t, h = 0.25, 0.1
    x = np.array([1.0, -2.0])
    step(t, t + h / 2, t + h, h, x, np.zeros(1), np.full(noise_dim, 0.3),
         np.full(noise_dim, 0.1), z.copy(), z.copy(), z.copy(), z.copy(), z.copy(),
         z.copy(), z.copy(), z.copy(), z.copy(), z.copy())
    assert len(calls) == method.drift_evals, (name, kind, calls)
    assert all(t <= c <= t + h for c, _ in calls)
    assert calls[0][0] == t and np.array_equal(calls[0][1], x), (name, kind, calls[0])


@pytest.mark.parametrize("math_source", ["fastsde", "libm"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_block_forward_pass_is_the_one_path_forward_pass(activation, math_source):
    """The lane-block forward pass and the one-path forward pass (the drift the other
    kernels compile), both run as plain Python: the same bits for every lane, for every
    activation and math source, on a block whose widths fill the 4 x 4 register tile and
    leave remainders in both directions; and both agree with the network's numpy forward
    pass."""
    lanes = 8
    widths = (5, 9, 6, 4)
    field = random_mlp(list(widths), activation, seed=7, scale=1.5, math=math_source)
    block = make_mlp_block_drift(widths, activation, math_source, lanes, lambda fn: fn)
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 2.0, size=(lanes, 4))
    t = rng.uniform(size=lanes)
    out = np.empty(4 * lanes)
    block(t, x.T.ravel().copy(), field.params, out, np.empty(2 * max(widths) * lanes))
    field_block = out.reshape(4, lanes).T
    for lane in range(lanes):
        one_path = np.empty(4)
        field.drift(t[lane], x[lane], field.params, one_path)
        np.testing.assert_array_equal(field_block[lane], one_path)
    np.testing.assert_allclose(field_block, field(x, t), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint32, np.int64])
def test_lane_arrays_start_on_a_vector_boundary(dtype):
    """The kernels' lane arrays start on a 64-byte boundary (Numba's own arrays start on a
    32-byte one, and a 512-bit access from there touches two cache lines), whatever the
    length, zeroed, in every dtype the kernels use."""
    import numba

    lane_array = cpu._lane_array_function(dtype)

    @numba.njit
    def make(n):
        a = lane_array(n)
        for i in range(a.shape[0]):
            a[i] += 1
        return a, a.ctypes.data % cpu.LANE_ALIGN_BYTES

    for n in (0, 1, 7, 64, 1000):
        a, offset = make(n)
        assert offset == 0, f"n={n}: data {offset} bytes past a 64-byte boundary"
        assert a.shape == (n,) and a.dtype == dtype
        np.testing.assert_array_equal(a, np.ones(n, dtype))
