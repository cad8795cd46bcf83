"""Philox4x32-10 and the Gaussian transform of the fastsde random stream.

Everything here is plain, allocation-free Python over 64-bit unsigned integers that
hold 32-bit words. The same source is compiled by ``numba.njit`` (CPU kernels), by
``numba.cuda.jit(device=True)`` (GPU kernels) and runs unchanged on numpy ``uint64``
arrays (host-side reference, known-answer tests, :mod:`fastsde.streams`).

Why ``uint64`` words: the Philox multiply needs the full 64-bit product of two 32-bit
words; holding every word in a 64-bit integer makes that product exact on all three
targets without target-specific ``mulhi`` intrinsics, and masking keeps words 32-bit.

Stream contract (documented in docs/random-streams.md; the layout below has been the same
since ``RNG_VERSION`` 1, the transform's arithmetic changed in 2 and 3):

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

from .bits import f32_as_i32, f64_as_i64, fma_f32, i32_as_f32, i64_as_f64, select  # noqa: F401

RNG_VERSION = 3

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
STREAM_TWO_POINT = 3
STREAM_THREE_POINT = 4

# Discrete increments (``simulate(..., increments=...)``), drawn from Philox words
# without the Gaussian transform. Two-point: one bit per draw (32 per word, 128 per
# block). Three-point: one 32-bit word per draw (4 per block), -1 below THREE_POINT_LOW,
# +1 from THREE_POINT_HIGH up, 0 between. P(-1) = P(+1) = 715827883 / 2^32 =
# 1/6 + 7.8e-11: 1/6 is not a sum of powers of two, so no fixed count of bits draws it
# exactly, and a whole word puts the deviation far below any Monte Carlo resolution.
TWO_POINT_PER_BLOCK_SHIFT = 7
THREE_POINT_LOW = np.uint64(715827883)
THREE_POINT_HIGH = np.uint64(4294967296 - 715827883)

# 23-bit open uniforms: (m + 1/2) 2^-23, m in [0, 2^23), all exact in float32, so the
# extreme values are 2^-24 and 1 - 2^-24: never 0 (no log(0)), never 1.
F32_SCALE = np.float32(2.0**-23)
F32_HALF_ULP = np.float32(2.0**-24)
F32_MINUS_TWO = np.float32(-2.0)
# 52-bit open uniforms: (m + 1/2) 2^-52, extremes 2^-53 and 1 - 2^-53.
F64_SCALE = 2.0**-52

# Constants of the branch-free normal transform (RNG_VERSION 2).
I64_ONE = np.int64(1)
I64_TWO = np.int64(2)
I64_50 = np.int64(50)
I64_52 = np.int64(52)
I64_2P49 = np.int64(1 << 49)
F32_ONE = np.float32(1.0)
# ln 2 split so that k * hi is exact for |k| <= 24 (hi has 16 significant bits).
F32_LN2_HI = np.float32(0.693145751953125)
F32_LN2_LO = np.float32(math.log(2.0) - 0.693145751953125)
# Cephes logf: ln(1 + x) = x - x^2/2 + x^3 P(x) on [sqrt(1/2) - 1, sqrt(2) - 1], P of
# degree 8, highest power first (RNG_VERSION 3; version 2 used 2 atanh((f-1)/(f+1))).
F32_LOGP_C = tuple(np.float32(c) for c in (
    7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
    1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
    3.3333331174e-1))
F32_MINUS_HALF = np.float32(-0.5)
F32_PI_2M23 = np.float32(math.pi * 2.0**-23)
# Cephes sinf/cosf minimax coefficients on [-pi/4, pi/4].
F32_SIN_C1 = np.float32(-1.6666654611e-1)
F32_SIN_C2 = np.float32(8.3321608736e-3)
F32_SIN_C3 = np.float32(-1.9515295891e-4)
F32_COS_C1 = np.float32(4.166664568298827e-2)
F32_COS_C2 = np.float32(-1.388731625493765e-3)
F32_COS_C3 = np.float32(2.443315711809948e-5)
# fdlibm's split of ln 2 (hi has 32 significant bits, k * hi exact for |k| <= 53).
F64_LN2_HI = 6.93147180369123816490e-01
F64_LN2_LO = 1.90821492927058770002e-10
F64_LOG_C = tuple(2.0 / (2 * i + 3) for i in range(11))
F64_PI_2M52 = math.pi * 2.0**-52
# Cephes sin/cos coefficients on [-pi/4, pi/4], highest power first.
F64_SIN_C = (1.58962301576546568060e-10, -2.50507477628578072866e-8,
             2.75573136213857245213e-6, -1.98412698295895385996e-4,
             8.33333333332211858878e-3, -1.66666666666666307295e-1)
F64_COS_C = (-1.13585365213876817300e-11, 2.08757008419747316778e-9,
             -2.75573141792967388112e-7, 2.48015872888517045348e-5,
             -1.38888888888730564116e-3, 4.16666666666665929218e-2)

# Bit-pattern constants of the transform (see log_open_f32 and log_open_f64).
I32_ZERO = np.int32(0)
I32_ONE = np.int32(1)
I32_TWO = np.int32(2)
I32_21 = np.int32(21)
I32_23 = np.int32(23)
I32_2P20 = np.int32(1 << 20)
I32_30 = np.int32(30)
I32_151 = np.int32(127 + 24)  # exponent bias + the 24 bits of v
I32_MANTISSA = np.int32(0x7FFFFF)
# Bits of the float32 just above sqrt(1/2); adding 0x3F800000 minus it to the bits of f in
# [1, 2) carries into the exponent exactly when f > float32(sqrt(2)).
F32_SQRT_HALF_BITS = np.int32(0x3F3504F4)
F32_LOG_SHIFT = np.int32(0x3F800000 - 0x3F3504F4)
I64_ZERO = np.int64(0)
I64_62 = np.int64(62)
I64_1075 = np.int64(1023 + 52)
I64_MANTISSA = np.int64((1 << 52) - 1)
F64_SQRT_HALF_BITS = np.int64(0x3FE6A09E667F3BCD)  # the float64 just above sqrt(1/2)
F64_LOG_SHIFT = np.int64(0x3FF0000000000000 - 0x3FE6A09E667F3BCD)
F64_2P52 = 2.0**52
F64_2P52_BITS = np.int64(0x4330000000000000)
F64_MAGIC = 1.5 * 2.0**52
F64_MAGIC_BITS = np.int64(0x4338000000000000)

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


# The transform below works on the uniform's integer m (u = (m + 1/2) 2^-b) rather than on
# u: the exponent of u comes from its bit pattern and the quadrant of 2 pi u from integer
# operations, so there is no libm call and no data-dependent branch, and the same source
# vectorises on the CPU, compiles for CUDA and runs on numpy arrays. All targets give the
# same bits: every operation is a correctly rounded IEEE operation, a bit cast or a select
# (the primitives of :mod:`.bits`, which each target supplies in its own spelling).

def log_open_f32(m):
    """ln((m + 1/2) 2^-23) for a 23-bit integer ``m`` (int32 or int64), as float32.

    The odd integer v = 2 m + 1 (u = v 2^-24) is converted exactly to float32; its bit
    pattern gives the exponent e and the mantissa f with v = f 2^e, f in (sqrt(1/2),
    sqrt(2)] (adding ``F32_LOG_SHIFT`` carries into the exponent exactly when the mantissa
    is above sqrt(2)), all exact; then x = f - 1 (exact) and ln f = x - x^2/2 + x^3 P(x)
    with Cephes' minimax P, evaluated by fused multiply-adds (no division: one divide per
    log cost more than the whole polynomial). Max error against the correctly rounded
    value: 0.89 ulp (tested exhaustively over all 2^23 inputs).
    """
    v = np.float32(m * I32_TWO + I32_ONE)  # exact: v < 2^24
    shifted = np.int32(f32_as_i32(v) + F32_LOG_SHIFT)
    k = np.float32((shifted >> I32_23) - I32_151)  # e - 24 (+1 above sqrt 2)
    f = i32_as_f32(np.int32((shifted & I32_MANTISSA) + F32_SQRT_HALF_BITS))
    x = f - F32_ONE  # exact (Sterbenz)
    z = x * x
    poly = F32_LOGP_C[0]
    for i in range(1, 9):
        poly = fma_f32(poly, x, F32_LOGP_C[i])
    ln_f = x + fma_f32(F32_MINUS_HALF, z, (x * z) * poly)
    return fma_f32(k, F32_LN2_HI, fma_f32(k, F32_LN2_LO, ln_f))


def cos_sin_2pi_f32(m):
    """(cos, sin) of 2 pi (m + 1/2) 2^-23 for a 23-bit integer ``m`` (int32 or int64), as
    float32.

    Exact reduction to |phi| <= pi/4 in integers (nearest quarter turn q, remainder
    y = m - q 2^21, phi = (2 y + 1) pi 2^-23 with one rounding), then Cephes' minimax
    polynomials by fused multiply-adds (RNG_VERSION 3); the quadrant swaps cos and sin (a
    select) and flips their signs (the sign bit). (Until this was written in integers the
    same q and 2 y + 1 came from exact float32 operations and a floor: the same bits, with
    five more vector operations.)
    """
    q = np.int32((m + I32_2P20) >> I32_21)  # nearest quarter turn, 0..4
    phi = np.float32(np.int32(((m - (q << I32_21)) << I32_ONE) + I32_ONE)) * F32_PI_2M23
    z = phi * phi
    sin_phi = fma_f32(phi * z, fma_f32(fma_f32(F32_SIN_C3, z, F32_SIN_C2), z, F32_SIN_C1), phi)
    cos_phi = fma_f32(z * z, fma_f32(fma_f32(F32_COS_C3, z, F32_COS_C2), z, F32_COS_C1),
                      fma_f32(F32_MINUS_HALF, z, F32_ONE))
    odd = (q & I32_ONE) != I32_ZERO
    # cos is negative in quadrants 1 and 2, sin in 2 and 3 (quadrant 4 is quadrant 0).
    sign_cos = np.int32(((q + I32_ONE) & I32_TWO) << I32_30)
    sign_sin = np.int32((q & I32_TWO) << I32_30)
    return (i32_as_f32(np.int32(f32_as_i32(select(odd, sin_phi, cos_phi)) ^ sign_cos)),
            i32_as_f32(np.int32(f32_as_i32(select(odd, cos_phi, sin_phi)) ^ sign_sin)))


def _small_int_to_f64(v):
    """float64(v) for an int64 |v| < 2^51, exactly: v added to the bits of 1.5 2^52 is
    that float plus v (its ulp is 1). AVX2 has no int64-to-float64 conversion."""
    return i64_as_f64(np.int64(v + F64_MAGIC_BITS)) - F64_MAGIC


def log_open_f64(m):
    """ln((m + 1/2) 2^-52) for a 52-bit integer ``m`` (int64), as float64 (about 1 ulp).

    The exponent field of 2^52 set over m gives 2^52 + m, hence m + 1/2 exactly; the rest
    is :func:`log_open_f32`'s reduction and series in float64.
    """
    v = (i64_as_f64(np.int64(m | F64_2P52_BITS)) - F64_2P52) + 0.5  # m + 1/2, exact
    shifted = np.int64(f64_as_i64(v) + F64_LOG_SHIFT)
    k = _small_int_to_f64((shifted >> I64_52) - I64_1075)
    f = i64_as_f64(np.int64((shifted & I64_MANTISSA) + F64_SQRT_HALF_BITS))
    s = (f - 1.0) / (f + 1.0)
    z = s * s
    poly = F64_LOG_C[10]
    for i in range(9, -1, -1):
        poly = F64_LOG_C[i] + z * poly
    ln_f = 2.0 * s + s * z * poly
    return k * F64_LN2_HI + (ln_f + k * F64_LN2_LO)


def cos_sin_2pi_f64(m):
    """(cos, sin) of 2 pi (m + 1/2) 2^-52 for a 52-bit integer ``m`` (int64), as float64."""
    n = (m + I64_2P49) >> I64_50  # nearest quarter turn, 0..4
    phi = _small_int_to_f64((m - (n << I64_50)) * I64_TWO + I64_ONE) * F64_PI_2M52
    z = phi * phi
    ps = F64_SIN_C[0]
    pc = F64_COS_C[0]
    for i in range(1, 6):
        ps = ps * z + F64_SIN_C[i]
        pc = pc * z + F64_COS_C[i]
    sin_phi = phi + phi * z * ps
    cos_phi = 1.0 - 0.5 * z + z * z * pc
    odd = (n & I64_ONE) != I64_ZERO
    sign_cos = np.int64(((n + I64_ONE) & I64_TWO) << I64_62)
    sign_sin = np.int64((n & I64_TWO) << I64_62)
    return (i64_as_f64(np.int64(f64_as_i64(select(odd, sin_phi, cos_phi)) ^ sign_cos)),
            i64_as_f64(np.int64(f64_as_i64(select(odd, cos_phi, sin_phi)) ^ sign_sin)))


def box_muller_f32(word_r, word_a):
    """Two independent float32 standard normals from two 32-bit words."""
    # int32: the integer work of the transform then runs 8 lanes to an AVX2 vector.
    r = np.sqrt(F32_MINUS_TWO * log_open_f32(np.int32(word_r >> SHIFT9)))
    c, s = cos_sin_2pi_f32(np.int32(word_a >> SHIFT9))
    return r * c, r * s


def box_muller_f64(word_r, low_r, word_a, low_a):
    """Two independent float64 standard normals from two (word, low word) pairs."""
    m_r = np.int64((word_r << SHIFT20) | (low_r >> SHIFT12))
    m_a = np.int64((word_a << SHIFT20) | (low_a >> SHIFT12))
    r = np.sqrt(-2.0 * log_open_f64(m_r))
    c, s = cos_sin_2pi_f64(m_a)
    return r * c, r * s


# A block's normals in two stages, the Philox words and then their transform, so that a
# driver can run each stage as its own loop over the lanes (the CPU driver does: the two
# loops vectorise and schedule better apart than fused). normal_block_f32/f64 compose them.

def block_words(k0, k1, block, stream, path):
    """The four Philox words (uint64 holding 32 bits) of block ``block`` of ``path`` in
    ``stream``."""
    c0, c1, c2, c3 = block_counter(block, stream, path)
    return philox4x32_10(c0, c1, c2, c3, k0, k1)


def block_low_words(k0, k1, block, stream, path):
    """The four words that extend a block's words to 52-bit uniforms in float64."""
    return block_words(k0, k1, block, stream | LOW_BITS_FLAG, path)


def normals_f32(w0, w1, w2, w3):
    """The four float32 normals of a block from its words."""
    z0, z1 = box_muller_f32(w0, w1)
    z2, z3 = box_muller_f32(w2, w3)
    return z0, z1, z2, z3


def normals_f64(w0, w1, w2, w3, v0, v1, v2, v3):
    """The four float64 normals of a block from its words ``w`` and low words ``v``."""
    z0, z1 = box_muller_f64(w0, v0, w1, v1)
    z2, z3 = box_muller_f64(w2, v2, w3, v3)
    return z0, z1, z2, z3


def normal_block_f32(k0, k1, block, stream, path):
    """The four float32 normals of one block (one Philox call)."""
    w0, w1, w2, w3 = block_words(k0, k1, block, stream, path)
    return normals_f32(w0, w1, w2, w3)


def normal_block_f64(k0, k1, block, stream, path):
    """The four float64 normals of one block (two Philox calls: high and low bits)."""
    w0, w1, w2, w3 = block_words(k0, k1, block, stream, path)
    v0, v1, v2, v3 = block_low_words(k0, k1, block, stream, path)
    return normals_f64(w0, w1, w2, w3, v0, v1, v2, v3)


def two_point_sign(word, bit):
    """+1 or -1 (int64) from bit ``bit`` of the 32-bit ``word``: 0 gives +1, 1 gives -1."""
    return np.int64(1) - np.int64(2) * np.int64((word >> np.uint64(bit)) & np.uint64(1))


def three_point_sign(word):
    """-1, 0 or +1 (int64) from a 32-bit ``word``: P(-1) = P(+1) = 1/6 + 7.8e-11."""
    return np.int64(word >= THREE_POINT_HIGH) - np.int64(word < THREE_POINT_LOW)
