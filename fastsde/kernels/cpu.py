"""CPU driver: Numba ``@njit(parallel=True)`` kernels over chunks of paths.

Work is split into fixed chunks of consecutive paths (the chunk size depends only on the
request, never on the thread count); ``prange`` runs chunks in parallel. A chunk advances
its paths in lanes of ``LANES`` consecutive paths: every fourth step (one Philox block per
path) the Philox words of all lanes are computed in one loop over the lanes and their
Gaussian transform in another, which LLVM turns into SIMD code (uint64 multiplies,
branch-free polynomial log/sin/cos, no libm call; 512-bit vectors where the CPU has
AVX-512), then the scheme's step runs for each lane. Per-chunk statistics (Welford, paths
in order) are merged on the host in chunk order (Chan et al.), so every output is
bit-identical for any thread count.
"""

import hashlib
import os
import pickle
import types as pytypes
import math
import threading

import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils, compiler, errors, event
from numba.core.caching import FunctionCache
from numba.core.compiler_lock import global_compiler_lock
from numba.core.runtime import rtsys
from numba.extending import intrinsic
from llvmlite import binding as llvm_binding
from llvmlite.ir.values import FunctionAttributes

from .. import __version__
from ..errors import ModelError
from . import bits, fmath, layout, levels, philox, steps, unroll
from .. import montecarlo
from .target import compile_functions, module_functions

#: Every function of philox.py (they call each other by name).
RNG_FUNCTIONS = module_functions(philox)
#: Paths advanced together, per dtype. Chosen by measurement on a 2-core AVX-512 machine
#: (RNG_VERSION 2 kernels, OU Euler-Maruyama, 10^6 paths, final state only, 2 threads,
#: path-steps/s, one process per width, so within the machine's 5-10% drift): float32
#: 32 lanes 1.76e9, 64 lanes 1.78-1.84e9, 128 lanes 1.83-1.85e9, 256 lanes 1.71e9;
#: float64 16 lanes 5.9e8, 32 lanes 7.2e8, 64 lanes 7.6-7.7e8, 128 lanes 7.5e8. Below 64
#: the time loop's per-step work is too short to overlap the step's latency chain; above
#: it the lane arrays leave the registers' neighbourhood without a gain.
LANES = {np.float32: 64, np.float64: 64}
#: Paths advanced together by a model whose drift is evaluated a block at a time
#: (``model.lane_block``: an MLPField, a large Gaussian mixture, a user's drift whose
#: loops stay), whose layer or component loops run once per block over its lanes: the
#: longer a block's rows, the less each pass's setup (its weights read and broadcast,
#: its loop's bounds and alias checks) costs per path. Rows of 512 bytes in both dtypes.
#: Measured on a 2-core AVX-512 machine, bench/drifts.py (fastsde alone, 2 threads, two
#: runs per width), path-steps/s at 64 / 128 lanes in float32: MLP 3-64-64-2 tanh
#: 1.11e7 / 1.27e7-1.32e7, silu 1.13e7-1.14e7 / 1.24e7-1.29e7, 3-256-256-2 tanh
#: 1.14e6-1.15e6 / 1.27e6-1.39e6, 64-component mixture flow 2.69e7-2.74e7 / 3.14e7-3.27e7
#: (256 lanes: 3-64-64-2 tanh 1.13e7-1.27e7); in float64 128 lanes gained nothing
#: (3-64-64-2 tanh 5.6e6-6.5e6 / 5.4e6-5.8e6, a user's 8-term mixture drift 1.55e8 /
#: 1.39e8-1.44e8).
BLOCK_LANES = {np.float32: 128, np.float64: 64}


def lanes_for(model, dtype):
    """Paths per lane block in ``model``'s CPU kernels of ``dtype`` (the paths' bits do not
    depend on it)."""
    table = BLOCK_LANES if model.lane_block is not None else LANES
    return table[np.dtype(dtype).type]


#: Parameter counts up to which the step copies a lane's parameters at every step
#: unconditionally (run_chunk); above, a shared row is loaded once per chunk.
COPY_PARAMS_MAX = 64
#: Vector width asked of LLVM for the kernel's loops (see :func:`_prefer_vector_width`).
#: On this project's AVX-512 machine (RNG_VERSION 2 kernels, one process each) 512-bit
#: vectors ran OU float32 at 1.62e9 path-steps/s against 9.2e8 with LLVM's default 256,
#: float64 7.2e8 against 5.5e8.
VECTOR_BITS = 512
#: Kernels use numpy's error model: a division by zero gives inf/nan (counted as a
#: non-finite path) instead of raising, which would also stop LLVM from vectorising.
_JIT = dict(error_model="numpy")
#: The compiled pieces that only other compiled code calls (by symbol or by address):
#: Numba's wrappers for calls from Python (its CPython and C entry points) would be
#: built, optimised and compiled for nothing, ~0.15 s of every new model's kernel.
_WRAPPERLESS = dict(no_cpython_wrapper=True, no_cfunc_wrapper=True)
_PIECE = dict(_JIT, **_WRAPPERLESS)
NOISE_FUNCTIONS = ("noise_diagonal", "noise_scalar", "noise_general")
INCREMENT_FUNCTIONS = ("increment_diagonal", "increment_scalar", "column_diagonal",
                       "column_scalar", "column_general")

#: LLVM bit casts and select, bound into the RNG functions and used by the lane blends.
_bits = bits.cpu_primitives()
_rng = compile_functions(philox, RNG_FUNCTIONS, njit(inline="always", **_JIT), _bits)
_noise = compile_functions(steps, NOISE_FUNCTIONS + INCREMENT_FUNCTIONS,
                           njit(inline="always", **_JIT))
_block_words, _block_low_words = _rng.block_words, _rng.block_low_words
_normals_f32, _box_muller_f64 = _rng.normals_f32, _rng.box_muller_f64
_box_muller_f32 = _rng.box_muller_f32
_two_point_sign, _three_point_sign = _rng.two_point_sign, _rng.three_point_sign


def _make_fill_normals(dtype, lanes, first_pair_only=False):
    """The normals of block ``block`` for every lane: ``Z[r * lanes + l]`` is normal r of
    the block of lane l (path ``(path0 + l) & pair_bits``). ``first_pair_only``: normals
    0 and 1 only (one Box-Muller transform instead of two; the same bits), for runs that
    use no more (the first levels of multilevel Monte Carlo: one or two steps).

    Two stages, each its own loop over the lanes: the Philox words into ``W`` (uint32),
    then their Gaussian transform. Apart, each loop is shorter and the out-of-order core
    overlaps its iterations better than those of one fused loop calling
    ``normal_block_*``. Measured (RNG_VERSION 2) on one AVX-512 core, 64 lanes: float32
    0.89 (split) against 1.05-1.08 ns per normal (fused);
    in the whole kernel float64 ran best with each Box-Muller pair in a loop of its own
    (7.6e8 against 6.5e8 path-steps/s for one transform loop, 7.0e8 fused). The stages
    are philox.py's own functions, so the bits are those of ``normal_block_*``.

    In float32 the words loop runs two lanes, half the block apart, per iteration: two
    independent Philox chains in program order. The ten rounds of one vector of lanes are
    a single dependency chain (multiply, shift, xor), and with one chain an iteration the
    multiplies and shifts, which share one port on this AVX-512 core, were left idle
    between rounds (our reading of the figures, not a profile). Measured with
    ``tools/ab_kernel.py 212b96c`` (RNG_VERSION 3, one process, against the same kernel
    with one chain; bench/results/ab_kernel-2026-12-01.md and runs before it): OU float32
    +9 to +12% on 1 thread, +9 to +16% on 2. Four chains were no faster than two and eight
    slower (register spills). float64 has two chains per lane already (the words and the
    low words) and gained nothing from four.
    """
    if lanes % 2:
        raise ValueError(f"lanes must be even (the words loop runs two lanes at a time); "
                         f"got {lanes}")
    half = lanes // 2

    @njit(inline="always", **_JIT)
    def store_words(W, offset, l, w0, w1, w2, w3):
        W[offset + l] = w0
        W[lanes + offset + l] = w1
        W[2 * lanes + offset + l] = w2
        W[3 * lanes + offset + l] = w3

    if dtype == np.float32:
        def fill_normals(Z, W, key0, key1, block, stream, path0, pair_bits):
            _inline_into_callers()
            _prefer_vector_width(VECTOR_BITS)
            # Lanes l and l + half in one iteration: two independent Philox chains.
            for l in range(half):
                a0, a1, a2, a3 = _block_words(key0, key1, block, stream,
                                              (path0 + np.uint64(l)) & pair_bits)
                b0, b1, b2, b3 = _block_words(key0, key1, block, stream,
                                              (path0 + np.uint64(l + half)) & pair_bits)
                store_words(W, 0, l, a0, a1, a2, a3)
                store_words(W, half, l, b0, b1, b2, b3)
            if first_pair_only:
                for l in range(lanes):
                    z0, z1 = _box_muller_f32(np.uint64(W[l]), np.uint64(W[lanes + l]))
                    Z[l] = z0
                    Z[lanes + l] = z1
                return
            for l in range(lanes):
                z0, z1, z2, z3 = _normals_f32(np.uint64(W[l]), np.uint64(W[lanes + l]),
                                              np.uint64(W[2 * lanes + l]),
                                              np.uint64(W[3 * lanes + l]))
                Z[l] = z0
                Z[lanes + l] = z1
                Z[2 * lanes + l] = z2
                Z[3 * lanes + l] = z3
    else:
        def fill_normals(Z, W, key0, key1, block, stream, path0, pair_bits):
            _inline_into_callers()
            _prefer_vector_width(VECTOR_BITS)
            for l in range(lanes):
                path = (path0 + np.uint64(l)) & pair_bits
                w0, w1, w2, w3 = _block_words(key0, key1, block, stream, path)
                v0, v1, v2, v3 = _block_low_words(key0, key1, block, stream, path)
                store_words(W, 0, l, w0, w1, w2, w3)
                store_words(W, 4 * lanes, l, v0, v1, v2, v3)
            # normals_f64's two Box-Muller pairs, (words 0, 1) and (words 2, 3), a loop each.
            for l in range(lanes):
                z0, z1 = _box_muller_f64(np.uint64(W[l]), np.uint64(W[4 * lanes + l]),
                                         np.uint64(W[lanes + l]), np.uint64(W[5 * lanes + l]))
                Z[l] = z0
                Z[lanes + l] = z1
            if first_pair_only:
                return
            for l in range(lanes):
                z2, z3 = _box_muller_f64(np.uint64(W[2 * lanes + l]),
                                         np.uint64(W[6 * lanes + l]),
                                         np.uint64(W[3 * lanes + l]),
                                         np.uint64(W[7 * lanes + l]))
                Z[2 * lanes + l] = z2
                Z[3 * lanes + l] = z3
    # Compiled on its own, once per dtype and lanes (then from the disk cache), and
    # inlined into each kernel by LLVM (see _inline_into_callers). Called without LLVM's
    # inlining, as a function, OU float32 ran at 89% of the inlined kernel's path-steps/s
    # (2.62e9 against 2.93e9, tools/ab_kernel.py against a520347, same final states).
    return _shared_function(fill_normals, ("fill_normals", np.dtype(dtype).name, lanes,
                                           VECTOR_BITS, first_pair_only), **_PIECE)


def _make_fill_discrete(dtype, lanes, increments):
    """The discrete increments of block ``block`` for every lane (see
    ``simulate(..., increments=...)`` and docs/random-streams.md).

    "two_point": only the Philox words, into ``W``: the kernel reads draw r of the block
    (r < 128) as bit ``r % 32`` of word ``r // 32``. "three_point": the words, then the
    four values -1, 0, +1 (as floats, scaled by the kernel) into ``Z[r * lanes + l]``.
    No Gaussian transform: a Philox call serves 128 two-point or 4 three-point draws.
    """
    three = increments == "three_point"

    @njit(inline="always", **_JIT)
    def store_words(W, l, w0, w1, w2, w3):
        W[l] = w0
        W[lanes + l] = w1
        W[2 * lanes + l] = w2
        W[3 * lanes + l] = w3

    def fill_discrete(Z, W, key0, key1, block, stream, path0, pair_bits):
        _inline_into_callers()
        _prefer_vector_width(VECTOR_BITS)
        for l in range(lanes):
            w0, w1, w2, w3 = _block_words(key0, key1, block, stream,
                                          (path0 + np.uint64(l)) & pair_bits)
            store_words(W, l, w0, w1, w2, w3)
        if three:
            for r in range(4):
                for l in range(lanes):
                    Z[r * lanes + l] = dtype(_three_point_sign(np.uint64(W[r * lanes + l])))

    return _shared_function(fill_discrete, ("fill_discrete", increments,
                                            np.dtype(dtype).name, lanes, VECTOR_BITS),
                            **_PIECE)


def _normal_block_dispatcher(dtype):
    """``normal_block_f32/f64`` as a function of its own, compiled once per dtype and
    kept in the disk cache (the initial states of ``fs.Normal`` draw from it once per lane
    and four components: a call costs nothing there, inlining cost compile time in every
    model's kernel)."""
    block = _rng.normal_block_f32 if dtype == np.float32 else _rng.normal_block_f64

    def normal_block(key0, key1, index, stream, path):
        return block(key0, key1, index, stream, path)

    return _shared_function(normal_block, ("normal_block", np.dtype(dtype).name), **_JIT)


_NORMAL_BLOCK_ADDRESSES = {}


def _normal_block_address(dtype):
    """Native entry point of :func:`_normal_block_dispatcher`'s function for ``dtype``,
    compiled for the argument types ``run_chunk`` calls it with (once per process)."""
    name = np.dtype(dtype).name
    if name not in _NORMAL_BLOCK_ADDRESSES:
        compiled = _compiled(_normal_block_dispatcher(dtype), (types.uint64,) * 5)
        scalar = numba.from_dtype(np.dtype(dtype))
        if compiled.signature.return_type != types.UniTuple(scalar, 4):
            raise RuntimeError(f"fastsde: normal_block returns "
                               f"{compiled.signature.return_type}")
        _NORMAL_BLOCK_ADDRESSES[name] = _address(compiled)
    return _NORMAL_BLOCK_ADDRESSES[name]


@intrinsic
def _widened(typingctx, array, length):
    """The 1-D array ``array`` seen with ``length`` elements (the same data pointer).

    The lane-block replay's drift (:func:`_make_replay_drift`) reaches its buffers this
    way: the steps pass it the parameter row, which is the first part of the replay
    buffer, and user functions read that row's length (``p.shape[0]``), so the row
    itself must keep it."""
    if not isinstance(array, types.Array) or array.ndim != 1:
        return None
    result = types.Array(array.dtype, 1, "A")

    def codegen(context, builder, sig, args):
        source = context.make_array(sig.args[0])(context, builder, args[0])
        widened = context.make_array(result)(context, builder)
        n = context.cast(builder, args[1], sig.args[1], types.intp)
        # No meminfo: a borrowed view, like numba.carray's, which the caller's array
        # outlives (sharing the meminfo without a reference of its own would free the
        # buffer twice).
        context.populate_array(widened, data=source.data,
                               shape=cgutils.pack_array(builder, [n]),
                               strides=source.strides, itemsize=source.itemsize,
                               meminfo=None)
        return widened._getvalue()

    return result(array, length), codegen


class _AttributesWithStrings(FunctionAttributes):
    """llvmlite's function attributes plus string attributes (``"name"="value"``), which
    llvmlite has no spelling for; they are printed after the enumerated ones."""

    def __init__(self, base, strings):
        super().__init__()
        for name in base:
            self.add(name)
        self.alignstack = base.alignstack
        self.personality = base.personality
        self.strings = dict(strings)

    def __bool__(self):
        return True

    def _to_list(self, ret_type):
        return (super()._to_list(ret_type)
                + [f'"{name}"="{value}"' for name, value in self.strings.items()])


@intrinsic
def _prefer_vector_width(typingctx, bits):
    """Ask LLVM to vectorise the calling function with vectors of ``bits`` bits.

    LLVM's tuning for the Intel cores with AVX-512 (Skylake-X to Sapphire Rapids) prefers
    256-bit vectors, so without this the lane loops use half of each AVX-512 register. The
    function attribute ``prefer-vector-width`` overrides that tuning for one function
    only: nothing else compiled in the process changes. On a CPU without AVX-512 it has
    no effect (LLVM never uses wider vectors than the CPU has).
    """
    if not isinstance(bits, types.IntegerLiteral):
        raise errors.RequireLiteralValue(bits)
    width = str(bits.literal_value)

    def codegen(context, builder, sig, args):
        function = builder.function
        if not isinstance(function.attributes, _AttributesWithStrings):
            function.attributes = _AttributesWithStrings(function.attributes, {})
        function.attributes.strings["prefer-vector-width"] = width
        return context.get_dummy_value()

    return types.none(bits), codegen


def _source_hash():
    """Hash of the kernel sources: a changed step or RNG never reuses a cached kernel."""
    import inspect
    import os
    import sys
    digest = hashlib.sha256()
    for module in (bits, fmath, levels, philox, steps, unroll, sys.modules[__name__]):
        digest.update(inspect.getsource(module).encode())
    # Sources that build kernel code without being imported here (kmath's overloads, the
    # built-in fields' generated loops, the scratch arrays' lowering, lane forms): read as
    # files, not imported, since some of them import this module.
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("kmath.py", "mlp.py", "generative.py", "montecarlo.py", "scratch.py",
                 os.path.join("kernels", "lanes.py"), os.path.join("kernels", "layout.py"),
                 os.path.join("kernels", "target.py")):
        try:
            with open(os.path.join(package, name), "rb") as f:
                digest.update(f.read())
        except OSError:
            digest.update(name.encode())
    return digest.hexdigest()

X0_SHARED, X0_PER_PATH, X0_NORMAL = 0, 1, 2


class FingerprintKeyed:
    """Mixin for a Numba cache class (CPU or CUDA): entries keyed by a fingerprint.

    Numba keys a closure's cache entry by pickling its cells; cells that hold compiled
    functions pickle with a per-process id, so a closure kernel would never be found again
    in a new process. fastsde knows what determines the kernel (the fingerprint of the user
    functions, method, noise kind, dims, dtype and fastsde's version) and keys by that,
    with the codegen's ``magic_tuple`` (CPU and Numba version; or compute capability and
    CUDA runtime version).
    """

    def __init__(self, py_func, fingerprint):
        super().__init__(py_func)
        self._fingerprint = fingerprint

    def _index_key(self, sig, codegen):
        code_hash = hashlib.sha256(self._py_func.__code__.co_code).hexdigest()
        return (sig, codegen.magic_tuple(), (code_hash, self._fingerprint))


class _KeyedCache(FingerprintKeyed, FunctionCache):
    """Numba's on-disk cache of CPU functions, keyed by fingerprint."""

    # Numba's own load_overload refreshes the target context first: it loads every
    # registry of implementations, importing numba.np.arraymath and with it scipy.linalg
    # (Numba's BLAS check), 0.3 s of a process that runs cached kernels only. A cached
    # function is machine code that needs only Numba's runtime (NRT) linked in, which is
    # initialised here; compiling refreshes the context itself. Numba's own is kept
    # where its cache class lacks the two steps this one calls.
    if hasattr(FunctionCache, "_load_overload") and hasattr(
            FunctionCache, "_guard_against_spurious_io_errors"):
        def load_overload(self, sig, target_context):
            rtsys.initialize(target_context)
            with self._guard_against_spurious_io_errors():
                return self._load_overload(sig, target_context)

    def holds(self, sig, target_context):
        """Whether the cache's index has an entry for ``sig`` on this machine (its CPU and
        Numba's version), read without loading the code."""
        return (self._index_key(sig, target_context.codegen())
                in self._cache_file._load_index())


def named(fn, fingerprint, role=""):
    """A copy of the closure ``fn`` whose qualified name carries the kernel's fingerprint
    (each kernel then also has its own index file in the disk cache; CUDA kernels too).

    Numba names a compiled function's symbol after its ``__qualname__`` and a per-process
    counter, and a library loaded from the disk cache keeps the names it was compiled
    with. Every kernel is a closure of ``_make_run_chunk`` with the same qualname, so two
    kernels compiled in two processes could carry the same symbol; loaded into one process
    from the cache, the second then ran the first's code (an OU kernel's loaded after a
    GBM kernel's gave GBM the OU's arithmetic, silently). With the fingerprint in the name,
    symbols of different kernels never coincide.
    """
    named = pytypes.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                               fn.__closure__)
    named.__qualname__ = f"{fn.__name__}{'_' + role if role else ''}_{fingerprint[:24]}"
    return named


def enable_disk_cache(dispatcher, fingerprint, cache_class=None):
    """Keep ``dispatcher``'s compiled code in Numba's disk cache under ``fingerprint``
    (``cache_class``: a :class:`FingerprintKeyed` cache; None: the CPU's)."""
    try:
        dispatcher._cache = (cache_class or _KeyedCache)(dispatcher.py_func, fingerprint)
    except Exception:  # no writable cache location: compile in memory only
        pass


_SHARED = {}
#: Held while a shared function's signatures are compiled and its compiling disabled
#: (the launchers, the lane arrays): threads may build kernels at once.
_LAUNCHER_LOCK = threading.Lock()


def _shared_function(fn, key, role="", **options):
    """``njit(**options)(fn)``, one dispatcher per process for ``key`` (everything the
    compiled code depends on beyond the kernel sources, fastsde's and Numba's versions),
    named and kept in the disk cache by the fingerprint of all of them. Every compiled
    piece of a CPU kernel is made here (see docs/design.md)."""
    fingerprint = hashlib.sha256(repr((key, __version__, numba.__version__, _SOURCE_HASH)
                                      ).encode()).hexdigest()
    if fingerprint not in _SHARED:
        dispatcher = njit(**options)(named(fn, fingerprint, role))
        enable_disk_cache(dispatcher, fingerprint)
        _SHARED[fingerprint] = dispatcher
    return _SHARED[fingerprint]


def _compiled(dispatcher, sig):
    """The compile result of ``dispatcher`` for ``sig`` (compiled or loaded first)."""
    dispatcher.compile(sig)
    return dispatcher.overloads[tuple(sig)]


def _symbol_address(library, symbol):
    """The native entry point of ``symbol`` in the finalised code ``library``."""
    address = library.get_pointer_to_function(symbol)
    if not address:
        raise RuntimeError(f"fastsde: no native code for {symbol}")
    return address


def _address(compiled):
    """The native entry point of a compile result (Numba's calling convention)."""
    return _symbol_address(compiled.library, compiled.fndesc.mangled_name)


@intrinsic
def _call_address(typingctx, address, args, result_like):
    """Call the Numba-compiled function at native address ``address`` on the tuple
    ``args`` (Numba's calling convention) and return its result, of the type of
    ``result_like`` (None: no result); its status is propagated, so an exception it
    raises is the caller's.

    The launcher calls each kernel's ``run_chunk`` this way instead of by name: a call by
    name links the callee's LLVM module into the caller, where LLVM optimises it again
    with the caller (twice: in the parfor's gufunc and in the launcher), about 1.5 s of
    every model's first result spent on code already optimised; and it would make the
    launcher, which only maps chunks over threads, one per model. Through an address one
    launcher per argument types serves every model and is compiled once, then loaded
    from the disk cache. ``run_chunk`` calls the initial-state normals of ``fs.Normal``
    the same way, so that they are compiled only for runs that draw them. The caller
    guarantees that the function at ``address`` was compiled for exactly these argument
    and result types (:class:`CpuKernel`).
    """
    if not isinstance(address, types.Integer) or not isinstance(args, types.BaseTuple):
        return None
    arg_types = tuple(args)
    result_type = types.none if isinstance(result_like, types.NoneType) else result_like

    def codegen(context, builder, signature, llvm_args):
        function_type = context.call_conv.get_function_type(result_type, arg_types)
        callee = builder.inttoptr(llvm_args[0], function_type.as_pointer())
        return _emit_call(context, builder, callee, result_type, arg_types, llvm_args[1])

    return result_type(address, args, result_like), codegen


def _emit_call(context, builder, callee, result_type, arg_types, packed):
    """Code for ``callee`` (Numba's calling convention) on the values of the tuple
    ``packed``, its exception status propagated to the caller; returns its result."""
    values = [builder.extract_value(packed, i) for i in range(len(arg_types))]
    status, result = context.call_conv.call_function(builder, callee, result_type,
                                                     arg_types, values)
    with cgutils.if_unlikely(builder, status.is_error):
        context.call_conv.return_status_propagate(builder, status)
    return result if result_type is not types.none else context.get_dummy_value()


def _piece_symbol(dispatcher, arg_types):
    """The name by which :func:`_call_compiled` calls ``dispatcher``'s code for
    ``arg_types``: the same in every process. Numba's own symbol for it carries a
    per-process counter (:func:`named`), so a kernel compiled in one process and loaded
    from the disk cache in another would not find the piece under it."""
    digest = hashlib.sha256(repr(tuple(arg_types)).encode()).hexdigest()[:16]
    return f"fastsde_{dispatcher.py_func.__qualname__}_{digest}"


@intrinsic
def _call_compiled(typingctx, function, args):
    """``function(*args)`` for a piece compiled beforehand for exactly these argument
    types (:func:`_load_pieces`), called by a symbol of its own (:func:`_piece_symbol`);
    its status is propagated, so an exception it raises is the caller's.

    A call by name (Numba's own) links the callee's LLVM module into the caller, where
    LLVM optimises it again with the caller and emits its machine code again: the block
    ends, called once per block and never inlined, were about 40% of a kernel's final
    module, and a network's block field is larger still. The symbol is bound to the
    piece's address in the process (``llvmlite.binding.add_symbol``, as Numba binds its
    runtime's functions) before the caller is compiled or loaded from the disk cache,
    and it names the piece's fingerprint and argument types, so it is that piece's code.
    What LLVM cannot do across such a call is read the callee's code for what it leaves
    untouched, so a piece called inside the time loop (``save_block``) stays a call by
    name (docs/design.md).
    """
    if not isinstance(function, types.Dispatcher) or not isinstance(args, types.BaseTuple):
        return None
    dispatcher = function.dispatcher
    arg_types = tuple(args)
    compiled = dispatcher.overloads.get(arg_types)
    if compiled is None:
        raise errors.TypingError(
            f"fastsde: {dispatcher.py_func.__name__} is called with {arg_types} but was "
            f"compiled for {list(dispatcher.overloads)} (see _load_pieces)")
    restype, argtypes = compiled.fndesc.restype, compiled.fndesc.argtypes
    symbol = _piece_symbol(dispatcher, compiled.signature.args)

    def codegen(context, builder, signature, llvm_args):
        callee = cgutils.get_or_insert_function(
            builder.module, context.call_conv.get_function_type(restype, argtypes), symbol)
        return _emit_call(context, builder, callee, restype, argtypes, llvm_args[1])

    return compiled.signature.return_type(function, args), codegen


def _load_pieces(pieces):
    """Compile, or load from the disk cache, each ``(dispatcher, argument types)`` of
    ``pieces`` and bind its :func:`_piece_symbol` to its code, where the callers of
    :func:`_call_compiled` find it: before the caller is compiled (it is typed against
    these signatures) or loaded (its machine code refers to the symbol)."""
    for dispatcher, sig in pieces:
        # A literal type here would make the caller's code depend on the process: Numba
        # types an intrinsic's call with literals made plain first, so the call would
        # match this piece's plain overload where the process holds one (compiled for
        # another kernel) and this one elsewhere (see _piece_signatures).
        literal = [t for t in sig if isinstance(t, types.Literal)]
        if literal:
            raise TypeError(f"fastsde: {dispatcher.py_func.__name__}'s signature has the "
                            f"literal types {literal}; pieces take plain types")
        compiled = _compiled(dispatcher, sig)
        llvm_binding.add_symbol(_piece_symbol(dispatcher, compiled.signature.args),
                                _address(compiled))


def _piece_signatures(kernel_sig, dtype):
    """The argument types with which ``run_chunk`` calls the pieces it reaches through
    :func:`_call_compiled` (``kernel_sig``: the kernel arguments' types,
    :func:`layout.empty_args`), by the piece's name."""
    arg = dict(zip(layout.KernelArgs._fields, kernel_sig))
    floats = types.Array(numba.from_dtype(np.dtype(dtype)), 1, "C")
    times = types.Array(types.float64, 1, "C")
    masks = types.Array(types.int32 if dtype == np.float32 else types.int64, 1, "C")
    i64, u64 = types.int64, types.uint64
    # run_chunk's "may_vary_by_path and ..." is a literal False where rows never vary,
    # but Numba types an intrinsic's call with the literals made plain first, and falls
    # back to the literal only if that fails: the call then matched whichever of the
    # two block starts the process held, and a kernel compiled after one with a row of
    # parameters per path called that kernel's (by its symbol, which a process that
    # loads only this kernel does not bind: it crashed). The plain boolean always.
    varies = types.boolean
    block_start = (floats, floats, times, masks, i64, i64, arg["n_paths"], u64, u64,
                   arg["antithetic"], varies, arg["x0_rows"], arg["x0_mode"],
                   arg["x0_mean"], arg["x0_std"], i64, arg["key0"], arg["key1"],
                   arg["params"], i64, i64)
    block_finish = (floats, times, arg["x_out"], arg["hit_out"], arg["hit_count"],
                    arg["hit_mean"], arg["hit_m2"], i64, i64, i64, types.boolean,
                    types.boolean, types.boolean, i64)
    # (T, X, p, F, S): slices of the lane arrays, and the parameter row.
    block_field = (floats,) * 5
    return dict(block_start=block_start, block_finish=block_finish,
                block_field=block_field)


@intrinsic
def _inline_into_callers(typingctx):
    """Mark the function being compiled ``alwaysinline`` for LLVM.

    Numba's own inlining (``njit(inline="always")``) copies a function's IR into every
    caller before typing, so each caller types and lowers it again: the RNG's lane loops
    cost every new kernel about 1 s of compiling. A function compiled on its own (once
    per process, then from the disk cache) and marked here is linked into each caller and
    inlined by LLVM before the caller's loops are vectorised, so the machine code is that
    of the inlined version without its compile time.
    """
    def codegen(context, builder, signature, args):
        builder.function.attributes.add("alwaysinline")
        return context.get_dummy_value()

    return types.none(), codegen


#: The symbol by which a kernel's frame calls its model's step (:func:`_call_frame_step`);
#: renamed to the step's own symbol when the two are merged (:func:`_merge`).
FRAME_STEP_SYMBOL = "fastsde_frame_step"


@intrinsic
def _call_frame_step(typingctx, args):
    """``step(*args)`` through :data:`FRAME_STEP_SYMBOL`, declared only: the frame of a
    kernel (``run_chunk`` without its model) is typed and lowered once for every model
    of its shape, and each model's step, compiled on its own and marked alwaysinline,
    is linked in and inlined by LLVM before the lane loop is vectorised (see
    :func:`_framed_kernel`)."""
    if not isinstance(args, types.BaseTuple):
        return None
    arg_types = tuple(args)

    def codegen(context, builder, signature, llvm_args):
        callee = cgutils.get_or_insert_function(
            builder.module, context.call_conv.get_function_type(types.none, arg_types),
            FRAME_STEP_SYMBOL)
        return _emit_call(context, builder, callee, types.none, arg_types, llvm_args[0])

    return types.none(args), codegen


@njit(inline="always", **_JIT)
def _welford(count, mean, m2, c, s, j, v):
    """Welford's update of accumulator [c, s, j] with the float64 value v (the arithmetic
    that cuda.stats_kernel repeats, in the same order)."""
    n = count[c, s, j] + 1
    count[c, s, j] = n
    d = v - mean[c, s, j]
    mean[c, s, j] += d / n
    m2[c, s, j] += d * (v - mean[c, s, j])


_hist_slot = njit(inline="always", **_JIT)(layout.hist_slot)

#: Per-path scratch (bytes per thread) kept on the stack, where LLVM holds it in
#: registers; past it the scratch comes from the heap, once per chunk. Numba's worker
#: threads get the platform's default thread stack (8 MiB on glibc, 512 KiB on macOS),
#: and a state of dim 1500 with general noise (two 1500 x 1500 diffusion arrays, 36 MB)
#: used to overflow it. 64 KiB covers every model up to dim ~1000 with diagonal noise.
STACK_SCRATCH_BYTES = 64 * 1024


_f32_as_i32, _i32_as_f32 = _bits["f32_as_i32"], _bits["i32_as_f32"]
_f64_as_i64, _i64_as_f64 = _bits["f64_as_i64"], _bits["i64_as_f64"]


@njit(inline="always", **_JIT)
def _blend_f32(mask, if_set, if_clear):
    """``if_set`` where the int32 ``mask`` is all ones, ``if_clear`` where it is zero."""
    return _i32_as_f32(np.int32((_f32_as_i32(if_set) & mask)
                                | (_f32_as_i32(if_clear) & ~mask)))


@njit(inline="always", **_JIT)
def _blend_f64(mask, if_set, if_clear):
    """``if_set`` where the int64 ``mask`` is all ones, ``if_clear`` where it is zero."""
    return _i64_as_f64((_f64_as_i64(if_set) & mask) | (_f64_as_i64(if_clear) & ~mask))


@njit(inline="always", **_JIT)
def _to_mask_i32(flag):
    """All ones (int32) for True, zero for False."""
    return np.int32(-np.int32(flag))


@njit(inline="always", **_JIT)
def _to_mask_i64(flag):
    """All ones (int64) for True, zero for False."""
    return -np.int64(flag)


def function_preparer(model, dtype, inline):
    """``prepared(fn)``: a plain function of ``model``'s rewritten as the kernel rewrites
    the model's own ``drift`` and ``diffusion``, compiled with ``inline``.

    Loops of constant trip count unrolled, fastsde.kmath's functions as stand-ins that
    LLVM inlines before vectorising (kmath.register_cpu) and two-argument max/min as
    selects (unroll.py): the step becomes straight-line code without calls, which the
    lane loop around it needs; the same operations, the same bits. Python floats take the
    run's dtype where the model's math is fastsde's (unroll.python_floats). A model's
    lane-block drift is prepared the same way, so that it computes with the same types.
    """
    from .. import kmath

    select = bits.unified_select()
    selects = unroll.two_argument_selects(inline, select)

    def prepared(fn):
        # math's and numpy's exp, log, ... as kmath's where the model asks
        # (model.MATH, kmath.LOWERED).
        replacements = {**kmath.inline_replacements(),
                        **unroll.math_replacements(model, fn, inline=True)}
        return inline(unroll.unroll_constant_loops(
            fn, replacements, call_replacements=selects,
            float_type=unroll.python_floats(model, dtype), select=select))

    prepared.dtype = None if dtype is None else np.dtype(dtype)
    return prepared


def compile_user_functions(model, jit, dtype=None, **options):
    """Compile the model's functions with ``jit``; returns (drift, diffusion or None).
    With ``dtype``, each is called with its ``out`` cleared first
    (``steps.out_cleared``)."""
    inline = jit(inline="always", **options)

    def rewritten():
        prepared = function_preparer(model, dtype, inline)
        return (prepared(model.drift),
                None if model.diffusion is None else prepared(model.diffusion))

    if dtype is None:
        return rewritten()
    key = (model.fingerprint, np.dtype(dtype).name, tuple(sorted(options.items())))
    if key not in _MODEL_FUNCTIONS:
        # Rewritten and compiled once (per model, dtype and options), whatever the
        # kernel, and inlined into each kernel's step by LLVM: inlined at Numba's level
        # instead, the function's IR was copied at each level of inlining (a mixture
        # flow's first result: 11.9-13.0 s against 10.1-10.7 s).
        drift, diffusion = rewritten()
        # Named by the key's hash (see named): should LLVM leave a call to one in a
        # kernel, a kernel loaded from the disk cache must not find another model's.
        tag = hashlib.sha256(repr((key, __version__, _SOURCE_HASH)).encode()).hexdigest()[:24]
        _MODEL_FUNCTIONS[key] = (
            _inlined_by_llvm(inline(steps.out_cleared(drift, (model.dim,), dtype)),
                             f"model_drift_{tag}", jit, options),
            None if diffusion is None else _inlined_by_llvm(
                inline(steps.out_cleared(diffusion, model.diffusion_shape, dtype)),
                f"model_diffusion_{tag}", jit, options))
    return _MODEL_FUNCTIONS[key]


#: {(model fingerprint, dtype, options): (drift, diffusion)} as kernels call them.
_MODEL_FUNCTIONS = {}


def _inlined_by_llvm(fn, name, jit, options):
    """``fn(t, x, p, out)`` as a function of its own, compiled once and marked for LLVM
    to inline into its callers before their loops are vectorised."""
    def call(t, x, p, out):
        _inline_into_callers()
        fn(t, x, p, out)
    call.__name__ = call.__qualname__ = name
    return jit(**_WRAPPERLESS, **options)(call)


def build_step(model, method, dtype, jit, **options):
    """Compile the step of ``method`` for ``model`` on a target given by ``jit``."""
    drift, diffusion = compile_user_functions(model, jit, dtype, **options)
    noise_name = steps.NOISE_TERMS.get(model.noise, "noise_diagonal")
    noise_term = getattr(_noise, noise_name) if jit is njit else None
    increment_of = getattr(_noise, steps.INCREMENTS_OF.get(model.noise, "increment_diagonal"))
    return drift, diffusion, noise_term, increment_of


def _scratch_allocator(shape, dtype, on_stack):
    """``alloc()``: a per-path scratch array of the compile-time ``shape`` (1-D or 2-D):
    on the stack (``on_stack``: no heap, no reference count, and after inlining LLVM keeps
    its elements in registers) or on the heap (a state too large for a thread's stack).

    The stack form is an intrinsic that emits the array itself (an ``alloca`` in the
    entry block, constant shape and strides): as a function inlined by Numba around
    ``numba.carray`` it was copied, typed and linked again at each of a kernel's 16
    scratch arrays."""
    shape = tuple(int(n) for n in shape)
    if on_stack:
        array_type = types.Array(numba.from_dtype(np.dtype(dtype)), len(shape), "C")

        @intrinsic
        def alloc(typingctx):
            def codegen(context, builder, sig, args):
                return _stack_array(context, builder, array_type, shape)
            return array_type(), codegen
    else:
        @njit(inline="always")
        def alloc():
            return np.empty(shape, dtype)
    return alloc


def _stack_array(context, builder, array_type, shape):
    """Code for a C-contiguous array of ``array_type`` and the constant ``shape`` whose
    data is an ``alloca`` in the entry block (no meminfo: it lives as long as the
    function's frame)."""
    element = array_type.dtype
    # One element at least: an alloca of none is not a pointer LLVM promises anything for.
    size = max(int(np.prod(shape)), 1)
    data = cgutils.alloca_once(builder, context.get_value_type(element), size=size)
    itemsize = context.get_abi_sizeof(context.get_data_type(element))
    strides = [itemsize * int(np.prod(shape[i + 1:])) for i in range(len(shape))]
    array = context.make_array(array_type)(context, builder)
    context.populate_array(
        array, data=data,
        shape=cgutils.pack_array(builder, [context.get_constant(types.intp, n)
                                           for n in shape]),
        strides=cgutils.pack_array(builder, [context.get_constant(types.intp, n)
                                             for n in strides]),
        itemsize=context.get_constant(types.intp, itemsize), meminfo=None)
    return array._getvalue()


#: Alignment of the kernel's lane arrays, in bytes: one 512-bit vector. Numba aligns an
#: array's data to 32 bytes, so half of the arrays it allocates start mid-cache-line, and
#: every 512-bit load and store of their lane loops then touches two lines.
LANE_ALIGN_BYTES = 64


def _lane_array_function(dtype):
    """``lane_array(n)``: n zeros of ``dtype`` starting on a :data:`LANE_ALIGN_BYTES`
    boundary (a view into a slightly longer allocation). Compiled once per dtype, then
    loaded from the disk cache, and called (not inlined) by the kernels: each call site
    then costs a model's kernel no typing of its own."""
    itemsize = np.dtype(dtype).itemsize
    pad = LANE_ALIGN_BYTES // itemsize

    def lane_array(n):
        buf = np.zeros(n + pad, dtype)
        skip = (-buf.ctypes.data) % LANE_ALIGN_BYTES // itemsize
        return buf[skip:skip + n]
    function = _shared_function(lane_array, ("lane_array", np.dtype(dtype).name,
                                             LANE_ALIGN_BYTES), **_PIECE)
    # For int64 alone: a kernel passes sizes that are compile-time constants, and Numba
    # would compile (and cache) one specialisation per literal value, 0.05-0.2 s each for
    # every new model; with compiling disabled they convert to int64.
    with _LAUNCHER_LOCK:
        if (types.int64,) not in function.overloads:
            function.disable_compile(False)
            function.compile((types.int64,))
        function.disable_compile()
    return function


def scratch_on_stack(sz, dtype):
    """Whether the per-path scratch of a kernel of sizes ``sz`` goes on the stack."""
    return sz.scratch_elements() * np.dtype(dtype).itemsize <= STACK_SCRATCH_BYTES


def _make_rng_only_step(dim, noise_dim):
    """The RNG-only ceiling's "step": adds the increments to the state (so they are not
    optimised away) and nothing else."""

    def step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new):
        for i in range(dim):
            x_new[i] = x[i] + dw[i % noise_dim]

    return step


def _make_save_block(dim, dtype, lanes, n_params_model, on_stack, obs, debug):
    """The save point's function: everything asked for at a save index, for the live lanes
    of one block (the statistics, histogram, observables and stored paths).

    It depends on the dtype and the lanes, and with observables on the observables and
    the state's and parameters' widths too (they read a path's state and parameter row),
    not on the model's functions or the method, so the kernels of every model without
    observables share it, whatever their widths: compiled once per process, then loaded
    from the disk cache, and linked into each kernel. The state's width is an argument
    (``width``, the kernel's ``dim``).
    """
    if not obs:
        # Without observables neither the state nor the parameters are read into scratch:
        # one function serves every state and parameter width (a network's parameter
        # width is its number of weights).
        n_params_model = 0
        dim = 1
    options = dict(_JIT, boundscheck=True) if debug else dict(_JIT)
    observe = montecarlo.make_observe(obs, njit(inline="always", **options))
    n_obs = len(obs)
    has_obs = n_obs > 0
    alloc_state = _scratch_allocator((dim,), dtype, on_stack)
    alloc_params = _scratch_allocator((n_params_model,), dtype, on_stack)
    alloc_obs = _scratch_allocator((max(n_obs, 1),), dtype, on_stack)
    welford = _welford
    hist_slot = _hist_slot
    nan = dtype(np.nan)

    def save_block(X, P, OBV, n_live, b0, c, s, t_s, antithetic, tid, paths_out, st_count,
                   st_mean, st_m2, ob_count, ob_mean, ob_m2, hist, hist_edges, width):
        """Everything asked for at save index s, for the live lanes of one block (of
        ``width`` components).

        Compiled once and called (not inlined) from both save points, which keeps the
        kernel's compile time down; its scratch is its own, so the hot loop's per-path
        arrays never escape into a call and stay in registers."""
        x = alloc_state()
        p = alloc_params()
        ov = alloc_obs()
        if paths_out.shape[0] > 0:
            # Component by component: with the width known only at run time, a loop over
            # the lanes inside is what LLVM vectorises (lanes outside: 6-15% slower runs
            # that store every step, float32).
            for j in range(width):
                for l in range(n_live):
                    paths_out[s, b0 + l, j] = X[j * lanes + l]
        want_stats = st_count.shape[0] > 0
        want_hist = hist.shape[0] > 0
        if want_stats or want_hist:
            bins = hist.shape[3] - 2
            for l in range(n_live):
                # A path with any non-finite component is left out as a whole.
                finite = True
                for j in range(width):
                    finite = finite and math.isfinite(X[j * lanes + l])
                if finite:
                    for j in range(width):
                        v = np.float64(X[j * lanes + l])
                        if want_stats:
                            welford(st_count, st_mean, st_m2, c, s, j, v)
                        if want_hist:
                            slot = hist_slot(v, hist_edges, j, bins)
                            hist[tid, s, j, slot] += 1
        if has_obs:
            if ob_count.shape[0] == 0:
                return
            for l in range(n_live):
                finite = True
                for j in range(dim):
                    x[j] = X[j * lanes + l]
                    finite = finite and math.isfinite(x[j])
                for j in range(n_params_model):
                    p[j] = P[j * lanes + l]
                observe(t_s, x, p, ov)
                for o in range(n_obs):
                    OBV[o * lanes + l] = ov[o] if finite else nan
            # Antithetic pairs (lanes 2m, 2m + 1) enter as one unit, their mean: the
            # pairs are independent, the paths within a pair are not.
            unit = 2 if antithetic else 1
            for l in range(0, n_live, unit):
                for o in range(n_obs):
                    v = np.float64(OBV[o * lanes + l])
                    if antithetic:
                        v = (v + np.float64(OBV[o * lanes + l + 1])) * 0.5
                    if math.isfinite(v):
                        welford(ob_count, ob_mean, ob_m2, c, s, o, v)

    return _shared_function(save_block, (
        "save_block", dim if obs else None, np.dtype(dtype).name, lanes, n_params_model,
        on_stack, montecarlo.fingerprint(obs, None), debug), **_WRAPPERLESS, **options)


def _observable_stand_in(t, x, p):
    """What a frame's save point calls in place of an observable (see
    :func:`_bound_save_point`); never run."""
    return 0.0


def _stand_in_observables(n_obs):
    """``n_obs`` stand-ins for observables: ``(name, function)`` pairs, the same in every
    process (their fingerprints key the frame's save point)."""
    return tuple((f"stand_in_{i}", _observable_stand_in) for i in range(n_obs))


def _save_block_for(model, dtype, sz, obs, debug):
    """:func:`_make_save_block` for a kernel of ``model`` with sizes ``sz`` (its frame's,
    with stand-ins for ``obs``; or its own, which the merge binds)."""
    return _make_save_block(model.dim, dtype, lanes_for(model, dtype), sz.n_params,
                            scratch_on_stack(sz, dtype), obs, debug)


def _make_block_ends(dtype, lanes, debug):
    """``(block_start, block_finish)``: what a kernel does before and after the steps of a
    block of lanes.

    ``block_start`` loads the block's initial states into the lane state ``X`` (a shared
    row, a row per path, or normals drawn by the function at ``normal_address``), the
    lanes' parameter rows into ``P`` (with a row per path), and clears the hitting times
    ``HT`` and the lane masks ``live`` (lanes past the chunk's end run on zeros, never
    written out). ``block_finish`` writes the final states and hitting times out, adds
    the hitting times to their statistics and returns the number of paths whose final
    state is not finite.

    They depend on the dtype and the lanes, not on the model's functions, its state's
    width (``dim``, an argument of both), its parameter width (``n_params``, an argument
    of ``block_start``) or the method: compiled once per process, then loaded from the
    disk cache, and called once per block (a new model's kernel then compiles only its
    own steps, whatever its widths).
    """
    options = dict(_JIT, boundscheck=True) if debug else dict(_JIT)
    mask_int = np.int32 if dtype == np.float32 else np.int64
    LIVE = mask_int(-1)
    DEAD = mask_int(0)
    stream_init = np.uint64(philox.STREAM_INITIAL)
    # The result type of the initial-state normals, called by address (see CpuKernel).
    normals4 = (dtype(0.0),) * 4
    welford = _welford

    def block_start(X, P, HT, live, b0, n_live, n_paths, path0, pair_bits, antithetic,
                    per_path_params, x0_rows, x0_mode, x0_mean, x0_std, normal_address,
                    key0, key1, params, n_params, dim):
        for l in range(lanes):
            path = path0 + np.uint64(l)
            odd = antithetic != 0 and (path & np.uint64(1)) != 0
            HT[l] = np.inf
            # Lanes past the chunk's end run on zeros and are never written out.
            live[l] = LIVE if l < n_live else DEAD
            if per_path_params:
                prow = min(b0 + l, n_paths - 1)
                for j in range(n_params):
                    P[j * lanes + l] = params[prow, j]
            if l >= n_live:
                for j in range(dim):
                    X[j * lanes + l] = dtype(0.0)
            elif x0_mode == X0_NORMAL:
                z0 = z1 = z2 = z3 = dtype(0.0)
                for j in range(dim):
                    if j % 4 == 0:
                        # Exactly the argument types it is compiled for (uint64 x 5).
                        z0, z1, z2, z3 = _call_address(
                            normal_address, (np.uint64(key0), np.uint64(key1),
                                             np.uint64(j // 4), np.uint64(stream_init),
                                             np.uint64(path & pair_bits)), normals4)
                    r = j % 4
                    z = z0 if r == 0 else (z1 if r == 1 else (z2 if r == 2 else z3))
                    X[j * lanes + l] = x0_mean[j] + x0_std[j] * (-z if odd else z)
            else:
                row = b0 + l if x0_mode == X0_PER_PATH else 0
                for j in range(dim):
                    X[j * lanes + l] = x0_rows[row, j]

    def block_finish(X, HT, x_out, hit_out, hit_count, hit_mean, hit_m2, b0, n_live, c,
                     keep_x, keep_hits, hit_stats, dim):
        bad = 0
        for l in range(n_live):
            finite = True
            for j in range(dim):
                v = X[j * lanes + l]
                if keep_x:
                    x_out[b0 + l, j] = v
                finite = finite and math.isfinite(v)
            if not finite:
                bad += 1
            if keep_hits:
                hit_out[b0 + l] = HT[l]
            if hit_stats and HT[l] < np.inf:
                welford(hit_count, hit_mean, hit_m2, c, 0, 0, HT[l])
        return bad

    key = (np.dtype(dtype).name, lanes, debug)
    return (_shared_function(block_start, ("block_start",) + key, **_WRAPPERLESS, **options),
            _shared_function(block_finish, ("block_finish",) + key, **_WRAPPERLESS,
                             **options))


class _ReplayLayout:
    """Where the lane-block replay keeps its numbers, in one array of the run's dtype.

    [0, n_params): the shared parameter row (what the steps pass as ``p``); then the
    call counter, the lane and the pass's target call; then, for each drift call k of the
    step: the lanes' times, their states (component-major) and, once the block has been
    evaluated, the field there (component-major)."""

    def __init__(self, dim, lanes, n_params, n_calls):
        self.call = n_params
        self.lane = n_params + 1
        self.target = n_params + 2
        self.times = n_params + 3
        self.states = self.times + n_calls * lanes
        self.fields = self.states + n_calls * dim * lanes
        self.total = self.fields + n_calls * dim * lanes


def _make_replay_drift(dim, lanes, layout):
    """The drift the step calls in a lane-block kernel (see :func:`_make_run_chunk`).

    The kernel runs the step over a block's lanes once per drift call of the step (the
    first call's field, at the lanes' states, is evaluated before any pass). In the pass
    whose target is call k, the step's calls before k are answered
    with the block's field, evaluated after the earlier passes; call k records its time
    and state, and the calls after it answer zeros (that pass's results are discarded).
    The last pass answers every call, so it computes what the path-by-path step computes,
    with the same drift values: the same bits."""
    call_at, lane_at, target_at = layout.call, layout.lane, layout.target
    times, states, fields, total = layout.times, layout.states, layout.fields, layout.total
    block = dim * lanes

    def replay_drift(t, x, p, out):
        r = _widened(p, total)
        call = int(r[call_at])
        r[call_at] = call + 1
        lane = int(r[lane_at])
        target = int(r[target_at])
        if call < target:
            base = fields + call * block + lane
            for j in range(dim):
                out[j] = r[base + j * lanes]
        else:
            if call == target:
                r[times + call * lanes + lane] = t
                base = states + call * block + lane
                for j in range(dim):
                    r[base + j * lanes] = x[j]
            for j in range(dim):
                out[j] = 0.0

    return replay_drift


def _frames(debug, rng_only, block_mode):
    """Whether a kernel is built as a frame and a step (:func:`_framed_kernel`): not
    the RNG-only ceiling (benchmarks) or the lane-block kernels (their step is the replay
    of a block's field, not a model's step alone). Debug kernels are: their frame and
    step are compiled with bounds checks, and a debug frame serves the debug kernels of
    every model of its shape."""
    return not (rng_only or block_mode)


@njit(inline="always", **_JIT)
def _frame_step_call(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt,
                     x_new):
    _call_frame_step((t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3,
                      xt, x_new))


def _step_types(model, dtype):
    """The argument types with which a frame calls the step: (t, t_mid, t_next, h, x, p,
    dw, dz, f0-f3, g0-g3, xt, x_new), as run_chunk passes them (:func:`_merge` checks
    the frame's call against the step's definition)."""
    scalar = numba.from_dtype(np.dtype(dtype))
    vector = types.Array(scalar, 1, "C")
    matrix = types.Array(scalar, len(model.diffusion_shape if model.kind == "sde" else (1,)),
                         "C")
    return (scalar,) * 4 + (vector,) * 8 + (matrix,) * 4 + (vector,) * 2


def _scheme_step(model, method, dtype, drift, diffusion, noise_term, increment_of):
    """``method``'s step for ``model`` as a plain Python function of the compiled user
    functions and noise helpers (:func:`build_step`), the one every CPU kernel inlines."""
    column_of = getattr(_noise, steps.COLUMNS_OF.get(model.noise, "column_diagonal"))
    return method.factory(model)(drift, diffusion, noise_term, increment_of, column_of,
                                 model.dim, dtype)


def _model_step(model, method, dtype, debug=False):
    """``method``'s step for ``model`` as a dispatcher of its own (shared per model,
    method, dtype and ``debug``: bounds checking), marked for LLVM to inline into the
    frame that calls it: lowered, not compiled, by :func:`_framed_kernel`."""
    options = dict(_JIT, boundscheck=True) if debug else dict(_JIT)
    drift, diffusion, noise_term, increment_of = build_step(model, method, dtype, njit,
                                                            **options)
    step = njit(inline="always", **options)(_scheme_step(
        model, method, dtype, drift, diffusion, noise_term, increment_of))

    def model_step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt,
                   x_new):
        _inline_into_callers()
        step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new)

    return _shared_function(model_step, ("model_step", model.fingerprint, method.name,
                                         np.dtype(dtype).name, debug), **_WRAPPERLESS,
                            **options)


def _make_run_chunk(model, method, dtype, sz, debug=False, rng_only=False, obs=(),
                    stop=None, increments="gaussian", per_path_params=True):
    """The kernel's ``run_chunk`` (a dispatcher, not compiled yet); ``sz``
    (:class:`layout.Sizes`) gives every compile-time size (the parameter width passed,
    not the declared one). ``increments``: the increment kind ("gaussian", "two_point",
    "three_point"). ``per_path_params``: False compiles a kernel for one shared parameter
    row (see :func:`get_kernel`).

    Where the kernel can be framed (:func:`_frames`), ``run_chunk`` is the kernel's frame
    instead (its ``framed`` attribute True), which calls the step through
    :data:`FRAME_STEP_SYMBOL` and is keyed by what it depends on without the model's
    functions and the method (see :func:`_framed_kernel`)."""
    dim = model.dim
    noise_dim = max(model.noise_dim, 1)
    has_noise = model.kind == "sde"
    gshape = model.diffusion_shape if has_noise else (1,)
    options = dict(_JIT, boundscheck=True) if debug else dict(_JIT)
    drift, diffusion, noise_term, increment_of = build_step(model, method, dtype, njit,
                                                            **options)
    lanes = lanes_for(model, dtype)
    # The drift evaluated for a block of lanes at once (model.lane_block: an MLP's layers
    # as matrix products over the lanes), where one parameter row serves every path.
    block_mode = model.lane_block is not None and not rng_only and not debug
    framed = _frames(debug, rng_only, block_mode)
    if block_mode:
        jit_inline = njit(inline="always", **options)
        # None: the block form does not fit this run (a network's with a row of
        # parameters per path; mlp.LaneBlockDrift has the protocol).
        made = model.lane_block.make(lanes, jit_inline,
                                     function_preparer(model, dtype, jit_inline),
                                     sz.n_params if per_path_params else None)
        block_mode = made is not None
    n_calls = method.drift_evals if block_mode else 0
    n_passes = n_calls + 1
    first_pass = 1 if block_mode else 0
    replay = _ReplayLayout(dim, lanes, sz.n_params, n_calls)
    if block_mode:
        block_inline, block_scratch = made
        # A function of its own: called once per block and drift call, it costs nothing
        # to call and is compiled once instead of at each call site. The kernel calls it
        # by its symbol, which must name this network's pass alone: under a name of its
        # qualname and a per-process counter, a kernel loaded from the disk cache called
        # another network's pass made earlier in the process (named).

        def block_field(T, X, p, F, S):
            _prefer_vector_width(VECTOR_BITS)
            block_inline(T, X, p, F, S)

        block_field = _shared_function(block_field, (
            "block_field", model.fingerprint, np.dtype(dtype).name, lanes, VECTOR_BITS,
            sz.n_params if per_path_params else None, debug), **_WRAPPERLESS, **options)
        drift = njit(inline="always", **options)(_make_replay_drift(dim, lanes, replay))
    else:
        block_field, block_scratch = None, 1
    r_call, r_lane, r_target = replay.call, replay.lane, replay.target
    r_times, r_states, r_fields = replay.times, replay.states, replay.fields
    r_total = replay.total
    lane_block = dim * lanes
    if rng_only:
        has_noise = True
        increments = "gaussian"
        step_py = _make_rng_only_step(dim, noise_dim)
    elif framed:
        step_py = None  # the model's step is compiled apart (_model_step)
    else:
        step_py = _scheme_step(model, method, dtype, drift, diffusion, noise_term,
                               increment_of)
    # The extra normals dZ (stream STREAM_EXTRA) of the schemes that form I_(1,0) from
    # them; with discrete increments those schemes take I_(1,0) = h dW / 2 (dz = 0).
    extra = has_noise and not rng_only and method.draws_extra(increments, noise_dim)
    gaussian = increments == "gaussian"
    two_point = increments == "two_point"
    if extra and two_point:
        raise ValueError("extra normals share the increments' blocks of four; two-point "
                         "increments come 128 to a block")
    # Draws per Philox block: 4 normals or three-point values, 128 two-point bits.
    block_shift = philox.TWO_POINT_PER_BLOCK_SHIFT if two_point else 2
    in_block_mask = (1 << block_shift) - 1
    increment_stream = np.uint64(
        philox.STREAM_INCREMENTS if gaussian else
        (philox.STREAM_TWO_POINT if two_point else philox.STREAM_THREE_POINT))
    stream_extra = np.uint64(philox.STREAM_EXTRA)
    step = _frame_step_call if framed else njit(inline="always", **options)(step_py)
    jit_inline = njit(inline="always", **options)
    stop_fn = jit_inline(stop if stop is not None else montecarlo.never_stop)
    # A compile-time constant: Numba prunes the branches it guards before typing, so a
    # kernel without stopping compiles none of that code (has_obs likewise in save_block).
    has_stop = stop is not None
    n_obs = len(obs)
    n_obs_c = max(n_obs, 1)
    has_obs = n_obs > 0
    fill_normals = _make_fill_normals(dtype, lanes)
    fill_increments = fill_normals if gaussian else _make_fill_discrete(dtype, lanes,
                                                                        increments)

    @njit(inline="always", **options)
    def draw(Z, W, r, l):
        """Value r of the block of lane l, before scaling (a normal, or -1, 0, +1, or +-1)."""
        if two_point:
            return dtype(_two_point_sign(np.uint64(W[(r >> 5) * lanes + l]),
                                         np.uint64(r & 31)))
        return Z[r * lanes + l]
    words_per_block = 4 if dtype == np.float32 else 8
    on_stack = scratch_on_stack(sz, dtype)
    alloc_g = _scratch_allocator(gshape, dtype, on_stack)
    # The width of the parameter rows passed: sizes the per-lane buffer and the copy p
    # that user functions read (a model declared without params may be given some).
    n_params_model = sz.n_params
    n_params_c = max(n_params_model, 1)
    # Few parameters: copied for every lane and step without a branch (a compile-time
    # True), which keeps the lane loop free of control flow for the vectoriser.
    # Shared parameters (a compile-time False): p is filled once per chunk and never
    # written in the lane loop, so LLVM hoists what the step computes from t and p alone
    # out of the loop over the lanes (a Gaussian-mixture field's per-component
    # log-normalisers and divisions: 6.5e7 -> 9.9e7 path-steps/s, float32, 2 threads).
    # Per-path rows: the runtime test below, and few parameters copied for every lane and
    # step without a branch (a compile-time True), which keeps the lane loop free of
    # control flow for the vectoriser.
    may_vary_by_path = per_path_params
    copy_params_always = per_path_params and n_params_model <= COPY_PARAMS_MAX
    alloc_state = _scratch_allocator((dim,), dtype, on_stack)
    alloc_noise = _scratch_allocator((noise_dim,), dtype, on_stack)
    alloc_params = _scratch_allocator((n_params_model,), dtype, on_stack)
    pair_mask = ~np.uint64(1)
    mask_int = np.int32 if dtype == np.float32 else np.int64
    DEAD = mask_int(0)
    blend = _blend_f32 if dtype == np.float32 else _blend_f64
    to_mask = _to_mask_i32 if dtype == np.float32 else _to_mask_i64

    # A frame with observables calls the save point of stand-ins, as many (it is typed
    # without the user's functions, so one that does not compile fails its own request
    # alone); the merge binds the call to the kernel's own save point (_Lowered.save).
    save_block = _save_block_for(model, dtype, sz,
                                 _stand_in_observables(n_obs) if framed else obs, debug)
    block_start, block_finish = _make_block_ends(dtype, lanes, debug)
    lane_floats, lane_words = _lane_array_function(dtype), _lane_array_function(np.uint32)
    lane_masks, lane_times = _lane_array_function(mask_int), _lane_array_function(np.float64)

    def run_chunk(c, normal_address, x0_rows, x0_mode, x0_mean, x0_std, params, t0, h, t1,
                  n_steps, save_steps, key0, key1, first_path, n_paths, chunk, antithetic,
                  x_out, paths_out, hit_out, st_count, st_mean, st_m2, ob_count, ob_mean,
                  ob_m2, hit_count, hit_mean, hit_m2, hist, hist_edges, nonfinite):
        """Advance the paths of chunk c (serial; the parallel kernel maps it over chunks,
        which keeps Numba's parallel passes off the large body and compiles faster)."""
        _prefer_vector_width(VECTOR_BITS)
        n_save = save_steps.shape[0]
        per_path_params = may_vary_by_path and params.shape[0] > 1
        keep_x = x_out.shape[0] > 0
        keep_hits = hit_out.shape[0] > 0
        hit_stats = hit_count.shape[0] > 0
        # Histogram copies are per thread: integer counts, summed by the caller.
        tid = numba.get_thread_id() if hist.shape[0] > 1 else 0
        hd = dtype(h)
        sqrt_h = dtype(math.sqrt(h))
        # The increment's scale: sqrt(h) (normals, two-point), sqrt(3 h) (three-point).
        scale = sqrt_h if gaussian or two_point else dtype(math.sqrt(3.0 * h))
        # Component-major lane state and noise (element [j * lanes + l]), so that loops
        # over the lanes touch contiguous memory and vectorise.
        X = lane_floats(dim * lanes)
        Z = lane_floats(4 * lanes)
        W = lane_words(words_per_block * lanes)
        DW = lane_floats(noise_dim * lanes)
        Z2 = lane_floats(4 * lanes if extra else 0)
        DZ = lane_floats(noise_dim * lanes if extra else 0)
        OBV = lane_floats(n_obs_c * lanes)
        HT = lane_times(lanes)
        # Lane masks of the state's width (all bits set: the path still moves), so that
        # freezing a path is a bitwise blend that vectorises with the step.
        live = lane_masks(lanes)
        # Antithetic pairs: path 2m + 1 draws the normals of path 2m (its counter with the
        # low bit cleared), negated. The counter stays arithmetic in the lane index (a load
        # from an array would keep LLVM from vectorising the Philox loop).
        # The negation is applied in the per-path loop (exact, as -(sqrt(h) z)), which keeps
        # the vectorised loops the same as without antithetic variates.
        pair_bits = pair_mask if antithetic != 0 else ~np.uint64(0)
        # Per-path scratch on the stack: LLVM keeps it in registers.
        x = alloc_state()
        x_new = alloc_state()
        f0 = alloc_state()
        f1 = alloc_state()
        f2 = alloc_state()
        f3 = alloc_state()
        xt = alloc_state()
        g0 = alloc_g()
        g1 = alloc_g()
        g2 = alloc_g()
        g3 = alloc_g()
        dw = alloc_noise()
        dz = alloc_noise()
        for j in range(noise_dim):
            dz[j] = dtype(0.0)
        p = alloc_params()
        # Parameters per lane: per-path rows loaded once per lane block and copied into p
        # for each lane's step; a shared row loaded once per chunk into P and p, which
        # the steps then read as they are (a copy per lane and step costs as much as a
        # small network's forward pass when the parameters are its weights).
        reload_params = copy_params_always or per_path_params
        # P is read by the parameter reloads and the observables only. A shared row
        # copied for every lane and chunk cost as much as the run itself where the
        # parameters are a network's weights (66,304 of them: 17 MB per chunk in float32).
        lane_params = reload_params or has_obs
        P = lane_floats((n_params_c if lane_params else 1) * lanes)
        if not per_path_params:
            for j in range(n_params_model):
                p[j] = params[0, j]
                if lane_params:
                    for l in range(lanes):
                        P[j * lanes + l] = params[0, j]
        if block_mode:
            # The replay buffer (_ReplayLayout) starts with the parameter row, which the
            # steps pass on as p; the block's activations go in S.
            R = lane_floats(r_total)
            for j in range(n_params_model):
                R[j] = params[0, j]
            p_step = R[:n_params_model]
            S = lane_floats(block_scratch)
            # A row per path: the block reads the lanes' rows where the step reads its
            # own lane's, reloaded into p_step.
            p_block = P if per_path_params else p_step
        else:
            p_step = p
            p_block = p
        start = c * chunk
        stop = min(start + chunk, n_paths)
        bad = 0
        for b0 in range(start, stop, lanes):
            n_live = min(lanes, stop - b0)
            path0 = first_path + np.uint64(b0)
            _call_compiled(block_start, (
                X, P, HT, live, b0, n_live, n_paths, path0, pair_bits, antithetic,
                per_path_params, x0_rows, x0_mode, x0_mean, x0_std, normal_address, key0,
                key1, params, np.int64(n_params_model), np.int64(dim)))
            if has_stop:
                # A path that starts in the stopping region stops at t0.
                for l in range(n_live):
                    for j in range(dim):
                        x[j] = X[j * lanes + l]
                    if per_path_params:
                        for j in range(n_params_model):
                            p[j] = P[j * lanes + l]
                    if stop_fn(dtype(t0), x, p) > 0:
                        HT[l] = t0
                        live[l] = DEAD
            s = 0
            if n_save > 0 and save_steps[0] == 0:
                # np.int64: a literal 0 here compiled save_block a second time.
                save_block(X, P, OBV, n_live, b0, c, np.int64(0), dtype(t0), antithetic,
                           tid, paths_out, st_count, st_mean, st_m2, ob_count, ob_mean,
                           ob_m2, hist, hist_edges, np.int64(dim))
                s = 1
            current_block = -1
            for k in range(n_steps):
                t = dtype(t0 + k * h)
                t_mid = dtype(t0 + (k + 0.5) * h)
                t_next64 = t1 if k + 1 == n_steps else t0 + (k + 1) * h
                t_next = dtype(t_next64)
                if has_noise:
                    for j in range(noise_dim):
                        q = k * noise_dim + j
                        block = q >> block_shift
                        if block != current_block:
                            fill_increments(Z, W, key0, key1, np.uint64(block),
                                            increment_stream, path0, pair_bits)
                            if extra:
                                # The extra normals share the increments' block index.
                                fill_normals(Z2, W, key0, key1, np.uint64(block),
                                             stream_extra, path0, pair_bits)
                            current_block = block
                        if noise_dim > 1:
                            r = q & in_block_mask
                            for l in range(lanes):
                                DW[j * lanes + l] = scale * draw(Z, W, r, l)
                            if extra:
                                for l in range(lanes):
                                    DZ[j * lanes + l] = sqrt_h * Z2[r * lanes + l]
                # One noise component: the step reads the increments where the RNG put
                # them (a separate pass through DW costs a quarter of the step).
                r_step = k & in_block_mask
                z_off = (k & 3) * lanes
                # One pass over the lanes; a lane-block kernel makes one more per drift
                # call of the step after the first (_make_replay_drift), with the block's
                # field evaluated between them, and keeps only the last pass's states.
                # Every step's first call is drift(t, x) at the lane's state
                # (tests/test_lane_block.py), so the block's field there is evaluated
                # from X without a recording pass.
                if block_mode:
                    for l in range(lanes):
                        R[r_times + l] = t
                    _call_compiled(block_field, (R[r_times:r_times + lanes], X[:lane_block],
                                                 p_block, R[r_fields:r_fields + lane_block],
                                                 S))
                for target in range(first_pass, n_passes):
                    if block_mode:
                        R[r_target] = target
                    for l in range(lanes):
                        for j in range(dim):
                            x[j] = X[j * lanes + l]
                        # Under antithetic variates path0 is even, so odd lanes are odd
                        # paths.
                        mirrored = antithetic != 0 and (l & 1) == 1
                        for j in range(noise_dim):
                            if noise_dim == 1:
                                increment = scale * draw(Z, W, r_step, l)
                            else:
                                increment = DW[j * lanes + l]
                            dw[j] = -increment if mirrored else increment
                            if extra:
                                if noise_dim == 1:
                                    extra_normal = sqrt_h * Z2[z_off + l]
                                else:
                                    extra_normal = DZ[j * lanes + l]
                                dz[j] = -extra_normal if mirrored else extra_normal
                        if reload_params:
                            for j in range(n_params_model):
                                p_step[j] = P[j * lanes + l]
                        if block_mode:
                            R[r_lane] = l
                            R[r_call] = 0
                        step(t, t_mid, t_next, hd, x, p_step, dw, dz, f0, f1, f2, f3, g0, g1,
                             g2, g3, xt, x_new)
                        if target == n_passes - 1:
                            # A path that leaves the finite numbers is frozen at its first
                            # non-finite state: not advanced further, counted, kept out
                            # of the statistics. A stopped path is frozen the same way, at
                            # its first state in the stopping region. The freeze is a
                            # bitwise blend, not a conditional: LLVM turns "X = new if
                            # live else X" into a conditional store, which does not
                            # vectorise.
                            was_live = live[l]
                            finite = True
                            for j in range(dim):
                                finite = finite & math.isfinite(x_new[j])
                                X[j * lanes + l] = blend(was_live, x_new[j], x[j])
                            keep = was_live & to_mask(finite)
                            if has_stop:
                                # Evaluated for every lane and combined without
                                # short-circuits: no branch in the loop body.
                                hit = keep & to_mask(stop_fn(t_next, x_new, p_step) > 0)
                                HT[l] = _blend_f64(np.int64(hit), t_next64, HT[l])
                                keep = keep & ~hit
                            live[l] = keep
                    if block_mode and target < n_calls:
                        at = target * lanes
                        _call_compiled(block_field, (
                            R[r_times + at:r_times + at + lanes],
                            R[r_states + target * lane_block:
                              r_states + (target + 1) * lane_block],
                            p_block,
                            R[r_fields + target * lane_block:
                              r_fields + (target + 1) * lane_block], S))
                if s < n_save and save_steps[s] == k + 1:
                    save_block(X, P, OBV, n_live, b0, c, s, t_next, antithetic, tid,
                               paths_out, st_count, st_mean, st_m2, ob_count, ob_mean,
                               ob_m2, hist, hist_edges, np.int64(dim))
                    s += 1
            bad += _call_compiled(block_finish, (
                X, HT, x_out, hit_out, hit_count, hit_mean, hit_m2, b0, n_live, c, keep_x,
                keep_hits, hit_stats, np.int64(dim)))
        nonfinite[c] = bad

    if framed:
        # Everything run_chunk's code depends on once the step is a call: the model's
        # shapes, not its functions; the method's extra normals, not the method. Not the
        # noise kind either, which only the step reads: the frame sees the noise width
        # and the diffusion's shape, so an additive, a diagonal and (in one dimension) a
        # scalar-noise model of one width share a frame.
        dispatcher = _shared_function(run_chunk, (
            "frame", philox.RNG_VERSION, model.kind, dim, noise_dim, gshape,
            extra, increments, np.dtype(dtype).name, lanes, VECTOR_BITS,
            # The observables by their number: the frame calls the save point of
            # stand-ins by name, and the merge binds that call to the save point of the
            # kernel's own observables (_Lowered.save): every set of n shares the frame.
            n_obs, montecarlo.fingerprint((), stop), n_params_model, on_stack,
            per_path_params, debug), role="frame", **_WRAPPERLESS, **options)
    else:
        dispatcher = _shared_function(run_chunk, (
            "run_chunk", philox.RNG_VERSION, model.fingerprint, method.name, increments,
            np.dtype(dtype).name, debug, rng_only, lanes, VECTOR_BITS,
            montecarlo.fingerprint(obs, stop), n_params_model, on_stack, per_path_params,
            block_mode), **_WRAPPERLESS, **options)
    dispatcher.lane_block = block_mode
    dispatcher.framed = framed
    # The stand-ins' save point the frame calls, which the merge binds to the kernel's
    # own (the same for every request of the frame: it is keyed by their number).
    dispatcher.stand_in_save = save_block if framed and has_obs else None
    # The kernel arguments' types (what run_chunk is compiled for, after the chunk index
    # and the normals' address) and the pieces it calls by symbol, with their types.
    dispatcher.kernel_sig = tuple(numba.typeof(a) for a in layout.empty_args(sz, dtype))
    signatures = _piece_signatures(dispatcher.kernel_sig, dtype)
    called = dict(block_start=block_start, block_finish=block_finish)
    if block_mode:
        called["block_field"] = block_field
    dispatcher.pieces = tuple((piece, signatures[name]) for name, piece in called.items())
    return dispatcher


# --- framed kernels: a frame typed once per shape, each model's step merged in by LLVM --

class _Lowered:
    """A function lowered to LLVM IR and not optimised (a kernel's frame, or a model's
    step): ``entry`` (its symbol), ``bitcode`` (its module; a frame's calls the step by
    :data:`FRAME_STEP_SYMBOL`) and ``linked`` (the bitcode of each piece it calls by
    name, compiled and optimised already: for a frame the save point, the lane arrays
    and Numba's runtime; for a step the user's functions)."""

    def __init__(self, entry, bitcode, linked, save=None):
        self.entry, self.bitcode, self.linked = entry, bitcode, linked
        # A frame with observables: ``(symbol, argument types, position in linked)`` of
        # the stand-ins' save point it calls, whose code is left out of ``linked``; the
        # merge binds the call to the save point of the kernel's own observables, linked
        # at that position (:func:`_framed_kernel`).
        self.save = save


#: The frames and steps this process lowered (frames also read from disk; a step's
#: IR is kept only here: on disk it is part of its kernel, and another kernel of the
#: model, with other outputs say, lowers it again in a new process, about 0.1 s).
_LOWERED = {}
#: The cached file formats of frames and framed kernels (a change gives new file names).
_FRAME_FORMAT = 3


def _cache_file(dispatcher, kind, fingerprint):
    """Where fastsde keeps a frame or a framed kernel: beside ``dispatcher``'s entries in
    Numba's disk cache, named by the fingerprint and this machine's code generator (CPU
    and its features); None where the dispatcher has no disk cache."""
    cache = getattr(dispatcher, "_cache", None)
    path = getattr(cache, "_cache_path", None)
    if not isinstance(cache, _KeyedCache) or path is None:
        return None
    magic = dispatcher.targetctx.codegen().magic_tuple()
    digest = hashlib.sha256(repr((kind, _FRAME_FORMAT, fingerprint, magic)).encode())
    return os.path.join(path, f"fastsde-{kind}-{digest.hexdigest()[:32]}.pkl")


def _read_cache_file(path):
    """The object pickled at ``path``, or None (absent, unreadable, or half written by a
    process that died: each is as good as a miss)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception:  # noqa: BLE001
        return None


def _write_cache_file(path, value):
    """Pickle ``value`` to ``path`` atomically (written beside it, then renamed: a reader
    in another process sees the whole file or none); a cache that cannot be written is
    skipped, as Numba skips its own."""
    if path is None:
        return
    temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def _lower(dispatcher, sig):
    """Type and lower ``dispatcher``'s function for ``sig`` without optimising or
    compiling it (a :class:`_Lowered`); announced as a ``numba:compile`` event, as
    Numba's own compiles are."""
    flags = compiler.Flags()
    dispatcher.targetdescr.options.parse_as_flags(flags, dispatcher.targetoptions)
    # The frame and the step are kept as lowered and optimised once, together, with the
    # step inlined: a frame optimised first and merged after ran up to 8% slower in a
    # prototype (its loops were shaped around the call), and a step optimised alone
    # left a general-noise DRI1 kernel 17% slower.
    flags.no_compile = True
    codegen = dispatcher.targetctx.codegen()
    library = codegen.create_library(dispatcher.py_func.__qualname__)
    lowered = []
    library.add_ir_module = lambda module: lowered.append(
        cgutils.normalize_ir_text(str(module)))
    details = dict(dispatcher=dispatcher, args=tuple(sig), return_type=None)
    with global_compiler_lock, event.trigger_event("numba:compile", data=details):
        dispatcher.typingctx.refresh()
        dispatcher.targetctx.refresh()
        result = compiler.compile_extra(dispatcher.typingctx, dispatcher.targetctx,
                                        dispatcher.py_func, tuple(sig), None, flags,
                                        dispatcher.locals, library=library)
        if result.typing_error is not None:
            raise result.typing_error
        module = llvm_binding.parse_assembly(lowered[0])
        for text in lowered[1:]:
            module.link_in(llvm_binding.parse_assembly(text))
        save = _bound_save_point(dispatcher, library)
        linked, save_at = [], None
        for dependency in library._linking_libraries:
            if save is not None and dependency is save[2]:
                # Where the merge links the kernel's own save point, for the same order
                # (a library is listed once per call site: the first counts).
                if save_at is None:
                    save_at = len(linked)
                continue
            bitcode = dependency._get_module_for_linking().as_bitcode()
            if bitcode not in linked:
                linked.append(bitcode)
        return _Lowered(result.fndesc.mangled_name, module.as_bitcode(), tuple(linked),
                        None if save is None else (save[0], save[1], save_at))


def _bound_save_point(dispatcher, library):
    """``(symbol, argument types, library)`` of the stand-ins' save point that the frame
    ``dispatcher``'s code ``library`` calls by name, or None (no observables: one save
    point serves every kernel of the frame, and stays linked in; or not a frame)."""
    save_block = getattr(dispatcher, "stand_in_save", None)
    if save_block is None:
        return None
    for compiled in save_block.overloads.values():
        if any(compiled.library is dependency for dependency in library._linking_libraries):
            return (compiled.fndesc.mangled_name, tuple(compiled.signature.args),
                    compiled.library)
    raise RuntimeError("fastsde: a frame with observables does not call its stand-ins' "
                       "save point: an internal error, please report it")


def _lowered(dispatcher, sig, on_disk):
    """The :class:`_Lowered` function of ``dispatcher`` for ``sig``: held by this
    process, read from the disk cache (``on_disk``, a frame), or lowered (and then
    cached)."""
    key = (dispatcher.py_func.__qualname__, tuple(sig))
    found = _LOWERED.get(key)
    if found is None:
        path = _cache_file(dispatcher, "frame", key) if on_disk else None
        found = _read_cache_file(path)
        if not isinstance(found, _Lowered):
            found = _lower(dispatcher, sig)
            _write_cache_file(path, found)
        _LOWERED[key] = found
    return found


def _env_symbol(symbol):
    """The symbol of the environment of the function ``symbol`` (Numba's mangling:
    ``_ZN08NumbaEnv`` then the rest of the function's name after ``_ZN``)."""
    return "_ZN08NumbaEnv" + symbol[len("_ZN"):]


def _merge(frame, step, name, codegen, save=None):
    """A code library holding the kernel ``name``: the ``frame``'s module with its call
    of the step bound to the ``step``'s (both :class:`_Lowered`), optimised with the
    step inlined and compiled by ``codegen``. ``save``: ``(symbol, bitcode)`` of the
    kernel's save point, for a frame with observables (``frame.save``)."""
    module = llvm_binding.parse_bitcode(frame.bitcode)
    linked = frame.linked + step.linked
    if frame.save is not None:
        # The kernel's save point in place of the stand-ins': the same number of
        # observables and arguments, called by name and linked in where theirs was.
        module.get_function(frame.save[0]).name = save[0]
        # The call's declaration of the callee's environment (Numba's "NumbaEnv" global)
        # is renamed with it: left behind, it stayed in the kernel, unused.
        try:
            module.get_global_variable(_env_symbol(frame.save[0])).name = \
                _env_symbol(save[0])
        except NameError:
            pass
        at = frame.save[2]
        linked = linked[:at] + (save[1],) + linked[at:]
    step_module = llvm_binding.parse_bitcode(step.bitcode)
    call = module.get_function(FRAME_STEP_SYMBOL)
    defined = step_module.get_function(step.entry)
    if str(call.global_value_type) != str(defined.global_value_type):
        raise RuntimeError(f"fastsde: the frame calls the step as {call.global_value_type}, "
                           f"the step is {defined.global_value_type}: an internal error, "
                           f"please report it")
    call.name = step.entry
    module.link_in(step_module)
    module.get_function(frame.entry).name = name
    # Each kernel merged from this frame holds a copy of the frame's other definitions
    # (its environment, Numba's helpers) and of the step: kept to the module, so the
    # kernels of one frame or one step never define one symbol twice in the process.
    for value in list(module.functions) + list(module.global_variables):
        if (not value.is_declaration and value.name != name
                and value.linkage == llvm_binding.Linkage.external):
            value.linkage = llvm_binding.Linkage.internal
    # The step inlined first, as Numba inlined it before its function passes: the
    # kernel's optimised IR is then that of run_chunk with the step inlined by Numba,
    # instruction for instruction (inlined later, by the module passes, the same
    # instructions came in another order).
    inliner = llvm_binding.create_new_module_pass_manager()
    inliner.add_always_inliner_pass()
    inliner.run(module, codegen._pass_builder())
    library = codegen.create_library(name)
    library.enable_object_caching()
    library.add_llvm_module(module)
    # The pieces called by name join as Numba links a library's dependencies when it
    # finalises it: after the function passes, which they had when they were compiled
    # (the order of Numba's own kernels, whose machine code these reproduce).
    # Their definitions are linkonce_odr: the linker keeps those the kernel calls.
    for bitcode in linked:
        library._final_module.link_in(llvm_binding.parse_bitcode(bitcode))
    with global_compiler_lock:
        library.finalize()
    return library


def _kernel_fingerprint(kernel_key):
    """A framed kernel's fingerprint: its request (:func:`_kernel_request`'s key, or a
    level kernel's, "mlmc" first), fastsde's and Numba's versions and the kernel
    sources."""
    return hashlib.sha256(repr((kernel_key, philox.RNG_VERSION, VECTOR_BITS, __version__,
                                numba.__version__, _SOURCE_HASH)).encode()).hexdigest()


def _framed_kernel(frame, model_step, step_types, kernel_key, frame_sig, save_block=None):
    """``(library, symbol, loaded)`` of a framed kernel: loaded from the disk cache
    (``loaded`` True) or merged from the frame (shared by every model of its shape; its
    argument types ``frame_sig``) and the model's step; ``save_block``: the kernel's save
    point where it has observables (:func:`_make_save_block`).

    A kernel's ``run_chunk`` spent about 1 s of its 1.4 s compile (this project's 2-core
    machine) in Numba's typing and lowering of the lanes, the RNG, the save points and
    the statistics, which do not depend on the model. The frame is typed and lowered
    once per shape (dims, diffusion shape, dtype, outputs, stopping, parameter width) and
    kept as unoptimised LLVM IR; each model's step is typed and lowered alone (about
    0.1 s), and LLVM optimises the two together with the step inlined, as when Numba
    inlined it: the same loops and the same bits (tools/ab_kernel.py)."""
    fingerprint = _kernel_fingerprint(kernel_key)
    name = f"fastsde_kernel_{fingerprint[:32]}"
    path = _cache_file(frame, "kernel", fingerprint)
    state = _read_cache_file(path)
    if state is not None:
        try:
            rtsys.initialize(frame.targetctx)
            library = frame.targetctx.codegen().unserialize_library(state)
            return library, name, True
        except Exception:  # noqa: BLE001 - a stale or damaged entry: build it again
            pass
    with global_compiler_lock:
        lowered_frame = _lowered(frame, frame_sig, on_disk=True)
        lowered_step = _lowered(model_step, step_types, on_disk=False)
        # Announced as a compile of the frame, marked as the merge (tools and
        # tests/compile_events.py tell the two apart), so that Numba's compile events
        # account for all of a kernel's compile time.
        details = dict(dispatcher=frame, args=tuple(frame_sig), return_type=None,
                       fastsde_stage="merge")
        save = None
        if lowered_frame.save is not None:
            compiled = _compiled(save_block, lowered_frame.save[1])
            save = (compiled.fndesc.mangled_name,
                    compiled.library._get_module_for_linking().as_bitcode())
        with event.trigger_event("numba:compile", data=details):
            library = _merge(lowered_frame, lowered_step, name, frame.targetctx.codegen(),
                             save)
    _write_cache_file(path, library.serialize_using_object_code())
    return library, name, False


def _launch(address, normal_address, x0_rows, x0_mode, x0_mean, x0_std, params, t0, h, t1,
            n_steps, save_steps, key0, key1, first_path, n_paths, chunk, antithetic, x_out,
            paths_out, hit_out, st_count, st_mean, st_m2, ob_count, ob_mean, ob_m2,
            hit_count, hit_mean, hit_m2, hist, hist_edges, nonfinite):
    """Run the ``run_chunk`` at ``address`` over the chunks, in parallel (the threads take
    the chunks) or serially; ``normal_address`` is the initial-state normals' function
    (0 when the run draws none)."""
    n_chunks = (n_paths + chunk - 1) // chunk
    for c in prange(n_chunks):
        # int64: the parallel lowering's gufunc types the prange index as uint64, and
        # run_chunk is compiled for int64.
        _call_address(address, (np.int64(c), normal_address, x0_rows, x0_mode, x0_mean,
                                 x0_std, params, t0, h, t1, n_steps, save_steps, key0,
                                 key1, first_path, n_paths, chunk, antithetic, x_out,
                                 paths_out, hit_out, st_count, st_mean, st_m2, ob_count,
                                 ob_mean, ob_m2, hit_count, hit_mean, hit_m2, hist,
                                 hist_edges, nonfinite), None)


def _shared_launcher(launch_fn, key, parallel, full_sig):
    """The shared launcher ``launch_fn`` (parallel or serial), compiled for ``full_sig``
    and for the signatures asked for before, and for no other: a call with other argument
    types must raise, not compile a launcher that would pass them to a chunk function
    compiled for these. Kept in the disk cache."""
    with _LAUNCHER_LOCK:
        launcher = _shared_function(launch_fn, key, role="parallel" if parallel else "serial",
                                    parallel=parallel, **_JIT)
        if tuple(full_sig) not in launcher.overloads:
            launcher.disable_compile(False)
            launcher.compile(tuple(full_sig))
        launcher.disable_compile()
        return launcher


def _launcher_for(parallel, sig):
    """The launcher (parallel or serial) compiled for the kernel arguments ``sig``: one
    per argument types (in practice per dtype), shared by every model and method."""
    # (address, normal_address) and the kernel arguments.
    return _shared_launcher(_launch, ("launch", parallel), parallel,
                            (types.int64, types.int64) + tuple(sig))


def _run_chunk_sig(sig):
    """``run_chunk``'s argument types for the kernel arguments ``sig``: the chunk index
    and the initial-state normals' address (int64 both), then ``sig``."""
    return (types.int64, types.int64) + tuple(sig)


class CpuKernel:
    """A compiled CPU kernel: the ``run_chunk`` of one (model, method, dtype, outputs) and
    the launcher that maps it over the chunks.

    Attributes
    ----------
    run_chunk : numba dispatcher or None
        Advances the paths of one chunk; compiled for :func:`_run_chunk_sig` of ``sig``.
        None for a framed kernel (:func:`_framed_kernel`), merged outside Numba's
        dispatchers.
    library : numba code library
        The kernel's code (its LLVM IR, where it was compiled in this process).
    from_disk_cache : bool
        Whether the kernel's code was loaded from the disk cache (no IR to read).
    address : int
        Its native entry point, which the launcher calls.
    sig : tuple of numba types
        The kernel arguments' types (:func:`layout.empty_args`).
    sizes : layout.Sizes
    parallel : bool
        False for debug kernels, which run serially: an exception raised inside a
        parallel region does not propagate cleanly out of Numba's thread pool (it
        surfaces as a SystemError).
    """

    def __init__(self, code, sig, sizes, parallel, per_path_params=True,
                 lane_block=False):
        self.per_path_params = per_path_params
        self.lane_block = lane_block
        if isinstance(code, tuple):
            # A framed kernel: (library, symbol, whether it came from the disk cache).
            self.run_chunk = None
            self.library, symbol, self.from_disk_cache = code
            self.address = _symbol_address(self.library, symbol)
        else:
            self.run_chunk = code
            compiled = code.overloads[_run_chunk_sig(sig)]
            self.library = compiled.library
            self.from_disk_cache = bool(code._cache_hits[_run_chunk_sig(sig)])
            self.address = _address(compiled)
        self.sig = tuple(sig)
        self.sizes = sizes
        self.parallel = parallel
        self.launcher = _launcher_for(parallel, sig)
        # The launcher is shared and holds a signature per dtype; run_chunk has one. A
        # call whose arrays have the other dtype would match the launcher's other
        # signature and reach run_chunk with arrays it reads as this one's: refused here.
        self._array_dtypes = tuple((i, np.dtype(str(t.dtype))) for i, t in enumerate(sig)
                                   if isinstance(t, types.Array))
        self._dtype = np.dtype(str(sig[0].dtype))

    def _normal_address(self, args):
        """The initial-state normals' entry point when the run draws them (compiled, or
        loaded from the disk cache, on first need), else 0."""
        if args[1] != X0_NORMAL:
            return 0
        return _normal_block_address(self._dtype)

    def _check(self, args):
        params = args[layout.KernelArgs._fields.index("params")]
        if not self.per_path_params and params.shape[0] != 1:
            raise ValueError(f"kernel argument params has {params.shape[0]} rows, the "
                             f"kernel was compiled for one shared row: an internal error, "
                             f"please report it")
        for i, dtype in self._array_dtypes:
            if args[i].dtype != dtype:
                raise TypeError(f"kernel argument {layout.KernelArgs._fields[i]} has dtype "
                                f"{args[i].dtype}, the kernel {dtype}: an internal error, "
                                f"please report it")

    @staticmethod
    def _writeable(args):
        """``args`` with read-only arrays (a user's frozen ``params``, say) replaced by
        writeable copies: Numba types a read-only array as another type, and the launcher
        is compiled for the kernel's own argument types only (the kernel never writes its
        inputs)."""
        if all(a.flags.writeable for a in args if isinstance(a, np.ndarray)):
            return args
        return tuple(np.array(a, order="C") if isinstance(a, np.ndarray)
                     and not a.flags.writeable else a for a in args)

    def __call__(self, *args):
        args = self._writeable(args)
        self._check(args)
        self.launcher(self.address, self._normal_address(args), *args)

    def run_serially(self, *args):
        """The same run on one thread (re-raises a user function's own exception)."""
        args = self._writeable(args)
        self._check(args)
        _launcher_for(False, self.sig)(self.address, self._normal_address(args), *args)


_KERNELS = {}



def _diagnose(model, dtype, error, obs=(), stop=None):
    """Turn a kernel compile failure into a ModelError naming the user function at fault."""
    arr1 = numba.types.Array(numba.from_dtype(np.dtype(dtype)), 1, "C")
    scalar = numba.from_dtype(np.dtype(dtype))
    scalar_fns = [(f"observables[{name!r}]", fn) for name, fn in obs]
    scalar_fns += [("stop_when", stop)] if stop is not None else []
    for role, fn in scalar_fns:
        try:
            result = njit((scalar, arr1, arr1))(fn).nopython_signatures[0].return_type
        except Exception as exc:  # noqa: BLE001
            summary = "\n".join(str(exc).strip().splitlines()[:12])
            raise ModelError(f"{role} function {fn.__name__!r} could not be compiled by "
                             f"Numba for dtype {np.dtype(dtype).name}:\n{summary}") from None
        if not isinstance(result, (numba.types.Number, numba.types.Boolean)):
            raise ModelError(f"{role} function {fn.__name__!r} must return a number; "
                             f"Numba types its result as {result}")
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


def _kernel_request(model, method, dtype, debug, rng_only, obs, stop, n_params,
                    increments, per_path_params):
    """(dtype, sizes, cache key, per_path_params) of :func:`get_kernel`'s kernel."""
    dtype = np.dtype(dtype).type
    # Debug kernels (bounds checking, where speed does not matter) serve both: one
    # compile fewer for a user who checks a sweep and a shared run.
    per_path_params = bool(per_path_params) or bool(debug)
    n_params = model.n_params if n_params is None else int(n_params)
    sz = layout.kernel_sizes(model.dim, n_params, len(obs), max(model.noise_dim, 1),
                             model.diffusion_shape if model.kind == "sde" else (1,))
    key = (model.fingerprint, method.name, increments, np.dtype(dtype).name, debug,
           rng_only, montecarlo.fingerprint(obs, stop), n_params, per_path_params)
    return dtype, sz, key, per_path_params


def kernel_is_ready(model, method, dtype, obs=(), stop=None, n_params=None,
                    increments="gaussian", per_path_params=False):
    """Whether :func:`get_kernel` would find this kernel without compiling it: held by
    this process, or in Numba's disk cache for this machine. Nothing is compiled or
    loaded; a caller that will need several kernels can have the missing ones compiled
    by other processes meanwhile (one core each), then load them from the cache."""
    dtype, sz, key, per_path_params = _kernel_request(model, method, dtype, False, False,
                                                      obs, stop, n_params, increments,
                                                      per_path_params)
    if key in _KERNELS:
        return True
    run_chunk = _make_run_chunk(model, method, dtype, sz, False, False, obs, stop,
                                increments, per_path_params)
    if run_chunk.framed:
        path = _cache_file(run_chunk, "kernel", _kernel_fingerprint(key))
        return path is not None and os.path.exists(path)
    cache = run_chunk._cache
    if not isinstance(cache, _KeyedCache):
        return False
    try:
        return cache.holds(_run_chunk_sig(run_chunk.kernel_sig), run_chunk.targetctx)
    except Exception:  # noqa: BLE001 - an unreadable index: as good as absent
        return False


def get_kernel(model, method, dtype, debug=False, rng_only=False, obs=(), stop=None,
               n_params=None, increments="gaussian", per_path_params=False):
    """The compiled CPU kernel for (model, method, dtype), compiling it on first use.

    Parameters
    ----------
    n_params : int or None
        Width of the parameter rows the run passes (``layout.Sizes.n_params``); None: the
        model's declared count. It is part of the kernel (and of its cache key).
    debug : bool
        Compile with bounds checking: an out-of-bounds index in a user function raises
        IndexError instead of touching memory it does not own.
    rng_only : bool
        The RNG-only ceiling: the same kernel with the scheme's state update replaced by
        adding the increments (benchmarks only).
    obs : tuple of (name, function)
        Observables ``f(t, x, p) -> float`` evaluated at the save times.
    stop : function or None
        ``g(t, x, p)``: a path stops the first time it is positive.
    increments : {"gaussian", "two_point", "three_point"}
        The increment kind (checked against the method by the caller).
    per_path_params : bool
        Whether runs pass a parameter row per path. False (one shared row, which the
        kernel then refuses to run with more) compiles a kernel in which the parameters
        are loop-invariant, so what the step computes from t and the parameters alone
        is computed once per step instead of once per path. Debug kernels take either.

    Raises
    ------
    ModelError
        A user function does not compile; raised before anything is allocated.
    """
    dtype, sz, key, per_path_params = _kernel_request(model, method, dtype, debug, rng_only,
                                                      obs, stop, n_params, increments,
                                                      per_path_params)
    # run_chunk calls numba.get_thread_id, whose symbol exists once Numba's threading
    # layer has started: a run_chunk loaded from the disk cache before that aborted the
    # process in LLVM ("Symbol not found: get_thread_id"). get_num_threads starts it.
    numba.get_num_threads()
    kernel = _KERNELS.get(key)
    if kernel is None:
        run_chunk = _make_run_chunk(model, method, dtype, sz, debug, rng_only, obs, stop,
                                    increments, per_path_params)
        sig = run_chunk.kernel_sig
        code = run_chunk
        try:
            _load_pieces(run_chunk.pieces)
            if run_chunk.framed:
                code = _framed_kernel(run_chunk, _model_step(model, method, dtype, debug),
                                      _step_types(model, dtype), key, _run_chunk_sig(sig),
                                      _save_block_for(model, dtype, sz, obs, debug)
                                      if obs else None)
            else:
                run_chunk.compile(_run_chunk_sig(sig))
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001
            _diagnose(model, dtype, exc, obs, stop)
        kernel = _KERNELS[key] = CpuKernel(code, sig, sz, parallel=not debug,
                                           per_path_params=per_path_params,
                                           lane_block=run_chunk.lane_block)
    return kernel


# --- multilevel Monte Carlo: a fine and a coarse path advanced together ----------------

#: Sums a level kernel accumulates per chunk (levels.py: the values, and the pairwise-tree
#: order shared with the CUDA kernel).
MLMC_SUMS = levels.MLMC_SUMS
_pair_moments = njit(inline="always", **_JIT)(levels.pair_moments)
_fold_chunk = njit(**_JIT)(levels.fold_chunk)


def _mlmc_launch(address, x0, params, t0, t1, n_coarse, ratio, coupled, key0, key1,
                 first_path, n_paths, chunk, sums, nonfinite):
    """Run the level chunk function at ``address`` over the chunks (threads take chunks)."""
    n_chunks = (n_paths + chunk - 1) // chunk
    for c in prange(n_chunks):
        _call_address(address, (np.int64(c), x0, params, t0, t1, n_coarse, ratio, coupled,
                                key0, key1, first_path, n_paths, chunk, sums, nonfinite),
                      None)


def _make_mlmc_chunk(model, dtype, payoff, n_params, stop=None, running=()):
    """The chunk function of a multilevel Monte Carlo level, as a frame (a dispatcher, not
    compiled; :func:`get_mlmc_kernel` merges it with the method's step for the model).

    Each path of the level is a pair: the fine path takes ``n_coarse * ratio`` steps with
    the Wiener increments of stream 0 (the increments of ``simulate`` with that many
    steps, so the fine path is ``simulate``'s path bit for bit), and the coarse path takes
    ``n_coarse`` steps, each driven by the sum of the ``ratio`` fine increments it spans:
    no noise is stored. ``coupled`` 0 runs the fine path only (level 0: P_c = 0);
    2 drives the coarse path of lane l by the increments of lane l ^ 1, another path's,
    which breaks the coupling (the tests' wrong model). The payoff ``payoff(t1, x, p)`` of
    both final states gives Y = P_f - P_c; a pair whose payoff is not finite is counted in
    ``nonfinite`` and left out of the sums. ``stop(t, x, p)``: each path of the pair stops
    (is frozen) at its first state on its own grid where stop > 0, checked at t0 and after
    each of its steps, as in ``simulate(..., stop_when=...)``; the payoff then sees the
    frozen state (a barrier option's payoff is zero there). ``running``: pairs
    (component, sign); each path tracks the minimum of sign * x[component] over its own
    grid (t0 and after every step, frozen with the path), and the payoff's ``x`` holds
    sign * that minimum at index dim + i (a running minimum, or with sign -1 a running
    maximum: lookback payoffs).
    """
    dim = model.dim
    n_run = len(running)
    run_comp = np.array([j for j, _ in running] or [0], np.int64)
    run_sign = np.array([sg for _, sg in running] or [1.0], dtype)
    noise_dim = max(model.noise_dim, 1)
    gshape = model.diffusion_shape
    # The chunk is a frame (:func:`_framed_kernel`): it calls the method's step through
    # FRAME_STEP_SYMBOL, and the kernel is merged from it and the model's step, so one
    # frame serves every model and method of its shape with this payoff, stopping and
    # running extrema (the level paths draw no extra normals: dz stays zero).
    step = _frame_step_call
    pay = njit(inline="always", **_JIT)(payoff)
    has_stop = stop is not None
    stop_fn = njit(inline="always", **_JIT)(stop if has_stop else montecarlo.never_stop)
    mask_int = np.int32 if dtype == np.float32 else np.int64
    LIVE = mask_int(-1)
    DEAD = mask_int(0)
    blend = _blend_f32 if dtype == np.float32 else _blend_f64
    to_mask = _to_mask_i32 if dtype == np.float32 else _to_mask_i64
    lanes = LANES[dtype]
    fill_normals = _make_fill_normals(dtype, lanes)
    # Levels whose paths draw at most two normals (n_fine * noise_dim <= 2; level 0 with
    # n0 = 1 is most of a run's pairs) compute only a block's first Box-Muller pair.
    fill_first_pair = _make_fill_normals(dtype, lanes, first_pair_only=True)
    words_per_block = 4 if dtype == np.float32 else 8
    alloc_state = _scratch_allocator((dim,), dtype, True)
    alloc_payoff_x = _scratch_allocator((dim + n_run,), dtype, True)
    alloc_g = _scratch_allocator(gshape, dtype, True)
    alloc_noise = _scratch_allocator((noise_dim,), dtype, True)
    alloc_params = _scratch_allocator((n_params,), dtype, True)
    lane_floats, lane_words = _lane_array_function(dtype), _lane_array_function(np.uint32)
    lane_masks = _lane_array_function(mask_int)
    stream_inc = np.uint64(philox.STREAM_INCREMENTS)
    all_bits = ~np.uint64(0)

    @njit(inline="always", **_JIT)
    def step_lane(X, live, RM, D, l, source, t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2,
                  f3, g0, g1, g2, g3, xt, x_new):
        """One step of the path in lane l of X, driven by the increments of lane
        ``source`` of D; with stopping, frozen at its first state in the stopping region
        (a bitwise blend, as in run_chunk: no conditional store in the loop); then the
        running minima RM updated with the new (or frozen) state."""
        for j in range(dim):
            x[j] = X[j * lanes + l]
        for j in range(noise_dim):
            dw[j] = D[j * lanes + source]
        step(t, t_mid, t_next, h, x, p, dw, dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new)
        if has_stop:
            was = live[l]
            for j in range(dim):
                X[j * lanes + l] = blend(was, x_new[j], x[j])
            live[l] = was & ~to_mask(stop_fn(t_next, x_new, p) > 0)
        else:
            for j in range(dim):
                X[j * lanes + l] = x_new[j]
        for i in range(n_run):
            value = run_sign[i] * X[run_comp[i] * lanes + l]
            current = RM[i * lanes + l]
            RM[i * lanes + l] = value if value < current else current

    def mlmc_chunk(c, x0, params, t0, t1, n_coarse, ratio, coupled, key0, key1, first_path,
                   n_paths, chunk, sums, nonfinite):
        _prefer_vector_width(VECTOR_BITS)
        n_fine = n_coarse * ratio
        few_normals = n_fine * noise_dim <= 2
        h_f = (t1 - t0) / n_fine
        h_c = (t1 - t0) / n_coarse
        hf = dtype(h_f)
        hc = dtype(h_c)
        sqrt_hf = dtype(math.sqrt(h_f))
        XF = lane_floats(dim * lanes)
        XC = lane_floats(dim * lanes)
        # Running minima of the fine and coarse paths (n_run, lanes).
        RF = lane_floats(max(n_run, 1) * lanes)
        RC = lane_floats(max(n_run, 1) * lanes)
        xp = alloc_payoff_x()
        DW = lane_floats(noise_dim * lanes)
        DWC = lane_floats(noise_dim * lanes)
        Z = lane_floats(4 * lanes)
        W = lane_words(words_per_block * lanes)
        # Lane masks (all bits set: the path still moves) of the fine and coarse paths.
        LF = lane_masks(lanes)
        LC = lane_masks(lanes)
        x = alloc_state()
        x_new = alloc_state()
        f0 = alloc_state()
        f1 = alloc_state()
        f2 = alloc_state()
        f3 = alloc_state()
        xt = alloc_state()
        g0 = alloc_g()
        g1 = alloc_g()
        g2 = alloc_g()
        g3 = alloc_g()
        dw = alloc_noise()
        dz = alloc_noise()
        for j in range(noise_dim):
            dz[j] = dtype(0.0)
        p = alloc_params()
        for j in range(n_params):
            p[j] = params[0, j]
        start_mask = LIVE
        if has_stop:
            for j in range(dim):
                x[j] = x0[j]
            if stop_fn(dtype(t0), x, p) > 0:
                start_mask = DEAD
        start = c * chunk
        stop = min(start + chunk, n_paths)
        # The chunk's pair values, zero past the batch's end (levels.py).
        V = np.zeros((len(MLMC_SUMS), chunk))
        bad = 0
        for b0 in range(start, stop, lanes):
            n_live = min(lanes, stop - b0)
            path0 = first_path + np.uint64(b0)
            for j in range(dim):
                for l in range(lanes):
                    XF[j * lanes + l] = x0[j]
                    XC[j * lanes + l] = x0[j]
            for i in range(n_run):
                for l in range(lanes):
                    RF[i * lanes + l] = run_sign[i] * x0[run_comp[i]]
                    RC[i * lanes + l] = run_sign[i] * x0[run_comp[i]]
            for l in range(lanes):
                LF[l] = start_mask
                LC[l] = start_mask
            current_block = -1
            for kc in range(n_coarse):
                for i in range(noise_dim * lanes):
                    DWC[i] = dtype(0.0)
                for m in range(ratio):
                    k = kc * ratio + m
                    for j in range(noise_dim):
                        q = k * noise_dim + j
                        block = q >> 2
                        if block != current_block:
                            if few_normals:
                                fill_first_pair(Z, W, key0, key1, np.uint64(block),
                                                stream_inc, path0, all_bits)
                            else:
                                fill_normals(Z, W, key0, key1, np.uint64(block),
                                             stream_inc, path0, all_bits)
                            current_block = block
                        off = (q & 3) * lanes
                        for l in range(lanes):
                            DW[j * lanes + l] = sqrt_hf * Z[off + l]
                    t = dtype(t0 + k * h_f)
                    t_mid = dtype(t0 + (k + 0.5) * h_f)
                    t_next = dtype(t1) if k + 1 == n_fine else dtype(t0 + (k + 1) * h_f)
                    for l in range(lanes):
                        step_lane(XF, LF, RF, DW, l, l, t, t_mid, t_next, hf, x, p, dw, dz,
                                  f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new)
                        for j in range(noise_dim):
                            DWC[j * lanes + l] += dw[j]
                if coupled != 0:
                    t = dtype(t0 + kc * h_c)
                    t_mid = dtype(t0 + (kc + 0.5) * h_c)
                    t_next = dtype(t1) if kc + 1 == n_coarse else dtype(t0 + (kc + 1) * h_c)
                    for l in range(lanes):
                        source = l if coupled == 1 else l ^ 1
                        step_lane(XC, LC, RC, DWC, l, source, t, t_mid, t_next, hc, x, p, dw,
                                  dz, f0, f1, f2, f3, g0, g1, g2, g3, xt, x_new)
            for l in range(n_live):
                for j in range(dim):
                    xp[j] = XF[j * lanes + l]
                for i in range(n_run):
                    xp[dim + i] = run_sign[i] * RF[i * lanes + l]
                pf = np.float64(pay(dtype(t1), xp, p))
                pc = 0.0
                if coupled != 0:
                    for j in range(dim):
                        xp[j] = XC[j * lanes + l]
                    for i in range(n_run):
                        xp[dim + i] = run_sign[i] * RC[i * lanes + l]
                    pc = np.float64(pay(dtype(t1), xp, p))
                if not (math.isfinite(pf) and math.isfinite(pc)):
                    # Counted and left out: zeros add nothing to the sums.
                    bad += 1
                    pf = pc = 0.0
                _pair_moments(pf - pc, pf, V, b0 - start + l)
        _fold_chunk(V, chunk)
        for r in range(len(MLMC_SUMS)):
            sums[c, r] = V[r, 0]
        nonfinite[c] = bad

    # As simulate's frame: the shapes, not the noise kind (only the step reads it).
    return _shared_function(mlmc_chunk, (
        "mlmc_frame", philox.RNG_VERSION, model.kind, dim, noise_dim, gshape,
        montecarlo.fingerprint((("payoff", payoff),), stop), np.dtype(dtype).name, lanes,
        VECTOR_BITS, n_params, tuple(running)), role="frame", **_PIECE)


class MlmcKernel:
    """A compiled level kernel: the chunk function of one (model, method, payoff, dtype,
    parameter width), merged from its frame and the model's step (``code``: what
    :func:`_framed_kernel` returns), and the shared parallel launcher."""

    def __init__(self, code, sig):
        self.library, symbol, self.from_disk_cache = code
        self.address = _symbol_address(self.library, symbol)
        self.sig = tuple(sig)
        # (address) and the level arguments.
        self.launcher = _shared_launcher(_mlmc_launch, ("mlmc_launch",), True,
                                         (types.int64,) + tuple(sig))

    def __call__(self, x0, params, t0, t1, n_coarse, ratio, coupled, key0, key1, first_path,
                 n_paths, chunk, sums, nonfinite):
        self.launcher(self.address, x0, params, t0, t1, n_coarse, ratio, coupled, key0, key1,
                      first_path, n_paths, chunk, sums, nonfinite)


_MLMC_KERNELS = {}


def get_mlmc_kernel(model, method, dtype, payoff, n_params, stop=None, running=()):
    """The compiled level kernel for (model, method, dtype, payoff, parameter width,
    stopping function, running extrema)."""
    dtype = np.dtype(dtype).type
    running = tuple((int(j), float(sg)) for j, sg in running)
    key = (model.fingerprint, method.name, np.dtype(dtype).name,
           montecarlo.fingerprint((("payoff", payoff),), stop), int(n_params), running)
    kernel = _MLMC_KERNELS.get(key)
    if kernel is None:
        chunk_fn = _make_mlmc_chunk(model, dtype, payoff, int(n_params), stop, running)
        arr1 = types.Array(numba.from_dtype(np.dtype(dtype)), 1, "C")
        arr2 = types.Array(numba.from_dtype(np.dtype(dtype)), 2, "C")
        sig = (arr1, arr2, types.float64, types.float64, types.int64, types.int64,
               types.int64, types.uint64, types.uint64, types.uint64, types.int64,
               types.int64, types.Array(types.float64, 2, "C"),
               types.Array(types.int64, 1, "C"))
        try:
            kernel = MlmcKernel(_framed_kernel(
                chunk_fn, _model_step(model, method, dtype), _step_types(model, dtype),
                ("mlmc",) + key, (types.int64,) + sig), sig)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001
            _diagnose(model, dtype, exc, obs=(("payoff", payoff),), stop=stop)
        _MLMC_KERNELS[key] = kernel
    return kernel


def check_scratch(sz, dtype, model):
    """Refuse, before compiling, a state so large that one thread's lane buffers (lanes x
    (dim + noise + parameters + observables)) and per-path scratch would not fit in
    memory; smaller ones run (scratch past ``STACK_SCRATCH_BYTES`` on the heap)."""
    from ..errors import OutputTooLargeError
    from ..api import _available_memory

    itemsize = np.dtype(dtype).itemsize
    lanes = lanes_for(model, dtype)
    per_thread = itemsize * (lanes * (sz.dim + sz.noise_dim + 8 + max(sz.n_params, 1)
                                      + sz.n_obs_slots) + sz.scratch_elements())
    total = per_thread * numba.get_num_threads()
    available = _available_memory()
    if available is not None and total > 0.5 * available:
        raise OutputTooLargeError(
            f"a model of dim={sz.dim} (diffusion out {sz.gshape}, {sz.n_params} parameters) "
            f"needs {total / 2**30:.2f} GiB of kernel scratch ({numba.get_num_threads()} "
            f"threads x {per_thread / 2**20:.1f} MiB), more than half of the "
            f"{available / 2**30:.2f} GiB available; use fewer threads "
            f"(numba.set_num_threads) or a smaller state")


def histogram_copies():
    """Histogram copies for the CPU: one per possible worker thread (each counts into its
    own, ``numba.get_thread_id()``), summed by the caller."""
    return numba.config.NUMBA_NUM_THREADS


def run(kernel, args):
    """Run a compiled kernel; ``args`` as built by :func:`fastsde.api.simulate`.

    A user function that raises inside the parallel kernel surfaces from Numba's thread
    pool as a bare SystemError; the run is then repeated serially, which raises the
    function's own exception (type and message) instead.

    Chunks go to the threads dynamically, a few at a time (about 8 grabs per thread): on a
    shared machine one core can run slower than the other for a while, and a static split
    would then wait for it. Which thread runs a chunk never changes a result.
    """
    layout.check_args(kernel.sizes, args)
    n_chunks = -(-args.n_paths // args.chunk)
    grab = max(1, n_chunks // (8 * numba.get_num_threads()))
    try:
        with numba.parallel_chunksize(grab):
            kernel(*args)
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # Ctrl-C during the call: stop, do not rerun
        if not kernel.parallel:
            raise
        kernel.run_serially(*args)
        raise


_SOURCE_HASH = _source_hash()
