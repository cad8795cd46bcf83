"""Philox4x32-10 known answers, open uniforms, and the Gaussian transform."""

import math

import numba
import numpy as np
import pytest

import fastsde as fs
from fastsde import streams
from fastsde.kernels import philox
from fastsde.kernels.cpu import _rng

import stats_checks as sc

KNOWN_ANSWERS = [  # Random123 kat_vectors, philox4x32_10
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_known_answers_compiled(counter, key, expected):
    out = _rng.philox4x32_10(*(np.uint64(c) for c in counter), *(np.uint64(k) for k in key))
    assert [int(w) for w in out] == list(expected)


@pytest.mark.parametrize("counter,key,expected", KNOWN_ANSWERS)
def test_known_answers_numpy(counter, key, expected):
    out = streams.philox_words(np.array([counter]), np.array(key))
    assert out.tolist() == [list(expected)]


def test_rng_version_is_exported():
    assert fs.RNG_VERSION == philox.RNG_VERSION == 3


def test_key_comes_from_seed_sequence():
    k = np.random.SeedSequence(42).generate_state(2, np.uint32)
    assert streams.key_from_seed(42) == (np.uint64(k[0]), np.uint64(k[1]))
    assert streams.key_from_seed(np.random.SeedSequence(42)) == streams.key_from_seed(42)
    assert streams.key_from_seed(1) != streams.key_from_seed(2)


@pytest.mark.parametrize("word", [0, 1, 511, 512, 0x7FFFFFFF, 0xFFFFFE00, 0xFFFFFFFF])
def test_uniforms_never_reach_zero_or_one(word):
    w = np.uint64(word)
    u32 = philox.uniform_f32(w)
    assert u32.dtype == np.float32 and 0.0 < u32 < 1.0
    for low in (0, 0xFFFFFFFF):
        u64 = philox.uniform_f64(w, np.uint64(low))
        assert 0.0 < u64 < 1.0
        # the float64 uniform refines the float32 one: same top bits
        assert abs(u64 - float(u32)) <= 2.0**-24
    assert philox.uniform_f32(np.uint64(0)) == np.float32(2.0**-24)
    assert philox.uniform_f32(np.uint64(0xFFFFFFFF)) == np.float32(1 - 2.0**-24)


def test_tail_cutoffs_are_finite_and_documented():
    smallest32 = philox.uniform_f32(np.uint64(0))
    r32 = math.sqrt(-2 * math.log(float(smallest32)))
    assert r32 == pytest.approx(philox.F32_NORMAL_MAX)
    assert 5.7 < philox.F32_NORMAL_MAX < 5.8 and 8.5 < philox.F64_NORMAL_MAX < 8.6


def test_compiled_normals_match_host_stream_bit_for_bit():
    key = streams.key_from_seed(7)
    for dtype, fn in ((np.float32, _rng.normal_block_f32), (np.float64, _rng.normal_block_f64)):
        for path, block in ((0, 0), (3, 17), (2**40 + 5, 2**33 + 1)):
            z = np.array(fn(key[0], key[1], np.uint64(block), np.uint64(0), np.uint64(path)),
                         dtype=dtype)
            ref = streams.normals(7, path, np.arange(4) + 4 * block, dtype=dtype)
            assert np.array_equal(z, ref), (dtype, path, block, z, ref)


def _ulps(value, exact):
    return np.abs(value.astype(np.float64) - exact) / np.spacing(np.abs(value))


@pytest.fixture(scope="module")
def float32_transform():
    """The numpy float32 transform of all 2^23 inputs m: ln((m + 1/2) 2^-23) and the
    cos and sin of 2 pi (m + 1/2) 2^-23, computed once for the checks against libm and
    against the compiled transform (each pass over the 2^23 inputs takes seconds)."""
    m = np.arange(2**23, dtype=np.int32)
    cos, sin = philox.cos_sin_2pi_f32(m)
    return {"m": m, "log": philox.log_open_f32(m), "cos": cos, "sin": sin}


def test_float32_log_exhaustive_against_libm(float32_transform):
    """ln u for all 2^23 float32 uniforms, against float64 libm: below 1 ulp (measured
    0.89; RNG_VERSION 2's division form was within 2)."""
    m = float32_transform["m"].astype(np.int64)
    exact = np.log((m + 0.5) * 2.0**-23)
    err = _ulps(float32_transform["log"], exact)
    assert err.max() < 1.0, f"max error {err.max():.3f} ulp at m={int(err.argmax())}"


def test_float32_cos_sin_exhaustive_against_libm(float32_transform):
    """cos and sin of 2 pi u for all 2^23 float32 uniforms: absolute error < 1.5e-7."""
    m = float32_transform["m"].astype(np.int64)
    angle = 2 * np.pi * (m + 0.5) * 2.0**-23
    c, s = float32_transform["cos"], float32_transform["sin"]
    assert c.dtype == s.dtype == np.float32
    for name, got, ref in (("cos", c, np.cos(angle)), ("sin", s, np.sin(angle))):
        err = np.abs(got.astype(np.float64) - ref)
        assert err.max() < 1.5e-7, f"{name}: max abs error {err.max():.3g}"


def test_float64_transform_against_libm():
    """float64 ln u within 2 ulp and cos/sin within 1e-15 on 2^20 random 52-bit inputs
    plus both ends of the range (the tails)."""
    rng = np.random.default_rng(5)
    m = np.concatenate([rng.integers(0, 2**52, 2**20), np.arange(4096),
                        2**52 - 1 - np.arange(4096)]).astype(np.int64)
    u = (m + 0.5) * 2.0**-52
    err = _ulps(philox.log_open_f64(m), np.log(u))
    assert err.max() <= 2.0, f"max error {err.max():.3f} ulp"
    c, s = philox.cos_sin_2pi_f64(m)
    assert np.abs(c - np.cos(2 * np.pi * u)).max() < 1e-15
    assert np.abs(s - np.sin(2 * np.pi * u)).max() < 1e-15


def test_bit_primitives_agree_across_targets():
    """The numpy and CPU versions of the bit casts and the select give the same bits,
    and the small-integer conversion of the float64 transform is exact."""
    from fastsde.kernels import bits
    from fastsde.kernels.cpu import _bits
    f32_as_i32, i32_as_f32 = _bits["f32_as_i32"], _bits["i32_as_f32"]
    f64_as_i64, i64_as_f64, select = _bits["f64_as_i64"], _bits["i64_as_f64"], _bits["select"]

    @numba.njit
    def compiled(f32, i32, f64, i64, flags):
        out = (np.empty_like(i32), np.empty_like(f32), np.empty_like(i64), np.empty_like(f64),
               np.empty_like(f64))
        for n in range(f32.size):
            out[0][n] = f32_as_i32(f32[n])
            out[1][n] = i32_as_f32(i32[n])
            out[2][n] = f64_as_i64(f64[n])
            out[3][n] = i64_as_f64(i64[n])
            out[4][n] = select(flags[n], f64[n], -f64[n])
        return out

    rng = np.random.default_rng(3)
    i32 = rng.integers(-2**31, 2**31, 4096, dtype=np.int32)
    i64 = rng.integers(-2**63, 2**63, 4096, dtype=np.int64)
    f32 = rng.standard_normal(4096).astype(np.float32)
    f64 = rng.standard_normal(4096)
    flags = rng.random(4096) < 0.5
    got = compiled(f32, i32, f64, i64, flags)
    assert np.array_equal(got[0], bits.f32_as_i32(f32))
    assert np.array_equal(got[1].view(np.int32), i32)
    assert np.array_equal(got[2], f64.view(np.int64))
    assert np.array_equal(got[3].view(np.int64), i64)
    assert np.array_equal(got[4], bits.select(flags, f64, -f64))
    v = np.concatenate([np.arange(-2**20, 2**20), 2**np.arange(51) - 1,
                        -(2**np.arange(51))]).astype(np.int64)
    assert np.array_equal(philox._small_int_to_f64(v), v.astype(np.float64))


def _fma_cases(n=1_000_000):
    """float32 triples where a * b + c rounds differently fused and unfused: sums that
    nearly cancel the product, and addends over a wide range of magnitudes."""
    rng = np.random.default_rng(11)
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    near = (-(a.astype(np.float64) * b) * (1 + rng.integers(-4, 5, n) * 2.0**-24))
    wide = rng.standard_normal(n) * 2.0 ** rng.integers(-40, 40, n)
    c = np.concatenate([near, wide]).astype(np.float32)
    return np.concatenate([a, a]), np.concatenate([b, b]), c


def test_fma_emulation_equals_the_cpu_instruction():
    """numpy's FMA (float64, round-to-odd) gives the bits of the CPU's fused multiply-add,
    on cases where fusing matters: most of them differ from a * b + c rounded twice."""
    from fastsde.kernels import bits
    from fastsde.kernels.cpu import _bits
    fma = _bits["fma_f32"]

    @numba.njit
    def compiled(a, b, c):
        out = np.empty_like(a)
        for n in range(a.size):
            out[n] = fma(a[n], b[n], c[n])
        return out

    a, b, c = _fma_cases()
    got = compiled(a, b, c)
    emulated = bits.fma_f32(a, b, c)
    assert np.array_equal(got.view(np.int32), emulated.view(np.int32)), \
        f"{int(np.sum(got != emulated))} of {a.size} differ"
    unfused = a * b + c
    assert np.mean(unfused != emulated) > 0.4  # the comparison can fail
    # Signed zeros, subnormals, the largest floats, infinities and nan, every triple: the
    # emulation's step to the odd neighbour must leave the non-finite sums alone.
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, 1.0, -1.0, 3.4e38, -3.4e38,
                        np.inf, -np.inf, np.nan], np.float32)
    a, b, c = (g.ravel() for g in np.meshgrid(special, special, special))
    with np.errstate(invalid="ignore", over="ignore"):
        got, emulated = compiled(a, b, c), bits.fma_f32(a, b, c)
    nan = np.isnan(got)
    assert np.array_equal(nan, np.isnan(emulated))
    assert np.array_equal(got[~nan].view(np.int32), emulated[~nan].view(np.int32)), \
        [(x, y, z) for x, y, z in zip(a[~nan], b[~nan], c[~nan])
         if bits.fma_f32(x, y, z) != fma(x, y, z)][:5]


def test_host_float64_fma_rounds_once():
    """The plain-Python float64 FMA (kmath's polynomials on the host and under the CUDA
    simulator) is the exactly rounded a * b + c: against exact rational arithmetic on
    cases where fusing matters (c cancelling most of the product, so a * b rounded first
    loses the bits that decide) and on signed zeros, overflow and infinities."""
    from fractions import Fraction

    from fastsde.kernels import bits

    rng = np.random.default_rng(11)
    n = 20_000
    a = rng.uniform(1.0, 2.0, n) * np.exp2(rng.integers(-60, 60, n))
    b = rng.uniform(1.0, 2.0, n) * np.exp2(rng.integers(-60, 60, n))
    # c near -a*b: the low half of the product decides the result
    c = -(a * b) * (1.0 + rng.uniform(-2.0**-40, 2.0**-40, n))
    got = bits.fma_f64(a, b, c)
    exact = np.array([float(Fraction(x) * Fraction(y) + Fraction(z))
                      for x, y, z in zip(a, b, c)])
    assert np.array_equal(got, exact), f"{int(np.sum(got != exact))} of {n} differ"
    assert np.mean((a * b + c) != exact) > 0.4  # the comparison can fail
    assert bits.fma_f64(0.1, 10.0, -1.0) == float(Fraction(0.1) * 10 - 1) != 0.0
    special = [(-0.0, 1.0, -0.0, -0.0), (0.0, -1.0, 0.0, 0.0), (1.0, 1.0, -1.0, 0.0),
               (1e308, 2.0, -1e308, 1e308),  # the product alone overflows
               (1e308, 10.0, 0.0, np.inf), (2.0, 3.0, -np.inf, -np.inf),
               (np.inf, 0.0, 1.0, np.nan), (np.nan, 1.0, 1.0, np.nan)]
    for x, y, z, want in special:
        with np.errstate(over="ignore", invalid="ignore"):
            r = bits.fma_f64(x, y, z)
        assert isinstance(r, np.float64)
        same = (np.isnan(r) and np.isnan(want)) or (r == want and
                                                     np.signbit(r) == np.signbit(want))
        assert same, (x, y, z, r, want)


def test_log_reduction_splits_at_float32_sqrt2():
    """The exponent-field reduction puts f in (sqrt(1/2), sqrt(2)] exactly as the written
    rule says: v = 2m + 1 whose mantissa is just above float32(sqrt 2) is halved."""
    sqrt2 = np.float32(np.sqrt(2.0))
    for e in range(1, 24):
        for f in (sqrt2, np.nextafter(sqrt2, np.float32(3)), np.nextafter(sqrt2, np.float32(0))):
            v = np.float32(f * np.float32(2.0**e))
            if v != np.round(v) or int(v) % 2 == 0 or v >= 2**24:
                continue
            m = np.int64((int(v) - 1) // 2)
            exact = np.log((m + 0.5) * 2.0**-23)
            assert abs(float(philox.log_open_f32(m)) - exact) <= 2 * np.spacing(np.float32(abs(exact)))


def test_compiled_transform_equals_numpy_exhaustively(float32_transform):
    """All 2^23 float32 inputs: the CPU-compiled log and cos/sin give the numpy bits."""
    log_open_f32, cos_sin_2pi_f32 = _rng.log_open_f32, _rng.cos_sin_2pi_f32
    @numba.njit
    def compiled(m):
        out = np.empty((3, m.size), np.float32)
        for n in range(m.size):
            out[0, n] = log_open_f32(np.int32(m[n]))
            out[1, n], out[2, n] = cos_sin_2pi_f32(np.int32(m[n]))
        return out

    m = float32_transform["m"]
    got = compiled(m)
    c, s = float32_transform["cos"], float32_transform["sin"]
    assert np.array_equal(got[0].view(np.int32), float32_transform["log"].view(np.int32))
    assert np.array_equal(got[1].view(np.int32), c.view(np.int32))
    assert np.array_equal(got[2].view(np.int32), s.view(np.int32))


def test_float64_normals_refine_float32_normals():
    q = np.arange(200_000)
    z32 = streams.normals(3, 11, q, dtype="float32").astype(np.float64)
    z64 = streams.normals(3, 11, q, dtype="float64")
    assert np.all(np.sign(z32) == np.sign(z64))
    assert np.max(np.abs(z32 - z64)) < 5e-3
    assert np.median(np.abs(z32 - z64)) < 1e-6


@pytest.fixture(scope="module")
def many_normals():
    """10^6 normals: 1000 paths x 1000 consecutive numbers, float64 and float32."""
    paths = np.repeat(np.arange(1000), 1000)
    q = np.tile(np.arange(1000), 1000)
    return {dt: streams.normals(2024, paths, q, dtype=dt) for dt in ("float32", "float64")}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normals_moments_and_ks(many_normals, dtype):
    fails = sc.normal_sample(many_normals[dtype], label=f"{dtype} normals")
    assert not fails, "\n".join(fails)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normals_serial_correlations(many_normals, dtype):
    z = many_normals[dtype]
    fails = sc.lag_correlations(z, label=f"{dtype} normals")
    # across paths: number q of path i against number q of path i + 1
    grid = z.reshape(1000, 1000)
    fails += sc.uncorrelated(grid[:-1], grid[1:], "adjacent paths")
    assert not fails, "\n".join(fails)


def test_normal_checks_fail_on_wrong_samples(many_normals):
    """The checks above are able to fail: a 2% scale error, a shift, a uniform, a
    correlated sequence."""
    z = many_normals["float64"]
    assert sc.normal_sample(z * 1.02)
    assert sc.normal_sample(z + 0.01)
    assert sc.normal_sample(np.random.default_rng(0).uniform(-3**0.5, 3**0.5, z.size))
    assert sc.lag_correlations(z[1:] + 0.05 * z[:-1])
