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
hist_edges      (dim, bins + 1) float64          bin edges (numpy.histogram's rule, below)
nonfinite       (n_chunks,) int64                paths whose final state is not finite
=============== ================================ ===========================================
"""

from collections import namedtuple

import numpy as np

FIELDS = ("x0_rows", "x0_mode", "x0_mean", "x0_std", "params", "t0", "h", "t1", "n_steps",
          "save_steps", "key0", "key1", "first_path", "n_paths", "chunk", "antithetic",
          "x_out", "paths_out", "hit_out", "st_count", "st_mean", "st_m2", "ob_count",
          "ob_mean", "ob_m2", "hit_count", "hit_mean", "hit_m2", "hist", "hist_edges",
          "nonfinite")

KernelArgs = namedtuple("KernelArgs", FIELDS)

#: The Welford output triples, by group: states, observables, hitting times.
STAT_GROUPS = {prefix: (f"{prefix}_count", f"{prefix}_mean", f"{prefix}_m2")
               for prefix in ("st", "ob", "hit")}


class Sizes(namedtuple("Sizes", (
        "dim", "noise_dim", "gshape", "n_params", "n_obs", "n_save", "bins",
        "hist_copies", "chunk", "n_paths", "keep_x", "keep_paths", "stats", "keep_hits",
        "hit_stats"))):
    """Every size a driver allocates or indexes, taken from one validated request.

    ``n_params`` is the width of the parameter rows actually passed (declared, shared or
    per path), not the model's declared count: the kernel's on-stack copy, the per-lane
    buffer and the kernel cache key all follow it, so that a buffer can never be sized
    from one source and filled from another.
    """

    @property
    def n_obs_slots(self):
        """Observable columns in the buffers (at least 1, zero-length when unused)."""
        return max(self.n_obs, 1)

    def scratch_elements(self):
        """Elements of per-path scratch a CPU kernel keeps per thread (state copies,
        stage slopes, the diffusion's out arrays, the increments and extra normals,
        parameters, observables)."""
        g = int(np.prod(self.gshape))
        return 7 * self.dim + 4 * g + 2 * self.noise_dim + max(self.n_params, 1) \
            + 2 * self.n_obs_slots + self.dim


def sizes(model, req, hist_copies=1, chunk=512):
    """The :class:`Sizes` of a request returned by :func:`fastsde.api.validate`.

    Parameters
    ----------
    model : fastsde.SDE or fastsde.ODE
    req : types.SimpleNamespace
        The normalised request (``params_arr`` (1 or n_paths, n_params), ``obs``,
        ``save_steps``, ``hist``, ``keep_x``, ``keep_paths``, ``stats``, ``stop``).
    hist_copies : int
        Histogram copies of the backend (one per CPU worker thread).
    chunk : int
        Paths per statistics chunk.
    """
    has_noise = model.kind == "sde"
    return Sizes(
        dim=model.dim, noise_dim=max(model.noise_dim, 1),
        gshape=tuple(model.diffusion_shape) if has_noise else (1,),
        n_params=int(req.params_arr.shape[1]), n_obs=len(req.obs),
        n_save=int(req.save_steps.shape[0]),
        bins=0 if req.hist is None else int(req.hist[0]),
        hist_copies=int(hist_copies) if req.hist is not None else 0, chunk=int(chunk),
        n_paths=int(req.n_paths), keep_x=bool(req.keep_x), keep_paths=bool(req.keep_paths),
        stats=bool(req.stats), keep_hits=bool(req.keep_x and req.stop is not None),
        hit_stats=req.stop is not None)


def kernel_sizes(dim, n_params, n_obs, noise_dim=1, gshape=(1,)):
    """The compile-time part of :class:`Sizes` (what shapes a kernel), for callers that
    have no request (benchmarks, PTX checks)."""
    return Sizes(dim=dim, noise_dim=noise_dim, gshape=tuple(gshape), n_params=n_params,
                 n_obs=n_obs, n_save=1, bins=0, hist_copies=0, chunk=1, n_paths=0,
                 keep_x=False, keep_paths=False, stats=False, keep_hits=False,
                 hit_stats=False)


def empty_args(sz, dtype):
    """Zero-size arguments of the exact kernel types (to compile before allocating).

    Parameters
    ----------
    sz : Sizes
    dtype : numpy.float32 or numpy.float64
    """
    f8 = np.float64
    i8 = np.int64
    dim, w = sz.dim, sz.n_obs_slots
    return KernelArgs(
        x0_rows=np.zeros((1, dim), dtype), x0_mode=0, x0_mean=np.zeros(dim, dtype),
        x0_std=np.zeros(dim, dtype), params=np.zeros((1, sz.n_params), dtype), t0=f8(0),
        h=f8(0), t1=f8(0), n_steps=0, save_steps=np.zeros(1, i8), key0=np.uint64(0),
        key1=np.uint64(0), first_path=np.uint64(0), n_paths=0, chunk=1, antithetic=0,
        x_out=np.zeros((0, dim), dtype), paths_out=np.zeros((0, 0, dim), dtype),
        hit_out=np.zeros(0, f8), st_count=np.zeros((0, 0, dim), i8),
        st_mean=np.zeros((0, 0, dim), f8), st_m2=np.zeros((0, 0, dim), f8),
        ob_count=np.zeros((0, 0, w), i8), ob_mean=np.zeros((0, 0, w), f8),
        ob_m2=np.zeros((0, 0, w), f8), hit_count=np.zeros((0, 1, 1), i8),
        hit_mean=np.zeros((0, 1, 1), f8), hit_m2=np.zeros((0, 1, 1), f8),
        hist=np.zeros((0, 0, dim, 3), i8), hist_edges=np.zeros((dim, 2), f8),
        nonfinite=np.zeros(0, i8))


def stat_widths(sz):
    """Columns of each Welford group asked for (None: not asked for)."""
    return {"st": sz.dim if sz.stats else None, "ob": sz.n_obs or None,
            "hit": 1 if sz.hit_stats else None}


def stat_buffers(sz, n_chunks):
    """Per-chunk Welford buffers (count int64, mean, M2 float64) of each group asked
    for, shape (n_chunks, n_save or 1, width)."""
    buffers = {}
    for prefix, width in stat_widths(sz).items():
        if width:
            shape = (n_chunks, 1 if prefix == "hit" else sz.n_save, width)
            buffers[prefix] = (np.zeros(shape, np.int64), np.zeros(shape), np.zeros(shape))
    return buffers


def output_buffers(sz, dtype):
    """The stored outputs of a request: final states, save-time paths, hitting times and
    the histogram copies (None where not asked for)."""
    return dict(
        x=np.empty((sz.n_paths, sz.dim), dtype) if sz.keep_x else None,
        paths=(np.empty((sz.n_save, sz.n_paths, sz.dim), dtype) if sz.keep_paths
               else None),
        hits=np.empty(sz.n_paths, np.float64) if sz.keep_hits else None,
        hist=(np.zeros((sz.hist_copies, sz.n_save, sz.dim, sz.bins + 2), np.int64)
              if sz.bins else None))


def stored_bytes(sz, itemsize):
    """Bytes of the stored outputs that grow with n_paths."""
    out = sz.n_paths * sz.dim * itemsize * ((1 if sz.keep_x else 0)
                                            + (sz.n_save if sz.keep_paths else 0))
    return out + (sz.n_paths * 8 if sz.keep_hits else 0)


def check_args(sz, args):
    """Refuse a kernel call whose arrays do not have the request's sizes (a guard in
    front of compiled code that trusts them)."""
    checks = (("params", args.params.shape[1], sz.n_params),
              ("x0_rows", args.x0_rows.shape[1], sz.dim),
              ("hist_edges", args.hist_edges.shape[0], sz.dim))
    for name, got, want in checks:
        if got != want:
            raise AssertionError(f"kernel argument {name} has width {got}, the request "
                                 f"{want}: an internal sizing error, please report it")


def hist_slot(v, edges, j, bins):
    """Histogram slot of the float64 value ``v`` in component ``j``: 0 below the range,
    ``bins + 1`` above it, else 1 + i with ``edges[j, i] <= v < edges[j, i + 1]`` (the
    top edge in the last bin): numpy.histogram's rule on the edges ``edges[j]``
    (``Histogram.edges``), computed as numpy does (an estimate from the uniform spacing,
    then corrected by comparing with the edges). Plain Python, compiled for both targets.
    """
    lo = edges[j, 0]
    hi = edges[j, bins]
    if v < lo:
        return 0
    if v > hi:
        return bins + 1
    i = int(((v - lo) / (hi - lo)) * bins)
    if i >= bins:
        i = bins - 1
    if v < edges[j, i]:
        i -= 1
    if i != bins - 1 and v >= edges[j, i + 1]:
        i += 1
    return i + 1
