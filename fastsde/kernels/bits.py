"""Bit casts, selects and fused multiply-adds: the few primitives whose spelling differs
between targets.

:mod:`.philox` and :mod:`.fmath` call these by name. The definitions below are the host
ones (they work on numpy scalars and arrays, for the host reference and the CUDA
simulator); :func:`cpu_primitives` and :mod:`.cuda` give the same names compiled
versions, which :func:`.target.compile_functions` binds in place of these. Every version
is exact (a bit cast reinterprets, a select picks, a fused multiply-add rounds once as
IEEE 754 defines it), so all targets give the same bits.

Why they exist: taking the exponent of a float from its bits, and building a float64 from
a 52-bit integer by setting its exponent field, replace a bisection and an int64-to-float64
conversion that AVX2 does not have (LLVM would leave them scalar); a select is one blend
where the product-with-0/1 form costs three operations; an FMA is one operation (and one
rounding) where a product and a sum are two, and polynomials are chains of them (the CPU
has it in hardware since AVX2, CUDA always). numpy has none: the float32 host version
emulates it exactly in float64; float64 has no wider type to emulate it in, so its host
version is LLVM's ``llvm.fma.f64`` compiled by Numba (the FMA instruction, or libm's
correctly rounded ``fma`` on a CPU without one), which rounds once like the others.
"""

import math
import struct

import numpy as np


def f32_as_i32(x):
    """The bits of float32 ``x`` as int32."""
    return np.asarray(x, np.float32).view(np.int32)[()]


def i32_as_f32(i):
    """The float32 whose bits are int32 ``i``."""
    return np.asarray(i, np.int32).view(np.float32)[()]


def f64_as_i64(x):
    """The bits of float64 ``x`` as int64."""
    return np.asarray(x, np.float64).view(np.int64)[()]


def i64_as_f64(i):
    """The float64 whose bits are int64 ``i``."""
    return np.asarray(i, np.int64).view(np.float64)[()]


def fma_f32(a, b, c):
    """``a * b + c`` for float32, rounded once (IEEE fusedMultiplyAdd), on numpy values.

    The product of two float32 is exact in float64; the float64 sum is made round-to-odd
    (its exact error by Knuth's TwoSum decides whether to step to the odd neighbour), and
    a round-to-odd value with 53 >= 24 + 2 bits rounds to the same float32 as the exact
    sum (Boldo and Melquiond, 2008), so no double-rounding error is possible.
    """
    if np.ndim(a) == np.ndim(b) == np.ndim(c) == 0:
        return _fma_f32_scalar(float(np.float32(a)), float(np.float32(b)),
                               float(np.float32(c)))
    a64 = np.asarray(a, np.float32).astype(np.float64)
    b64 = np.asarray(b, np.float32).astype(np.float64)
    c64 = np.asarray(c, np.float32).astype(np.float64)
    product = a64 * b64
    total = product + c64
    back = total - product
    # TwoSum's error, (product - (total - back)) + (c64 - back), in place.
    error = total - back
    np.subtract(product, error, out=error)
    np.subtract(c64, back, out=back)
    error += back
    # To the odd neighbour on the exact sum's side: one step of the bit pattern (the
    # patterns of finite floats are monotone in magnitude); an inexact sum is never 0.
    # In integers: np.nextafter and two float selects made it 5 times slower on arguments
    # of mixed scales (2.37 against 0.44 s for 2^23 triples).
    word = total.view(np.int64)
    step = np.where((error > 0) == (total > 0), np.int64(1), np.int64(-1))
    inexact_even = (error != 0) & ((word & 1) == 0) & np.isfinite(total)
    return np.where(inexact_even, word + step, word).view(np.float64).astype(np.float32)[()]


def _fma_f32_scalar(a, b, c):
    """:func:`fma_f32` on three Python floats holding float32 values, in Python floats
    (the same round-to-odd argument; about 2 microseconds where numpy's scalar
    operations take several times that: the CUDA simulator and users' functions run in
    plain Python call it one scalar at a time)."""
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
        return np.float32(a * b + c)
    product = a * b
    total = product + c
    back = total - product
    error = (product - (total - back)) + (c - back)
    if error != 0.0 and struct.unpack("<q", struct.pack("<d", total))[0] & 1 == 0:
        total = math.nextafter(total, math.inf if error > 0.0 else -math.inf)
    return np.float32(total)


def _fma_f64_scalar(a, b, c):
    """:func:`fma_f64` on three Python floats: the exact a * b + c as a ratio of integers
    (a float's ``as_integer_ratio`` is exact, its denominator a power of two), rounded
    once by Python's integer true division, which rounds correctly."""
    if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
        if math.isinf(c) and math.isfinite(a) and math.isfinite(b):
            return np.float64(c)  # a finite product, however large, does not matter
        return np.float64(a * b + c)
    na, da = a.as_integer_ratio()
    nb, db = b.as_integer_ratio()
    nc, dc = c.as_integer_ratio()
    num = na * nb * dc + nc * da * db
    if num == 0:
        # Exactly zero: the sign IEEE gives (-0 only for -0 + -0), which the float sum
        # gets right here (a nonzero product is then exact).
        return np.float64(a * b + c)
    try:
        return np.float64(num / (da * db * dc))
    except OverflowError:
        return np.float64(math.inf if num > 0 else -math.inf)


_HOST_FMA_F64 = []


def fma_f64(a, b, c):
    """``a * b + c`` for float64, rounded once (IEEE fusedMultiplyAdd), on numpy values:
    a Numba ufunc over ``llvm.fma.f64``, compiled on first use (scalars: exact integer
    arithmetic, without the ufunc's call overhead)."""
    if np.ndim(a) == np.ndim(b) == np.ndim(c) == 0:
        return _fma_f64_scalar(float(a), float(b), float(c))
    if not _HOST_FMA_F64:
        import numba

        fma_ = _fma_intrinsic(64)

        @numba.vectorize(["float64(float64, float64, float64)"])
        def fma_ufunc(x, y, z):
            return fma_(x, y, z)

        _HOST_FMA_F64.append(fma_ufunc)
    return np.asarray(_HOST_FMA_F64[0](np.asarray(a, np.float64), np.asarray(b, np.float64),
                                       np.asarray(c, np.float64)))[()]


def select(condition, if_true, if_false):
    """``if_true`` where ``condition`` holds, else ``if_false`` (elementwise on arrays)."""
    return np.where(condition, if_true, if_false)[()]


def select_scalar(condition, if_true, if_false):
    """:func:`select` for compiled targets, where the conditional expression is a blend."""
    return if_true if condition else if_false


def _bitcast_intrinsic(source, target):
    from numba.extending import intrinsic

    @intrinsic
    def bitcast(typingctx, value):
        if value != source:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(target))

        return target(source), codegen

    return bitcast


def _select_intrinsic():
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def select_(typingctx, condition, if_true, if_false):
        if condition != types.boolean or if_true != if_false:
            return None

        def codegen(context, builder, signature, args):
            return builder.select(*args)

        return if_true(condition, if_true, if_false), codegen

    return select_


def unified_select():
    """A CPU ``select(condition, if_true, if_false)`` for users' conditional expressions
    (kernels.unroll): the arms converted to the type Numba gives the conditional
    expression (their unified type), the condition's truth as Python's, then one LLVM
    ``select``: no branch, so no blocks for Numba to copy when it inlines the function,
    and nothing for LLVM to turn back into a blend before vectorising."""
    from numba.extending import intrinsic

    @intrinsic
    def select_unified(typingctx, condition, if_true, if_false):
        unified = typingctx.unify_types(if_true, if_false)
        if unified is None:
            return None

        def codegen(context, builder, signature, args):
            cond_type, true_type, false_type = signature.args
            cond = context.cast(builder, args[0], cond_type, types.boolean)
            return builder.select(
                cond, context.cast(builder, args[1], true_type, signature.return_type),
                context.cast(builder, args[2], false_type, signature.return_type))

        return unified(condition, if_true, if_false), codegen

    from numba import types
    return select_unified


def llvm_fma(builder, lltype, args):
    """Emit one ``llvm.fma`` of LLVM float type ``lltype`` on ``args`` (a, b, c)."""
    from llvmlite import ir
    fn = builder.module.declare_intrinsic("llvm.fma", [lltype],
                                          ir.FunctionType(lltype, [lltype] * 3))
    return builder.call(fn, args)


def _fma_intrinsic(bits):
    """LLVM's ``llvm.fma.f32`` (``bits`` 32) or ``llvm.fma.f64`` (64): the FMA instruction
    (vectorised with the loop), or libm's correctly rounded ``fmaf`` / ``fma`` on a CPU
    without one. Refuses other argument types: no silent conversion."""
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    ftype = types.float32 if bits == 32 else types.float64

    @intrinsic
    def fma_(typingctx, a, b, c):
        if not (a == b == c == ftype):
            return None

        def codegen(context, builder, signature, args):
            return llvm_fma(builder, ir.FloatType() if bits == 32 else ir.DoubleType(), args)

        return ftype(a, b, c), codegen

    return fma_


def cpu_primitives():
    """The primitives for Numba's CPU target: LLVM ``bitcast`` and ``select`` instructions
    (a conditional expression would reach LLVM as branches, which it does not always
    turn back into a select before vectorising) and ``llvm.fma.f32`` / ``llvm.fma.f64``."""
    from numba import types
    return dict(
        f32_as_i32=_bitcast_intrinsic(types.float32, types.int32),
        i32_as_f32=_bitcast_intrinsic(types.int32, types.float32),
        f64_as_i64=_bitcast_intrinsic(types.float64, types.int64),
        i64_as_f64=_bitcast_intrinsic(types.int64, types.float64),
        select=_select_intrinsic(),
        fma_f32=_fma_intrinsic(32),
        fma_f64=_fma_intrinsic(64),
    )
