"""CUDA driver: ``numba.cuda`` kernels, one thread per path, from the same step and RNG source.

Layout of a run (``run``):

1. The *path kernel*: a grid-stride loop, one thread per path. The state, the scheme's
   scratch vectors and the diffusion's out array are ``cuda.local.array`` of compile-time
   size (the model's ``dim``), so after inlining they live in registers. Noise comes from
   the path's own Philox stream (the same functions as the CPU's, compiled here with
   ``cuda.jit(device=True)``), so a seed gives the same paths on both devices. States at
   the save times go to a device buffer of shape (n_save, n_paths, dim): consecutive
   threads write consecutive paths (coalesced).
2. The *statistics kernel* (only with ``stats=True``): one thread per (chunk, save time,
   component) runs Welford's update over the chunk's paths in path order, exactly as the
   CPU's ``_record`` does, so the per-chunk (count, mean, m2) and therefore the merged
   statistics of a float64 run equal the CPU's bit for bit. Only these per-chunk arrays
   cross the bus; the per-save states stay on the device unless paths are kept.

Floating point (docs/cuda.md): kernels compile without fast-math and with NVVM's FMA
contraction switched off (``-fma=0``), so every ``a * b + c`` is rounded twice, as on the
CPU; with philox.py's libm-free Gaussian transform the GPU then gives the CPU's bits in
float32 and float64. float32 fast-math (``FASTMATH``) is an option, off by default.

Launch configuration comes from the device: ``THREADS_PER_BLOCK`` threads per block and
as many blocks as the kernel can keep resident on all SMs at once (CUDA's occupancy
calculator for the compiled kernel), capped by the work available.
"""

import contextlib
import hashlib
import importlib
import inspect
import math
import re
import sys
import types
import warnings

import numba
import numpy as np
from numba import cuda

from .. import __version__
from ..errors import DeviceError, ModelError, OutputTooLargeError
from .. import montecarlo
from . import bits, cpu, layout, levels, philox, steps, unroll
from .target import compile_functions, module_functions

#: Every function of philox.py (they call each other by name; compile_functions rebinds
#: the calls to the compiled versions).
RNG_FUNCTIONS = module_functions(philox)
NOISE_FUNCTIONS = ("noise_diagonal", "noise_scalar", "noise_general", "increment_diagonal",
                   "increment_scalar", "column_diagonal", "column_scalar", "column_general")

X0_SHARED, X0_PER_PATH, X0_NORMAL = 0, 1, 2

#: Fast-math per dtype (FMA contraction, approximate division and square root, fast
#: intrinsics, flush-to-zero). Off for both: the Gaussian transform is made of correctly
#: rounded operations only, so without fast-math the GPU gives the CPU's bits in float32
#: too. float64 never uses it; float32 may be switched on (bench/gpu.py measures both).
FASTMATH = {np.float32: False, np.float64: False}
#: Threads per block on a GPU. 256 is a multiple of the warp size that lets 8 blocks share
#: an SM of 2048 threads; the occupancy calculator then lowers the block count per SM when
#: the kernel's register use demands it.
THREADS_PER_BLOCK = 256
#: The simulator runs every thread as a Python thread: a small grid keeps it quick and
#: still exercises the grid-stride loop (several paths per thread).
SIM_THREADS_PER_BLOCK = 16
SIM_BLOCKS = 2
#: Path-steps per kernel call requested from ``simulate`` (see api._run_in_slices): about
#: 0.1 s on a GPU doing 2e11 path-steps/s, short enough to answer Ctrl-C, long enough that
#: a call fills the GPU many times over.
SLICE_PATH_STEPS = 2 * 10**10
#: At most this many bytes of device buffers per batch (and at most half the free memory):
#: longer runs are cut into chunk-aligned batches inside ``run``.
DEVICE_BATCH_BYTES = 2 * 2**30


def simulator_enabled():
    """Whether numba.cuda runs on its Python simulator (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba.cuda.core import config

    return bool(config.ENABLE_CUDASIM)


# --- the numba-cuda this backend relies on -------------------------------------------

#: numba-cuda versions the backend is tested with (pyproject.toml's ``cuda`` and ``test``
#: extras pin the same range).
NUMBA_CUDA_SUPPORTED = ">=0.30,<0.31"

#: numpy versions that numba-cuda 0.30 imports with (0.30.4 still lowers np.row_stack,
#: which numpy 2.5 removed); the ``cuda`` and ``test`` extras pin the same range.
NUMPY_SUPPORTED_WITH_CUDA = "<2.5"

#: numba-cuda internals (not public API) that this module and fastsde.scratch patch or
#: read: (module, attribute, what for). Checked when this module is imported, so that a
#: numba-cuda that moved one fails at once with a message instead of silently compiling
#: kernels with FMA contraction on (or failing deep inside a compilation).
NUMBA_CUDA_INTERNALS = (
    ("numba.cuda.cudadrv.nvvm", "compile_ir",
     "exact_fp wraps it to compile without FMA contraction"),
    ("numba.cuda.core.compiler_lock", "global_compiler_lock",
     "exact_fp holds it while the NVVM call is wrapped"),
    ("numba.cuda.dispatcher", "get_current_device",
     "_as_if_device patches it to compile PTX without a GPU"),
    ("numba.cuda.ufuncs", "ufunc_db", "np.sqrt/np.floor lowerings are added to it"),
    ("numba.cuda.mathimpl", "get_unary_impl_for_fn_and_ty",
     "the np.sqrt/np.floor lowerings call it"),
    ("numba.cuda.cudaimpl", "_generic_array", "fastsde.scratch.local_array lowers with it"),
    ("numba.cuda.core.config", "ENABLE_CUDASIM", "simulator detection"),
    ("numba.cuda.dispatcher", "CUDACache",
     "_KeyedCudaCache keeps compiled kernels on disk, keyed by their fingerprint"),
)


def numba_cuda_version():
    """The installed numba-cuda's version string (``"unknown"`` if it cannot be read)."""
    try:
        from importlib.metadata import version

        return version("numba-cuda")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return str(getattr(cuda, "__version__", "unknown"))


def check_numba_cuda_internals(internals=NUMBA_CUDA_INTERNALS):
    """Raise ImportError naming the first numba-cuda internal this backend needs that is
    missing, the installed numba-cuda version and the supported range. Cheap: imports
    modules numba.cuda loads anyway and looks attributes up."""
    def fail(what, why):
        raise ImportError(
            f"fastsde's CUDA backend needs numba-cuda's {what} ({why}), which the "
            f"installed numba-cuda {numba_cuda_version()} does not have; fastsde is tested "
            f"with numba-cuda{NUMBA_CUDA_SUPPORTED}: pip install "
            f"'numba-cuda[cu12]{NUMBA_CUDA_SUPPORTED}'")

    for module, attr, why in internals:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            mod = None
        except Exception as exc:  # noqa: BLE001 - a module that breaks on this numpy
            # Seen on an H200 image: numba-cuda 0.30.4 with numpy 2.5.2, where
            # numba.cuda.cudaimpl's import stops at np.row_stack (gone from numpy 2.5).
            raise ImportError(
                f"numba-cuda {numba_cuda_version()} fails to import its module {module} "
                f"with numpy {np.__version__} ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())}); fastsde is tested with "
                f"numba-cuda{NUMBA_CUDA_SUPPORTED} and numpy{NUMPY_SUPPORTED_WITH_CUDA}: "
                f"pip install 'numpy{NUMPY_SUPPORTED_WITH_CUDA}'") from exc
        if mod is None or not hasattr(mod, attr):
            fail(f"internal {module}.{attr}", why)
    try:
        params = inspect.signature(cuda.jit).parameters
    except (TypeError, ValueError):
        params = {}
    if "lto" not in params:
        fail("cuda.jit(lto=...) option", "kernels are linked from PTX without link-time "
             "optimisation, which would fuse multiply-adds")


# --- compilation ---------------------------------------------------------------------

def _register_scalar_ufuncs():
    """Lowerings for ``np.sqrt`` and ``np.floor`` on float32/float64 scalars.

    numba-cuda (0.30) types these calls but has no lowering for them (its ufunc table
    lacks both), and philox.py's Gaussian transform uses them. They are added here as
    libdevice's ``sqrt``/``floor``, which compile to the correctly rounded ``sqrt.rn`` and
    the exact ``cvt.rmi`` (``sqrt.approx`` under fast-math), as on the CPU. Entries that a
    later numba-cuda provides are left alone.
    """
    if simulator_enabled():
        return
    from numba.cuda import ufuncs
    from numba.cuda.mathimpl import get_unary_impl_for_fn_and_ty

    def lowering(fn):
        def impl(context, builder, sig, args):
            return get_unary_impl_for_fn_and_ty(fn, sig.args[0])(context, builder, sig, args)
        return impl

    db = ufuncs.ufunc_db()
    for ufunc, fn in ((np.sqrt, math.sqrt), (np.floor, math.floor)):
        if ufunc not in db:
            db[ufunc] = {"f->f": lowering(fn), "d->d": lowering(fn)}


if not simulator_enabled():
    check_numba_cuda_internals()
_register_scalar_ufuncs()


@contextlib.contextmanager
def exact_fp():
    """Compile with NVVM's FMA contraction off unless the kernel asks for fast-math.

    NVVM contracts ``a * b + c`` into one fused multiply-add by default (``-fma=1``),
    which rounds once where the CPU rounds twice; float64 paths would then drift from the
    CPU's by an ulp here and there. numba-cuda exposes no option for it, so for the
    duration of our compilations (under numba-cuda's compiler lock) the NVVM call gets
    ``fma=0`` as a default; ``fastmath=True`` kernels still override it with ``fma=1``.
    """
    from numba.cuda.core.compiler_lock import global_compiler_lock
    from numba.cuda.cudadrv import nvvm

    original = getattr(nvvm, "compile_ir", None)
    if original is None:  # numba-cuda moved it; the PTX tests would catch the change
        warnings.warn("fastsde: cannot switch off NVVM's FMA contraction with this "
                      "numba-cuda; float64 GPU paths may differ from the CPU's in the "
                      "last bits", RuntimeWarning, stacklevel=3)
        yield
        return

    def compile_ir(llvmir, **options):
        options.setdefault("fma", False)
        return original(llvmir, **options)

    with global_compiler_lock:
        nvvm.compile_ir = compile_ir
        try:
            yield
        finally:
            nvvm.compile_ir = original


def device_jit(fastmath):
    """``cuda.jit(device=True)`` with forced inlining (so that local arrays passed to
    device functions can be promoted to registers).

    Under the simulator a device function is the plain function unless its code names
    ``numba.cuda``: the simulator's wrapper only swaps that module in the function's
    globals for the thread's fake one, and takes a per-module lock twice per call to do
    so. The RNG's dozens of nested calls per normal, and the user's functions at every
    step, then made a block's 16 threads queue on one lock: a 384-path, 12-step run took
    0.2 s or, in a convoy, 12-36 s (0.07 s without the wrappers)."""
    if simulator_enabled():
        wrap = cuda.jit(device=True, fastmath=fastmath)

        def simulator_jit(fn):
            return wrap(fn) if _names_cuda(fn) else fn

        return simulator_jit
    return cuda.jit(device=True, forceinline=True, fastmath=fastmath)


def _names_cuda(fn):
    """Whether ``fn``'s code (nested functions included) reads a global bound to the
    ``numba.cuda`` module (the simulator must then swap it for the thread's fake)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return True
    glob = getattr(fn, "__globals__", {})
    stack = [code]
    while stack:
        c = stack.pop()
        if any(glob.get(name) is cuda for name in c.co_names):
            return True
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return False


_DEVICE_NAMESPACES = {}


def device_primitives(jit):
    """The primitives of :mod:`.bits` for CUDA: libdevice's bit casts (one ``mov.b32`` /
    ``mov.b64``), a select (``selp``) and fused multiply-adds (``fma.rn.f32`` /
    ``fma.rn.f64``). The simulator runs device functions as Python,
    so there the numpy versions serve."""
    select = jit(bits.select_scalar)
    if simulator_enabled():
        return dict(f32_as_i32=bits.f32_as_i32, i32_as_f32=bits.i32_as_f32,
                    f64_as_i64=bits.f64_as_i64, i64_as_f64=bits.i64_as_f64, select=select,
                    fma_f32=bits.fma_f32, fma_f64=bits.fma_f64)
    from numba.cuda import libdevice
    return dict(f32_as_i32=libdevice.float_as_int, i32_as_f32=libdevice.int_as_float,
                f64_as_i64=libdevice.double_as_longlong,
                i64_as_f64=libdevice.longlong_as_double, select=select,
                fma_f32=libdevice.fmaf, fma_f64=libdevice.fma)


def device_functions(fastmath, cc=None):
    """The RNG and noise functions compiled as CUDA device functions.

    Parameters
    ----------
    fastmath : bool
    cc : tuple of int, optional
        A compute capability to compile PTX for (:func:`compile_ptx`): its functions get
        dispatchers of their own, so that device overloads compiled for ``cc`` are never
        mixed with those of the current device. One set per (fastmath, cc) per process:
        the RNG is typed once, not again for every PTX compile.

    Returns
    -------
    (types.SimpleNamespace, types.SimpleNamespace)
        The RNG functions (philox.py) and the noise contractions (steps.py).
    """
    key = (bool(fastmath), None if cc is None else tuple(cc))
    if key not in _DEVICE_NAMESPACES:
        jit = device_jit(key[0])
        _DEVICE_NAMESPACES[key] = (
            compile_functions(philox, RNG_FUNCTIONS, jit, device_primitives(jit)),
            compile_functions(steps, NOISE_FUNCTIONS, jit))
    return _DEVICE_NAMESPACES[key]


_DEVICE_PIECES = {}


def _device_piece(key, fastmath, cc, make):
    """The device function ``device_jit(fastmath)(make())``, one per (``key``,
    fastmath, cc) per process: the pieces of a kernel that do not depend on the model
    (the noise fill, the initial normals, the lane select, the default stopping function)
    are typed once, not again for every kernel, as the RNG's are
    (:func:`device_functions`)."""
    full_key = (key, bool(fastmath), None if cc is None else tuple(cc))
    if full_key not in _DEVICE_PIECES:
        _DEVICE_PIECES[full_key] = device_jit(fastmath)(make())
    return _DEVICE_PIECES[full_key]


def compile_user_functions(model, fastmath, dtype=None):
    """The model's drift and diffusion (or None) as CUDA device functions; with
    ``dtype``, each called with its ``out`` cleared first (``steps.out_cleared``)."""
    from .. import kmath

    kmath.register_cuda()  # fastsde.kmath's functions, for the models that call them
    jit = device_jit(fastmath)
    # math.exp, math.log, math.tanh compiled as kmath's where the CPU kernel does so too
    # (model.MATH, unroll.lowers_math); loops are left to NVVM.
    drift, diffusion = unroll.plain_functions(model, dtype)
    drift = jit(drift)
    diffusion = jit(diffusion) if diffusion is not None else None
    if dtype is not None:
        drift = jit(steps.out_cleared(drift, (model.dim,), dtype))
        if diffusion is not None:
            diffusion = jit(steps.out_cleared(diffusion, model.diffusion_shape, dtype))
    return drift, diffusion


def build_step(model, method, dtype, fastmath, noise_ns):
    """The scheme's step for ``model`` as a CUDA device function (steps.py's source)."""
    drift, diffusion = compile_user_functions(model, fastmath, dtype)
    noise_term = getattr(noise_ns, steps.NOISE_TERMS.get(model.noise, "noise_diagonal"))
    increment_of = getattr(noise_ns, steps.INCREMENTS_OF.get(model.noise,
                                                             "increment_diagonal"))
    column_of = getattr(noise_ns, steps.COLUMNS_OF.get(model.noise, "column_diagonal"))
    plain = method.factory(model)(drift, diffusion, noise_term, increment_of, column_of,
                                  model.dim, dtype)
    return device_jit(fastmath)(plain)


def _lane_select(z0, z1, z2, z3, lane):
    """One of four values by index without indexing a local array (a dynamic index
    would force the block of normals out of registers into local memory)."""
    if lane == 0:
        return z0
    if lane == 1:
        return z1
    if lane == 2:
        return z2
    return z3


#: Noise components per step up to which the noise loop is written out statement by
#: statement (``_make_fill_noise``). Unrolled, every ``dw[j]`` has a constant index and the
#: increments stay in registers; as a loop, NVVM keeps the float64 loop rolled (its body,
#: the inlined Philox rounds and transform, is past LLVM's unrolling threshold), so ``dw``
#: lives in local memory with a store and a load per component per step (ptxas on sm_90:
#: 48-byte stack frame for a float64 3-d GBM). Past this count the code would grow with
#: ``noise_dim`` copies of the transform; the loop is kept and ``dw`` goes to local memory.
UNROLL_NOISE_MAX = 8


def _per_component(header, prologue, body, count, epilogue, namespace, name):
    """A function from generated source that runs ``body`` (lines using ``{j}``) for
    j < ``count``: written out with j a literal, so arrays indexed by j get constant
    indices and stay in registers, or, past ``UNROLL_NOISE_MAX``, as a loop over j."""
    lines = [header] + ["    " + line for line in prologue]
    if count <= UNROLL_NOISE_MAX:
        for j in range(count):
            lines += ["    " + line.replace("{j}", str(j)) for line in body]
    else:
        lines.append(f"    for j in range({count}):")
        lines += ["        " + line.replace("{j}", "j") for line in body]
    lines += ["    " + line for line in epilogue]
    namespace = dict(namespace, np=np)
    exec(compile("\n".join(lines), f"<fastsde {name} count={count}>", "exec"), namespace)
    return namespace[name]


def _make_fill_noise(noise_dim, normal_block, lane_select, increments="gaussian",
                     extra=False, block_words=None, two_point_sign=None,
                     three_point_sign=None, dtype=np.float64):
    """The step's increments, ``dw[j] = scale * z[k noise_dim + j]`` for j < noise_dim,
    with ``z`` the path's stream of normals in blocks of four (the stream contract), as
    a function returning the block now held in (z0, z1, z2, z3) and its index, and
    (e0, e1, e2, e3). Written out per component (``_per_component``).

    ``extra``: also the extra normals ``dz[j]`` of stream ``STREAM_EXTRA`` (same block
    index), held in (e0, e1, e2, e3). Discrete increments: (z0, z1, z2, z3) hold the
    block's Philox words (uint64) instead, a block serves 4 three-point draws (one word
    each) or 128 two-point draws (one bit each), and ``scale`` is sqrt(3 h) or sqrt(h).
    """
    # Per kind: the stream, log2 of the draws per block, the function that fetches a
    # block, and the draw's value (before scaling) from what the block holds.
    stream_id, shift, fetch, value = {
        "gaussian": (philox.STREAM_INCREMENTS, 2, "normal_block",
                     "lane_select(z0, z1, z2, z3, q & 3)"),
        "three_point": (philox.STREAM_THREE_POINT, 2, "block_words",
                        "to_float(three_point_sign(lane_select(z0, z1, z2, z3, q & 3)))"),
        "two_point": (philox.STREAM_TWO_POINT, philox.TWO_POINT_PER_BLOCK_SHIFT, "block_words",
                      "to_float(two_point_sign(lane_select(z0, z1, z2, z3, (q >> 5) & 3), "
                      "np.uint64(q & 31)))"),
    }[increments]
    if extra and shift != 2:
        raise ValueError("extra normals share the increments' blocks of four; two-point "
                         "increments come 128 to a block")
    stream = np.uint64(stream_id)
    body = [f"block = q >> {shift}",
            "if block != current_block:",
            f"    z0, z1, z2, z3 = {fetch}(key0, key1, np.uint64(block), stream, path)"]
    if extra:
        body += ["    e0, e1, e2, e3 = normal_block(key0, key1, np.uint64(block), "
                 "stream_extra, path)"]
    body += ["    current_block = block", f"dw[{{j}}] = scale * {value}"]
    if extra:
        body += ["dz[{j}] = scale_z * lane_select(e0, e1, e2, e3, q & 3)"]
    return _per_component(
        "def fill_noise(key0, key1, k, path, scale, scale_z, dw, dz, current_block, z0, z1, "
        "z2, z3, e0, e1, e2, e3):", [],
        [f"q = k * {noise_dim} + {{j}}"] + body,
        noise_dim, ["return current_block, z0, z1, z2, z3, e0, e1, e2, e3"],
        {"normal_block": normal_block, "lane_select": lane_select, "stream": stream,
         "stream_extra": np.uint64(philox.STREAM_EXTRA), "block_words": block_words,
         "two_point_sign": two_point_sign, "three_point_sign": three_point_sign,
         "to_float": dtype}, "fill_noise")


def _fill_noise_function(noise_dim, increments, extra, dtype, fastmath, cc):
    """:func:`_make_fill_noise` compiled, one per configuration (:func:`_device_piece`)."""
    def make():
        rng, _ = device_functions(fastmath, cc=cc)
        lane_select = _device_piece(("lane_select",), False, cc, lambda: _lane_select)
        normal_block = rng.normal_block_f32 if dtype == np.float32 else rng.normal_block_f64
        return _make_fill_noise(noise_dim, normal_block, lane_select, increments, extra,
                                rng.block_words, rng.two_point_sign, rng.three_point_sign,
                                dtype)
    return _device_piece(("fill_noise", noise_dim, increments, bool(extra),
                          np.dtype(dtype).name), fastmath, cc, make)


def _stop_function(stop, fastmath, cc):
    """The stopping function as a device function; :func:`montecarlo.never_stop`, a
    run's without ``stop_when``, is shared by every kernel (:func:`_device_piece`)."""
    if stop is not None:
        return device_jit(fastmath)(stop)
    return _device_piece(("never_stop",), fastmath, cc, lambda: montecarlo.never_stop)


def _make_init_normal(dim, normal_block, lane_select):
    """``x[j] = mean[j] + std[j] * z_j`` (``-z_j`` on the odd path of an antithetic pair)
    for j < dim, with ``z_j`` normal j of the path's initial-state stream (blocks of four).
    Written out per component like ``_make_fill_noise``: as a loop, float64 keeps it
    rolled and the whole state ``x`` then lives in local memory for the entire path
    (loaded and stored at every step)."""
    return _per_component(
        "def init_normal(key0, key1, stream_init, path, odd, x0_mean, x0_std, x):",
        ["z0 = z1 = z2 = z3 = x0_mean[0] * 0"],
        ["if {j} % 4 == 0:",
         "    z0, z1, z2, z3 = normal_block(key0, key1, np.uint64({j} // 4), stream_init,",
         "                                  path)",
         "z = lane_select(z0, z1, z2, z3, {j} % 4)",
         "x[{j}] = x0_mean[{j}] + x0_std[{j}] * (-z if odd else z)"],
        dim, [], {"normal_block": normal_block, "lane_select": lane_select}, "init_normal")


def _make_path_kernel(model, method, dtype, fastmath, rng_only=False, cc=None, obs=(),
                      stop=None, increments="gaussian"):
    """The plain Python source of the path kernel, closed over compiled device functions.

    ``rng_only``: the RNG-only ceiling, the same kernel with the scheme's state update
    replaced by adding the increments (as the CPU backend's, for benchmarks). ``obs`` and
    ``stop``: observables and the stopping function (fastsde.montecarlo). ``increments``:
    "gaussian", "two_point" or "three_point". ``cc``: compiling PTX for that compute
    capability (:func:`device_functions`).
    """
    rng, noise_ns = device_functions(fastmath, cc=cc)
    observe = montecarlo.make_observe(obs, device_jit(fastmath))
    stop_fn = _stop_function(stop, fastmath, cc)
    has_stop = stop is not None
    n_obs = len(obs)
    n_obs_c = max(n_obs, 1)
    pair_mask = ~np.uint64(1)
    nan = dtype(np.nan)
    if rng_only:
        step = device_jit(fastmath)(cpu._make_rng_only_step(model.dim,
                                                            max(model.noise_dim, 1)))
    else:
        step = build_step(model, method, dtype, fastmath, noise_ns)
    lane_select = _device_piece(("lane_select",), False, cc, lambda: _lane_select)
    normal_block = rng.normal_block_f32 if dtype == np.float32 else rng.normal_block_f64
    if rng_only:
        increments = "gaussian"
    extra = not rng_only and model.kind == "sde" and method.draws_extra(
        increments, max(model.noise_dim, 1))
    discrete = increments != "gaussian"
    fill_noise = _fill_noise_function(max(model.noise_dim, 1), increments, extra, dtype,
                                      fastmath, cc)
    # What (z0, z1, z2, z3) hold between steps: normals, or Philox words.
    z_start = np.uint64(0) if discrete else dtype(0.0)
    e_start = dtype(0.0)
    # sqrt(3 h) for three-point increments, as the CPU driver computes it.
    scale_squared = 3.0 if increments == "three_point" else 1.0
    init_normal = _device_piece(
        ("init_normal", model.dim, np.dtype(dtype).name), fastmath, cc,
        lambda: _make_init_normal(model.dim, normal_block, lane_select))
    dim = model.dim
    noise_dim = max(model.noise_dim, 1)
    has_noise = model.kind == "sde" or rng_only
    gshape = model.diffusion_shape if model.kind == "sde" else (1,)
    nb_dtype = numba.from_dtype(np.dtype(dtype))
    stream_init = np.uint64(philox.STREAM_INITIAL)
    save_observables = device_jit(fastmath)(_make_save_observables(observe, n_obs, dim, nan))

    def path_kernel(x0_rows, x0_mode, x0_mean, x0_std, params, t0, h, t1, n_steps,
                    save_steps, key0, key1, first_path, chunk, antithetic, x_out, save_buf,
                    obs_buf, hit_buf, bad):
        n_paths = x_out.shape[0]
        n_save = save_steps.shape[0]
        write_save = save_buf.shape[0] > 0
        write_obs = obs_buf.shape[0] > 0
        write_hits = hit_buf.shape[0] > 0
        hd = dtype(h)
        sqrt_h = dtype(math.sqrt(h))
        increment_scale = dtype(math.sqrt(scale_squared * h))
        x = cuda.local.array(dim, nb_dtype)
        x_new = cuda.local.array(dim, nb_dtype)
        f0 = cuda.local.array(dim, nb_dtype)
        f1 = cuda.local.array(dim, nb_dtype)
        f2 = cuda.local.array(dim, nb_dtype)
        f3 = cuda.local.array(dim, nb_dtype)
        xt = cuda.local.array(dim, nb_dtype)
        g0 = cuda.local.array(gshape, nb_dtype)
        g1 = cuda.local.array(gshape, nb_dtype)
        g2 = cuda.local.array(gshape, nb_dtype)
        g3 = cuda.local.array(gshape, nb_dtype)
        dw = cuda.local.array(noise_dim, nb_dtype)
        dz = cuda.local.array(noise_dim, nb_dtype)
        for j in range(noise_dim):
            dz[j] = dtype(0.0)
        ov = cuda.local.array(n_obs_c, nb_dtype)
        for i in range(cuda.grid(1), n_paths, cuda.gridsize(1)):
            # Antithetic pairs: path 2m + 1 draws the normals of path 2m, negated.
            path = first_path + np.uint64(i)
            odd = antithetic != 0 and (path & np.uint64(1)) != 0
            if antithetic != 0:
                path = path & pair_mask
            scale = -increment_scale if odd else increment_scale
            scale_z = -sqrt_h if odd else sqrt_h
            if x0_mode == X0_NORMAL:
                init_normal(key0, key1, stream_init, path, odd, x0_mean, x0_std, x)
            else:
                row = i if x0_mode == X0_PER_PATH else 0
                for j in range(dim):
                    x[j] = x0_rows[row, j]
            # Parameters are read from global memory through a row view: shared ones are
            # one broadcast, cached load per warp; per-path ones one row per thread.
            p = params[i if params.shape[0] > 1 else 0]
            alive = True
            hit_time = np.inf
            if has_stop and stop_fn(dtype(t0), x, p) > 0:
                alive = False
                hit_time = t0
            s = 0
            if n_save > 0 and save_steps[0] == 0:
                if write_save:
                    for j in range(dim):
                        save_buf[0, i, j] = x[j]
                if write_obs:
                    save_observables(obs_buf, 0, i, dtype(t0), x, p, ov)
                s = 1
            current_block = -1
            z0 = z1 = z2 = z3 = z_start
            e0 = e1 = e2 = e3 = e_start
            for k in range(n_steps):
                t = dtype(t0 + k * h)
                t_mid = dtype(t0 + (k + 0.5) * h)
                t_next = dtype(t1) if k + 1 == n_steps else dtype(t0 + (k + 1) * h)
                if has_noise:
                    current_block, z0, z1, z2, z3, e0, e1, e2, e3 = fill_noise(
                        key0, key1, k, path, scale, scale_z, dw, dz, current_block,
                        z0, z1, z2, z3, e0, e1, e2, e3)
                # A path that leaves the finite numbers is frozen at its first non-finite
                # state, as on the CPU: not advanced further (its noise is still drawn, in
                # step with the stream), counted, kept out of the statistics.
                # A stopped path is frozen the same way, at its first state with g > 0.
                if alive:
                    step(t, t_mid, t_next, hd, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt,
                         x_new)
                    for j in range(dim):
                        x[j] = x_new[j]
                        if not math.isfinite(x_new[j]):
                            alive = False
                    if has_stop and alive and stop_fn(t_next, x, p) > 0:
                        alive = False
                        hit_time = t1 if k + 1 == n_steps else t0 + (k + 1) * h
                if s < n_save and save_steps[s] == k + 1:
                    if write_save:
                        for j in range(dim):
                            save_buf[s, i, j] = x[j]
                    if write_obs:
                        save_observables(obs_buf, s, i, t_next, x, p, ov)
                    s += 1
            if write_hits:
                hit_buf[i] = hit_time
            finite = True
            for j in range(dim):
                x_out[i, j] = x[j]
                if not math.isfinite(x[j]):
                    finite = False
            if not finite:
                # Integer atomics: exact and order-free, and only diverging paths pay.
                cuda.atomic.add(bad, i // chunk, 1)

    return path_kernel


def _make_save_observables(observe, n_obs, dim, nan):
    """Writes every observable of path i at save index s into ``obs_buf`` (NaN for a
    path whose state is not finite, as the CPU driver records it)."""

    def save_observables(obs_buf, s, i, t_s, x, p, ov):
        finite = True
        for j in range(dim):
            finite = finite and math.isfinite(x[j])
        observe(t_s, x, p, ov)
        for o in range(n_obs):
            obs_buf[s, i, o] = ov[o] if finite else nan

    return save_observables


#: The statistics kernel's block: threads (each one (chunk, save index, column) task),
#: in teams of a warp that stage their values through shared memory together.
STATS_THREADS = 64
STATS_TEAM = 32
STATS_TEAMS = STATS_THREADS // STATS_TEAM
#: Row length of a team's tile in shared memory: one more than the team, so that the
#: lanes reading a row each (stride 33 doubles) fall in different banks.
STATS_TILE_ROW = 33


def stats_kernel(save_buf, chunk, row_gate, pair, count, mean, m2):
    """Per-chunk Welford statistics of saved values, in path order within a chunk.

    One thread per task (chunk c, save index s, column j) runs Welford's update over the
    chunk's paths in path order, the same arithmetic as the CPU driver's in the same
    order, so the float64 results equal the CPU's bit for bit (a sequential recurrence:
    no parallel merge rounds the same way). What is parallel is the reading: a team of
    ``STATS_TEAM`` threads (a warp) stages its tasks' values through shared memory a tile
    of ``STATS_TEAM`` paths at a time, the team's lanes reading consecutive paths of one
    task together (coalesced; a warp of tasks reading its own paths strides ``chunk *
    width`` elements between lanes), and the tile's values then feed the recurrences from
    shared memory. Blocks are small (``STATS_THREADS``) so that the tasks of a run spread
    over the SMs.

    ``save_buf`` (n_save, n_paths, width): states, observables or hitting times;
    ``count``, ``mean``, ``m2`` (n_chunks, n_save, width). ``row_gate``: a path with any
    non-finite column is left out (states); else each value is gated alone (observables,
    hitting times). ``pair``: antithetic pairs (paths 2m, 2m + 1) enter as their mean.
    A value left out is staged as NaN, which the recurrence skips.
    """
    n_chunks = count.shape[0]
    n_save = count.shape[1]
    dim = count.shape[2]
    n_paths = save_buf.shape[1]
    total = n_chunks * n_save * dim
    tile = cuda.shared.array((STATS_TEAMS, STATS_TEAM, STATS_TILE_ROW), numba.float64)
    task_s = cuda.shared.array((STATS_TEAMS, STATS_TEAM), numba.int64)
    task_row = cuda.shared.array((STATS_TEAMS, STATS_TEAM), numba.int64)
    task_j = cuda.shared.array((STATS_TEAMS, STATS_TEAM), numba.int64)
    task_len = cuda.shared.array((STATS_TEAMS, STATS_TEAM), numba.int64)
    nt = cuda.blockDim.x
    team_size = min(nt, STATS_TEAM)
    lane = cuda.threadIdx.x % team_size
    team = cuda.threadIdx.x // team_size
    stride = 2 if pair else 1
    span = team_size * stride
    # Grid-stride over whole blocks of tasks, so every thread of a block runs the same
    # iterations and reaches every barrier.
    for base in range(cuda.blockIdx.x * nt, total, cuda.gridDim.x * nt):
        tid = base + cuda.threadIdx.x
        mine = tid < total
        j = tid % dim
        s = (tid // dim) % n_save
        c = tid // (dim * n_save)
        task_s[team, lane] = s
        task_row[team, lane] = c * chunk
        task_j[team, lane] = j
        task_len[team, lane] = min(chunk, n_paths - c * chunk) if mine else 0
        n = 0
        mu = 0.0
        q = 0.0
        # The block's first task has the lowest chunk index, hence the most paths (only
        # the last chunk is short): the tiles every thread of the block walks through.
        c_first = base // (dim * n_save)
        longest = min(chunk, n_paths - c_first * chunk)
        cuda.syncthreads()
        for i0 in range(0, longest, span):
            offset = i0 + lane * stride
            for u in range(team_size):
                v = np.nan
                if offset < task_len[team, u]:
                    su = task_s[team, u]
                    i = task_row[team, u] + offset
                    ju = task_j[team, u]
                    v = np.float64(save_buf[su, i, ju])
                    if pair:
                        v = (v + np.float64(save_buf[su, i + 1, ju])) * 0.5
                    if row_gate:
                        for jj in range(dim):
                            if not math.isfinite(save_buf[su, i, jj]):
                                v = np.nan
                tile[team, u, lane] = v
            cuda.syncthreads()
            if mine:
                for k in range(team_size):
                    v = tile[team, lane, k]
                    if math.isfinite(v):
                        n = n + 1
                        d = v - mu
                        mu += d / n
                        q += d * (v - mu)
            cuda.syncthreads()
        if mine:
            count[c, s, j] = n
            mean[c, s, j] = mu
            m2[c, s, j] = q


#: Histogram slots counted in shared memory per block (int32, 8 KiB); histograms with
#: more bins are counted with global atomics directly.
HIST_SHARED_SLOTS = 2048

_hist_slot = cuda.jit(device=True)(layout.hist_slot)


def hist_kernel(save_buf, edges, parts, hist):
    """Add the histogram of every (save index s, component j) of ``save_buf`` to ``hist``.

    Task ``q`` of ``n_save * dim * parts`` (grid-stride over blocks) counts the paths of
    part ``part`` (a contiguous range, ``ceil(n_paths / parts)`` paths, read by the
    block's threads at consecutive paths) of (s, j) in a shared-memory histogram, then
    adds it to the global one with atomics (exact integer sums, in any order). A path
    with any non-finite component at save index s is not counted, as on the CPU.
    ``save_buf`` (n_save, n_paths, dim); ``edges`` (dim, bins + 1) float64;
    ``hist`` (n_save, dim, bins + 2) int64.
    """
    n_save = save_buf.shape[0]
    n_paths = save_buf.shape[1]
    dim = save_buf.shape[2]
    slots = hist.shape[2]
    bins = slots - 2
    shared = slots <= HIST_SHARED_SLOTS
    local = cuda.shared.array(HIST_SHARED_SLOTS, numba.int32)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for q in range(cuda.blockIdx.x, n_save * dim * parts, cuda.gridDim.x):
        sj = q % (n_save * dim)
        part = q // (n_save * dim)
        s = sj // dim
        j = sj % dim
        if shared:
            for b in range(tid, slots, nt):
                local[b] = 0
            cuda.syncthreads()
        per_part = -(-n_paths // parts)
        for i in range(part * per_part + tid, min(part * per_part + per_part, n_paths), nt):
            finite = True
            for jj in range(dim):
                if not math.isfinite(save_buf[s, i, jj]):
                    finite = False
            if finite:
                slot = _hist_slot(np.float64(save_buf[s, i, j]), edges, j, bins)
                if shared:
                    cuda.atomic.add(local, slot, 1)
                else:
                    cuda.atomic.add(hist, (s, j, slot), 1)
        if shared:
            cuda.syncthreads()
            for b in range(tid, slots, nt):
                if local[b] != 0:
                    cuda.atomic.add(hist, (s, j, b), np.int64(local[b]))
            cuda.syncthreads()


def path_signature(model, dtype, n_obs=0):
    """Numba argument types of the path kernel for (model, dtype, number of observables)."""
    f = numba.from_dtype(np.dtype(dtype))
    a1 = numba.types.Array(f, 1, "C")
    a2 = numba.types.Array(f, 2, "C")
    a3 = numba.types.Array(f, 3, "C")
    i64, f64, u64 = numba.types.int64, numba.types.float64, numba.types.uint64
    return (a2, i64, a1, a1, a2, f64, f64, f64, i64, numba.types.Array(i64, 1, "C"),
            u64, u64, u64, i64, i64, a2, a3, a3, numba.types.Array(f64, 1, "C"),
            numba.types.Array(i64, 1, "C"))


def stats_signature(dtype):
    """Numba argument types of the statistics kernel for saved values of ``dtype``."""
    f = numba.from_dtype(np.dtype(dtype))
    a3 = numba.types.Array
    i64 = numba.types.int64
    return (a3(f, 3, "C"), i64, i64, i64, a3(i64, 3, "C"), a3(numba.types.float64, 3, "C"),
            a3(numba.types.float64, 3, "C"))


def hist_signature(dtype):
    """Numba argument types of the histogram kernel."""
    f = numba.from_dtype(np.dtype(dtype))
    a = numba.types.Array
    f64 = numba.types.float64
    return (a(f, 3, "C"), a(f64, 2, "C"), numba.types.int64, a(numba.types.int64, 3, "C"))


class CudaKernel:
    """The compiled kernels of one (model, method, dtype, observables, stopping): the path
    kernel, and the statistics and histogram kernels of the run's dtype and of float64
    (hitting times)."""

    def __init__(self, model, method, dtype, path, stats, n_obs=0):
        self.model = model
        self.method = method
        self.dtype = dtype
        self.path = path
        self.stats = stats
        self.n_obs = n_obs
        self._blocks = {}

    @property
    def stats64(self):
        return _stats_dispatcher(np.float64)

    @property
    def hist(self):
        return _hist_dispatcher(self.dtype)

    def blocks(self, which, threads):
        """Blocks that keep every SM full for kernel ``which`` ("path" or "stats")."""
        if simulator_enabled():
            return SIM_BLOCKS
        key = (which, threads)
        if key not in self._blocks:
            self._blocks[key] = _resident_blocks(getattr(self, which), threads)
        return self._blocks[key]


def _resident_blocks(dispatcher, threads):
    """How many blocks of ``threads`` threads fit on the whole device at once."""
    device = cuda.get_current_device()
    sms = device.MULTIPROCESSOR_COUNT
    try:
        kernel = next(iter(dispatcher.overloads.values()))
        # The cooperative-grid limit is the occupancy calculator's blocks per SM (for
        # this kernel's registers and shared memory) times the SM count.
        return max(int(kernel.max_cooperative_grid_blocks(threads)), sms)
    except Exception:  # noqa: BLE001 - occupancy query unavailable: assume full occupancy
        per_sm = max(device.MAX_THREADS_PER_MULTI_PROCESSOR // threads, 1)
        return sms * per_sm


def _diagnose(model, dtype, error):
    """Turn a kernel compile failure into a ModelError naming the user function at fault."""
    scalar = numba.from_dtype(np.dtype(dtype))
    arr1 = numba.types.Array(scalar, 1, "C")
    for role, fn in model.functions:
        out_ndim = 2 if (role == "diffusion" and model.noise == "general") else 1
        out = numba.types.Array(scalar, out_ndim, "C")
        try:
            cuda.jit(device=True)(fn).compile_device((scalar, arr1, arr1, out))
        except Exception as exc:  # noqa: BLE001 - numba raises many kinds
            summary = "\n".join(str(exc).strip().splitlines()[:12])
            raise ModelError(f"{role} function {fn.__name__!r} could not be compiled by "
                             f"numba.cuda for dtype {np.dtype(dtype).name}:\n{summary}"
                             ) from None
    lines = str(error).strip().splitlines()
    hint = "check the shapes they index"
    if "constant data" in str(error):
        hint = ("the kernel has more than CUDA's 64 KiB of constant data: numba-cuda puts "
                "a copy of a global numpy array in it for every place a function reads "
                "the array; read it once into a local name, or pass a large array as the "
                "model's params")
    raise ModelError(f"the model {model!r} could not be compiled into a CUDA kernel (its "
                     f"functions compile alone; {hint}):\n"
                     + "\n".join(lines[:12])) from None


_KERNELS = {}
_STATS = {}


def _source_hash():
    """Hash of every source a CUDA kernel is built from: the CPU backend's (the step, the
    RNG, kmath, the fields, ...) and this module's."""
    return hashlib.sha256((cpu._SOURCE_HASH + inspect.getsource(sys.modules[__name__])
                           ).encode()).hexdigest()


#: (fastsde's version, numba-cuda's version, the sources' hash), read once per process.
_FINGERPRINT_BASE = []


def kernel_fingerprint(key):
    """What names a compiled kernel in the disk cache: ``key`` (what the kernel depends on
    beyond the sources: model fingerprint, method, dtype, observables, ...), fastsde's and
    numba-cuda's versions and the hash of the kernel sources."""
    if not _FINGERPRINT_BASE:
        _FINGERPRINT_BASE.append((__version__, numba_cuda_version(), _source_hash()))
    return hashlib.sha256(repr((key,) + _FINGERPRINT_BASE[0]).encode()).hexdigest()


try:
    from numba.cuda.dispatcher import CUDACache as _CUDACache
except Exception:  # noqa: BLE001 - the simulator keeps no kernels on disk
    _CUDACache = object


class _KeyedCudaCache(cpu.FingerprintKeyed, _CUDACache):
    """numba-cuda's on-disk kernel cache, keyed by the kernel's fingerprint.

    numba-cuda's own key pickles the closure's cells, which hold compiled device
    functions: they pickle differently in each process, so a fastsde kernel was never
    found again (every process compiled every kernel: 3-4 s per model on an H200). An
    entry holds the PTX and the cubin linked when it was compiled, under :func:`exact_fp`
    and without link-time optimisation, so a kernel loaded from it has the compiled
    kernel's floating point (tests/test_cuda_link.py checks the loaded cubin's bytes)."""


def jit_kernel(pyfunc, sig, fastmath=False, cache_key=None):
    """``cuda.jit`` a kernel and, on a GPU, compile it now for ``sig`` inside
    :func:`exact_fp`, then forbid further compilation: a launch with other argument types
    must fail rather than compile a variant with FMA contraction on.

    ``lto=False``: numba-cuda links with link-time optimisation by default when nvJitLink
    is installed; the cubin is then generated by nvJitLink from LTO-IR with its own
    default, FMA contraction on, whatever NVVM was told (the OU float64 path kernel: no
    ``fma.rn.f64`` in the PTX made under exact_fp, 77 in the PTX nvJitLink makes, and
    139 DFMA in its cubin against 58 with ``lto=False``, all of the latter from the
    correctly rounded division and square root). Without LTO the linker assembles the
    PTX made under exact_fp (``mul.rn``/``add.rn``, which the assembler never fuses).
    The option is passed with the function: ``cuda.jit(fastmath=..., lto=False)(f)``
    drops ``lto`` in numba-cuda 0.30. tests/test_cuda_link.py links every kernel as a
    launch does and counts the FMAs in the SASS.

    ``cache_key``: everything the kernel depends on beyond fastsde's sources (None: not
    cached). The compiled kernel is then kept in Numba's disk cache (``NUMBA_CACHE_DIR``)
    and a later process loads it instead of compiling (:class:`_KeyedCudaCache`).
    """
    if simulator_enabled():
        return cuda.jit(fastmath=fastmath)(pyfunc)
    check_driver()
    fingerprint = None if cache_key is None else kernel_fingerprint((cache_key, fastmath))
    if fingerprint is not None:
        pyfunc = cpu.named(pyfunc, fingerprint)
    disp = cuda.jit(pyfunc, fastmath=fastmath, lto=False)
    if fingerprint is not None:
        cpu.enable_disk_cache(disp, fingerprint, _KeyedCudaCache)
    with exact_fp():
        disp.compile(sig)
    disp.disable_compile()
    return disp


#: PTX ISA version -> the first CUDA version (of the driver, for a driver-side link)
#: that accepts it (PTX ISA release notes).
PTX_ISA_CUDA = {(7, 8): (12, 0), (8, 0): (12, 0), (8, 1): (12, 1), (8, 2): (12, 2),
                (8, 3): (12, 3), (8, 4): (12, 4), (8, 5): (12, 5), (8, 7): (12, 8),
                (8, 8): (12, 9), (9, 0): (13, 0)}

_DRIVER_CHECKED = []


def _probe_kernel(out):
    out[0] = 1.0


def _nvvm_ptx_version():
    """The PTX ISA version (major, minor) NVVM writes, from a one-line kernel's PTX."""
    ptx, _ = cuda.compile_ptx(_probe_kernel, (numba.types.float64[:],), cc=(7, 5))
    m = re.search(r"^\s*\.version\s+(\d+)\.(\d+)", ptx, re.M)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _link_backend():
    """``"nvjitlink"`` when kernels are linked to a cubin by nvJitLink on the host (the
    driver then only loads the cubin), else ``"driver"`` (the driver JIT-links the PTX)."""
    try:
        from cuda.core import Linker

        backend = str(Linker.which_backend()).lower()
        return "nvjitlink" if "nvjitlink" in backend else "driver"
    except Exception:  # noqa: BLE001 - older cuda-core: ask numba-cuda
        from numba.cuda.cudadrv import driver as drv

        return "nvjitlink" if drv._have_nvjitlink() else "driver"


def _nvjitlink_version():
    try:
        from cuda.bindings import nvjitlink

        return tuple(nvjitlink.version())[:2]
    except Exception:  # noqa: BLE001
        return None


def _driver_version():
    """The CUDA version the installed driver supports, (major, minor)."""
    from numba.cuda.cudadrv import driver as drv

    return tuple(drv.driver.get_version())


def check_driver():
    """Refuse, with a DeviceError naming both versions, a driver too old for what it must
    do with the kernels, before the first one is compiled and linked (where the driver's
    own error would be a bare CUDA_ERROR_UNSUPPORTED_PTX_VERSION).

    With nvJitLink (``fastsde[cuda]`` installs it) the PTX is linked to a cubin on the
    host and the driver only loads it: any driver of nvJitLink's CUDA major version can
    (minor-version compatibility). Without it the driver JIT-links the PTX, whose ISA
    version (8.8 from CUDA 12.9's NVVM) it must know: CUDA 12.9, driver R575 or later.
    Checked once per process."""
    if _DRIVER_CHECKED:
        return
    have = _driver_version()
    if _link_backend() == "nvjitlink":
        linker = _nvjitlink_version()
        if linker is not None and have[0] < linker[0]:
            raise DeviceError(
                f"the NVIDIA driver supports CUDA {have[0]}.{have[1]}, but the kernels are "
                f"linked by nvJitLink {linker[0]}.{linker[1]} into a cubin that needs a "
                f"CUDA {linker[0]}.x driver; update the driver, or install the CUDA "
                f"{have[0]} libraries (numba-cuda[cu{have[0]}])")
    else:
        ptx = _nvvm_ptx_version()
        need = PTX_ISA_CUDA.get(ptx)
        if need is not None and have < need:
            raise DeviceError(
                f"the NVIDIA driver supports CUDA {have[0]}.{have[1]}, but the kernels' "
                f"PTX (ISA {ptx[0]}.{ptx[1]}, from the installed NVVM) is linked by the "
                f"driver without nvJitLink and needs CUDA {need[0]}.{need[1]}; update the "
                f"driver, or install nvJitLink (pip install 'fastsde[cuda]', which links "
                f"on the host so that any CUDA {need[0]}.x driver can load the kernels)")
    _DRIVER_CHECKED.append(True)


def _stats_dispatcher(dtype):
    if dtype not in _STATS:
        _STATS[dtype] = jit_kernel(stats_kernel, stats_signature(dtype),
                                   cache_key=("stats", np.dtype(dtype).name))
    return _STATS[dtype]


_HIST = {}


def _hist_dispatcher(dtype):
    if dtype not in _HIST:
        _HIST[dtype] = jit_kernel(hist_kernel, hist_signature(dtype),
                                  cache_key=("hist", np.dtype(dtype).name))
    return _HIST[dtype]


#: Local memory one CUDA thread may use (the hardware limit on sm_50 to sm_90).
MAX_LOCAL_BYTES = 512 * 1024


def check_scratch(sz, dtype, model=None):
    """Refuse, before compiling, a model whose per-thread scratch (``cuda.local.array``
    of the state, the stage slopes, the diffusion's out arrays, noise and observables)
    exceeds a thread's local memory (``model``: the CPU backend's signature; one thread
    runs one path here, whatever the model)."""
    need = sz.scratch_elements() * np.dtype(dtype).itemsize
    if need > MAX_LOCAL_BYTES:
        raise ValueError(
            f"model too large for device='cuda': dim={sz.dim} with diffusion out "
            f"{sz.gshape} needs {need / 1024:.0f} KiB of local memory per thread, more "
            f"than the {MAX_LOCAL_BYTES // 1024} KiB a CUDA thread can have; use "
            f"device='cpu' (whose scratch goes to the heap past a size)")


def histogram_copies():
    """Histogram copies the host keeps for this backend: one (the device sums with
    atomics)."""
    return 1


def get_kernel(model, method, dtype, debug=False, rng_only=False, obs=(), stop=None,
               n_params=None, increments="gaussian", per_path_params=True):
    """The compiled CUDA kernels for (model, method, dtype), compiling them on first use.

    Parameters
    ----------
    n_params : int or None
        Width of the parameter rows the run passes. The kernel reads them through a row
        view of the argument (of its own width), so one compiled kernel serves every
        width.
    model : fastsde.SDE or fastsde.ODE
    method : fastsde.methods.Method
    dtype : numpy.float32 or numpy.float64
    debug : bool
        Bounds checking. numba.cuda has none on a GPU, so this raises there (before any
        allocation); the simulator checks every index anyway and accepts it.
    rng_only : bool
        The RNG-only ceiling (benchmarks): increments added to the state, no scheme.
    obs, stop
        Observables and stopping function, as for the CPU driver.
    increments : {"gaussian", "two_point", "three_point"}
    per_path_params : bool
        Accepted for the CPU driver's signature: a CUDA thread runs one path, so one
        kernel serves shared and per-path rows alike.

    Returns
    -------
    CudaKernel

    Raises
    ------
    ValueError
        ``debug=True`` on a GPU.
    ModelError
        A user function does not compile for the device; raised before any allocation.
    """
    dtype = np.dtype(dtype).type
    if debug and not simulator_enabled():
        raise ValueError("debug=True (bounds checking) is not available with device='cuda': "
                         "numba.cuda cannot check indices on a GPU; run the same call with "
                         "device='cpu' (same paths) to find an out-of-bounds index")
    fastmath = FASTMATH[dtype]
    key = (model.fingerprint, method.name, increments, np.dtype(dtype).name, rng_only,
           fastmath, montecarlo.fingerprint(obs, stop))
    kernel = _KERNELS.get(key)
    if kernel is None:
        source = _make_path_kernel(model, method, dtype, fastmath, rng_only, obs=obs,
                                   stop=stop, increments=increments)
        try:
            path = jit_kernel(source, path_signature(model, dtype, len(obs)), fastmath,
                              cache_key=("path",) + key)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001
            _diagnose(model, dtype, exc)
        kernel = CudaKernel(model, method, dtype, path, _stats_dispatcher(dtype), len(obs))
        _KERNELS[key] = kernel
    return kernel


@contextlib.contextmanager
def _as_if_device(cc):
    """Let device functions compile for compute capability ``cc`` with no GPU present
    (numba-cuda asks the current device for it while compiling device functions)."""
    from numba.cuda import dispatcher as _dispatcher

    original = _dispatcher.get_current_device
    _dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        _dispatcher.get_current_device = original


#: {(dtype name, cc): (statistics PTX, histogram PTX)}: compile_ptx's, per process.
_REDUCTION_PTX = {}


def compile_ptx(model, method, dtype, cc=(9, 0), fastmath=None, obs=(), stop=None,
                increments="gaussian"):
    """PTX of the path, statistics and histogram kernels for ``cc``, compiled as
    ``get_kernel`` compiles them (same fast-math and FMA settings). Needs the CUDA
    toolkit's NVVM and NVRTC libraries, not a GPU.

    Returns
    -------
    dict
        ``{"path": str, "stats": str, "hist": str}``.
    """
    dtype = np.dtype(dtype).type
    fastmath = FASTMATH[dtype] if fastmath is None else bool(fastmath)
    with _as_if_device(cc), exact_fp():
        source = _make_path_kernel(model, method, dtype, fastmath, cc=cc, obs=obs,
                                   stop=stop, increments=increments)
        path_ptx, _ = cuda.compile_ptx(source, path_signature(model, dtype, len(obs)),
                                       cc=cc, fastmath=fastmath)
        # The statistics and histogram kernels depend on the dtype alone: compiled once
        # per (dtype, cc) per process.
        key = (np.dtype(dtype).name, tuple(cc))
        if key not in _REDUCTION_PTX:
            _REDUCTION_PTX[key] = (
                cuda.compile_ptx(stats_kernel, stats_signature(dtype), cc=cc)[0],
                cuda.compile_ptx(hist_kernel, hist_signature(dtype), cc=cc)[0])
        stats_ptx, hist_ptx = _REDUCTION_PTX[key]
    return {"path": path_ptx, "stats": stats_ptx, "hist": hist_ptx}


# --- multilevel Monte Carlo: a fine and a coarse path per thread ---------------------

#: Threads of a level-kernel block; a block sums one chunk of pairs at a time
#: (levels.py), each thread taking the pairs ``slot = tid, tid + threads, ...``.
MLMC_THREADS = 256


def _make_mlmc_kernel(model, method, dtype, fastmath, payoff, stop, chunk, running=(),
                      cc=None):
    """The plain Python source of the level kernel (cpu._make_mlmc_chunk's contract):
    pair i of the batch is path ``first_path + i`` of the level's stream; the fine path
    takes ``n_coarse * ratio`` steps with the increments of ``simulate``, the coarse path
    ``n_coarse`` steps each driven by the sum of its ``ratio`` fine increments (added in
    the same order as on the CPU). ``coupled`` 0: the fine path only (level 0); 2: the
    coarse path driven by the increments of pair ``i ^ 1`` (the tests' broken coupling,
    the CPU's lane ``l ^ 1``). A block folds a chunk's pair values in shared memory as
    levels.py's pairwise tree, so ``sums`` (n_chunks, 6) holds the CPU's bits.
    ``running``: (component, sign) pairs, the running minima of sign * x[component]
    passed to the payoff at x[dim + i] as on the CPU. ``cc``: as for
    :func:`_make_path_kernel`."""
    rng, noise_ns = device_functions(fastmath, cc=cc)
    jit = device_jit(fastmath)
    step = build_step(model, method, dtype, fastmath, noise_ns)
    pay = jit(payoff)
    has_stop = stop is not None
    stop_fn = _stop_function(stop, fastmath, cc)
    moments = _device_piece(("pair_moments",), fastmath, cc, lambda: levels.pair_moments)
    noise_dim = max(model.noise_dim, 1)
    fill_noise = _fill_noise_function(noise_dim, "gaussian", False, dtype, fastmath, cc)
    dim = model.dim
    gshape = model.diffusion_shape
    nb_dtype = numba.from_dtype(np.dtype(dtype))
    n_sums = len(levels.MLMC_SUMS)
    zero = dtype(0.0)
    n_run = len(running)
    n_run_c = max(n_run, 1)
    payoff_dim = dim + n_run  # a constant for cuda.local.array
    run_comp = tuple(int(j) for j, _ in running) or (0,)
    run_sign = tuple(dtype(sg) for _, sg in running) or (dtype(1.0),)

    def mlmc_kernel(x0, params, t0, t1, n_coarse, ratio, coupled, key0, key1, first_path,
                    n_paths, sums, nonfinite):
        v = cuda.shared.array((n_sums, chunk), numba.float64)
        x = cuda.local.array(dim, nb_dtype)
        xc = cuda.local.array(dim, nb_dtype)
        xp = cuda.local.array(payoff_dim, nb_dtype)
        rf = cuda.local.array(n_run_c, nb_dtype)
        rc = cuda.local.array(n_run_c, nb_dtype)
        x_new = cuda.local.array(dim, nb_dtype)
        f0 = cuda.local.array(dim, nb_dtype)
        f1 = cuda.local.array(dim, nb_dtype)
        f2 = cuda.local.array(dim, nb_dtype)
        f3 = cuda.local.array(dim, nb_dtype)
        xt = cuda.local.array(dim, nb_dtype)
        g0 = cuda.local.array(gshape, nb_dtype)
        g1 = cuda.local.array(gshape, nb_dtype)
        g2 = cuda.local.array(gshape, nb_dtype)
        g3 = cuda.local.array(gshape, nb_dtype)
        dw = cuda.local.array(noise_dim, nb_dtype)
        dw_other = cuda.local.array(noise_dim, nb_dtype)
        dwc = cuda.local.array(noise_dim, nb_dtype)
        dz = cuda.local.array(noise_dim, nb_dtype)
        for j in range(noise_dim):
            dz[j] = zero
        n_fine = n_coarse * ratio
        h_f = (t1 - t0) / n_fine
        h_c = (t1 - t0) / n_coarse
        hf = dtype(h_f)
        hc = dtype(h_c)
        sqrt_hf = dtype(math.sqrt(h_f))
        p = params[0]
        start_alive = True
        if has_stop:
            for j in range(dim):
                x[j] = x0[j]
            if stop_fn(dtype(t0), x, p) > 0:
                start_alive = False
        tid = cuda.threadIdx.x
        n_threads = cuda.blockDim.x
        n_chunks = (n_paths + chunk - 1) // chunk
        for c in range(cuda.blockIdx.x, n_chunks, cuda.gridDim.x):
            for slot in range(tid, chunk, n_threads):
                i = c * chunk + slot
                y = 0.0
                pf = 0.0
                if i < n_paths:
                    path = first_path + np.uint64(i)
                    other = first_path + np.uint64(i ^ 1)
                    for j in range(dim):
                        x[j] = x0[j]
                        xc[j] = x0[j]
                    for r in range(n_run):
                        rf[r] = run_sign[r] * x0[run_comp[r]]
                        rc[r] = rf[r]
                    alive_f = start_alive
                    alive_c = start_alive
                    block = -1
                    z0 = z1 = z2 = z3 = zero
                    other_block = -1
                    o0 = o1 = o2 = o3 = zero
                    e0 = e1 = e2 = e3 = zero
                    for kc in range(n_coarse):
                        for j in range(noise_dim):
                            dwc[j] = zero
                        for m in range(ratio):
                            k = kc * ratio + m
                            block, z0, z1, z2, z3, e0, e1, e2, e3 = fill_noise(
                                key0, key1, k, path, sqrt_hf, sqrt_hf, dw, dz, block,
                                z0, z1, z2, z3, e0, e1, e2, e3)
                            t = dtype(t0 + k * h_f)
                            t_mid = dtype(t0 + (k + 0.5) * h_f)
                            t_next = dtype(t1) if k + 1 == n_fine else dtype(
                                t0 + (k + 1) * h_f)
                            if alive_f:
                                step(t, t_mid, t_next, hf, x, p, dw, dz, f0, f1, f2, f3,
                                     g0, g1, g2, g3, xt, x_new)
                                for j in range(dim):
                                    x[j] = x_new[j]
                                if has_stop and stop_fn(t_next, x, p) > 0:
                                    alive_f = False
                                for r in range(n_run):
                                    value = run_sign[r] * x[run_comp[r]]
                                    if value < rf[r]:
                                        rf[r] = value
                            if coupled == 2:
                                other_block, o0, o1, o2, o3, e0, e1, e2, e3 = fill_noise(
                                    key0, key1, k, other, sqrt_hf, sqrt_hf, dw_other, dz,
                                    other_block, o0, o1, o2, o3, e0, e1, e2, e3)
                                for j in range(noise_dim):
                                    dwc[j] += dw_other[j]
                            else:
                                for j in range(noise_dim):
                                    dwc[j] += dw[j]
                        if coupled != 0 and alive_c:
                            t = dtype(t0 + kc * h_c)
                            t_mid = dtype(t0 + (kc + 0.5) * h_c)
                            t_next = dtype(t1) if kc + 1 == n_coarse else dtype(
                                t0 + (kc + 1) * h_c)
                            step(t, t_mid, t_next, hc, xc, p, dwc, dz, f0, f1, f2, f3, g0,
                                 g1, g2, g3, xt, x_new)
                            for j in range(dim):
                                xc[j] = x_new[j]
                            if has_stop and stop_fn(t_next, xc, p) > 0:
                                alive_c = False
                            for r in range(n_run):
                                value = run_sign[r] * xc[run_comp[r]]
                                if value < rc[r]:
                                    rc[r] = value
                    for j in range(dim):
                        xp[j] = x[j]
                    for r in range(n_run):
                        xp[dim + r] = run_sign[r] * rf[r]
                    pf = np.float64(pay(dtype(t1), xp, p))
                    pc = 0.0
                    if coupled != 0:
                        for j in range(dim):
                            xp[j] = xc[j]
                        for r in range(n_run):
                            xp[dim + r] = run_sign[r] * rc[r]
                        pc = np.float64(pay(dtype(t1), xp, p))
                    if math.isfinite(pf) and math.isfinite(pc):
                        y = pf - pc
                    else:
                        # Counted and left out, as on the CPU (integer atomics: exact).
                        pf = 0.0
                        cuda.atomic.add(nonfinite, c, 1)
                moments(y, pf, v, slot)
            cuda.syncthreads()
            s = chunk >> 1
            while s > 0:
                for slot in range(tid, s, n_threads):
                    for r in range(n_sums):
                        v[r, slot] += v[r, slot + s]
                cuda.syncthreads()
                s >>= 1
            if tid == 0:
                for r in range(n_sums):
                    sums[c, r] = v[r, 0]
            # The next chunk overwrites v only after thread 0 has read it.
            cuda.syncthreads()

    return mlmc_kernel


def mlmc_signature(dtype):
    """Numba argument types of the level kernel."""
    f = numba.from_dtype(np.dtype(dtype))
    a = numba.types.Array
    i64, f64, u64 = numba.types.int64, numba.types.float64, numba.types.uint64
    return (a(f, 1, "C"), a(f, 2, "C"), f64, f64, i64, i64, i64, u64, u64, u64, i64,
            a(f64, 2, "C"), a(i64, 1, "C"))


_MLMC_KERNELS = {}


def get_mlmc_kernel(model, method, dtype, payoff, chunk, stop=None, running=()):
    """The compiled level kernel for (model, method, dtype, payoff, pairs per chunk (a
    power of two: the shared buffer's width), stopping function, running extrema),
    compiled on first use (exact floating point, as :func:`get_kernel`)."""
    chunk = int(chunk)
    dtype = np.dtype(dtype).type
    fastmath = FASTMATH[dtype]
    running = tuple((int(j), float(sg)) for j, sg in running)
    key = (model.fingerprint, method.name, np.dtype(dtype).name, fastmath, chunk,
           montecarlo.fingerprint((("payoff", payoff),), stop), running)
    kernel = _MLMC_KERNELS.get(key)
    if kernel is None:
        source = _make_mlmc_kernel(model, method, dtype, fastmath, payoff, stop, chunk,
                                   running)
        try:
            kernel = jit_kernel(source, mlmc_signature(dtype), fastmath,
                                cache_key=("mlmc",) + key)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001
            _diagnose(model, dtype, exc)
        _MLMC_KERNELS[key] = kernel
    return kernel


def compile_mlmc_ptx(model, method, dtype, payoff, chunk, stop=None, cc=(9, 0),
                     running=()):
    """PTX of the level kernel for ``cc``, compiled as :func:`get_mlmc_kernel` compiles
    it. Needs the CUDA toolkit's NVVM, not a GPU."""
    chunk = int(chunk)
    dtype = np.dtype(dtype).type
    fastmath = FASTMATH[dtype]
    with _as_if_device(cc), exact_fp():
        source = _make_mlmc_kernel(model, method, dtype, fastmath, payoff, stop, chunk,
                                   running, cc=cc)
        ptx, _ = cuda.compile_ptx(source, mlmc_signature(dtype), cc=cc, fastmath=fastmath)
    return ptx


def run_mlmc_level(kernel, x0, params, t0, t1, n_coarse, ratio, coupled, key0, key1,
                   first_path, n_paths, chunk):
    """Pairs ``first_path ...`` of a level on the GPU: the per-chunk sums (n_chunks, 6)
    float64 and non-finite counts (n_chunks,), copied back (48 bytes per chunk)."""
    n_chunks = -(-n_paths // chunk)
    d_sums = cuda.device_array((n_chunks, len(levels.MLMC_SUMS)), np.float64)
    d_bad = cuda.to_device(np.zeros(n_chunks, np.int64))
    if simulator_enabled():
        threads, blocks = SIM_THREADS_PER_BLOCK, min(n_chunks, SIM_BLOCKS)
    else:
        # One block per chunk up to the grid limit; the kernel strides past it.
        threads, blocks = MLMC_THREADS, min(n_chunks, 2 ** 31 - 1)
    kernel[blocks, threads](cuda.to_device(np.ascontiguousarray(x0)),
                            cuda.to_device(np.ascontiguousarray(params)), float(t0),
                            float(t1), int(n_coarse), int(ratio), int(coupled),
                            np.uint64(key0), np.uint64(key1), np.uint64(first_path),
                            int(n_paths), d_sums, d_bad)
    return d_sums.copy_to_host(), d_bad.copy_to_host()


# --- running -------------------------------------------------------------------------

def _free_device_bytes():
    """Free memory on the current GPU in bytes, or None (simulator, or not known)."""
    if simulator_enabled():
        return None
    try:
        free, _total = cuda.current_context().get_memory_info()
        return int(free)
    except Exception:  # noqa: BLE001 - no context: keep the fixed budget
        return None


def _batch_paths(n_paths, chunk, bytes_per_path, free=None):
    """Paths per device batch: a multiple of ``chunk`` within the device-memory budget
    (``DEVICE_BATCH_BYTES``, and at most half of ``free`` bytes when that is known)."""
    budget = DEVICE_BATCH_BYTES
    if free is not None:
        budget = min(budget, free // 2)
    per_batch = max(1, budget // max(bytes_per_path * chunk, 1)) * chunk
    return min(per_batch, -(-n_paths // chunk) * chunk)


def check_batch_fits(m, bytes_per_path, fixed_bytes, free, parts):
    """Raise OutputTooLargeError when a batch of ``m`` paths (the smallest one, whole
    chunks) needs more device memory than is free, instead of CUDA's out-of-memory error
    in the middle of the run. ``parts``: (what, bytes per path) for the message."""
    need = m * bytes_per_path + fixed_bytes
    if free is None or need <= free:
        return
    mib = 2.0 ** 20
    detail = ", ".join(f"{what} {b}" for what, b in parts if b)
    raise OutputTooLargeError(
        f"device='cuda': a batch of {m} paths needs {need / mib:.1f} MiB of GPU memory "
        f"({bytes_per_path} bytes per path: {detail}; plus {fixed_bytes} bytes shared), "
        f"but the GPU has {free / mib:.1f} MiB free. Runs are already cut into batches "
        f"of whole chunks of paths and this is the smallest, so ask for less per path: "
        f"keep_paths=False and fewer save times (save_at), fewer observables, "
        f"keep_x=False, or a statistics-only run (stats=True, keep_paths=False, "
        f"keep_x=False); or free GPU memory held by other processes, or use device='cpu'")


def launch(kernel, device_args, reductions=()):
    """Launch the path kernel, then the reductions of its buffers; asynchronous.

    Parameters
    ----------
    kernel : CudaKernel
    device_args : tuple
        The path kernel's arguments: (x0_rows, x0_mode, x0_mean, x0_std, params, t0, h, t1,
        n_steps, save_steps, key0, key1, first_path, chunk, antithetic, x_out, save_buf,
        obs_buf, hit_buf, bad), arrays on the device; ``save_buf`` (n_save, m, dim),
        ``obs_buf`` (n_save, m, n_obs) and ``hit_buf`` (m,) may be empty; ``bad``
        (n_chunks,) int64 zeros (non-finite paths per chunk are added to it).
    reductions : sequence of tuples
        ``("stats", dispatcher, buf, row_gate, pair, (count, mean, m2))``: per-chunk
        Welford statistics of ``buf`` (n_save, m, width) into device arrays of shape
        (n_chunks, n_save, width); ``("hist", buf, edges, hist)``: histograms of
        ``buf`` added to ``hist`` (n_save, dim, bins + 2).
    """
    threads = SIM_THREADS_PER_BLOCK if simulator_enabled() else THREADS_PER_BLOCK
    n_paths = device_args[15].shape[0]
    chunk = device_args[13]
    blocks = max(1, min(-(-n_paths // threads), kernel.blocks("path", threads)))
    kernel.path[blocks, threads](*device_args)
    launch_reductions(kernel, chunk, reductions)


def launch_reductions(kernel, chunk, reductions):
    """Launch the reductions of :func:`launch` (``chunk``: paths per chunk); asynchronous.
    ``kernel`` supplies the block counts (``CudaKernel.blocks``)."""
    threads = SIM_THREADS_PER_BLOCK if simulator_enabled() else THREADS_PER_BLOCK
    for red in reductions:
        if red[0] == "stats":
            _, disp, buf, row_gate, pair, out = red
            total = out[0].size
            st = threads if simulator_enabled() else STATS_THREADS
            blocks = max(1, min(-(-total // st), kernel.blocks("stats", st)))
            disp[blocks, st](buf, chunk, row_gate, pair, *out)
        else:
            _, buf, edges, hist = red
            n_sj = buf.shape[0] * buf.shape[2]
            full = kernel.blocks("stats", threads)
            parts = max(1, min(full // max(n_sj, 1), -(-buf.shape[1] // (threads * 64))))
            blocks = max(1, min(n_sj * parts, full))
            kernel.hist[blocks, threads](buf, edges, parts, hist)


def run(kernel, args):
    """Run the kernels over the paths of ``args`` and copy back what the caller keeps.

    Parameters
    ----------
    kernel : CudaKernel
        From :func:`get_kernel`.
    args : fastsde.kernels.layout.KernelArgs
        Host arrays, exactly as for the CPU driver; the outputs are filled in place (the
        histogram is added to). Only what the run keeps crosses the bus: a
        statistics-only run (``x_out`` empty) moves back only the per-chunk statistics,
        the histogram and the per-chunk count of non-finite paths.
    """
    n_paths, dim = args.n_paths, args.x0_mean.shape[0]
    dtype = np.dtype(args.x0_mean.dtype)
    chunk = args.chunk
    keep_x = args.x_out.shape[0] > 0
    keep = args.paths_out.shape[0] > 0
    stats = args.st_count.shape[0] > 0
    want_obs = args.ob_count.shape[0] > 0
    want_hits = args.hit_count.shape[0] > 0 or args.hit_out.shape[0] > 0
    want_hist = args.hist.shape[0] > 0
    n_save = args.save_steps.shape[0]
    n_obs = args.ob_count.shape[2]
    per_path_x0 = args.x0_mode == X0_PER_PATH
    per_path_params = args.params.shape[0] > 1
    itemsize = dtype.itemsize
    save_states = keep or stats or want_hist
    parts = (("final state", itemsize * dim),
             ("saved states", itemsize * dim * n_save if save_states else 0),
             ("x0 row", itemsize * dim if per_path_x0 else 0),
             ("observables", itemsize * n_save * n_obs if want_obs else 0),
             ("parameter row", args.params.shape[1] * itemsize if per_path_params else 0),
             ("hitting time", 8 if want_hits else 0),
             ("per-chunk statistics", -(-n_save * (dim + n_obs) * 24 // chunk) + 8))
    bytes_per_path = sum(b for _, b in parts)
    free = _free_device_bytes()
    batch = _batch_paths(n_paths, chunk, bytes_per_path, free)
    fixed_bytes = (args.x0_mean.nbytes + args.x0_std.nbytes + args.save_steps.nbytes
                   + (0 if per_path_x0 else args.x0_rows.nbytes)
                   + (0 if per_path_params else args.params.nbytes)
                   + (args.hist[0].nbytes + args.hist_edges.nbytes if want_hist else 0))
    check_batch_fits(min(batch, n_paths), bytes_per_path, fixed_bytes, free, parts)
    # Everything goes through the default stream: launches are asynchronous, and each
    # copy back waits for the kernels before it, so no explicit synchronisation is needed.
    d_mean0 = cuda.to_device(np.ascontiguousarray(args.x0_mean))
    d_std0 = cuda.to_device(np.ascontiguousarray(args.x0_std))
    d_save_steps = cuda.to_device(np.ascontiguousarray(args.save_steps))
    d_rows = None if per_path_x0 else cuda.to_device(np.ascontiguousarray(args.x0_rows))
    d_params = None if per_path_params else cuda.to_device(np.ascontiguousarray(args.params))
    d_hist = d_edges = None
    if want_hist:
        d_hist = cuda.to_device(np.zeros(args.hist.shape[1:], np.int64))
        d_edges = cuda.to_device(np.ascontiguousarray(args.hist_edges))
    for a in range(0, n_paths, batch):
        b = min(a + batch, n_paths)
        m = b - a
        ca, cb = a // chunk, -(-b // chunk)
        rows = (cuda.to_device(np.ascontiguousarray(args.x0_rows[a:b]))
                if per_path_x0 else d_rows)
        prm = (cuda.to_device(np.ascontiguousarray(args.params[a:b]))
               if per_path_params else d_params)
        d_x = cuda.device_array((m, dim), dtype)
        d_save = cuda.device_array((n_save, m, dim) if save_states else (0, 0, dim), dtype)
        d_obs = cuda.device_array((n_save, m, n_obs) if want_obs else (0, 0, n_obs), dtype)
        d_hits = cuda.device_array(m if want_hits else 0, np.float64)
        d_bad = cuda.to_device(np.zeros(cb - ca, np.int64))
        reductions = []
        host_stats = []
        for prefix, flag, buf, gate, pair, width in (
                ("st", stats, d_save, 1, 0, dim),
                ("ob", want_obs, d_obs, 0, args.antithetic, n_obs),
                ("hit", args.hit_count.shape[0] > 0,
                 d_hits.reshape(1, m, 1) if want_hits else None, 0, 0, 1)):
            if not flag:
                continue
            shape = (cb - ca, 1 if prefix == "hit" else n_save, width)
            out = (cuda.device_array(shape, np.int64), cuda.device_array(shape, np.float64),
                   cuda.device_array(shape, np.float64))
            # Hitting times are float64 whatever the run's dtype.
            disp = kernel.stats64 if prefix == "hit" else kernel.stats
            reductions.append(("stats", disp, buf, gate, pair, out))
            host_stats.append((out, [getattr(args, name) for name in
                                     layout.STAT_GROUPS[prefix]]))
        if want_hist:
            reductions.append(("hist", d_save, d_edges, d_hist))
        launch(kernel, (rows, args.x0_mode, d_mean0, d_std0, prm, args.t0, args.h, args.t1,
                        args.n_steps, d_save_steps, args.key0, args.key1,
                        args.first_path + np.uint64(a), chunk, args.antithetic, d_x, d_save,
                        d_obs, d_hits, d_bad), reductions)
        for out, hosts in host_stats:
            for d_arr, host in zip(out, hosts):
                d_arr.copy_to_host(host[ca:cb])
        if keep:
            args.paths_out[:, a:b] = d_save.copy_to_host()  # a strided host slice: via a copy
        if keep_x:
            d_x.copy_to_host(args.x_out[a:b])
        if args.hit_out.shape[0] > 0:
            d_hits.copy_to_host(args.hit_out[a:b])
        d_bad.copy_to_host(args.nonfinite[ca:cb])
    if want_hist:
        args.hist[0] += d_hist.copy_to_host()
