"""Generation as sampling on a Gaussian-mixture target, with exact fields and samples.

The linear (conditional optimal-transport) probability path

    x_t = t x_1 + (1 - t) x_0,    x_0 ~ N(0, I_d),    x_1 ~ p_data,

with p_data = sum_k w_k N(mu_k, s_k^2 I_d) (K isotropic components in d dimensions) has
every quantity a flow or diffusion sampler needs in closed form (docs/generative.md has
the derivation):

    p_t(x)             = sum_k w_k N(x; t mu_k, v_k(t) I),   v_k(t) = t^2 s_k^2 + (1 - t)^2
    u_t^k(x)           = mu_k + (t s_k^2 - (1 - t)) / v_k(t) * (x - t mu_k)
    r_k(x, t)          = w_k N(x; t mu_k, v_k I) / p_t(x)          (responsibilities)
    u_t(x)             = sum_k r_k(x, t) u_t^k(x)                   (marginal vector field)
    grad log p_t(x)    = sum_k r_k(x, t) * (-(x - t mu_k) / v_k(t))  (score)

:class:`GaussianMixturePath` turns them into fastsde models whose functions are plain,
allocation-free Python ``f(t, x, p, out)``: the mixture travels in the params vector (see
:meth:`GaussianMixturePath.pack`), K is read from the length of ``p`` and d from ``x``, so
one compiled kernel serves every mixture with the same dimension and number of components
(the kernel keeps a copy of ``p`` on the stack, whose length is compiled in).
"""

import math
import numbers
from collections import namedtuple

import numpy as np

from .model import ODE, SDE

# What the metrics in fastsde.metrics take as the exact law (docstring below).
GaussianMixture = namedtuple("GaussianMixture", ["weights", "means", "stds"])
GaussianMixture.__doc__ = """A Gaussian mixture law sum_k w_k N(mu_k, s_k^2 I_d).

Components are isotropic (covariance s_k^2 I_d). A plain named tuple: it holds the arrays
as given and checks nothing; the functions of :mod:`fastsde.metrics` that take it as the
exact law check the shapes and signs.

Parameters
----------
weights : array_like, shape (K,)
    Component weights w_k, each > 0. They should sum to 1:
    :func:`fastsde.metrics.occupation_test` divides by their sum, the other metrics use
    them as given.
means : array_like, shape (K, d), or shape (K,) when d = 1
    Component means mu_k.
stds : array_like, shape (K,)
    Component standard deviations s_k > 0 (one per component, the same in every
    coordinate).

See Also
--------
GaussianMixturePath.data : p_data = p_1 of a path, as a GaussianMixture.
GaussianMixturePath.marginal : p_t, as a GaussianMixture.

Examples
--------
>>> import numpy as np, fastsde as fs
>>> law = fs.GaussianMixture(weights=np.array([0.3, 0.7]),
...                          means=np.array([[-2.0, 0.0], [2.0, 0.0]]),
...                          stds=np.array([0.5, 0.5]))
>>> law.means.shape
(2, 2)
"""
GaussianMixture.weights.__doc__ = "Component weights w_k, shape (K,)."
GaussianMixture.means.__doc__ = "Component means mu_k, shape (K, d)."
GaussianMixture.stds.__doc__ = "Component standard deviations s_k, shape (K,)."

#: A component whose log-density is this far below the largest seen so far is skipped:
#: its relative weight e^-40 = 4e-18 is below float64 resolution (2^-53 = 1.1e-16).
SKIP_LOGIT = 40.0
#: In the branch-free (unrolled) fields, the relative weight e^-|gap| of a component
#: whose log-density is more than this far from the largest so far is taken as e^-80
#: (1.8e-35, which changes nothing in float64 either). What it prevents is e^-|gap|
#: below float32's normal range (e^-87.3): subnormal numbers, which Intel cores handle
#: in microcode. The 8-component ring's flow in float32, from N(0, I) starting points,
#: ran at 7.7e7 path-steps/s against 2.6e8 from the origin (2-core Xeon, AVX-512), and
#: slower than in float64 (1.1e8). Setting such weights to 0 instead (one more select)
#: cost float64 about 10% in the same runs.
FLUSH_LOGIT = 80.0

# --------------------------------------------------------------------------------------
# Kernel functions. Plain Python, allocation-free, compiled by fastsde for each target.
# Params layout (see GaussianMixturePath.pack):
#     p = [log w_1..log w_K | mu_1 (d) .. mu_K (d) | s_1..s_K | extra...]
# K = (len(p) - n_extra) // (d + 2), d = len(x).
# The responsibility-weighted sum is accumulated in one pass with a running
# log-sum-exp (online softmax): out holds the sum rescaled to the largest log-density
# seen so far, so no component's exp can overflow and a point far from every component
# (all densities underflowing) still gets the nearest component's field.
# --------------------------------------------------------------------------------------

def gm_path_drift(t, x, p, out):
    """u_t(x) + sigma_t^2 / 2 * grad log p_t(x) for the Gaussian-mixture path.

    ``p`` = pack(...) followed by (sigma_0, sigma_1); sigma_t = sigma_0 (1 - t) + sigma_1 t.
    With sigma_0 = sigma_1 = 0 this is the flow's exact marginal vector field u_t(x).
    Per component the combined field is mu_k + c_k (x - t mu_k) with
    c_k = (t s_k^2 - (1 - t) - sigma_t^2 / 2) / v_k(t), v_k(t) = t^2 s_k^2 + (1 - t)^2 > 0.
    """
    d = x.shape[0]
    n = p.shape[0]
    n_comp = (n - 2) // (d + 2)
    mu0 = n_comp
    s0 = n_comp + n_comp * d
    one_m_t = 1.0 - t
    sig = p[n - 2] * one_m_t + p[n - 1] * t
    half_sig2 = 0.5 * sig * sig
    half_d = 0.5 * d
    for j in range(d):
        out[j] = 0.0
    m = -math.inf
    total = 0.0
    s_prev = -1.0
    log_norm = 0.0
    half_inv_v = 0.0
    c = 0.0
    for k in range(n_comp):
        s = p[s0 + k]
        if s != s_prev:
            # Only t and s_k enter v_k, so components sharing a std share the log.
            ts2 = t * s * s
            v = t * ts2 + one_m_t * one_m_t
            inv_v = 1.0 / v
            log_norm = half_d * math.log(v)
            half_inv_v = 0.5 * inv_v
            c = (ts2 - one_m_t - half_sig2) * inv_v
            s_prev = s
        q = 0.0
        for j in range(d):
            r = x[j] - t * p[mu0 + k * d + j]
            q += r * r
        logit = p[k] - log_norm - q * half_inv_v
        if logit > m:
            # exp(-inf) = 0 on the first component, which zeroes the empty sum.
            scale = math.exp(m - logit)
            total = total * scale + 1.0
            for j in range(d):
                mu = p[mu0 + k * d + j]
                out[j] = out[j] * scale + mu + c * (x[j] - t * mu)
            m = logit
        elif logit > m - SKIP_LOGIT:
            e = math.exp(logit - m)
            total += e
            for j in range(d):
                mu = p[mu0 + k * d + j]
                out[j] += e * (mu + c * (x[j] - t * mu))
    inv = 1.0 / total
    for j in range(d):
        out[j] = out[j] * inv


def unrolled_path_drift(n_comp, dim):
    """:func:`gm_path_drift` for a mixture of ``n_comp`` components in ``dim``
    dimensions, written for the CPU kernel's lanes: K and d are constants of the
    closure, so the kernel unrolls both loops (kernels/unroll.py) and evaluates the
    field for a block of paths in SIMD registers.

    The same running log-sum-exp, without a branch that depends on the path: with
    d = logit_k - (the largest so far), one exp(-|d|) is the rescaling of what was
    summed (d > 0) or the new weight (d <= 0), chosen by selects; the same operations
    as :func:`gm_path_drift` otherwise, except that no component is skipped (one
    e^-40 below the largest adds less than float64 resolution, as the skipping there
    assumed) and that |d| is capped at :data:`FLUSH_LOGIT` (no subnormal numbers).
    ``p``: the same layout, of width K (d + 2) + 2. What depends only on t and s_k
    (v_k, its log, c_k) is computed again only when s_k changes (a branch on the
    parameters, not on the path; components that share a std share its log, as in
    :func:`gm_path_drift`), and the kernel computes it once per step when the
    parameters are shared (``bench/drifts.py`` rows gm_flow and gm_diffusion).

    Mixtures too large to unroll (more than 17 components, or too long a body) keep the
    loop; their models also carry :func:`make_path_drift_block`, which the CPU kernel
    evaluates for a block of paths at once with this function's bits. This function is
    then what debug runs, a row of parameters per path and CUDA run.

    Returns
    -------
    function
        ``f(t, x, p, out)``.
    """
    K = int(n_comp)
    D = int(dim)
    mu0 = K
    s0 = K + K * D
    sig0 = K * (D + 2)
    sig1 = sig0 + 1
    half_d = 0.5 * D
    flush = FLUSH_LOGIT
    # fastsde's exp and log by name, not math's: the same functions whether or not the
    # kernel unrolls the loop over the components (with a loop left, math's would stay
    # libm's), so that the lane-block form (make_path_drift_block) computes the bits
    # of this one.
    from . import kmath
    exp, log = kmath.exp, kmath.log

    def gm_path_drift_unrolled(t, x, p, out):
        one_m_t = 1.0 - t
        sig = p[sig0] * one_m_t + p[sig1] * t
        half_sig2 = 0.5 * sig * sig
        s_prev = p[s0]
        ts2 = t * s_prev * s_prev
        v = t * ts2 + one_m_t * one_m_t
        inv_v = 1.0 / v
        log_norm = half_d * log(v)
        half_inv_v = 0.5 * inv_v
        c = (ts2 - one_m_t - half_sig2) * inv_v
        q = 0.0
        for j in range(D):
            r = x[j] - t * p[mu0 + j]
            q += r * r
        m = p[0] - log_norm - q * half_inv_v
        total = 1.0
        for j in range(D):
            mu = p[mu0 + j]
            out[j] = mu + c * (x[j] - t * mu)
        for k in range(1, K):
            s = p[s0 + k]
            if s != s_prev:
                ts2 = t * s * s
                v = t * ts2 + one_m_t * one_m_t
                inv_v = 1.0 / v
                log_norm = half_d * log(v)
                half_inv_v = 0.5 * inv_v
                c = (ts2 - one_m_t - half_sig2) * inv_v
                s_prev = s
            q = 0.0
            for j in range(D):
                r = x[j] - t * p[mu0 + k * D + j]
                q += r * r
            logit = p[k] - log_norm - q * half_inv_v
            gap = logit - m
            decay = exp(-min(abs(gap), flush))
            above = gap > 0.0
            scale = decay if above else 1.0
            e = 1.0 if above else decay
            total = total * scale + e
            for j in range(D):
                mu = p[mu0 + k * D + j]
                out[j] = out[j] * scale + e * (mu + c * (x[j] - t * mu))
            m = logit if above else m
        inv = 1.0 / total
        for j in range(D):
            out[j] = out[j] * inv

    return gm_path_drift_unrolled


def make_path_drift_block(n_comp, dim, lanes):
    """:func:`unrolled_path_drift` for a block of ``lanes`` paths at once: the loop over
    the components outside, the loop over the lanes inside, which vectorises whatever
    the number of components (the kernel unrolls the one-path form's loops only up to
    17 components).

    Each lane's operations, in their order, are those of the one-path form, so the two
    give the same bits (the kernel compiles both with the same rewrites). What depends
    only on t and ``p`` is computed once per component for the block, from the first
    lane's time: every lane of a drift call shares its time (the step's t, t + h/2,
    t + h or t + 3h/4).

    Returns
    -------
    function
        ``block(T, X, p, F, S)``: ``T`` (lanes,) times, ``X`` (dim * lanes,) states
        component-major, ``F`` (dim * lanes,) the field, ``S`` (2 * lanes,) scratch.
    """
    K = int(n_comp)
    D = int(dim)
    mu0 = K
    s0 = K + K * D
    sig0 = K * (D + 2)
    sig1 = sig0 + 1
    half_d = 0.5 * D
    flush = FLUSH_LOGIT
    from . import kmath
    exp, log = kmath.exp, kmath.log

    def gm_path_drift_block(T, X, p, F, S):
        # S: each lane's largest log-density so far, then its total weight.
        t = T[0]
        one_m_t = 1.0 - t
        sig = p[sig0] * one_m_t + p[sig1] * t
        half_sig2 = 0.5 * sig * sig
        s = p[s0]
        ts2 = t * s * s
        v = t * ts2 + one_m_t * one_m_t
        inv_v = 1.0 / v
        base = p[0] - half_d * log(v)
        half_inv_v = 0.5 * inv_v
        c = (ts2 - one_m_t - half_sig2) * inv_v
        for l in range(lanes):
            q = 0.0
            for j in range(D):
                r = X[j * lanes + l] - t * p[mu0 + j]
                q += r * r
            S[l] = base - q * half_inv_v
            S[lanes + l] = 1.0
            for j in range(D):
                mu = p[mu0 + j]
                F[j * lanes + l] = mu + c * (X[j * lanes + l] - t * mu)
        for k in range(1, K):
            s = p[s0 + k]
            ts2 = t * s * s
            v = t * ts2 + one_m_t * one_m_t
            inv_v = 1.0 / v
            base = p[k] - half_d * log(v)
            half_inv_v = 0.5 * inv_v
            c = (ts2 - one_m_t - half_sig2) * inv_v
            for l in range(lanes):
                q = 0.0
                for j in range(D):
                    r = X[j * lanes + l] - t * p[mu0 + k * D + j]
                    q += r * r
                logit = base - q * half_inv_v
                m = S[l]
                gap = logit - m
                decay = exp(-min(abs(gap), flush))
                above = gap > 0.0
                scale = decay if above else 1.0
                e = 1.0 if above else decay
                S[lanes + l] = S[lanes + l] * scale + e
                for j in range(D):
                    mu = p[mu0 + k * D + j]
                    F[j * lanes + l] = (F[j * lanes + l] * scale
                                        + e * (mu + c * (X[j * lanes + l] - t * mu)))
                S[l] = logit if above else m
        for l in range(lanes):
            inv = 1.0 / S[lanes + l]
            for j in range(D):
                F[j * lanes + l] = F[j * lanes + l] * inv

    return gm_path_drift_block


class _MixtureBlock:
    """A mixture's field for a block of lanes (``model.lane_block``; see
    ``mlp.LaneBlockDrift`` for the protocol and docs/performance.md, "Networks and large
    mixtures"): ``factory(n_comp, dim, lanes)`` is :func:`make_path_drift_block` or
    :func:`make_data_score_block`."""

    def __init__(self, factory, n_comp, dim):
        import hashlib
        import inspect
        self.factory = factory
        self.n_comp, self.dim = int(n_comp), int(dim)
        digest = hashlib.sha256(repr((self.n_comp, self.dim, FLUSH_LOGIT)).encode())
        digest.update(inspect.getsource(factory).encode())
        self.key = digest.hexdigest()

    def make(self, lanes, jit, prepare, per_path_params=None):
        """(the block function compiled by ``prepare``, scratch elements); None with a
        row of parameters per path (what depends on t and p is computed once per
        block)."""
        if per_path_params is not None:
            return None
        return prepare(self.factory(self.n_comp, self.dim, lanes)), 2 * lanes


def _path_drift(n_comp, dim):
    """The kernel function of a mixture's path (:func:`unrolled_path_drift`, whose loops
    the kernel unrolls up to 17 components), and its lane-block form where the kernel
    does not unroll it (else None)."""
    from .kernels import unroll

    fn = unrolled_path_drift(n_comp, dim)
    if not unroll.loops_stay(fn):
        return fn, None
    return fn, _MixtureBlock(make_path_drift_block, n_comp, dim)


def unrolled_data_score(n_comp, dim):
    """:func:`gm_data_score` for a mixture of ``n_comp`` components in ``dim``
    dimensions, written for the CPU kernel's lanes as :func:`unrolled_path_drift` is:
    K and d constants of the closure, the running log-sum-exp without a branch on the
    path, nothing skipped, 1 / s_k^2 and log s_k computed again only when s_k changes,
    and a lane-block form (:func:`make_data_score_block`) for mixtures too large to
    unroll. ``p``: ``pack(...)``, of width K (d + 2).

    Returns
    -------
    function
        ``f(t, x, p, out)``.
    """
    K = int(n_comp)
    D = int(dim)
    mu0 = K
    s0 = K + K * D
    d_float = float(D)  # a Python float: the run's dtype in float32 kernels
    flush = FLUSH_LOGIT
    # fastsde's exp and log by name, as in unrolled_path_drift.
    from . import kmath
    exp, log = kmath.exp, kmath.log

    def gm_data_score_unrolled(t, x, p, out):
        s_prev = p[s0]
        inv_v = 1.0 / (s_prev * s_prev)
        log_norm = d_float * log(s_prev)
        q = 0.0
        for j in range(D):
            r = x[j] - p[mu0 + j]
            q += r * r
        m = p[0] - log_norm - 0.5 * q * inv_v
        total = 1.0
        for j in range(D):
            out[j] = -inv_v * (x[j] - p[mu0 + j])
        for k in range(1, K):
            s = p[s0 + k]
            if s != s_prev:
                inv_v = 1.0 / (s * s)
                log_norm = d_float * log(s)
                s_prev = s
            q = 0.0
            for j in range(D):
                r = x[j] - p[mu0 + k * D + j]
                q += r * r
            logit = p[k] - log_norm - 0.5 * q * inv_v
            gap = logit - m
            decay = exp(-min(abs(gap), flush))
            above = gap > 0.0
            scale = decay if above else 1.0
            e = 1.0 if above else decay
            total = total * scale + e
            for j in range(D):
                out[j] = out[j] * scale - e * inv_v * (x[j] - p[mu0 + k * D + j])
            m = logit if above else m
        inv = 1.0 / total
        for j in range(D):
            out[j] = out[j] * inv

    return gm_data_score_unrolled


def make_data_score_block(n_comp, dim, lanes):
    """:func:`unrolled_data_score` for a block of ``lanes`` paths at once, as
    :func:`make_path_drift_block` is for the path's drift (the same bits as the one-path
    forms).

    Returns
    -------
    function
        ``block(T, X, p, F, S)`` (see :func:`make_path_drift_block`).
    """
    K = int(n_comp)
    D = int(dim)
    mu0 = K
    s0 = K + K * D
    d_float = float(D)
    flush = FLUSH_LOGIT
    from . import kmath
    exp, log = kmath.exp, kmath.log

    def gm_data_score_block(T, X, p, F, S):
        # S: each lane's largest log-density so far, then its total weight.
        s = p[s0]
        inv_v = 1.0 / (s * s)
        base = p[0] - d_float * log(s)
        minus_inv_v = -inv_v
        for l in range(lanes):
            q = 0.0
            for j in range(D):
                r = X[j * lanes + l] - p[mu0 + j]
                q += r * r
            S[l] = base - 0.5 * q * inv_v
            S[lanes + l] = 1.0
            for j in range(D):
                F[j * lanes + l] = minus_inv_v * (X[j * lanes + l] - p[mu0 + j])
        for k in range(1, K):
            s = p[s0 + k]
            inv_v = 1.0 / (s * s)
            base = p[k] - d_float * log(s)
            for l in range(lanes):
                q = 0.0
                for j in range(D):
                    r = X[j * lanes + l] - p[mu0 + k * D + j]
                    q += r * r
                logit = base - 0.5 * q * inv_v
                m = S[l]
                gap = logit - m
                decay = exp(-min(abs(gap), flush))
                above = gap > 0.0
                scale = decay if above else 1.0
                e = 1.0 if above else decay
                S[lanes + l] = S[lanes + l] * scale + e
                for j in range(D):
                    F[j * lanes + l] = (F[j * lanes + l] * scale
                                        - e * inv_v * (X[j * lanes + l] - p[mu0 + k * D + j]))
                S[l] = logit if above else m
        for l in range(lanes):
            inv = 1.0 / S[lanes + l]
            for j in range(D):
                F[j * lanes + l] = F[j * lanes + l] * inv

    return gm_data_score_block


def _data_score(n_comp, dim):
    """Langevin's drift (:func:`unrolled_data_score`, whose loops the kernel unrolls up to
    17 components), and its lane-block form where the kernel does not unroll it (else
    None)."""
    from .kernels import unroll

    fn = unrolled_data_score(n_comp, dim)
    if not unroll.loops_stay(fn):
        return fn, None
    return fn, _MixtureBlock(make_data_score_block, n_comp, dim)


def gm_path_sigma(t, x, p, out):
    """sigma_t = sigma_0 (1 - t) + sigma_1 t, the last two entries of ``p`` (additive)."""
    n = p.shape[0]
    sig = p[n - 2] * (1.0 - t) + p[n - 1] * t
    for j in range(out.shape[0]):
        out[j] = sig


def gm_data_score(t, x, p, out):
    """grad log p_data(x) = sum_k r_k(x) * (-(x - mu_k) / s_k^2), independent of t.

    ``p`` = pack(...) (no extra entries).
    """
    d = x.shape[0]
    n = p.shape[0]
    n_comp = n // (d + 2)
    mu0 = n_comp
    s0 = n_comp + n_comp * d
    for j in range(d):
        out[j] = 0.0
    m = -math.inf
    total = 0.0
    s_prev = -1.0
    log_norm = 0.0
    inv_v = 0.0
    for k in range(n_comp):
        s = p[s0 + k]
        if s != s_prev:
            inv_v = 1.0 / (s * s)
            log_norm = d * math.log(s)
            s_prev = s
        q = 0.0
        for j in range(d):
            r = x[j] - p[mu0 + k * d + j]
            q += r * r
        logit = p[k] - log_norm - 0.5 * q * inv_v
        if logit > m:
            scale = math.exp(m - logit)
            total = total * scale + 1.0
            for j in range(d):
                out[j] = out[j] * scale - inv_v * (x[j] - p[mu0 + k * d + j])
            m = logit
        elif logit > m - SKIP_LOGIT:
            e = math.exp(logit - m)
            total += e
            for j in range(d):
                out[j] -= e * inv_v * (x[j] - p[mu0 + k * d + j])
    inv = 1.0 / total
    for j in range(d):
        out[j] = out[j] * inv


def langevin_sigma(t, x, p, out):
    """sqrt(2) in every component: dX = grad log p dt + sqrt(2) dW."""
    for j in range(out.shape[0]):
        out[j] = 1.4142135623730951


# --------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------

def _real_array(value, name, ndim_allowed):
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of real numbers; got {value!r}") from None
    if arr.ndim not in ndim_allowed:
        raise ValueError(f"{name} must have {' or '.join(str(n) for n in ndim_allowed)} "
                         f"dimension(s); got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got {arr.tolist()}")
    return arr


def _check_time(t, name="t"):
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Real) \
            or not math.isfinite(t):
        raise ValueError(f"{name} must be a finite real number; got {t!r}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"{name} must be in [0, 1] (the path runs from N(0, I) at t = 0 to "
                         f"the data at t = 1); got {t!r}")
    return float(t)


def _check_sigma(sigma):
    """sigma -> (sigma_0, sigma_1): a number (constant) or a pair (linear schedule)."""
    if isinstance(sigma, (bool, np.bool_)):
        raise ValueError(f"sigma must be a number >= 0 or a pair (sigma_0, sigma_1) of "
                         f"numbers >= 0; got {sigma!r}")
    if isinstance(sigma, numbers.Real):
        pair = (float(sigma), float(sigma))
    else:
        try:
            arr = np.asarray(sigma, dtype=np.float64)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.shape != (2,):
            raise ValueError(f"sigma must be a number >= 0 or a pair (sigma_0, sigma_1) of "
                             f"numbers >= 0; got {sigma!r}")
        pair = (float(arr[0]), float(arr[1]))
    if not all(math.isfinite(v) and v >= 0 for v in pair):
        raise ValueError(f"sigma must be a number >= 0 or a pair (sigma_0, sigma_1) of "
                         f"finite numbers >= 0; got {sigma!r}")
    return pair


def _logsumexp(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    return (m + np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True))).squeeze(axis)


class GaussianMixturePath:
    """The linear probability path from N(0, I) to a Gaussian mixture, with exact fields.

    x_t = t x_1 + (1 - t) x_0 with x_0 ~ N(0, I_d) and x_1 ~ sum_k w_k N(mu_k, s_k^2 I_d).

    Parameters
    ----------
    weights : array_like, shape (K,)
        Component weights, each > 0, summing to 1 (within 1e-6; they are then renormalised).
    means : array_like, shape (K, d), or shape (K,) for d = 1
        Component means mu_k.
    stds : float or array_like, shape (K,)
        Component standard deviations s_k > 0 (isotropic). A number is shared by all.

    Attributes
    ----------
    weights : numpy.ndarray, shape (K,)
    means : numpy.ndarray, shape (K, d)
    stds : numpy.ndarray, shape (K,)
    n_components : int
        K.
    dim : int
        d.
    params : numpy.ndarray, shape (K (d + 2),)
        ``pack(weights, means, stds)``: the params vector of :meth:`flow` (without the
        schedule) and :meth:`langevin`.

    Notes
    -----
    The marginal at time t is p_t = sum_k w_k N(t mu_k, v_k(t) I) with
    v_k(t) = t^2 s_k^2 + (1 - t)^2, which is > 0 for every t because s_k > 0, so all fields
    below are finite on the whole of [0, 1], t = 1 included. See :func:`gm_path_drift` and
    docs/generative.md for the fields.

    Examples
    --------
    >>> import numpy as np, fastsde as fs
    >>> ring = fs.GaussianMixturePath.ring(8, radius=4.0, std=0.3)
    >>> res = fs.simulate(ring.flow(), fs.Normal(0.0, 1.0), (0.0, 1.0), 32, 10_000,
    ...                   method="heun")                                  # doctest: +SKIP
    >>> ref = ring.sample(10_000, t=1.0, seed=1)                          # doctest: +SKIP
    """

    def __init__(self, weights, means, stds):
        w = _real_array(weights, "weights", (1,))
        if np.any(w <= 0):
            raise ValueError(f"weights must all be > 0 (drop a component instead of giving "
                             f"it weight 0); got {w.tolist()}")
        if abs(w.sum() - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1 (within 1e-6); got {w.tolist()} "
                             f"summing to {w.sum()!r}")
        n_comp = w.shape[0]
        mu = _real_array(means, "means", (1, 2))
        if mu.ndim == 1:
            mu = mu.reshape(-1, 1)
        if mu.shape[0] != n_comp:
            raise ValueError(f"means must have shape (K, d) with K = {n_comp} (the number "
                             f"of weights); got shape {np.shape(means)}")
        s = _real_array(stds, "stds", (0, 1))
        if s.ndim == 0:
            s = np.full(n_comp, float(s))
        if s.shape != (n_comp,):
            raise ValueError(f"stds must be a number or have shape ({n_comp},) (one per "
                             f"component); got shape {s.shape}")
        if np.any(s <= 0):
            raise ValueError(f"stds must all be > 0; got {s.tolist()}")
        self.weights = w / w.sum()
        self.means = np.ascontiguousarray(mu)
        self.stds = s.copy()
        self.n_components = n_comp
        self.dim = mu.shape[1]
        self.params = self.pack(self.weights, self.means, self.stds)
        self._flow = self._langevin = None
        self._diffusions = {}

    @classmethod
    def ring(cls, n_components=8, radius=4.0, std=0.3, dim=2):
        """Equal-weight components on a circle of ``radius`` in the first two coordinates.

        Parameters
        ----------
        n_components : int >= 1
        radius : float > 0
        std : float > 0
        dim : int >= 2
            Further coordinates have mean 0.

        Returns
        -------
        GaussianMixturePath
        """
        if isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral) \
                or n_components < 1:
            raise ValueError(f"n_components must be an int >= 1; got {n_components!r}")
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 2:
            raise ValueError(f"dim must be an int >= 2; got {dim!r}")
        if isinstance(radius, bool) or not isinstance(radius, numbers.Real) \
                or not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be a finite number > 0; got {radius!r}")
        angles = 2 * np.pi * np.arange(n_components) / n_components
        means = np.zeros((n_components, dim))
        means[:, 0] = radius * np.cos(angles)
        means[:, 1] = radius * np.sin(angles)
        return cls(np.full(n_components, 1.0 / n_components), means, std)

    def __repr__(self):
        return (f"GaussianMixturePath(K={self.n_components}, d={self.dim}, "
                f"weights={np.round(self.weights, 4).tolist()}, "
                f"stds={np.round(self.stds, 4).tolist()})")

    # ---- params layout ---------------------------------------------------------------

    @staticmethod
    def pack(weights, means, stds):
        """The params vector [log w (K) | mu row-major (K d) | s (K)].

        Parameters
        ----------
        weights : array_like, shape (K,)
        means : array_like, shape (K, d)
        stds : array_like, shape (K,)

        Returns
        -------
        numpy.ndarray, shape (K (d + 2),)
            Log-weights are stored so that the kernels spend no log on them.
        """
        w = np.asarray(weights, dtype=np.float64).ravel()
        mu = np.asarray(means, dtype=np.float64).reshape(w.shape[0], -1)
        s = np.asarray(stds, dtype=np.float64).ravel()
        return np.concatenate([np.log(w), mu.ravel(), s])

    @staticmethod
    def unpack(params, dim, n_extra=0):
        """Inverse of :meth:`pack`: (weights, means, stds) from a params vector.

        Parameters
        ----------
        params : array_like, shape (K (dim + 2) + n_extra,)
        dim : int
        n_extra : int
            Trailing entries that are not part of the mixture (2 for a diffusion).

        Returns
        -------
        GaussianMixture
        """
        p = np.asarray(params, dtype=np.float64).ravel()
        n_comp = (p.shape[0] - n_extra) // (dim + 2)
        if n_comp < 1 or n_comp * (dim + 2) + n_extra != p.shape[0]:
            raise ValueError(f"params of length {p.shape[0]} is not K (dim + 2) + {n_extra} "
                             f"for dim={dim}")
        return GaussianMixture(np.exp(p[:n_comp]),
                               p[n_comp:n_comp * (dim + 1)].reshape(n_comp, dim),
                               p[n_comp * (dim + 1):n_comp * (dim + 2)].copy())

    # ---- exact quantities on the host (vectorised numpy) ------------------------------

    def component_var(self, t):
        """v_k(t) = t^2 s_k^2 + (1 - t)^2, shape (K,)."""
        t = _check_time(t)
        return t * t * self.stds**2 + (1.0 - t) ** 2

    def marginal(self, t):
        """p_t as a mixture: weights w_k, means t mu_k, stds sqrt(v_k(t)).

        Returns
        -------
        GaussianMixture
        """
        t = _check_time(t)
        return GaussianMixture(self.weights.copy(), t * self.means, np.sqrt(self.component_var(t)))

    @property
    def data(self):
        """p_data = p_1 as a :data:`GaussianMixture`."""
        return GaussianMixture(self.weights.copy(), self.means.copy(), self.stds.copy())

    def _points(self, x):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1 and self.dim == 1 and x.shape[0] != 1:
            x = x.reshape(-1, 1)
        x2 = np.atleast_2d(x)
        if x2.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}) or ({self.dim},); got "
                             f"shape {x.shape}")
        return x2

    def _logits(self, x, t):
        """log w_k + log N(x; t mu_k, v_k I), shape (n, K)."""
        v = self.component_var(t)
        diff = x[:, None, :] - t * self.means[None, :, :]
        q = np.einsum("nkd,nkd->nk", diff, diff)
        return (np.log(self.weights)[None, :] - 0.5 * self.dim * np.log(2 * np.pi * v)[None, :]
                - 0.5 * q / v[None, :]), diff, v

    def log_prob(self, x, t=1.0):
        """log p_t(x).

        Parameters
        ----------
        x : array_like, shape (n, d) or (d,)
        t : float in [0, 1]

        Returns
        -------
        numpy.ndarray, shape (n,)
        """
        logits, _, _ = self._logits(self._points(x), _check_time(t))
        return _logsumexp(logits, axis=1)

    def responsibilities(self, x, t=1.0):
        """r_k(x, t) = w_k N(x; t mu_k, v_k I) / p_t(x), shape (n, K); rows sum to 1."""
        logits, _, _ = self._logits(self._points(x), _check_time(t))
        return np.exp(logits - _logsumexp(logits, axis=1)[:, None])

    def velocity(self, x, t):
        """The marginal vector field u_t(x) = sum_k r_k u_t^k(x), shape (n, d)."""
        t = _check_time(t)
        logits, diff, v = self._logits(self._points(x), t)
        r = np.exp(logits - _logsumexp(logits, axis=1)[:, None])
        c = (t * self.stds**2 - (1.0 - t)) / v
        per = self.means[None, :, :] + c[None, :, None] * diff
        return np.einsum("nk,nkd->nd", r, per)

    def score(self, x, t=1.0):
        """grad log p_t(x) = sum_k r_k * (-(x - t mu_k) / v_k), shape (n, d)."""
        t = _check_time(t)
        logits, diff, v = self._logits(self._points(x), t)
        r = np.exp(logits - _logsumexp(logits, axis=1)[:, None])
        return np.einsum("nk,nkd->nd", r, -diff / v[None, :, None])

    def sample(self, n, t=1.0, seed=0, return_labels=False):
        """Exact samples of p_t (component k with probability w_k, then N(t mu_k, v_k I)).

        Parameters
        ----------
        n : int >= 1
        t : float in [0, 1]
        seed : int, numpy.random.SeedSequence or numpy.random.Generator
        return_labels : bool
            Also return the component of each sample.

        Returns
        -------
        x : numpy.ndarray, shape (n, d)
        labels : numpy.ndarray of int, shape (n,)
            Only with ``return_labels``.
        """
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n must be an int >= 1; got {n!r}")
        t = _check_time(t)
        rng = np.random.default_rng(seed)
        labels = rng.choice(self.n_components, size=int(n), p=self.weights)
        z = rng.standard_normal((int(n), self.dim))
        x = t * self.means[labels] + np.sqrt(self.component_var(t))[labels, None] * z
        return (x, labels) if return_labels else x

    # ---- models ----------------------------------------------------------------------

    def flow(self):
        """The flow model dX/dt = u_t(X) with the exact marginal field.

        Started from X_0 ~ N(0, I) (``x0=fs.Normal(0.0, 1.0)``) on t in [0, 1], X_t ~ p_t.

        Returns
        -------
        fastsde.ODE
            params: ``pack(...)`` followed by (0, 0) (the zero noise schedule that turns the
            shared drift into u_t).
        """
        if self._flow is None:
            drift, block = _path_drift(len(self.weights), self.dim)
            self._flow = ODE(drift, self.dim,
                             params=np.concatenate([self.params, [0.0, 0.0]]),
                             name=f"flow of {self!r}")
            self._flow.lane_block = block
        return self._flow

    def diffusion(self, sigma=1.0):
        """The diffusion model dX = [u_t + sigma_t^2 / 2 grad log p_t] dt + sigma_t dW.

        Its Fokker-Planck equation reduces to the flow's continuity equation (the score
        term's drift cancels the diffusion's Laplacian), so X_t ~ p_t for every t when
        X_0 ~ N(0, I), whatever the schedule.

        Parameters
        ----------
        sigma : float >= 0 or (float, float)
            A number: constant sigma_t = sigma. A pair (sigma_0, sigma_1): the linear
            schedule sigma_t = sigma_0 (1 - t) + sigma_1 t (e.g. (c, 0) for c (1 - t),
            noise that dies out as the samples arrive).

        Returns
        -------
        fastsde.SDE
            Additive noise; params: ``pack(...)`` followed by (sigma_0, sigma_1).
        """
        pair = _check_sigma(sigma)
        model = self._diffusions.get(pair)
        if model is None:
            drift, block = _path_drift(len(self.weights), self.dim)
            model = SDE(drift, gm_path_sigma, self.dim,
                        noise="additive",
                        params=np.concatenate([self.params, pair]),
                        name=f"diffusion of {self!r}, sigma_t = {pair[0]:g} (1 - t) + "
                             f"{pair[1]:g} t")
            model.lane_block = block
            self._diffusions[pair] = model
        return model

    def langevin(self):
        """Overdamped Langevin dynamics dX = grad log p_data(X) dt + sqrt(2) dW.

        Its stationary law is p_data (= p_1); the time variable is not used.

        Returns
        -------
        fastsde.SDE
            Additive noise; params: ``pack(...)``.
        """
        if self._langevin is None:
            score, block = _data_score(len(self.weights), self.dim)
            self._langevin = SDE(score, langevin_sigma, self.dim, noise="additive",
                                 params=self.params.copy(), name=f"Langevin on {self!r}")
            self._langevin.lane_block = block
        return self._langevin
