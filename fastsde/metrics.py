"""Accuracy tools: compare a sample set with an exact Gaussian-mixture reference.

- :func:`sliced_wasserstein` (and :class:`SlicedW1`, which sorts the reference once):
  the sliced Wasserstein-1 distance over seeded random directions, with
  :meth:`SlicedW1.floor`, the value expected between two *exact* sample sets of the same
  sizes (below it a sampler's error cannot be seen);
- :func:`assign_components`, :func:`occupation_test`: assign each sample to its most
  likely component and test the counts against the weights (chi-square, scipy);
- :func:`component_errors`: per-component mean and covariance errors with their standard
  errors.

A mixture is anything with attributes ``weights`` (K,), ``means`` (K, d) and ``stds`` (K,)
(isotropic components), e.g. :class:`fastsde.GaussianMixturePath` (its data law p_1) or
``path.marginal(t)``.
"""

import math
from collections import namedtuple

import numpy as np

#: Result of :func:`occupation_test`.
Occupation = namedtuple("Occupation", ["counts", "expected", "fractions", "z", "statistic",
                                       "dof", "p_value"])
Occupation.__doc__ = """Component occupation test.

counts : (K,) int          samples assigned to each component
expected : (K,) float      expected counts (n w_k, or from the reference sample)
fractions : (K,) float     counts / n
z : (K,) float             standardised difference of each count (binomial SE)
statistic, dof, p_value    chi-square statistic, degrees of freedom, p-value
"""

#: Result of :func:`component_errors`.
ComponentErrors = namedtuple("ComponentErrors", [
    "counts", "mean_error", "mean_se", "mean_z", "cov_error", "cov_se", "cov_z",
    "max_mean_error", "max_abs_mean_z", "max_abs_cov_z"])
ComponentErrors.__doc__ = """Per-component moment errors.

counts : (K,)                   samples assigned to each component
mean_error, mean_se : (K, d)    sample mean minus exact (or reference) mean, and its SE
mean_z : (K, d)                 mean_error / mean_se
cov_error, cov_se, cov_z : (K, d, d)   the same for the sample covariance
max_mean_error : float          max |mean_error|
max_abs_mean_z, max_abs_cov_z : float
"""


def _samples(x, name="x", dim=None):
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n, d) with n >= 2; got shape "
                         f"{np.shape(x)}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns (the mixture's dimension); got "
                         f"shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise ValueError(f"{name} has {bad} non-finite rows; drop them (and report how many) "
                         f"before measuring")
    return arr


def _mixture(mixture):
    try:
        w = np.asarray(mixture.weights, dtype=np.float64).ravel()
        mu = np.asarray(mixture.means, dtype=np.float64)
        s = np.asarray(mixture.stds, dtype=np.float64).ravel()
    except AttributeError:
        raise TypeError(f"mixture must have attributes weights (K,), means (K, d) and stds "
                        f"(K,); got {mixture!r}") from None
    if mu.ndim == 1:
        mu = mu.reshape(-1, 1)
    if mu.shape[0] != w.shape[0] or s.shape != w.shape or np.any(s <= 0) or np.any(w <= 0):
        raise ValueError(f"mixture must have weights (K,) > 0, means (K, d), stds (K,) > 0; "
                         f"got shapes {w.shape}, {mu.shape}, {s.shape}")
    return w, mu, s


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    return int(value)


# ---- sliced Wasserstein-1 --------------------------------------------------------------

def random_directions(dim, n_projections, seed=0):
    """``n_projections`` unit vectors in R^dim, uniform on the sphere, from ``seed``.

    Returns
    -------
    numpy.ndarray, shape (n_projections, dim)
    """
    dim = _positive_int(dim, "dim")
    n_projections = _positive_int(n_projections, "n_projections")
    g = np.random.default_rng(seed).standard_normal((n_projections, dim))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def _w1_sorted(a, b):
    """W1 between the empirical laws of two sorted 1-D samples (any sizes)."""
    if a.shape[0] == b.shape[0]:
        return float(np.mean(np.abs(a - b)))
    # Integral of |F_a - F_b| over the merged support.
    allv = np.concatenate([a, b])
    allv.sort(kind="stable")
    deltas = np.diff(allv)
    fa = np.searchsorted(a, allv[:-1], side="right") / a.shape[0]
    fb = np.searchsorted(b, allv[:-1], side="right") / b.shape[0]
    return float(np.sum(np.abs(fa - fb) * deltas))


class SlicedW1:
    """Sliced Wasserstein-1 distance to a fixed reference sample.

    SW1(mu, nu) = E_theta W1(theta . mu, theta . nu), theta uniform on the unit sphere,
    estimated with ``n_projections`` seeded random directions (the same directions for
    every sample compared, so differences between samplers are not projection noise).

    Parameters
    ----------
    reference : array_like, shape (m, d)
        Exact samples (e.g. ``GaussianMixturePath.sample``).
    n_projections : int
    seed : int
        Seed of the directions.
    batch : int
        Directions projected at once (memory: batch * m floats).

    Notes
    -----
    Between two independent exact samples of sizes n and m the empirical distance is not
    zero; its expectation (:meth:`floor`) is, to leading order in 1/n,

        E W1(F_n, G_m) = sqrt(2 / pi) sqrt(1/n + 1/m) int sqrt(F(x) (1 - F(x))) dx

    per direction, because sqrt(n m / (n + m)) (F_n - G_m)(x) tends to a Brownian bridge
    at F(x), with E|N(0, F (1 - F))| = sqrt(2 / pi) sqrt(F (1 - F)). The integral is taken
    from the reference sample's own empirical distribution function.
    """

    def __init__(self, reference, n_projections=64, seed=0, batch=8):
        ref = _samples(reference, "reference")
        self.n_projections = _positive_int(n_projections, "n_projections")
        self.batch = _positive_int(batch, "batch")
        self.directions = random_directions(ref.shape[1], self.n_projections, seed)
        self.dim = ref.shape[1]
        self.n_reference = ref.shape[0]
        self._sorted = []
        self._spread = np.empty(self.n_projections)
        m = ref.shape[0]
        f = np.arange(1, m) / m
        weight = np.sqrt(f * (1.0 - f))
        for i0 in range(0, self.n_projections, self.batch):
            proj = self.directions[i0:i0 + self.batch] @ ref.T
            proj.sort(axis=1)
            self._sorted.append(proj)
            self._spread[i0:i0 + proj.shape[0]] = np.diff(proj, axis=1) @ weight

    def per_direction(self, x):
        """W1 along each direction, shape (n_projections,)."""
        xs = _samples(x, "x", self.dim)
        out = np.empty(self.n_projections)
        for bi, i0 in enumerate(range(0, self.n_projections, self.batch)):
            proj = self.directions[i0:i0 + self.batch] @ xs.T
            proj.sort(axis=1)
            ref = self._sorted[bi]
            for j in range(proj.shape[0]):
                out[i0 + j] = _w1_sorted(proj[j], ref[j])
        return out

    def __call__(self, x):
        """The sliced W1 between ``x`` (n, d) and the reference."""
        return float(np.mean(self.per_direction(x)))

    def floor(self, n_x):
        """Expected sliced W1 between ``n_x`` exact samples and the reference (see Notes).

        Parameters
        ----------
        n_x : int

        Returns
        -------
        float
        """
        n_x = _positive_int(n_x, "n_x")
        factor = math.sqrt(2.0 / math.pi) * math.sqrt(1.0 / n_x + 1.0 / self.n_reference)
        return float(factor * np.mean(self._spread))


def sliced_wasserstein(x, y, n_projections=64, seed=0):
    """Sliced Wasserstein-1 distance between two samples.

    Parameters
    ----------
    x : array_like, shape (n, d)
    y : array_like, shape (m, d)
    n_projections : int
    seed : int
        Seed of the random directions.

    Returns
    -------
    float
    """
    return SlicedW1(y, n_projections, seed)(x)


def sliced_wasserstein_floor(reference, n_x, n_y=None, n_projections=64, seed=0):
    """Expected sliced W1 between independent exact samples of sizes ``n_x`` and ``n_y``.

    Parameters
    ----------
    reference : array_like, shape (m, d)
        A (large) exact sample, used for the projected distribution functions.
    n_x, n_y : int
        Sample sizes (``n_y`` defaults to the reference's size).
    n_projections, seed
        As in :func:`sliced_wasserstein` (same directions for the same seed).

    Returns
    -------
    float
    """
    sw = SlicedW1(reference, n_projections, seed)
    n_y = sw.n_reference if n_y is None else _positive_int(n_y, "n_y")
    n_x = _positive_int(n_x, "n_x")
    factor = math.sqrt(2.0 / math.pi) * math.sqrt(1.0 / n_x + 1.0 / n_y)
    return float(factor * np.mean(sw._spread))


# ---- component occupation and moments --------------------------------------------------

def assign_components(x, mixture, chunk=1 << 16):
    """The most likely component of each sample: argmax_k w_k N(x; mu_k, s_k^2 I).

    Parameters
    ----------
    x : array_like, shape (n, d)
    mixture : GaussianMixture-like
    chunk : int
        Rows processed at once (memory: chunk * K floats).

    Returns
    -------
    numpy.ndarray of int, shape (n,)
    """
    w, mu, s = _mixture(mixture)
    xs = _samples(x, "x", mu.shape[1])
    d = mu.shape[1]
    base = np.log(w) - d * np.log(s)
    inv2v = 0.5 / s**2
    mu_sq = np.sum(mu**2, axis=1)
    labels = np.empty(xs.shape[0], dtype=np.int64)
    for i0 in range(0, xs.shape[0], chunk):
        xc = xs[i0:i0 + chunk]
        q = np.sum(xc**2, axis=1)[:, None] - 2.0 * xc @ mu.T + mu_sq[None, :]
        labels[i0:i0 + chunk] = np.argmax(base[None, :] - q * inv2v[None, :], axis=1)
    return labels


def occupation_test(x, mixture, reference=None):
    """Chi-square test of the component occupations.

    Each sample goes to its most likely component (:func:`assign_components`). Without a
    reference the counts are tested against n w_k (goodness of fit, K - 1 degrees of
    freedom): right when the components are well separated, so that assignment errors
    are negligible. With ``reference`` (exact samples of the same law) the counts are
    compared with the reference's counts (2 x K contingency table), which is right
    whatever the overlap, since both samples are assigned by the same rule.

    Parameters
    ----------
    x : array_like, shape (n, d)
    mixture : GaussianMixture-like
    reference : array_like, shape (m, d), optional

    Returns
    -------
    Occupation
    """
    from scipy import stats as sps  # imported here: it takes seconds, fastsde does not

    w, mu, _ = _mixture(mixture)
    k = w.shape[0]
    counts = np.bincount(assign_components(x, mixture), minlength=k)
    n = counts.sum()
    if reference is None:
        expected = n * w / w.sum()
        p = expected / n
        z = (counts - expected) / np.sqrt(n * p * (1.0 - p))
        if k > 1:
            res = sps.chisquare(counts, expected)
            stat, p_value, dof = float(res.statistic), float(res.pvalue), k - 1
        else:
            stat, p_value, dof = 0.0, 1.0, 0
    else:
        ref_counts = np.bincount(assign_components(reference, mixture), minlength=k)
        m = ref_counts.sum()
        keep = (counts + ref_counts) > 0
        pooled = (counts + ref_counts) / (n + m)
        expected = n * pooled
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(keep, (counts / n - ref_counts / m)
                         / np.sqrt(pooled * (1.0 - pooled) * (1.0 / n + 1.0 / m)), 0.0)
        if keep.sum() > 1:
            res = sps.chi2_contingency(np.vstack([counts[keep], ref_counts[keep]]),
                                       correction=False)
            stat, p_value, dof = float(res.statistic), float(res.pvalue), int(res.dof)
        else:
            stat, p_value, dof = 0.0, 1.0, 0
    return Occupation(counts, expected, counts / n, z, stat, dof, p_value)


def _moments(xs, labels, k, d):
    counts = np.bincount(labels, minlength=k)
    means = np.full((k, d), np.nan)
    covs = np.full((k, d, d), np.nan)
    for c in range(k):
        xc = xs[labels == c]
        if xc.shape[0] >= 1:
            means[c] = xc.mean(axis=0)
        if xc.shape[0] >= 2:
            covs[c] = np.atleast_2d(np.cov(xc, rowvar=False))
    return counts, means, covs


def _cov_se(cov, n):
    """SE of a Gaussian sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / (n - 1))."""
    diag = np.diagonal(cov, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt((diag[..., :, None] * diag[..., None, :] + cov**2)
                       / (np.asarray(n, dtype=np.float64)[..., None, None] - 1.0))


def component_errors(x, mixture, reference=None):
    """Per-component mean and covariance errors, with standard errors.

    Samples are assigned to their most likely component. Without a reference, each
    component's sample mean and covariance are compared with mu_k and s_k^2 I (SE of the
    mean s_k / sqrt(n_k); of a covariance entry sqrt((C_ii C_jj + C_ij^2) / (n_k - 1))
    with the exact C): right for well-separated components. With ``reference`` (exact
    samples of the same law, assigned by the same rule) the moments are compared with
    the reference's, and the SEs of both samples (from their sample moments) are
    combined, which is right whatever the overlap.

    Parameters
    ----------
    x : array_like, shape (n, d)
    mixture : GaussianMixture-like
    reference : array_like, shape (m, d), optional

    Returns
    -------
    ComponentErrors
    """
    w, mu, s = _mixture(mixture)
    k, d = mu.shape
    xs = _samples(x, "x", d)
    counts, means, covs = _moments(xs, assign_components(xs, mixture), k, d)
    nk = np.maximum(counts, 1).astype(np.float64)
    if reference is None:
        exact_cov = (s**2)[:, None, None] * np.eye(d)[None, :, :]
        mean_error = means - mu
        mean_se = np.broadcast_to((s / np.sqrt(nk))[:, None], (k, d)).copy()
        cov_error = covs - exact_cov
        cov_se = _cov_se(exact_cov, counts)
    else:
        rs = _samples(reference, "reference", d)
        r_counts, r_means, r_covs = _moments(rs, assign_components(rs, mixture), k, d)
        rk = np.maximum(r_counts, 1).astype(np.float64)
        mean_error = means - r_means
        var_x = np.diagonal(covs, axis1=1, axis2=2)
        var_r = np.diagonal(r_covs, axis1=1, axis2=2)
        mean_se = np.sqrt(var_x / nk[:, None] + var_r / rk[:, None])
        cov_error = covs - r_covs
        cov_se = np.sqrt(_cov_se(covs, counts) ** 2 + _cov_se(r_covs, r_counts) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_z = mean_error / mean_se
        cov_z = cov_error / cov_se
    return ComponentErrors(counts, mean_error, mean_se, mean_z, cov_error, cov_se, cov_z,
                           float(np.nanmax(np.abs(mean_error))),
                           float(np.nanmax(np.abs(mean_z))), float(np.nanmax(np.abs(cov_z))))
