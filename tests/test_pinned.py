"""The random stream is pinned: a change without an RNG_VERSION bump fails here.

The reference file holds, for several (seed, path, position, stream), the first 1000
normals and uniforms in float32 and float64 and the raw Philox words. Words must match
exactly; normals and uniforms to a few ulp (the transcendental functions of numpy / the
compiler may differ by that much across platforms; a real stream change moves them by O(1)).
"""

import glob
import os
import sys

import numpy as np
import pytest

import fastsde as fs
from fastsde.kernels import philox

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import pin_streams  # noqa: E402


def test_reference_exists_for_current_version():
    path = os.path.join(DATA, f"pinned_streams_v{fs.RNG_VERSION}.npz")
    assert os.path.exists(path), (
        f"RNG_VERSION={fs.RNG_VERSION} has no pinned reference: run tools/pin_streams.py")
    versions = sorted(glob.glob(os.path.join(DATA, "pinned_streams_v*.npz")))
    assert versions[-1].endswith(f"v{fs.RNG_VERSION}.npz"), versions


@pytest.fixture(scope="module")
def pinned():
    return dict(np.load(os.path.join(DATA, f"pinned_streams_v{fs.RNG_VERSION}.npz")))


@pytest.fixture(scope="module")
def current():
    return pin_streams.compute()


def test_pinned_words_are_exact(pinned, current):
    assert int(pinned["rng_version"]) == philox.RNG_VERSION
    for n in range(len(pin_streams.POSITIONS)):
        assert np.array_equal(pinned[f"words_{n}"], current[f"words_{n}"]), n


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pinned_normals_and_uniforms(pinned, current, dtype):
    """Since RNG_VERSION 2 the Gaussian transform uses only correctly rounded IEEE
    operations (no libm), so the normals are pinned bit for bit."""
    for n in range(len(pin_streams.POSITIONS)):
        for kind in ("normals", "uniforms"):
            ref = pinned[f"{kind}_{dtype}_{n}"]
            now = current[f"{kind}_{dtype}_{n}"]
            bad = now != ref
            assert not bad.any(), (f"{kind} {dtype} position {n} moved at "
                                   f"{np.flatnonzero(bad)[:5]}: stream changed without an "
                                   f"RNG_VERSION bump")


def test_kernel_increments_equal_the_pinned_stream():
    """The CPU kernel draws exactly these normals: Brownian motion with sigma = 1 and h = 1
    has increments equal to the stream's normals q = 0, 1, ... of its path."""
    ref = np.load(os.path.join(DATA, f"pinned_streams_v{fs.RNG_VERSION}.npz"))
    for dtype, tol in (("float32", 2e-5), ("float64", 1e-12)):
        r = fs.simulate(fs.BrownianMotion(1.0), 0.0, (0.0, 64.0), 64, 2, device="cpu", seed=0,
                        dtype=dtype, save_at=64)
        inc = np.diff(r.paths[:, :, 0].astype(np.float64), axis=0)
        for path in (0, 1):
            expected = ref[f"normals_{dtype}_{path}"][:64].astype(np.float64)
            np.testing.assert_allclose(inc[:, path], expected, rtol=0, atol=tol)


def test_a_changed_stream_is_detected(pinned, current):
    """The comparisons can fail: one flipped word or a normal moved by 1e-9 is caught."""
    words = current["words_0"].copy()
    words[3, 1] ^= 1
    assert not np.array_equal(pinned["words_0"], words)
    moved = np.nextafter(current["normals_float64_0"], np.inf)
    assert np.any(moved != pinned["normals_float64_0"])
