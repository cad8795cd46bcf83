"""Philox4x32-10 and the Gaussian transform of the fastsde random stream.

Everything here is plain, allocation-free Python over 64-bit unsigned integers that
hold 32-bit words. The same source is compiled by ``numba.njit`` (CPU kernels), by
``numba.cuda.jit(device=True)`` (GPU kernels) and runs unchanged on numpy ``uint64``
arrays (host-side reference, known-answer tests, :mod:`fastsde.streams`).

Why ``uint64`` words: the Philox multiply needs the full 64-bit product of two 32-bit
words; holding every word in a 64-bit integer makes that product exact on all three
targets without target-specific ``mulhi`` intrinsics, and masking keeps words 32-bit.

Stream contract (``RNG_VERSION`` 1, documented in docs/random-streams.md):

* key ``(k0, k1)`` = ``SeedSequence(seed).generate_state(2, uint32)``;
* normal number ``q`` of path ``i`` in stream ``s`` lives in block ``b = q // 4``,
  lane ``q % 4``; the Philox counter of that block is
  ``(b mod 2**32, (b >> 32) | s << 24, i mod 2**32, i >> 32)``;
* float32: lanes (0, 1) and (2, 3) are Box-Muller pairs of 23-bit open uniforms;
* float64: a second Philox call with bit 7 of ``s`` set supplies 20 more bits for each
  word, making 52-bit open uniforms whose top 23 bits are the float32 ones, so a
  float64 normal is the float32 normal computed more precisely (same path, same sign).
"""

import math

import numpy as np

RNG_VERSION = 1

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint64(0x9E3779B9)
PHILOX_W1 = np.uint64(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)
SHIFT24 = np.uint64(24)
SHIFT20 = np.uint64(20)
SHIFT12 = np.uint64(12)
SHIFT9 = np.uint64(9)
LOW_BITS_FLAG = np.uint64(0x80)

# Stream ids (bits 0-6 of the stream byte). New uses take new ids; existing ids never move.
STREAM_INCREMENTS = 0
STREAM_INITIAL = 1
STREAM_EXTRA = 2

# 23-bit open uniforms: (m + 1/2) 2^-23, m in [0, 2^23), all exact in float32, so the
# extreme values are 2^-24 and 1 - 2^-24: never 0 (no log(0)), never 1.
F32_SCALE = np.float32(2.0**-23)
F32_HALF_ULP = np.float32(2.0**-24)
F32_MINUS_TWO = np.float32(-2.0)
F32_TWO_PI = np.float32(2.0 * math.pi)
# 52-bit open uniforms: (m + 1/2) 2^-52, extremes 2^-53 and 1 - 2^-53.
F64_SCALE = 2.0**-52
F64_TWO_PI = 2.0 * math.pi

#: Largest |z| a float32 normal can take: sqrt(-2 ln 2^-24).
F32_NORMAL_MAX = math.sqrt(-2.0 * math.log(2.0**-24))
#: Largest |z| a float64 normal can take: sqrt(-2 ln 2^-53).
F64_NORMAL_MAX = math.sqrt(-2.0 * math.log(2.0**-53))


def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds (Salmon et al., SC11; Random123 ``philox4x32_R(10)``).

    Parameters
    ----------
    c0, c1, c2, c3 : uint64
        Counter words, each < 2**32.
    k0, k1 : uint64
        Key words, each < 2**32.

    Returns
    -------
    tuple of 4 uint64
        The output words, each < 2**32.
    """
    for _ in range(10):
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        n0 = ((p1 >> SHIFT32) ^ c1 ^ k0) & MASK32
        n2 = ((p0 >> SHIFT32) ^ c3 ^ k1) & MASK32
        c1 = p1 & MASK32
        c3 = p0 & MASK32
        c0 = n0
        c2 = n2
        k0 = (k0 + PHILOX_W0) & MASK32
        k1 = (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


def block_counter(block, stream, path):
    """Counter words of normal block ``block`` of ``path`` in ``stream`` (all uint64)."""
    return (block & MASK32, (block >> SHIFT32) | (stream << SHIFT24),
            path & MASK32, path >> SHIFT32)


def uniform_f32(word):
    """Open uniform in (0, 1) from the top 23 bits of a 32-bit word, as float32."""
    return np.float32(word >> SHIFT9) * F32_SCALE + F32_HALF_ULP


def uniform_f64(word, low_word):
    """Open uniform in (0, 1) with 52 bits: the 32 bits of ``word`` then 20 of ``low_word``."""
    m = (word << SHIFT20) | (low_word >> SHIFT12)
    return (np.float64(m) + 0.5) * F64_SCALE


def box_muller_f32(word_r, word_a):
    """Two independent float32 standard normals from two 32-bit words."""
    r = math.sqrt(F32_MINUS_TWO * math.log(uniform_f32(word_r)))
    angle = F32_TWO_PI * uniform_f32(word_a)
    return r * math.cos(angle), r * math.sin(angle)


def box_muller_f64(word_r, low_r, word_a, low_a):
    """Two independent float64 standard normals from two (word, low word) pairs."""
    r = math.sqrt(-2.0 * math.log(uniform_f64(word_r, low_r)))
    angle = F64_TWO_PI * uniform_f64(word_a, low_a)
    return r * math.cos(angle), r * math.sin(angle)


def normal_block_f32(k0, k1, block, stream, path):
    """The four float32 normals of one block (one Philox call)."""
    c0, c1, c2, c3 = block_counter(block, stream, path)
    w0, w1, w2, w3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    z0, z1 = box_muller_f32(w0, w1)
    z2, z3 = box_muller_f32(w2, w3)
    return z0, z1, z2, z3


def normal_block_f64(k0, k1, block, stream, path):
    """The four float64 normals of one block (two Philox calls: high and low bits)."""
    c0, c1, c2, c3 = block_counter(block, stream, path)
    w0, w1, w2, w3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    c0, c1, c2, c3 = block_counter(block, stream | LOW_BITS_FLAG, path)
    v0, v1, v2, v3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    z0, z1 = box_muller_f64(w0, v0, w1, v1)
    z2, z3 = box_muller_f64(w2, v2, w3, v3)
    return z0, z1, z2, z3
