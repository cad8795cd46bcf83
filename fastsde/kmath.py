"""Math for user functions that vectorises: ``exp``, ``log``, ``tanh``, ``sigmoid``, ``silu`` and
``gelu`` as fastsde's own branch-free implementations (:mod:`fastsde.kernels.fmath`).

``math.exp`` and ``math.tanh`` in a function compiled into a kernel are calls into libm
(libdevice on CUDA): a loop that contains one does not vectorise, and the CPU and a GPU
round them differently. These names, imported into a model's module
(``from fastsde.kmath import exp, tanh``), compile inline on the CPU and as CUDA device
functions and run as plain Python (numpy) too, with the same operations in the same
order on each. A float32 argument is computed in float32 (8 lanes per AVX2 register),
anything else in float64. Errors are at most :data:`fastsde.kernels.fmath.MAX_ULP`
ulps (tests/test_fmath.py); docs/performance.md has the measured figures.

Importing this module teaches Numba's CPU target these names. fastsde's CUDA kernels
register them with numba-cuda themselves; to compile a function that calls them with
``numba.cuda.jit`` yourself, call :func:`register_cuda` first.
"""

import numpy as np

from .kernels import fmath as _fmath

#: Public name -> (the float32 version, the float64 version) in fmath.
NAMES = {"exp": ("exp_f32", "exp_f64"), "log": ("log_f32", "log_f64"),
         "tanh": ("tanh_f32", "tanh_f64"),
         "sigmoid": ("sigmoid_f32", "sigmoid_f64"), "silu": ("silu_f32", "silu_f64"),
         "gelu": ("gelu_f32", "gelu_f64")}


def _plain(x, f32, f64):
    if isinstance(x, np.float32) or (isinstance(x, np.ndarray) and x.dtype == np.float32):
        return getattr(_fmath, f32)(x)
    return getattr(_fmath, f64)(x)


def exp(x):
    """e^x (float32 for a float32 argument, else float64)."""
    return _plain(x, *NAMES["exp"])


def log(x):
    """ln x (float32 for a float32 argument, else float64); -inf at 0, nan below."""
    return _plain(x, *NAMES["log"])


def tanh(x):
    """tanh(x) (float32 for a float32 argument, else float64)."""
    return _plain(x, *NAMES["tanh"])


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


_REGISTERED = {}


def _overload_with(overload, public, compiled_f32, compiled_f64, float32, number_types):
    @overload(public, jit_options={"error_model": "numpy"})
    def _typer(x):
        if x == float32:
            return lambda x: compiled_f32(x)
        if isinstance(x, number_types):
            return lambda x: compiled_f64(x)
    return _typer


def register_cpu():
    """Let Numba's CPU target compile these names (once per process)."""
    if "cpu" in _REGISTERED:
        return
    from numba import njit, types
    from numba.core.extending import overload

    from .kernels import bits
    from .kernels.target import compile_functions

    ns = compile_functions(_fmath, _fmath.FUNCTIONS,
                           njit(error_model="numpy"),
                           bits.cpu_primitives())
    for public, (f32, f64) in NAMES.items():
        _overload_with(overload, globals()[public], getattr(ns, f32), getattr(ns, f64),
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
    _REGISTERED["cuda"] = True
    return True


register_cpu()
