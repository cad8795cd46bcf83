"""Model descriptions: :class:`SDE`, :class:`ODE` and the in-kernel initial law :class:`Normal`.

A model is a set of plain Python functions ``f(t, x, p, out)`` that write into ``out``
and allocate nothing; fastsde compiles them into its kernels for each target.
"""

import hashlib
import inspect
import numbers
import types

import numpy as np

from .errors import ModelError

#: Noise kinds: additive (sigma depends on t only), diagonal (one Wiener process per
#: component, sigma_i(t, x)), scalar (one Wiener process shared by all components),
#: general (sigma is dim x noise_dim).
NOISE_KINDS = ("additive", "diagonal", "scalar", "general")


def _plain_function(fn, role):
    """The Python function behind ``fn`` (unwrapping a Numba dispatcher), checked for arity."""
    py_func = getattr(fn, "py_func", fn)
    if not callable(fn) or not isinstance(py_func, types.FunctionType):
        raise ModelError(f"{role} must be a plain Python function f(t, x, p, out); "
                         f"got {fn!r} of type {type(fn).__name__}")
    params = [p for p in inspect.signature(py_func).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    others = [p for p in inspect.signature(py_func).parameters.values()
              if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) != 4 or others:
        raise ModelError(f"{role} function {py_func.__name__!r} must take exactly four "
                         f"arguments (t, x, p, out); it takes "
                         f"{inspect.signature(py_func)}")
    return py_func


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _params_array(params, name="params"):
    if params is None:
        return np.zeros(0, dtype=np.float64)
    try:
        arr = np.asarray(params, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D sequence of numbers; got {params!r}") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_params,); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got {arr.tolist()}")
    return arr


def code_fingerprint(fn, _seen=None):
    """A hash of a function's code, constants, closure values and the simple globals and
    functions it refers to, so that a compiled kernel is reused only for the same math.

    Parameters
    ----------
    fn : function

    Returns
    -------
    str
        Hex digest.
    """
    seen = set() if _seen is None else _seen
    h = hashlib.sha256()

    def feed_code(code):
        h.update(code.co_code)
        h.update(repr(code.co_names).encode())
        h.update(repr(code.co_varnames).encode())
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                feed_code(const)
            else:
                h.update(repr(const).encode())

    fn = getattr(fn, "py_func", fn)
    if id(fn) in seen:
        return "recursive"
    seen.add(id(fn))
    feed_code(fn.__code__)
    refs = []
    for name in fn.__code__.co_names:
        if name in fn.__globals__:
            refs.append((name, fn.__globals__[name]))
    if fn.__closure__:
        refs.extend((f"cell{i}", c.cell_contents) for i, c in enumerate(fn.__closure__))
    for name, value in refs:
        h.update(name.encode())
        inner = getattr(value, "py_func", value)
        if isinstance(inner, types.FunctionType):
            h.update(code_fingerprint(inner, seen).encode())
        elif isinstance(value, (numbers.Number, str, bytes, tuple, np.generic)):
            h.update(repr(value).encode())
        elif isinstance(value, np.ndarray):
            h.update(value.tobytes())
            h.update(repr((value.dtype, value.shape)).encode())
        elif isinstance(value, types.ModuleType):
            h.update(value.__name__.encode())
        else:
            h.update(type(value).__qualname__.encode())
    return h.hexdigest()


class Normal:
    """Initial law N(mean, diag(std^2)), drawn inside the kernel from each path's own stream.

    Parameters
    ----------
    mean : float or array_like, shape (dim,)
    std : float or array_like, shape (dim,)
        Non-negative.
    """

    def __init__(self, mean=0.0, std=1.0):
        mean_arr = np.asarray(mean, dtype=np.float64)
        std_arr = np.asarray(std, dtype=np.float64)
        for name, arr in (("mean", mean_arr), ("std", std_arr)):
            if arr.ndim > 1:
                raise ValueError(f"Normal {name} must be a number or a 1-D array (dim,); "
                                 f"got shape {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"Normal {name} must be finite; got {arr.tolist()}")
        if np.any(std_arr < 0):
            raise ValueError(f"Normal std must be >= 0; got {std_arr.tolist()}")
        self.mean = mean_arr
        self.std = std_arr

    def __repr__(self):
        return f"Normal(mean={self.mean.tolist()}, std={self.std.tolist()})"


class _Model:
    kind = None

    def _init_common(self, dim, params, name):
        self.dim = _positive_int(dim, "dim")
        self.params = _params_array(params)
        self.name = name

    @property
    def drift_cost(self):
        """Rough relative cost of one step (dimension), used to size kernel calls."""
        return self.dim

    @property
    def n_params(self):
        return self.params.shape[0]

    @property
    def functions(self):
        """(role, plain function) pairs that the kernels compile."""
        raise NotImplementedError

    @property
    def fingerprint(self):
        """Hash of everything that shapes the compiled kernel (not parameter values)."""
        # n_params sizes the kernel's on-stack parameter copy, so it is part of the key.
        h = hashlib.sha256(repr((self.kind, self.dim, self.noise, self.noise_dim,
                                 self.n_params)).encode())
        for role, fn in self.functions:
            h.update(role.encode())
            h.update(code_fingerprint(fn).encode())
        return h.hexdigest()

    def __repr__(self):
        return self.name


class SDE(_Model):
    """A stochastic differential equation dX = f(t, X) dt + g(t, X) dW (Ito).

    Parameters
    ----------
    drift : function ``drift(t, x, p, out)``
        Writes f(t, x) into ``out`` (shape (dim,)). ``p`` holds the parameters (n_params,).
    diffusion : function ``diffusion(t, x, p, out)``
        Writes g(t, x) into ``out``: shape (dim,) for additive, diagonal and scalar noise,
        (dim, noise_dim) for general noise. For additive noise it must not depend on x.
    dim : int
        State dimension.
    noise : {"additive", "diagonal", "scalar", "general"}
    noise_dim : int, optional
        Number of Wiener processes: dim for additive/diagonal, 1 for scalar, required for
        general.
    params : array_like, shape (n_params,), optional
        Default parameters; ``simulate(params=...)`` overrides them.
    name : str, optional
    """

    kind = "sde"

    def __init__(self, drift, diffusion, dim, noise="diagonal", noise_dim=None,
                 params=None, name=None):
        self.drift = _plain_function(drift, "drift")
        self.diffusion = _plain_function(diffusion, "diffusion")
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}; got {noise!r}")
        self._init_common(dim, params, name or f"SDE({self.drift.__name__}, "
                                                f"{self.diffusion.__name__}, dim={dim}, "
                                                f"noise={noise!r})")
        expected = {"additive": self.dim, "diagonal": self.dim, "scalar": 1}.get(noise)
        if noise == "general":
            if noise_dim is None:
                raise ValueError("noise_dim is required for noise='general'")
            noise_dim = _positive_int(noise_dim, "noise_dim")
        elif noise_dim is None:
            noise_dim = expected
        elif noise_dim != expected:
            raise ValueError(f"noise_dim must be {expected} for noise={noise!r} with "
                             f"dim={self.dim}; got {noise_dim!r}")
        self.noise = noise
        self.noise_dim = int(noise_dim)

    @property
    def functions(self):
        return (("drift", self.drift), ("diffusion", self.diffusion))

    @property
    def diffusion_shape(self):
        """Shape of the ``out`` array the diffusion function fills."""
        if self.noise == "general":
            return (self.dim, self.noise_dim)
        return (self.dim,)


class ODE(_Model):
    """An ordinary differential equation dX/dt = u(t, X).

    Parameters
    ----------
    drift : function ``drift(t, x, p, out)``
        Writes u(t, x) into ``out`` (shape (dim,)).
    dim : int
    params : array_like, shape (n_params,), optional
    name : str, optional
    """

    kind = "ode"
    noise = None
    noise_dim = 0
    diffusion = None

    def __init__(self, drift, dim, params=None, name=None):
        self.drift = _plain_function(drift, "drift")
        self._init_common(dim, params, name or f"ODE({self.drift.__name__}, dim={dim})")

    @property
    def functions(self):
        return (("drift", self.drift),)

    diffusion_shape = (0,)
