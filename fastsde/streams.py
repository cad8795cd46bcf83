"""Host-side access to fastsde's random streams (numpy, vectorised).

The same Philox and Gaussian-transform source the kernels compile runs here on numpy
arrays, so these functions return exactly the words and the normals (bit for bit) that a
CPU kernel uses. Used by the known-answer tests, the
pinned-stream file and the statistical battery.
"""

import numbers

import numpy as np

from .kernels import philox

RNG_VERSION = philox.RNG_VERSION


def key_from_seed(seed):
    """The Philox key ``(k0, k1)`` of a seed: ``SeedSequence(seed).generate_state(2, uint32)``.

    Parameters
    ----------
    seed : int >= 0 or numpy.random.SeedSequence

    Returns
    -------
    tuple of 2 numpy.uint64
    """
    if isinstance(seed, np.random.SeedSequence):
        ss = seed
    elif isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)) \
            and seed >= 0:
        ss = np.random.SeedSequence(int(seed))
    else:
        raise ValueError(f"seed must be a non-negative int or a numpy.random.SeedSequence; "
                         f"got {seed!r}")
    k = ss.generate_state(2, np.uint32)
    return np.uint64(k[0]), np.uint64(k[1])


def philox_words(counter, key):
    """Philox4x32-10 on arrays: ``counter`` (..., 4) and ``key`` (2,) of 32-bit values.

    Returns
    -------
    numpy.ndarray of uint32, shape (..., 4)
    """
    c = np.asarray(counter, dtype=np.uint64)
    k = np.asarray(key, dtype=np.uint64)
    out = philox.philox4x32_10(c[..., 0], c[..., 1], c[..., 2], c[..., 3], k[0], k[1])
    return np.stack(out, axis=-1).astype(np.uint32)


def _blocks(key, path, block, stream):
    path = np.asarray(path, dtype=np.uint64)
    block = np.asarray(block, dtype=np.uint64)
    return philox.block_words(key[0], key[1], block, np.uint64(stream), path)


def normals(seed, path, q, stream=philox.STREAM_INCREMENTS, dtype="float64"):
    """Standard normal number ``q`` of ``path`` in ``stream``, as the kernels draw it.

    For the Wiener increments, the normal of step k and noise component j is
    ``q = k * noise_dim + j``; for the initial state drawn from ``fs.Normal`` it is
    ``q = j`` in stream ``STREAM_INITIAL``.

    Parameters
    ----------
    seed : int or SeedSequence
    path, q : int or array_like of int (broadcast together)
    stream : int
    dtype : {"float32", "float64"}

    Returns
    -------
    numpy.ndarray
    """
    key = key_from_seed(seed)
    q = np.asarray(q, dtype=np.uint64)
    block, lane = q >> np.uint64(2), (q & np.uint64(3)).astype(np.int64)
    w = _blocks(key, path, block, stream)
    pair_r = np.where(lane < 2, 0, 2)
    w_r = np.choose(pair_r // 2, (w[0], w[2]))
    w_a = np.choose(pair_r // 2, (w[1], w[3]))
    use_cos = (lane % 2) == 0
    if np.dtype(dtype) == np.float32:
        z_cos, z_sin = philox.box_muller_f32(w_r, w_a)
        return np.where(use_cos, z_cos, z_sin).astype(np.float32)
    if np.dtype(dtype) != np.float64:
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    v = _blocks(key, path, block, stream | int(philox.LOW_BITS_FLAG))
    v_r = np.choose(pair_r // 2, (v[0], v[2]))
    v_a = np.choose(pair_r // 2, (v[1], v[3]))
    z_cos, z_sin = philox.box_muller_f64(w_r, v_r, w_a, v_a)
    return np.where(use_cos, z_cos, z_sin)


def uniforms(seed, path, block, stream=philox.STREAM_INCREMENTS, dtype="float64"):
    """The four open uniforms of each (path, block), shape (..., 4), as the kernels form them."""
    key = key_from_seed(seed)
    w = _blocks(key, path, block, stream)
    if np.dtype(dtype) == np.float32:
        return np.stack([philox.uniform_f32(x) for x in w], axis=-1).astype(np.float32)
    v = _blocks(key, path, block, stream | int(philox.LOW_BITS_FLAG))
    return np.stack([philox.uniform_f64(a, b) for a, b in zip(w, v)], axis=-1)


def increments(seed, path, q, kind="gaussian", dtype="float64"):
    """Unit increment number ``q`` of ``path`` as the kernels draw it for
    ``simulate(..., increments=kind)``: the step's increment is ``sqrt(h)`` times this
    value (``sqrt(3 h)`` times it for "three_point"), with ``q = k * noise_dim + j`` for
    step k and noise component j.

    Parameters
    ----------
    seed : int or SeedSequence
    path, q : int or array_like of int (broadcast together)
    kind : {"gaussian", "two_point", "three_point"}
        "gaussian": the standard normal ``normals(seed, path, q)`` (stream 0).
        "two_point": +1 or -1, bit ``q % 32`` of word ``(q // 32) % 4`` of block
        ``q // 128`` of stream ``STREAM_TWO_POINT`` (bit 0 gives +1).
        "three_point": -1, 0 or +1 from word ``q % 4`` of block ``q // 4`` of stream
        ``STREAM_THREE_POINT``: -1 below ``THREE_POINT_LOW``, +1 from
        ``THREE_POINT_HIGH`` on (P(+-1) = 715827883 / 2^32 each).
    dtype : {"float32", "float64"}
        The normals' precision ("gaussian" only; the discrete values are exact integers).

    Returns
    -------
    numpy.ndarray
        float (normals) or int64 (-1, 0, +1).
    """
    if kind == "gaussian":
        return normals(seed, path, q, philox.STREAM_INCREMENTS, dtype)
    key = key_from_seed(seed)
    q = np.asarray(q, dtype=np.uint64)
    if kind == "two_point":
        w = _blocks(key, path, q >> np.uint64(philox.TWO_POINT_PER_BLOCK_SHIFT),
                    philox.STREAM_TWO_POINT)
        word = np.choose(((q >> np.uint64(5)) & np.uint64(3)).astype(np.int64), w)
        return philox.two_point_sign(word, q & np.uint64(31))
    if kind == "three_point":
        w = _blocks(key, path, q >> np.uint64(2), philox.STREAM_THREE_POINT)
        word = np.choose((q & np.uint64(3)).astype(np.int64), w)
        return philox.three_point_sign(word)
    raise ValueError(f"kind must be 'gaussian', 'two_point' or 'three_point'; got {kind!r}")
