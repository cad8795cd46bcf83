"""Monte Carlo on a Dask cluster with results identical to one process.

Paths are independent and path i draws its noise from a stream fixed by (seed, i), so a run
of ``n_paths`` paths can be cut into tasks ``[a, b)`` that each call
:func:`fastsde.simulate` with ``first_path=a`` on some worker. Final states are then the
single-process rows bit for bit, whichever worker ran them. Statistics come back per task
as (count, mean, M2) and are merged on the client with Chan et al.'s pairwise formula in
float64, in task order, so they equal the single-process ones to float64 rounding.

Faults: when a worker dies, the Dask scheduler re-runs the tasks it held on another worker
(up to ``distributed.scheduler.allowed-failures`` times per task). Each task's result is
taken once, from its future, so a re-run task is never counted twice. An exception raised
in a task (a user function that raises, a model Numba cannot compile) is re-raised on the
client with its original type and message, and the remaining tasks are cancelled.
"""

import os
import time
import uuid
import warnings

import numpy as np

from . import api
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


def _validate(model, x0, t_span, n_steps, n_paths, method, device, seed, dtype, params,
              save_at, stats, first_path, keep_paths, on_nonfinite):
    """The checks of :func:`fastsde.simulate`, in its order, run once on the client.

    The device is only checked by name: ``"cuda"`` need not work on the client, only on
    the workers (which resolve ``"auto"`` for themselves).
    """
    req = api.validate(model, x0, t_span, n_steps, n_paths, method, device, seed, dtype,
                       params, save_at, stats, first_path, keep_paths, on_nonfinite)
    return dict(n_steps=req.n_steps, n_paths=req.n_paths, first_path=req.first_path,
                t0=req.t0, t1=req.t1, h=req.h, method=req.method.name, device=req.device,
                seed=req.seed, dtype=req.dtype, x0_mode=req.x0_mode, x0_rows=req.x0_rows,
                params_arr=req.params_arr, save_steps=req.save_steps, stats=req.stats,
                keep_paths=req.keep_paths, x_start=req.x_start, x0=x0, params=params,
                t_span=t_span, save_at=save_at)


def _check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def _task_paths(paths_per_task, n_paths, n_steps, cost, chunk, n_threads):
    """Paths per task: a multiple of the run's chunk (so per-chunk statistics are the
    single-process ones), by default a power-of-two number of chunks (so the pairwise merge
    over tasks has the single-process merge tree's shape)."""
    if paths_per_task is not None:
        if not api._is_int(paths_per_task):
            raise TypeError(f"paths_per_task must be None or an int (a multiple of {chunk}, "
                            f"the chunk size of this run); got {paths_per_task!r} of type "
                            f"{type(paths_per_task).__name__}")
        if paths_per_task < 1:
            raise ValueError(f"paths_per_task must be >= 1 (a multiple of {chunk}, the "
                             f"chunk size of this run); got {paths_per_task!r}")
        if paths_per_task % chunk and paths_per_task < n_paths:
            raise ValueError(f"paths_per_task must be a multiple of {chunk} (the chunk size "
                             f"of this run, so that tasks split the paths where a single "
                             f"process splits its statistics) or >= n_paths={n_paths}; got "
                             f"{paths_per_task!r}")
        return int(min(paths_per_task, n_paths))
    n_chunks = -(-n_paths // chunk)
    tasks = max(TASKS_PER_THREAD * max(n_threads, 1),
                -(-n_paths * n_steps * cost // TASK_PATH_STEPS))
    per = max(1, -(-n_chunks // tasks))
    # Down to a power of two: at least `tasks` tasks (better balance), and the merge tree
    # over tasks has the single-process tree's shape.
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


def _run_task(model, kwargs, first_path, n_paths, want_x, threads):
    """Worker side: one ``fastsde.simulate`` call over paths [first_path, first_path +
    n_paths); returns the statistics as (count, mean, M2) so they can be merged exactly."""
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
        res = api.simulate(model, n_paths=n_paths, first_path=first_path, progress=False,
                           on_nonfinite="count", **kwargs)
    finally:
        numba.set_num_threads(old)
    out = {"n_nonfinite": res.n_nonfinite, "device": res.device, "elapsed_s": res.elapsed_s,
           "rng_version": res.rng_version,
           "x": res.x if want_x else None, "paths": res.paths}
    if res.count is not None:
        count = res.count
        # simulate reports NaN where count is 0 (mean) or <= 1 (var); as Welford state
        # those are mean 0 and M2 0, the identity of the merge.
        mean = np.where(count > 0, res.mean, 0.0)
        m2 = np.where(count > 1, res.var * (count - 1), 0.0)
        out.update(count=count, mean=mean, m2=m2)
    return out


def simulate(model, x0, t_span, n_steps, n_paths, method=None, device="auto", seed=0,
             dtype="float64", params=None, save_at=None, stats=True, first_path=0,
             keep_paths=None, on_nonfinite="count", client=None, paths_per_task=None,
             keep_x=False, progress=True):
    """:func:`fastsde.simulate` on a Dask cluster, with the same results.

    The paths are cut into tasks of ``paths_per_task`` consecutive paths; each task runs
    ``fastsde.simulate(..., first_path=a, n_paths=b - a)`` on a worker. Every argument is
    checked on the client before any task is submitted (and before a cluster is started).

    Parameters
    ----------
    model, x0, t_span, n_steps, n_paths, method, device, seed, dtype, params, save_at, \
first_path, keep_paths, on_nonfinite
        As in :func:`fastsde.simulate`. Per-path ``x0`` (n_paths, dim) and ``params``
        (n_paths, n_params) are sliced, each task receiving its own rows. ``device`` is
        resolved on each worker (``"cuda"`` needs a GPU on the workers, not on the client).
        ``seed=None`` draws fresh entropy once, on the client, for all tasks.
    stats : bool
        Per-save-time mean and variance of each component (default True: a distributed
        run usually keeps statistics rather than paths).
    client : distributed.Client or None
        None: start a LocalCluster (worker processes, one per usable core, one thread
        each) for this call and close it afterwards.
    paths_per_task : int or None
        A multiple of the run's chunk size ``fastsde.api.CHUNK_PATHS`` (512), or >=
        n_paths for one task. None:
        at least four tasks per worker thread and at most ~2e9 path-steps per task, as a
        power-of-two number of chunks (rounded down). GPU workers want larger tasks.
    keep_x : bool
        Gather the final states ``x`` (n_paths, dim) on the client. Default False: only
        the statistics (and the save-time paths when ``keep_paths``) come back.
    progress : bool
        A tqdm bar over completed tasks (shown after 2 s, when tqdm is installed).

    Returns
    -------
    fastsde.Result
        As from ``fastsde.simulate``; ``x`` is None unless ``keep_x``. ``elapsed_s`` is the
        wall time from the first submission to the last result (including compilation on
        workers that had not compiled this kernel yet); ``path_steps_per_s`` uses it.
        ``extra`` holds ``n_paths``, ``n_tasks``, ``paths_per_task``, ``n_workers`` and
        ``task_kernel_s`` (the tasks' own kernel times added up).

    Raises
    ------
    TypeError, ValueError
        A bad argument (the message names it), before any task runs.
    fastsde.OutputTooLargeError
        ``x`` / ``paths`` asked for would not fit in the client's memory; raised before
        any task runs.
    fastsde.NonFiniteError
        ``on_nonfinite="raise"`` and some paths left the finite numbers (over all tasks).
    Exception
        The first exception a task raised (a user function that raises, a
        ``fastsde.ModelError`` from a worker's compiler, ``fastsde.DeviceError``), with
        its own type and message; the other tasks are cancelled.
    """
    v = _validate(model, x0, t_span, n_steps, n_paths, method, device, seed, dtype, params,
                  save_at, stats, first_path, keep_paths, on_nonfinite)
    keep_x = _check_flag(keep_x, "keep_x")
    progress = _check_flag(progress, "progress")
    n_paths, n_steps, dim = v["n_paths"], v["n_steps"], model.dim
    n_save = v["save_steps"].shape[0]
    if not (v["stats"] or keep_x or v["keep_paths"]):
        raise ValueError("stats=False with keep_x=False and keep_paths=False would return "
                         "nothing: ask for stats=True, keep_x=True or keep_paths=True")
    chunk = api.CHUNK_PATHS
    if paths_per_task is not None:
        _task_paths(paths_per_task, n_paths, n_steps, 1, chunk, 1)
    itemsize = np.dtype(v["dtype"]).itemsize
    out_bytes = n_paths * dim * itemsize * ((1 if keep_x else 0)
                                           + (n_save if v["keep_paths"] else 0))
    available = api._available_memory()
    if out_bytes and available is not None and out_bytes > 0.8 * available:
        raise OutputTooLargeError(
            f"gathering the requested output on the client needs {out_bytes / 2**30:.2f} GiB "
            f"but only {available / 2**30:.2f} GiB of memory is available (n_paths={n_paths}, "
            f"dim={dim}, keep_x={keep_x}, keep_paths={v['keep_paths']}, n_save={n_save}); "
            f"use keep_x=False (statistics only) or split the run with first_path")
    if client is not None:
        distributed = _import_distributed()
        if not isinstance(client, distributed.Client):
            raise TypeError(f"client must be a distributed.Client or None (start a local "
                            f"cluster); got {client!r} of type {type(client).__name__}")
        if client.status != "running":
            raise ValueError(f"client must be running; got a client with status "
                             f"{client.status!r}")
        return _run(model, v, client, paths_per_task, keep_x, progress, on_nonfinite, chunk)
    with connect("local") as own:
        return _run(model, v, own, paths_per_task, keep_x, progress, on_nonfinite, chunk)


def _run(model, v, client, paths_per_task, keep_x, progress, on_nonfinite, chunk):
    from distributed import as_completed

    n_paths, n_steps, first_path = v["n_paths"], v["n_steps"], v["first_path"]
    threads = _numba_threads_per_worker(client)
    n_threads = sum(client.nthreads().values())
    per = _task_paths(paths_per_task, n_paths, n_steps, max(model.drift_cost, 1), chunk,
                      n_threads)
    bounds = [(a, min(a + per, n_paths)) for a in range(0, n_paths, per)]
    # Arguments travel as the caller gave them (the workers validate them again, to the
    # same values); only per-path x0 and params rows are cut to each task's slice.
    per_path_x0 = v["x0_mode"] == 1
    per_path_params = v["params_arr"].shape[0] > 1
    common = dict(t_span=v["t_span"], n_steps=n_steps, method=v["method"],
                  device=v["device"], seed=v["seed"], dtype=np.dtype(v["dtype"]).name,
                  save_at=v["save_at"], stats=v["stats"], keep_paths=v["keep_paths"],
                  x0=None if per_path_x0 else v["x0"],
                  params=None if per_path_params else v["params"])
    run_id = uuid.uuid4().hex[:12]
    futures = []
    start = time.perf_counter()
    try:
        for i, (a, b) in enumerate(bounds):
            kw = dict(common)
            if per_path_x0:
                kw["x0"] = v["x0_rows"][a:b]
            if per_path_params:
                kw["params"] = v["params_arr"][a:b]
            futures.append(client.submit(_run_task, model, kw, first_path + a, b - a, keep_x,
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
    return _assemble(model, v, parts, bounds, per, keep_x, elapsed, on_nonfinite,
                     len(client.nthreads()))


def _progress_bar(total):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="task", delay=2.0, desc="fastsde[dask]", leave=False)


def _assemble(model, v, parts, bounds, per, keep_x, elapsed, on_nonfinite, n_workers):
    n_paths, n_steps = v["n_paths"], v["n_steps"]
    versions = {p["rng_version"] for p in parts}
    if versions != {philox.RNG_VERSION}:
        # Another stream on a worker would silently give other paths for the same seed.
        raise FastSDEError(f"workers ran fastsde with RNG_VERSION {sorted(versions)}, the "
                           f"client has {philox.RNG_VERSION}: install the same fastsde on "
                           f"the client and every worker")
    mean = var = count = None
    if v["stats"]:
        count, mean, m2 = api.merge_chunk_stats(np.stack([p["count"] for p in parts]),
                                                np.stack([p["mean"] for p in parts]),
                                                np.stack([p["m2"] for p in parts]))
        count, mean, var = api._finish_stats(count, mean, m2)
    x = np.concatenate([p["x"] for p in parts]) if keep_x else None
    paths = (np.concatenate([p["paths"] for p in parts], axis=1) if v["keep_paths"]
             else None)
    devices = sorted({p["device"] for p in parts})
    n_nonfinite = int(sum(p["n_nonfinite"] for p in parts))
    result = Result(
        x=x, t=api._save_times(v["save_steps"], v["t0"], v["t1"], v["h"], n_steps),
        paths=paths, mean=mean, var=var, count=count, n_nonfinite=n_nonfinite,
        device=devices[0] if len(devices) == 1 else ",".join(devices), method=v["method"],
        dtype=np.dtype(v["dtype"]).name, seed=v["seed"], rng_version=philox.RNG_VERSION,
        n_steps=n_steps, first_path=v["first_path"], elapsed_s=elapsed,
        path_steps_per_s=n_paths * n_steps / elapsed if elapsed > 0 else float("inf"),
        model=model.name,
        extra={"n_paths": n_paths, "n_tasks": len(bounds), "paths_per_task": per,
               "n_workers": n_workers,
               "task_kernel_s": float(sum(p["elapsed_s"] for p in parts))})
    if n_nonfinite and on_nonfinite != "count":
        message = (f"{n_nonfinite} of {n_paths} paths ({n_nonfinite / n_paths:.3g}) left the "
                   f"finite numbers; they are counted in Result.n_nonfinite and left out of "
                   f"mean/var." + api._stiffness_advice(model, v["x_start"],
                                                        v["params_arr"][0], v["t0"], v["h"]))
        if on_nonfinite == "raise":
            err = NonFiniteError(message)
            err.result = result
            raise err
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return result
