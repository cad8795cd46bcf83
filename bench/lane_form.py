#!/usr/bin/env python
"""A user's drift with a loop that stays, run four ways side by side in one process.

The 64-bump field of ``bench/drifts.py`` (row bumps64: the count K read from ``p``, so
the kernel cannot unroll the loop over the bumps), Euler, float32 and float64,
path-steps per second, best of 3 with the cases alternating:

* its lane form (fastsde/kernels/lanes.py), one shared parameter row;
* the same drift path by path (``model.lane_block = None``): kmath's exp in the loop;
* ``math="libm"``: libm's exp, path by path (the drift as it ran before lane forms);
* a row of parameters per path (a sweep): its lane form (the lanes' rows), the same
  drift path by path with kmath's exp, and ``math="libm"``.

A second table runs the same field with a per-path ``if`` statement in its loop
(:func:`branchy_bumps`: exp inside radius 2, a cheaper tail outside), one shared row:
its lane form runs that ``if`` inside the lane loop.

Usage: ``python bench/lane_form.py [--paths N] [--steps N]``.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import math  # noqa: E402

import drifts  # noqa: E402
import fastsde as fs  # noqa: E402


def branchy_bumps(t, x, p, out):
    """``drifts.bumps_drift_any`` with a per-path if statement in the loop."""
    K = (p.shape[0] - 1) // 2
    c = p[2 * K]
    num0 = 0.0
    num1 = 0.0
    den = 0.0
    for k in range(K):
        dx = p[k] - x[0]
        dy = p[K + k] - x[1]
        d2 = dx * dx + dy * dy
        if d2 < 4.0:
            w = math.exp(-d2 * c)
        else:
            w = 0.5 * math.exp(-4.0 * c) / (1.0 + d2)
        num0 += w * dx
        num1 += w * dy
        den += w
    out[0] = num0 / den
    out[1] = num1 / den


def _table(title, cases, x0, n, steps):
    print(f"\n{title}; path-steps/s, best of 3")
    print("| case | float32 | float64 |\n| --- | ---: | ---: |")
    result = {}
    for dtype in ("float32", "float64"):
        for name, model, p in cases:  # compile
            fs.simulate(model, x0[:100], (0.0, 1.0), 2, 100, dtype=dtype, method="euler",
                        params=None if p is None else p[:100])
        best = {name: np.inf for name, _, _ in cases}
        for _ in range(3):
            for name, model, p in cases:
                start = time.perf_counter()
                fs.simulate(model, x0, (0.0, 1.0), steps, n, dtype=dtype, method="euler",
                            params=p)
                best[name] = min(best[name], time.perf_counter() - start)
        for name in best:
            result.setdefault(name, []).append(n * steps / best[name])
    for name, (f32, f64) in result.items():
        print(f"| {name} | {f32:.3g} | {f64:.3g} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args(argv)
    n, steps = args.paths, args.steps
    angles = 2 * np.pi * np.arange(64) / 64
    params = np.concatenate([2 * np.cos(angles), 2 * np.sin(angles), [1 / (2 * 0.49)]])
    x0 = np.random.default_rng(0).standard_normal((n, 2))
    block = fs.ODE(drifts.bumps_drift_any, 2, params=params)
    path_kmath = fs.ODE(drifts.bumps_drift_any, 2, params=params)
    path_kmath.lane_block = None
    libm = fs.ODE(drifts.bumps_drift_any, 2, params=params, math="libm")
    rows = np.tile(params, (n, 1))
    cases = [("lane form, shared row", block, None),
             ("path by path, kmath, shared row", path_kmath, None),
             ("path by path, libm, shared row", libm, None),
             ("lane form, row per path", block, rows),
             ("path by path, kmath, row per path", path_kmath, rows),
             ("path by path, libm, row per path", libm, rows)]
    _table(f"64-bump field, Euler, {n} paths x {steps} steps", cases, x0, n, steps)
    branchy = fs.ODE(branchy_bumps, 2, params=params)
    branchy_path = fs.ODE(branchy_bumps, 2, params=params)
    branchy_path.lane_block = None
    branchy_libm = fs.ODE(branchy_bumps, 2, params=params, math="libm")
    _table(f"The same with a per-path if in the loop, Euler, {n} paths x {steps} steps",
           [("lane form, shared row", branchy, None),
            ("path by path, kmath, shared row", branchy_path, None),
            ("path by path, libm, shared row", branchy_libm, None)], x0, n, steps)


if __name__ == "__main__":
    main()
