"""Math for user functions that vectorises: ``exp``, ``expm1``, ``log``, ``log1p``, ``tanh``,
``erf``, ``sin``, ``cos``, ``pow``, ``sigmoid``, ``silu`` and ``gelu`` as fastsde's own branch-free implementations
(:mod:`fastsde.kernels.fmath`), and ``fma``, the fused multiply-add.

``math.exp`` and ``math.tanh`` in a function compiled into a kernel are calls into libm
(libdevice on CUDA): a loop that contains one does not vectorise, and the CPU and a GPU
round them differently. These names, imported into a model's module
(``from fastsde.kmath import exp, tanh``), compile inline on the CPU and as CUDA device
functions and run as plain Python (numpy) too, with the same operations in the same
order on each. A float32 argument is computed in float32 (8 lanes per AVX2 register),
anything else in float64. Errors are at most :data:`fastsde.kernels.fmath.MAX_ULP`
ulps (tests/test_fmath.py); docs/performance.md has the measured figures.

In a model's ``drift`` or ``diffusion`` compiled into a CPU kernel they are inlined at
Numba's level, with the function's small constant loops unrolled
(:mod:`fastsde.kernels.unroll`), which lets a loop over a mixture's components run as
straight-line code; elsewhere they are calls that LLVM inlines.

Importing this module teaches Numba's CPU target these names. fastsde's CUDA kernels
register them with numba-cuda themselves; to compile a function that calls them with
``numba.cuda.jit`` yourself, call :func:`register_cuda` first.
"""

import numpy as np

from .kernels import bits as _bits
from .kernels import fmath as _fmath

#: Public name -> (the float32 version, the float64 version) in fmath.
NAMES = {"exp": ("exp_f32", "exp_f64"), "expm1": ("expm1_f32", "expm1_f64"),
         "log": ("log_f32", "log_f64"), "log1p": ("log1p_f32", "log1p_f64"),
         "tanh": ("tanh_f32", "tanh_f64"), "erf": ("erf_f32", "erf_f64"),
         "sin": ("sin_f32", "sin_f64"), "cos": ("cos_f32", "cos_f64"),
         "sigmoid": ("sigmoid_f32", "sigmoid_f64"), "silu": ("silu_f32", "silu_f64"),
         "gelu": ("gelu_f32", "gelu_f64")}


def _is_float32(x):
    return isinstance(x, np.float32) or (isinstance(x, np.ndarray) and x.dtype == np.float32)


def _plain(x, f32, f64):
    if _is_float32(x):
        return getattr(_fmath, f32)(x)
    return getattr(_fmath, f64)(x)


def _plain_pow(x, y):
    # An integer exponent keeps Python's / numpy's own power (as compiled: Numba's).
    if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
        return x ** y
    if _is_float32(x) and _is_float32(y):
        return _fmath.pow_f32(x, y)
    return _fmath.pow_f64(x, y)


def exp(x):
    """e^x (float32 for a float32 argument, else float64)."""
    return _plain(x, *NAMES["exp"])


def expm1(x):
    """e^x - 1, accurate near 0 (float32 for a float32 argument, else float64)."""
    return _plain(x, *NAMES["expm1"])


def log(x):
    """ln x (float32 for a float32 argument, else float64); -inf at 0, nan below."""
    return _plain(x, *NAMES["log"])


def log1p(x):
    """ln(1 + x), accurate near 0 (float32 for a float32 argument, else float64); -inf at
    -1, nan below."""
    return _plain(x, *NAMES["log1p"])


def tanh(x):
    """tanh(x) (float32 for a float32 argument, else float64)."""
    return _plain(x, *NAMES["tanh"])


def erf(x):
    """The error function (float32 for a float32 argument, else float64); +-1 at +-inf."""
    return _plain(x, *NAMES["erf"])


def sin(x):
    """sin x (float32 for a float32 argument, else float64), every argument reduced
    exactly: no loss of accuracy for large x; nan at +-inf."""
    return _plain(x, *NAMES["sin"])


def cos(x):
    """cos x, as :func:`sin`."""
    return _plain(x, *NAMES["cos"])


def pow(x, y):  # noqa: A001 - the name users know, as math.pow
    """x^y with C99's special cases (float32 when both are float32, else float64); an
    integer y keeps the language's own power. Within 1 ulp."""
    return _plain_pow(x, y)


def sigmoid(x):
    """1 / (1 + e^-x), without overflow for any x."""
    return _plain(x, *NAMES["sigmoid"])


def silu(x):
    """x sigmoid(x) (SiLU, swish)."""
    return _plain(x, *NAMES["silu"])


def gelu(x):
    """GELU's tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), computed as
    x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)) (no cancellation for negative x)."""
    return _plain(x, *NAMES["gelu"])


def fma(a, b, c):
    """``a * b + c`` rounded once (IEEE 754's fusedMultiplyAdd): float32 when all three
    are float32, else float64. One instruction on the CPU (``llvm.fma``) and on CUDA
    (``fma.rn``), exact in plain Python too, so the same bits everywhere; a product and a
    sum written out round twice (and fastsde never contracts them itself)."""
    if _is_float32(a) and _is_float32(b) and _is_float32(c):
        return _bits.fma_f32(a, b, c)
    return _bits.fma_f64(a, b, c)


def _stand_in(name, role, doc):
    if name == "fma":
        def stand_in(a, b, c):
            return fma(a, b, c)
    elif name == "pow":
        def stand_in(x, y):
            return _plain_pow(x, y)
    else:
        def stand_in(x):
            return _plain(x, *NAMES[name])
    stand_in.__name__ = stand_in.__qualname__ = f"{role}_{name}"
    stand_in.__doc__ = f":func:`{name}`, {doc}"
    return stand_in


#: {name: function}: stand-ins for the public functions that the CPU kernel compiles
#: into users' functions in their place (kernels.unroll), inlined by LLVM before the
#: kernel's loops are vectorised (register_cpu); the same operations.
INLINE = {name: _stand_in(name, "inline", "inlined into CPU kernels before vectorising.")
          for name in (*NAMES, "pow")}
#: {name: function}: the same for MLPField's layer loops, which vectorise across the
#: units: calls that LLVM inlines when it optimises the kernel, as the public names are
#: outside users' functions. Names of their own keep the kernel's rewrite from swapping
#: them for INLINE's: inlined at Numba's level (INLINE's earlier form), a 3-64-64-2 tanh
#: network ran at 7.7e5 path-steps/s against 4.2e6 (float32, Euler, 10^5 paths x 8
#: steps, 2 threads, AVX2).
UNITS = {name: _stand_in(name, "units", "for MLPField's layer loops.")
         for name in ("tanh", "silu", "gelu", "fma")}


def inline_replacements():
    """{public function: its :data:`INLINE` stand-in}, for ``kernels.unroll``."""
    return {globals()[name]: INLINE[name] for name in (*NAMES, "pow")}


#: The functions a model with ``math="fastsde"`` gets from here instead, in both
#: spellings: ``math.exp`` and ``numpy.exp`` (on a number; ``numpy.exp`` of an array is
#: numpy's); numpy has no erf, and spells pow ``power``. ``x ** y`` is rewritten as
#: ``pow(x, y)`` too unless y is an integer literal (kernels.unroll).
LOWERED = ("exp", "expm1", "log", "log1p", "tanh", "erf", "sin", "cos", "pow")
_NUMPY_SPELLING = {"pow": "power"}


def lowering(inline):
    """{math or numpy function: its replacement} for models with ``math="fastsde"``: the
    :data:`INLINE` stand-ins (``inline``, CPU kernels) or the public functions (CUDA)."""
    import math

    replacements = {}
    for name in LOWERED:
        replacement = INLINE[name] if inline else globals()[name]
        replacements[getattr(math, name)] = replacement
        numpy_name = _NUMPY_SPELLING.get(name, name)
        if hasattr(np, numpy_name):
            replacements[getattr(np, numpy_name)] = replacement
    return replacements


_REGISTERED = {}


def _overload_with(overload, public, compiled_f32, compiled_f64, float32, number_types,
                   array_type=None, ufunc=None, **options):
    @overload(public, jit_options={"error_model": "numpy"}, **options)
    def _typer(x):
        if x == float32:
            return lambda x: compiled_f32(x)
        if isinstance(x, number_types):
            return lambda x: compiled_f64(x)
        # numpy.exp(array) in a user's function, whose numpy.exp the kernel replaced by a
        # stand-in: numpy's, as written.
        if ufunc is not None and isinstance(x, array_type):
            return lambda x: ufunc(x)
    return _typer


def _overload_fma(overload, public, fma_f32, fma_f64, types, **options):
    """``public(a, b, c)`` as one fused multiply-add: ``fma_f32`` when all three are
    float32, else ``fma_f64`` on the arguments converted to float64."""
    @overload(public, jit_options={"error_model": "numpy"}, **options)
    def _typer(a, b, c):
        if a == b == c == types.float32:
            return lambda a, b, c: fma_f32(a, b, c)
        numbers = (types.Float, types.Integer)
        if all(isinstance(v, numbers) for v in (a, b, c)):
            return lambda a, b, c: fma_f64(np.float64(a), np.float64(b), np.float64(c))
    return _typer


def _overload_pow(overload, public, compiled_f32, compiled_f64, float32, types,
                  ufunc=None, **options):
    @overload(public, jit_options={"error_model": "numpy"}, **options)
    def _typer(x, y):
        numbers = (types.Float, types.Integer)
        if isinstance(y, types.Integer) and isinstance(x, numbers):
            # An integer exponent: the language's own power (repeated products).
            return lambda x, y: x ** y
        if x == float32 and y == float32:
            return lambda x, y: compiled_f32(x, y)
        if isinstance(x, numbers) and isinstance(y, numbers):
            return lambda x, y: compiled_f64(x, y)
        if ufunc is not None and (isinstance(x, types.Array) or isinstance(y, types.Array)):
            return lambda x, y: ufunc(x, y)
    return _typer


def register_cpu():
    """Let Numba's CPU target compile these names (once per process)."""
    if "cpu" in _REGISTERED:
        return
    from numba import njit, types
    from numba.core.extending import overload

    from .kernels import bits
    from .kernels.target import compile_functions

    calls = compile_functions(_fmath, _fmath.FUNCTIONS, njit(error_model="numpy"),
                              bits.cpu_primitives())
    for public, (f32, f64) in NAMES.items():
        _overload_with(overload, globals()[public], getattr(calls, f32),
                       getattr(calls, f64), types.float32, (types.Float, types.Integer))
    _overload_pow(overload, pow, calls.pow_f32, calls.pow_f64, types.float32, types)
    # INLINE's stand-ins, which the CPU kernel puts in place of the public names in users'
    # functions (kernels.unroll), call a version of each function that is compiled once
    # (its helpers inlined at Numba's level) and marked for LLVM to inline into its
    # callers before their loops are vectorised (cpu._inline_into_callers, as the RNG's
    # lane loops). Left as plain calls (the public names), LLVM inlined them too late
    # for the loop passes: an 8-bump field calling exp in its loop over the bumps ran at
    # 2.2e7 path-steps/s, against 1.27e8 inlined with the loop unrolled (float32, Euler,
    # 2 threads, AVX2; 5.8e7 with libm's exp). Inlined at Numba's level instead (the
    # previous version), each call site typed the whole function again: that field's
    # first result took 10.6 s, 6.9 s marked (float32), at the same speed. They are kept
    # apart from the public names because numba-cuda then resolved a public name to the
    # CPU's overload and failed to type it.
    from .kernels.cpu import _inline_into_callers

    inline = compile_functions(_fmath, _fmath.FUNCTIONS,
                               njit(inline="always", error_model="numpy"),
                               bits.cpu_primitives())

    def marked(body):
        def inlined_by_llvm(x):
            _inline_into_callers()
            return body(x)
        return njit(error_model="numpy")(inlined_by_llvm)

    for public, (f32, f64) in NAMES.items():
        _overload_with(overload, INLINE[public], marked(getattr(inline, f32)),
                       marked(getattr(inline, f64)), types.float32,
                       (types.Float, types.Integer), types.Array,
                       getattr(np, public, None), inline="always")

    def marked_pow(body):
        def inlined_by_llvm(x, y):
            _inline_into_callers()
            return body(x, y)
        return njit(error_model="numpy")(inlined_by_llvm)

    _overload_pow(overload, INLINE["pow"], marked_pow(inline.pow_f32),
                  marked_pow(inline.pow_f64), types.float32, types, np.power,
                  inline="always")
    cpu_fma = bits.cpu_primitives()
    for public in (fma, UNITS["fma"]):
        _overload_fma(overload, public, cpu_fma["fma_f32"], cpu_fma["fma_f64"], types,
                      inline="always")
    for name, stand_in in UNITS.items():
        if name == "fma":
            continue
        f32, f64 = NAMES[name]
        _overload_with(overload, stand_in, getattr(calls, f32), getattr(calls, f64),
                       types.float32, (types.Float, types.Integer))
    _REGISTERED["cpu"] = True


def register_cuda():
    """The same for numba-cuda (once per process; nothing under the simulator, which runs
    the plain Python versions, or without numba-cuda). Returns whether CUDA kernels can
    call them."""
    if "cuda" in _REGISTERED:
        return _REGISTERED["cuda"]
    try:
        from numba.cuda import types as ctypes
        from numba.cuda.extending import overload as cuda_overload
    except Exception:  # noqa: BLE001 - numba-cuda absent or of another layout
        _REGISTERED["cuda"] = False
        return False
    from .kernels import cuda as kcuda
    if kcuda.simulator_enabled():
        _REGISTERED["cuda"] = True
        return True
    from .kernels.target import compile_functions

    jit = kcuda.device_jit(False)
    ns = compile_functions(_fmath, _fmath.FUNCTIONS, jit, kcuda.device_primitives(jit))
    for public, (f32, f64) in NAMES.items():
        _overload_with(cuda_overload, globals()[public], getattr(ns, f32), getattr(ns, f64),
                       ctypes.float32, (ctypes.Float, ctypes.Integer))
    _overload_pow(cuda_overload, pow, ns.pow_f32, ns.pow_f64, ctypes.float32, ctypes)
    from numba.cuda import libdevice
    for public in (fma, UNITS["fma"]):
        _overload_fma(cuda_overload, public, libdevice.fmaf, libdevice.fma, ctypes)
    for name, stand_in in UNITS.items():
        if name == "fma":
            continue
        f32, f64 = NAMES[name]
        _overload_with(cuda_overload, stand_in, getattr(ns, f32), getattr(ns, f64),
                       ctypes.float32, (ctypes.Float, ctypes.Integer))
    _REGISTERED["cuda"] = True
    return True


register_cpu()
