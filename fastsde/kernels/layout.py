"""The argument list shared by :func:`fastsde.api.simulate` and the two drivers.

A kernel call takes one :class:`KernelArgs`: inputs, then outputs that the kernel fills.
An output that the run does not ask for is passed with a zero-length leading axis, so
one compiled kernel serves every combination of outputs.

Shapes (``m`` paths in this call, ``n_chunks = ceil(m / chunk)``, ``n_save`` save
times, ``n_obs`` observables (at least 1 in the shapes), ``n_threads`` histogram copies):

=============== ================================ ===========================================
field           shape / type                     meaning
=============== ================================ ===========================================
x0_rows         (1 or m, dim) dtype              initial states (shared or per path)
x0_mode         int                              0 shared, 1 per path, 2 fs.Normal
x0_mean/x0_std  (dim,) dtype                     the fs.Normal law
params          (1 or m, n_params) dtype         shared or per-path parameters
t0, h, t1       float64                          time grid t0 + k h, the last step ends at t1
n_steps         int
save_steps      (n_save,) int64                  step indices of the save times
key0, key1      uint64                           the Philox key
first_path      uint64                           global index of the call's first path
n_paths         int                              m
chunk           int                              paths per statistics chunk
antithetic      int                              1: path i uses the normals of i & ~1, negated
                                                 when i is odd
x_out           (m or 0, dim) dtype              final (or stopped) states
paths_out       (n_save or 0, m or 0, dim)       states at the save times
hit_out         (m or 0,) float64                hitting times (+inf: not stopped)
st_count/mean/m2 (n_chunks or 0, n_save, dim)    Welford state of each component
ob_count/mean/m2 (n_chunks or 0, n_save, n_obs)  Welford state of each observable (per path,
                                                 or per antithetic pair)
hit_count/mean/m2 (n_chunks or 0, 1, 1)          Welford state of the hitting times
hist            (n_threads or 0, n_save, dim,    counts; slot 0 below range, bins + 1 above
                bins + 2) int64                  (added to: copies are summed by the caller)
hist_lo, hist_scale (dim,) float64               bin = floor((v - lo) * scale)
nonfinite       (n_chunks,) int64                paths whose final state is not finite
=============== ================================ ===========================================
"""

import math
from collections import namedtuple

import numpy as np

FIELDS = ("x0_rows", "x0_mode", "x0_mean", "x0_std", "params", "t0", "h", "t1", "n_steps",
          "save_steps", "key0", "key1", "first_path", "n_paths", "chunk", "antithetic",
          "x_out", "paths_out", "hit_out", "st_count", "st_mean", "st_m2", "ob_count",
          "ob_mean", "ob_m2", "hit_count", "hit_mean", "hit_m2", "hist", "hist_lo",
          "hist_scale", "nonfinite")

KernelArgs = namedtuple("KernelArgs", FIELDS)

#: The Welford output triples, by group: states, observables, hitting times.
STAT_GROUPS = {prefix: (f"{prefix}_count", f"{prefix}_mean", f"{prefix}_m2")
               for prefix in ("st", "ob", "hit")}


def empty_args(dim, n_params, n_obs, dtype):
    """Zero-size arguments of the exact kernel types (to compile before allocating)."""
    f8 = np.float64
    i8 = np.int64
    w = max(n_obs, 1)
    return KernelArgs(
        x0_rows=np.zeros((1, dim), dtype), x0_mode=0, x0_mean=np.zeros(dim, dtype),
        x0_std=np.zeros(dim, dtype), params=np.zeros((1, n_params), dtype), t0=f8(0),
        h=f8(0), t1=f8(0), n_steps=0, save_steps=np.zeros(1, i8), key0=np.uint64(0),
        key1=np.uint64(0), first_path=np.uint64(0), n_paths=0, chunk=1, antithetic=0,
        x_out=np.zeros((0, dim), dtype), paths_out=np.zeros((0, 0, dim), dtype),
        hit_out=np.zeros(0, f8), st_count=np.zeros((0, 0, dim), i8),
        st_mean=np.zeros((0, 0, dim), f8), st_m2=np.zeros((0, 0, dim), f8),
        ob_count=np.zeros((0, 0, w), i8), ob_mean=np.zeros((0, 0, w), f8),
        ob_m2=np.zeros((0, 0, w), f8), hit_count=np.zeros((0, 1, 1), i8),
        hit_mean=np.zeros((0, 1, 1), f8), hit_m2=np.zeros((0, 1, 1), f8),
        hist=np.zeros((0, 0, dim, 3), i8), hist_lo=np.zeros(dim, f8),
        hist_scale=np.zeros(dim, f8), nonfinite=np.zeros(0, i8))


def hist_slot(v, lo, scale, bins):
    """Histogram slot of value ``v`` (float64): 0 below the range, ``bins + 1`` above it,
    else 1 + floor((v - lo) * scale), the top edge falling in the last bin. Plain Python,
    compiled for both targets."""
    u = (v - lo) * scale
    if u < 0.0:
        return 0
    if u > bins:
        return bins + 1
    i = int(math.floor(u))
    return (bins - 1 if i >= bins else i) + 1
