"""Monte Carlo on a Dask cluster with results identical to one process.

Paths are independent and path i draws its noise from a stream fixed by (seed, i), so a run
of ``n_paths`` paths can be cut into tasks ``[a, b)`` that each call
:func:`fastsde.simulate` with ``first_path=a`` (and every other argument as given) on some
worker. Tasks start on the 512-path chunk grid of ``fastsde.api.CHUNK_PATHS``, so each
chunk holds the paths it holds in one process. Final states, hitting times and saved paths
are then the single-process rows bit for bit, whichever worker ran them; histogram and hit
counts are summed exactly. The statistics (states, observables, hitting times) come back
per task as Welford states (count, mean, M2) and are merged on the client with Chan et
al.'s pairwise formula in float64, in task order, so they equal the single-process ones to
float64 rounding.

Faults: when a worker dies, the Dask scheduler re-runs the tasks it held on another worker
(up to ``distributed.scheduler.allowed-failures`` times per task). Each task's result is
taken once, from its future, so a re-run task is never counted twice. An exception raised
in a task (a user function that raises, a model Numba cannot compile) is re-raised on the
client with its original type and message, and the remaining tasks are cancelled.
"""

import contextlib
import os
import time
import uuid
import warnings

import numpy as np

from . import api, montecarlo
from .errors import FastSDEError, NonFiniteError, OutputTooLargeError
from .kernels import philox
from .result import Result

#: Work per task (path-steps) above which the default task size is cut down, so that a
#: lost worker costs little and the progress bar moves.
TASK_PATH_STEPS = 2 * 10**9
#: Default number of tasks per worker thread (load balance across workers of unequal speed).
TASKS_PER_THREAD = 4


def _usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def connect(address="local", timeout=30):
    """A ``distributed.Client`` for ``address``.

    Parameters
    ----------
    address : str
        ``"local"``: start a LocalCluster of worker processes on this machine, one per usable
        core, one thread each (closed with the client). Otherwise a scheduler address such
        as ``"tcp://10.0.0.5:8786"`` or ``"10.0.0.5:8786"``.
    timeout : float
        Seconds to wait for the scheduler.

    Returns
    -------
    distributed.Client
        Close it (``client.close()``, or use it as a context manager) when done.

    Raises
    ------
    ImportError
        dask.distributed is not installed.
    TypeError, ValueError
        ``address`` is not ``"local"`` or a ``[protocol://]host:port`` string.
    """
    if not isinstance(address, str) or not address.strip():
        raise TypeError(f"address must be 'local' or a scheduler address such as "
                        f"'tcp://HOST:PORT'; got {address!r}")
    address = address.strip()
    if address != "local":
        rest = address.split("://", 1)[-1]
        host, sep, port = rest.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"address must be 'local' or a scheduler address "
                             f"'[protocol://]HOST:PORT' such as 'tcp://10.0.0.5:8786'; "
                             f"got {address!r}")
    Client = _import_distributed().Client
    if address == "local":
        # Processes, not threads: the CPU kernels hold the GIL while they run. ":0": any
        # free port for the scheduler's HTTP server, so two local clusters can coexist.
        return Client(n_workers=_usable_cpus(), threads_per_worker=1, processes=True,
                      dashboard_address=":0", timeout=timeout)
    return Client(address, timeout=timeout)


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError("fastsde.distributed needs dask.distributed: "
                          "pip install 'fastsde[dist]' (or 'dask[distributed]')") from exc
    return distributed


@contextlib.contextmanager
def _client_or_local(client):
    """``client`` checked (a running ``distributed.Client``), or, for None, a LocalCluster
    client for the duration (closed afterwards)."""
    if client is None:
        with connect("local") as own:
            yield own
        return
    distributed = _import_distributed()
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client or None (start a local "
                        f"cluster); got {client!r} of type {type(client).__name__}")
    if client.status != "running":
        raise ValueError(f"client must be running; got a client with status "
                         f"{client.status!r}")
    yield client


def _check_paths_per_task(paths_per_task, chunk):
    """``paths_per_task`` rounded up to the chunk grid: the next multiple of ``chunk``
    (at least one chunk), so that tasks split the paths where one process splits its
    statistics (and, with ``antithetic=True``, every task starts on an even path). None
    stays None (the default size is chosen once the cluster is known)."""
    if paths_per_task is None:
        return None
    if not api._is_int(paths_per_task):
        raise TypeError(f"paths_per_task must be None or an int >= 1; got "
                        f"{paths_per_task!r} of type {type(paths_per_task).__name__}")
    if paths_per_task < 1:
        raise ValueError(f"paths_per_task must be None or an int >= 1 (it is rounded up to "
                         f"a multiple of {chunk}, the chunk size); got {paths_per_task!r}")
    return -(-int(paths_per_task) // chunk) * chunk


def _default_task_paths(n_paths, n_steps, cost, chunk, n_threads):
    """Paths per task when none is given: at least ``TASKS_PER_THREAD`` tasks per worker
    thread and at most ~``TASK_PATH_STEPS`` path-steps per task, as a power-of-two number
    of chunks (rounded down), so that the pairwise merge over tasks has the single-process
    merge tree's shape."""
    n_chunks = -(-n_paths // chunk)
    tasks = max(TASKS_PER_THREAD * max(n_threads, 1),
                -(-n_paths * n_steps * cost // TASK_PATH_STEPS))
    per = max(1, -(-n_chunks // tasks))
    per = 1 << (per.bit_length() - 1)
    return min(per * chunk, n_paths)


def _numba_threads_per_worker(client):
    """Numba threads per task for each worker: the host's usable cores divided by the Dask
    threads of all workers on that host, so that worker processes sharing a machine do not
    oversubscribe it (a lone single-process run uses every core with its own threads)."""
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # older distributed: no n_workers argument
        workers = client.scheduler_info()["workers"]
    if not workers:
        return {}
    try:
        cpus = client.run(_usable_cpus)
    except Exception:  # noqa: BLE001 - a worker leaving now only costs the tuning
        return {}
    per_host = {}
    for addr, info in workers.items():
        per_host[info["host"]] = per_host.get(info["host"], 0) + info["nthreads"]
    return {addr: max(1, cpus[addr] // per_host[info["host"]])
            for addr, info in workers.items() if addr in cpus}


def _welford(count, mean, var):
    """(count, mean, M2) from the (count, mean, unbiased variance) that ``simulate``
    reports. It reports NaN where count is 0 (mean) or <= 1 (var); as Welford state those
    are mean 0 and M2 0, the identity of the merge."""
    count = np.asarray(count, dtype=np.int64)
    mean = np.where(count > 0, np.asarray(mean, dtype=np.float64), 0.0)
    m2 = np.where(count > 1, np.asarray(var, dtype=np.float64) * (count - 1), 0.0)
    return count, mean, m2


@contextlib.contextmanager
def _worker_threads(threads):
    """On a worker: Numba's thread count set to this worker's share of its host (``threads``
    from :func:`_numba_threads_per_worker`) for the duration, then restored."""
    import numba

    n_threads = None
    try:
        from distributed import get_worker

        n_threads = threads.get(get_worker().address)
    except (ImportError, ValueError):
        pass
    old = numba.get_num_threads()
    if n_threads is not None:
        numba.set_num_threads(min(int(n_threads), numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _run_task(model, kwargs, first_path, n_paths, threads):
    """Worker side: one ``fastsde.simulate`` call over paths [first_path, first_path +
    n_paths). Returns the stored rows, the Welford state (count, mean, M2) of each
    statistics group ("st" states, "ob" observables, "hit" hitting times) and the
    histogram counts, so that the client can merge them exactly."""
    with _worker_threads(threads):
        res = api.simulate(model, n_paths=n_paths, first_path=first_path, progress=False,
                           on_nonfinite="count", **kwargs)
    groups = {}
    if res.count is not None:
        groups["st"] = _welford(res.count, res.mean, res.var)
    if res.obs_names:
        groups["ob"] = _welford(res.obs_count, res.obs_mean, res.obs_var)
    if res.hit_count is not None:
        groups["hit"] = _welford(np.full((1, 1), res.hit_count), np.full((1, 1), res.hit_mean),
                                 np.full((1, 1), res.hit_var))
    hist = None
    if res.histogram is not None:
        hist = (res.histogram.counts, res.histogram.below, res.histogram.above)
    return {"n_nonfinite": res.n_nonfinite, "device": res.device, "elapsed_s": res.elapsed_s,
            "rng_version": res.rng_version, "x": res.x, "paths": res.paths,
            "hit_time": res.hit_time, "groups": groups, "hist": hist}


def simulate(model, x0, t_span, n_steps, n_paths, method=None, device="auto", seed=0,
             dtype="float64", params=None, save_at=None, stats=True, first_path=0,
             keep_paths=None, on_nonfinite="count", progress=True, debug=False,
             observables=None, stop_when=None, histogram=None, antithetic=False,
             keep_x=False, increments="gaussian", *, client=None, paths_per_task=None):
    """:func:`fastsde.simulate` on a Dask cluster, with the same results.

    Every argument of :func:`fastsde.simulate` is taken, in its order, with the same
    meaning; only the defaults of ``stats`` (True) and ``keep_x`` (False) differ, since a
    distributed run usually keeps statistics rather than final states. The paths are cut
    into tasks of ``paths_per_task`` consecutive paths; each task runs
    ``fastsde.simulate(..., first_path=a, n_paths=b - a)`` on a worker. Every argument is
    checked on the client (with :func:`fastsde.api.validate`) before a cluster is started
    or a task submitted.

    Parameters
    ----------
    model, x0, t_span, n_steps, n_paths, method, device, seed, dtype, params, save_at, \
first_path, keep_paths, on_nonfinite, debug, observables, stop_when, histogram, antithetic, \
increments
        As in :func:`fastsde.simulate`. Per-path ``x0`` (n_paths, dim) and ``params``
        (n_paths, n_params) are sliced, each task receiving its own rows. ``device`` is
        resolved on each worker (``"cuda"`` needs a GPU on the workers, not on the client).
        ``seed=None`` draws fresh entropy once, on the client, for all tasks.
        ``on_nonfinite`` applies to the paths of all tasks together.
    stats : bool
        Per-save-time mean and variance of each component (default True).
    progress : bool
        A tqdm bar over completed tasks (shown after 2 s, when tqdm is installed).
    keep_x : bool
        Gather the final states ``x`` (n_paths, dim), and ``hit_time`` with
        ``stop_when``, on the client. Default False: a statistics-only run (stats,
        observables, histogram, hitting statistics; and the save-time paths when
        ``keep_paths``), whose client memory does not grow with n_paths.
    client : distributed.Client or None, keyword-only
        None: start a LocalCluster (worker processes, one per usable core, one thread
        each) for this call and close it afterwards.
    paths_per_task : int >= 1 or None, keyword-only
        Paths per task. Tasks are sized on the chunk grid of
        ``fastsde.api.CHUNK_PATHS`` (512 paths): the value is rounded up to the next
        multiple of 512 (at least one chunk; 7000 gives 7168), and a task never holds
        more than n_paths paths; ``Result.extra["paths_per_task"]`` is the size used.
        None: at least four tasks per worker thread and at most ~2e9 path-steps per
        task, as a power-of-two number of chunks (rounded down). GPU workers want larger
        tasks.

    Returns
    -------
    fastsde.Result
        The fields of ``fastsde.simulate``'s result: ``x`` and ``hit_time`` bit for bit
        (None unless ``keep_x``), ``paths`` bit for bit, histogram and hit counts
        exactly, ``mean`` / ``var``, ``obs_*`` and ``hit_mean`` / ``hit_var`` to float64
        rounding (merged per task in float64 with Chan et al.'s pairwise formula, in task
        order). ``elapsed_s`` is the wall time from the first submission to the last
        result (including compilation on workers that had not compiled this kernel
        yet); ``path_steps_per_s`` uses it. ``extra`` holds ``n_paths``, ``dim``,
        ``n_tasks``, ``paths_per_task``, ``n_workers`` and ``task_kernel_s`` (the tasks'
        own kernel times added up).

    Raises
    ------
    TypeError, ValueError
        A bad argument (the message names it, gives the value and says what is
        allowed), before a cluster is started or any task runs.
    fastsde.OutputTooLargeError
        ``x`` / ``hit_time`` / ``paths`` asked for would not fit in the client's memory;
        raised before any task runs.
    fastsde.NonFiniteError
        ``on_nonfinite="raise"`` and some paths left the finite numbers (over all tasks);
        the merged result is in its ``result`` attribute.
    Exception
        The first exception a task raised (a user function that raises, a
        ``fastsde.ModelError`` from a worker's compiler or from ``debug=True`` bounds
        checking, ``fastsde.DeviceError``), with its own type and message; the other
        tasks are cancelled.
    """
    req = api.validate(model, x0, t_span, n_steps, n_paths, method, device, seed, dtype,
                       params, save_at, stats, first_path, keep_paths, on_nonfinite, debug,
                       observables, stop_when, histogram, antithetic, keep_x,
                       progress=progress, increments=increments)
    progress = req.progress
    chunk = api.CHUNK_PATHS
    per = _check_paths_per_task(paths_per_task, chunk)
    n_paths, dim, keep_x = req.n_paths, model.dim, req.keep_x
    n_save = req.save_steps.shape[0]
    itemsize = np.dtype(req.dtype).itemsize
    out_bytes = n_paths * dim * itemsize * ((1 if keep_x else 0)
                                           + (n_save if req.keep_paths else 0))
    out_bytes += n_paths * 8 if (keep_x and req.stop is not None) else 0
    available = api._available_memory()
    if out_bytes and available is not None and out_bytes > 0.8 * available:
        raise OutputTooLargeError(
            f"gathering the requested output on the client needs {out_bytes / 2**30:.2f} GiB "
            f"but only {available / 2**30:.2f} GiB of memory is available (n_paths={n_paths}, "
            f"dim={dim}, keep_x={keep_x}, keep_paths={req.keep_paths}, n_save={n_save}); "
            f"use keep_x=False (statistics only) or split the run with first_path")
    raw = dict(x0=x0, params=params, t_span=t_span, save_at=save_at, histogram=histogram)
    with _client_or_local(client) as c:
        return _run(model, req, raw, c, per, progress, chunk)


def _run(model, req, raw, client, per, progress, chunk):
    from distributed import as_completed

    n_paths, n_steps, first_path = req.n_paths, req.n_steps, req.first_path
    threads = _numba_threads_per_worker(client)
    if per is None:
        per = _default_task_paths(n_paths, n_steps, max(model.drift_cost, 1), chunk,
                                  sum(client.nthreads().values()))
    per = min(per, n_paths)
    bounds = [(a, min(a + per, n_paths)) for a in range(0, n_paths, per)]
    # Arguments travel as the caller gave them (the workers validate them again, to the
    # same values); only per-path x0 and params rows are cut to each task's slice, and
    # observables / stop_when travel as the plain functions the client checked.
    per_path_x0 = req.x0_mode == 1
    per_path_params = req.params_arr.shape[0] > 1
    common = dict(t_span=raw["t_span"], n_steps=n_steps, method=req.method.name,
                  device=req.device, seed=req.seed, dtype=np.dtype(req.dtype).name,
                  save_at=raw["save_at"], stats=req.stats, keep_paths=req.keep_paths,
                  x0=None if per_path_x0 else raw["x0"],
                  params=None if per_path_params else raw["params"], debug=req.debug,
                  observables=dict(req.obs) if req.obs else None, stop_when=req.stop,
                  histogram=raw["histogram"], antithetic=req.antithetic,
                  keep_x=req.keep_x, increments=req.increments)
    run_id = uuid.uuid4().hex[:12]
    futures = []
    start = time.perf_counter()
    try:
        for i, (a, b) in enumerate(bounds):
            kw = dict(common)
            if per_path_x0:
                kw["x0"] = req.x0_rows[a:b]
            if per_path_params:
                kw["params"] = req.params_arr[a:b]
            futures.append(client.submit(_run_task, model, kw, first_path + a, b - a,
                                         threads, key=f"fastsde-{run_id}-{i:08d}",
                                         pure=False))
        index = {f.key: i for i, f in enumerate(futures)}
        parts = [None] * len(futures)
        bar = _progress_bar(len(futures)) if progress else None
        try:
            for fut in as_completed(futures):
                # result() re-raises a task's own exception (type and message).
                parts[index[fut.key]] = fut.result()
                fut.release()
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    except BaseException:
        client.cancel(futures)
        raise
    elapsed = time.perf_counter() - start
    return _assemble(model, req, parts, bounds, per, elapsed, len(client.nthreads()))


def _progress_bar(total):
    try:
        from ._progress import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="task", delay=2.0, desc="fastsde[dask]", leave=False)


def _merge_group(parts, prefix):
    """(count, mean, unbiased var) of one statistics group, merged over the tasks in task
    order with the pairwise tree of :func:`fastsde.api.merge_chunk_stats`."""
    count, mean, m2 = (np.stack([p["groups"][prefix][k] for p in parts]) for k in range(3))
    return api._finish_stats(*api.merge_chunk_stats(count, mean, m2))


def _assemble(model, req, parts, bounds, per, elapsed, n_workers):
    """The Result of the whole run from the tasks' parts, with the fields that
    :func:`fastsde.simulate` builds (same names, shapes and dtypes)."""
    n_paths, n_steps, dim = req.n_paths, req.n_steps, model.dim
    versions = {p["rng_version"] for p in parts}
    if versions != {philox.RNG_VERSION}:
        # Another stream on a worker would silently give other paths for the same seed.
        raise FastSDEError(f"workers ran fastsde with RNG_VERSION {sorted(versions)}, the "
                           f"client has {philox.RNG_VERSION}: install the same fastsde on "
                           f"the client and every worker")
    mean = var = count = None
    if req.stats:
        count, mean, var = _merge_group(parts, "st")
    extra_fields = {}
    if req.obs:
        c, m, v = _merge_group(parts, "ob")
        extra_fields.update(obs_names=tuple(name for name, _ in req.obs), obs_count=c,
                            obs_mean=m, obs_var=v)
    if req.stop is not None:
        c, m, v = _merge_group(parts, "hit")
        hit_time = (np.concatenate([p["hit_time"] for p in parts]) if req.keep_x
                    else None)
        extra_fields.update(hit_time=hit_time, hit_count=int(c[0, 0]),
                            hit_mean=float(m[0, 0]), hit_var=float(v[0, 0]))
    if req.hist is not None:
        counts, below, above = (sum(p["hist"][k] for p in parts) for k in range(3))
        extra_fields["histogram"] = montecarlo.Histogram(
            edges=montecarlo.histogram_edges(*req.hist), counts=counts, below=below,
            above=above)
    x = np.concatenate([p["x"] for p in parts]) if req.keep_x else None
    paths = (np.concatenate([p["paths"] for p in parts], axis=1) if req.keep_paths
             else None)
    devices = sorted({p["device"] for p in parts})
    n_nonfinite = int(sum(p["n_nonfinite"] for p in parts))
    result = Result(
        x=x, t=api._save_times(req.save_steps, req.t0, req.t1, req.h, n_steps),
        paths=paths, mean=mean, var=var, count=count, n_nonfinite=n_nonfinite,
        device=devices[0] if len(devices) == 1 else ",".join(devices),
        method=req.method.name, dtype=np.dtype(req.dtype).name, seed=req.seed,
        rng_version=philox.RNG_VERSION, n_steps=n_steps, first_path=req.first_path,
        elapsed_s=elapsed,
        path_steps_per_s=n_paths * n_steps / elapsed if elapsed > 0 else float("inf"),
        model=model.name,
        extra={"n_paths": n_paths, "dim": dim, "n_tasks": len(bounds),
               "paths_per_task": per, "n_workers": n_workers,
               "task_kernel_s": float(sum(p["elapsed_s"] for p in parts))},
        antithetic=req.antithetic, increments=req.increments, **extra_fields)
    if n_nonfinite and req.on_nonfinite != "count":
        message = (f"{api.nonfinite_summary(n_nonfinite, n_paths)} left the finite "
                   f"numbers; they are counted in Result.n_nonfinite and left out of "
                   f"mean/var." + api._stiffness_advice(model, req.x_start, req.params_arr[0],
                                                        req.t0, req.h))
        if req.on_nonfinite == "raise":
            err = NonFiniteError(message)
            err.result = result
            raise err
        warnings.warn(message, RuntimeWarning, stacklevel=4)
    return result


def _run_mlmc_task(spec, args, first, n_paths, threads):
    """Worker side: paths [first, first + n_paths) of a level batch of fastsde.mlmc; the
    per-chunk sums and non-finite counts (the level kernel compiles on first use)."""
    from .mlmc import run_level_here

    with _worker_threads(threads):
        return run_level_here(spec, args, n_paths, first)


def mlmc(model, x0, t_span, payoff, eps, method="milstein", M=2, n0=1, L_min=2, L_max=20,
         n_initial=2000, seed=0, device="auto", dtype="float64", params=None, progress=True,
         stop_when=None, running_min=None, running_max=None, *, client=None,
         paths_per_task=None):
    """:func:`fastsde.mlmc` on a Dask cluster, with the same result bit for bit.

    Every argument of :func:`fastsde.mlmc` is taken with the same meaning. Each batch of
    pairs a level asks for is cut into tasks of ``paths_per_task`` pairs (rounded up to
    the 512-path chunk grid: a task's chunks are the chunks of one process), each task
    runs the level kernel on a worker, and the per-chunk sums come back and are merged in
    chunk order, as in one process. The sample sizes, which the estimates decide, are
    therefore the same too. Arguments are checked on the client before a cluster starts.

    Parameters
    ----------
    client : distributed.Client or None, keyword-only
        None: start a LocalCluster for this call and close it afterwards.
    paths_per_task : int >= 1 or None, keyword-only
        Pairs per task, rounded up to a multiple of 512. None: a batch is cut into about
        four tasks per worker thread (at least one chunk each).

    Returns
    -------
    fastsde.MLMCResult
        With ``extra["n_tasks"]``, the tasks submitted.
    """
    from .mlmc import _mlmc, _validate

    validated = _validate(model, x0, t_span, payoff, eps, method, M, n0, L_min, L_max,
                          n_initial, seed, device, dtype, params, progress, stop_when,
                          running_min, running_max)
    chunk = api.CHUNK_PATHS
    per = _check_paths_per_task(paths_per_task, chunk)

    def run(c):
        threads = _numba_threads_per_worker(c)
        n_threads = max(1, sum(c.nthreads().values()))
        submitted = [0]

        def run_level(spec, args, n_new):
            size = per or max(chunk, -(-n_new // (TASKS_PER_THREAD * n_threads * chunk))
                              * chunk)
            bounds = [(a, min(a + size, n_new)) for a in range(0, n_new, size)]
            futures = [c.submit(_run_mlmc_task, spec, args, a, b - a, threads, pure=False)
                       for a, b in bounds]
            submitted[0] += len(futures)
            try:
                parts = c.gather(futures)
            except BaseException:
                c.cancel(futures)
                raise
            return (np.concatenate([p for p, _ in parts]),
                    np.concatenate([b for _, b in parts]))

        res = _mlmc(model, x0, t_span, payoff, eps, method, M, n0, L_min, L_max, n_initial,
                    seed, device, dtype, params, progress, stop_when, run_level=run_level,
                    validated=validated)
        res.extra["n_tasks"] = submitted[0]
        return res

    with _client_or_local(client) as c:
        return run(c)
