"""Compile the plain-Python kernel math for one target (CPU or CUDA).

The math modules (:mod:`.philox`, :mod:`.steps`) are written as ordinary functions that
call each other by global name, so they also run as plain Python/numpy. For a compiled
target every such function is re-bound in a private namespace in which the names it
calls refer to the compiled versions, then compiled with the target's decorator.
"""

import types


def compile_functions(module, names, jit, primitives=None):
    """Compile ``names`` from ``module`` with ``jit``, resolving calls between them.

    Parameters
    ----------
    module : module
        Module whose globals the functions were written against.
    names : sequence of str
        Functions to compile. Calls among them resolve to the compiled versions.
    jit : callable
        Decorator such as ``numba.njit`` or ``numba.cuda.jit(device=True)``.
    primitives : dict, optional
        Names the functions call that the target spells its own way (the bit casts and
        the select of :mod:`.bits`), bound to the target's versions.

    Returns
    -------
    types.SimpleNamespace
        One attribute per name, holding the compiled function.
    """
    namespace = dict(vars(module))
    namespace.update(primitives or {})
    compiled = {}
    for name in names:
        plain = getattr(module, name)
        rebound = types.FunctionType(plain.__code__, namespace, name,
                                     plain.__defaults__, plain.__closure__)
        rebound.__module__ = module.__name__
        rebound.__qualname__ = plain.__qualname__
        compiled[name] = jit(rebound)
    namespace.update(compiled)
    return types.SimpleNamespace(**compiled)


def module_functions(module):
    """Names of the plain functions defined in ``module`` (not imported into it): the set
    to compile, so that a function added to the math module needs no list kept in step."""
    return tuple(name for name, value in vars(module).items()
                 if isinstance(value, types.FunctionType) and value.__module__ == module.__name__)
