"""fastsde's own elementary functions (fastsde/kernels/fmath.py, public as fastsde.kmath):
accuracy in ulps against correctly rounded references, the special values, the same bits
compiled and in plain Python, and that the accuracy check fails on a wrong function.

The suite measures 10^7 arguments per function and dtype; ``python tools/fmath_accuracy.py``
runs the same measurement on 10^8 (and, with --every-float32, on every float32), the
figures in docs/performance.md.
"""

import numpy as np
import pytest
from scipy import special
from numba import njit, prange

from fastsde import kmath
from fastsde.kernels import bits, fmath
from fastsde.kernels.target import compile_functions

N_ARGS = 10_000_000
FUNCTIONS = ("exp", "expm1", "log", "log1p", "tanh", "sigmoid", "silu", "gelu", "erf", "sin",
             "cos")
DTYPES = (np.float32, np.float64)

ld = np.longdouble
SQRT_PI = np.sqrt(ld("3.14159265358979323846264338327950288"))


def erf_reference(x):
    """erf in long double (numpy has none): its Taylor series below |x| = 1.5 (up to 40
    terms; the largest term, near x^2, costs 3 of long double's 11 extra bits), 1 - erfc
    above, erfc from its continued fraction e^(-x^2) / (sqrt(pi) (x + (1/2) / (x + 1 /
    (x + (3/2) / (x + ...))))) evaluated backwards (160 terms near 1.5, fewer further out). The
    term counts are per range of |x|, each enough there. Checked against mpmath at 40
    digits on 9000 arguments in [-7, 7] and log-uniform from 1e-300: within 0.004 ulp of a
    float64 result. (float32 results are checked against scipy's erf in float64:
    :func:`reference`.)"""
    x = np.asarray(x).astype(ld)
    ax = np.abs(x)
    out = np.empty_like(x)
    for lo, hi, terms in ((0.0, 0.05, 8), (0.05, 0.5, 18), (0.5, 1.5, 40)):
        part = (ax >= lo) & (ax < hi)
        xs = x[part]
        z = xs * xs
        term = xs.copy()
        total = xs.copy()
        np.negative(z, out=z)
        scratch = np.empty_like(z)
        for n in range(1, terms):
            term *= z
            term *= 1 / ld(n)
            np.multiply(term, 1 / ld(2 * n + 1), out=scratch)
            total += scratch
        out[part] = total * (2 / SQRT_PI)
    for lo, hi, depth in ((1.5, 2.2, 160), (2.2, 3.0, 90), (3.0, 6.0, 50), (6.0, np.inf, 16)):
        part = (ax >= lo) & (ax < hi)
        xl = ax[part]
        with np.errstate(over="ignore", invalid="ignore"):
            t = xl.copy()
            for n in range(depth, 0, -1):
                np.divide(ld(n) / 2, t, out=t)
                t += xl
            erfc = np.exp(-xl * xl) / (SQRT_PI * t)
        out[part] = np.sign(x[part]) * (1 - erfc)
    infinite = np.isinf(ax)
    out[infinite] = np.sign(x[infinite])
    nan = np.isnan(ax)
    out[nan] = x[nan]
    return out


def reference(name, x, precision=ld):
    """The exact value in long double (x86's 64-bit mantissa leaves ~2^-11 ulp of a
    float64 result), or in ``precision``: float64 serves float32 results (within 2^-29
    of their ulp) and is faster, for every float32 in tools/fmath_accuracy.py."""
    x = np.asarray(x).astype(precision)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        if name == "exp":
            return np.exp(x)
        if name == "expm1":
            return np.expm1(x)
        if name == "log":
            return np.log(x)
        if name == "log1p":
            return np.log1p(x)
        if name == "erf":
            # float64 (for float32 results): scipy's erf, within 4e-16 of the long-double
            # series and 40 times faster (test_scipy_erf_serves_float32_results).
            return special.erf(x) if precision == np.float64 else erf_reference(x)
        if name == "tanh":
            return np.tanh(x)
        # glibc's sinl and cosl reduce every argument exactly (Payne and Hanek).
        if name == "sin":
            return np.sin(x)
        if name == "cos":
            return np.cos(x)
        # sigmoid by the form that cannot overflow: e^-|x| is at most 1.
        e = np.exp(-np.abs(x))
        sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        if name == "sigmoid":
            return sig
        # Both tend to 0 as x -> -inf (x e^x), where the product is -inf * 0.
        if name == "silu":
            return np.where(x == -np.inf, ld(-0.0), x * sig)
        u = ld(np.sqrt(2 / np.pi)) * (x + ld(0.044715) * x * x * x)
        e = np.exp(-np.abs(2 * u))
        return np.where(x == -np.inf, ld(-0.0), x * np.where(u >= 0, 1 / (1 + e), e / (1 + e)))
    raise ValueError(name)


def reference_for(name, x, dtype):
    """:func:`reference` in the precision that serves results of ``dtype``: float64 for
    float32 (several times faster than long double), long double for float64."""
    return reference(name, x, np.float64 if dtype == np.float32 else ld)


def ulp_errors(values, exact, dtype):
    """|values - exact| in units of the spacing of the dtype at the rounded exact value
    (which is the subnormal spacing below the smallest normal), computed in the exact
    values' precision. Matching infinities and nans count 0."""
    with np.errstate(over="ignore", invalid="ignore"):
        rounded = exact.astype(dtype)
        spacing = np.spacing(np.abs(rounded)).astype(exact.dtype)
        err = np.abs(values.astype(exact.dtype) - exact) / spacing
    same_inf = np.isinf(values) & np.isinf(rounded) & (np.sign(values) == np.sign(rounded))
    both_nan = np.isnan(values) & np.isnan(exact)
    err[same_inf | both_nan] = 0
    err[np.isnan(err)] = np.inf  # a nan where a number was due (or the reverse)
    return err


def make_runner(parallel=True):
    """``runner(name)``: fmath's function ``name`` compiled for the CPU as the kernels use
    it, applied over an array (``run(x, out)``), in parallel unless ``parallel`` is False;
    also tools/fmath_accuracy.py's."""
    ns = compile_functions(fmath, fmath.FUNCTIONS, njit(error_model="numpy"),
                           bits.cpu_primitives())
    runners = {}

    def runner(name):
        if name not in runners:
            fn = getattr(ns, name)
            if name.startswith("pow_"):
                @njit(parallel=parallel, error_model="numpy")
                def run(x, y, out):
                    for i in prange(x.size):
                        out[i] = fn(x[i], y[i])
            else:
                @njit(parallel=parallel, error_model="numpy")
                def run(x, out):
                    for i in prange(x.size):
                        out[i] = fn(x[i])

            runners[name] = run
        return runners[name]

    return runner


def test_scipy_erf_serves_float32_results():
    """The float32 accuracy check's erf reference (scipy's, in float64) is within 1e-6 of
    a float32 ulp of the long-double series at 200,000 of its arguments: it cannot move
    an error bound of ulps. The float64 series it replaces measured 1.3e-8 ulp here."""
    x = arguments("erf", np.float32, 200_000, seed=100)
    exact = erf_reference(x)
    err = ulp_errors(reference_for("erf", x, np.float32).astype(ld), exact, np.float32)
    assert err.max() < 1e-6, f"{err.max():.3g} float32 ulp at x = {x[np.argmax(err)]!r}"


@pytest.fixture(scope="module")
def compiled():
    # Serial loops: a parallel one compiles in 0.2 s instead of 0.07 s (25 of them), and
    # the suite's workers keep every core busy anyway.
    return make_runner(parallel=False)


def arguments(name, dtype, n, seed):
    """Random arguments over each function's whole range: uniform over the interval where
    the result is neither 0, +-1 nor inf, uniform near 0, and log-uniform magnitudes from
    the smallest subnormals up (both signs)."""
    rng = np.random.default_rng(seed)
    if name == "log":
        # Positive arguments: uniform near 1 (where log is small), uniform up to 10^4, and
        # log-uniform magnitudes over the whole range, subnormals included.
        info = np.finfo(dtype)
        lo, hi = np.log(float(info.smallest_subnormal)), np.log(float(info.max))
        parts = [rng.uniform(0.5, 2.0, n // 4), rng.uniform(0.0, 1e4, n // 4),
                 np.exp(rng.uniform(lo, hi, n - 2 * (n // 4)))]
        return np.concatenate(parts).astype(dtype)
    if name == "log1p":
        # Above -1: uniform near 0 and up to 10^4, log-uniform magnitudes of positive
        # arguments over the whole range and of negative ones from the smallest
        # subnormal to 1, and arguments within 10^-3 of -1.
        info = np.finfo(dtype)
        lo, hi = np.log(float(info.smallest_subnormal)), np.log(float(info.max))
        q = n // 5
        parts = [rng.uniform(-1.0, 1.0, q), rng.uniform(-1.0, 1e4, q),
                 np.exp(rng.uniform(lo, hi, q)), -np.exp(rng.uniform(lo, 0.0, q)),
                 -1.0 + np.exp(rng.uniform(np.log(float(info.eps)), np.log(1e-3),
                                           n - 4 * q))]
        return np.concatenate(parts).astype(dtype)
    if name in ("sin", "cos"):
        # Uniform over a few periods, next to multiples of pi/2 up to 2^20 (where the
        # reduction cancels: the multiple rounded to the dtype and up to 2 floats either
        # side), and log-uniform magnitudes over the whole range, both signs.
        info = np.finfo(dtype)
        lo, hi = np.log(float(info.smallest_subnormal)), np.log(float(info.max))
        q = n // 4
        multiples = (rng.integers(1, 2**20, q) * (np.pi / 2)).astype(dtype)
        steps = rng.integers(-2, 3, q)
        near = np.nextafter(multiples, np.where(steps < 0, -np.inf, np.inf).astype(dtype))
        near = np.where(steps == 0, multiples, near)
        signs = rng.choice([-1.0, 1.0], n - 2 * q)
        parts = [rng.uniform(-50.0, 50.0, q).astype(dtype), near,
                 (np.exp(rng.uniform(lo, hi, n - 2 * q)) * signs).astype(dtype)]
        return np.concatenate(parts).astype(dtype)
    big = {"exp": (-110.0, 90.0) if dtype == np.float32 else (-750.0, 712.0),
           "expm1": (-40.0, 90.0) if dtype == np.float32 else (-50.0, 712.0),
           "erf": (-4.5, 4.5) if dtype == np.float32 else (-6.5, 6.5),
           "tanh": (-12.0, 12.0) if dtype == np.float32 else (-22.0, 22.0),
           "sigmoid": (-110.0, 20.0) if dtype == np.float32 else (-750.0, 40.0),
           "silu": (-110.0, 20.0) if dtype == np.float32 else (-750.0, 40.0),
           "gelu": (-15.0, 10.0) if dtype == np.float32 else (-40.0, 10.0)}[name]
    tiny = np.finfo(dtype).smallest_subnormal
    parts = [rng.uniform(*big, n // 2), rng.uniform(-1.0, 1.0, n // 4),
             np.exp(rng.uniform(np.log(float(tiny)), np.log(4.0), n - n // 2 - n // 4))
             * rng.choice([-1.0, 1.0], n - n // 2 - n // 4)]
    return np.concatenate(parts).astype(dtype)


def pow_arguments(dtype, n, seed):
    """(x, y) for pow: positive x log-uniform over the whole range with y so that x^y
    spans the finite results (x^y log-uniform from the smallest subnormal to the largest
    float); x near 1 with large |y|; negative x with integer y; x and y of moderate size
    (both log-uniform / uniform)."""
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype)
    q = n // 4
    lo, hi = np.log(float(info.smallest_subnormal)), np.log(float(info.max))
    x = np.exp(rng.uniform(lo, hi, q))
    log_x = np.log(x)
    target = rng.uniform(lo, hi, q)
    y = np.where(np.abs(log_x) > 1e-3, target / np.where(log_x == 0, 1.0, log_x), 0.5)
    near_one = 1.0 + rng.uniform(-1e-3, 1e-3, q)
    big_y = rng.uniform(-1e5, 1e5, q) if dtype == np.float64 else rng.uniform(-5e4, 5e4, q)
    negative = -np.exp(rng.uniform(-5.0, 5.0, q))
    integer_y = rng.integers(-60, 61, q).astype(np.float64)
    rest = n - 3 * q
    xs = np.concatenate([x, near_one, negative, np.exp(rng.uniform(-20.0, 20.0, rest))])
    ys = np.concatenate([y, big_y, integer_y, rng.uniform(-20.0, 20.0, rest)])
    return xs.astype(dtype), ys.astype(dtype)


#: x and y values whose pairs test pow's special cases (every pair of them).
POW_SPECIALS = (0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 1.5, -1.5, np.inf,
                -np.inf, np.nan, 0.999, 1.001, 1e30, -1e30, 1e-30, -1e-30, 7.0, -7.0, 2.5)


def special_values(dtype):
    info = np.finfo(dtype)
    values = [0.0, -0.0, np.inf, -np.inf, np.nan, float(info.smallest_subnormal),
              -float(info.smallest_subnormal), float(info.smallest_normal),
              -float(info.smallest_normal), float(info.max), -float(info.max), 1.0, -1.0,
              0.5493061443340549, -0.5493061443340549]
    # ... and the ends of expm1's branches (ln 2 / 2, and where it rounds to -1) and the
    # arguments next to log1p's pole.
    # erf's pieces meet at 1 and (float64) 2; it rounds to 1 at 3.92 / 5.93.
    values += [0.34657359027997264, -0.34657359027997264, -2.0, 1.5, 2.0, 3.92, 4.0, 5.93,
               6.0, -6.0]
    # sin and cos: pi/2, pi and 2 pi rounded, pi/4 (where the quadrants meet), and the
    # arguments nearest a multiple of pi/2 relative to their size, where the reduction
    # cancels most (float32: 7.729179e28 leaves 2^-29.2, found by scanning every float32
    # from pi/4 up; float64: 6381956970095103 2^797 leaves 2^-61, Muller's worst case).
    values += [1.5707963267948966, 3.141592653589793, 6.283185307179586, 0.7853981633974483,
               -0.7853981633974483, 2.0 ** -27, 2.0 ** 23, 1e22]
    if dtype == np.float32:
        values += [7.729179e28, 21999384576.0, 252.89821, 4.6381834e25, 1522788990976.0]
    else:
        values += [6381956970095103 * 2.0 ** 797, -6381956970095103 * 2.0 ** 797]
    if dtype == np.float32:
        values += [88.72283172607422, 88.72283935546875, -103.97207641601562,
                   -103.97208404541016, -87.33654022216797, 9.01, 10.0, 10.5, -17.4, -30.0,
                   -30.000002, -0.99999994, 88.37626]
    else:
        values += [709.782712893384, 709.7827128933841, -745.1332191019411,
                   -745.1332191019412, -708.3964185322641, 19.1, 20.0, 20.5, -37.5, -40.0,
                   -40.00000000000001, -0.9999999999999999, 709.43]
    return np.array(values, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_accuracy_within_max_ulp(compiled, name, dtype):
    """Error <= fmath.allowed_ulps at every one of N_ARGS arguments (MAX_ULP, plus the
    documented growth of silu's and gelu's error in their far negative tails)."""
    suffix = "f32" if dtype == np.float32 else "f64"
    fname = f"{name}_{suffix}"
    run = compiled(fname)
    worst, where = 0.0, None
    for i, chunk in enumerate(range(0, N_ARGS, 2_000_000)):
        x = arguments(name, dtype, min(2_000_000, N_ARGS - chunk), seed=100 + i)
        if i == 0:
            x = np.concatenate([special_values(dtype), x])
        out = np.empty_like(x)
        run(x, out)
        err = ulp_errors(out, reference_for(name, x, dtype), dtype)
        excess = err / fmath.allowed_ulps(name, suffix, x)
        j = int(np.argmax(excess))
        if excess[j] > worst:
            worst = float(excess[j])
            where = (x[j], out[j], reference(name, x[j:j + 1])[0], float(err[j]),
                     float(fmath.allowed_ulps(name, suffix, x[j:j + 1])[0]))
    assert worst <= 1.0, (f"{fname}: {where[3]:.3f} ulp > the {where[4]:.3f} allowed at x = "
                          f"{where[0]!r} (got {where[1]!r}, exact {where[2]!r}) over "
                          f"{N_ARGS} arguments")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_special_values(compiled, dtype):
    suffix = "f32" if dtype == np.float32 else "f64"
    info = np.finfo(dtype)
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype)
    expect = {"exp": [1.0, 1.0, np.inf, 0.0, np.nan],
              "log": [-np.inf, -np.inf, np.inf, np.nan, np.nan],
              "tanh": [0.0, -0.0, 1.0, -1.0, np.nan],
              "sigmoid": [0.5, 0.5, 1.0, 0.0, np.nan],
              "silu": [0.0, -0.0, np.inf, -0.0, np.nan],
              "gelu": [0.0, -0.0, np.inf, -0.0, np.nan],
              "expm1": [0.0, -0.0, np.inf, -1.0, np.nan],
              "log1p": [0.0, -0.0, np.inf, np.nan, np.nan],
              "erf": [0.0, -0.0, 1.0, -1.0, np.nan],
              "sin": [0.0, -0.0, np.nan, np.nan, np.nan],
              "cos": [1.0, 1.0, np.nan, np.nan, np.nan]}
    for name, values in expect.items():
        out = np.empty_like(x)
        compiled(f"{name}_{suffix}")(x, out)
        want = np.array(values, dtype)
        # Bit for bit: the sign of a zero matters (tanh(-0) = -0); a nan's does not.
        numbers = ~np.isnan(want)
        same_signs = np.array_equal(np.signbit(out[numbers]), np.signbit(want[numbers]))
        assert same_signs and np.array_equal(out, want, equal_nan=True), \
            f"{name}({x}) = {out}, expected {want}"
    # Overflow and underflow thresholds of exp: the largest finite result and the last
    # nonzero one, then inf and 0 one float further.
    top = np.float32(88.72283172607422) if dtype == np.float32 else np.float64(709.782712893384)
    bottom = (np.float32(-103.97207641601562) if dtype == np.float32
              else np.float64(-745.1332191019411))
    x = np.array([top, np.nextafter(top, dtype(np.inf)), bottom,
                  np.nextafter(bottom, dtype(-np.inf))], dtype)
    out = np.empty_like(x)
    compiled(f"exp_{suffix}")(x, out)
    assert np.isfinite(out[0]) and out[0] > info.max / 2, out
    assert out[1] == np.inf, out
    assert 0 < out[2] <= 2 * info.smallest_subnormal, out
    assert out[3] == 0.0, out
    # log: exactly 0 at 1, nan for any negative number, finite at the extremes.
    x = np.array([1.0, -1.0, -info.smallest_subnormal, info.smallest_subnormal, info.max],
                 dtype)
    out = np.empty_like(x)
    compiled(f"log_{suffix}")(x, out)
    assert out[0] == 0.0 and not np.signbit(out[0]) and np.isnan(out[1]) and np.isnan(out[2])
    np.testing.assert_allclose(out[3:], np.log(x[3:].astype(np.float64)), rtol=1e-6)
    # log1p: -inf at -1, nan below it; a subnormal is itself.
    x = np.array([-1.0, np.nextafter(dtype(-1.0), dtype(-2.0)), -2.0,
                  info.smallest_subnormal, -info.smallest_subnormal], dtype)
    out = np.empty_like(x)
    compiled(f"log1p_{suffix}")(x, out)
    assert out[0] == -np.inf and np.isnan(out[1]) and np.isnan(out[2]), out
    assert np.array_equal(out[3:], x[3:]), out
    # expm1: a subnormal is itself, -1 far below 0, inf past exp's overflow threshold,
    # finite just below it.
    x = np.array([info.smallest_subnormal, -info.smallest_subnormal, -1000.0, top,
                  np.nextafter(top, dtype(np.inf))], dtype)
    out = np.empty_like(x)
    compiled(f"expm1_{suffix}")(x, out)
    assert np.array_equal(out[:3], np.array([x[0], x[1], -1.0], dtype)), out
    assert np.isfinite(out[3]) and out[3] > info.max / 2 and out[4] == np.inf, out
    # tanh of a subnormal is itself; tanh saturates to exactly +-1.
    x = np.array([info.smallest_subnormal, -info.smallest_subnormal, 30.0, -30.0], dtype)
    out = np.empty_like(x)
    compiled(f"tanh_{suffix}")(x, out)
    assert np.array_equal(out, np.array([info.smallest_subnormal, -info.smallest_subnormal,
                                         1.0, -1.0], dtype)), out


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_plain_python_gives_the_compiled_bits(compiled, dtype):
    """The CUDA simulator and the host references run the plain-Python versions."""
    suffix = "f32" if dtype == np.float32 else "f64"
    ints = np.int32 if dtype == np.float32 else np.int64
    for name in FUNCTIONS:
        x = np.concatenate([special_values(dtype), arguments(name, dtype, 3000, seed=7)])
        out = np.empty_like(x)
        compiled(f"{name}_{suffix}")(x, out)
        with np.errstate(over="ignore", invalid="ignore"):
            plain = np.array([getattr(kmath, name)(v) for v in x], dtype)
        assert plain.dtype == dtype
        # Every bit, but a nan's sign and payload (numpy and LLVM make their own).
        differ = np.flatnonzero((plain.view(ints) != out.view(ints))
                                & ~(np.isnan(plain) & np.isnan(out)))
        assert differ.size == 0, (f"{name}_{suffix}: plain Python differs at x = "
                                  f"{x[differ[:5]]}: {plain[differ[:5]]} vs {out[differ[:5]]}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_pow_accuracy_within_max_ulp(compiled, dtype):
    """pow within fmath.MAX_ULP on N_ARGS (x, y) pairs, against long double's powl (float64's
    pow for float32 results)."""
    suffix = "f32" if dtype == np.float32 else "f64"
    run = compiled(f"pow_{suffix}")
    worst, where = 0.0, None
    for i, chunk in enumerate(range(0, N_ARGS, 2_000_000)):
        x, y = pow_arguments(dtype, min(2_000_000, N_ARGS - chunk), seed=200 + i)
        out = np.empty_like(x)
        run(x, y, out)
        precision = np.float64 if dtype == np.float32 else ld
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            exact = np.power(x.astype(precision), y.astype(precision))
        err = ulp_errors(out, exact, dtype)
        j = int(np.argmax(err))
        if err[j] > worst:
            worst, where = float(err[j]), (x[j], y[j], out[j], exact[j])
    assert worst <= fmath.MAX_ULP[f"pow_{suffix}"], (
        f"pow_{suffix}: {worst:.3f} ulp at x, y = {where[0]!r}, {where[1]!r} (got "
        f"{where[2]!r}, exact {where[3]!r}) over {N_ARGS} pairs")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_pow_special_values(compiled, dtype):
    """Every pair of POW_SPECIALS (and the two smallest subnormals and the largest float):
    C99's special cases bit for bit against numpy's power (libm's pow / powf): 1, 0, inf
    and nan results with their signs; the ordinary results within the ulp bound."""
    suffix = "f32" if dtype == np.float32 else "f64"
    info = np.finfo(dtype)
    values = np.array(POW_SPECIALS + (float(info.smallest_subnormal),
                                      -float(info.smallest_subnormal), float(info.max)),
                      dtype)
    x, y = (a.ravel() for a in np.meshgrid(values, values))
    out = np.empty_like(x)
    compiled(f"pow_{suffix}")(x, y, out)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        want = np.power(x, y)
        exact = np.power(x.astype(ld), y.astype(ld))
    exceptional = (np.isnan(want) | np.isinf(want) | (want == 0) | (np.abs(want) == 1)
                   | np.isnan(out) | np.isinf(out) | (out == 0))
    same = (np.isnan(out) & np.isnan(want)) | ((out == want)
                                                & (np.signbit(out) == np.signbit(want)))
    wrong = np.flatnonzero(exceptional & ~same)
    assert wrong.size == 0, [(x[j], y[j], out[j], want[j]) for j in wrong[:8]]
    err = ulp_errors(out[~exceptional], exact[~exceptional], dtype)
    assert err.max() <= fmath.MAX_ULP[f"pow_{suffix}"], err.max()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_pow_plain_python_gives_the_compiled_bits(compiled, dtype):
    suffix = "f32" if dtype == np.float32 else "f64"
    ints = np.int32 if dtype == np.float32 else np.int64
    x, y = pow_arguments(dtype, 4000, seed=9)
    out = np.empty_like(x)
    compiled(f"pow_{suffix}")(x, y, out)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        plain = np.array([kmath.pow(a, b) for a, b in zip(x, y)], dtype)
    assert plain.dtype == dtype
    differ = np.flatnonzero((plain.view(ints) != out.view(ints))
                            & ~(np.isnan(plain) & np.isnan(out)))
    assert differ.size == 0, (x[differ[:5]], y[differ[:5]], plain[differ[:5]], out[differ[:5]])


def test_pow_accuracy_check_fails_without_the_log_tail(monkeypatch):
    """The pow measurement catches a float64 pow that drops the low part of log2 x
    (t2, about 2^-29 of t1): y log2 x then loses accuracy in proportion to |y log x|."""
    x, y = pow_arguments(np.float64, 20_000, seed=5)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        exact = np.power(x.astype(ld), y.astype(ld))
        good = ulp_errors(fmath.pow_f64(x, y), exact, np.float64).max()
        pair = fmath._log2_pair_f64
        monkeypatch.setattr(fmath, "_log2_pair_f64", lambda a: (pair(a)[0], 0.0 * a))
        bad = ulp_errors(fmath.pow_f64(x, y), exact, np.float64).max()
    assert good <= fmath.MAX_ULP["pow_f64"] < bad, (good, bad)


def test_one_scaling_exp_core_gives_the_two_scaling_bits():
    """tanh's e^2|x| uses the exponential with one 2^k factor (k fits a normal float):
    the same bits as the general core's two factors over the whole domain it is used
    on, so tanh did not change."""
    for core, moderate, top, ints in ((fmath._exp_core_f32, fmath._exp_core_moderate_f32,
                                       87.0, np.int32),
                                      (fmath._exp_core_f64, fmath._exp_core_moderate_f64,
                                       708.0, np.int64)):
        dtype = np.float32 if ints is np.int32 else np.float64
        x = np.concatenate([np.linspace(-top, top, 1_000_001),
                            np.random.default_rng(5).uniform(0.0, 40.0, 1_000_000)]).astype(dtype)
        a, b = core(x), moderate(x)
        assert np.array_equal(a.view(ints), b.view(ints)), x[a.view(ints) != b.view(ints)][:5]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_kmath_fma_rounds_once_compiled_and_in_plain_python(dtype):
    """kmath.fma in a compiled function and in plain Python: the same bits, and those of
    the exactly rounded a * b + c, on cases where rounding the product first differs."""
    import numba

    from fractions import Fraction

    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 2.0, 5000).astype(dtype)
    b = rng.uniform(0.5, 2.0, 5000).astype(dtype)
    c = (-(a.astype(np.float64) * b) * (1 + rng.uniform(-1e-5, 1e-5, 5000))).astype(dtype)

    @numba.njit
    def compiled(a, b, c, out):
        for n in range(a.size):
            out[n] = kmath.fma(a[n], b[n], c[n])

    out = np.empty_like(a)
    compiled(a, b, c, out)
    plain = np.array([kmath.fma(x, y, z) for x, y, z in zip(a, b, c)], dtype)
    exact = np.array([float(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)))
                      for x, y, z in zip(a, b, c)]).astype(dtype)
    assert out.dtype == dtype and plain.dtype == dtype
    assert np.array_equal(out, plain) and np.array_equal(out, exact)
    assert np.mean((a * b + c) != exact) > 0.3  # the comparison can fail


def test_kmath_in_user_functions_vectorises():
    """A loop over units calling fastsde.kmath compiles without calls into libm and with
    vector instructions (the reason the functions exist)."""
    @njit(error_model="numpy")
    def layer(a, b, n):
        for o in range(n):
            b[o] = kmath.tanh(a[o]) + kmath.silu(a[o])

    a = np.linspace(-3, 3, 64).astype(np.float32)
    b = np.empty_like(a)
    layer(a, b, 64)
    np.testing.assert_allclose(b, np.tanh(a) + a / (1 + np.exp(-a)), rtol=1e-6, atol=1e-7)
    asm = layer.inspect_asm(layer.signatures[0])
    assert "tanhf" not in asm and "expf" not in asm
    assert asm.count("ymm") + asm.count("zmm") + asm.count("xmm") > 50, "no vector code"


def test_accuracy_check_fails_on_a_wrong_function(monkeypatch):
    """The ulp measurement above catches a tanh whose cubic coefficient is off by 10^-5
    (the plain-Python version, with one coefficient patched): 10^-5 relative in the
    cubic term is a few ulps near |x| = 0.5."""
    name = f"_tanh_odd_f32_c{len(fmath.F32_TANH_C) - 1}"
    coefficient = getattr(fmath, name)
    monkeypatch.setattr(fmath, name, np.float32(coefficient * (1 + 1e-5)))
    x = arguments("tanh", np.float32, 20_000, seed=3)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.array([fmath.tanh_f32(v) for v in x], np.float32)
    worst = ulp_errors(out, reference("tanh", x), np.float32).max()
    assert worst > fmath.MAX_ULP["tanh_f32"], worst


def test_two_over_pi_bits_are_known():
    """The bits of 2/pi that sin and cos reduce with (Machin's formula at import) start
    as fdlibm's ipio2 table does (0xA2F983 6E4E44 1529FC 2757D1 F534DD C0DB62 ...), and
    the table's chunks are those bits."""
    bits = fmath._TWO_OVER_PI >> (fmath.TWO_OVER_PI_BITS - 144)
    assert bits == 0xA2F9836E4E441529FC2757D1F534DDC0DB62, hex(bits)
    first = int(fmath.F32_TRIG_TABLE[0] * 2.0 ** 29)
    assert first == 0xA2F9836E4E441529FC2757D1F534DDC0DB62 >> (144 - 29), hex(first)


def test_accuracy_check_fails_on_a_short_reduction(monkeypatch):
    """The worst case among the special values catches a reduction that keeps too few
    bits of 2/pi: with float64's last chunk of 26 bits dropped, cos at 6381956970095103
    2^797 (x within 2^-61 of an odd multiple of pi/2, cos x = -4.7e-19) is off by
    thousands of ulps, while 10^4 arguments up to 10^6 stay within 1 ulp."""
    x = np.array([6381956970095103 * 2.0 ** 797])
    exact = reference("cos", x)
    assert ulp_errors(np.array([fmath.cos_f64(x[0])]), exact, np.float64)[0] <= 1.0
    table = fmath.F64_TRIG_TABLE.copy()
    table[fmath.F64_TRIG_CHUNKS - 1::fmath.F64_TRIG_CHUNKS] = 0.0
    monkeypatch.setattr(fmath, "F64_TRIG_TABLE", table)
    worst = ulp_errors(np.array([fmath.cos_f64(x[0])]), exact, np.float64)[0]
    assert worst > 100, worst
    moderate = np.random.default_rng(4).uniform(-1e6, 1e6, 10_000)
    err = ulp_errors(fmath.cos_f64(moderate), reference("cos", moderate), np.float64)
    assert err.max() <= 1.0, err.max()


#: What libdevice leaves in PTX when it computes a function: NVVM inlines libdevice, so
#: its function names (__nv_sin, ...) never appear; its sin and cos leave the 2/pi table
#: (and in float64 the slow-path reduction), its float64 pow a helper, and its float32 exp and expm1
#: and its tanh and erf the approximate exp2 instruction. (Its float64 exp, expm1, log and
#: log1p and its float32 log, log1p and pow leave nothing recognisable.)
LIBDEVICE_MARKERS = ("__cudart_i2opi", "__internal_trig_reduction", "__internal_accurate_pow",
                     "ex2.approx", "lg2.approx")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kmath_compiles_for_cuda_without_libdevice(dtype):
    """Every kmath function compiles as CUDA device code for sm_90, as its own
    operations: none of libdevice's markers in the PTX, where the same function written
    with math's functions (libdevice's) shows them, so the check can fail."""
    try:
        from numba import cuda

        cuda.compile_ptx(lambda a: a + 1.0, "float64(float64)", device=True, cc=(9, 0))
    except Exception as exc:  # noqa: BLE001 - no numba-cuda or no NVVM here
        pytest.skip(f"cannot compile PTX here: {type(exc).__name__}: {str(exc)[:100]}")
    import math

    from fastsde.kernels.cuda import _as_if_device

    assert kmath.register_cuda()

    def every_function(x, out):
        out[0] = kmath.exp(x[0])
        out[1] = kmath.log(x[1])
        out[2] = kmath.tanh(x[2])
        out[3] = kmath.sigmoid(x[3])
        out[4] = kmath.silu(x[4])
        out[5] = kmath.gelu(x[5])
        out[6] = kmath.expm1(x[6])
        out[7] = kmath.log1p(x[7])
        out[8] = kmath.erf(x[8])
        out[9] = kmath.sin(x[9])
        out[10] = kmath.cos(x[10])
        out[11] = kmath.pow(x[11], x[12])
        out[12] = kmath.fma(x[0], x[1], x[2])

    def with_libdevice(x, out):
        out[0] = math.exp(x[0])
        out[2] = math.tanh(x[2])
        out[8] = math.erf(x[8])
        out[9] = math.sin(x[9])
        out[10] = math.cos(x[10])
        out[11] = math.pow(x[11], x[12])

    signature = f"void({dtype}[::1], {dtype}[::1])"
    with _as_if_device((9, 0)):
        ptx, _ = cuda.compile_ptx(every_function, signature, device=True, cc=(9, 0))
        theirs, _ = cuda.compile_ptx(with_libdevice, signature, device=True, cc=(9, 0))
    assert ".func" in ptx
    assert [m for m in LIBDEVICE_MARKERS if m in ptx] == []
    assert f"fma.rn.f{dtype[-2:]}" in ptx  # kmath.fma, and the polynomials' own
    expected = (["__cudart_i2opi", "ex2.approx"]
                + (["__internal_trig_reduction", "__internal_accurate_pow"]
                   if dtype == "float64" else []))
    assert sorted(m for m in LIBDEVICE_MARKERS if m in theirs) == sorted(expected)
