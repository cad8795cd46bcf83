"""Model descriptions: :class:`SDE`, :class:`ODE` and the in-kernel initial law :class:`Normal`.

A model is a set of plain Python functions ``f(t, x, p, out)`` that write into ``out``
and allocate nothing; fastsde compiles them into its kernels for each target.
"""

import enum
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
CALCULI = ("ito", "stratonovich")
#: Where ``exp``, ``expm1``, ``log``, ``log1p``, ``tanh`` and ``erf`` (``math``'s, or numpy's on a
#: number) in a model's functions come from in the kernels: "fastsde" (fastsde.kmath's branch-free versions, inlined; the same
#: operations on the CPU and CUDA) or "libm" (libm's on the CPU, libdevice's on CUDA).
MATH = ("fastsde", "libm")


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


def _qualified_name(obj):
    """``module.qualname`` of a function, class or ufunc: stable across processes."""
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "")
    return f"{module}.{name}"


def _code_names(code):
    """Every name in ``co_names`` of ``code`` and of the code objects nested in it
    (comprehensions, lambdas): the globals it loads and the attributes it reads."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(n for n in _code_names(const) if n not in names)
    return tuple(names)


def _const_repr(const):
    """repr of a code constant, independent of hash seed (frozenset order)."""
    if isinstance(const, frozenset):
        return "frozenset(" + ",".join(sorted(_const_repr(c) for c in const)) + ")"
    if isinstance(const, tuple):
        return "(" + ",".join(_const_repr(c) for c in const) + ")"
    return repr(const)


class _Fingerprinter:
    """One traversal of the values a function can read (see :func:`code_fingerprint`).

    ``active`` holds the functions and modules on the current path (by id, used only as a
    set key, never hashed) so a recursive function or a module cycle ends the walk;
    ``done`` memoises finished functions, so a helper called from many places is hashed
    once.
    """

    def __init__(self):
        self.active = set()
        self.done = {}

    def function(self, fn):
        fn = getattr(fn, "py_func", fn)
        key = id(fn)
        if key in self.done:
            return self.done[key]
        if key in self.active:
            # A call back into a function being hashed: its code is already in the hash.
            return "recursive:" + _qualified_name(fn)
        self.active.add(key)
        h = hashlib.sha256()
        self._code(h, fn.__code__)
        names = _code_names(fn.__code__)
        builtins = fn.__builtins__ if isinstance(fn.__builtins__, dict) else vars(
            fn.__builtins__)
        for name in names:
            if name in fn.__globals__:
                h.update(b"global:" + name.encode())
                self.value(h, fn.__globals__[name], names)
            elif name in builtins:
                h.update(b"builtin:" + name.encode())
                self.value(h, builtins[name], names)
        for i, cell in enumerate(fn.__closure__ or ()):
            h.update(f"cell{i}:".encode())
            try:
                contents = cell.cell_contents
            except ValueError:  # a cell not yet assigned
                h.update(b"<empty cell>")
                continue
            self.value(h, contents, names)
        for label, defaults in (("defaults", fn.__defaults__),
                                ("kwdefaults", fn.__kwdefaults__)):
            if defaults:
                h.update(label.encode())
                self.value(h, defaults if label == "defaults" else
                           tuple(sorted(defaults.items())), names)
        self.active.discard(key)
        digest = h.hexdigest()
        self.done[key] = digest
        return digest

    def _code(self, h, code):
        h.update(code.co_code)
        h.update(repr(code.co_names).encode())
        h.update(repr(code.co_varnames).encode())
        h.update(repr(code.co_freevars).encode())
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._code(h, const)
            else:
                h.update(_const_repr(const).encode())

    def value(self, h, value, names):
        """Feed ``value`` into ``h``; ``names`` are the attribute names the reading
        function uses, followed on modules (and classes)."""
        inner = getattr(value, "py_func", None)  # a Numba dispatcher: hash its Python code
        if isinstance(inner, types.FunctionType):
            h.update(b"fn:" + self.function(inner).encode())
        elif isinstance(value, types.FunctionType):
            h.update(b"fn:" + self.function(value).encode())
        elif value is None or isinstance(value, (bool, numbers.Number, str, bytes,
                                                 np.generic)):
            # repr keeps the type (1 vs 1.0 vs np.float32(1.0)) and every digit.
            h.update(f"{type(value).__qualname__}:{value!r}".encode())
        elif isinstance(value, np.dtype):
            h.update(f"dtype:{value.str}".encode())
        elif type(value).__module__.startswith("numba.core.types"):
            # A Numba type used as a dtype (numba.float32): its name is what Numba compiles.
            h.update(f"numba-type:{getattr(value, 'name', type(value).__qualname__)}".encode())
        elif isinstance(value, np.ndarray):
            h.update(f"ndarray:{value.dtype.str}:{value.shape}:".encode())
            h.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, tuple):  # named tuples too (their type is part of the key)
            h.update(f"tuple:{_qualified_name(type(value))}:{len(value)}:".encode())
            for item in value:
                self.value(h, item, names)
        elif isinstance(value, enum.Enum):
            h.update(f"enum:{_qualified_name(type(value))}.{value.name}:".encode())
            self.value(h, value.value, names)
        elif isinstance(value, types.ModuleType):
            self._namespace(h, "module:" + value.__name__, value, names)
        elif isinstance(value, type):
            self._namespace(h, "class:" + _qualified_name(value), value, names)
        elif isinstance(value, (types.BuiltinFunctionType, np.ufunc)):
            h.update(f"{type(value).__name__}:{_qualified_name(value)}".encode())
        else:
            # Any other object (an instance of a class, a dict, a list...): by its type only.
            h.update(f"object:{_qualified_name(type(value))}".encode())

    def _namespace(self, h, label, obj, names):
        """A module or class: its name, then every attribute of it whose name the reading
        function uses (``cfg.THETA``, ``cfg.helper``, ``pkg.sub.X``), recursively."""
        h.update(label.encode())
        key = id(obj)
        if key in self.active:
            return
        self.active.add(key)
        space = vars(obj)
        for name in names:
            if name in space:
                h.update(b".attr:" + name.encode())
                self.value(h, space[name], names)
        self.active.discard(key)


def code_fingerprint(fn):
    """A hash of everything a function reads that Numba freezes into a compiled kernel.

    Covered: the function's bytecode, names and constants (nested code objects too); its
    default arguments; its closure cells; the globals and builtins it names; and, for each
    module (or class) reached through those, every attribute whose name appears in the
    function's ``co_names`` (``cfg.THETA``, ``cfg.helper(...)``, ``pkg.sub.X``), followed
    recursively. Values are hashed as follows: numbers, strings, bools and numpy scalars
    by repr (type and every digit); arrays by dtype, shape and bytes; numpy dtypes and
    Numba types by name; tuples (named tuples
    included) item by item; enum members by type, name and value; Python functions and
    Numba dispatchers by this fingerprint of their Python function, recursively; modules
    and classes by name plus the attributes above; builtins and numpy ufuncs by qualified
    name; anything else (an instance of a class, a list, a dict) by its type's qualified
    name only.

    The hash uses no object ids or addresses, so it is the same in every process for the
    same source and values: it keys the in-memory kernel cache and Numba's disk cache.

    Parameters
    ----------
    fn : function or Numba dispatcher

    Returns
    -------
    str
        Hex digest (sha256).
    """
    return _Fingerprinter().function(fn)


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
    #: How the CPU kernel evaluates the drift for a block of paths at once (an
    #: ``mlp.LaneBlockDrift``, set by :class:`fastsde.MLPField` on the models it builds;
    #: a ``lanes.UserLaneBlock`` for a user's drift whose loops stay and have a lane
    #: form), or None: the drift is evaluated path by path.
    lane_block = None

    def _init_common(self, dim, params, name, math="fastsde"):
        if not isinstance(math, str) or math not in MATH:
            raise ValueError(f"math must be one of {MATH}; got {math!r}")
        self.dim = _positive_int(dim, "dim")
        self.params = _params_array(params)
        self.name = name
        self.math = math
        # A drift whose loops stay once unrolled (its trip count read from p, say) gets
        # its lane form: evaluated for a block of paths, the lane loops inside its loops.
        from .kernels import lanes
        self.lane_block = lanes.user_lane_block(self)

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
                                 self.n_params, self.math)).encode())
        for role, fn in self.functions:
            h.update(role.encode())
            h.update(code_fingerprint(fn).encode())
        if self.lane_block is not None:
            h.update(self.lane_block.key.encode())
        return h.hexdigest()

    def __repr__(self):
        return self.name


class SDE(_Model):
    """A stochastic differential equation dX = f(t, X) dt + g(t, X) dW, in the Ito sense
    (default) or the Stratonovich sense (``calculus="stratonovich"``, dX = f dt + g o dW).

    Parameters
    ----------
    drift : function ``drift(t, x, p, out)``
        Writes f(t, x) into ``out`` (shape (dim,)). ``p`` holds the parameters (n_params,).
        ``out`` is zero when the function is called (here and for the diffusion): entries
        left unwritten are zero.
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
    calculus : {"ito", "stratonovich"}
        The sense of the stochastic integral. A method of the other calculus is refused
        (``IncompatibleMethodError``) unless the noise is additive, where the two agree.
    math : {"fastsde", "libm"}
        "fastsde" (the default): ``exp``, ``expm1``, ``log``, ``log1p``, ``tanh`` and
        ``erf`` (``math.exp`` or ``numpy.exp`` of a number) in the model's functions are
        compiled as :mod:`fastsde.kmath`'s (branch-free, within 2 ulp, inlined into the
        CPU kernel's step, where libm's are calls), in each
        function that has no loop left once its constant loops are unrolled, and in a
        drift whose loops stay but that has a lane form (evaluated for a block of paths,
        ``fastsde/kernels/lanes.py``; docs/performance.md). "libm": as written, libm's
        bits on the CPU (libdevice's on CUDA), and no lane form. Plain-Python calls of
        the functions use libm either way.
    """

    kind = "sde"

    def __init__(self, drift, diffusion, dim, noise="diagonal", noise_dim=None,
                 params=None, name=None, calculus="ito", math="fastsde"):
        self.drift = _plain_function(drift, "drift")
        self.diffusion = _plain_function(diffusion, "diffusion")
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}; got {noise!r}")
        if not isinstance(calculus, str) or calculus not in CALCULI:
            raise ValueError(f"calculus must be one of {CALCULI}; got {calculus!r}")
        self.calculus = calculus
        in_calculus = ", calculus='stratonovich'" if calculus == "stratonovich" else ""
        self._init_common(dim, params, name or f"SDE({self.drift.__name__}, "
                                                f"{self.diffusion.__name__}, dim={dim}, "
                                                f"noise={noise!r}{in_calculus})", math)
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
        Writes u(t, x) into ``out`` (shape (dim,)), which is zero when it is called.
    dim : int
    params : array_like, shape (n_params,), optional
    name : str, optional
    math : {"fastsde", "libm"}
        As for :class:`SDE`.
    """

    kind = "ode"
    noise = None
    noise_dim = 0
    diffusion = None

    def __init__(self, drift, dim, params=None, name=None, math="fastsde"):
        self.drift = _plain_function(drift, "drift")
        self._init_common(dim, params, name or f"ODE({self.drift.__name__}, dim={dim})",
                          math)

    @property
    def functions(self):
        return (("drift", self.drift),)

    diffusion_shape = (0,)
