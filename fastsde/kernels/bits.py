"""Bit casts and selects: the few primitives whose spelling differs between targets.

:mod:`.philox` calls these by name. The definitions below are the numpy ones (they work on
numpy scalars and arrays, for the host reference and the CUDA simulator);
:func:`cpu_primitives` and :mod:`.cuda` give the same names compiled versions, which
:func:`.target.compile_functions` binds in place of these. Every version is exact (a bit
cast reinterprets, a select picks), so all targets give the same bits.

Why they exist: taking the exponent of a float from its bits, and building a float64 from
a 52-bit integer by setting its exponent field, replace a bisection and an int64-to-float64
conversion that AVX2 does not have (LLVM would leave them scalar); a select is one blend
where the product-with-0/1 form costs three operations.
"""

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


def cpu_primitives():
    """The primitives for Numba's CPU target: LLVM ``bitcast`` and ``select`` instructions
    (a conditional expression would reach LLVM as branches, which it does not always
    turn back into a select before vectorising)."""
    from numba import types
    return dict(
        f32_as_i32=_bitcast_intrinsic(types.float32, types.int32),
        i32_as_f32=_bitcast_intrinsic(types.int32, types.float32),
        f64_as_i64=_bitcast_intrinsic(types.float64, types.int64),
        i64_as_f64=_bitcast_intrinsic(types.int64, types.float64),
        select=_select_intrinsic(),
    )
