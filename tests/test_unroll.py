"""Users' loops of constant trip count unrolled, and fastsde.kmath inlined, before the CPU
kernel compiles them (fastsde/kernels/unroll.py): the same operations, so the same bits."""

import math

import numpy as np
import pytest

import fastsde as fs
from fastsde import kmath
from fastsde.kernels import unroll
from fastsde.kmath import exp as kexp

N_INNER = 3
ANG = np.arange(6) * 2 * np.pi / 6
BUMP_PARAMS = np.concatenate([2.0 * np.cos(ANG), 2.0 * np.sin(ANG), [2.0]])


def nested(t, x, p, out):
    s = 0.0
    for k in range(6):
        s += p[k] * x[0]
        for j in range(N_INNER):
            s += j * k - x[1]
    out[0] = s
    out[1] = k  # the loop variable keeps its last value


def bumps6(t, x, p, out):
    """A 6-bump field, written as users write it (kmath.exp by its dotted name)."""
    c = p[12]
    num0 = 0.0
    num1 = 0.0
    den = 0.0
    for k in range(6):
        dx = p[k] - x[0]
        dy = p[6 + k] - x[1]
        w = kmath.exp(-(dx * dx + dy * dy) * c)
        num0 += w * dx
        num1 += w * dy
        den += w
    out[0] = num0 / den
    out[1] = num1 / den


def closure_field(m):
    def field(t, x, p, out):
        for i in range(m):
            out[i] = kexp(-x[i])
    return field


def test_unrolled_function_computes_the_same():
    new = unroll.unroll_constant_loops(nested)
    assert new is not nested and new.__name__ == "nested"
    x = np.array([1.5, -0.25])
    p = np.arange(6.0) / 7
    a, b = np.zeros(2), np.zeros(2)
    nested(0.0, x, p, a)
    new(0.0, x, p, b)
    assert np.array_equal(a, b), (a, b)


def test_kmath_names_are_replaced_by_their_inline_stand_ins():
    replacements = kmath.inline_replacements()
    new = unroll.unroll_constant_loops(closure_field(2), replacements)
    names = new.__code__.co_freevars
    cells = {n: c.cell_contents for n, c in zip(names, new.__closure__)}
    assert kmath.INLINE["exp"] in cells.values(), cells
    out = np.zeros(2)
    new(0.0, np.array([0.5, -1.0]), np.zeros(0), out)
    assert np.array_equal(out, [kmath.exp(-0.5), kmath.exp(1.0)])


def too_long(t, x, p, out):
    for k in range(unroll.MAX_TRIP + 1):
        out[0] += k


def breaks(t, x, p, out):
    for k in range(4):
        if x[0] > k:
            break
        out[0] += k


def local_bound(t, x, p, out):
    n = 3
    for k in range(n):
        out[0] += k


def assigns_its_variable(t, x, p, out):
    for k in range(3):
        k = k + 1
        out[0] += k


@pytest.mark.parametrize("fn", [too_long, breaks, local_bound, assigns_its_variable,
                                lambda t, x, p, out: None, math.exp])
def test_what_is_not_unrolled_is_returned_as_it_is(fn):
    assert unroll.unroll_constant_loops(fn) is fn


def test_a_function_without_source_is_compiled_as_written():
    namespace = {}
    exec("def built(t, x, p, out):\n    for k in range(2):\n        out[k] = x[k]\n",
         namespace)
    assert unroll.unroll_constant_loops(namespace["built"]) is namespace["built"]


def test_kernel_gives_the_bits_of_the_loop_as_written(monkeypatch):
    """The 6-bump field through simulate, unrolled with kmath inlined, against the same
    model compiled as written (no unrolling, kmath called): the same final states, bit
    for bit, in float32 and float64."""
    fast = fs.ODE(bumps6, 2, params=BUMP_PARAMS, name="bumps6")
    x0 = np.array([0.3, -0.2])
    results = {}
    for dtype in ("float32", "float64"):
        results[dtype] = fs.simulate(fast, fs.Normal(x0, 1.0), (0.0, 1.0), 5, 300,
                                     method="heun", dtype=dtype, seed=3).x
    monkeypatch.setattr(unroll, "MAX_TRIP", 0)
    monkeypatch.setattr(kmath, "inline_replacements", lambda: {})

    # One unused parameter more: another kernel (the width is part of its key), compiled
    # with the patches above.
    plain = fs.ODE(bumps6, 2, params=np.append(BUMP_PARAMS, 0.0), name="bumps6 as written")
    for dtype in ("float32", "float64"):
        reference = fs.simulate(plain, fs.Normal(x0, 1.0), (0.0, 1.0), 5, 300,
                                method="heun", dtype=dtype, seed=3).x
        assert np.all(np.isfinite(reference))
        differ = np.flatnonzero(np.any(results[dtype] != reference, axis=1))
        assert differ.size == 0, (f"{dtype}: paths {differ[:5]} differ: "
                                  f"{results[dtype][differ[:3]]} vs {reference[differ[:3]]}")


def transcendental_as_written(t, x, p, out):
    out[0] = (math.exp(-x[0]) - math.tanh(x[0]) + math.log(1.0 + x[0] * x[0])
              + math.expm1(-0.1 * x[0] * x[0]) - math.log1p(0.5 * x[0] * x[0])
              + math.erf(0.7 * x[0]) + math.sin(3.0 * x[0]) * math.cos(x[0])
              + (1.0 + x[0] * x[0]) ** 0.25 - math.pow(2.0, -0.3 * x[0] * x[0]))


def transcendental_numpy(t, x, p, out):
    # np.tanh and np.sin of an array stay numpy's (of a number they are kmath's).
    out[0] = (np.exp(-x[0]) - np.tanh(x[0]) + np.log(1.0 + x[0] * x[0])
              + np.expm1(-0.1 * x[0] * x[0]) - np.log1p(0.5 * x[0] * x[0])
              + math.erf(0.7 * x[0]) + np.sin(3.0 * x[0]) * np.cos(x[0])
              + np.power(1.0 + x[0] * x[0], 0.25) - np.power(2.0, -0.3 * x[0] * x[0])
              + 0.0 * np.tanh(x)[0] + 0.0 * np.sin(x)[0])


def transcendental_kmath(t, x, p, out):
    out[0] = (kmath.exp(-x[0]) - kmath.tanh(x[0]) + kmath.log(1.0 + x[0] * x[0])
              + kmath.expm1(-0.1 * x[0] * x[0]) - kmath.log1p(0.5 * x[0] * x[0])
              + kmath.erf(0.7 * x[0]) + kmath.sin(3.0 * x[0]) * kmath.cos(x[0])
              + kmath.pow(1.0 + x[0] * x[0], 0.25) - kmath.pow(2.0, -0.3 * x[0] * x[0]))


def _final(drift, math_source, dtype="float64"):
    model = fs.ODE(drift, 1, math=math_source)
    return fs.simulate(model, fs.Normal(0.0, 2.0), (0.0, 1.0), 4, 200, method="euler",
                       dtype=dtype, seed=11).x


def test_math_functions_are_compiled_as_kmath_unless_libm_is_asked_for():
    """math.exp, expm1, log, log1p, tanh, erf, sin, cos and pow, ``**`` and numpy's
    spellings, in a model with math="fastsde" (the default) give the bits of the same
    model written with fastsde.kmath; math="libm" keeps libm's, which differ from them in
    some paths."""
    lowered = _final(transcendental_as_written, "fastsde")
    assert np.array_equal(lowered, _final(transcendental_kmath, "fastsde"))
    assert np.array_equal(lowered, _final(transcendental_numpy, "fastsde"))
    libm = _final(transcendental_as_written, "libm")
    assert np.all(np.isfinite(libm))
    assert np.any(libm != lowered), "math='libm' gave kmath's bits on every path"
    np.testing.assert_allclose(libm, lowered, rtol=1e-13)


HALF_POWER = 2
HALF_NON_INTEGER = 0.5


def powers_kept(t, x, p, out):
    out[0] = x[0] ** 2 + x[0] ** -1 + x[0] ** 2.0 + x[0] ** HALF_POWER + 2 ** 3


def powers_rewritten(t, x, p, out):
    out[0] = x[0] ** 0.5 + x[0] ** p[0] + 2.0 ** x[0] + x[0] ** HALF_NON_INTEGER


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_powers_become_kmath_pow_unless_the_exponent_is_an_integer(dtype):
    """``x ** y`` is rewritten as fastsde.kmath.pow unless y is an integer (literal,
    negated literal, integral float or a module constant that is one), which Numba
    computes by products; the rewritten model gives kmath.pow's bits."""
    from fastsde.kernels import unroll

    lowering = kmath.lowering(False)
    assert unroll.unroll_constant_loops(powers_kept, lowering, max_trip=0) is powers_kept
    rewritten = unroll.unroll_constant_loops(powers_rewritten, lowering, max_trip=0)
    assert unroll.POW_NAME in rewritten.__code__.co_freevars

    def by_hand(t, x, p, out):
        out[0] = (kmath.pow(x[0], 0.5) + kmath.pow(x[0], p[0]) + kmath.pow(2.0, x[0])
                  + kmath.pow(x[0], HALF_NON_INTEGER))

    model = fs.ODE(powers_rewritten, 1, params=(1.5,))
    same = fs.ODE(by_hand, 1, params=(1.5,))
    start = fs.Normal(2.0, 0.1)
    a = fs.simulate(model, start, (0.0, 0.1), 4, 64, method="euler", dtype=dtype, seed=2).x
    b = fs.simulate(same, start, (0.0, 0.1), 4, 64, method="euler", dtype=dtype, seed=2).x
    assert np.all(np.isfinite(a)) and np.array_equal(a, b)


@pytest.mark.parametrize("value", ["fast", None, 1])
def test_bad_math_is_named(value):
    with pytest.raises(ValueError, match="math must be one of"):
        fs.ODE(transcendental_as_written, 1, math=value)


def mixture_like(t, x, p, out):
    s = 0.0
    for k in range(int(p[0])):  # a count from the parameters: the loop stays
        s += math.exp(-x[0] * k)
    out[0] = s


def loop_on_the_path(t, x, p, out):
    s = 0.0
    for k in range(int(abs(x[0]))):  # a per-path count: no lane form, path by path
        s += math.exp(-x[0] * k)
    out[0] = s


def bumps_with_math_exp(t, x, p, out):
    s = 0.0
    for k in range(4):
        s += math.exp(-x[0] * k)
    out[0] = s


def test_math_is_lowered_only_where_no_loop_is_left_or_the_loops_have_a_lane_form():
    """An inlined exp in a loop that stays and runs path by path ran slower than libm's
    call, so math.exp is replaced only in functions that are straight-line code once
    unrolled, or whose loops stay around a lane form (fastsde/kernels/lanes.py: the
    block of paths inside the loop, where kmath's exp vectorises); the CUDA kernel and
    the plain references follow the same rule."""
    assert unroll.lowers_math(bumps_with_math_exp)
    assert unroll.lowers_math(transcendental_as_written)
    assert unroll.lowers_math(mixture_like)
    assert not unroll.lowers_math(loop_on_the_path)
    drift, _ = unroll.plain_functions(fs.ODE(loop_on_the_path, 1))
    assert drift is loop_on_the_path
    drift, _ = unroll.plain_functions(fs.ODE(mixture_like, 1))
    assert kmath.exp in [c.cell_contents for c in drift.__closure__]
    drift, _ = unroll.plain_functions(fs.ODE(bumps_with_math_exp, 1))
    assert kmath.exp in [c.cell_contents for c in drift.__closure__]
    drift, _ = unroll.plain_functions(fs.ODE(bumps_with_math_exp, 1, math="libm"))
    assert drift is bumps_with_math_exp


def clipped(t, x, p, out):
    """max and min with two arguments (mixed int and float), and with three; conditional
    expressions, pure and indexing."""
    out[0] = max(x[0], 0) - min(x[1], 0.5) + max(x[0], x[1], -1.0)
    a = x[0]
    b = x[1]
    out[1] = (min(max(b * p[0], -2.0), 2) + (0.5 if a > b else -0.25 * a)
              + (x[0] if b > 0 else 1))


def test_two_argument_max_and_min_are_replaced_with_pythons_semantics():
    """max(a, b) and min(a, b) become conditional expressions with Python's results,
    NaN included (the first argument is kept unless the second compares greater/less);
    three arguments, and the names used as values, are left to Numba's builtins."""
    new = unroll.unroll_constant_loops(clipped,
                                       call_replacements=unroll.two_argument_selects(
                                           lambda fn: fn))
    cells = [c.cell_contents for c in new.__closure__]
    assert unroll._max2 in cells and unroll._min2 in cells, cells
    for a, b in [(math.nan, 1.0), (1.0, math.nan), (0.0, -0.0), (-0.0, 0.0), (2, 1.5),
                 (1.5, 2)]:
        for builtin, select in ((max, unroll._max2), (min, unroll._min2)):
            got, want = select(a, b), builtin(a, b)
            assert (math.isnan(got) and math.isnan(want)) or (
                got == want and math.copysign(1, got) == math.copysign(1, want)), \
                (builtin.__name__, a, b, got, want)
    for x in ([0.3, -0.7], [-3.0, 4.0], [math.nan, 0.1], [0.2, math.nan]):
        a, b = np.zeros(2), np.zeros(2)
        clipped(0.0, np.array(x), np.array([1.5]), a)
        new(0.0, np.array(x), np.array([1.5]), b)
        np.testing.assert_array_equal(a, b)


def test_conditional_expressions_with_pure_arms_become_selects():
    """``a if c else b`` on names and numbers becomes select(c, a, b); one that indexes
    (a guard, whose other arm must not be evaluated) is left as it is."""
    import ast

    def select(c, a, b):
        return a if c else b
    new = unroll.unroll_constant_loops(clipped, max_trip=0, select=select)
    cells = dict(zip(new.__code__.co_freevars, [c.cell_contents for c in new.__closure__]))
    assert cells.get(unroll.SELECT_NAME) is select, cells
    tree = ast.parse(ast.unparse(unroll._Selects(unroll.SELECT_NAME).visit(
        unroll._function_def(clipped))))
    ifexps = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.IfExp)]
    assert ifexps == ["x[0] if b > 0 else 1"], ifexps
    for x in ([0.3, -0.7], [-3.0, 4.0]):
        a, b = np.zeros(2), np.zeros(2)
        clipped(0.0, np.array(x), np.array([1.5]), a)
        new(0.0, np.array(x), np.array([1.5]), b)
        np.testing.assert_array_equal(a, b)


def test_kernel_with_selects_gives_numbas_builtin_bits(monkeypatch):
    """The kernel's max/min stand-ins and conditional expressions as selects against
    Numba's builtins and branches (the replacements switched off, in a kernel of its
    own): the same final states in float32 and float64."""
    model = fs.ODE(clipped, 2, params=[1.5], name="clipped")
    x0 = fs.Normal([0.1, -0.2], [2.0, 2.0])
    fast = {dt: fs.simulate(model, x0, (0.0, 1.0), 6, 300, method="heun", dtype=dt,
                            seed=5).x for dt in ("float32", "float64")}
    from fastsde.kernels import bits

    monkeypatch.setattr(unroll, "two_argument_selects", lambda jit, select=None: {})
    monkeypatch.setattr(bits, "unified_select", lambda: None)
    plain = fs.ODE(clipped, 2, params=[1.5, 0.0], name="clipped, builtins")
    for dt in ("float32", "float64"):
        reference = fs.simulate(plain, x0, (0.0, 1.0), 6, 300, method="heun", dtype=dt,
                                seed=5).x
        assert np.all(np.isfinite(reference))
        np.testing.assert_array_equal(fast[dt], reference, err_msg=dt)


SCALE = 0.37


def with_python_floats(t, x, p, out):
    """Python floats: literals, a module float, math.pi; an int multiplier."""
    out[0] = 0.1 * x[0] - 1.7 * x[0] * x[0] * x[0] + SCALE * math.pi * 0.01 - 2 * x[0]


def with_float32_constants(t, x, p, out):
    out[0] = (np.float32(0.1) * x[0] - np.float32(1.7) * x[0] * x[0] * x[0]
              + np.float32(SCALE) * np.float32(math.pi) * np.float32(0.01) - 2 * x[0])


def test_python_floats_are_wrapped_in_the_float_type():
    """Literals, module floats and float attributes of modules become float_type(...);
    ints, and names that are not floats, are left as they are."""
    new = unroll.unroll_constant_loops(with_python_floats, max_trip=0,
                                       float_type=np.float32)
    cells = dict(zip(new.__code__.co_freevars, [c.cell_contents for c in new.__closure__]))
    assert cells == {unroll.FLOAT_NAME: np.float32}, cells
    x = np.array([0.8], np.float32)
    a, b = np.zeros(1, np.float32), np.zeros(1, np.float32)
    new(0.0, x, np.zeros(0, np.float32), a)
    with_float32_constants(0.0, x, np.zeros(0, np.float32), b)
    assert a[0] == b[0], (a, b)
    assert unroll.python_floats(fs.ODE(with_python_floats, 1), "float32") is np.float32
    assert unroll.python_floats(fs.ODE(with_python_floats, 1), "float64") is None
    assert unroll.python_floats(fs.ODE(with_python_floats, 1, math="libm"),
                                "float32") is None


def test_float32_kernels_compute_python_floats_in_float32():
    """In a float32 run a model's Python floats are float32 (NEP 50's weak scalars): the
    bits of the same model written with np.float32 constants. math='libm' keeps Numba's
    typing (float64 arithmetic, rounded to float32 when stored), which differs from it on
    some paths by float32 rounding."""
    x0 = fs.Normal(0.2, 0.5)

    def final(drift, math_source):
        model = fs.ODE(drift, 1, math=math_source)
        return fs.simulate(model, x0, (0.0, 1.0), 5, 256, method="heun", dtype="float32",
                           seed=2).x

    weak = final(with_python_floats, "fastsde")
    np.testing.assert_array_equal(weak, final(with_float32_constants, "fastsde"))
    as_written = final(with_python_floats, "libm")
    assert np.all(np.isfinite(as_written))
    assert np.any(as_written != weak), "math='libm' gave float32 arithmetic's bits"
    np.testing.assert_allclose(as_written, weak, rtol=1e-5, atol=1e-6)


def four_terms(t, x, p, out):
    for k in range(4):
        out[0] += 0.25 * x[0]
        out[1] += k


def test_too_large_to_unroll_keeps_its_loops_and_gets_the_other_rewrites(monkeypatch):
    """Past MAX_STATEMENTS the loops stay, but the replacements are still made: the CUDA
    kernel, which unrolls nothing, makes them, and the two must compute the same."""
    import dis

    monkeypatch.setattr(unroll, "MAX_STATEMENTS", 5)
    new = unroll.unroll_constant_loops(four_terms, float_type=np.float32)
    assert new is not four_terms
    assert any(i.opname == "FOR_ITER" for i in dis.get_instructions(new)), "unrolled"
    cells = dict(zip(new.__code__.co_freevars, [c.cell_contents for c in new.__closure__]))
    assert cells.get(unroll.FLOAT_NAME) is np.float32, cells
