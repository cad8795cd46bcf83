"""Monte Carlo outputs computed inside the kernel: observables, stopping, histograms.

This module holds the host side of those features: checking the user's request,
building the single device function that evaluates every observable, the result types
(:class:`Estimate`, :class:`Histogram`) and the streaming merge of per-chunk Welford
statistics. The kernels (kernels/cpu.py, kernels/cuda.py) only call what is built here.
"""

import inspect
import keyword
import math
import numbers
import types
from dataclasses import dataclass

import numpy as np

from .errors import ModelError
from .model import code_fingerprint

#: Two-sided 95% normal quantile, for confidence intervals.
Z95 = 1.959963984540054
#: Limits that keep kernels and buffers reasonable.
MAX_OBSERVABLES = 64
MAX_BINS = 1 << 20
#: Names that Result.estimate gives to the statistics of hitting times (so no observable
#: may take them).
HIT_ESTIMATES = ("hit_time", "hit_probability")


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate with its standard error.

    Attributes
    ----------
    value : float
        The sample mean.
    se : float
        Standard error of ``value``: sd / sqrt(n) over independent units (paths, or
        antithetic pairs).
    ci : (float, float)
        95% normal confidence interval, value -/+ 1.96 se.
    n : int
        Independent units behind the estimate (paths, or pairs with ``antithetic=True``).
    """

    value: float
    se: float
    ci: tuple
    n: int

    @classmethod
    def from_moments(cls, mean, var, n):
        n = int(n)
        if n < 1:
            return cls(float("nan"), float("nan"), (float("nan"), float("nan")), n)
        se = math.sqrt(var / n) if n > 1 else float("nan")
        return cls(float(mean), se, (float(mean) - Z95 * se, float(mean) + Z95 * se), n)

    def __repr__(self):
        return (f"Estimate(value={self.value:.6g}, se={self.se:.3g}, "
                f"ci=({self.ci[0]:.6g}, {self.ci[1]:.6g}), n={self.n})")


@dataclass
class Histogram:
    """Per-component histograms of the state at each save time, counted in the kernel.

    A value v of component j (in float64) falls in bin i when
    ``edges[j, i] <= v < edges[j, i + 1]``, the last bin closed on the right (v == hi[j]
    is counted in it): numpy.histogram's rule, on these edges (``np.linspace(lo[j],
    hi[j], bins + 1)``), so ``np.histogram(v, bins=edges[j])`` gives the same counts.
    Values below ``edges[j, 0]`` or above ``edges[j, -1]`` are counted in ``below`` and
    ``above``. Paths with a non-finite component are not counted.

    Attributes
    ----------
    edges : numpy.ndarray, shape (dim, bins + 1)
    counts : numpy.ndarray of int64, shape (n_save, dim, bins)
    below, above : numpy.ndarray of int64, shape (n_save, dim)
        Values below ``lo`` and above ``hi``.
    """

    edges: np.ndarray
    counts: np.ndarray
    below: np.ndarray
    above: np.ndarray

    def density(self, s=-1, component=0):
        """Counts as a density: counts / (total counted, in range or not) / bin width.

        Returns
        -------
        numpy.ndarray, shape (bins,)
        """
        c = self.counts[s, component].astype(np.float64)
        total = c.sum() + self.below[s, component] + self.above[s, component]
        return c / total / np.diff(self.edges[component])


def _scalar_function(fn, role):
    """The plain Python function behind ``fn``, checked to take (t, x, p)."""
    py_func = getattr(fn, "py_func", fn)
    if not callable(fn) or not isinstance(py_func, types.FunctionType):
        raise TypeError(f"{role} must be a plain Python function f(t, x, p) returning a "
                        f"number; got {fn!r} of type {type(fn).__name__}")
    params = list(inspect.signature(py_func).parameters.values())
    if len(params) != 3 or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                               for p in params):
        raise ModelError(f"{role} function {py_func.__name__!r} must take exactly three "
                         f"arguments (t, x, p) and return a number; it takes "
                         f"{inspect.signature(py_func)}")
    return py_func


def check_observables(observables):
    """Validate ``observables``; returns a tuple of (name, plain function) in order."""
    if observables is None:
        return ()
    if not isinstance(observables, dict):
        raise TypeError(f"observables must be a dict {{name: f(t, x, p)}} or None; got "
                        f"{observables!r} of type {type(observables).__name__}")
    if not 1 <= len(observables) <= MAX_OBSERVABLES:
        raise ValueError(f"observables must hold 1 to {MAX_OBSERVABLES} functions; got "
                         f"{len(observables)}")
    out = []
    for name, fn in observables.items():
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"observables: names must be Python identifiers; got {name!r}")
        out.append((name, _scalar_function(fn, f"observables[{name!r}]")))
    return tuple(out)


def check_stop_when(stop_when):
    """Validate ``stop_when``; returns the plain function or None."""
    if stop_when is None:
        return None
    return _scalar_function(stop_when, "stop_when")


def check_histogram(histogram, dim):
    """Validate ``histogram=dict(bins=..., range=...)``.

    Returns
    -------
    None, or (bins, lo (dim,), hi (dim,)) with float64 bounds.
    """
    if histogram is None:
        return None
    if not isinstance(histogram, dict) or set(histogram) - {"bins", "range"} or \
            "bins" not in histogram or "range" not in histogram:
        raise ValueError(f"histogram must be a dict with keys 'bins' (int) and 'range' "
                         f"((lo, hi), or an array of shape (dim, 2)); got {histogram!r}")
    bins = histogram["bins"]
    if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, numbers.Integral) or \
            not 1 <= bins <= MAX_BINS:
        raise ValueError(f"histogram['bins'] must be an int in [1, {MAX_BINS}]; got {bins!r}")
    try:
        rng = np.asarray(histogram["range"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"histogram['range'] must be (lo, hi) or an array of shape "
                         f"({dim}, 2); got {histogram['range']!r}") from None
    if rng.shape == (2,):
        rng = np.broadcast_to(rng, (dim, 2))
    if rng.shape != (dim, 2):
        raise ValueError(f"histogram['range'] must be (lo, hi) or an array of shape "
                         f"({dim}, 2); got shape {rng.shape}")
    lo, hi = rng[:, 0].copy(), rng[:, 1].copy()
    with np.errstate(over="ignore", invalid="ignore"):
        width = hi - lo
    if not (np.all(np.isfinite(rng)) and np.all(hi > lo) and np.all(np.isfinite(width))):
        raise ValueError(f"histogram['range'] must be finite with hi > lo and hi - lo "
                         f"finite (representable in float64) for every component; got "
                         f"{rng.tolist()}")
    with np.errstate(over="ignore", invalid="ignore"):
        edges = histogram_edges(int(bins), lo, hi)
    if not (np.all(np.isfinite(edges)) and np.all(np.diff(edges, axis=1) > 0)):
        raise ValueError(f"histogram: range {rng.tolist()} with bins={bins} gives bin "
                         f"edges that are not finite and strictly increasing in float64; "
                         f"use a narrower range or fewer bins")
    return int(bins), lo, hi


def histogram_edges(bins, lo, hi):
    """Bin edges, shape (dim, bins + 1)."""
    return np.stack([np.linspace(a, b, bins + 1) for a, b in zip(lo, hi)])


def make_observe(obs, jit):
    """One function ``observe(t, x, p, out)`` writing every observable into ``out``.

    Parameters
    ----------
    obs : tuple of (name, plain function)
    jit : callable
        The target's decorator for inlined device functions; each observable is
        compiled with it and the combined function too.

    Returns
    -------
    The compiled function. With no observables it writes nothing (and compiles away).
    """
    names = {f"_obs{i}": jit(fn) for i, (_, fn) in enumerate(obs)}
    body = "".join(f"    out[{i}] = _obs{i}(t, x, p)\n" for i in range(len(obs)))
    source = "def observe(t, x, p, out):\n" + (body or "    return\n")
    namespace = dict(names)
    exec(compile(source, "<fastsde observables>", "exec"), namespace)
    return jit(namespace["observe"])


def never_stop(t, x, p):
    """The stopping function of a run without ``stop_when``."""
    return -1.0


def fingerprint(obs, stop):
    """What the observables and stopping function contribute to a kernel's key."""
    parts = [(name, code_fingerprint(fn)) for name, fn in obs]
    parts.append(("stop_when", code_fingerprint(stop) if stop is not None else None))
    return repr(parts)


def preflight(obs, stop, x, p, t0, dtype):
    """Run each observable and the stopping function once as plain Python at the initial
    state: an index outside ``x`` or ``p``, or a result that is not a number, is a
    ModelError naming the function (before anything is compiled)."""
    for role, fn in [(f"observables[{n!r}]", f) for n, f in obs] + \
            ([("stop_when", stop)] if stop is not None else []):
        try:
            with np.errstate(all="ignore"):
                value = fn(dtype(t0), np.array(x, dtype=dtype), np.array(p, dtype=dtype))
        except IndexError as exc:
            raise ModelError(f"{role} function {fn.__name__!r} indexes outside its arrays "
                             f"at t0: {exc} (x has shape {np.shape(x)}, p has shape "
                             f"{np.shape(p)})") from None
        except Exception:  # noqa: BLE001 - compiled semantics differ (NaN, not raise)
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real,
                                                                          np.floating,
                                                                          np.integer)):
            if not (isinstance(value, np.ndarray) and value.shape == ()):
                raise ModelError(f"{role} function {fn.__name__!r} must return a number; "
                                 f"it returned {value!r} of type {type(value).__name__}")


def merge_pair(a, b):
    """Chan et al.'s merge of two Welford states (count, mean, m2), arrays of one shape:
    one level of :func:`fastsde.api.merge_chunk_stats`, and the fold of
    :class:`StreamingMerge` (one arithmetic, so both give the same bits)."""
    na, ma, qa = a
    nb, mb, qb = b
    na = na.astype(np.float64)
    nb = nb.astype(np.float64)
    n = na + nb
    delta = mb - ma
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(n > 0, nb / np.where(n > 0, n, 1), 0.0)
        mean = ma + delta * w
        m2 = qa + qb + delta * delta * na * w
    return n, mean, m2


class StreamingMerge:
    """Merge per-chunk Welford statistics that arrive in slices of 2**m chunks.

    The result equals :func:`fastsde.api.merge_chunk_stats` over all chunks at once, bit
    for bit: that function is a pairwise tree over chunk indices, and a slice of 2**m
    chunks starting at a multiple of 2**m is one of its subtrees. Subtree roots are kept
    on a stack as a binary counter and folded from the right at the end, so memory stays
    at one slice plus a logarithmic stack however many paths run.
    """

    def __init__(self):
        self._stack = []  # (level, (count, mean, m2))

    def add(self, count, mean, m2, level):
        """Add the root of a slice of ``2**level`` chunks (already merged)."""
        # Copies: the caller reuses its slice buffers (and a one-chunk merge is a view).
        node = (count.astype(np.float64), np.array(mean, dtype=np.float64),
                np.array(m2, dtype=np.float64))
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            node = merge_pair(left, node)
            level += 1
        self._stack.append((level, node))

    def result(self):
        """(count int64, mean, m2), or None if nothing was added."""
        if not self._stack:
            return None
        node = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            node = merge_pair(left, node)
        count, mean, m2 = node
        return count.astype(np.int64), mean, m2
