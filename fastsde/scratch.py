"""Fixed-size scratch arrays inside user functions, without heap allocation.

User functions ``f(t, x, p, out)`` run once or twice per step per path and must allocate
nothing (a heap allocation per call costs more than the arithmetic of a small function,
and CUDA device functions have no heap). Some functions still need a few numbers of
working memory, e.g. the hidden activations of a neural vector field
(:class:`fastsde.MLPField`). :func:`local_array` gives them that:

- compiled for the CPU it is an ``alloca`` in the entry block of the function being
  compiled (the kernel, once fastsde has inlined the user function into it), so it costs
  nothing per call and each thread has its own;
- compiled for CUDA it is a per-thread local array (``cuda.local.array``), which NVVM
  keeps in registers where it can;
- called as plain Python (tests, fastsde's pre-flight run, the CUDA simulator) it is
  ``numpy.empty``.

The size must be a compile-time constant: an int literal, or an int global or closure
variable of the function (Numba freezes those). The contents start undefined.

Numba learns the function when :func:`register` is called (``fastsde.MLPField`` does it);
not at import, because importing numba-cuda alone takes over a second.
"""

import numpy as np


def local_array(n, like):
    """A scratch array of ``n`` elements of ``like``'s dtype (contents undefined).

    Parameters
    ----------
    n : int
        Compile-time constant size (literal, global or closure int) when compiled.
    like : numpy.ndarray
        Only its dtype is used (pass ``x`` or ``p`` to follow the run's dtype).

    Returns
    -------
    numpy.ndarray, shape (n,)
    """
    return np.empty(n, like.dtype)


_REGISTERED = {}


def register(cuda=True):
    """Teach Numba (and numba-cuda, when installed) to compile :func:`local_array`.

    Idempotent; call it before compiling a function of your own that uses it.

    Parameters
    ----------
    cuda : bool
        Also register it for numba-cuda.

    Returns
    -------
    bool
        Whether numba-cuda knows ``local_array`` now.
    """
    if "cpu" not in _REGISTERED:
        _register_cpu()
        _REGISTERED["cpu"] = True
    if cuda and "cuda" not in _REGISTERED:
        _REGISTERED["cuda"] = _register_cuda()
    return _REGISTERED.get("cuda", False)


def _register_cpu():
    from numba.core import cgutils, types
    from numba.core.errors import TypingError
    from numba.core.extending import lower_builtin, type_callable

    @type_callable(local_array)
    def _type_local_array(context):
        def typer(n, like):
            if not isinstance(like, types.Array):
                raise TypingError(f"local_array(n, like): like must be an array; got {like}")
            if not isinstance(n, types.IntegerLiteral):
                raise TypingError(f"local_array(n, like): n must be a compile-time constant "
                                  f"int (a literal, or an int global or closure variable); "
                                  f"got {n}")
            if n.literal_value < 1:
                raise TypingError(f"local_array(n, like): n must be >= 1; got "
                                  f"{n.literal_value}")
            return types.Array(like.dtype, 1, "C")
        return typer

    @lower_builtin(local_array, types.IntegerLiteral, types.Array)
    def _lower_local_array(context, builder, sig, args):
        size = sig.args[0].literal_value
        arrty = sig.return_type
        llty = context.get_data_type(arrty.dtype)
        # alloca_once places the allocation in the entry block: one slot per stack frame,
        # not one per call inside the time loop.
        ptr = cgutils.alloca_once(builder, llty, size=size)
        ary = context.make_array(arrty)(context, builder)
        intp = context.get_value_type(types.intp)
        itemsize = context.get_abi_sizeof(llty)
        context.populate_array(ary, data=ptr, shape=[intp(size)], strides=[intp(itemsize)],
                               itemsize=intp(itemsize), meminfo=None)
        return ary._getvalue()


def _register_cuda():
    """The same function for numba-cuda's target (a per-thread local array)."""
    try:
        from numba.cuda import extending as cext
        from numba.cuda import types as ctypes
        from numba.cuda.cudadrv import nvvm
        from numba.cuda.cudaimpl import _generic_array
        type_callable, lower = cext.type_callable, cext.lower_builtin
    except Exception:  # noqa: BLE001 - numba-cuda absent or of another layout
        # (numba's own, older numba.cuda has an ``extending`` without these)
        return False

    @type_callable(local_array)
    def _type_cuda(context):
        def typer(n, like):
            if isinstance(n, ctypes.IntegerLiteral) and isinstance(like, ctypes.Array) \
                    and n.literal_value >= 1:
                return ctypes.Array(like.dtype, 1, "C")
        return typer

    @lower(local_array, ctypes.IntegerLiteral, ctypes.Array)
    def _lower_cuda(context, builder, sig, args):
        return _generic_array(context, builder, shape=(sig.args[0].literal_value,),
                              dtype=sig.return_type.dtype, symbol_name="_fastsde_local",
                              addrspace=nvvm.ADDRSPACE_LOCAL)

    return True

