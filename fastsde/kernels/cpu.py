"""CPU driver: Numba ``@njit(parallel=True)`` kernels over chunks of paths.

Work is split into fixed chunks of consecutive paths (the chunk size depends only on the
request, never on the thread count); ``prange`` runs chunks in parallel and each chunk
integrates its paths one after another, with the time loop inside and noise drawn from
the path's own Philox stream. Per-chunk statistics (Welford) are merged on the host in
chunk order (Chan et al.), so every output is bit-identical for any thread count.
"""

import hashlib
import math

import numba
import numpy as np
from numba import njit, prange
from numba.core.caching import FunctionCache

from .. import __version__
from ..errors import ModelError
from . import philox, steps
from .target import compile_functions

RNG_FUNCTIONS = ("philox4x32_10", "block_counter", "uniform_f32", "uniform_f64",
                 "box_muller_f32", "box_muller_f64", "normal_block_f32", "normal_block_f64")
NOISE_FUNCTIONS = ("noise_diagonal", "noise_scalar", "noise_general")

_rng = compile_functions(philox, RNG_FUNCTIONS, njit)
_noise = compile_functions(steps, NOISE_FUNCTIONS, njit(inline="always"))

X0_SHARED, X0_PER_PATH, X0_NORMAL = 0, 1, 2


class _KeyedCache(FunctionCache):
    """Numba's on-disk cache keyed by the model's fingerprint.

    Numba keys a closure's cache entry by pickling its cells; cells that hold compiled
    functions pickle with a per-process id, so a closure kernel would never be found again
    in a new process. fastsde knows what determines the kernel (the fingerprint of the user
    functions, method, noise kind, dims, dtype and fastsde's version) and keys by that.
    """

    def __init__(self, py_func, fingerprint):
        super().__init__(py_func)
        self._fingerprint = fingerprint

    def _index_key(self, sig, codegen):
        code_hash = hashlib.sha256(self._py_func.__code__.co_code).hexdigest()
        return (sig, codegen.magic_tuple(), (code_hash, self._fingerprint))


def _enable_disk_cache(dispatcher, fingerprint):
    try:
        dispatcher._cache = _KeyedCache(dispatcher.py_func, fingerprint)
    except Exception:  # no writable cache location: compile in memory only
        pass


@njit(cache=True)
def _record(x, i, c, s, paths_out, st_count, st_mean, st_m2):
    """Write the state of path i at save index s: stored paths and/or chunk statistics."""
    if paths_out.shape[0] > 0:
        for j in range(x.shape[0]):
            paths_out[s, i, j] = x[j]
    if st_count.shape[0] > 0:
        for j in range(x.shape[0]):
            v = np.float64(x[j])
            if math.isfinite(v):
                n = st_count[c, s, j] + 1
                st_count[c, s, j] = n
                d = v - st_mean[c, s, j]
                st_mean[c, s, j] += d / n
                st_m2[c, s, j] += d * (v - st_mean[c, s, j])


def compile_user_functions(model, jit):
    """Compile the model's functions with ``jit``; returns (drift, diffusion or None)."""
    drift = jit(inline="always")(model.drift)
    diffusion = jit(inline="always")(model.diffusion) if model.diffusion is not None else None
    return drift, diffusion


def build_step(model, method, dtype, jit):
    """Compile the step of ``method`` for ``model`` on a target given by ``jit``."""
    drift, diffusion = compile_user_functions(model, jit)
    noise_name = steps.NOISE_TERMS.get(model.noise, "noise_diagonal")
    noise_term = getattr(_noise, noise_name) if jit is njit else None
    return drift, diffusion, noise_term


def _make_diffusion_alloc(gshape, dtype):
    """An allocator for the diffusion's out array (a 2-D shape tuple cannot be captured
    into a parfor body, so the 2-D case allocates flat and reshapes)."""
    if len(gshape) == 2:
        rows, cols = gshape

        @njit(inline="always")
        def alloc():
            return np.zeros(rows * cols, dtype).reshape((rows, cols))
    else:
        size = gshape[0]

        @njit(inline="always")
        def alloc():
            return np.zeros(size, dtype)
    return alloc


def _make_kernel(model, method, dtype):
    dim = model.dim
    noise_dim = max(model.noise_dim, 1)
    has_noise = model.kind == "sde"
    gshape = model.diffusion_shape if has_noise else (1,)
    drift, diffusion, noise_term = build_step(model, method, dtype, njit)
    step = njit(inline="always")(method.factory(model)(drift, diffusion, noise_term, dim, dtype))
    normal_block = _rng.normal_block_f32 if dtype == np.float32 else _rng.normal_block_f64
    record = _record
    alloc_g = _make_diffusion_alloc(gshape, dtype)
    stream_inc = np.uint64(philox.STREAM_INCREMENTS)
    stream_init = np.uint64(philox.STREAM_INITIAL)

    def kernel(x0_rows, x0_mode, x0_mean, x0_std, params, t0, h, t1, n_steps, save_steps,
               key0, key1, first_path, chunk, x_out, paths_out, st_count, st_mean, st_m2,
               nonfinite):
        n_paths = x_out.shape[0]
        n_chunks = (n_paths + chunk - 1) // chunk
        n_save = save_steps.shape[0]
        hd = dtype(h)
        sqrt_h = dtype(math.sqrt(h))
        for c in prange(n_chunks):
            x = np.empty(dim, dtype)
            x_new = np.empty(dim, dtype)
            f0 = np.empty(dim, dtype)
            f1 = np.empty(dim, dtype)
            f2 = np.empty(dim, dtype)
            f3 = np.empty(dim, dtype)
            xt = np.empty(dim, dtype)
            g0 = alloc_g()
            g1 = alloc_g()
            dw = np.zeros(noise_dim, dtype)
            zb = np.empty(4, dtype)
            # A private copy of the parameters: passing a view of the shared array into
            # the step would make every step touch the shared array's reference count.
            p = np.empty(params.shape[1], dtype)
            start = c * chunk
            stop = min(start + chunk, n_paths)
            bad = 0
            for i in range(start, stop):
                path = first_path + np.uint64(i)
                if x0_mode == X0_NORMAL:
                    for j in range(dim):
                        if j % 4 == 0:
                            zb[0], zb[1], zb[2], zb[3] = normal_block(
                                key0, key1, np.uint64(j // 4), stream_init, path)
                        x[j] = x0_mean[j] + x0_std[j] * zb[j % 4]
                else:
                    row = i if x0_mode == X0_PER_PATH else 0
                    for j in range(dim):
                        x[j] = x0_rows[row, j]
                prow = i if params.shape[0] > 1 else 0
                for j in range(params.shape[1]):
                    p[j] = params[prow, j]
                s = 0
                if n_save > 0 and save_steps[0] == 0:
                    record(x, i, c, 0, paths_out, st_count, st_mean, st_m2)
                    s = 1
                current_block = -1
                for k in range(n_steps):
                    t = dtype(t0 + k * h)
                    t_mid = dtype(t0 + (k + 0.5) * h)
                    t_next = dtype(t1) if k + 1 == n_steps else dtype(t0 + (k + 1) * h)
                    if has_noise:
                        for j in range(noise_dim):
                            q = k * noise_dim + j
                            block = q >> 2
                            if block != current_block:
                                zb[0], zb[1], zb[2], zb[3] = normal_block(
                                    key0, key1, np.uint64(block), stream_inc, path)
                                current_block = block
                            dw[j] = sqrt_h * zb[q & 3]
                    step(t, t_mid, t_next, hd, x, p, dw, f0, f1, f2, f3, g0, g1, xt, x_new)
                    for j in range(dim):
                        x[j] = x_new[j]
                    if s < n_save and save_steps[s] == k + 1:
                        record(x, i, c, s, paths_out, st_count, st_mean, st_m2)
                        s += 1
                finite = True
                for j in range(dim):
                    x_out[i, j] = x[j]
                    if not math.isfinite(x[j]):
                        finite = False
                if not finite:
                    bad += 1
            nonfinite[c] = bad

    dispatcher = njit(parallel=True)(kernel)
    fingerprint = hashlib.sha256(repr((
        __version__, philox.RNG_VERSION, numba.__version__, model.fingerprint, method.name,
        np.dtype(dtype).name)).encode()).hexdigest()
    _enable_disk_cache(dispatcher, fingerprint)
    return dispatcher


def _dummy_args(model, dtype):
    """Zero-size arguments of the kernel's exact types, to compile before allocating."""
    d = model.dim
    f = np.float64
    u = np.uint64(0)
    return (np.zeros((1, d), dtype), 0, np.zeros(d, dtype), np.zeros(d, dtype),
            np.zeros((1, max(model.n_params, 0)), dtype), f(0), f(0), f(0), 0,
            np.zeros(1, np.int64), u, u, u, 1, np.zeros((0, d), dtype),
            np.zeros((0, 0, d), dtype), np.zeros((0, 0, d), np.int64),
            np.zeros((0, 0, d), f), np.zeros((0, 0, d), f), np.zeros(0, np.int64))


_KERNELS = {}


def _diagnose(model, dtype, error):
    """Turn a kernel compile failure into a ModelError naming the user function at fault."""
    arr1 = numba.types.Array(numba.from_dtype(np.dtype(dtype)), 1, "C")
    scalar = numba.from_dtype(np.dtype(dtype))
    for role, fn in model.functions:
        out_ndim = 2 if (role == "diffusion" and model.noise == "general") else 1
        out = numba.types.Array(numba.from_dtype(np.dtype(dtype)), out_ndim, "C")
        try:
            njit((scalar, arr1, arr1, out))(fn)
        except Exception as exc:  # noqa: BLE001 - numba raises many kinds
            msg = str(exc).strip().splitlines()
            summary = "\n".join(msg[:12])
            raise ModelError(f"{role} function {fn.__name__!r} could not be compiled by Numba "
                             f"for dtype {np.dtype(dtype).name}:\n{summary}") from None
    lines = str(error).strip().splitlines()
    raise ModelError(f"the model {model!r} could not be compiled into a kernel "
                     f"(its functions compile alone; check the shapes they index):\n"
                     + "\n".join(lines[:12])) from None


def get_kernel(model, method, dtype):
    """The compiled CPU kernel for (model, method, dtype), compiling it on first use.

    Raises
    ------
    ModelError
        A user function does not compile; raised before anything is allocated.
    """
    dtype = np.dtype(dtype).type
    key = (model.fingerprint, method.name, np.dtype(dtype).name)
    kernel = _KERNELS.get(key)
    if kernel is None:
        kernel = _make_kernel(model, method, dtype)
        sig = tuple(numba.typeof(a) for a in _dummy_args(model, dtype))
        try:
            kernel.compile(sig)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001
            _diagnose(model, dtype, exc)
        _KERNELS[key] = kernel
    return kernel


def run(kernel, args):
    """Run a compiled kernel; ``args`` as built by :func:`fastsde.api.simulate`."""
    kernel(*args)
