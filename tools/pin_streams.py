"""Write tests/data/pinned_streams_v{RNG_VERSION}.npz: the first 1000 normals and uniforms
at several (seed, path, first number) positions, the reference that tests/test_pinned.py
compares every build against.

    python tools/pin_streams.py

Run it only together with an RNG_VERSION bump: a stream change without one must fail CI.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fastsde import streams  # noqa: E402
from fastsde.kernels import philox  # noqa: E402

#: (seed, path, first normal number q0, stream)
POSITIONS = [
    (0, 0, 0, philox.STREAM_INCREMENTS),
    (0, 1, 0, philox.STREAM_INCREMENTS),
    (12345, 999_999, 4000, philox.STREAM_INCREMENTS),
    (2**63 + 11, 2**40 + 3, 2**35, philox.STREAM_INCREMENTS),
    (7, 42, 0, philox.STREAM_INITIAL),
]
N = 1000


def compute():
    out = {"rng_version": np.array(philox.RNG_VERSION), "positions": np.array(
        [[s % 2**64, p, q, st] for s, p, q, st in POSITIONS], dtype=np.uint64)}
    for n, (seed, path, q0, stream) in enumerate(POSITIONS):
        q = q0 + np.arange(N, dtype=np.uint64)
        for dt in ("float32", "float64"):
            out[f"normals_{dt}_{n}"] = streams.normals(seed, path, q, stream=stream, dtype=dt)
            out[f"uniforms_{dt}_{n}"] = streams.uniforms(
                seed, path, q0 // 4 + np.arange(N // 4, dtype=np.uint64), stream=stream,
                dtype=dt)
        key = streams.key_from_seed(seed)
        blocks = q0 // 4 + np.arange(N // 4, dtype=np.uint64)
        counters = np.stack(np.broadcast_arrays(
            *philox.block_counter(blocks, np.uint64(stream), np.uint64(path))), axis=-1)
        out[f"words_{n}"] = streams.philox_words(counters, np.array(key))
    return out


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                        f"pinned_streams_v{philox.RNG_VERSION}.npz")
    np.savez_compressed(path, **compute())
    print(f"wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
