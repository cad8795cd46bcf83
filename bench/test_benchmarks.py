"""pytest-benchmark suite: fastsde against a vectorised numpy loop on the OU problem.

    python -m pytest bench/test_benchmarks.py --benchmark-only [--benchmark-json out.json]

Not part of the test suite (CI runs ``tests/`` only): timings are measured here, never
asserted. Problem: OU theta = 1, sigma = 0.5, x0 = 1, t in [0, 1], 1000 steps, final state
only; 2 * 10^5 paths so that a round takes about a second.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fastsde as fs  # noqa: E402
from ou_vs_numpy import numpy_em  # noqa: E402

N_PATHS = 200_000
N_STEPS = 1000
MODEL = fs.OU(theta=1.0, sigma=0.5)


def _fastsde(dtype, rng_only=False):
    return fs.api._simulate(MODEL, 1.0, (0.0, 1.0), N_STEPS, N_PATHS, dtype=dtype, device="cpu",
                       progress=False, rng_only=rng_only)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fastsde_ou(benchmark, dtype):
    _fastsde(dtype)  # compile (or load from the disk cache) outside the timing
    benchmark.extra_info["path_steps"] = N_PATHS * N_STEPS
    result = benchmark.pedantic(_fastsde, args=(dtype,), rounds=5, iterations=1)
    assert result.x.shape == (N_PATHS, 1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fastsde_rng_ceiling(benchmark, dtype):
    _fastsde(dtype, rng_only=True)
    benchmark.extra_info["path_steps"] = N_PATHS * N_STEPS
    benchmark.pedantic(_fastsde, args=(dtype, True), rounds=5, iterations=1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_ou(benchmark, dtype):
    benchmark.extra_info["path_steps"] = N_PATHS * N_STEPS
    x = benchmark.pedantic(numpy_em, args=(N_PATHS, N_STEPS, dtype), rounds=3, iterations=1)
    assert x.shape == (N_PATHS,)
