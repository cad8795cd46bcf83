"""CPU driver: Numba ``@njit(parallel=True)`` kernels over chunks of paths.

Work is split into fixed chunks of consecutive paths (the chunk size depends only on the
request, never on the thread count); ``prange`` runs chunks in parallel. A chunk advances
its paths in lanes of ``LANES`` consecutive paths: at each step the Philox words and the
Gaussian transform of all lanes are computed in one loop over the lanes, which LLVM turns
into AVX2 code (uint64 multiplies, branch-free polynomial log/sin/cos, no libm call), then
the scheme's step runs for each lane. Per-chunk statistics (Welford, paths in order) are
merged on the host in chunk order (Chan et al.), so every output is bit-identical for any
thread count.
"""

import hashlib
import math

import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils, errors
from numba.core.caching import FunctionCache
from numba.extending import intrinsic

from .. import __version__
from ..errors import ModelError
from . import philox, steps
from .target import compile_functions, module_functions

#: Every function of philox.py (they call each other by name).
RNG_FUNCTIONS = module_functions(philox)
#: Paths advanced together by one chunk. Chosen by measurement (single thread, CPU time,
#: OU float32): 8 lanes 2.2e8, 16 lanes 2.8e8, 32 lanes 2.9e8 path-steps per CPU-second;
#: more lanes give the out-of-order core independent vectors to overlap.
LANES = 32
#: Kernels use numpy's error model: a division by zero gives inf/nan (counted as a
#: non-finite path) instead of raising, which would also stop LLVM from vectorising.
_JIT = dict(error_model="numpy")
NOISE_FUNCTIONS = ("noise_diagonal", "noise_scalar", "noise_general")

_rng = compile_functions(philox, RNG_FUNCTIONS, njit(inline="always", **_JIT))
_noise = compile_functions(steps, NOISE_FUNCTIONS, njit(inline="always", **_JIT))


@intrinsic
def _stack_pointer(typingctx, size, dtype):
    """Pointer to ``size`` elements of ``dtype`` on the stack (an ``alloca`` in the entry
    block of the compiled function); ``size`` must be a compile-time constant."""
    if not isinstance(size, types.IntegerLiteral):
        raise errors.RequireLiteralValue(size)
    if not isinstance(dtype, (types.DType, types.NumberClass)):
        return None
    elem = dtype.dtype
    n = size.literal_value

    def codegen(context, builder, sig, args):
        return cgutils.alloca_once(builder, context.get_value_type(elem), size=n)

    return types.CPointer(elem)(size, dtype), codegen


@njit(inline="always")
def _stack_empty(size, dtype):
    """A 1-D scratch array on the stack. No heap, no reference count: after inlining, LLVM
    keeps its elements in registers (the per-path state of the hot loop)."""
    return numba.carray(_stack_pointer(size, dtype), size)


def _source_hash():
    """Hash of the kernel sources: a changed step or RNG never reuses a cached kernel."""
    import inspect
    import sys
    digest = hashlib.sha256()
    for module in (philox, steps, sys.modules[__name__]):
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()

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


@njit(inline="always", **_JIT)
def _record(X, l, lanes, dim, i, c, s, paths_out, st_count, st_mean, st_m2):
    """Save the state X[j * lanes + l] of path i (chunk c) at save index s: into the stored
    paths and/or the chunk's Welford statistics. A path with any non-finite component is
    left out of the statistics (and counted by the caller)."""
    if paths_out.shape[0] > 0:
        for j in range(dim):
            paths_out[s, i, j] = X[j * lanes + l]
    if st_count.shape[0] > 0:
        finite = True
        for j in range(dim):
            if not math.isfinite(X[j * lanes + l]):
                finite = False
        if finite:
            for j in range(dim):
                v = np.float64(X[j * lanes + l])
                n = st_count[c, s, j] + 1
                st_count[c, s, j] = n
                d = v - st_mean[c, s, j]
                st_mean[c, s, j] += d / n
                st_m2[c, s, j] += d * (v - st_mean[c, s, j])


def compile_user_functions(model, jit, **options):
    """Compile the model's functions with ``jit``; returns (drift, diffusion or None)."""
    drift = jit(inline="always", **options)(model.drift)
    diffusion = (jit(inline="always", **options)(model.diffusion)
                 if model.diffusion is not None else None)
    return drift, diffusion


def build_step(model, method, dtype, jit, **options):
    """Compile the step of ``method`` for ``model`` on a target given by ``jit``."""
    drift, diffusion = compile_user_functions(model, jit, **options)
    noise_name = steps.NOISE_TERMS.get(model.noise, "noise_diagonal")
    noise_term = getattr(_noise, noise_name) if jit is njit else None
    return drift, diffusion, noise_term


def _make_diffusion_alloc(gshape, dtype):
    """A stack allocator for the diffusion's out array, of the model's shape."""
    if len(gshape) == 2:
        rows, cols = gshape
        size = rows * cols

        @njit(inline="always")
        def alloc():
            return numba.carray(_stack_pointer(size, dtype), (rows, cols))
    else:
        size = gshape[0]

        @njit(inline="always")
        def alloc():
            return _stack_empty(size, dtype)
    return alloc


def _make_rng_only_step(dim, noise_dim):
    """The RNG-only ceiling's "step": adds the increments to the state (so they are not
    optimised away) and nothing else."""

    def step(t, t_mid, t_next, h, x, p, dw, f0, f1, f2, f3, g0, g1, xt, x_new):
        for i in range(dim):
            x_new[i] = x[i] + dw[i % noise_dim]

    return step


def _make_kernel(model, method, dtype, debug=False, rng_only=False):
    dim = model.dim
    noise_dim = max(model.noise_dim, 1)
    has_noise = model.kind == "sde"
    gshape = model.diffusion_shape if has_noise else (1,)
    options = dict(_JIT, boundscheck=True) if debug else dict(_JIT)
    drift, diffusion, noise_term = build_step(model, method, dtype, njit, **options)
    if rng_only:
        has_noise = True
        step_py = _make_rng_only_step(dim, noise_dim)
    else:
        step_py = method.factory(model)(drift, diffusion, noise_term, dim, dtype)
    step = njit(inline="always", **options)(step_py)
    normal_block = _rng.normal_block_f32 if dtype == np.float32 else _rng.normal_block_f64
    record = _record
    alloc_g = _make_diffusion_alloc(gshape, dtype)
    stream_inc = np.uint64(philox.STREAM_INCREMENTS)
    stream_init = np.uint64(philox.STREAM_INITIAL)
    lanes = LANES
    n_params_model = model.n_params
    n_params_c = max(n_params_model, 1)
    stack_empty = _stack_empty

    def run_chunk(c, x0_rows, x0_mode, x0_mean, x0_std, params, t0, h, t1, n_steps,
                  save_steps, key0, key1, first_path, chunk, x_out, paths_out, st_count,
                  st_mean, st_m2, nonfinite):
        """Advance the paths of chunk c (serial; the parallel kernel maps it over chunks,
        which keeps Numba's parallel passes off the large body and compiles faster)."""
        n_paths = x_out.shape[0]
        n_save = save_steps.shape[0]
        n_params = params.shape[1]
        per_path_params = params.shape[0] > 1
        hd = dtype(h)
        sqrt_h = dtype(math.sqrt(h))
        # Component-major lane state and noise (element [j * lanes + l]), so that loops
        # over the lanes touch contiguous memory and vectorise.
        X = np.zeros(dim * lanes, dtype)
        Z = np.empty(4 * lanes, dtype)
        DW = np.zeros(noise_dim * lanes, dtype)
        alive = np.empty(lanes, np.bool_)
        # Per-path scratch on the stack: LLVM keeps it in registers.
        x = stack_empty(dim, dtype)
        x_new = stack_empty(dim, dtype)
        f0 = stack_empty(dim, dtype)
        f1 = stack_empty(dim, dtype)
        f2 = stack_empty(dim, dtype)
        f3 = stack_empty(dim, dtype)
        xt = stack_empty(dim, dtype)
        g0 = alloc_g()
        g1 = alloc_g()
        dw = stack_empty(noise_dim, dtype)
        p = numba.carray(_stack_pointer(n_params_c, dtype), n_params_model)
        # Parameters per lane, loaded once per lane block (shared or per path).
        P = np.zeros(n_params_c * lanes, dtype)
        start = c * chunk
        stop = min(start + chunk, n_paths)
        bad = 0
        for b0 in range(start, stop, lanes):
            n_live = min(lanes, stop - b0)
            path0 = first_path + np.uint64(b0)
            for l in range(lanes):
                # Lanes past the chunk's end run on zeros and are never written out.
                alive[l] = l < n_live
                prow = min(b0 + l, n_paths - 1) if per_path_params else 0
                for j in range(n_params):
                    P[j * lanes + l] = params[prow, j]
                if l >= n_live:
                    for j in range(dim):
                        X[j * lanes + l] = dtype(0.0)
                elif x0_mode == X0_NORMAL:
                    z0 = z1 = z2 = z3 = dtype(0.0)
                    for j in range(dim):
                        if j % 4 == 0:
                            z0, z1, z2, z3 = normal_block(
                                key0, key1, np.uint64(j // 4), stream_init,
                                path0 + np.uint64(l))
                        r = j % 4
                        z = z0 if r == 0 else (z1 if r == 1 else (z2 if r == 2 else z3))
                        X[j * lanes + l] = x0_mean[j] + x0_std[j] * z
                else:
                    row = b0 + l if x0_mode == X0_PER_PATH else 0
                    for j in range(dim):
                        X[j * lanes + l] = x0_rows[row, j]
            s = 0
            if n_save > 0 and save_steps[0] == 0:
                for l in range(n_live):
                    record(X, l, lanes, dim, b0 + l, c, 0, paths_out, st_count, st_mean,
                           st_m2)
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
                            for l in range(lanes):  # the vectorised RNG
                                z0, z1, z2, z3 = normal_block(
                                    key0, key1, np.uint64(block), stream_inc,
                                    path0 + np.uint64(l))
                                Z[l] = z0
                                Z[lanes + l] = z1
                                Z[2 * lanes + l] = z2
                                Z[3 * lanes + l] = z3
                            current_block = block
                        off = (q & 3) * lanes
                        for l in range(lanes):
                            DW[j * lanes + l] = sqrt_h * Z[off + l]
                for l in range(lanes):
                    for j in range(dim):
                        x[j] = X[j * lanes + l]
                    for j in range(noise_dim):
                        dw[j] = DW[j * lanes + l]
                    for j in range(n_params_model):
                        p[j] = P[j * lanes + l]
                    step(t, t_mid, t_next, hd, x, p, dw, f0, f1, f2, f3, g0, g1, xt,
                         x_new)
                    # A path that leaves the finite numbers is frozen at its first
                    # non-finite state: not advanced further, counted, kept out of
                    # the statistics. Selects, not branches, keep the loop vectorisable.
                    was_alive = alive[l]
                    finite = True
                    for j in range(dim):
                        finite = finite and math.isfinite(x_new[j])
                        X[j * lanes + l] = x_new[j] if was_alive else x[j]
                    alive[l] = was_alive and finite
                if s < n_save and save_steps[s] == k + 1:
                    for l in range(n_live):
                        record(X, l, lanes, dim, b0 + l, c, s, paths_out, st_count,
                               st_mean, st_m2)
                    s += 1
            for l in range(n_live):
                finite = True
                for j in range(dim):
                    v = X[j * lanes + l]
                    x_out[b0 + l, j] = v
                    if not math.isfinite(v):
                        finite = False
                if not finite:
                    bad += 1
        nonfinite[c] = bad

    run_chunk = njit(**options)(run_chunk)

    def kernel(x0_rows, x0_mode, x0_mean, x0_std, params, t0, h, t1, n_steps, save_steps,
               key0, key1, first_path, chunk, x_out, paths_out, st_count, st_mean, st_m2,
               nonfinite):
        n_chunks = (x_out.shape[0] + chunk - 1) // chunk
        for c in prange(n_chunks):
            run_chunk(c, x0_rows, x0_mode, x0_mean, x0_std, params, t0, h, t1, n_steps,
                      save_steps, key0, key1, first_path, chunk, x_out, paths_out, st_count,
                      st_mean, st_m2, nonfinite)

    # Debug kernels run serially: an exception raised inside a parallel region does not
    # propagate cleanly out of Numba's thread pool (it surfaces as a SystemError).
    dispatcher = njit(parallel=not debug, **options)(kernel)
    # The same kernel compiled serially, used only to re-raise a user function's own
    # exception when the parallel kernel reports one (compiled on first need).
    dispatcher.fastsde_serial = njit(**options)(kernel) if not debug else None
    fingerprint = hashlib.sha256(repr((
        __version__, philox.RNG_VERSION, numba.__version__, _SOURCE_HASH, model.fingerprint,
        method.name, np.dtype(dtype).name, debug, rng_only, lanes)).encode()).hexdigest()
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


def get_kernel(model, method, dtype, debug=False, rng_only=False):
    """The compiled CPU kernel for (model, method, dtype), compiling it on first use.

    Parameters
    ----------
    debug : bool
        Compile with bounds checking: an out-of-bounds index in a user function raises
        IndexError instead of touching memory it does not own.
    rng_only : bool
        The RNG-only ceiling: the same kernel with the scheme's state update replaced by
        adding the increments (benchmarks only).

    Raises
    ------
    ModelError
        A user function does not compile; raised before anything is allocated.
    """
    dtype = np.dtype(dtype).type
    key = (model.fingerprint, method.name, np.dtype(dtype).name, debug, rng_only)
    kernel = _KERNELS.get(key)
    if kernel is None:
        kernel = _make_kernel(model, method, dtype, debug, rng_only)
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
    """Run a compiled kernel; ``args`` as built by :func:`fastsde.api.simulate`.

    A user function that raises inside the parallel kernel surfaces from Numba's thread
    pool as a bare SystemError; the run is then repeated serially, which raises the
    function's own exception (type and message) instead.
    """
    try:
        kernel(*args)
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # Ctrl-C during the call: stop, do not rerun
        serial = getattr(kernel, "fastsde_serial", None)
        if serial is None:
            raise
        serial(*args)
        raise


_SOURCE_HASH = _source_hash()
