"""Neural vector fields: a multilayer perceptron u_t(x) = MLP([x, t]) evaluated in the kernel.

A flow-matching network trained in PyTorch or JAX is a few weight matrices; exported to
``.npz`` they become an :class:`MLPField` whose forward pass runs inside fastsde's kernels,
so a million particles are sampled without a Python loop or a framework on the path.

How the forward pass is compiled: the kernels call user functions ``f(t, x, p, out)`` that
allocate nothing (the same source is compiled as a CUDA device function, where there is no
heap). The hidden activations live in two fixed-size scratch arrays from
:func:`fastsde.scratch.local_array` (stack on the CPU, per-thread local memory on CUDA);
layer widths and the activation are closure constants of the drift (so Numba compiles
them in), and the weight values travel in ``params`` (shared by all paths, or one row per
path). One compiled kernel serves every network of the same shape and activation.
"""

import math
import numbers
import os

import numpy as np

from .generative import _check_sigma, gm_path_sigma
from .model import ODE, SDE
from .scratch import local_array, register

ACTIVATIONS = ("tanh", "relu", "silu", "swish", "gelu")
#: Where the activations' tanh and exp come from: "fastsde" (:mod:`fastsde.kmath`,
#: vectorised across a layer's units, the same operations on every target) or "libm"
#: (``math.tanh`` and ``math.exp``: libm's bits on the CPU, libdevice's on CUDA).
MATH = ("fastsde", "libm")
_ACT_CODE = {"tanh": 0, "relu": 1, "silu": 2, "swish": 2, "gelu": 3}

# sqrt(2 / pi), for the tanh approximation of GELU (PyTorch's approximate="tanh").
_GELU_C = math.sqrt(2.0 / math.pi)


def _act_numpy(name, z):
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name in ("silu", "swish"):
        with np.errstate(over="ignore"):
            return z / (1.0 + np.exp(-z))
    if name == "gelu":
        return 0.5 * z * (1.0 + np.tanh(_GELU_C * (z + 0.044715 * z**3)))
    raise ValueError(name)


def _check_layers(layers):
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__len__") or len(layers) == 0:
        raise ValueError(f"layers must be a non-empty list of (W, b) pairs; got {layers!r}")
    checked = []
    for i, layer in enumerate(layers):
        try:
            w, b = layer
        except (TypeError, ValueError):
            raise ValueError(f"layers[{i}] must be a pair (W, b); got {layer!r}") from None
        try:
            w = np.asarray(w, dtype=np.float64)
            b = np.asarray(b, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"layers[{i}] must hold arrays of real numbers") from None
        if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
            raise ValueError(f"layers[{i}] W must be 2-D (out_features, in_features); got "
                             f"shape {w.shape}")
        if b.shape != (w.shape[0],):
            raise ValueError(f"layers[{i}] b must have shape ({w.shape[0]},) to match W of "
                             f"shape {w.shape}; got shape {b.shape}")
        if i > 0 and w.shape[1] != checked[-1][0].shape[0]:
            raise ValueError(f"layers[{i}] W has {w.shape[1]} inputs but layers[{i - 1}] "
                             f"has {checked[-1][0].shape[0]} outputs")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
            raise ValueError(f"layers[{i}] must be finite")
        checked.append((w, b))
    n_in, n_out = checked[0][0].shape[1], checked[-1][0].shape[0]
    if n_in != n_out + 1:
        raise ValueError(f"the first layer takes {n_in} inputs and the last gives {n_out} "
                         f"outputs; an MLP field on R^d takes d + 1 inputs [x, t] and gives d "
                         f"outputs")
    return checked


def make_mlp_drift(widths, activation, math_source="fastsde"):
    """The kernel function ``drift(t, x, p, out)`` of an MLP with layer ``widths``.

    Parameters
    ----------
    widths : tuple of int
        (d + 1, hidden..., d).
    activation : str
        One of :data:`ACTIVATIONS`.
    math_source : {"fastsde", "libm"}
        See :data:`MATH`.

    Returns
    -------
    function
        Plain Python, allocation-free when compiled. ``p`` holds the weights packed layer
        by layer: W_i transposed, i.e. W_i^T row-major of shape (widths[i], widths[i + 1]),
        then b_i; entries after them are ignored (a diffusion's noise schedule).
    """
    widths = tuple(int(w) for w in widths)
    n_layers = len(widths) - 1
    d = widths[-1]
    width_max = max(widths)
    act = _ACT_CODE[activation]
    gelu_c = _GELU_C
    own_math = math_source == "fastsde"
    # Imported here, not with fastsde: registering kmath with Numba is only needed once a
    # network is built.
    from . import kmath
    k_tanh, k_silu, k_gelu = kmath.UNITS["tanh"], kmath.UNITS["silu"], kmath.UNITS["gelu"]
    k_fma = kmath.UNITS["fma"]

    def mlp_drift(t, x, p, out):
        a = local_array(width_max, p)
        b = local_array(width_max, p)
        for i in range(d):
            a[i] = x[i]
        a[d] = t
        off = 0
        for li in range(n_layers):
            n_in = widths[li]
            n_out = widths[li + 1]
            b_off = off + n_in * n_out
            for o in range(n_out):
                b[o] = p[b_off + o]
            # z = W a + b as a sum of columns (W^T stored row by row): each output keeps
            # its own accumulator in input order, so the loop over outputs vectorises
            # without reassociating any sum. With fastsde's math each product is added
            # by a fused multiply-add (one rounding, the same bits on every target; half
            # the operations of a product and a sum); libm's keeps them apart.
            for i in range(n_in):
                ai = a[i]
                row = off + i * n_out
                for o in range(n_out):
                    if own_math:
                        b[o] = k_fma(p[row + o], ai, b[o])
                    else:
                        b[o] += p[row + o] * ai
            off = b_off + n_out
            if li == n_layers - 1:
                for o in range(n_out):
                    out[o] = b[o]
            else:
                for o in range(n_out):
                    z = b[o]
                    # own_math: a compile-time constant, so the libm branches are pruned
                    # before typing. fastsde.kmath computes in z's dtype, without calls,
                    # so this loop over units vectorises.
                    if own_math and act == 0:
                        a[o] = k_tanh(z)
                    elif own_math and act == 2:
                        a[o] = k_silu(z)
                    elif own_math and act == 3:
                        a[o] = k_gelu(z)
                    elif act == 0:
                        a[o] = math.tanh(z)
                    elif act == 1:
                        a[o] = z if z > 0.0 else 0.0
                    elif act == 2:
                        # Guarded so that plain Python (which raises on exp overflow)
                        # agrees with the kernels; below -700, z sigmoid(z) < 1e-300.
                        a[o] = z / (1.0 + math.exp(-z)) if z > -700.0 else 0.0
                    else:
                        a[o] = 0.5 * z * (1.0 + math.tanh(gelu_c * (z + 0.044715 * z * z * z)))

    # Its indices follow from ``widths`` (checked when the network was built), and the
    # model's dim and declared parameter count fix x and p: the pre-flight skips it.
    mlp_drift.__fastsde_checked__ = True
    return mlp_drift


_TILE_FMA = []


def _tile_fma():
    """``fma(a, b, c)`` for the lane-block tiles (CPU only): :func:`fastsde.kmath.fma` in
    plain Python, and compiled one ``llvm.fma`` of the arguments' type lowered in place
    (Numba's low-level extension API), so the tile's lane loop holds only loads, FMAs and
    stores, with no call for LLVM to inline first."""
    if _TILE_FMA:
        return _TILE_FMA[0]
    from numba import types
    from numba.extending import lower_builtin, type_callable

    from . import kmath
    from .kernels.bits import llvm_fma

    def tile_fma(a, b, c):
        return kmath.fma(a, b, c)

    @type_callable(tile_fma)
    def _type(context):
        def typer(a, b, c):
            if a == b == c and a in (types.float32, types.float64):
                return a
        return typer

    @lower_builtin(tile_fma, types.Float, types.Float, types.Float)
    def _lower(context, builder, sig, args):
        return llvm_fma(builder, context.get_value_type(sig.return_type), args)

    _TILE_FMA.append(tile_fma)
    return tile_fma


#: The lane-block forward pass's register tile: this many outputs and inputs per pass
#: over a block's lanes. Measured on a 2-core Xeon with AVX-512, 64 lanes, tanh,
#: path-steps/s of the forward pass alone (float32 / float64): 3-256-256-2 with 4 x 4
#: 7.4e5 / 3.5e5, 2 x 4 6.4e5 / 3.4e5, 1 x 8 5.7e5 / 2.3e5, 2 x 8 6.1e5 / 3.7e5; one
#: output and input at a time (the accumulators then go through memory at every input)
#: 3.5e5 / 8.7e4.
BLOCK_TILE = (4, 4)


def _panel_source(n_outputs, n_inputs, fused):
    """Source of ``panel(A, p, off, n_out, o, i, B, lanes)``: for outputs o..o+n_outputs-1,
    add the products of inputs i..i+n_inputs-1 to B, for every lane; ``fused``: each by
    a fused multiply-add ``fma(w, a, z)`` (the name bound by the caller), as the one-path
    pass with fastsde's math.

    Generated, not written out, because its weights must be scalars held across the lane
    loop (n_outputs x n_inputs of them) and its partial sums locals, in the order the
    one-path forward pass adds them: each output's sum takes its inputs one at a time in
    input order, so the bits are those of :func:`make_mlp_drift`. Numba runs no SLP
    vectoriser, so the lane loop is what vectorises; reading each input row once for
    n_outputs outputs and storing each output row once per n_inputs inputs keeps the loop
    from waiting on memory.
    """
    lines = ["def panel(A, p, off, n_out, o, i, B, lanes):"]
    for m in range(n_outputs):
        for u in range(n_inputs):
            lines.append(f"    w{m}_{u} = p[off + (i + {u}) * n_out + o + {m}]")
    for m in range(n_outputs):
        lines.append(f"    row{m} = (o + {m}) * lanes")
    for u in range(n_inputs):
        lines.append(f"    col{u} = (i + {u}) * lanes")
    lines.append("    for l in range(lanes):")
    for u in range(n_inputs):
        lines.append(f"        a{u} = A[col{u} + l]")
    for m in range(n_outputs):
        lines.append(f"        z = B[row{m} + l]")
        for u in range(n_inputs):
            lines.append(f"        z = fma(w{m}_{u}, a{u}, z)" if fused else
                         f"        z += w{m}_{u} * a{u}")
        lines.append(f"        B[row{m} + l] = z")
    return "\n".join(lines) + "\n"


def _make_panel(n_outputs, n_inputs, jit, fma=None):
    """:func:`_panel_source`'s panel compiled with ``jit``; with ``fma`` (a fused
    multiply-add) its products are added by it."""
    fused = fma is not None
    namespace = {"fma": fma}
    exec(compile(_panel_source(n_outputs, n_inputs, fused), f"<fastsde.mlp panel "
                 f"{n_outputs}x{n_inputs}{' fused' if fused else ''}>", "exec"), namespace)
    return jit(namespace["panel"])


def make_mlp_block_drift(widths, activation, math_source, lanes, jit):
    """The CPU kernel's lane-block forward pass of an MLP with layer ``widths``.

    Each layer is a matrix product over a block of ``lanes`` paths: a weight is read once
    per block (not once per path) and the products are SIMD across the lanes. The
    operations, and their order, are those of :func:`make_mlp_drift` for each path, so
    both give the same bits.

    Parameters
    ----------
    widths : tuple of int
    activation : str
    math_source : {"fastsde", "libm"}
    lanes : int
        Paths per block.
    jit : callable
        Compiles the inner functions (``numba.njit(inline="always", ...)``).

    Returns
    -------
    function
        Plain Python ``block(T, X, p, F, S)``: ``T`` (lanes,) the time of each lane,
        ``X`` (d * lanes,) the states component-major (``X[j * lanes + l]``), ``p`` the
        packed weights, ``F`` (d * lanes,) the field, component-major; ``S`` scratch of
        :func:`block_scratch_size` elements.
    """
    widths = tuple(int(w) for w in widths)
    n_layers = len(widths) - 1
    d = widths[-1]
    width_max = max(widths)
    act = _ACT_CODE[activation]
    gelu_c = _GELU_C
    own_math = math_source == "fastsde"
    from . import kmath
    k_tanh, k_silu, k_gelu = kmath.UNITS["tanh"], kmath.UNITS["silu"], kmath.UNITS["gelu"]
    fma = _tile_fma()
    tile_out, tile_in = BLOCK_TILE
    panel = _make_panel(tile_out, tile_in, jit, fma if own_math else None)
    panel_one = _make_panel(1, tile_in, jit, fma if own_math else None)

    # z + w a as the panels add it (chosen here: no branch in the lane loop).
    if own_math:
        def add_product(w, a, z):
            return fma(w, a, z)
    else:
        def add_product(w, a, z):
            return z + w * a
    add_product = jit(add_product)

    def activate(B, n):
        # The one-path forward pass's expressions, as written there (the same types).
        for j in range(n):
            z = B[j]
            if own_math and act == 0:
                B[j] = k_tanh(z)
            elif own_math and act == 2:
                B[j] = k_silu(z)
            elif own_math and act == 3:
                B[j] = k_gelu(z)
            elif act == 0:
                B[j] = math.tanh(z)
            elif act == 1:
                B[j] = z if z > 0.0 else 0.0
            elif act == 2:
                B[j] = z / (1.0 + math.exp(-z)) if z > -700.0 else 0.0
            else:
                B[j] = 0.5 * z * (1.0 + math.tanh(gelu_c * (z + 0.044715 * z * z * z)))

    activate = jit(activate)

    def layer(A, B, p, off, n_in, n_out):
        """B = W A + b for every lane (weights of the layer at ``off`` in p)."""
        b_off = off + n_in * n_out
        for o in range(n_out):
            bias = p[b_off + o]
            for l in range(lanes):
                B[o * lanes + l] = bias
        in_tiled = n_in - n_in % tile_in
        out_tiled = n_out - n_out % tile_out
        for o in range(0, out_tiled, tile_out):
            for i in range(0, in_tiled, tile_in):
                panel(A, p, off, n_out, o, i, B, lanes)
        for o in range(out_tiled, n_out):
            for i in range(0, in_tiled, tile_in):
                panel_one(A, p, off, n_out, o, i, B, lanes)
        # The inputs after the last whole tile, added last, as in the one-path pass.
        for o in range(n_out):
            for i in range(in_tiled, n_in):
                w = p[off + i * n_out + o]
                for l in range(lanes):
                    B[o * lanes + l] = add_product(w, A[i * lanes + l], B[o * lanes + l])

    layer = jit(layer)
    half = width_max * lanes

    def block(T, X, p, F, S):
        A = S[:half]
        B = S[half:]
        for i in range(d):
            for l in range(lanes):
                A[i * lanes + l] = X[i * lanes + l]
        for l in range(lanes):
            A[d * lanes + l] = T[l]
        off = 0
        for li in range(n_layers):
            n_in = widths[li]
            n_out = widths[li + 1]
            layer(A, B, p, off, n_in, n_out)
            off += n_in * n_out + n_out
            if li == n_layers - 1:
                for j in range(n_out * lanes):
                    F[j] = B[j]
            else:
                activate(B, n_out * lanes)
                A, B = B, A

    return block


def block_scratch_size(widths, lanes):
    """Scratch elements of :func:`make_mlp_block_drift`'s ``block`` (two activations)."""
    return 2 * max(int(w) for w in widths) * lanes


class LaneBlockDrift:
    """How the CPU kernel evaluates a model's drift for a block of lanes at once.

    A model carries one as ``model.lane_block`` (:class:`MLPField` sets it on the models
    it builds, ``GaussianMixturePath`` on those of mixtures too large to unroll); the
    CPU kernel then evaluates the drift a block at a time wherever the run has one
    parameter row shared by all paths (see ``cpu._make_run_chunk``). The drift function
    of the model stays what every other path (CUDA, MLMC, per-path parameters, the
    pre-flight) calls, and gives the same bits.

    The protocol: ``key`` and ``make(lanes, jit, prepare, per_path_params=None)``, which
    returns the block function ``block(T, X, p, F, S)`` compiled for inlining and the
    scratch it needs (elements of the run's dtype), or None where the block form does
    not fit the run; ``jit`` compiles a plain function as it is, ``prepare`` with the
    rewrites the kernel applies to the model's own functions. ``per_path_params``: None
    where one parameter row ``p`` serves every path, else the row's width, and ``p`` is
    then the lanes' rows, component-major (``p[j * lanes + l]``).

    Attributes
    ----------
    key : str
        Hash of what the block function computes (part of the kernel's cache key).
    """

    def __init__(self, widths, activation, math_source):
        self.widths = tuple(int(w) for w in widths)
        self.activation = activation
        self.math = math_source
        import hashlib
        import inspect
        digest = hashlib.sha256(repr((self.widths, activation, math_source, BLOCK_TILE))
                                .encode())
        for fn in (make_mlp_block_drift, _panel_source):
            digest.update(inspect.getsource(fn).encode())
        self.key = digest.hexdigest()

    def make(self, lanes, jit, prepare=None, per_path_params=None):
        """(the block function compiled by ``jit``, scratch elements) for ``lanes``
        lanes, or None with ``per_path_params`` (the width of a row of parameters per
        path: the block would then get the lanes' rows, which a block of weights read
        once per block does not fit). ``prepare`` is not used: the forward pass is
        written for the kernel as it is."""
        if per_path_params is not None:
            return None
        return (jit(make_mlp_block_drift(self.widths, self.activation, self.math, lanes,
                                         jit)),
                block_scratch_size(self.widths, lanes))


class MLPField:
    """A vector field u_t(x) = MLP([x, t]) on R^d, evaluated inside fastsde's kernels.

    Layer i computes z = W_i a + b_i, followed by the activation on every layer but the
    last; the input a_0 = [x_1, ..., x_d, t] has d + 1 entries and the output d.

    Parameters
    ----------
    layers : sequence of (W, b)
        W of shape (out_features, in_features) (PyTorch's ``nn.Linear.weight``
        convention: z = W a + b), b of shape (out_features,). The first W has d + 1
        columns, the last d rows.
    activation : {"tanh", "relu", "silu", "swish", "gelu"}
        "swish" is "silu" (z sigmoid(z)); "gelu" is the tanh approximation
        0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))) (PyTorch ``approximate="tanh"``).
    math : {"fastsde", "libm"}
        "fastsde" (the default): the activations from :mod:`fastsde.kmath`, which
        vectorise across a layer's units (a 3-64-64-2 tanh network runs several times
        faster) and compute the same operations on the CPU and CUDA; errors of a few
        ulps (bounds in docs/performance.md). "libm": ``math.tanh`` / ``math.exp``, libm's bits.

    Attributes
    ----------
    dim : int
        d.
    params : numpy.ndarray, shape (n_weights,)
        Weights packed layer by layer: W_i^T row-major (shape (in, out)), then b_i.
    drift : function
        The kernel function ``drift(t, x, p, out)`` (see :func:`make_mlp_drift`).
    """

    def __init__(self, layers, activation="tanh", math="fastsde"):
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
        if not isinstance(math, str) or math not in MATH:
            raise ValueError(f"math must be one of {MATH}; got {math!r}")
        checked = _check_layers(layers)
        self.activation = activation
        self.math = math
        self.layers = [(w.copy(), b.copy()) for w, b in checked]
        self.shapes = tuple(w.shape for w, _ in checked)
        self.dim = self.shapes[-1][0]
        self.params = np.concatenate([np.concatenate([w.T.ravel(), b]) for w, b in checked])
        register()  # Numba (and numba-cuda) learn local_array
        self.drift = make_mlp_drift((self.shapes[0][1],) + tuple(o for o, _ in self.shapes),
                                    activation, math)
        self._ode = None
        self._sdes = {}

    @classmethod
    def from_npz(cls, path, activation=None, math="fastsde"):
        """Load layers from an ``.npz`` with arrays ``W0, b0, W1, b1, ...``.

        Parameters
        ----------
        path : str or os.PathLike
        activation : str, optional
            Overrides an ``activation`` entry stored in the file (a 0-d string array);
            one of the two is required.
        math : {"fastsde", "libm"}
            As for :class:`MLPField`.

        Returns
        -------
        MLPField
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike; got {path!r}")
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            layers = []
            i = 0
            while f"W{i}" in keys:
                if f"b{i}" not in keys:
                    raise ValueError(f"{path}: has W{i} but no b{i}")
                layers.append((data[f"W{i}"], data[f"b{i}"]))
                i += 1
            if not layers:
                raise ValueError(f"{path}: no layers found (expected arrays W0, b0, W1, b1, "
                                 f"...); it holds {sorted(keys)}")
            stored = str(data["activation"]) if "activation" in keys else None
        act = activation if activation is not None else stored
        if act is None:
            raise ValueError(f"{path}: no 'activation' entry; pass activation= one of "
                             f"{ACTIVATIONS}")
        return cls(layers, act, math)

    def save_npz(self, path):
        """Write ``W0, b0, ..., activation`` (what :meth:`from_npz` reads)."""
        arrays = {}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"W{i}"] = w
            arrays[f"b{i}"] = b
        np.savez(path, activation=np.array(self.activation), **arrays)

    def __call__(self, x, t):
        """The forward pass in numpy (the reference for the kernel's).

        Parameters
        ----------
        x : array_like, shape (n, d) or (d,)
        t : float or array_like, shape (n,)

        Returns
        -------
        numpy.ndarray, shape (n, d)
        """
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}); got shape {x.shape}")
        tt = np.broadcast_to(np.asarray(t, dtype=np.float64), (x.shape[0],))
        a = np.concatenate([x, tt[:, None]], axis=1)
        for i, (w, b) in enumerate(self.layers):
            a = a @ w.T + b
            if i < len(self.layers) - 1:
                a = _act_numpy(self.activation, a)
        return a

    def __repr__(self):
        widths = [self.shapes[0][1]] + [o for o, _ in self.shapes]
        libm = ", math='libm'" if self.math == "libm" else ""
        return f"MLPField({'-'.join(map(str, widths))}, {self.activation!r}{libm})"

    def _lane_block(self):
        widths = (self.shapes[0][1],) + tuple(o for o, _ in self.shapes)
        return LaneBlockDrift(widths, self.activation, self.math)

    def ode(self):
        """The flow model dX/dt = MLP([X, t]).

        Returns
        -------
        fastsde.ODE
            params: :attr:`params`.
        """
        if self._ode is None:
            self._ode = ODE(self.drift, self.dim, params=self.params, name=f"flow {self!r}",
                            math=self.math)
            self._ode.lane_block = self._lane_block()
        return self._ode

    def sde(self, sigma=1.0):
        """The diffusion model dX = MLP([X, t]) dt + sigma_t dW (additive noise).

        Parameters
        ----------
        sigma : float >= 0 or (float, float)
            A constant, or (sigma_0, sigma_1) for sigma_t = sigma_0 (1 - t) + sigma_1 t.
            The drift is the network as given: for a flow-matching network, add the
            score correction yourself (as :meth:`GaussianMixturePath.diffusion` does) to
            keep the marginals.

        Returns
        -------
        fastsde.SDE
            params: :attr:`params` followed by (sigma_0, sigma_1).
        """
        pair = _check_sigma(sigma)
        model = self._sdes.get(pair)
        if model is None:
            model = SDE(self.drift, gm_path_sigma, self.dim, noise="additive",
                        params=np.concatenate([self.params, pair]),
                        name=f"diffusion {self!r}, sigma_t = {pair[0]:g} (1 - t) + "
                             f"{pair[1]:g} t", math=self.math)
            model.lane_block = self._lane_block()
            self._sdes[pair] = model
        return model


def random_mlp(widths, activation="tanh", seed=0, scale=1.0, math="fastsde"):
    """An :class:`MLPField` with Gaussian weights (W ~ N(0, scale^2 / fan_in)), for tests.

    Parameters
    ----------
    widths : sequence of int
        (d + 1, hidden..., d).
    activation : str
    seed : int
    scale : float
    math : {"fastsde", "libm"}
        As for :class:`MLPField`.

    Returns
    -------
    MLPField
    """
    if len(widths) < 2 or any(not isinstance(w, numbers.Integral) or w < 1 for w in widths):
        raise ValueError(f"widths must be >= 2 positive ints; got {widths!r}")
    rng = np.random.default_rng(seed)
    layers = [(rng.normal(0, scale / np.sqrt(n_in), (n_out, n_in)), rng.normal(0, 0.1, n_out))
              for n_in, n_out in zip(widths[:-1], widths[1:])]
    return MLPField(layers, activation, math)
