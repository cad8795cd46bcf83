"""Elementary functions for kernels (exp, expm1, log, log1p, tanh, erf, sigmoid, silu, gelu),
branch-free, written once and compiled for each target.

libm's ``exp`` and ``tanh`` are calls: in a loop over lanes or over a layer's units they
stop LLVM's vectoriser (a 3-64-64-2 tanh network ran 8x slower through libm's ``tanhf``
than through :func:`tanh_f32`), and numba-cuda replaces them with libdevice's, whose bits
differ. These are plain Python over IEEE operations, bit casts, selects and fused
multiply-adds (the primitives of :mod:`.bits`, bound per target by
:func:`.target.compile_functions`), like the RNG's transform (:mod:`.philox`): the loop
that calls them vectorises on the CPU, and the CPU, CUDA and plain numpy compute the same
operations in the same order. The polynomials (each Horner step and the final ``x + x^k
P``) and the exponential's argument reduction are explicit FMAs: one operation and one
rounding where a product and a sum are two (an 8-bump field's step ran 1.5x faster in
float32, 1.15x in float64), the same on every target because an FMA is an IEEE
operation; the compilers' own contraction stays off. Each dtype
has its own version (float32 arithmetic for float32, so that 8 lanes fit an AVX2
register, not 4).

Accuracy, in ulps of the result against the correctly rounded value: :data:`MAX_ULP`,
enforced by tests/test_fmath.py (10^7 arguments per function and dtype plus the special
values 0, -0, subnormals, the overflow and underflow thresholds, +-inf and nan; 10^8 in
tools/fmath_accuracy.py) and documented in docs/performance.md. The polynomial
coefficients come from tools/fmath_coefficients.py (near-minimax Chebyshev fits at 60
digits) or from fdlibm (``e_exp.c`` for the float64 exponential, ``e_log.c`` for the
float64 log) and musl (``logf.c`` for the float32 log).
"""

import math

import numpy as np

from .bits import (f32_as_i32, f64_as_i64, fma_f32, fma_f64, i32_as_f32,  # noqa: F401
                   i64_as_f64, select)
# ln 2 split so that k * LN2_HI is exact for the k of any float32 / float64 exponent (the
# Gaussian transform's log uses the same splits).
from .philox import F32_LN2_HI, F32_LN2_LO, F64_LN2_HI, F64_LN2_LO

#: Largest error in ulps of the result that tests/test_fmath.py allows, plus, for two
#: composites, a term that grows with the argument (:func:`allowed_ulps`): silu's result
#: below x = -87.3 (float32) / -708.4 (float64) is x times a subnormal sigmoid, whose
#: absolute rounding x multiplies; gelu's e^2u amplifies the rounding of u (a few ulps)
#: by |2u|, the condition number of the exponential (as in any working-precision GELU).
MAX_ULP = {"exp_f32": 1.0, "log_f32": 1.0, "log_f64": 1.0, "tanh_f32": 2.0,
           "expm1_f32": 2.0, "expm1_f64": 2.0, "log1p_f32": 1.0, "log1p_f64": 1.0,
           "erf_f32": 2.0, "erf_f64": 2.0, "sin_f32": 1.0, "cos_f32": 1.0,
           "sin_f64": 1.0, "cos_f64": 1.0, "pow_f32": 1.0, "pow_f64": 1.0,
           "sigmoid_f32": 2.5, "silu_f32": 3.5,
           "gelu_f32": 3.0, "exp_f64": 1.0, "tanh_f64": 2.0, "sigmoid_f64": 2.5,
           "silu_f64": 3.5, "gelu_f64": 3.0}
#: Per-unit-argument growth of the allowed error (see MAX_ULP), from the error analysis:
#: silu below the threshold where sigmoid turns subnormal, where sigmoid's absolute error
#: is up to one subnormal spacing (two roundings in the subnormal range) and x multiplies
#: it: 1 ulp per unit of |x| (measured up to 0.5); gelu, whose u = sqrt(2/pi) (x +
#: 0.044715 x^3) carries up to five roundings (2.5 ulps relative), which e^2u multiplies
#: by |2u|, and a relative error is up to 2 ulps of the result: 5 ulps per unit of |2u|
#: (measured up to 3.5).
SILU_SUBNORMAL_BELOW = {"f32": -87.33654022216797, "f64": -708.3964185322641}
ULP_GROWTH = {"silu": 1.0, "gelu": 5.0}


def allowed_ulps(name, suffix, x):
    """The error bound in ulps that tests/test_fmath.py enforces for ``name`` ("exp",
    "tanh", "sigmoid", "silu", "gelu") of dtype ``suffix`` ("f32", "f64") at each
    argument of the array ``x``."""
    x = np.asarray(x, np.float64)
    base = np.full(x.shape, MAX_ULP[f"{name}_{suffix}"])
    if name == "silu":
        tail = x < SILU_SUBNORMAL_BELOW[suffix]
        return base + np.where(tail, ULP_GROWTH["silu"] * np.abs(x), 0.0)
    if name == "gelu":
        with np.errstate(over="ignore", invalid="ignore"):
            two_u = np.abs(2.0 * math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x))
        return base + ULP_GROWTH["gelu"] * np.nan_to_num(two_u, posinf=np.inf)
    return base


# --- float32 --------------------------------------------------------------------------
F32_ZERO = np.float32(0.0)
F32_ONE = np.float32(1.0)
F32_TWO = np.float32(2.0)
F32_INF = np.float32(np.inf)
F32_NAN = np.float32(np.nan)
F32_LOG2E = np.float32(1.4426950408889634)
# 1.5 * 2^23: adding it rounds a float32 of magnitude < 2^22 to an integer, which its
# low mantissa bits then hold (AVX2 converts float32 to int32, but the bits are free).
F32_ROUND = np.float32(12582912.0)
I32_ROUND_BITS = np.int32(0x4B400000)
# Beyond these e^x is inf (the largest finite float32 is e^88.722839052...; this is the
# float32 below that) or rounds to 0 (below 2^-150).
F32_EXP_MAX = np.float32(88.72283172607422)
F32_EXP_MIN = np.float32(-103.97208404541016)
# exp_f32 clamps its argument to these instead: the core then overflows to inf itself
# above F32_EXP_MAX (k = 128) and rounds to 0 below F32_EXP_MIN (k = -150, e^r < 1).
F32_EXP_HI = np.float32(89.0)
F32_EXP_LO = np.float32(-104.0)
# Below these e^x - 1 rounds to -1 (e^-30 < 2^-43, e^-40 < 2^-57).
F32_EXPM1_MIN = np.float32(-30.0)
F64_EXPM1_MIN = -40.0
I32_ONE = np.int32(1)
I32_23 = np.int32(23)
I32_127 = np.int32(127)
# (e^r - 1 - r) / r^2 on |r| <= 0.35 (Horner, highest degree first).
F32_EXP_C = tuple(np.float32(c) for c in (
    0.0001989198131397769, 0.0013934541928270264, 0.008333310024225292,
    0.04166645680967788, 0.16666666682534356, 0.5000000014286223))
# (tanh x - x) / x^3 as a polynomial in x^2 on |x| <= ln(3) / 2.
F32_TANH_C = tuple(np.float32(c) for c in (
    -0.006614912218472906, 0.02131187554927421, -0.05390983355455269,
    0.13333115782885, -0.33333332023675044))
# Below ln(3)/2, 1 - 2 / (e^2x + 1) loses bits to the subtraction; the series does not.
F32_TANH_SMALL = np.float32(0.5493061443340549)
# tanh x rounds to 1 in float32 above 9.01; the clamp keeps e^2x finite.
F32_TANH_CLAMP = np.float32(10.0)

# GELU's tanh form (PyTorch's approximate="tanh"): 0.5 z (1 + tanh(u)) = z sigmoid(2 u),
# u = sqrt(2 / pi) (z + 0.044715 z^3).
F32_GELU_C = np.float32(math.sqrt(2.0 / math.pi))
F32_GELU_A = np.float32(0.044715)

# erf: x + x P(x^2) on |x| <= 1, 1 - e^(-x^2) Q(u) above, Q = erfc(x) e^(x^2) as a polynomial
# in u = (x - 2) / (x + 2) on [1, 4] (tools/fmath_coefficients.py; erf rounds to 1 in
# float32 above 3.92).
F32_ERF_P = tuple(np.float32(c) for c in (
    7.875875062685488e-05, -0.000801686428716587, 0.005189087423433974,
    -0.026854212010626412, 0.11283594715160218, -0.37612626666720334,
    0.12837916584835093))
F32_ERF_Q = tuple(np.float32(c) for c in (
    -0.0009441596340872735, -0.0008365899736486057, 0.006994855413599958,
    0.0037321413513030097, -0.07897852327253349, 0.24165821109072444,
    -0.42718584761434303, 0.25539567625190335))
F32_ERF_K = np.float32(2.0)
F32_ERF_TOP = np.float32(4.0)

# --- float64 --------------------------------------------------------------------------
F64_INF = np.inf
F64_LOG2E = 1.4426950408889634
F64_ROUND = 6755399441055744.0  # 1.5 * 2^52
I64_ROUND_BITS = np.int64(0x4338000000000000)
F64_EXP_MAX = 709.782712893384      # above: e^x overflows
F64_EXP_MIN = -745.1332191019412    # below: e^x rounds to 0
# exp_f64 clamps its argument to these instead: the core then overflows to inf itself
# above F64_EXP_MAX (k = 1024, two factors of 2^512) and rounds to 0 below F64_EXP_MIN
# (k = -1076, e^r < 1.5: below half the smallest subnormal).
F64_EXP_HI = 710.0
F64_EXP_LO = -746.0
I64_ONE = np.int64(1)
I64_52 = np.int64(52)
I64_1023 = np.int64(1023)
I64_54 = np.int64(54)
F64_NAN = np.nan
# (e^r - 1 - r) / r^2 on |r| <= 1.01 ln2/2, degree 10 (tools/fmath_coefficients.py; the
# fit's error times r^2 is below 3e-19, 0.003 ulp of e^r). A polynomial, not fdlibm's
# rational form: in vectorised code one division per exponential costs more than the
# five FMAs it saves (bench/drifts.py's float64 8-bump field ran 1.2x faster).
F64_EXP_C = (2.0915442297780116e-09, 2.5106274733573296e-08, 2.75572718102198e-07,
             2.755725283351691e-06, 2.4801587327007187e-05, 0.00019841269876864356,
             0.0013888888888883327, 0.008333333333325544, 0.04166666666666667,
             0.1666666666666667, 0.5)
(F64_EXP_C0, F64_EXP_C1, F64_EXP_C2, F64_EXP_C3, F64_EXP_C4, F64_EXP_C5, F64_EXP_C6,
 F64_EXP_C7, F64_EXP_C8, F64_EXP_C9, F64_EXP_C10) = F64_EXP_C[::-1]
# fdlibm's e_exp.c: e^r = 1 + r + r c / (2 - c), c = r - r^2 P(r^2), on |r| <= ln2/2 (pow's
# 2^z keeps it).
F64_EXP_P = (4.13813679705723846039e-08, -1.65339022054652515390e-06,
             6.61375632143793436117e-05, -2.77777777770155933842e-03,
             1.66666666666666019037e-01)
F64_TANH_C = (-2.0634899771792012e-05, 8.515932180302729e-05, -0.00023466287885907128,
              0.00058894551539517, -0.0014556637472391653, 0.003592110618190448,
              -0.008863234415954168, 0.021869488494452378, -0.05396825396745119,
              0.13333333333332728, -0.3333333333333333)
F64_TANH_SMALL = 0.5493061443340549
# tanh x rounds to 1 in float64 above 19.1.
F64_TANH_CLAMP = 20.0
F64_GELU_C = math.sqrt(2.0 / math.pi)
F64_GELU_A = 0.044715

# erf: as in float32, Q in u = (x - 2.5) / (x + 2.5) on [1, 6] (erf rounds to 1 in float64
# above 5.93).
F64_ERF_P = (
    -7.795898827002142e-10, 1.3720064546777686e-08, -1.6208483801871705e-07,
    1.6447424703317362e-06, -1.492473690741966e-05, 0.00012055294904839707,
    -0.0008548325975389692, 0.0052239776071164225, -0.02686617064323777,
    0.11283791670945006, -0.37612638903183543, 0.12837916709551256)
F64_ERF_Q = (
    8.134380709229634e-08, -1.5625258507743158e-06, -2.2842173094341345e-06,
    7.48480117852628e-06, 1.8609712314617464e-05, -3.4172229273553035e-05,
    -0.00012887649615317198, 0.00022837955896605415, 0.0008759154019168855,
    -0.002642365927759658, -0.0039937011641469865, 0.0399225390747838,
    -0.12503305237885554, 0.251713193217456, -0.3717367339489732, 0.21080636406114356)
F64_ERF_K = 2.5
F64_ERF_TOP = 6.0


def _horner_source(name, coefficients):
    """Source of ``name(z)``: the Horner scheme of ``coefficients`` written out as one
    expression (a loop over a tuple can stay a loop, and a loop inside the caller's loop
    over lanes or units stops it from vectorising), each step one fused multiply-add of
    the coefficients' dtype (one operation and one rounding where ``p * z + c`` is two)."""
    fma = "fma_f32" if isinstance(coefficients[0], np.float32) else "fma_f64"
    names = [f"{name}_c{i}" for i in range(len(coefficients))]
    expr = names[0]
    for c in names[1:]:
        expr = f"{fma}({expr}, z, {c})"
    return names, f"def {name}(z):\n    return {expr}\n"


def _define_horner(name, coefficients):
    names, source = _horner_source(name, coefficients)
    globals().update(zip(names, coefficients))
    exec(compile(source, f"<fastsde.kernels.fmath.{name}>", "exec"), globals())
    function = globals()[name]
    function.__module__ = __name__
    return function


_exp_tail_f32 = _define_horner("_exp_tail_f32", F32_EXP_C)
_tanh_odd_f32 = _define_horner("_tanh_odd_f32", F32_TANH_C)
_tanh_odd_f64 = _define_horner("_tanh_odd_f64", F64_TANH_C)
_erf_p_f32 = _define_horner("_erf_p_f32", F32_ERF_P)
_erf_q_f32 = _define_horner("_erf_q_f32", F32_ERF_Q)
_erf_p_f64 = _define_horner("_erf_p_f64", F64_ERF_P)
_erf_q_f64 = _define_horner("_erf_q_f64", F64_ERF_Q)


def _pow2_f32(k):
    """2^k as float32 for an int32 k in [-126, 127]."""
    return i32_as_f32(np.int32(np.int32(k + I32_127) << I32_23))


def _exp_reduced_f32(x):
    """(k, e^r - 1) with x = k ln 2 + r, |r| <= ln 2 / 2 (k an int32 read from the bits of
    a rounded sum), e^r - 1 = r + r^2 P(r): what exp, expm1 and tanh build on."""
    shifted = fma_f32(x, F32_LOG2E, F32_ROUND)
    k = shifted - F32_ROUND
    ki = np.int32(f32_as_i32(shifted) - I32_ROUND_BITS)
    r = fma_f32(-k, F32_LN2_LO, fma_f32(-k, F32_LN2_HI, x))
    return ki, fma_f32(r * r, _exp_tail_f32(r), r)


def _exp_core_f32(x):
    """e^x for float32 x in [F32_EXP_MIN, F32_EXP_MAX]."""
    ki, em1 = _exp_reduced_f32(x)
    m = F32_ONE + em1
    # 2^k as two normal factors (k1 = floor(k / 2)): e^x near the float32 limits needs
    # 2^128 or 2^-150, which have no float32.
    k1 = np.int32(ki >> I32_ONE)
    return (m * _pow2_f32(k1)) * _pow2_f32(np.int32(ki - k1))


def _exp_core_moderate_f32(x):
    """:func:`_exp_core_f32` for x in [-87, 87], where 2^k is one normal float32 factor:
    the same bits with one scaling instead of two (tanh's e^2|x|, 2|x| <= 20)."""
    ki, em1 = _exp_reduced_f32(x)
    return (F32_ONE + em1) * _pow2_f32(ki)


def exp_f32(x):
    """e^x for float32 x (1 ulp; subnormal results round twice)."""
    xf = np.float32(x)
    xc = select(xf > F32_EXP_HI, F32_EXP_HI, select(xf < F32_EXP_LO, F32_EXP_LO, xf))
    return select(xf != xf, xf, _exp_core_f32(xc))


def expm1_f32(x):
    """e^x - 1 for float32 x without the cancellation of ``exp(x) - 1`` near 0: with x =
    k ln 2 + r, ``(2^k - 1) + 2^k (e^r - 1)``, where e^r - 1 = r + r^2 P(r) is the
    exponential's own polynomial and 2^k - 1 is exact for the k where the sum matters;
    -1 below -30, inf above the overflow threshold, expm1(-0) = -0."""
    xf = np.float32(x)
    xc = select(xf > F32_EXP_MAX, F32_EXP_MAX, select(xf < F32_EXPM1_MIN, F32_EXPM1_MIN, xf))
    ki, p = _exp_reduced_f32(xc)
    # 2^128 (x just below the overflow threshold) has no float32: that last factor of 2
    # is applied after the sum, where the -1 no longer matters.
    kc = select(ki > I32_127, I32_127, ki)
    scale = _pow2_f32(kc)
    value = ((scale - F32_ONE) + scale * p) * _pow2_f32(np.int32(ki - kc))
    value = select(xf > F32_EXP_MAX, F32_INF, value)
    value = select(xf < F32_EXPM1_MIN, -F32_ONE, value)
    return select(xf == F32_ZERO, xf, select(xf != xf, xf, value))


def tanh_f32(x):
    """tanh(x) for float32 x: ``|x| + |x|^3 P(x^2)`` below ln(3)/2, ``1 - 2 / (e^2|x| +
    1)`` above, the sign of x put back (tanh(-0) = -0, tanh(nan) = nan)."""
    xf = np.float32(x)
    ax = select(xf < F32_ZERO, -xf, xf)
    z = ax * ax
    small = fma_f32(ax * z, _tanh_odd_f32(z), ax)
    y = select(ax > F32_TANH_CLAMP, F32_TANH_CLAMP, ax)
    e = _exp_core_moderate_f32(y + y)
    large = F32_ONE - F32_TWO / (e + F32_ONE)
    t = select(ax < F32_TANH_SMALL, small, large)
    # The sum in the series turns -0 into +0; tanh(-0) is -0.
    return select(xf == F32_ZERO, xf, select(xf < F32_ZERO, -t, t))


def sigmoid_f32(x):
    """1 / (1 + e^-x) for float32 x, from e = e^-|x| (which cannot overflow): 1 / (1 + e)
    for x >= 0, e / (1 + e) below (exact where 1 / (1 + e^-x) would underflow through
    an infinite e^-x)."""
    xf = np.float32(x)
    ax = select(xf < F32_ZERO, -xf, xf)
    e = exp_f32(-ax)
    d = F32_ONE + e
    return select(xf < F32_ZERO, e / d, F32_ONE / d)


def silu_f32(x):
    """x sigmoid(x) (SiLU, swish) for float32 x."""
    xf = np.float32(x)
    # x e^x -> 0 as x -> -inf, where the product would be -inf * 0.
    return select(xf == -F32_INF, -F32_ZERO, xf * sigmoid_f32(xf))


def gelu_f32(x):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) for float32 x, computed as
    x sigmoid(2 u), which has no cancellation for negative x."""
    xf = np.float32(x)
    u = F32_GELU_C * (xf + F32_GELU_A * (xf * xf * xf))
    return select(xf == -F32_INF, -F32_ZERO, xf * sigmoid_f32(u + u))


def _pow2_f64(k):
    """2^k as float64 for an int64 k in [-1022, 1023]."""
    return i64_as_f64(np.int64((k + I64_1023) << I64_52))


def _exp_tail_f64(r, r2):
    """Q(r) = :data:`F64_EXP_C` at r (r2 = r^2) as E(r^2) + r O(r^2), its even and odd
    coefficients each by Horner's scheme in r^2. The two chains run side by side, six
    FMAs deep where Horner's in r is ten: in a kernel that runs path by path each step
    waits for the one before: in a dependent chain of exponentials this form took 18.2 ns
    each, fdlibm's rational form 21.4-21.6 ns (bench/kmath_latency.py, 2-core Xeon) and
    Horner's in r 1.26x as long as this form. Estrin's scheme, four deep, cost expm1
    0.13 ulp more."""
    even = fma_f64(fma_f64(fma_f64(fma_f64(fma_f64(
        F64_EXP_C10, r2, F64_EXP_C8), r2, F64_EXP_C6), r2, F64_EXP_C4), r2, F64_EXP_C2),
        r2, F64_EXP_C0)
    odd = fma_f64(fma_f64(fma_f64(fma_f64(
        F64_EXP_C9, r2, F64_EXP_C7), r2, F64_EXP_C5), r2, F64_EXP_C3), r2, F64_EXP_C1)
    return fma_f64(odd, r, even)


def _exp_reduced_f64(x):
    """(k, hi, t) with x = k ln 2 + r, r = hi - lo, and e^r - 1 = hi - t, t = lo - r^2 Q(r)
    (fdlibm's reduction; Q, :data:`F64_EXP_C`, is (e^r - 1 - r) / r^2; k, an int64, comes
    from the bits of the rounded sum: AVX2 has no vector float64-to-int64 conversion)."""
    shifted = fma_f64(x, F64_LOG2E, F64_ROUND)
    k = shifted - F64_ROUND
    ki = np.int64(f64_as_i64(shifted) - I64_ROUND_BITS)
    hi = fma_f64(-k, F64_LN2_HI, x)  # exact: k * F64_LN2_HI is exact and close to x
    lo = k * F64_LN2_LO
    r = hi - lo
    r2 = r * r
    return ki, hi, fma_f64(-r2, _exp_tail_f64(r, r2), lo)


def _exp_core_f64(x):
    """e^x for float64 x in [F64_EXP_MIN, F64_EXP_MAX]: 1 - (t - hi)
    (:func:`_exp_reduced_f64`) times 2^k as two normal factors."""
    ki, hi, t = _exp_reduced_f64(x)
    m = 1.0 - (t - hi)
    k1 = np.int64(ki >> I64_ONE)
    return (m * _pow2_f64(k1)) * _pow2_f64(np.int64(ki - k1))


def _exp_core_moderate_f64(x):
    """:func:`_exp_core_f64` for x in [-708, 708], with one scaling (as
    :func:`_exp_core_moderate_f32`)."""
    ki, hi, t = _exp_reduced_f64(x)
    return (1.0 - (t - hi)) * _pow2_f64(ki)


def exp_f64(x):
    """e^x for float64 x (1 ulp; subnormal results round twice)."""
    xf = np.float64(x)
    xc = select(xf > F64_EXP_HI, F64_EXP_HI, select(xf < F64_EXP_LO, F64_EXP_LO, xf))
    return select(xf != xf, xf, _exp_core_f64(xc))


def expm1_f64(x):
    """e^x - 1 for float64 x, as :func:`expm1_f32` with the float64 exponential's
    reduction (e^r - 1 = hi - (lo - r^2 Q(r)))."""
    xf = np.float64(x)
    xc = select(xf > F64_EXP_MAX, F64_EXP_MAX, select(xf < F64_EXPM1_MIN, F64_EXPM1_MIN, xf))
    ki, hi, t = _exp_reduced_f64(xc)
    p = hi - t
    kc = select(ki > I64_1023, I64_1023, ki)
    scale = _pow2_f64(kc)
    value = ((scale - 1.0) + scale * p) * _pow2_f64(np.int64(ki - kc))
    value = select(xf > F64_EXP_MAX, F64_INF, value)
    value = select(xf < F64_EXPM1_MIN, -1.0, value)
    return select(xf == 0.0, xf, select(xf != xf, xf, value))


def tanh_f64(x):
    """tanh(x) for float64 x, as :func:`tanh_f32` in float64."""
    xf = np.float64(x)
    ax = select(xf < 0.0, -xf, xf)
    z = ax * ax
    small = fma_f64(ax * z, _tanh_odd_f64(z), ax)
    y = select(ax > F64_TANH_CLAMP, F64_TANH_CLAMP, ax)
    e = _exp_core_moderate_f64(y + y)
    large = 1.0 - 2.0 / (e + 1.0)
    t = select(ax < F64_TANH_SMALL, small, large)
    return select(xf == 0.0, xf, select(xf < 0.0, -t, t))


def sigmoid_f64(x):
    """:func:`sigmoid_f32` in float64."""
    xf = np.float64(x)
    ax = select(xf < 0.0, -xf, xf)
    e = exp_f64(-ax)
    d = 1.0 + e
    return select(xf < 0.0, e / d, 1.0 / d)


def silu_f64(x):
    """:func:`silu_f32` in float64."""
    xf = np.float64(x)
    return select(xf == -F64_INF, -0.0, xf * sigmoid_f64(xf))


def gelu_f64(x):
    """:func:`gelu_f32` in float64."""
    xf = np.float64(x)
    u = F64_GELU_C * (xf + F64_GELU_A * (xf * xf * xf))
    return select(xf == -F64_INF, -0.0, xf * sigmoid_f64(u + u))


# --- log (musl's logf and fdlibm's log, as selects) -----------------------------------
# x = 2^k (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)); log(1 + f) = f - f^2/2 + s (f^2/2 +
# R(s^2)), s = f / (2 + f).
F32_LN2_HI_LOG = np.float32(6.9313812256e-01)
F32_LN2_LO_LOG = np.float32(9.0580006145e-06)
F32_LG = tuple(np.float32(c) for c in (0.66666662693, 0.40000972152, 0.28498786688,
                                       0.24279078841))
F32_HALF = np.float32(0.5)
F32_SUBNORMAL_SCALE = np.float32(2.0 ** 23)
F32_MIN_NORMAL = np.float32(2.0 ** -126)
I32_SQRT_HALF_BITS = np.int32(0x3F3504F3)
I32_ONE_MINUS_SQRT_HALF = np.int32(0x3F800000 - 0x3F3504F3)
I32_MANTISSA = np.int32(0x007FFFFF)
I32_BIAS = np.int32(0x7F)
F32_LG1, F32_LG2, F32_LG3, F32_LG4 = F32_LG
F64_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
          2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
          1.479819860511658591e-01)
F64_LG1, F64_LG2, F64_LG3, F64_LG4, F64_LG5, F64_LG6, F64_LG7 = F64_LG
F64_SUBNORMAL_SCALE = 2.0 ** 54
F64_MIN_NORMAL = 2.0 ** -1022
I64_SQRT_HALF_BITS = np.int64(0x3FE6A09E667F3BCD)
I64_ONE_MINUS_SQRT_HALF = np.int64(0x3FF0000000000000 - 0x3FE6A09E667F3BCD)
I64_MANTISSA = np.int64(0x000FFFFFFFFFFFFF)
I64_BIAS = np.int64(0x3FF)


def _log_series_f32(f, hfsq):
    """s (f^2/2 + R(s^2)), s = f / (2 + f): log(1 + f) - f + f^2/2, the part of the
    logarithm of the reduced argument 1 + f that the series gives (``hfsq`` = f^2/2)."""
    s = f / (F32_TWO + f)
    z = s * s
    w = z * z
    t1 = w * (F32_LG2 + w * F32_LG4)
    t2 = z * (F32_LG1 + w * F32_LG3)
    return s * (hfsq + (t1 + t2))


def _log_series_f64(f, hfsq):
    """:func:`_log_series_f32` in float64 (fdlibm's seven coefficients)."""
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (F64_LG2 + w * (F64_LG4 + w * F64_LG6))
    t2 = z * (F64_LG1 + w * (F64_LG3 + w * (F64_LG5 + w * F64_LG7)))
    return s * (hfsq + (t1 + t2))


def log_f32(x):
    """ln x for float32 x (musl's logf, with selects for its branches): -inf at 0, nan
    below 0 and at nan, inf at inf; subnormals are scaled by 2^23 first."""
    xf = np.float32(x)
    tiny = xf < F32_MIN_NORMAL
    xs = select(tiny, xf * F32_SUBNORMAL_SCALE, xf)
    ix = np.int32(f32_as_i32(xs) + I32_ONE_MINUS_SQRT_HALF)
    k = np.int32(np.int32(ix >> I32_23) - I32_BIAS)
    k = select(tiny, np.int32(k - I32_23), k)
    m = i32_as_f32(np.int32(np.int32(ix & I32_MANTISSA) + I32_SQRT_HALF_BITS))
    f = m - F32_ONE
    hfsq = F32_HALF * f * f
    kf = np.float32(k)
    value = _log_series_f32(f, hfsq) + kf * F32_LN2_LO_LOG - hfsq + f + kf * F32_LN2_HI_LOG
    value = select(xf == F32_INF, F32_INF, value)
    value = select(xf == F32_ZERO, -F32_INF, value)
    return select(xf < F32_ZERO, F32_NAN, select(xf != xf, xf, value))


def log_f64(x):
    """ln x for float64 x (fdlibm's log, with selects for its branches), as
    :func:`log_f32`; subnormals are scaled by 2^54 first."""
    xf = np.float64(x)
    tiny = xf < F64_MIN_NORMAL
    xs = select(tiny, xf * F64_SUBNORMAL_SCALE, xf)
    ix = np.int64(f64_as_i64(xs) + I64_ONE_MINUS_SQRT_HALF)
    k = np.int64(np.int64(ix >> I64_52) - I64_BIAS)
    k = select(tiny, np.int64(k - I64_54), k)
    m = i64_as_f64(np.int64(np.int64(ix & I64_MANTISSA) + I64_SQRT_HALF_BITS))
    f = m - 1.0
    hfsq = 0.5 * f * f
    # Through int32 (|k| < 1100): AVX2 converts int32 to float64 in vectors, not int64.
    kf = np.float64(np.int32(k))
    value = _log_series_f64(f, hfsq) + kf * F64_LN2_LO - hfsq + f + kf * F64_LN2_HI
    value = select(xf == F64_INF, F64_INF, value)
    value = select(xf == 0.0, -F64_INF, value)
    return select(xf < 0.0, F64_NAN, select(xf != xf, xf, value))


def log1p_f32(x):
    """ln(1 + x) for float32 x without the rounding of 1 + x: u = 1 + x rounded and its
    rounding error c (exact, Fast2Sum), then ln u + c / u, the correction added to the
    logarithm's small terms. -inf at -1, nan below, log1p(-0) = -0."""
    xf = np.float32(x)
    u = F32_ONE + xf
    ax = select(xf < F32_ZERO, -xf, xf)
    c = select(ax < F32_ONE, xf - (u - F32_ONE), F32_ONE - (u - xf))
    ix = np.int32(f32_as_i32(u) + I32_ONE_MINUS_SQRT_HALF)
    k = np.int32(np.int32(ix >> I32_23) - I32_BIAS)
    m = i32_as_f32(np.int32(np.int32(ix & I32_MANTISSA) + I32_SQRT_HALF_BITS))
    f = m - F32_ONE
    hfsq = F32_HALF * f * f
    kf = np.float32(k)
    value = (_log_series_f32(f, hfsq) + (kf * F32_LN2_LO_LOG + c / u) - hfsq + f
             + kf * F32_LN2_HI_LOG)
    value = select(xf == F32_INF, F32_INF, value)
    value = select(xf == -F32_ONE, -F32_INF, value)
    value = select(xf < -F32_ONE, F32_NAN, value)
    return select(xf == F32_ZERO, xf, select(xf != xf, xf, value))


def log1p_f64(x):
    """:func:`log1p_f32` in float64."""
    xf = np.float64(x)
    u = 1.0 + xf
    ax = select(xf < 0.0, -xf, xf)
    c = select(ax < 1.0, xf - (u - 1.0), 1.0 - (u - xf))
    ix = np.int64(f64_as_i64(u) + I64_ONE_MINUS_SQRT_HALF)
    k = np.int64(np.int64(ix >> I64_52) - I64_BIAS)
    m = i64_as_f64(np.int64(np.int64(ix & I64_MANTISSA) + I64_SQRT_HALF_BITS))
    f = m - 1.0
    hfsq = 0.5 * f * f
    kf = np.float64(np.int32(k))
    value = _log_series_f64(f, hfsq) + (kf * F64_LN2_LO + c / u) - hfsq + f + kf * F64_LN2_HI
    value = select(xf == F64_INF, F64_INF, value)
    value = select(xf == -1.0, -F64_INF, value)
    value = select(xf < -1.0, F64_NAN, value)
    return select(xf == 0.0, xf, select(xf != xf, xf, value))


def erf_f32(x):
    """erf(x) for float32 x: x + x P(x^2) for |x| <= 1, 1 - e^(-x^2) Q above, Q = erfc
    e^(x^2) (smooth, so that the exponential carries erfc's decay) as a polynomial in u =
    (|x| - 2) / (|x| + 2); the sign put back; erf(-0) = -0, +-1 at +-inf."""
    xf = np.float32(x)
    ax = select(xf < F32_ZERO, -xf, xf)
    small = fma_f32(ax, _erf_p_f32(ax * ax), ax)
    xc = select(ax > F32_ERF_TOP, F32_ERF_TOP, select(ax < F32_ONE, F32_ONE, ax))
    u = (xc - F32_ERF_K) / (xc + F32_ERF_K)
    large = F32_ONE - _exp_core_moderate_f32(-(xc * xc)) * _erf_q_f32(u)
    value = select(ax <= F32_ONE, small, large)
    value = select(xf < F32_ZERO, -value, value)
    return select(xf == F32_ZERO, xf, select(xf != xf, xf, value))


def erf_f64(x):
    """:func:`erf_f32` in float64, Q in u = (|x| - 2.5) / (|x| + 2.5) on [1, 6]."""
    xf = np.float64(x)
    ax = select(xf < 0.0, -xf, xf)
    small = fma_f64(ax, _erf_p_f64(ax * ax), ax)
    xc = select(ax > F64_ERF_TOP, F64_ERF_TOP, select(ax < 1.0, 1.0, ax))
    u = (xc - F64_ERF_K) / (xc + F64_ERF_K)
    large = 1.0 - _exp_core_moderate_f64(-(xc * xc)) * _erf_q_f64(u)
    value = select(ax <= 1.0, small, large)
    value = select(xf < 0.0, -value, value)
    return select(xf == 0.0, xf, select(xf != xf, xf, value))


# --- sin and cos: Payne and Hanek's reduction for every argument, as products by a table -
# x (2/pi) = n + f, |f| <= 1/2, then sin x and cos x from sin and cos of r = f pi/2 by n mod
# 4. The bits of 2/pi that x meets are read from a table row chosen by x's exponent, in
# chunks short enough that x (or each half of a float64 x) times a chunk is exact: the
# bits above the row's first make multiples of 4 of x (2/pi), which change nothing; the
# chunks after the last are below the precision the worst case needs (f as small as
# 2^-61 for float64, x = 6381956970095103 2^797). No branch on the size of x: the same
# operations for x = 1 and x = 1e300, so a loop that calls them vectorises (libm's sin is
# a call with a slow path inside).


def _two_over_pi_bits(n):
    """floor(2^n 2/pi) as a Python int: pi by Machin's formula in integer arithmetic, with
    64 guard bits."""
    scale = 1 << (n + 66)

    def arctan_of_inverse(k):
        total, term, i, sign = 0, scale // k, 1, 1
        while term:
            total += sign * (term // i)
            term //= k * k
            i += 2
            sign = -sign
        return total

    pi_scaled = 4 * (4 * arctan_of_inverse(5) - arctan_of_inverse(239))
    return ((1 << (2 * n + 133)) // pi_scaled) >> 66


TWO_OVER_PI_BITS = 1280
_TWO_OVER_PI = _two_over_pi_bits(TWO_OVER_PI_BITS)


def _two_over_pi_chunk(first, width, scale=0):
    """The bits first .. first + width - 1 of 2/pi (bit j weighs 2^-j; those at j <= 0 are
    0), times 2^scale, as an exact float."""
    last = first + width - 1
    if last < 1:
        return 0.0
    value = (_TWO_OVER_PI >> (TWO_OVER_PI_BITS - last)) & ((1 << width) - 1)
    return float(value) * 2.0 ** (scale - last)


# float32: x = m 2^q (m < 2^24) in float64; chunks of 29 bits (24 + 29 <= 53), four of
# them from bit q - 1 (the row, by the biased exponent; rows below 0 all start at bit 1).
F32_TRIG_CHUNK_BITS = 29
F32_TRIG_CHUNKS = 4
F32_TRIG_ROWS = 104
F32_TRIG_TABLE = np.array([_two_over_pi_chunk(row + 1 + F32_TRIG_CHUNK_BITS * c,
                                              F32_TRIG_CHUNK_BITS)
                           for row in range(F32_TRIG_ROWS) for c in range(F32_TRIG_CHUNKS)])
I32_EXPONENT = np.int32(0xFF)
I32_TRIG_ROW_OFFSET = np.int32(152)  # the row of biased exponent E: E - 152
I32_ZERO = np.int32(0)
I32_TRIG_LAST_ROW = np.int32(F32_TRIG_ROWS - 1)
I32_TRIG_CHUNKS = np.int32(F32_TRIG_CHUNKS)
# pi/2 as a float64 pair (hi + lo), hi also split in 26 + 27 bits for Dekker's product.
F64_PIO2_HI = 1.5707963267948966
F64_PIO2_LO = 6.123233995736766e-17
# musl's __sindf and __cosdf: float64 polynomials on [-pi/4, pi/4] good to 2^-37.5 and
# 2^-34.1, for float32 results.
F32_SIN_D = (-0.166666666416265235595, 0.0083333293858894631756,
             -0.000198393348360966317347, 0.0000027183114939898219064)
F32_COS_D = (-0.499999997251031003120, 0.0416666233237390631894,
             -0.00138867637746099294692, 0.0000243904487962774090654)
F32_SIN_D1, F32_SIN_D2, F32_SIN_D3, F32_SIN_D4 = F32_SIN_D
F32_COS_D0, F32_COS_D1, F32_COS_D2, F32_COS_D3 = F32_COS_D

# float64: x = xh + xl, xh the top 26 bits of the significand and xl the 27 below, each
# times chunks of 26 bits (exact); six chunks per half from their rows (j0 = q - 1 for
# xl, q + 26 for xh, with x = m 2^q), rows from bit -80 (x >= 2^-27) to 997 (the largest
# float64). Rows from bit 600 on are stored times 2^600 and x's half is scaled by 2^-600,
# since the far chunks would underflow.
F64_TRIG_CHUNK_BITS = 26
F64_TRIG_CHUNKS = 6
F64_TRIG_FIRST_BIT = -80
F64_TRIG_ROWS = 997 - F64_TRIG_FIRST_BIT + 1
F64_TRIG_SCALED_FROM = 600
F64_TRIG_TABLE = np.array([
    _two_over_pi_chunk(F64_TRIG_FIRST_BIT + row + F64_TRIG_CHUNK_BITS * c,
                       F64_TRIG_CHUNK_BITS,
                       F64_TRIG_SCALED_FROM if F64_TRIG_FIRST_BIT + row >= F64_TRIG_SCALED_FROM
                       else 0)
    for row in range(F64_TRIG_ROWS) for c in range(F64_TRIG_CHUNKS)])
I64_TRIG_LOW_OFFSET = np.int64(1076 + F64_TRIG_FIRST_BIT)   # xl's row: E - 1076 - first
I64_TRIG_HIGH_OFFSET = np.int64(1049 + F64_TRIG_FIRST_BIT)  # xh's row: E - 1049 - first
I64_TRIG_SCALED_ROW = np.int64(F64_TRIG_CHUNKS * (F64_TRIG_SCALED_FROM - F64_TRIG_FIRST_BIT))
I64_TRIG_LAST_ROW = np.int64(F64_TRIG_ROWS - 1)
I64_TRIG_CHUNKS = np.int64(F64_TRIG_CHUNKS)
I64_ZERO = np.int64(0)
I64_LOW_27_CLEARED = np.int64(~((1 << 27) - 1))
F64_TRIG_DOWN = 2.0 ** -F64_TRIG_SCALED_FROM
F64_PIO2_HI_HEAD = float(np.int64(np.array(F64_PIO2_HI).view(np.int64) & ~((1 << 27) - 1))
                         .view(np.float64))
F64_PIO2_HI_TAIL = F64_PIO2_HI - F64_PIO2_HI_HEAD
# Below 2^-27, sin x rounds to x and cos x to 1 (x^2/6 and x^2/2 are under half an ulp).
F64_TRIG_TINY = 2.0 ** -27
# fdlibm's __kernel_sin and __kernel_cos (FreeBSD's k_sin.c, k_cos.c): < 1 ulp on
# [-pi/4, pi/4] from the reduced argument as a pair.
F64_SIN_K = (-1.66666666666666324348e-01, 8.33333333332248946124e-03,
             -1.98412698298579493134e-04, 2.75573137070700676789e-06,
             -2.50507602534068634195e-08, 1.58969099521155010221e-10)
F64_COS_K = (4.16666666666666019037e-02, -1.38888888888741095749e-03,
             2.48015872894767294178e-05, -2.75573143513906633035e-07,
             2.08757232129817482790e-09, -1.13596475577881948265e-11)
F64_SIN_K1, F64_SIN_K2, F64_SIN_K3, F64_SIN_K4, F64_SIN_K5, F64_SIN_K6 = F64_SIN_K
F64_COS_K1, F64_COS_K2, F64_COS_K3, F64_COS_K4, F64_COS_K5, F64_COS_K6 = F64_COS_K


def _rint_f64(v):
    """v rounded to the nearest integer (ties to even), |v| < 2^51."""
    return (v + F64_ROUND) - F64_ROUND


def _quadrant_f64(n):
    """n mod 4 in {0, 1, 2, 3} for an integral float64 n, |n| < 2^50 (n/4 - 3/8 is never
    a tie, so it rounds to floor(n/4))."""
    return n - 4.0 * _rint_f64(n * 0.25 - 0.375)


def _sin_poly_f32(r):
    """sin r for float64 r in [-pi/4, pi/4], to 2^-37.5 relative (musl's __sindf)."""
    z = r * r
    w = z * z
    s = z * r
    return (r + s * (F32_SIN_D1 + z * F32_SIN_D2)) + s * w * (F32_SIN_D3 + z * F32_SIN_D4)


def _cos_poly_f32(r):
    """cos r for float64 r in [-pi/4, pi/4], to 2^-34.1 (musl's __cosdf)."""
    z = r * r
    w = z * z
    return ((1.0 + z * F32_COS_D0) + w * F32_COS_D1) + (w * z) * (F32_COS_D2 + z * F32_COS_D3)


def _f32_trig_chunk(at):
    """F32_TRIG_TABLE[at]. The reductions read the tables only through these two
    functions: numba-cuda lowers every place a function reads a global array as a copy of
    the array in the kernel's constant data (64 KiB at most), and the twelve reads of the
    51 KB float64 table written out made a kernel that did not link."""
    return F32_TRIG_TABLE[at]


def _f64_trig_chunk(at):
    """F64_TRIG_TABLE[at] (see :func:`_f32_trig_chunk`)."""
    return F64_TRIG_TABLE[at]


def _reduce_pio2_f32(xf):
    """(n mod 4, r) with |x| (2/pi) = n + r / (pi/2), |r| <= pi/4 (a little more when the
    rounding of n is off by one: harmless), for float32 x, computed in float64: 2^-34
    relative or better, which float32 results do not see."""
    ax = np.float64(select(xf < F32_ZERO, -xf, xf))
    exponent = np.int32(np.int32(f32_as_i32(xf) >> I32_23) & I32_EXPONENT)
    row = np.int32(exponent - I32_TRIG_ROW_OFFSET)
    row = select(row < I32_ZERO, I32_ZERO, select(row > I32_TRIG_LAST_ROW, I32_TRIG_LAST_ROW,
                                                  row))
    at = np.int32(row * I32_TRIG_CHUNKS)
    # One index type (at + 1 is an int64): one compiled _f32_trig_chunk, one copy of the
    # table.
    p0 = ax * _f32_trig_chunk(np.int64(at))
    p1 = ax * _f32_trig_chunk(at + 1)
    p2 = ax * _f32_trig_chunk(at + 2)
    p3 = ax * _f32_trig_chunk(at + 3)
    # p0 - n is exact (both on p0's grid, 2^-27 at most), so the cancellation near a
    # multiple of pi/2 costs no accuracy.
    n = _rint_f64(p0 + p1)
    f = ((p0 - n) + p1) + (p2 + p3)
    return _quadrant_f64(n), f * F64_PIO2_HI


def sin_f32(x):
    """sin x for float32 x, every argument reduced exactly (0.501 ulp measured); sin(-0) =
    -0, nan at +-inf."""
    xf = np.float32(x)
    quadrant, r = _reduce_pio2_f32(xf)
    s = _sin_poly_f32(r)
    c = _cos_poly_f32(r)
    value = select(quadrant == 0.0, s, select(quadrant == 1.0, c,
                                               select(quadrant == 2.0, -s, -c)))
    value = select(f32_as_i32(xf) < I32_ZERO, -value, value)
    return np.float32(value)


def cos_f32(x):
    """cos x for float32 x, as :func:`sin_f32`."""
    xf = np.float32(x)
    quadrant, r = _reduce_pio2_f32(xf)
    s = _sin_poly_f32(r)
    c = _cos_poly_f32(r)
    value = select(quadrant == 0.0, c, select(quadrant == 1.0, -s,
                                               select(quadrant == 2.0, -c, s)))
    return np.float32(value)


def _two_sum_f64(a, b):
    """(s, e) with s = a + b rounded and s + e = a + b exactly (Knuth's TwoSum)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _trig_row_f64(exponent, offset):
    """The first table index of the row for a half of x whose row is exponent - offset."""
    row = np.int64(exponent - offset)
    row = select(row < I64_ZERO, I64_ZERO, select(row > I64_TRIG_LAST_ROW, I64_TRIG_LAST_ROW,
                                                  row))
    return np.int64(row * I64_TRIG_CHUNKS)


def _head_f64(v):
    """v with the low 27 bits of its significand cleared (26 significant bits left)."""
    return i64_as_f64(np.int64(f64_as_i64(v) & I64_LOW_27_CLEARED))


def _reduce_pio2_f64(ax):
    """(n mod 4, r_hi, r_lo) with ax (2/pi) = n + r / (pi/2), r = r_hi + r_lo to about
    2^-100 relative, for float64 ax >= 2^-27.

    The products of a chunk level c have the grid 2^(-24 - 26c) and are below 2^(29 -
    26c): levels 0 and 1 are split exactly into integers (summed into n) and fractions,
    whose sum is exact; the smaller levels are added with TwoSum, so when x is near a
    multiple of pi/2 the cancellation is exact and what is left has full precision."""
    exponent = np.int64(f64_as_i64(ax) >> I64_52)
    xh = _head_f64(ax)
    xl = ax - xh
    low = _trig_row_f64(exponent, I64_TRIG_LOW_OFFSET)
    high = _trig_row_f64(exponent, I64_TRIG_HIGH_OFFSET)
    xl = select(low >= I64_TRIG_SCALED_ROW, xl * F64_TRIG_DOWN, xl)
    xh = select(high >= I64_TRIG_SCALED_ROW, xh * F64_TRIG_DOWN, xh)
    p0h = xh * _f64_trig_chunk(high)
    p0l = xl * _f64_trig_chunk(low)
    p1h = xh * _f64_trig_chunk(high + 1)
    p1l = xl * _f64_trig_chunk(low + 1)
    n0h = _rint_f64(p0h)
    n0l = _rint_f64(p0l)
    n1h = _rint_f64(p1h)
    n1l = _rint_f64(p1l)
    f = (((p0h - n0h) + (p0l - n0l)) + (p1h - n1h)) + (p1l - n1l)
    n2 = _rint_f64(f)
    f = f - n2
    hi, lo = _two_sum_f64(f, xh * _f64_trig_chunk(high + 2))
    hi, e1 = _two_sum_f64(hi, xl * _f64_trig_chunk(low + 2))
    hi, e2 = _two_sum_f64(hi, xh * _f64_trig_chunk(high + 3))
    hi, e3 = _two_sum_f64(hi, xl * _f64_trig_chunk(low + 3))
    far = ((xh * _f64_trig_chunk(high + 4) + xl * _f64_trig_chunk(low + 4))
           + (xh * _f64_trig_chunk(high + 5) + xl * _f64_trig_chunk(low + 5)))
    lo = (lo + e1) + ((e2 + e3) + far)
    # r = (hi + lo) pi/2: hi pi/2 exactly as a pair by Dekker's product (no FMA: the CPU
    # and CUDA kernels keep contraction off), the rest rounded.
    hh = _head_f64(hi)
    hl = hi - hh
    product = hi * F64_PIO2_HI
    error = (((hh * F64_PIO2_HI_HEAD - product) + hh * F64_PIO2_HI_TAIL)
             + hl * F64_PIO2_HI_HEAD) + hl * F64_PIO2_HI_TAIL
    tail = error + (hi * F64_PIO2_LO + lo * F64_PIO2_HI)
    r = product + tail
    n = ((n0h + n0l) + (n1h + n1l)) + n2
    return _quadrant_f64(n), r, tail - (r - product)


def _sin_kernel_f64(x, y):
    """sin(x + y) for |x + y| <= pi/4 (a little more is fine), y below x's ulp."""
    z = x * x
    w = z * z
    r = F64_SIN_K2 + z * (F64_SIN_K3 + z * F64_SIN_K4) + z * w * (F64_SIN_K5 + z * F64_SIN_K6)
    v = z * x
    return x - ((z * (0.5 * y - v * r) - y) - v * F64_SIN_K1)


def _cos_kernel_f64(x, y):
    """cos(x + y) on the same range."""
    z = x * x
    w = z * z
    r = (z * (F64_COS_K1 + z * (F64_COS_K2 + z * F64_COS_K3))
         + w * w * (F64_COS_K4 + z * (F64_COS_K5 + z * F64_COS_K6)))
    hz = 0.5 * z
    w = 1.0 - hz
    return w + (((1.0 - w) - hz) + (z * r - x * y))


def sin_f64(x):
    """sin x for float64 x, every argument reduced exactly (0.78 ulp measured); x itself
    below 2^-27, nan at +-inf."""
    xf = np.float64(x)
    ax = select(xf < 0.0, -xf, xf)
    quadrant, r, r_lo = _reduce_pio2_f64(ax)
    s = _sin_kernel_f64(r, r_lo)
    c = _cos_kernel_f64(r, r_lo)
    value = select(quadrant == 0.0, s, select(quadrant == 1.0, c,
                                               select(quadrant == 2.0, -s, -c)))
    value = select(xf < 0.0, -value, value)
    return select(ax < F64_TRIG_TINY, xf, value)


def cos_f64(x):
    """cos x for float64 x, as :func:`sin_f64`; 1 below 2^-27."""
    xf = np.float64(x)
    ax = select(xf < 0.0, -xf, xf)
    quadrant, r, r_lo = _reduce_pio2_f64(ax)
    s = _sin_kernel_f64(r, r_lo)
    c = _cos_kernel_f64(r, r_lo)
    value = select(quadrant == 0.0, c, select(quadrant == 1.0, -s,
                                               select(quadrant == 2.0, -c, s)))
    return select(ax < F64_TRIG_TINY, 1.0, value)


# --- pow: fdlibm's method (e_pow.c), its branches as selects ----------------------------
# log2|x| = t1 + t2 to about 2^-64 (t1 with its low 32 bits zero), y log2|x| = p_h + p_l
# with p_h = y1 t1 exact (y1: y's high 32 bits), then 2^(p_h + p_l) as 2^n 2^(z) with |z|
# <= 1/2. float32 is the float64 function rounded once more (its error is 2^-29 of a
# float32 ulp), which also gives it every special case.
F64_POW_DP_H = 5.84962487220764160156e-01  # log2(1.5), high part
F64_POW_DP_L = 1.35003920212974897128e-08
F64_POW_L = (5.99999999999994648725e-01, 4.28571428578550184252e-01,
             3.33333329818377432918e-01, 2.72728123808534006489e-01,
             2.30660745775561754067e-01, 2.06975017800338417784e-01)
F64_POW_L1, F64_POW_L2, F64_POW_L3, F64_POW_L4, F64_POW_L5, F64_POW_L6 = F64_POW_L
# 2^z's polynomial is the exponential's (fdlibm's P1..P5, stored highest degree first).
F64_POW_P1, F64_POW_P2, F64_POW_P3, F64_POW_P4, F64_POW_P5 = F64_EXP_P[::-1]
F64_POW_LG2 = 6.93147180559945286227e-01
F64_POW_LG2_H = 6.93147182464599609375e-01
F64_POW_LG2_L = -1.90465429995776804525e-09
F64_POW_OVT = 8.0085662595372944372e-17  # -(1024 - log2(the largest float + 1/2 ulp))
F64_POW_CP = 9.61796693925975554329e-01    # 2 / (3 ln 2)
F64_POW_CP_H = 9.61796700954437255859e-01
F64_POW_CP_L = -7.02846165095275826516e-09
F64_POW_IVLN2 = 1.44269504088896338700e+00
F64_POW_IVLN2_H = 1.44269502162933349609e+00
F64_POW_IVLN2_L = 1.92596299112661746887e-08
F64_TWO53 = 9007199254740992.0
I64_HIGH_WORD = np.int64(-(1 << 32))  # the high 32 bits of a float64
I64_ONE_BITS = np.int64(0x3FF0000000000000)
I64_IMPLICIT_BIT = np.int64(1 << 52)
I64_53 = np.int64(53)
I64_0x7FF = np.int64(0x7FF)
I64_POW_SQRT_3_2 = np.int64(0x3988E)   # the high 20 mantissa bits of sqrt(3/2)
I64_POW_SQRT_3 = np.int64(0xBB67A)     # ... and of sqrt(3) / 2
I64_32 = np.int64(32)
# |y| above 2^31 with |x| within about 2^-20 of 1: log2 x from its series in x - 1.
F64_POW_HUGE_Y = 2147483648.0
F64_POW_NEAR_ONE_LO = 0.99999904632568359375  # high word 0x3FEFFFFF
F64_POW_NEAR_ONE_HI = 1.00000095367431640625  # high word 0x3FF00001 (exclusive)
F64_POW_CLAMP = 1100.0


def _high_word_f64(v):
    """v with the low 32 bits of its significand cleared."""
    return i64_as_f64(np.int64(f64_as_i64(v) & I64_HIGH_WORD))


def _log2_pair_f64(ax):
    """(t1, t2): log2 ax = t1 + t2 to about 2^-64 relative, t1 with its low 32 bits zero,
    for finite ax > 0. ax = 2^n m with m in [1, sqrt(3/2)) (against 1), [sqrt(3/2),
    sqrt(3)) (against 1.5) or [sqrt(3)/2, 1) (against 1, n one higher); s = (m - b) / (m
    + b) as s_h + s_l; log2 m = log2 b + (2 / (3 ln 2)) (3 s + s^3 + R(s^2)) carried in
    pieces whose products are exact."""
    tiny = ax < F64_MIN_NORMAL
    a = select(tiny, ax * F64_TWO53, ax)
    bits = f64_as_i64(a)
    n = np.int64(np.int64(bits >> I64_52) - I64_1023)
    n = select(tiny, np.int64(n - I64_53), n)
    mantissa = np.int64(bits & I64_MANTISSA)
    top = np.int64(mantissa >> I64_32)
    against_1_5 = (top > I64_POW_SQRT_3_2) & (top < I64_POW_SQRT_3)
    above = top >= I64_POW_SQRT_3
    m = i64_as_f64(np.int64(mantissa | I64_ONE_BITS))
    m = select(above, m * 0.5, m)
    n = select(above, np.int64(n + I64_ONE), n)
    b = select(against_1_5, 1.5, 1.0)
    dp_h = select(against_1_5, F64_POW_DP_H, 0.0)
    dp_l = select(against_1_5, F64_POW_DP_L, 0.0)
    u = m - b
    v = 1.0 / (m + b)
    ss = u * v
    s_h = _high_word_f64(ss)
    # m + b = t_h + t_l exactly, t_h short enough that s_h t_h is exact.
    m_h = _high_word_f64(m)
    t_h = m_h + b
    t_l = m - m_h
    s_l = v * ((u - s_h * t_h) - s_h * t_l)
    s2 = ss * ss
    r = s2 * s2 * (F64_POW_L1 + s2 * (F64_POW_L2 + s2 * (F64_POW_L3 + s2 * (
        F64_POW_L4 + s2 * (F64_POW_L5 + s2 * F64_POW_L6)))))
    r = r + s_l * (s_h + ss)
    s2 = s_h * s_h
    t_h = _high_word_f64((3.0 + s2) + r)
    t_l = r - ((t_h - 3.0) - s2)
    u = s_h * t_h
    v = s_l * t_h + t_l * ss
    p_h = _high_word_f64(u + v)
    p_l = v - (p_h - u)
    z_h = F64_POW_CP_H * p_h
    z_l = (F64_POW_CP_L * p_h + p_l * F64_POW_CP) + dp_l
    t = np.float64(np.int32(n))
    t1 = _high_word_f64(((z_h + z_l) + dp_h) + t)
    t2 = z_l - (((t1 - t) - dp_h) - z_h)
    return t1, t2


def _log2_near_one_f64(ax):
    """log2 ax as (t1, t2) from x - 1 - (x - 1)^2 / 2 + ..., for |ax - 1| < 2^-20."""
    t = ax - 1.0
    w = (t * t) * (0.5 - t * (0.3333333333333333333333 - t * 0.25))
    u = F64_POW_IVLN2_H * t
    v = t * F64_POW_IVLN2_L - w * F64_POW_IVLN2
    t1 = _high_word_f64(u + v)
    return t1, v - (t1 - u)


def _exp2_pair_f64(p_h, p_l):
    """2^(p_h + p_l) for |p_h + p_l| <= 1100 (p_h with its low 32 bits zero times y's
    high part, as _log2_pair_f64 leaves it)."""
    n = _rint_f64(p_h + p_l)
    p_h = p_h - n
    t = _high_word_f64(p_l + p_h)
    u = t * F64_POW_LG2_H
    v = (p_l - (t - p_h)) * F64_POW_LG2 + t * F64_POW_LG2_L
    z = u + v
    w = v - (z - u)
    t = z * z
    t1 = z - t * (F64_POW_P1 + t * (F64_POW_P2 + t * (F64_POW_P3 + t * (
        F64_POW_P4 + t * F64_POW_P5))))
    r = (z * t1) / (t1 - 2.0) - (w + z * w)
    z = 1.0 - (r - z)
    ni = np.int64(np.int32(n))
    k1 = np.int64(ni >> I64_ONE)
    # 2^n as two normal factors, as exp: results near the float64 limits need 2^1024 or
    # 2^-1074 (subnormal results round twice).
    return (z * _pow2_f64(k1)) * _pow2_f64(np.int64(ni - k1))


def _pow_special_f64(xf, yf, value):
    """C99 pow's result for x and y (float64) given ``value``, |x|^y for finite nonzero
    x where it neither overflows nor underflows (the lanes where it is not that are
    replaced): x^0 = 1 and 1^y = 1 even for nan; a negative x to an odd integer power
    has the sign of x, to a non-integer power nan; the signs of 0 and inf by y's parity;
    (-1)^(+-inf) = 1."""
    ax = select(xf < 0.0, -xf, xf)
    ay = select(yf < 0.0, -yf, yf)
    # y's integer part: whole above 2^52; odd when the units bit of its significand is 1.
    ybits = f64_as_i64(yf)
    ey = np.int64(np.int64(np.int64(ybits >> I64_52) & I64_0x7FF) - I64_1023)
    shift = np.int64(I64_52 - ey)
    shift = select(shift < I64_ZERO, I64_ZERO, select(shift > I64_53, I64_53, shift))
    significand = np.int64(np.int64(ybits & I64_MANTISSA) | I64_IMPLICIT_BIT)
    fraction = np.int64(significand & np.int64(np.int64(I64_ONE << shift) - I64_ONE))
    y_fractional = (ey < I64_52) & (fraction != I64_ZERO)
    y_odd = ((ey <= I64_52) & (fraction == I64_ZERO)
             & (np.int64(np.int64(significand >> shift) & I64_ONE) == I64_ONE))
    # x = +-0 and +-inf: 0 or inf by the sign of y.
    value = select(ax == 0.0, select(yf < 0.0, F64_INF, 0.0), value)
    value = select(ax == F64_INF, select(yf < 0.0, 0.0, F64_INF), value)
    negative = f64_as_i64(xf) < I64_ZERO
    value = select(negative & y_odd, -value, value)
    value = select(negative & y_fractional & (ax > 0.0) & (ax < F64_INF), F64_NAN, value)
    # y = +-inf: 1 at |x| = 1, else inf or 0 as |x| and y are on the same side of 1 and 0.
    value = select(ay == F64_INF, select(ax == 1.0, 1.0,
                                         select((ax > 1.0) == (yf > 0.0), F64_INF, 0.0)),
                   value)
    value = select((xf != xf) | (yf != yf), xf + yf, value)
    return select((xf == 1.0) | (yf == 0.0), 1.0, value)


def _finite_magnitude_f64(xf):
    """|x| where it is finite and nonzero, else 1 (a harmless argument for the lanes that
    :func:`_pow_special_f64` replaces)."""
    ax = select(xf < 0.0, -xf, xf)
    return select((ax > 0.0) & (ax < F64_INF), ax, 1.0)


def pow_f64(x, y):
    """x^y for float64 x and y, C99's special cases included (:func:`_pow_special_f64`)."""
    xf = np.float64(x)
    yf = np.float64(y)
    ax = _finite_magnitude_f64(xf)
    ay = select(yf < 0.0, -yf, yf)
    t1, t2 = _log2_pair_f64(ax)
    near = (ay > F64_POW_HUGE_Y) & (ax >= F64_POW_NEAR_ONE_LO) & (ax < F64_POW_NEAR_ONE_HI)
    n1, n2 = _log2_near_one_f64(ax)
    t1 = select(near, n1, t1)
    t2 = select(near, n2, t2)
    y1 = _high_word_f64(yf)
    p_l = (yf - y1) * t1 + yf * t2
    p_h = y1 * t1
    z = p_l + p_h
    over = (z > 1024.0) | ((z == 1024.0) & (p_l + F64_POW_OVT > z - p_h))
    under = (z < -1075.0) | ((z == -1075.0) & (p_l <= z - p_h))
    inside = (z >= -F64_POW_CLAMP) & (z <= F64_POW_CLAMP)
    value = _exp2_pair_f64(select(inside, p_h, 0.0), select(inside, p_l, 0.0))
    value = select(over, F64_INF, select(under, 0.0, value))
    # fdlibm's exact cases: y = 1, -1, 2.
    value = select(yf == 1.0, ax, select(yf == -1.0, 1.0 / ax, select(yf == 2.0, ax * ax,
                                                                          value)))
    return _pow_special_f64(xf, yf, value)


# float32 pow: 2^(y log2|x|) in float64, with no table (a table's loads, which AVX2
# makes one by one, kept the loop around them from vectorising: a CEV model's step ran at
# 1.6e8 path-steps/s with musl-style tables against 2.1e8 without). x = 2^k z with z in
# [sqrt(1/2), sqrt(2)), s = (z - 1) / (z + 1), log2 z = (2 / ln 2)(s + s^3/3 + ... +
# s^15/15) (|s| <= 0.172: 2^-41 relative); 2^t = 2^n 2^f with |f| <= 1/2 and 2^f by its
# series to f^10 (2^-40). |y log2 x| <= 150 where a float32 result is finite and nonzero,
# so the result is good to about 2^-32 before its rounding to float32.
F64_TWO_OVER_LN2 = 2.0 / math.log(2.0)
F64_POWF_ATANH_C = tuple(1.0 / (2 * n + 1) for n in range(1, 8))  # s^3/3 ... s^15/15
F64_POWF_A3, F64_POWF_A5, F64_POWF_A7, F64_POWF_A9, F64_POWF_A11, F64_POWF_A13, \
    F64_POWF_A15 = F64_POWF_ATANH_C
F64_LN2 = 0.6931471805599453
F64_POWF_EXP2_C = tuple(F64_LN2 ** n / math.factorial(n) for n in range(1, 11))
F64_POWF_E1, F64_POWF_E2, F64_POWF_E3, F64_POWF_E4, F64_POWF_E5, F64_POWF_E6, \
    F64_POWF_E7, F64_POWF_E8, F64_POWF_E9, F64_POWF_E10 = F64_POWF_EXP2_C
F64_POWF_CLAMP = 200.0
I32_24 = np.int32(24)
I32_IMPLICIT_BIT = np.int32(1 << 23)


def _log2_f32_in_f64(ax):
    """log2 ax in float64 for float32 ax > 0 finite (subnormals scaled by 2^23 first), to
    about 2^-41 relative."""
    tiny = ax < F32_MIN_NORMAL
    a = select(tiny, ax * F32_SUBNORMAL_SCALE, ax)
    ix = np.int32(f32_as_i32(a) + I32_ONE_MINUS_SQRT_HALF)
    k = np.int32(np.int32(ix >> I32_23) - I32_BIAS)
    k = select(tiny, np.int32(k - I32_23), k)
    z = np.float64(i32_as_f32(np.int32(np.int32(ix & I32_MANTISSA) + I32_SQRT_HALF_BITS)))
    s = (z - 1.0) / (z + 1.0)
    s2 = s * s
    series = s + s * s2 * (F64_POWF_A3 + s2 * (F64_POWF_A5 + s2 * (F64_POWF_A7 + s2 * (
        F64_POWF_A9 + s2 * (F64_POWF_A11 + s2 * (F64_POWF_A13 + s2 * F64_POWF_A15))))))
    return np.float64(k) + series * F64_TWO_OVER_LN2


def _exp2_f64_for_f32(t):
    """2^t in float64 for |t| <= 200, to about 2^-40 relative."""
    shifted = t + F64_ROUND
    n = shifted - F64_ROUND
    f = t - n
    ni = np.int64(f64_as_i64(shifted) - I64_ROUND_BITS)
    series = f * (F64_POWF_E1 + f * (F64_POWF_E2 + f * (F64_POWF_E3 + f * (F64_POWF_E4 + f * (
        F64_POWF_E5 + f * (F64_POWF_E6 + f * (F64_POWF_E7 + f * (F64_POWF_E8 + f * (
            F64_POWF_E9 + f * F64_POWF_E10)))))))))
    return (1.0 + series) * _pow2_f64(ni)


def _pow_special_f32(xf, yf, value):
    """:func:`_pow_special_f64` for float32 x, y and value, on float32's bits."""
    ax = select(xf < F32_ZERO, -xf, xf)
    ay = select(yf < F32_ZERO, -yf, yf)
    ybits = f32_as_i32(yf)
    ey = np.int32(np.int32(np.int32(ybits >> I32_23) & I32_EXPONENT) - I32_127)
    shift = np.int32(I32_23 - ey)
    shift = select(shift < I32_ZERO, I32_ZERO, select(shift > I32_24, I32_24, shift))
    significand = np.int32(np.int32(ybits & I32_MANTISSA) | I32_IMPLICIT_BIT)
    fraction = np.int32(significand & np.int32(np.int32(I32_ONE << shift) - I32_ONE))
    y_fractional = (ey < I32_23) & (fraction != I32_ZERO)
    y_odd = ((ey <= I32_23) & (fraction == I32_ZERO)
             & (np.int32(np.int32(significand >> shift) & I32_ONE) == I32_ONE))
    value = select(ax == F32_ZERO, select(yf < F32_ZERO, F32_INF, F32_ZERO), value)
    value = select(ax == F32_INF, select(yf < F32_ZERO, F32_ZERO, F32_INF), value)
    negative = f32_as_i32(xf) < I32_ZERO
    value = select(negative & y_odd, -value, value)
    value = select(negative & y_fractional & (ax > F32_ZERO) & (ax < F32_INF), F32_NAN,
                   value)
    value = select(ay == F32_INF, select(ax == F32_ONE, F32_ONE,
                                         select((ax > F32_ONE) == (yf > F32_ZERO), F32_INF,
                                                F32_ZERO)),
                   value)
    value = select((xf != xf) | (yf != yf), xf + yf, value)
    return select((xf == F32_ONE) | (yf == F32_ZERO), F32_ONE, value)


def pow_f32(x, y):
    """x^y for float32 x and y: 2^(y log2|x|) in float64 from series (0.5 ulp and a
    little), rounded to float32 (inf and 0 where float32 overflows and vanishes); the
    special cases as :func:`pow_f64`'s."""
    xf = np.float32(x)
    yf = np.float32(y)
    ax = select(xf < F32_ZERO, -xf, xf)
    ax = select((ax > F32_ZERO) & (ax < F32_INF), ax, F32_ONE)
    t = np.float64(yf) * _log2_f32_in_f64(ax)
    t = select(t > F64_POWF_CLAMP, F64_POWF_CLAMP, select(t < -F64_POWF_CLAMP,
                                                          -F64_POWF_CLAMP, t))
    return _pow_special_f32(xf, yf, np.float32(_exp2_f64_for_f32(t)))


#: The functions a target compiles (fastsde.kmath binds the public ones).
FUNCTIONS = ("_exp_tail_f32", "_tanh_odd_f32", "_exp_tail_f64", "_tanh_odd_f64",
             "_pow2_f32", "_exp_reduced_f32", "_exp_core_f32", "_exp_core_moderate_f32",
             "exp_f32", "tanh_f32", "sigmoid_f32", "silu_f32", "gelu_f32", "_pow2_f64",
             "_exp_reduced_f64", "_exp_core_f64", "_exp_core_moderate_f64", "exp_f64",
             "tanh_f64", "sigmoid_f64", "silu_f64", "gelu_f64", "expm1_f32",
             "expm1_f64", "_log_series_f32", "_log_series_f64", "log_f32", "log_f64",
             "log1p_f32", "log1p_f64", "_erf_p_f32", "_erf_q_f32", "_erf_p_f64",
             "_erf_q_f64", "erf_f32", "erf_f64", "_rint_f64", "_quadrant_f64",
             "_sin_poly_f32", "_cos_poly_f32", "_f32_trig_chunk", "_reduce_pio2_f32",
             "sin_f32", "cos_f32", "_f64_trig_chunk", "_two_sum_f64", "_trig_row_f64",
             "_head_f64", "_reduce_pio2_f64",
             "_sin_kernel_f64", "_cos_kernel_f64", "sin_f64", "cos_f64", "_high_word_f64",
             "_log2_pair_f64", "_log2_near_one_f64", "_exp2_pair_f64", "_pow_special_f64",
             "_finite_magnitude_f64", "pow_f64", "_log2_f32_in_f64", "_exp2_f64_for_f32",
             "_pow_special_f32", "pow_f32")
