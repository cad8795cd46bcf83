"""Throughput of fastsde.distributed on local workers against one process, same run.

10^8 path-steps (OU, Euler-Maruyama, float64, statistics kept, no paths) are run by
``fastsde.simulate`` in this process (Numba threads over every core) and by
``fastsde.distributed.simulate`` on a LocalCluster of worker processes (one per core, one
thread each). Both are warmed up first (each worker compiles the kernel once); the timed
runs alternate, ``--repeat`` times each, and the medians are compared. The distributed
time is wall-clock from the first task submitted to the statistics merged; the
single-process time is given both as kernel time (``Result.elapsed_s``) and as wall-clock
around the call. The merged statistics are checked against the single-process ones.

Usage::

    python bench/distributed.py [--paths 100000] [--steps 1000] [--workers 2] [--repeat 3]
"""

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

# This file is named distributed.py: the script's folder must not stay first on sys.path,
# or `import distributed` would import this file instead of dask.distributed.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

import fastsde as fs  # noqa: E402
from fastsde import distributed as fd  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    import distributed
    import numba

    model = fs.OU(theta=1.0, sigma=0.5)
    run = dict(x0=1.0, t_span=(0.0, 1.0), n_steps=args.steps, n_paths=args.paths,
               device="cpu", seed=0, dtype="float64", stats=True)
    work = args.paths * args.steps
    print(f"fastsde distributed benchmark: OU, euler_maruyama, float64, stats=True, "
          f"{args.paths:,} paths x {args.steps:,} steps = {work:.3g} path-steps")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"{fd._usable_cpus()} usable; python {platform.python_version()}, "
          f"numba {numba.__version__} ({numba.config.NUMBA_NUM_THREADS} threads), "
          f"dask.distributed {distributed.__version__}")
    try:
        print(f"load average before: {os.getloadavg()}")
    except OSError:
        pass

    t = time.perf_counter()
    fs.simulate(model, **dict(run, n_paths=1024), progress=False)
    print(f"single process: compile + 1024-path warm-up {time.perf_counter() - t:.2f} s")

    with distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                  processes=True, dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        t = time.perf_counter()
        cold = fd.simulate(model, **run, client=client, progress=False)
        print(f"distributed: first (cold) run incl. compilation on each worker "
              f"{time.perf_counter() - t:.2f} s, {cold.extra['n_tasks']} tasks of "
              f"{cold.extra['paths_per_task']} paths")
        single_kernel, single_wall, dist_wall = [], [], []
        ref = res = None
        for _ in range(args.repeat):
            t = time.perf_counter()
            ref = fs.simulate(model, **run, progress=False)
            single_wall.append(time.perf_counter() - t)
            single_kernel.append(ref.elapsed_s)
            res = fd.simulate(model, **run, client=client, progress=False)
            dist_wall.append(res.elapsed_s)
    np.testing.assert_allclose(res.mean, ref.mean, rtol=1e-12, atol=0)
    np.testing.assert_allclose(res.var, ref.var, rtol=1e-12, atol=0)
    assert np.array_equal(res.count, ref.count)

    def line(name, times):
        med = statistics.median(times)
        print(f"{name:<42} median {med:7.3f} s  {work / med:10.3e} path-steps/s  "
              f"(runs: {', '.join(f'{x:.3f}' for x in times)})")
        return work / med

    print()
    s_kernel = line("single process, kernel time", single_kernel)
    s_wall = line("single process, wall-clock", single_wall)
    d_wall = line(f"distributed, {args.workers} local workers, wall-clock", dist_wall)
    print()
    print(f"ratio distributed / single (wall-clock):  {d_wall / s_wall:.3f}")
    print(f"ratio distributed / single (kernel time): {d_wall / s_kernel:.3f}")
    print("statistics: distributed == single process to rtol 1e-12, counts equal")
    try:
        print(f"load average after: {os.getloadavg()}")
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
