"""``simulate``: validate every argument, then dispatch to a backend.

Like scipy's ``solve_ivp``, this module is a thin gate: each argument is checked first,
with a message that names it, gives the value and says what is allowed; only then is
anything compiled, allocated or launched.
"""

import math
import numbers
import os
import time
import types
import warnings

import numpy as np

from . import methods as _methods

from .errors import DeviceError, ModelError, NonFiniteError, OutputTooLargeError
from . import montecarlo
from .kernels import philox
from .kernels import layout
from .kernels.layout import STAT_GROUPS, KernelArgs
from .model import ODE, SDE, Normal
from .result import Result
from .streams import key_from_seed

DEVICES = ("cpu", "cuda", "auto")
DTYPES = {"float32": np.float32, "float64": np.float64}
_MAX_PATH_INDEX = 2**64
_MAX_NORMALS_PER_PATH = 2**58
#: Paths per work chunk; per-chunk statistics are merged in chunk order. Fixed, so that a
#: path's chunk never depends on the request's size (statistics are streamed per kernel
#: call, see _run_stream).
CHUNK_PATHS = 512
#: Upper bound on one kernel call's per-chunk statistics buffers (calls get fewer chunks).
STATS_BUFFER_BYTES = 64 * 2**20


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_model(model):
    if not isinstance(model, (SDE, ODE)):
        raise TypeError(f"model must be a fastsde.SDE or fastsde.ODE (or a built-in model); "
                        f"got {model!r} of type {type(model).__name__}")


def _check_count(value, name, low=1, high=None):
    if not _is_int(value):
        raise TypeError(f"{name} must be an int; got {value!r} of type {type(value).__name__}")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
    return int(value)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_t_span(t_span, n_steps):
    message = (f"t_span must be a pair of finite numbers (t0, t1) with t1 > t0 and t1 - t0 "
               f"finite; got {t_span!r}")
    # A string is a sequence too: "05" would unpack to ("0", "5").
    if isinstance(t_span, (str, bytes)):
        raise ValueError(message)
    try:
        t0, t1 = t_span
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if not (_is_real(t0) and _is_real(t1)):
        raise ValueError(message)
    t0, t1 = float(t0), float(t1)
    if not (math.isfinite(t0) and math.isfinite(t1)) or not t1 > t0 \
            or not math.isfinite(t1 - t0):
        raise ValueError(message)
    h = (t1 - t0) / n_steps
    if not h > 0 or t0 + h == t0:
        raise ValueError(f"t_span={t_span!r} with n_steps={n_steps} gives a step h={h!r} too "
                         f"small to advance time in float64")
    return t0, t1, h


def _check_dtype(dtype):
    name = None
    if dtype is not None:  # np.dtype(None) is float64: refuse rather than guess
        try:
            name = np.dtype(dtype).name
        except TypeError:
            pass
    if name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    return DTYPES[name]


def _check_device(device):
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}; got {device!r}")
    return device


def _check_seed(seed):
    if seed is None:
        return np.random.SeedSequence()
    if isinstance(seed, np.random.SeedSequence) or (_is_int(seed) and seed >= 0):
        return seed
    raise ValueError(f"seed must be a non-negative int, a numpy.random.SeedSequence or None; "
                     f"got {seed!r}")


def _check_x0(x0, dim, n_paths):
    """Returns (mode, rows (r, dim), mean (dim,), std (dim,))."""
    zeros = np.zeros(dim)
    if isinstance(x0, Normal):
        mean, std = x0.mean, x0.std
        for name, arr in (("mean", mean), ("std", std)):
            if arr.size not in (1, dim):
                raise ValueError(f"x0=fs.Normal: {name} must be a number or have shape "
                                 f"({dim},) for a model of dim {dim}; got shape {arr.shape}")
        return (2, np.zeros((1, dim)), np.broadcast_to(mean, (dim,)).copy(),
                np.broadcast_to(std, (dim,)).copy())
    if isinstance(x0, (bool, np.bool_, str, bytes)) or x0 is None:
        raise TypeError(f"x0 must be a number, an array of shape ({dim},) or "
                        f"({n_paths}, {dim}), or fastsde.Normal; got {x0!r}")
    try:
        arr = np.asarray(x0, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"x0 must be a number, an array of shape ({dim},) or "
                        f"({n_paths}, {dim}), or fastsde.Normal; got {x0!r}") from None
    if dim == 1 and arr.shape == (n_paths,) and n_paths > 1:
        arr = arr.reshape(n_paths, 1)
    if arr.shape in ((), (1,)) or arr.shape == (dim,):
        rows, mode = np.broadcast_to(arr.reshape(-1), (dim,)).reshape(1, dim), 0
    elif arr.shape == (n_paths, dim):
        rows, mode = arr, 1
    else:
        raise ValueError(f"x0 must be a number, an array of shape ({dim},) or "
                         f"({n_paths}, {dim}) (n_paths, dim); got shape {arr.shape}")
    if not np.all(np.isfinite(rows)):
        raise ValueError("x0 must be finite; got non-finite values "
                         f"(first at index {np.argwhere(~np.isfinite(rows))[0].tolist()})")
    return mode, np.ascontiguousarray(rows), zeros, zeros


def _check_representable(arr, name, dtype):
    """Refuse finite float64 values that overflow to inf in the run's dtype."""
    big = float(np.finfo(dtype).max)
    with np.errstate(invalid="ignore"):
        over = np.abs(arr) > big
    if np.any(over):
        first = np.argwhere(over)[0].tolist()
        raise ValueError(f"{name} must be representable in dtype={np.dtype(dtype).name} "
                         f"(|value| <= {big:.6g}); got {np.asarray(arr)[tuple(first)]!r} at "
                         f"index {first}")


def _check_params(params, model, n_paths):
    if params is None:
        return model.params.reshape(1, -1)
    try:
        arr = np.asarray(params, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"params must be an array of numbers of shape (n_params,) or "
                        f"(n_paths, n_params); got {params!r}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    expected = model.n_params if model.n_params > 0 else arr.shape[-1]
    if arr.ndim == 1 and arr.shape[0] == expected:
        arr = arr.reshape(1, -1)
    elif not (arr.ndim == 2 and arr.shape == (n_paths, expected)):
        raise ValueError(f"params must have shape ({expected},) or ({n_paths}, {expected}) "
                         f"(n_paths, n_params) for {model!r}; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("params must be finite; got non-finite values")
    return arr


def _check_save_at(save_at, t0, t1, h, n_steps):
    """Returns the step indices (int64, strictly increasing) at which states are saved."""
    if save_at is None:
        return np.array([n_steps], dtype=np.int64)
    if isinstance(save_at, (bool, np.bool_)):
        raise TypeError(f"save_at must be None, an int or an array of times; got {save_at!r}")
    if _is_int(save_at):
        if save_at < 1 or n_steps % save_at != 0:
            raise ValueError(f"save_at as an int K must be >= 1 and divide n_steps={n_steps} "
                             f"(K + 1 evenly spaced times); got {save_at!r}")
        return np.arange(0, n_steps + 1, n_steps // save_at, dtype=np.int64)
    try:
        times = np.asarray(save_at, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"save_at must be None, an int or an array of times; "
                        f"got {save_at!r}") from None
    if times.size == 0 or not np.all(np.isfinite(times)):
        raise ValueError(f"save_at must hold at least one finite time; got {save_at!r}")
    k = np.rint((times - t0) / h)
    off = np.abs(times - (t0 + k * h))
    bad = (k < 0) | (k > n_steps) | (off > 1e-6 * h)
    if np.any(bad):
        raise ValueError(f"save_at times must lie in t_span=({t0}, {t1}) on the step grid "
                         f"t0 + k*h (h={h!r}); {times[bad][:3].tolist()} do not")
    k = k.astype(np.int64)
    if np.any(np.diff(k) <= 0):
        raise ValueError("save_at times must be strictly increasing; got "
                         f"{times.tolist()[:10]}")
    return k


def _save_times(save_steps, t0, t1, h, n_steps):
    t = t0 + save_steps * h
    t[save_steps == n_steps] = t1
    return t


def _available_memory():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def merge_chunk_stats(count, mean, m2):
    """Merge per-chunk Welford statistics in chunk order (Chan et al., pairwise tree).

    Parameters
    ----------
    count, mean, m2 : numpy.ndarray, shape (n_chunks, n_save, dim)

    Returns
    -------
    count, mean, m2 : numpy.ndarray, shape (n_save, dim)
    """
    count = count.astype(np.float64)
    while count.shape[0] > 1:
        if count.shape[0] % 2:
            pad = [(0, 1), (0, 0), (0, 0)]
            count, mean, m2 = (np.pad(a, pad) for a in (count, mean, m2))
        count, mean, m2 = montecarlo.merge_pair((count[0::2], mean[0::2], m2[0::2]),
                                                (count[1::2], mean[1::2], m2[1::2]))
    return count[0].astype(np.int64), mean[0], m2[0]


NONFINITE_POLICIES = ("count", "warn", "raise")


def _preflight(model, x_start, p_row, t0, dtype):
    """Run the user functions once as plain Python on the initial state.

    Python checks every index, so a function that reads or writes outside ``x``, ``p`` or
    ``out`` (or indexes ``out`` with the wrong number of dimensions) is caught here as a
    ModelError naming it, instead of writing out of bounds in a compiled kernel. Other
    Python errors are left to the compiled semantics (math.log(-1) is a NaN there).
    fastsde's own functions marked ``__fastsde_checked__`` (MLPField's forward pass,
    whose indices follow from its widths, which the model's dim and declared parameter
    count fix) are skipped: run in plain Python, a 3-256-256-2 network's 65,536
    multiply-adds took longer than the run they checked.
    """
    x = np.array(x_start, dtype=dtype)
    p = np.array(p_row, dtype=dtype)
    shapes = [("drift", model.drift, (model.dim,))]
    if model.kind == "sde":
        shapes.append(("diffusion", model.diffusion, model.diffusion_shape))
    for role, fn, shape in shapes:
        if getattr(fn, "__fastsde_checked__", False):
            continue
        out = np.zeros(shape, dtype=dtype)
        try:
            with np.errstate(all="ignore"):
                fn(dtype(t0), x.copy(), p.copy(), out)
        except IndexError as exc:
            raise ModelError(
                f"{role} function {fn.__name__!r} indexes outside its arrays at t0: {exc} "
                f"(x has shape {x.shape}, p has shape {p.shape}, out has shape {shape})"
            ) from None
        except Exception:  # noqa: BLE001 - compiled semantics differ (NaN, not raise)
            pass


def _stiffness_advice(model, x_start, p_row, t0, h):
    """A step-size hint when h times the drift's local decay rate at x0 exceeds 1."""
    try:
        x = np.array(x_start, dtype=np.float64)
        p = np.array(p_row, dtype=np.float64)
        f0 = np.zeros(model.dim)
        f1 = np.zeros(model.dim)
        model.drift(t0, x, p, f0)
        rate = 0.0
        for i in range(model.dim):
            dx = 1e-6 * max(1.0, abs(x[i]))
            xp = x.copy()
            xp[i] += dx
            model.drift(t0, xp, p, f1)
            rate = max(rate, abs((f1[i] - f0[i]) / dx))
    except Exception:  # noqa: BLE001
        return ""
    if rate * h > 1.0:
        return (f" Step-size advice: h * |df/dx| = {h:.3g} * {rate:.3g} = {rate * h:.3g} > 1 at "
                f"x0, where explicit schemes are unstable; use a step below {1.0 / rate:.3g}.")
    return ""


#: Path-steps per kernel call: long runs are cut into calls of about this much work, so
#: that Ctrl-C is answered between calls and a progress bar can advance. A backend may
#: set its own (the GPU does ~100x more path-steps per second than the CPU).
SLICE_PATH_STEPS = 2 * 10**8


def _slice_plan(chunk, cost_per_path, bytes_per_chunk, slice_steps):
    """Chunks per kernel call: a power of two (so that the per-chunk statistics of each
    call form one subtree of the merge tree and streamed results equal one call's bit for
    bit), about ``slice_steps`` path-steps of work, and per-call statistics buffers within
    ``STATS_BUFFER_BYTES``."""
    by_work = max(1, slice_steps // max(cost_per_path * chunk, 1))
    by_memory = max(1, STATS_BUFFER_BYTES // max(bytes_per_chunk, 1))
    limit = min(by_work, by_memory)
    return 1 << (limit.bit_length() - 1)


def _progress_bar(n_paths, progress):
    if not progress:
        return None
    try:
        from ._progress import tqdm
    except ImportError:
        return None
    return tqdm(total=n_paths, unit="path", unit_scale=True, delay=2.0, desc="fastsde",
                leave=False)


def _run_stream(backend, kernel, base, outputs, sz, cost_per_path, progress):
    """Run the kernel over chunk-aligned slices of the paths with constant memory.

    Parameters
    ----------
    base : dict
        The inputs of :class:`KernelArgs` for the whole run.
    outputs : dict
        From :func:`layout.output_buffers`: ``x`` (n_paths, dim) or None, ``paths``
        (n_save, n_paths, dim) or None, ``hits`` (n_paths,) or None, ``hist`` (n_threads,
        n_save, dim, bins + 2) or None, and ``empty``, the empty placeholders of each
        kernel output.
    sz : layout.Sizes
        The request's sizes: every buffer here is sized from it.

    Returns
    -------
    dict
        Merged (count, mean, m2) per statistics group and the number of non-finite paths.
    """
    n_paths, chunk, n_save = sz.n_paths, sz.chunk, sz.n_save
    widths = layout.stat_widths(sz)
    bytes_per_chunk = 24 * n_save * sum(w for w in widths.values() if w) + 8
    slice_steps = getattr(backend, "SLICE_PATH_STEPS", SLICE_PATH_STEPS)
    cps = _slice_plan(chunk, cost_per_path, bytes_per_chunk, slice_steps)
    per_slice = cps * chunk
    n_chunks_total = -(-n_paths // chunk)
    level = cps.bit_length() - 1
    chunks_per_call = min(n_chunks_total, cps)
    buffers = layout.stat_buffers(sz, chunks_per_call)
    merges = {prefix: montecarlo.StreamingMerge() for prefix in buffers}
    nonfinite = np.zeros(chunks_per_call, np.int64)
    empty = outputs["empty"]
    bar = _progress_bar(n_paths, progress) if n_paths > per_slice else None
    n_bad = 0
    try:
        for a in range(0, n_paths, per_slice):
            b = min(a + per_slice, n_paths)
            nc = -(-(b - a) // chunk)
            args = dict(base)
            if base["x0_mode"] == 1:
                args["x0_rows"] = base["x0_rows"][a:b]
            if base["params"].shape[0] > 1:
                args["params"] = base["params"][a:b]
            args.update(first_path=base["first_path"] + np.uint64(a), n_paths=b - a,
                        nonfinite=nonfinite[:nc])
            args["x_out"] = outputs["x"][a:b] if outputs["x"] is not None else empty["x_out"]
            args["hit_out"] = (outputs["hits"][a:b] if outputs["hits"] is not None
                               else empty["hit_out"])
            paths_tmp = None
            if outputs["paths"] is not None:
                paths_tmp = np.empty((n_save, b - a, sz.dim), outputs["paths"].dtype)
                args["paths_out"] = paths_tmp
            else:
                args["paths_out"] = empty["paths_out"]
            for prefix, group in STAT_GROUPS.items():
                if prefix in buffers:
                    for name, buf in zip(group, buffers[prefix]):
                        buf[:nc] = 0
                        args[name] = buf[:nc]
                else:
                    for name in group:
                        args[name] = empty[name]
            args["hist"] = outputs["hist"] if outputs["hist"] is not None else empty["hist"]
            backend.run(kernel, KernelArgs(**args))
            if paths_tmp is not None:
                outputs["paths"][:, a:b] = paths_tmp
            n_bad += int(nonfinite[:nc].sum())
            for prefix, (cnt, mean, m2) in buffers.items():
                root = merge_chunk_stats(cnt[:nc], mean[:nc], m2[:nc])
                merges[prefix].add(*root, level)
            if bar is not None:
                bar.update(b - a)
    finally:
        if bar is not None:
            bar.close()
    merged = {prefix: m.result() for prefix, m in merges.items()}
    return merged, n_bad


def _resolve_device(device):
    if device == "cpu":
        return "cpu"
    from .kernels import cuda_available, cuda_driver_absent

    if device == "auto" and cuda_driver_absent():
        return "cpu"

    ok, why = cuda_available()
    if device == "cuda":
        if not ok:
            raise DeviceError(f"device='cuda' cannot be used: {why}. Use device='cpu' or "
                              f"'auto'.")
        return "cuda"
    return "cuda" if ok else "cpu"


def validate(model, x0, t_span, n_steps, n_paths, method, device, seed, dtype, params,
             save_at, stats, first_path, keep_paths, on_nonfinite, debug=False,
             observables=None, stop_when=None, histogram=None, antithetic=False,
             keep_x=True, progress=True, increments="gaussian"):
    """Every check of :func:`simulate`, in its order, before anything is compiled or
    allocated; also run user functions once in plain Python (the pre-flight).

    The device is checked by name only, not resolved (a Dask client checks a request that
    its workers will run). Returns the normalised request as a ``types.SimpleNamespace``.
    """
    _check_model(model)
    n_steps = _check_count(n_steps, "n_steps", 1, 2**40)
    n_paths = _check_count(n_paths, "n_paths", 1)
    first_path = _check_count(first_path, "first_path", 0)
    if first_path + n_paths > _MAX_PATH_INDEX:
        raise ValueError(f"first_path + n_paths must be <= 2**64 (the path counter); got "
                         f"{first_path} + {n_paths}")
    t0, t1, h = _check_t_span(t_span, n_steps)
    if n_steps * max(model.noise_dim, 1) > _MAX_NORMALS_PER_PATH:
        raise ValueError(f"n_steps={n_steps} with noise_dim={model.noise_dim} exceeds the "
                         f"stream's 2**58 normals per path")
    method_obj = _methods.resolve_method(method, model)
    if model.kind == "ode" and increments != "gaussian":
        raise ValueError(f"increments applies to SDEs; an ODE draws none. Got "
                         f"increments={increments!r} for {model!r}")
    increments = _methods.resolve_increments(increments, method_obj)
    device = _check_device(device)
    seed = _check_seed(seed)
    dtype_t = _check_dtype(dtype)
    x0_mode, x0_rows, x0_mean, x0_std = _check_x0(x0, model.dim, n_paths)
    params_arr = _check_params(params, model, n_paths)
    save_steps = _check_save_at(save_at, t0, t1, h, n_steps)
    if not isinstance(stats, (bool, np.bool_)):
        raise TypeError(f"stats must be True or False; got {stats!r}")
    if keep_paths is None:
        keep_paths = save_at is not None and not stats
    elif not isinstance(keep_paths, (bool, np.bool_)):
        raise TypeError(f"keep_paths must be True, False or None; got {keep_paths!r}")
    if not isinstance(debug, (bool, np.bool_)):
        raise TypeError(f"debug must be True or False; got {debug!r}")
    if not isinstance(on_nonfinite, str) or on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}; got "
                         f"{on_nonfinite!r}")
    obs = montecarlo.check_observables(observables)
    for name, _ in obs:
        if name in montecarlo.HIT_ESTIMATES:
            raise ValueError(f"observables: the name {name!r} is reserved for the hitting "
                             f"statistics; choose another")
    stop = montecarlo.check_stop_when(stop_when)
    hist = montecarlo.check_histogram(histogram, model.dim)
    if not isinstance(antithetic, (bool, np.bool_)):
        raise TypeError(f"antithetic must be True or False; got {antithetic!r}")
    if antithetic and (first_path % 2 or n_paths % 2):
        raise ValueError(f"antithetic=True pairs path 2m with path 2m + 1, so n_paths and "
                         f"first_path must be even; got n_paths={n_paths}, "
                         f"first_path={first_path}")
    if not isinstance(keep_x, (bool, np.bool_)):
        raise TypeError(f"keep_x must be True or False; got {keep_x!r}")
    if not (keep_x or keep_paths or stats or obs or hist is not None):
        raise ValueError("keep_x=False with nothing else asked for (stats, observables, "
                         "histogram, keep_paths) would return nothing")
    for name, arr in (("x0", x0_rows), ("x0 (fs.Normal mean)", x0_mean),
                      ("x0 (fs.Normal std)", x0_std), ("params", params_arr)):
        _check_representable(arr, name, dtype_t)
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"progress must be True or False; got {progress!r}")
    x_start = x0_mean if x0_mode == 2 else x0_rows[0]
    _preflight(model, x_start, params_arr[0], t0, dtype_t)
    montecarlo.preflight(obs, stop, x_start, params_arr[0], t0, dtype_t)

    return types.SimpleNamespace(
        n_steps=n_steps, n_paths=n_paths, first_path=first_path, t0=t0, t1=t1, h=h,
        method=method_obj, device=device, seed=seed, dtype=dtype_t, x0_mode=x0_mode,
        x0_rows=x0_rows, x0_mean=x0_mean, x0_std=x0_std, params_arr=params_arr,
        save_steps=save_steps, stats=bool(stats), keep_paths=bool(keep_paths),
        on_nonfinite=on_nonfinite, debug=bool(debug), x_start=x_start, obs=obs, stop=stop,
        hist=hist, antithetic=bool(antithetic), keep_x=bool(keep_x), progress=bool(progress),
        increments=increments)


def simulate(model, x0, t_span, n_steps, n_paths, method=None, device="auto", seed=0,
             dtype="float64", params=None, save_at=None, stats=False, first_path=0,
             keep_paths=None, on_nonfinite="count", progress=True, debug=False,
             observables=None, stop_when=None, histogram=None, antithetic=False,
             keep_x=True, increments="gaussian"):
    """Simulate ``n_paths`` independent paths of an SDE or ODE with a fixed-step scheme.

    Parameters
    ----------
    model : fastsde.SDE or fastsde.ODE
    x0 : float, array_like of shape (dim,) or (n_paths, dim), or fastsde.Normal
        Initial state; ``fs.Normal(mean, std)`` is drawn in the kernel from each path's
        own stream.
    t_span : (float, float)
        (t0, t1) with t1 > t0; step h = (t1 - t0) / n_steps, step k runs from t0 + k h to
        t0 + (k + 1) h, the last ending exactly at t1.
    n_steps : int >= 1
    n_paths : int >= 1
    method : str or None
        A name from ``fastsde.METHODS``; None takes Heun for ODEs, Euler-Maruyama for SDEs.
    device : {"cpu", "cuda", "auto"}
    seed : int >= 0, numpy.random.SeedSequence or None
        Turned into the Philox key by ``SeedSequence``. None draws fresh entropy (recorded
        in ``Result.seed``).
    dtype : {"float32", "float64"}
    params : array_like, shape (n_params,) or (n_paths, n_params), optional
        Overrides the model's parameters, shared or per path. A model declared with
        ``n_params`` parameters takes only that width; a model declared without
        parameters takes any width (``p`` in its functions then has that many entries,
        and the kernel is compiled for that width: the same bits as a model declared
        with those parameters).
    save_at : None, int or array_like of float
        None: final state only. K: the K + 1 evenly spaced times t0, ..., t1 (K divides
        n_steps). An array: times on the step grid.
    stats : bool
        Accumulate per-save-time mean and variance of each component in the kernel (in
        float64) without keeping paths.
    first_path : int >= 0
        Global index of the first path: rows a:b of a run equal a run of b - a paths with
        ``first_path=a``.
    keep_paths : bool or None
        Store the states at the save times in ``Result.paths``. Default: when ``save_at``
        is given and ``stats`` is false.
    on_nonfinite : {"count", "warn", "raise"}
        Paths whose final state is not finite are always counted in
        ``Result.n_nonfinite`` and left out of ``mean`` / ``var``; "warn" also issues a
        RuntimeWarning and "raise" raises ``fastsde.NonFiniteError`` (with the result in
        its ``result`` attribute), both with step-size advice when the drift looks stiff.
    progress : bool
        Show a progress bar (tqdm, when installed) for runs longer than about 2 s. Long
        runs are cut into chunk-aligned kernel calls either way, so Ctrl-C stops them
        between calls and leaves the interpreter usable.
    debug : bool
        Compile the kernel with bounds checking (slower): an index outside an array in a
        user function raises ``fastsde.ModelError`` instead of touching memory that is
        not its own.
    observables : dict of {str: function}, optional
        ``{name: f(t, x, p) -> float}``, plain Python functions compiled into the kernel.
        Mean and variance of each are accumulated in float64 at every save time;
        ``Result.estimate(name)`` gives the value, standard error and 95% interval.
        Paths whose state or value is not finite are left out (``Result.obs_count``).
    stop_when : function, optional
        ``g(t, x, p)``: a path stops (is absorbed) the first time g > 0 on the step grid
        (checked at t0 and after every step). Its state stays at the first state with
        g > 0; ``Result.hit_time`` (n_paths,) holds the time (+inf if it never stopped,
        when ``keep_x``), and the count, mean and variance of the hitting times are
        accumulated in the kernel (``Result.estimate("hit_time")``, ``"hit_probability"``).
    histogram : dict, optional
        ``dict(bins=int, range=(lo, hi) or array (dim, 2))``: per-component histograms of
        the state at every save time, counted in the kernel (``Result.histogram``).
    antithetic : bool
        Paths 2m and 2m + 1 use the same normals with opposite signs (n_paths and
        first_path must be even); observables are accumulated per pair, so their
        standard errors account for the pairing. Path 2m equals path 2m of a run without
        antithetic variates.
    keep_x : bool
        Store the final states (and hitting times). False: a statistics-only run
        (stats, observables, histogram) whose memory does not grow with n_paths; it is
        streamed through the kernel in slices, so n_paths = 10**10 fits on a laptop.
    increments : {"gaussian", "three_point", "two_point"}
        The random increments of each step. "gaussian": N(0, h), the Wiener increments
        (every method). "three_point": +-sqrt(3 h) with probability 1/6 each, 0 with 2/3
        (the weak order 2 methods ``sra1``, ``sriw1``). "two_point": +-sqrt(h) with
        probability 1/2 each (the weak order 1 methods ``euler_maruyama``,
        ``euler_heun``). Discrete increments match the Gaussian moments a method's weak
        order needs and are cheaper to draw (no Gaussian transform; a Philox call gives
        128 two-point draws), but their paths are not Brownian paths: only
        expectations (weak quantities) are right. Recorded in ``Result.increments``.

    Returns
    -------
    fastsde.Result

    Raises
    ------
    TypeError, ValueError
        A bad argument; the message names it.
    fastsde.IncompatibleMethodError
        The method does not fit the model.
    fastsde.ModelError
        A user function does not compile.
    fastsde.DeviceError
        ``device="cuda"`` and no usable GPU.
    fastsde.OutputTooLargeError
        The stored output would not fit in memory.
    fastsde.NonFiniteError
        ``on_nonfinite="raise"`` and some paths left the finite numbers.
    """
    return _simulate(model, x0, t_span, n_steps, n_paths, method, device, seed, dtype,
                     params, save_at, stats, first_path, keep_paths, on_nonfinite, progress,
                     debug, observables, stop_when, histogram, antithetic, keep_x,
                     increments=increments)


def compile(model, x0=None, method=None, device="auto", dtype="float64", params=None,
            observables=None, stop_when=None, t0=0.0, debug=False, increments="gaussian"):
    """Compile, or load from the disk cache, the kernel that :func:`simulate` runs for
    these arguments, without simulating: the compile time is paid up front (before
    timing a run, before a loop of small runs, on each Dask worker).

    The kernel depends on the model, method, dtype, device, the width of the parameter
    rows, the observables, ``stop_when`` and ``debug``; the time grid, path count, seed,
    initial-state kind, statistics, stored paths, histograms and antithetic variates are
    run-time data, so any :func:`simulate` call with the same arguments here reuses it.
    On the CPU, one shared parameter row and a row per path are two kernels (in the
    first the parameters are loop-invariant, which lets the compiler compute what the
    step derives from them once per step instead of once per path): ``params`` says
    which.

    Parameters
    ----------
    model : fastsde.SDE or fastsde.ODE
    x0 : as in :func:`simulate`, optional
        The state at which the user functions are run once in plain Python before
        compiling (the pre-flight that names a function at fault); zeros by default.
        Per-path rows are accepted (the kernel is the same); ``fs.Normal`` also
        prepares its initial-state normals.
    method, device, dtype, observables, stop_when, debug, increments : as in :func:`simulate`
    params : array_like, shape (n_params,) or (n_rows, n_params), optional
        The width, and on the CPU whether there is one row (shape (n_params,) or
        (1, n_params): the kernel for shared parameters) or several (the kernel for a
        row per path); the values do not matter.
    t0 : float
        The time at which the pre-flight runs the user functions.

    Returns
    -------
    float
        Seconds spent (compiling or loading; about 0 when the process already holds
        the kernel).

    Raises
    ------
    The errors of :func:`simulate` for the same arguments, before anything compiles.
    """
    start = time.perf_counter()
    _check_model(model)
    if x0 is None:
        x0 = np.zeros(model.dim)
    elif not isinstance(x0, Normal):
        x0 = np.asarray(x0, dtype=np.float64)
        x0 = x0[0] if x0.ndim == 2 and x0.shape[0] >= 1 else x0
    if params is not None:
        params = np.asarray(params)
        if params.ndim == 2 and params.shape[0] >= 1:
            # One row: the kernel for shared parameters; two stand for any number of rows
            # per path (the same kernel).
            params = params[0] if params.shape[0] == 1 else params[:2]
    # One step of two paths (an even count: antithetic-neutral): the kernel is the one
    # any run with these arguments compiles, and the run itself costs nothing.
    _simulate(model, x0, (float(t0), float(t0) + 1.0), 1, 2, method=method, device=device,
              dtype=dtype, params=params, observables=observables, stop_when=stop_when,
              debug=debug, progress=False, increments=increments)
    return time.perf_counter() - start


def _simulate(model, x0, t_span, n_steps, n_paths, method=None, device="auto", seed=0,
              dtype="float64", params=None, save_at=None, stats=False, first_path=0,
              keep_paths=None, on_nonfinite="count", progress=True, debug=False,
              observables=None, stop_when=None, histogram=None, antithetic=False,
              keep_x=True, rng_only=False, increments="gaussian"):
    """:func:`simulate`, plus ``rng_only`` (the RNG-only ceiling of the benchmarks: the
    scheme's update replaced by adding the increments)."""
    req = validate(model, x0, t_span, n_steps, n_paths, method, device, seed, dtype, params,
                   save_at, stats, first_path, keep_paths, on_nonfinite, debug, observables,
                   stop_when, histogram, antithetic, keep_x, progress, increments)
    device = _resolve_device(req.device)
    n_steps, n_paths, first_path = req.n_steps, req.n_paths, req.first_path
    t0, t1, h, method_obj, seed, dtype_t = req.t0, req.t1, req.h, req.method, req.seed, req.dtype
    save_steps = req.save_steps
    x_start = req.x_start
    obs, stop, hist, antithetic = req.obs, req.stop, req.hist, req.antithetic
    if device == "cuda":
        from .kernels import cuda as backend
    else:
        from .kernels import cpu as backend
    chunk = CHUNK_PATHS
    # Every buffer below takes its size from sz, and the kernel is compiled for it.
    sz = layout.sizes(model, req, backend.histogram_copies() if hist is not None else 0,
                      chunk)
    dim, n_save = sz.dim, sz.n_save
    itemsize = np.dtype(dtype_t).itemsize
    backend.check_scratch(sz, dtype_t, model)
    # Stored outputs grow with n_paths; statistics, observables and histograms do not
    # (they are streamed per kernel call), so only the former can be refused for size.
    out_bytes = layout.stored_bytes(sz, itemsize)
    available = _available_memory()
    if available is not None and out_bytes > 0.8 * available:
        raise OutputTooLargeError(
            f"the requested stored output needs {out_bytes / 2**30:.2f} GiB but only "
            f"{available / 2**30:.2f} GiB of memory is available (n_paths={n_paths}, "
            f"dim={dim}, keep_x={sz.keep_x}, keep_paths={sz.keep_paths}, n_save={n_save}). "
            f"Alternatives: keep_x=False with stats=True, observables=... or "
            f"histogram=... (computed in the kernel with constant memory, for any "
            f"n_paths); fewer save times (save_at); or split the run with first_path")

    key0, key1 = key_from_seed(seed)
    kernel = backend.get_kernel(model, method_obj, dtype_t, debug=req.debug,
                                rng_only=bool(rng_only), obs=obs, stop=stop,
                                n_params=sz.n_params, increments=req.increments,
                                per_path_params=req.params_arr.shape[0] > 1)

    outputs = layout.output_buffers(sz, dtype_t)
    outputs["empty"] = layout.empty_args(sz, dtype_t)._asdict()
    hist_edges = (montecarlo.histogram_edges(*hist) if hist is not None
                  else outputs["empty"]["hist_edges"])
    base = dict(x0_rows=req.x0_rows.astype(dtype_t), x0_mode=req.x0_mode,
                x0_mean=req.x0_mean.astype(dtype_t), x0_std=req.x0_std.astype(dtype_t),
                params=np.ascontiguousarray(req.params_arr, dtype=dtype_t), t0=t0, h=h, t1=t1,
                n_steps=n_steps, save_steps=save_steps, key0=key0, key1=key1,
                first_path=np.uint64(first_path), n_paths=n_paths, chunk=chunk,
                antithetic=int(antithetic),
                hist_edges=np.ascontiguousarray(hist_edges, np.float64))
    start = time.perf_counter()
    try:
        merged, n_nonfinite = _run_stream(backend, kernel, base, outputs, sz,
                                          n_steps * max(model.drift_cost, 1), req.progress)
    except IndexError as exc:
        raise ModelError(_bounds_message(model, sz, obs, stop, exc)) from None
    elapsed = time.perf_counter() - start

    mean = var = count = None
    if sz.stats:
        count, mean, var = _finish_stats(*merged["st"])
    extra_fields = {}
    if obs:
        c, m, v = _finish_stats(*merged["ob"])
        extra_fields.update(obs_names=tuple(name for name, _ in obs), obs_count=c,
                            obs_mean=m, obs_var=v)
    if stop is not None:
        c, m, v = _finish_stats(*merged["hit"])
        extra_fields.update(hit_time=outputs["hits"], hit_count=int(c[0, 0]),
                            hit_mean=float(m[0, 0]), hit_var=float(v[0, 0]))
    if hist is not None:
        counts = outputs["hist"].sum(axis=0)
        extra_fields["histogram"] = montecarlo.Histogram(
            edges=hist_edges, counts=counts[..., 1:-1],
            below=counts[..., 0], above=counts[..., -1])
    result = Result(
        x=outputs["x"], t=_save_times(save_steps, t0, t1, h, n_steps),
        paths=outputs["paths"], mean=mean, var=var, count=count,
        n_nonfinite=n_nonfinite, device=device, method=method_obj.name,
        dtype=np.dtype(dtype_t).name, seed=seed, rng_version=philox.RNG_VERSION,
        n_steps=n_steps, first_path=first_path, elapsed_s=elapsed,
        path_steps_per_s=n_paths * n_steps / elapsed if elapsed > 0 else float("inf"),
        model=model.name, extra={"n_paths": n_paths, "dim": dim}, antithetic=antithetic,
        increments=req.increments, **extra_fields)
    if result.n_nonfinite and req.on_nonfinite != "count":
        message = (f"{nonfinite_summary(result.n_nonfinite, n_paths)} left the finite "
                   f"numbers; they are counted in Result.n_nonfinite and left out of "
                   f"mean/var." + _stiffness_advice(model, x_start, req.params_arr[0], t0, h))
        if req.on_nonfinite == "raise":
            err = NonFiniteError(message)
            err.result = result
            raise err
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return result


def nonfinite_summary(n_bad, n_paths):
    """"3 of 1000 paths (0.3%)": the count and its share, in words."""
    return f"{n_bad} of {n_paths} paths ({100.0 * n_bad / n_paths:.3g}%)"


def _bounds_message(model, sz, obs, stop, exc):
    """The ModelError text for an index out of bounds found by ``debug=True``: which
    functions ran in the kernel and the shapes of what each may index."""
    shapes = [f"drift {model.drift.__name__!r}: x ({sz.dim},), p ({sz.n_params},), "
              f"out ({sz.dim},)"]
    if model.kind == "sde":
        shapes.append(f"diffusion {model.diffusion.__name__!r}: x ({sz.dim},), p "
                      f"({sz.n_params},), out {tuple(model.diffusion_shape)}")
    for name, fn in obs:
        shapes.append(f"observables[{name!r}] {fn.__name__!r}: x ({sz.dim},), p "
                      f"({sz.n_params},)")
    if stop is not None:
        shapes.append(f"stop_when {stop.__name__!r}: x ({sz.dim},), p ({sz.n_params},)")
    return (f"a function of the model {model.name!r} indexed outside an array during the "
            f"run (found by debug=True bounds checking: {exc}). The functions compiled into "
            f"the kernel and the shapes they may index are: " + "; ".join(shapes))


def _finish_stats(count, mean, m2):
    """(count, mean, unbiased variance) from a merged Welford state; NaN where undefined."""
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(count > 1, m2 / np.maximum(count - 1, 1), np.nan)
    return count, np.where(count > 0, mean, np.nan), var
