"""The CUDA backend: same stream, same paths, same statistics as the CPU.

Where numba.cuda can run in this process (a GPU, or a process started with
NUMBA_ENABLE_CUDASIM=1) the device tests run here. Elsewhere (CI has no GPU) they are
skipped here and ``test_device_tests_under_the_simulator`` runs this file again in a
subprocess under the CUDA simulator, which cannot be switched on in a process that has
already imported numba.cuda without it. The PTX tests need only the CUDA toolkit's NVVM
(pip-installable) and run in a process without the simulator.

Simulator sizes are small: it runs every GPU thread as a Python thread (about 15 us per
path-step here).
"""

import inspect
import json
import math
import os
import re
import subprocess
import sys

import numba
import numpy as np
import pytest
from numba import cuda  # a module global: the simulator swaps it inside kernels

import fastsde as fs
from fastsde import methods
from fastsde.kernels import cuda_available
from fastsde.kernels import fmath, philox, unroll
from fastsde.kernels.cpu import _rng as cpu_rng

import ptxas_checks
# MLMC_GBM and mlmc_call are test_mlmc.py's too: the CPU level kernels these comparisons
# compile are then read from the disk cache by the other process.
from mc_models import (BOX, BOX_OBS, DISCOUNT, LINEAR, LINEAR_OBS, MLMC_GBM, above_1_2,
                       gbm_params, mlmc_call, obs_square, outside_box)

pytestmark = pytest.mark.cuda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_OK, CUDA_WHY = cuda_available()
IN_SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "") == "1"
device_only = pytest.mark.skipif(
    not CUDA_OK, reason=f"numba.cuda cannot run in this process ({CUDA_WHY}); these tests "
                        f"run in a subprocess under the simulator instead")

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)

# Bit-for-bit float64 agreement needs the same rounding of every operation on both devices.
# The kernels guarantee that for + - * / sqrt (no FMA contraction); log, sin and cos come
# from glibc on the CPU (and in the simulator, which runs Python's math) but from libdevice
# on a GPU, which may differ in the last bit. So on a real GPU with a Box-Muller that calls
# them, float64 results are compared to a few ulp per step (docs/random-streams.md).
RNG_CALLS_LIBM = bool(re.search(r"^\s+[^#\n]*math\.(log|sin|cos|exp)\(",
                                inspect.getsource(philox), re.M))  # inside functions
BITWISE = IN_SIMULATOR or not RNG_CALLS_LIBM


def _fastmath_f32():
    try:
        from fastsde.kernels import cuda as kc

        return kc.FASTMATH[np.float32]
    except ImportError:
        return False


FASTMATH_F32 = _fastmath_f32()


# --- models: one per noise kind, plain functions so kernels are shared across tests ----

def osc_drift(t, x, p, out):
    out[0] = x[1]
    out[1] = -p[0] * x[0] - p[1] * x[1]


def ou_t_drift(t, x, p, out):
    out[0] = -p[0] * x[0]


def ou_t_diffusion(t, x, p, out):  # additive, time-dependent: exercises t and t_next
    out[0] = p[1] * (1.0 + t)


def scalar_drift(t, x, p, out):
    out[0] = -p[0] * x[0] + 0.1 * x[1]
    out[1] = -p[0] * x[1]


def scalar_diffusion(t, x, p, out):
    out[0] = p[1] * (1.0 + 0.1 * x[0])
    out[1] = 0.5 * p[1]


def general_drift(t, x, p, out):
    out[0] = -p[0] * x[0]
    out[1] = x[0] - p[0] * x[1]


def general_diffusion(t, x, p, out):  # (dim=2, noise_dim=3)
    for i in range(2):
        for j in range(3):
            out[i, j] = p[1] * (0.2 * (i + 1) + 0.1 * j) * (1.0 + 0.05 * x[i])


OSC = fs.ODE(osc_drift, dim=2, params=(4.0, 0.3), name="oscillator")
OU = fs.OU(theta=1.0, sigma=0.5)
OU_T = fs.SDE(ou_t_drift, ou_t_diffusion, dim=1, noise="additive", params=(1.0, 0.4),
              name="ou_time")
GBM = fs.GBM(mu=0.3, sigma=0.4, dim=2)
SCALAR = fs.SDE(scalar_drift, scalar_diffusion, dim=2, noise="scalar", params=(0.7, 0.3),
                name="scalar2")
GENERAL = fs.SDE(general_drift, general_diffusion, dim=2, noise="general", noise_dim=3,
                 params=(0.5, 1.0), name="general2x3")
GENERAL_STRAT = fs.SDE(general_drift, general_diffusion, dim=2, noise="general", noise_dim=3,
                       params=(0.5, 1.0), name="general2x3_stratonovich",
                       calculus="stratonovich")

SQUARE = obs_square


def ABOVE_TWO(t, x, p):  # noqa: N802 - a constant-like model function
    return x[0] - 2.0


N = 40          # paths per run: more than the simulator grid (32 threads), so threads loop
STEPS = 12


def _cases():
    """(id, model, method, simulate kwargs): every method, noise kind, x0 form and output
    mode at least once."""
    rng = np.random.default_rng(7)
    x0_rows = rng.normal(size=(N, 2))
    gbm_params = np.column_stack([rng.uniform(-0.5, 0.5, N), rng.uniform(0.1, 0.6, N)])
    return [
        ("ode-euler-x0rows", OSC, "euler", dict(x0=x0_rows, save_at=3)),
        ("ode-heun-stats", OSC, "heun", dict(x0=[1.0, 0.0], save_at=4, stats=True,
                                             keep_paths=True)),
        ("ode-rk4-saveat-times", OSC, "rk4", dict(x0=1.0, save_at=[0.0, 0.25, 1.0])),
        ("additive-em-normal-stats", OU, "euler_maruyama",
         dict(x0=fs.Normal(0.3, 1.0), save_at=4, stats=True, keep_paths=True)),
        ("additive-heun-time", OU_T, "heun", dict(x0=0.5, save_at=2)),
        ("diagonal-em-per-path-params", GBM, "euler_maruyama",
         dict(x0=[1.0, 2.0], params=gbm_params, save_at=6)),
        ("scalar-em-normal-vector-stats-only", SCALAR, "euler_maruyama",
         dict(x0=fs.Normal([0.0, 1.0], [1.0, 0.5]), save_at=3, stats=True)),
        ("general-em-first-path", GENERAL, "euler_maruyama",
         dict(x0=0.2, first_path=2**33 + 5, save_at=4)),
        # The schemes of the methods issue: extra normals (stream 2), discrete increments.
        ("diagonal-milstein", GBM, "milstein", dict(x0=[1.0, 2.0], save_at=3)),
        ("scalar-sriw1-extra-normals", SCALAR, "sriw1", dict(x0=[0.5, 1.0], save_at=4)),
        ("additive-sra1-time", OU_T, "sra1", dict(x0=0.5, first_path=2**33 + 5)),
        ("general-euler-heun-stratonovich", GENERAL_STRAT, "euler_heun", dict(x0=0.2)),
        ("diagonal-em-two-point", GBM, "euler_maruyama",
         dict(x0=[1.0, 2.0], increments="two_point", first_path=250)),
        ("scalar-sriw1-three-point", SCALAR, "sriw1",
         dict(x0=[0.5, 1.0], increments="three_point", save_at=2)),
        ("general-dri1-extra-normals", GENERAL, "dri1", dict(x0=0.2, save_at=3)),
        ("general-dri1-three-point", GENERAL, "dri1",
         dict(x0=0.2, increments="three_point")),
    ]


CASES = _cases()
CASE = {c[0]: c for c in CASES}


def _generative_cases():
    """Models of fastsde.generative / fastsde.mlp: their functions call exp, tanh, erf
    (libdevice on a GPU) and MLPField uses fastsde.scratch.local_array."""
    rng = np.random.default_rng(1)
    layers = [(rng.normal(size=(8, 3)), rng.normal(size=8)),
              (rng.normal(size=(2, 8)), rng.normal(size=2))]
    mix = fs.GaussianMixturePath([0.5, 0.3, 0.2], [[-3.0, 0.0], [2.0, 2.0], [1.5, -3.0]], 0.5)
    global GEN_MLP  # its layer widths size the local memory its forward pass needs
    mlp = GEN_MLP = fs.MLPField(layers, "gelu")
    return [("mixture-flow-heun", mix.flow(), "heun", dict(x0=fs.Normal(0.0, 1.0))),
            ("mixture-diffusion-em", mix.diffusion(1.0), "euler_maruyama",
             dict(x0=fs.Normal(0.0, 1.0), save_at=3)),
            ("mlp-ode-euler", mlp.ode(), "euler", dict(x0=fs.Normal(0.0, 1.0))),
            ("mlp-sde-em", mlp.sde(0.5), "euler_maruyama", dict(x0=fs.Normal(0.0, 1.0)))]


GEN_CASES = _generative_cases()


def _trig_pow_drift(t, x, p, out):
    out[0] = x[1]
    out[1] = math.sin(x[0]) * (p[0] * math.cos(x[0]) - p[1]) - abs(x[1]) ** p[2]


def _trig_pow_diffusion(t, x, p, out):
    out[0] = 0.1
    out[1] = 0.2


#: A model whose functions call math.sin, math.cos and ``**``, compiled as fastsde.kmath's
#: (math="fastsde"): on a GPU its float64 paths equal the plain-Python reference bit for
#: bit, as kmath promises; its kernel holds kmath's 51 KB table of 2/pi once (numba-cuda
#: gives each reference to a global array its own copy in 64 KiB of constant memory).
TRIG = fs.SDE(_trig_pow_drift, _trig_pow_diffusion, 2, noise="additive",
              params=(2.0, 1.0, 1.5), name="trig_pow")
KMATH_CASES = [("kmath-trig-pow-em", TRIG, "euler_maruyama",
                dict(x0=[0.5, -0.3], save_at=3))]
#: Compared with the CPU backend bit for bit. Each CPU kernel costs 20-45 s to compile on
#: two cores, so the CPU comparisons use the model whose kernels the rest of the suite
#: compiles anyway (fs.OU(1.0, 0.5), disk-cached); every case is compared bit for bit with
#: the plain-Python reference below, which follows the written stream contract.
CPU_CASES = [CASE["additive-em-normal-stats"]]


def _reference(model, method, kw, n_paths=N, n_steps=STEPS, seed=11, t_span=(0.0, 1.0)):
    """float64 final states and saved states computed in plain Python straight from the
    written contract (docs/design.md, docs/random-streams.md): step k runs from t0 + k h,
    the last step ends at t1; noise component j of step k is normal q = k noise_dim + j of
    the path's stream 0, block q // 4, lane q % 4; fs.Normal draws component j from
    stream 1, normal j; a path that leaves the finite numbers is frozen. Independent of
    both drivers; it calls the same philox.py / steps.py / model functions."""
    from fastsde import api
    from fastsde.kernels import steps
    from fastsde.streams import key_from_seed

    dim, nd = model.dim, max(model.noise_dim, 1)
    t0, t1 = t_span
    h = (t1 - t0) / n_steps
    mode, rows, mean, std = api._check_x0(kw["x0"], dim, n_paths)
    params = api._check_params(kw.get("params"), model, n_paths)
    save_steps = api._check_save_at(kw.get("save_at"), t0, t1, h, n_steps)
    first = kw.get("first_path", 0)
    k0, k1 = key_from_seed(seed)
    noise = getattr(steps, steps.NOISE_TERMS.get(model.noise, "noise_diagonal"))
    increment_of = getattr(steps, steps.INCREMENTS_OF.get(model.noise, "increment_diagonal"))
    method_obj = methods.METHODS[method]
    column_of = getattr(steps, steps.COLUMNS_OF.get(model.noise, "column_diagonal"))
    # The model's functions with the math the kernels compile (math.exp as kmath.exp).
    drift, diffusion = unroll.plain_functions(model)
    step = method_obj.factory(model)(drift, diffusion, noise, increment_of,
                                     column_of, dim, np.float64)
    increments = kw.get("increments", "gaussian")
    extra = method_obj.draws_extra(increments, nd)
    gshape = model.diffusion_shape if model.kind == "sde" else (1,)

    def normal(q, stream, path):
        return philox.normal_block_f64(k0, k1, np.uint64(q // 4), np.uint64(stream),
                                       path)[q % 4]

    x_out = np.empty((n_paths, dim))
    saved = np.empty((len(save_steps), n_paths, dim))
    for i in range(n_paths):
        path = np.uint64(first + i)
        if mode == 2:
            x = np.array([mean[j] + std[j] * normal(j, philox.STREAM_INITIAL, path)
                          for j in range(dim)])
        else:
            x = rows[i if mode == 1 else 0].copy()
        p = params[i if params.shape[0] > 1 else 0].copy()
        scratch = [np.zeros(dim) for _ in range(5)]
        g0, g1, g2, g3 = (np.zeros(gshape) for _ in range(4))
        s, alive = 0, True
        if save_steps[0] == 0:
            saved[0, i], s = x, 1
        for k in range(n_steps):
            dw, dz = np.zeros(nd), np.zeros(nd)
            for j in range(nd if model.kind == "sde" else 0):
                q = k * nd + j
                if increments == "gaussian":
                    dw[j] = math.sqrt(h) * normal(q, philox.STREAM_INCREMENTS, path)
                elif increments == "two_point":
                    # Bit q % 32 of word (q // 32) % 4 of block q // 128.
                    words = philox.block_words(k0, k1, np.uint64(q >> 7),
                                               np.uint64(philox.STREAM_TWO_POINT), path)
                    dw[j] = math.sqrt(h) * philox.two_point_sign(words[(q >> 5) & 3],
                                                                 q & 31)
                else:
                    # Word q % 4 of block q // 4, -1 / 0 / +1 by the two thresholds.
                    words = philox.block_words(k0, k1, np.uint64(q >> 2),
                                               np.uint64(philox.STREAM_THREE_POINT), path)
                    dw[j] = math.sqrt(3.0 * h) * philox.three_point_sign(words[q & 3])
                if extra:
                    dz[j] = math.sqrt(h) * normal(q, philox.STREAM_EXTRA, path)
            x_new = np.zeros(dim)
            t_next = t1 if k + 1 == n_steps else t0 + (k + 1) * h
            step(t0 + k * h, t0 + (k + 0.5) * h, t_next, h, x, p, dw, dz, *scratch[:4], g0,
                 g1, g2, g3, scratch[4], x_new)
            if alive:
                x, alive = x_new, bool(np.all(np.isfinite(x_new)))
            if s < len(save_steps) and save_steps[s] == k + 1:
                saved[s, i], s = x, s + 1
        x_out[i] = x
    return x_out, saved


def _run(model, method, device, dtype="float64", n_paths=N, n_steps=STEPS, seed=11, **kw):
    kw = dict(kw)
    x0 = kw.pop("x0")
    return fs.simulate(model, x0, (0.0, 1.0), n_steps, n_paths, method=method, device=device,
                       seed=seed, dtype=dtype, progress=False, **kw)


def _assert_same(gpu, cpu, bitwise=None):
    """Equal bit for bit (BITWISE), else to 8 ulp per step of the values' scale."""
    bitwise = BITWISE if bitwise is None else bitwise
    assert gpu.device == "cuda" and cpu.device == "cpu"
    for name in ("x", "paths", "mean", "var", "count"):
        g, c = getattr(gpu, name), getattr(cpu, name)
        assert (g is None) == (c is None), name
        if g is None:
            continue
        if bitwise or name == "count":
            assert np.array_equal(g, c, equal_nan=True), (
                f"{name}: max diff {np.nanmax(np.abs(g - c))}")
        else:
            tol = 8 * gpu.n_steps * EPS64 * (1.0 + np.nanmax(np.abs(c)))
            np.testing.assert_allclose(g, c, rtol=0, atol=tol, err_msg=name)
    assert gpu.n_nonfinite == cpu.n_nonfinite
    np.testing.assert_array_equal(gpu.t, cpu.t)


# --- on the device (real GPU or simulator) ---------------------------------------------

KNOWN_ANSWERS = [  # Random123 kat_vectors, philox4x32_10
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def _rng_kernels():
    """Tiny kernels that call the device-compiled Philox and normal blocks directly."""
    from fastsde.kernels import cuda as kc

    rng64, _ = kc.device_functions(kc.FASTMATH[np.float64])
    rng32, _ = kc.device_functions(kc.FASTMATH[np.float32])
    philox_dev = rng64.philox4x32_10
    block64, block32 = rng64.normal_block_f64, rng32.normal_block_f32

    def words(counters, keys, out):
        i = cuda.grid(1)
        if i < counters.shape[0]:
            w0, w1, w2, w3 = philox_dev(counters[i, 0], counters[i, 1], counters[i, 2],
                                        counters[i, 3], keys[i, 0], keys[i, 1])
            out[i, 0] = w0
            out[i, 1] = w1
            out[i, 2] = w2
            out[i, 3] = w3

    def normals_kernel(block):
        def normals(k0, k1, blocks, streams, paths, out):
            i = cuda.grid(1)
            if i < blocks.shape[0]:
                z0, z1, z2, z3 = block(k0, k1, blocks[i], streams[i], paths[i])
                out[i, 0] = z0
                out[i, 1] = z1
                out[i, 2] = z2
                out[i, 3] = z3

        return normals

    normals64, normals32 = normals_kernel(block64), normals_kernel(block32)

    u64 = numba.types.uint64
    a1 = numba.types.Array(u64, 1, "C")
    a2 = numba.types.Array(u64, 2, "C")

    def out_t(dt):
        return numba.types.Array(numba.from_dtype(np.dtype(dt)), 2, "C")

    return (kc.jit_kernel(words, (a2, a2, a2)),
            kc.jit_kernel(normals64, (u64, u64, a1, a1, a1, out_t(np.float64))),
            kc.jit_kernel(normals32, (u64, u64, a1, a1, a1, out_t(np.float32)),
                          fastmath=kc.FASTMATH[np.float32]))


@pytest.fixture(scope="module")
def rng_kernels():
    return _rng_kernels()


@device_only
def test_philox_known_answers_on_device(rng_kernels):
    words = rng_kernels[0]
    counters = np.array([c for c, _, _ in KNOWN_ANSWERS], np.uint64)
    keys = np.array([k for _, k, _ in KNOWN_ANSWERS], np.uint64)
    out = np.zeros((len(KNOWN_ANSWERS), 4), np.uint64)
    words[1, 32](counters, keys, out)
    assert out.tolist() == [list(e) for _, _, e in KNOWN_ANSWERS]


def _normal_inputs():
    rng = np.random.default_rng(3)
    n = 256
    blocks = rng.integers(0, 2**40, n, dtype=np.uint64)
    streams = rng.choice(np.array([0, 1, 2], np.uint64), n)
    paths = rng.integers(0, 2**63, n, dtype=np.uint64)
    paths[:4] = [0, 1, 2**32 - 1, 2**32]  # the high word of the path counter in use
    return np.uint64(0x12345678), np.uint64(0x9ABCDEF0), blocks, streams, paths


@device_only
def test_device_normals_equal_cpu_normals(rng_kernels):
    _, normals64, normals32 = rng_kernels
    k0, k1, blocks, streams, paths = _normal_inputs()
    out64 = np.zeros((blocks.size, 4), np.float64)
    out32 = np.zeros((blocks.size, 4), np.float32)
    normals64[8, 32](k0, k1, blocks, streams, paths, out64)
    normals32[8, 32](k0, k1, blocks, streams, paths, out32)
    cpu64 = np.array([cpu_rng.normal_block_f64(k0, k1, b, s, p)
                      for b, s, p in zip(blocks, streams, paths)])
    cpu32 = np.array([cpu_rng.normal_block_f32(k0, k1, b, s, p)
                      for b, s, p in zip(blocks, streams, paths)], np.float32)
    if BITWISE:
        assert np.array_equal(out64, cpu64), f"max |dz| = {np.abs(out64 - cpu64).max()}"
    else:  # libdevice log/sin/cos: within a few ulp of glibc's
        np.testing.assert_allclose(out64, cpu64, rtol=0, atol=64 * EPS64)
    if BITWISE and not FASTMATH_F32:
        assert np.array_equal(out32, cpu32), f"max |dz| = {np.abs(out32 - cpu32).max()}"
    else:
        # Fast-math float32 (approximate division and square root, FMA): 1e-4 bounds the
        # effect on |z| <= F32_NORMAL_MAX; a wrong counter, lane or key moves z by O(1).
        dz = np.abs(out32.astype(np.float64) - cpu32)
        assert dz.max() < 1e-4, f"max |dz| = {dz.max()}"
    assert np.abs(out32).max() <= philox.F32_NORMAL_MAX * (1 + 1e-6)


@device_only
@pytest.mark.parametrize("case", CASES + GEN_CASES + KMATH_CASES,
                         ids=[c[0] for c in CASES + GEN_CASES + KMATH_CASES])
def test_float64_paths_equal_the_reference(case):
    """Every method, noise kind, x0 form, params form and save_at form; the generative
    models and a model calling kmath's sin, cos and pow too. Bit for bit, except for the
    generative models on a real GPU (their exp/tanh/erf are libdevice's against numpy's
    libm: a relative 1e-12 of the paths' scale)."""
    name, model, method, kw = case
    gpu = _run(model, method, "cuda", **kw)
    x, saved = _reference(model, method, kw)
    assert np.all(np.isfinite(gpu.x))
    if IN_SIMULATOR or case not in GEN_CASES:
        assert np.array_equal(gpu.x, x), f"max |dx| = {np.abs(gpu.x - x).max()}"
        if gpu.paths is not None:
            assert np.array_equal(gpu.paths, saved)
    else:
        np.testing.assert_allclose(gpu.x, x, rtol=0, atol=1e-12 * (1 + np.abs(x).max()))
    if gpu.mean is not None:  # per-chunk Welford vs two-pass: equal to rounding
        np.testing.assert_allclose(gpu.mean, saved.mean(axis=1), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gpu.var, saved.var(axis=1, ddof=1), rtol=1e-12,
                                   atol=1e-24)


@device_only
def test_reference_rejects_a_shifted_stream():
    """The reference comparison is not vacuous: one step's noise off by one normal."""
    _, model, method, kw = CASE["general-em-first-path"]
    gpu = _run(model, method, "cuda", **kw)
    x, _ = _reference(model, method, dict(kw, first_path=kw["first_path"] + 1))
    assert not np.any(gpu.x == x)


@device_only
@pytest.mark.parametrize("case", CPU_CASES, ids=[c[0] for c in CPU_CASES])
def test_float64_paths_and_stats_equal_cpu(case):
    _, model, method, kw = case
    gpu = _run(model, method, "cuda", **kw)
    cpu = _run(model, method, "cpu", **kw)
    _assert_same(gpu, cpu)


@device_only
def test_ulp_comparison_rejects_another_seed():
    """The few-ulp comparison used on a GPU with libdevice transcendentals is not vacuous."""
    _, model, method, kw = CASE["additive-em-normal-stats"]
    gpu = _run(model, method, "cuda", **kw)
    other = _run(model, method, "cpu", seed=12, **kw)
    with pytest.raises(AssertionError):
        _assert_same(gpu, other, bitwise=False)


#: Monte Carlo outputs (observables, stopping, histograms, antithetic pairs, streamed
#: statistics-only runs) on both devices. The CPU kernels are those of
#: tests/test_montecarlo.py (same model functions: one compile, shared by the disk cache).
MC_CASES = [
    ("linear-observables-antithetic-histogram", LINEAR,
     dict(x0=fs.Normal(1.0, 0.1), params=gbm_params(0.05, 0.4), save_at=3, stats=True,
          observables=LINEAR_OBS, antithetic=True, first_path=6,
          histogram=dict(bins=6, range=(0.7, 1.3)))),
    ("box-stopping-stored", BOX,
     dict(x0=0.5, params=(0.6, 0.0, 1.0), save_at=4, stats=True, keep_paths=True,
          observables=BOX_OBS, stop_when=outside_box,
          histogram=dict(bins=5, range=(-0.2, 1.2)))),
    ("box-stopping-statistics-only", BOX,
     dict(x0=fs.Normal(0.5, 0.3), params=(0.6, 0.0, 1.0), save_at=2, keep_x=False,
          observables=BOX_OBS, stop_when=outside_box, histogram=dict(bins=3, range=(0, 1)))),
    # The schemes of the methods issue with every Monte Carlo output.
    ("linear-sriw1-antithetic-observables-histogram", LINEAR,
     dict(method="sriw1", x0=fs.Normal(1.0, 0.1), params=gbm_params(0.05, 0.4), save_at=3,
          stats=True, observables=LINEAR_OBS, antithetic=True,
          histogram=dict(bins=6, range=(0.7, 1.3)))),
    ("linear-sriw1-three-point-stopping", LINEAR,
     dict(method="sriw1", increments="three_point", x0=1.0, params=gbm_params(0.05, 0.4),
          save_at=2, stats=True, observables=LINEAR_OBS, stop_when=above_1_2,
          histogram=dict(bins=4, range=(0.7, 1.3)))),
]
MC_FIELDS = ("x", "paths", "mean", "var", "count", "obs_mean", "obs_var", "obs_count",
             "hit_time", "hit_count", "hit_mean", "hit_var", "n_nonfinite")


@device_only
@pytest.mark.parametrize("case", MC_CASES, ids=[c[0] for c in MC_CASES])
def test_monte_carlo_outputs_equal_cpu(case):
    _, model, kw = case
    kw = dict(kw)
    method = kw.pop("method", "euler_maruyama")
    gpu = _run(model, method, "cuda", **kw)
    cpu = _run(model, method, "cpu", **kw)
    for name in MC_FIELDS:
        g, c = getattr(gpu, name), getattr(cpu, name)
        assert (g is None) == (c is None), name
        if g is None:
            continue
        if BITWISE or name in ("count", "obs_count", "hit_count", "n_nonfinite"):
            assert np.array_equal(g, c, equal_nan=True), name
        else:
            np.testing.assert_allclose(g, c, rtol=1e-12, atol=1e-14, err_msg=name)
    for part in ("counts", "below", "above"):
        assert np.array_equal(getattr(gpu.histogram, part), getattr(cpu.histogram, part))
    assert gpu.histogram.counts.sum() > 0
    if cpu.hit_count is not None:
        assert 0 < cpu.hit_count < N  # some paths stopped, some did not


@device_only
def test_monte_carlo_comparison_rejects_another_stopping_level():
    """The comparison above is not vacuous: a shifted boundary changes the outputs."""
    _, model, kw = MC_CASES[1]
    gpu = _run(model, "euler_maruyama", "cuda", **kw)
    cpu = _run(model, "euler_maruyama", "cpu", **dict(kw, params=(0.6, 0.0, 0.9)))
    assert not np.array_equal(gpu.hit_time, cpu.hit_time)
    assert not np.array_equal(gpu.histogram.counts, cpu.histogram.counts)


def _f32_error_ratio(model, method, kw, gpu_kw=None):
    """max |x_gpu32 - x_cpu64| over max |x_cpu32 - x_cpu64| (plus a floor of 16 eps32)."""
    g32 = _run(model, method, "cuda", dtype="float32", **dict(kw, **(gpu_kw or {})))
    c32 = _run(model, method, "cpu", dtype="float32", **kw)
    c64 = _run(model, method, "cpu", dtype="float64", **kw)
    scale = 1.0 + np.abs(c64.x).max()
    gpu_err = np.abs(g32.x.astype(np.float64) - c64.x).max()
    cpu_err = np.abs(c32.x.astype(np.float64) - c64.x).max()
    return gpu_err / (cpu_err + 16 * EPS32 * scale), gpu_err, cpu_err


# float32 tolerance where fast-math is on: the GPU's float32 path may then differ from the
# CPU's, but it must be as close to the float64 path (the same Brownian path in exact-er
# arithmetic) as the CPU's float32 path is, within a factor 4.
F32_RATIO = 4.0


@device_only
def test_float32_paths_equal_cpu():
    """Without fast-math (the default) float32 paths and statistics are the CPU's bits."""
    _, model, method, kw = CASE["additive-em-normal-stats"]
    gpu = _run(model, method, "cuda", dtype="float32", **kw)
    cpu = _run(model, method, "cpu", dtype="float32", **kw)
    if FASTMATH_F32:
        ratio, gpu_err, cpu_err = _f32_error_ratio(model, method, kw)
        assert ratio < F32_RATIO, (f"GPU float32 error {gpu_err:.3g} vs CPU float32 error "
                                   f"{cpu_err:.3g} (both against CPU float64)")
    else:
        _assert_same(gpu, cpu, bitwise=True)


@device_only
def test_float32_tolerance_rejects_another_stream():
    _, model, method, kw = CASE["additive-em-normal-stats"]
    ratio, gpu_err, cpu_err = _f32_error_ratio(model, method, kw, {"seed": 12})
    assert ratio > 100 * F32_RATIO, (gpu_err, cpu_err)


@device_only
def test_stats_equal_stats_of_stored_paths():
    r = _run(OU, "euler_maruyama", "cuda", n_paths=600, n_steps=3, x0=fs.Normal(0, 1),
             save_at=3, stats=True, keep_paths=True)  # 600 paths: two chunks of 512
    np.testing.assert_allclose(r.mean, r.paths.mean(axis=1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(r.var, r.paths.var(axis=1, ddof=1), rtol=1e-12)
    assert np.all(r.count == 600)
    _assert_same(r, _run(OU, "euler_maruyama", "cpu", n_paths=600, n_steps=3,
                         x0=fs.Normal(0, 1), save_at=3, stats=True, keep_paths=True))


@device_only
# The simulator runs the kernel on numpy scalars, in threads that errstate does not reach.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nonfinite_paths_counted_and_left_out_of_stats():
    # Per-path parameters: with theta = -1e80 a path grows by a factor ~1e80 h per step and
    # overflows float64 in the 4th step; 600 paths span two chunks.
    n = 600
    theta = np.where(np.arange(n) % 7 == 3, -1e80, 1.0)
    params = np.column_stack([theta, np.full(n, 0.2)])
    kw = dict(x0=1.0, params=params, save_at=[0.0, 1.0], stats=True, keep_paths=True,
              n_paths=n, n_steps=4)
    gpu = _run(OU, "euler_maruyama", "cuda", **kw)
    cpu = _run(OU, "euler_maruyama", "cpu", **kw)
    expected = int(np.sum(theta < 0))
    assert gpu.n_nonfinite == expected
    _assert_same(gpu, cpu)
    assert np.all(gpu.count[-1] == n - expected) and np.all(gpu.count[0] == n)
    finite = gpu.paths[-1][np.all(np.isfinite(gpu.paths[-1]), axis=1)]
    np.testing.assert_allclose(gpu.mean[-1], finite.mean(axis=0), rtol=1e-12)


def _welford_reference(buf, chunk, row_gate, pair):
    """Per-chunk (count, mean, m2) of ``buf`` (n_save, n_paths, width) in plain Python, in
    the CPU driver's order and arithmetic (cpu._welford), value by value."""
    n_save, n_paths, width = buf.shape
    n_chunks = -(-n_paths // chunk)
    count = np.zeros((n_chunks, n_save, width), np.int64)
    mean = np.zeros((n_chunks, n_save, width))
    m2 = np.zeros((n_chunks, n_save, width))
    for c in range(n_chunks):
        for s in range(n_save):
            for j in range(width):
                for i in range(c * chunk, min(c * chunk + chunk, n_paths), 2 if pair else 1):
                    v = np.float64(buf[s, i, j])
                    if pair:
                        v = (v + np.float64(buf[s, i + 1, j])) * 0.5
                    if not np.isfinite(v) or (row_gate and not np.all(np.isfinite(buf[s, i]))):
                        continue
                    count[c, s, j] += 1
                    d = v - mean[c, s, j]
                    mean[c, s, j] += d / count[c, s, j]
                    m2[c, s, j] += d * (v - mean[c, s, j])
    return count, mean, m2


@device_only
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reductions_equal_the_cpu_order_bit_for_bit(dtype):
    """The statistics kernel (tasks staged through shared memory in tiles of a team of
    threads) gives the per-chunk Welford sums of the CPU's path order bit for bit, for
    chunks longer than a tile and a short last chunk, with non-finite values, per value
    and per row, single and antithetic-pair values; the histogram kernel (contiguous path
    ranges per part) gives numpy's counts. Checked against plain Python, not against the
    CPU driver, so the test also stands where the CPU's kernels are not compiled."""
    from fastsde.kernels import cuda as kc
    from fastsde.kernels.layout import hist_slot

    rng = np.random.default_rng(5)
    n_save, n_paths, width, chunk = 2, 74, 3, 34  # 3 chunks, the last of 6 paths
    buf = (rng.standard_normal((n_save, n_paths, width)) * 3.0).astype(dtype)
    buf[0, 5, 1] = np.nan
    buf[1, 40, 2] = np.inf
    buf[1, 41, 0] = -np.inf
    d_buf = cuda.to_device(buf)
    kernel = kc.CudaKernel(None, None, np.dtype(dtype).type, None,
                           kc._stats_dispatcher(np.dtype(dtype).type))
    for row_gate, pair in ((1, 0), (0, 0), (0, 1)):
        shape = (-(-n_paths // chunk), n_save, width)
        out = (cuda.to_device(np.full(shape, -1, np.int64)),
               cuda.to_device(np.full(shape, np.nan)), cuda.to_device(np.full(shape, np.nan)))
        kc.launch_reductions(kernel, chunk, [("stats", kernel.stats, d_buf, row_gate, pair,
                                             out)])
        got = [a.copy_to_host() for a in out]
        want = _welford_reference(buf, chunk, row_gate, pair)
        for name, g, w in zip(("count", "mean", "m2"), got, want):
            assert np.array_equal(g, w), (
                f"{name} (row_gate={row_gate}, pair={pair}): max diff "
                f"{np.nanmax(np.abs(g - w))}")
    edges = np.array([np.linspace(-4.0, 4.0, 9)] * width)
    d_hist = cuda.to_device(np.zeros((n_save, width, 10), np.int64))
    kc.launch_reductions(kernel, chunk, [("hist", d_buf, cuda.to_device(edges), d_hist)])
    want = np.zeros((n_save, width, 10), np.int64)
    for s in range(n_save):
        for i in range(n_paths):
            if np.all(np.isfinite(buf[s, i])):
                for j in range(width):
                    want[s, j, hist_slot(np.float64(buf[s, i, j]), edges, j, 8)] += 1
    assert np.array_equal(d_hist.copy_to_host(), want)


def _scratch_from_cuda(t, x, p, out):  # names numba.cuda: the simulator must swap it
    a = cuda.local.array(2, numba.float64)
    a[0] = x[0]
    out[0] = a[0]


@pytest.mark.skipif(not IN_SIMULATOR, reason="the simulator's device functions")
def test_simulator_wraps_only_device_functions_that_name_cuda():
    """Under the simulator, device functions that do not name numba.cuda run as plain
    functions (its wrapper would only take a per-module lock at every call, on which a
    block's threads queued: minutes for a 384-path run); one that does is wrapped, so
    that it sees the thread's fake cuda module, and runs in a kernel."""
    from fastsde.kernels import cuda as kc

    jit = kc.device_jit(False)
    assert jit(osc_drift) is osc_drift
    wrapped = jit(_scratch_from_cuda)
    assert wrapped is not _scratch_from_cuda

    def kernel(out):
        x = cuda.local.array(1, numba.float64)
        x[0] = 2.5
        wrapped(0.0, x, x, out)

    out = np.zeros(1)
    cuda.jit(kernel)[1, 1](out)
    assert out[0] == 2.5


def undeclared_drift(t, x, p, out):
    out[0] = -p[0] * x[0]


def undeclared_diffusion(t, x, p, out):
    out[0] = p[1]


@device_only
def test_params_given_to_a_model_declared_without_them():
    """The contract issue's snippet, at simulator size: per-path params (width 2) on a
    model declared with none give the CPU's bits and, per block, the stationary variance
    sigma^2 / (2 theta - theta^2 h) of the Euler-Maruyama chain within 5 SE."""
    model = fs.SDE(undeclared_drift, undeclared_diffusion, dim=1, noise="additive")
    n_block, thetas, h = 128, (0.5, 1.0, 2.0), 0.05
    P = np.column_stack([np.repeat(thetas, n_block), np.ones(3 * n_block)])
    kw = dict(x0=0.0, t_span=(0, 8), n_steps=160, n_paths=3 * n_block, params=P, seed=1,
              progress=False)
    gpu = fs.simulate(model, device="cuda", **kw)
    cpu = fs.simulate(model, device="cpu", **kw)
    np.testing.assert_array_equal(gpu.x, cpu.x)
    for k, theta in enumerate(thetas):
        x = gpu.x[k * n_block:(k + 1) * n_block, 0]
        exact = 1.0 / (2 * theta - theta ** 2 * h)
        se = exact * math.sqrt(2.0 / (n_block - 1))
        assert abs(x.var(ddof=1) - exact) < 5 * se, (theta, x.var(ddof=1), exact, se)


@device_only
def test_rows_equal_run_with_first_path():
    kw = dict(x0=fs.Normal(0.5, 2.0), save_at=3)
    full = _run(OU, "euler_maruyama", "cuda", n_paths=N, **kw)
    for a, b in ((0, 7), (13, 40), (39, 40)):
        part = _run(OU, "euler_maruyama", "cuda", n_paths=b - a, first_path=a, **kw)
        assert np.array_equal(full.x[a:b], part.x)
        assert np.array_equal(full.paths[:, a:b], part.paths)


@device_only
def test_device_batches_give_the_same_result(monkeypatch):
    """Runs cut into chunk-aligned device batches (small device memory) change nothing."""
    from fastsde.kernels import cuda as kc

    kw = dict(x0=fs.Normal(0, 1), save_at=3, stats=True, keep_paths=True, n_paths=1100,
              n_steps=3)
    whole = _run(OU, "euler_maruyama", "cuda", **kw)
    monkeypatch.setattr(kc, "DEVICE_BATCH_BYTES", 1)  # one chunk (512 paths) per batch
    batched = _run(OU, "euler_maruyama", "cuda", **kw)
    for name in ("x", "paths", "mean", "var", "count"):
        assert np.array_equal(getattr(whole, name), getattr(batched, name)), name


def late_oob_drift(t, x, p, out):
    # In bounds at the start state (so the pre-flight passes), out of bounds once x > 0.5.
    i = 0 if x[0] < 0.5 else 3
    out[i] = 1.0


LATE_OOB = fs.ODE(late_oob_drift, dim=1, name="late_oob")


@device_only
def test_debug_mode_on_the_device():
    """The simulator checks every index (debug or not), so debug=True finds the bad one;
    numba.cuda cannot check indices on a GPU, so there debug=True is refused up front."""
    if IN_SIMULATOR:
        with pytest.raises(fs.ModelError, match="late_oob.*indexed outside"):
            fs.simulate(LATE_OOB, 0.0, (0.0, 1.0), 10, 8, method="euler", device="cuda",
                        debug=True, progress=False)
    else:
        with pytest.raises(ValueError, match="debug=True .* device='cpu'"):
            fs.simulate(LATE_OOB, 0.0, (0.0, 1.0), 10, 8, method="euler", device="cuda",
                        debug=True, progress=False)


@device_only
def test_launch_arguments_match_the_compiled_signature(monkeypatch):
    """On a GPU the kernels are compiled once for these types and further compilation is
    disabled (a variant compiled at launch would have FMA contraction on), so run() must
    pass exactly these types."""
    from fastsde.kernels import cuda as kc

    seen = []
    real_launch = kc.launch

    def spy(kernel, device_args, reductions=()):
        seen.append((kernel, device_args, reductions))
        real_launch(kernel, device_args, reductions)

    def host(a):
        return a.copy_to_host() if hasattr(a, "copy_to_host") else a

    monkeypatch.setattr(kc, "launch", spy)
    for model, kw in ((OU, dict(x0=fs.Normal(0, 1), stats=True, save_at=2,
                                observables={"sq": SQUARE}, stop_when=ABOVE_TWO,
                                histogram=dict(bins=4, range=(-1, 1)))),
                      (GBM, dict(x0=np.ones((N, 2)), params=np.ones((N, 2)), save_at=2,
                                 dtype="float32"))):
        _run(model, "euler_maruyama", "cuda", **kw)
        kernel, device_args, reductions = seen[-1]
        types = tuple(numba.typeof(host(a)) for a in device_args)
        assert types == kc.path_signature(model, kernel.dtype, kernel.n_obs)
        for red in reductions:
            if red[0] == "stats":
                _, disp, buf, gate, pair, out = red
                buf_dtype = np.dtype(host(buf).dtype).type
                stats_types = tuple(numba.typeof(host(a)) for a in
                                    (buf, device_args[13], gate, pair, *out))
                assert stats_types == kc.stats_signature(buf_dtype)
            else:
                _, buf, edges, hist = red
                parts = 1
                hist_types = tuple(numba.typeof(host(a)) for a in (buf, edges, parts, hist))
                assert hist_types == kc.hist_signature(kernel.dtype)


@device_only
def test_stats_only_run_copies_back_only_statistics():
    from fastsde import api
    from fastsde.kernels import cuda as kc
    from fastsde.kernels import layout

    kernel = kc.get_kernel(OU, methods.METHODS["euler_maruyama"], np.float64)
    n, chunk = 40, api.CHUNK_PATHS
    st = [np.zeros((1, 2, 1), np.int64), np.zeros((1, 2, 1)), np.zeros((1, 2, 1))]
    args = layout.empty_args(layout.kernel_sizes(1, OU.n_params, 0), np.float64)._replace(
        params=OU.params.reshape(1, -1), h=0.1, t1=1.0, n_steps=10,
        save_steps=np.array([0, 10]), key0=np.uint64(1), key1=np.uint64(2), n_paths=n,
        chunk=chunk, st_count=st[0], st_mean=st[1], st_m2=st[2],
        nonfinite=np.zeros(1, np.int64))
    kc.run(kernel, args)
    assert st[0].tolist() == [[[n], [n]]] and st[1][0, 0, 0] == 0.0 and st[2][0, 1, 0] > 0


# --- multilevel Monte Carlo: the level kernel ----------------------------------------

def mlmc_barrier(t, x, p):
    return x[0] - 115.0


def mlmc_range(t, x, p):
    return DISCOUNT * (x[2] - x[1])  # running maximum - running minimum


def _mlmc_level_sums(device, method, level, n_paths, coupled=1, stop=None, first=0,
                     running=()):
    from fastsde.kernels import cpu as kcpu
    from fastsde.streams import key_from_seed

    key0, key1 = key_from_seed(np.random.SeedSequence(11).spawn(level + 1)[level])
    n0, M = 2, 2
    args = (np.array([100.0]), np.array([MLMC_GBM.params], np.float64), 0.0, 1.0,
            n0 * M ** (level - 1), M, coupled, key0, key1, np.uint64(first), n_paths, 512)
    meth = methods.METHODS[method]
    payoff = mlmc_range if running else mlmc_call
    if device == "cuda":
        from fastsde.kernels import cuda as kc

        kernel = kc.get_mlmc_kernel(MLMC_GBM, meth, np.float64, payoff, 512, stop=stop,
                                    running=running)
        return kc.run_mlmc_level(kernel, *args)
    kernel = kcpu.get_mlmc_kernel(MLMC_GBM, meth, np.float64, payoff, MLMC_GBM.n_params,
                                  stop=stop, running=running)
    n_chunks = -(-n_paths // 512)
    sums = np.zeros((n_chunks, 6))
    bad = np.zeros(n_chunks, np.int64)
    kernel(*args[:-2], args[-2], args[-1], sums, bad)
    return sums, bad


@device_only
@pytest.mark.parametrize("method", ["euler_maruyama", "milstein"])
def test_mlmc_level_sums_equal_cpu(method):
    """Level 2 of the call, 700 pairs (a full and a partial chunk, the batch starting at
    an odd path): the per-chunk sums of Y, Y^2, Y^3, Y^4, P_f, P_f^2 and the non-finite
    counts equal the CPU kernel's bit for bit, coupled, with the coupling broken the
    CPU's way, with each path of a pair stopped at a barrier, and with the running
    minimum and maximum of a lookback payoff (stopped at the barrier too)."""
    variants = [dict(), dict(coupled=2), dict(first=3)]
    if method == "milstein":  # stopping and extrema do not depend on the method: once
        variants += [dict(stop=mlmc_barrier),
                     dict(running=((0, 1.0), (0, -1.0)), stop=mlmc_barrier)]
    for kw in variants:
        gpu = _mlmc_level_sums("cuda", method, 2, 700, **kw)
        cpu = _mlmc_level_sums("cpu", method, 2, 700, **kw)
        assert np.array_equal(gpu[1], cpu[1]), kw
        assert np.array_equal(gpu[0], cpu[0]), (kw, gpu[0] - cpu[0])
    coupled = _mlmc_level_sums("cuda", method, 2, 700)[0]
    broken = _mlmc_level_sums("cuda", method, 2, 700, coupled=2)[0]
    assert broken[:, 1].sum() > 10 * coupled[:, 1].sum()


@device_only
def test_mlmc_level_comparison_rejects_another_level():
    gpu = _mlmc_level_sums("cuda", "milstein", 2, 700)[0]
    assert not np.array_equal(gpu, _mlmc_level_sums("cpu", "milstein", 3, 700)[0])
    assert not np.array_equal(gpu, _mlmc_level_sums("cpu", "milstein", 2, 700, first=1)[0])


@device_only
def test_mlmc_on_the_device_equals_cpu():
    """fs.mlmc end to end: the same pairs per level and the same value, bit for bit."""
    kw = dict(eps=0.5, n0=1, n_initial=500, seed=4, progress=False)
    gpu = fs.mlmc(MLMC_GBM, 100.0, (0.0, 1.0), mlmc_call, device="cuda", **kw)
    cpu = fs.mlmc(MLMC_GBM, 100.0, (0.0, 1.0), mlmc_call, device="cpu", **kw)
    assert gpu.device == "cuda" and cpu.device == "cpu"
    assert [lv.n_paths for lv in gpu.levels] == [lv.n_paths for lv in cpu.levels]
    assert gpu.value == cpu.value and gpu.se == cpu.se, (gpu.value, cpu.value)


# --- dispatch and error messages (this process) ---------------------------------------

@pytest.mark.skipif(CUDA_OK, reason="a usable CUDA device (or the simulator) is present")
def test_device_cuda_without_a_gpu_says_why():
    with pytest.raises(fs.DeviceError, match="device='cuda' cannot be used: .*(driver|GPU)"):
        fs.simulate(OU, 0.0, (0, 1), 4, 4, device="cuda")
    with pytest.raises(fs.DeviceError, match="device='cuda' cannot be used"):
        fs.mlmc(MLMC_GBM, 100.0, (0.0, 1.0), mlmc_call, 0.1, device="cuda", progress=False)
    from fastsde import api

    assert api._resolve_device("auto") == "cpu"


@pytest.mark.skipif(IN_SIMULATOR, reason="the simulator checks indices: debug is allowed")
def test_debug_is_refused_for_a_gpu_before_compiling():
    from fastsde.kernels import cuda as kc

    with pytest.raises(ValueError, match="debug=True .*not available with device='cuda'"):
        kc.get_kernel(OU, methods.METHODS["euler_maruyama"], np.float64, debug=True)


def test_reason_names_numba_cuda_when_it_is_missing(monkeypatch):
    monkeypatch.setattr(cuda, "implementation", "Built-in", raising=False)
    ok, why = cuda_available()
    assert not ok and "numba-cuda is not installed" in why and "pip install" in why


# --- PTX for sm_90 (no GPU needed; NVVM and NVRTC from PyPI) --------------------------

def _ptx_skip_reason():
    if IN_SIMULATOR:
        return "the CUDA simulator cannot compile PTX (the PTX tests run without it)"
    try:
        if getattr(cuda, "implementation", None) != "NVIDIA":
            return "numba-cuda is not installed"
        from numba.cuda.cudadrv import nvrtc, nvvm

        if not nvvm.is_available():
            return "the CUDA toolkit's NVVM is not installed (pip install 'fastsde[test]')"
        nvrtc.get_supported_ccs()
    except Exception as exc:  # noqa: BLE001
        return f"NVVM/NVRTC cannot be loaded ({' '.join(str(exc).split())[:200]})"
    return None


PTX_SKIP = _ptx_skip_reason()
needs_nvvm = pytest.mark.skipif(PTX_SKIP is not None, reason=str(PTX_SKIP))
PTX_VARIANTS = sorted({(c[1].name, c[2], c[3].get("increments")): c for c in CASES}.values(),
                      key=lambda c: c[0])


_PTX = {}


def _ptx(case, dtype, **kw):
    """compile_ptx of a case's kernels for sm_90, once per (case, dtype) per process:
    the FMA checks and the ptxas checks read the same PTX."""
    from fastsde.kernels import cuda as kc

    key = (case[0], dtype)
    if key not in _PTX:
        kw.setdefault("increments", case[3].get("increments", "gaussian"))
        _PTX[key] = kc.compile_ptx(case[1], methods.METHODS[case[2]], np.dtype(dtype).type,
                                   cc=(9, 0), **kw)
    return _PTX[key]


@needs_nvvm
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", PTX_VARIANTS, ids=[c[0] for c in PTX_VARIANTS])
def test_every_kernel_compiles_to_ptx_for_sm90(case, dtype):
    from fastsde.kernels import cuda as kc

    ptx = _ptx(case, dtype)
    for name, text in ptx.items():
        assert ".target sm_90" in text and ".entry" in text, name
    if not kc.FASTMATH[np.dtype(dtype).type]:
        # FMA contraction off: every product is rounded before it is added, as on the CPU.
        # The only FMAs are the float32 transform's explicit ones (libdevice fmaf, as
        # llvm.fma on the CPU); the float64 kernels, which have none, show that NVVM fused
        # nothing of its own.
        for name, text in ptx.items():
            assert "fma.rn.f64" not in text, name
            if dtype == "float64":
                assert "fma.rn" not in text, name
        assert ("mul.rn.f64" if dtype == "float64" else "mul.rn.f32") in ptx["path"]
        if dtype == "float32":
            assert "fma.rn.f32" in ptx["path"]


@needs_nvvm
@pytest.mark.parametrize("math_source,dtype", [("fastsde", "float32"), ("fastsde", "float64"),
                                               ("libm", "float64")])
def test_model_math_is_kmath_in_the_ptx(math_source, dtype):
    """A model's math.sin, math.cos and ``x ** y`` compile into the CUDA kernel as
    fastsde.kmath's own operations with math="fastsde": none of what libdevice's sin,
    cos and pow leave in PTX (its 2/pi table, its slow-path reduction, its pow helper;
    NVVM inlines libdevice, so no __nv_ name appears either way), which math="libm"
    shows (the check can fail)."""
    from fastsde.kernels import cuda as kc

    model = fs.SDE(_trig_pow_drift, _trig_pow_diffusion, 2, noise="additive",
                   params=(2.0, 1.0, 1.5), math=math_source)
    ptx = kc.compile_ptx(model, methods.METHODS["euler_maruyama"], np.dtype(dtype).type,
                         cc=(9, 0))["path"]
    assert ".entry" in ptx
    markers = [m for m in ("__cudart_i2opi", "__internal_trig_reduction",
                           "__internal_accurate_pow") if m in ptx]
    if math_source == "fastsde":
        assert markers == [], markers
        # kmath's table of 2/pi once: each reference to a global array is a copy of it in
        # the kernel's constant data, and twelve copies of the float64 table (606 KiB)
        # were more than the 64 KiB a kernel may have: its launch failed to link.
        table = (fmath.F32_TRIG_TABLE if dtype == "float32" else fmath.F64_TRIG_TABLE).nbytes
        copies = _constant_arrays(ptx).count(table)
        assert copies == 1, f"{copies} copies of kmath's {table}-byte table in the kernel"
        if ptxas_checks.tool("ptxas"):
            ptxas_checks.resources(ptx)  # it assembles (the launch's link runs ptxas too)
    else:
        assert markers == ["__cudart_i2opi", "__internal_trig_reduction",
                           "__internal_accurate_pow"], markers


def _constant_arrays(ptx):
    """Sizes in bytes of the arrays ``ptx`` declares in constant memory."""
    return [int(n) for n in re.findall(r"^\.const\s+\.align\s+\d+\s+\.b8\s+\S+\[(\d+)\]",
                                       ptx, flags=re.M)]


_BIG = np.arange(5000.0)  # 40000 bytes


def _two_reads_of_a_global_array(out, i):
    out[0] = _BIG[i] + _BIG[i + 1]


@needs_nvvm
def test_constant_data_checks_are_not_vacuous():
    """The checks above can fail: numba-cuda copies a global array into constant memory
    once per reference, and two copies of a 40000-byte array are more than ptxas takes."""
    ptx, _ = cuda.compile_ptx(_two_reads_of_a_global_array,
                              (numba.float64[::1], numba.int64), cc=(9, 0))
    assert _constant_arrays(ptx) == [40000, 40000]
    if ptxas_checks.tool("ptxas"):
        with pytest.raises(AssertionError, match="too much global constant data"):
            ptxas_checks.resources(ptx)


@needs_nvvm
def test_too_much_constant_data_is_explained(monkeypatch):
    """The link's refusal reaches the user as a ModelError that says what to change."""
    import types

    from fastsde.errors import ModelError
    from fastsde.kernels import cuda as kc

    # The model's functions compile alone (checked without a GPU: no driver to ask here).
    compiles = types.SimpleNamespace(compile_device=lambda sig: None)
    monkeypatch.setattr(kc, "cuda", types.SimpleNamespace(jit=lambda **kw: lambda f: compiles))
    refusal = RuntimeError("nvJitLink error log: ptxas error   : File uses too much global "
                           "constant data (0x97980 bytes, 0x10000 max)")
    with pytest.raises(ModelError, match=r"64 KiB of constant data(.|\n)*0x97980 bytes"):
        kc._diagnose(OSC, np.float64, refusal)


@needs_nvvm
@pytest.mark.parametrize("case", GEN_CASES, ids=[c[0] for c in GEN_CASES])
def test_generative_models_compile_to_ptx_for_sm90(case):
    ptx = _ptx(case, "float32")
    assert ".target sm_90" in ptx["path"] and ".entry" in ptx["path"]


@needs_nvvm
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_monte_carlo_kernels_compile_to_ptx_for_sm90(dtype):
    """Observables, stopping, the histogram kernel: typing errors the simulator does not
    catch fail here."""
    ptx = _ptx(MC_CASE, dtype, obs=tuple(BOX_OBS.items()), stop=outside_box)
    for name in ("path", "stats", "hist"):
        assert ".target sm_90" in ptx[name] and ".entry" in ptx[name], name
        # float32 paths carry the transform's explicit float32 FMAs, nothing fused by NVVM
        assert ("fma.rn.f64" if dtype == "float32" else "fma.rn") not in ptx[name], name
    assert "atom.shared.add" in ptx["hist"] and "atom.global.add" in ptx["hist"]


@needs_nvvm
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", ["euler_maruyama", "milstein"])
def test_mlmc_level_kernel_compiles_to_ptx_for_sm90(method, dtype):
    """The level kernel with a barrier: one block's chunk folded in shared memory, and
    nothing fused by NVVM (the float32 transform's explicit FMAs only)."""
    from fastsde.kernels import cuda as kc

    ptx = kc.compile_mlmc_ptx(MLMC_GBM, methods.METHODS[method], np.dtype(dtype).type,
                              mlmc_range, 512, stop=mlmc_barrier,
                              running=((0, 1.0), (0, -1.0)))
    assert ".target sm_90" in ptx and ".entry" in ptx
    assert ".shared" in ptx and "bar.sync" in ptx
    assert ("fma.rn.f64" if dtype == "float32" else "fma.rn") not in ptx
    assert "atom.global.add" in ptx
    if ptxas_checks.tool("ptxas"):
        # docs/cuda.md: 72-77 registers in float32, 98-109 in float64, nothing spilled.
        ptxas_checks.check(f"mlmc-{method}-{dtype}", ptx, ptxas_checks.MAX_REGISTERS_ANY)


MC_CASE = ("box-observables-stop", BOX, "euler_maruyama", {})
PTXAS_SKIP = PTX_SKIP or (None if ptxas_checks.tool("ptxas") else
                          "ptxas was not found (pip install nvidia-cuda-nvcc-cu12)")


def _user_local_bytes(case, itemsize):
    """Bytes of local memory the model's own functions need: MLPField's forward pass
    indexes its two scratch arrays (fastsde.scratch.local_array) and ``out`` with loop
    indices whose bounds change from layer to layer, so they cannot be registers (each
    array 16-byte aligned). Every other model of the suite: none."""
    if not case[0].startswith("mlp"):
        return 0
    widths = (GEN_MLP.shapes[0][1],) + tuple(o for o, _ in GEN_MLP.shapes)

    def aligned(n):
        return -(-n * itemsize // 16) * 16

    return 2 * aligned(max(widths)) + aligned(case[1].dim)


RESOURCE_CASES = ([(c, d) for c in PTX_VARIANTS for d in ("float32", "float64")]
                  + [(MC_CASE, d) for d in ("float32", "float64")]
                  + [(c, "float32") for c in GEN_CASES])


@pytest.mark.skipif(PTXAS_SKIP is not None, reason=str(PTXAS_SKIP))
@pytest.mark.parametrize("case,dtype", RESOURCE_CASES,
                         ids=[f"{c[0]}-{d}" for c, d in RESOURCE_CASES])
def test_kernels_fit_in_registers(case, dtype):
    """docs/cuda.md's register table, kept true by ptxas -v for sm_90 over every kernel
    variant this file compiles: no spills; no stack frame (state, stage slopes, noise,
    normals and reductions all in registers, so no local memory in the time loop) except
    the arrays a model's own functions index at run time; registers within the bounds.
    The float64 noise and initial-state loops are written out per component
    (cuda._make_fill_noise): as loops they left 24-48 byte frames (3-d GBM, general
    2 x 3 noise) with local loads and stores at every step."""
    kw = dict(obs=tuple(BOX_OBS.items()), stop=outside_box) if case is MC_CASE else {}
    ptx = _ptx(case, dtype, **kw)
    generative = case in GEN_CASES
    bound = ptxas_checks.MAX_REGISTERS_ANY if generative else \
        ptxas_checks.MAX_REGISTERS_BY_METHOD.get(case[2], ptxas_checks.MAX_REGISTERS)[dtype]
    ptxas_checks.check(f"{case[0]} {dtype} path", ptx["path"], bound,
                       _user_local_bytes(case, np.dtype(dtype).itemsize))
    for name in ("stats", "hist"):
        ptxas_checks.check(f"{name} {dtype}", ptx[name], ptxas_checks.MAX_REGISTERS_ANY)


@pytest.mark.skipif(PTXAS_SKIP is not None, reason=str(PTXAS_SKIP))
def test_register_check_sees_local_memory():
    """The check is not vacuous: the noise loop kept as a loop (past UNROLL_NOISE_MAX)
    puts the float64 increments of a 3-d GBM in local memory, which it refuses."""
    from fastsde.kernels import cuda as kc

    saved = kc.UNROLL_NOISE_MAX
    kc.UNROLL_NOISE_MAX = 0
    try:
        ptx = kc.compile_ptx(fs.GBM(mu=0.3, sigma=0.4, dim=3),
                             methods.METHODS["euler_maruyama"], np.float64, cc=(9, 0))
    finally:
        kc.UNROLL_NOISE_MAX = saved
    with pytest.raises(AssertionError, match="stack frame"):
        ptxas_checks.check("gbm3 float64 rolled", ptx["path"], 255)


@needs_nvvm
def test_float32_fastmath_variant_compiles_with_fma():
    """The fast-math float32 option (measured by bench/gpu.py) compiles and fuses."""
    from fastsde.kernels import cuda as kc

    ptx = kc.compile_ptx(OU, methods.METHODS["euler_maruyama"], np.float32, fastmath=True)
    assert "fma.rn" in ptx["path"] and "sqrt.approx" in ptx["path"]


@needs_nvvm
def test_fma_contraction_is_off_only_inside_exact_fp():
    """The check above is not vacuous: without exact_fp NVVM fuses the same kernel."""
    from fastsde.kernels import cuda as kc

    with kc._as_if_device((9, 0)):
        fused, _ = cuda.compile_ptx(kc.stats_kernel, kc.stats_signature(np.float64),
                                    cc=(9, 0))
    assert "fma.rn.f64" in fused


GPU_CACHE_CHILD = r"""
import hashlib, json
import numpy as np
import fastsde as fs
from fastsde.kernels import cuda as kc


def drift(t, x, p, out):
    out[0] = -p[0] * x[0]
    out[1] = x[0] - x[1]


def diffusion(t, x, p, out):
    out[0] = p[1]
    out[1] = p[1] * x[0]


model = fs.SDE(drift, diffusion, dim=2, noise="diagonal", params=(1.0, 0.5))
r = fs.simulate(model, x0=[1.0, 0.0], t_span=(0.0, 1.0), n_steps=64, n_paths=4096,
                seed=5, device="cuda", save_at=[0.5, 1.0], stats=True,
                histogram=dict(bins=20, range=(-3.0, 3.0)), progress=False)


def call(t, x, p):
    return max(x[0] - 1.0, 0.0)


m = fs.mlmc(fs.GBM(mu=0.05, sigma=0.2), 1.0, (0.0, 1.0), call, eps=0.05, n0=1,
            n_initial=200, seed=4, device="cuda", progress=False)
dispatchers = {id(d): d for k in kc._KERNELS.values() for d in (k.path, k.stats, k.hist)}
dispatchers.update((id(d), d) for d in kc._MLMC_KERNELS.values())
bits = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in (
    r.x, r.mean, r.var, r.histogram.counts, np.array([m.value, m.se])))).hexdigest()
print(json.dumps(dict(
    misses=sum(sum(d._cache_misses.values()) for d in dispatchers.values()),
    hits=sum(sum(d._cache_hits.values()) for d in dispatchers.values()), bits=bits)))
"""


@device_only
@pytest.mark.skipif(IN_SIMULATOR, reason="the simulator keeps no kernels on disk")
def test_second_process_loads_the_kernels_and_gives_the_same_bits(tmp_path):
    """On a GPU: a second process with the same models loads the path, statistics,
    histogram and MLMC level kernels from the disk cache (nothing compiled) and gives the
    first's final states, moments, histogram and MLMC estimate bit for bit."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))
    runs = []
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", GPU_CACHE_CHILD], capture_output=True,
                             text=True, env=env, timeout=600, cwd=str(tmp_path))
        assert run.returncode == 0, run.stderr[-3000:]
        runs.append(json.loads(run.stdout.strip().splitlines()[-1]))
    first, second = runs
    assert first["misses"] >= 4 and first["hits"] == 0, first  # one level kernel or more
    assert second["misses"] == 0 and second["hits"] == first["misses"], second
    assert second["bits"] == first["bits"]


@pytest.mark.skipif(IN_SIMULATOR, reason="runs the script in its own process")
def test_gpu_benchmark_script_dry_run(tmp_path):
    """bench/gpu.py runs every section at toy sizes on the simulator (--dry-run)."""
    script = os.path.join(ROOT, "bench", "gpu.py")
    help_out = subprocess.run([sys.executable, script, "--help"], capture_output=True,
                              text=True, timeout=60)
    assert help_out.returncode == 0 and "--dry-run" in help_out.stdout
    out_md = tmp_path / "dry.md"
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, script, "--dry-run", "--repeats", "1",
                          "--skip-tests", "--out", str(out_md)], capture_output=True,
                         text=True, timeout=600, env=env, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = out_md.read_text()
    for row in ("OU EM kernels, final state", "OU EM kernels, stats only",
                "fs.simulate end to end", "RNG only", "GBM 3-dim EM kernel",
                "statistics kernel (1 saves)", "histogram kernel, 100 bins (3 saves)",
                "device copy of the buffer"):
        assert row in table, row
    assert "WRONG" not in table, table
    assert table.count(": ok") >= 7, table  # 4 OU kernel rows, 2 RNG rows, 1 GBM row


# --- the simulator run (CI without a GPU) ---------------------------------------------

# The subprocess is started by tests/conftest.py when the session starts (once per session,
# under pytest-xdist too), and this test is moved to the end of the session, so that the
# simulator run (minutes, mostly one core) overlaps the whole suite on a two-core machine
# instead of only this module.


@pytest.mark.skipif(CUDA_OK, reason="the device tests ran in this process")
def test_device_tests_under_the_simulator(simulator_run):
    if simulator_run is None:
        pytest.skip("this process is the simulator run")
    returncode = simulator_run.wait(timeout=900)
    text = simulator_run.log.read_text()
    tail = text[-6000:]
    assert returncode == 0, tail
    assert " passed" in text and " failed" not in text, tail
    # The device tests must have run there, not been skipped.
    assert "cannot run in this process" not in text, tail
    print(tail)
