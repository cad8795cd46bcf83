"""Loops of constant trip count in users' functions, unrolled before Numba compiles them.

The CPU kernel advances a block of paths by calling the step once per lane, in a loop over
the lanes that LLVM vectorises when the step is straight-line code (no calls, no loops left
inside). A drift such as a field of 8 Gaussian bumps,

    for k in range(8):
        w = exp(-((p[k] - x[0]) ** 2 + (p[8 + k] - x[1]) ** 2) * c)
        ...

keeps its loop over the bumps: too large for LLVM's full unrolling once the exponential is
inlined into it, so the lane loop is not the innermost loop and runs path by path. Here
the loop is unrolled in the function's syntax tree before Numba sees it, which leaves LLVM
straight-line code over constant indices. Measured (float32, Euler, 2 x 10^5 paths x 16
steps, 2 threads, AVX2) for that field with :func:`fastsde.kmath.exp`: 1.27e8 path-steps/s
unrolled against 2.2e7 as written (5.8e7 with libm's ``math.exp``, unrolled or not).

The arithmetic is unchanged, operation by operation and in the same order, so the results
are the same bits. What is unrolled: ``for name in range(...)`` with constant integer
bounds (literals, or names bound to ints in the function's closure or module and never
assigned in the function), at most :data:`MAX_TRIP` iterations, with no ``break``,
``continue``, ``return``, ``else`` or nested function in the body, and while the whole
function stays within :data:`MAX_STATEMENTS` statements; other loops stay. A function
whose source cannot be read (a lambda, code built at run time) is compiled as written.

The same pass makes the kernel's other rewrites of users' functions, with or without
unrolling: fastsde.kmath's names as stand-ins inlined into the kernel (and ``x ** y`` as
its ``pow`` unless y is an integer literal), two-argument ``max``/``min`` as selects
(:func:`two_argument_selects`), and in float32 kernels Python floats as float32
(:func:`python_floats`).
"""

import ast
import builtins
import copy
import inspect
import math
import textwrap

#: Loops of more iterations are kept: their bodies are what LLVM vectorises itself.
MAX_TRIP = 16
#: Statements (counted recursively) the unrolled function may hold; above, the function
#: is compiled as written (compile time grows with the unrolled code).
MAX_STATEMENTS = 400


def _max2(a, b):
    """Python's ``max(a, b)`` (the first argument unless the second is greater, which
    keeps a NaN first argument), as Numba's own: the same comparison and result type."""
    return b if b > a else a


def _min2(a, b):
    """Python's ``min(a, b)``, as Numba's own."""
    return b if b < a else a


def two_argument_selects(jit, select=None):
    """{builtin: stand-in compiled with ``jit``} for ``max(a, b)`` and ``min(a, b)``
    called with two positional arguments. Numba's own builtin kept the lane loop around
    the step from vectorising (a Gaussian-mixture field's running maximum over its 8
    components: 9.9e6 path-steps/s with ``max`` against 6.5e7 with these, float32, 2
    threads, AVX2). With ``select`` (:func:`bits.unified_select`) they are one select
    each, else the conditional expressions of :func:`_max2` and :func:`_min2`."""
    if select is None:
        return {builtins.max: jit(_max2), builtins.min: jit(_min2)}

    def max2(a, b):
        return select(b > a, b, a)

    def min2(a, b):
        return select(b < a, b, a)
    return {builtins.max: jit(max2), builtins.min: jit(min2)}


def unroll_constant_loops(fn, replacements=None, max_trip=None, call_replacements=None,
                          float_type=None, select=None):
    """``fn`` with its loops of constant trip count unrolled (see the module docstring).

    Parameters
    ----------
    fn : function
    replacements : dict, optional
        {function: function}: functions the code names (``exp``, ``kmath.exp``,
        ``fs.kmath.exp``, resolved in the function's closure and module) that the new
        function calls in their place (fastsde.kmath's :data:`~fastsde.kmath.INLINE`
        stand-ins).
    max_trip : int, optional
        Unroll loops of at most this many iterations (default :data:`MAX_TRIP`; 0
        unrolls none, for replacing names only).
    call_replacements : dict, optional
        {function: function} applied only where the code calls the function with two
        positional arguments (:func:`two_argument_selects`).
    float_type : callable, optional
        ``numpy.float32``: Python floats the code names (literals, and the closure's,
        the module's and modules' attributes such as ``math.pi``) are converted with it
        where they appear (:func:`python_floats`).
    select : callable, optional
        ``select(condition, if_true, if_false)`` (:func:`bits.unified_select`): the
        conditional expressions whose arms are arithmetic on names and numbers (nothing
        that indexes or calls: both arms are then evaluated, which for those changes
        nothing) become calls of it.

    Returns
    -------
    function
        A new function with the same name, globals, closure values and defaults, or
        ``fn`` itself when nothing is unrolled or replaced, or its source cannot be
        transformed.
    """
    try:
        return _unrolled(fn, replacements or {},
                         MAX_TRIP if max_trip is None else int(max_trip),
                         call_replacements or {}, float_type, select) or fn
    except (OSError, TypeError, SyntaxError, ValueError, IndentationError):
        return fn


def loops_stay(fn):
    """Whether loops are left in ``fn`` once its loops of constant trip count are
    unrolled as the kernel unrolls them (False where its source cannot be read)."""
    try:
        funcdef = _function_def(fn)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return False
    return funcdef is not None and _has_loop(unrolled_def(fn, funcdef))


def _has_loop(funcdef):
    return any(isinstance(node, (ast.For, ast.While, ast.AsyncFor))
               for node in ast.walk(funcdef))


def unrolled_def(fn, funcdef):
    """``funcdef`` (``fn``'s parsed ``def``) with its loops of constant trip count
    unrolled as :func:`unroll_constant_loops` unrolls them (a copy), or as it is when
    unrolled it would exceed :data:`MAX_STATEMENTS`."""
    unrolled = _Unroller(_constant_names(fn, funcdef), MAX_TRIP).visit(copy.deepcopy(funcdef))
    return unrolled if _count_statements(unrolled.body) <= MAX_STATEMENTS else funcdef


def lowers_math(fn, lane_form=True):
    """Whether a model with ``math="fastsde"`` gets the functions of
    :data:`fastsde.kmath.LOWERED` (math's and numpy's spellings, and ``**``) from
    :mod:`fastsde.kmath` in ``fn``: when no loop is left in it once its constant loops
    are unrolled, so that the step is straight-line code, or when the loops that stay
    are those of a lane form (``lanes.py``: the drift evaluated for a block of paths,
    its lane loops inside the user's loops, where kmath's functions vectorise). In a
    loop that stays and runs path by path, an inlined branch-free exp ran slower than
    libm's call (the Gaussian-mixture flow's loop over its components: 9.1e6 against
    1.49e7 path-steps/s, float32, 2 threads), so libm's stay there. The same answer on
    every target (it reads the source only), so that a lane-form drift gives the same
    bits path by path, block by block and on CUDA. ``lane_form=False`` leaves the lane
    form out (a diffusion's: the kernel evaluates only drifts per block)."""
    if getattr(fn, "__fastsde_lane_form__", False):
        return True
    try:
        funcdef = _function_def(fn)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return False
    if funcdef is None:
        return False
    if not _has_loop(unrolled_def(fn, funcdef)):
        return _count_statements(funcdef.body) <= MAX_STATEMENTS
    if not lane_form:
        return False
    from . import lanes
    return lanes.has_lane_form(fn)


def math_replacements(model, fn, inline):
    """What ``model.math`` replaces in ``fn``: :func:`fastsde.kmath.lowering` where the
    model asks for fastsde's math and :func:`lowers_math` holds, else nothing; the one
    rule for the CPU kernel (``inline``: the INLINE stand-ins), CUDA and the references."""
    from .. import kmath

    if model.math != "fastsde" or not lowers_math(fn, lane_form=fn is model.drift):
        return {}
    return kmath.lowering(inline)


def plain_functions(model, dtype=None):
    """The model's (drift, diffusion or None) as plain Python with the math the kernels
    compile for ``dtype`` (:func:`math_replacements`: ``math.exp`` as
    :func:`fastsde.kmath.exp`, numpy in plain Python, the same bits as compiled; and
    :func:`python_floats`). For CUDA's device functions and for references that must
    give the kernels' bits."""
    return tuple(None if fn is None else
                 unroll_constant_loops(fn, math_replacements(model, fn, False), max_trip=0,
                                       float_type=python_floats(model, dtype))
                 for fn in (model.drift, model.diffusion))


#: The closure name under which a function rewritten by :func:`python_floats` finds the
#: run's float type.
FLOAT_NAME = "__fastsde_float"


def python_floats(model, dtype):
    """The type Python floats in the model's functions take in a kernel of ``dtype``:
    ``numpy.float32`` for float32 kernels of models with ``math="fastsde"``, else None
    (as written: Numba types a Python float as float64).

    Numba types ``0.5 * x`` as float64 for a float32 ``x``, so a float32 model written
    with Python numbers computed in float64 and converted back at every such
    operation: half the SIMD width, and conversions. numpy 2 (NEP 50) and JAX treat a
    Python scalar as "weak", of the array's type; with "fastsde" math the kernels do the
    same for Python floats (literals, and the floats the functions read from their
    closure, their module or a module's attributes, such as ``math.pi``), not for ints
    (which index) or for numpy scalars (``np.float64(0.5)`` stays float64, the way to ask
    for float64 arithmetic). A float beyond float32's range becomes inf, as in numpy.
    Measured (8-bump field, float32, Euler, 2 threads, AVX2): accumulators started at
    0.0, 1.26e8 path-steps/s as float64, 1.58e8 as float32.
    """
    import numpy as np

    if dtype is None or np.dtype(dtype) != np.float32 or model.math != "fastsde":
        return None
    return np.float32


def _function_def(fn):
    """The ``def`` of ``fn`` parsed from its source, without decorators, or None when
    the source is not that one function."""
    if getattr(fn, "__code__", None) is None:
        return None
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    if (len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef)
            or tree.body[0].name != fn.__name__):
        return None
    funcdef = tree.body[0]
    funcdef.decorator_list = []
    return funcdef


def _unrolled(fn, replacements, max_trip, call_replacements, float_type=None,
              select=None):
    funcdef = _function_def(fn)
    if funcdef is None:
        return None
    code = fn.__code__
    constants = _constant_names(fn, funcdef)
    unroller = _Unroller(constants, max_trip)
    unrolled = unroller.visit(copy.deepcopy(funcdef))
    if _count_statements(unrolled.body) > MAX_STATEMENTS:
        # Too large unrolled: the loops stay, the replacements below are still made
        # (the CUDA kernel, which unrolls nothing, makes them too).
        unroller.changed = False
    else:
        funcdef = unrolled
    names = _readable_names(fn, funcdef)
    replacer = _Replacer(names, replacements, call_replacements)
    funcdef = replacer.visit(funcdef)
    if select is not None:
        selects = _Selects(SELECT_NAME)
        funcdef = selects.visit(funcdef)
        if selects.changed:
            replacer.used[SELECT_NAME] = select
    pow_replacement = replacements.get(math.pow)
    if pow_replacement is not None:
        powers = _Powers(names, POW_NAME)
        funcdef = powers.visit(funcdef)
        if powers.changed:
            replacer.used[POW_NAME] = pow_replacement
    if float_type is not None:
        weak = _PythonFloats(names, FLOAT_NAME)
        funcdef = weak.visit(funcdef)
        if weak.changed:
            replacer.used[FLOAT_NAME] = float_type
    if not unroller.changed and not replacer.used:
        return None
    # def __fastsde_unrolled(<free variables>, <replacements>): <the function>; return
    # it, so that its closure holds the original cells' values and the replacements,
    # and its globals are the original module's.
    free = list(code.co_freevars) + list(replacer.used)
    factory = ast.FunctionDef(
        name="__fastsde_unrolled",
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=name) for name in free],
                           vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None,
                           defaults=[]),
        body=[funcdef, ast.Return(value=ast.Name(id=funcdef.name, ctx=ast.Load()))],
        decorator_list=[], returns=None)
    if "type_params" in ast.FunctionDef._fields:  # Python >= 3.12
        factory.type_params = []
    module = ast.Module(body=[factory], type_ignores=[])
    ast.fix_missing_locations(module)
    # Tracebacks and Numba's messages point at the user's own lines (one above: the
    # factory's def takes line 1 of the parsed source).
    ast.increment_lineno(module, code.co_firstlineno - 2)
    namespace = {}
    exec(compile(module, code.co_filename, "exec"), fn.__globals__, namespace)
    cells = [cell.cell_contents for cell in (fn.__closure__ or ())]
    new = namespace["__fastsde_unrolled"](*cells, *replacer.used.values())
    new.__defaults__ = fn.__defaults__
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    new.__doc__ = fn.__doc__
    return new


def _readable_names(fn, funcdef):
    """{name: value} of the closure cells and module globals the function reads and
    never assigns."""
    assigned = _assigned_names(funcdef)
    values = {}
    code = fn.__code__
    for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            values[name] = cell.cell_contents
        except ValueError:  # an empty cell
            pass
    for name in code.co_names:
        if name not in values and name in fn.__globals__:
            values[name] = fn.__globals__[name]
        elif name not in values and hasattr(builtins, name):
            values[name] = getattr(builtins, name)
    return {name: value for name, value in values.items() if name not in assigned}


def _assigned_names(funcdef):
    assigned = {a.arg for a in funcdef.args.args + funcdef.args.kwonlyargs
                + funcdef.args.posonlyargs}
    for node in ast.walk(funcdef):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            assigned.add(node.id)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            assigned.update(node.names)
    return assigned


def _resolve(names, node):
    """The value a loaded name or dotted name refers to, from ``names`` (the function's
    globals and closure) and attribute access; LookupError for anything else."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        if node.id not in names:
            raise LookupError(node.id)
        return names[node.id]
    if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
        return getattr(_resolve(names, node.value), node.attr)
    raise LookupError(type(node).__name__)


class _Replacer(ast.NodeTransformer):
    """Names and dotted names that resolve to a key of ``replacements`` become names of
    the new function's closure (``__fastsde_replacement_<i>``)."""

    def __init__(self, names, replacements, call_replacements=None):
        self.names = names
        self.replacements = replacements
        self.call_replacements = call_replacements or {}
        self.used = {}

    def _replace(self, node, replacements=None):
        try:
            value = _resolve(self.names, node)
            replacement = (self.replacements if replacements is None
                           else replacements).get(value)
        except (LookupError, AttributeError, TypeError):
            return None
        if replacement is None:
            return None
        for name, used in self.used.items():
            if used is replacement:
                break
        else:
            name = f"__fastsde_replacement_{len(self.used)}"
            self.used[name] = replacement
        return ast.copy_location(ast.Name(id=name, ctx=ast.Load()), node)

    def visit_Name(self, node):
        return self._replace(node) or node

    def visit_Attribute(self, node):
        return self._replace(node) or self.generic_visit(node)

    def visit_Call(self, node):
        if (len(node.args) == 2 and not node.keywords
                and not any(isinstance(a, ast.Starred) for a in node.args)):
            func = self._replace(node.func, self.call_replacements)
            if func is not None:
                node.func = func
                node.args = [self.visit(a) for a in node.args]
                return node
        return self.generic_visit(node)


#: The closure name of :func:`bits.unified_select` in a rewritten function.
SELECT_NAME = "__fastsde_select"

#: Nodes that may appear in the arms of a conditional expression made a select.
_PURE = (ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.operator,
         ast.unaryop, ast.Compare, ast.cmpop, ast.BoolOp, ast.boolop, ast.IfExp)


class _Selects(ast.NodeTransformer):
    """``a if c else b`` -> ``select_name(c, a, b)`` where the condition and both arms
    are arithmetic on names and numbers."""

    def __init__(self, select_name):
        self.select_name = select_name
        self.changed = False

    @staticmethod
    def _pure(node):
        return all(isinstance(inner, _PURE) or (isinstance(inner, ast.Call)
                                               and isinstance(inner.func, ast.Name)
                                               and inner.func.id == SELECT_NAME)
                   for inner in ast.walk(node))

    def visit_IfExp(self, node):
        node = self.generic_visit(node)  # the inner ones first
        if not isinstance(node, ast.IfExp) or not all(
                self._pure(part) for part in (node.test, node.body, node.orelse)):
            return node
        self.changed = True
        return ast.copy_location(
            ast.Call(func=ast.Name(id=self.select_name, ctx=ast.Load()),
                     args=[node.test, node.body, node.orelse], keywords=[]), node)


#: The closure name of the pow that ``x ** y`` becomes where ``math.pow`` is replaced.
POW_NAME = "__fastsde_pow"


class _Powers(ast.NodeTransformer):
    """``x ** y`` -> ``pow_name(x, y)`` unless y is an integer (an int, or a float with
    an integer value: a literal, possibly negated, or a name that resolves to one), whose
    power Numba computes by products and LLVM simplifies."""

    def __init__(self, names, pow_name):
        self.names = names
        self.pow_name = pow_name
        self.changed = False

    def _integral(self, node):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            node = node.operand
        if isinstance(node, ast.Constant):
            value = node.value
        else:
            try:
                value = _resolve(self.names, node)
            except (LookupError, AttributeError, TypeError):
                return False
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())

    def visit_BinOp(self, node):
        node = self.generic_visit(node)
        if not isinstance(node.op, ast.Pow) or self._integral(node.right):
            return node
        self.changed = True
        return ast.copy_location(
            ast.Call(func=ast.Name(id=self.pow_name, ctx=ast.Load()),
                     args=[node.left, node.right], keywords=[]), node)


class _PythonFloats(ast.NodeTransformer):
    """Python floats (literals, and names or attributes that resolve to one) wrapped in
    a call of ``float_name``."""

    def __init__(self, names, float_name):
        self.names = names
        self.float_name = float_name
        self.changed = False

    def _wrap(self, node):
        self.changed = True
        return ast.copy_location(
            ast.Call(func=ast.Name(id=self.float_name, ctx=ast.Load()), args=[node],
                     keywords=[]), node)

    def _is_float(self, node):
        try:
            return type(_resolve(self.names, node)) is float
        except (LookupError, AttributeError, TypeError):
            return False

    def visit_Constant(self, node):
        return self._wrap(node) if type(node.value) is float else node

    def visit_Name(self, node):
        return self._wrap(node) if self._is_float(node) else node

    def visit_Attribute(self, node):
        return self._wrap(node) if self._is_float(node) else self.generic_visit(node)


def _constant_names(fn, funcdef):
    """{name: value} for the names the function reads as constant integers (closure
    cells and module globals bound to ints, never assigned in the function) and for
    ``range`` where it is the builtin."""
    values = _readable_names(fn, funcdef)
    if "range" not in values and "range" not in _assigned_names(funcdef):
        values["range"] = builtins.range
    return {name: value for name, value in values.items()
            if type(value) is int or value is builtins.range}


class _Unroller(ast.NodeTransformer):
    def __init__(self, constants, max_trip):
        self.constants = constants
        self.max_trip = max_trip
        self.changed = False

    def _int(self, node):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name) and type(self.constants.get(node.id)) is int:
            return self.constants[node.id]
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                and self._int(node.operand) is not None):
            return -self._int(node.operand)
        return None

    def _trip(self, node):
        """The loop's values, or None when it is not a loop this module unrolls."""
        it = node.iter
        if (node.orelse or not isinstance(node.target, ast.Name)
                or not isinstance(it, ast.Call) or it.keywords
                or not isinstance(it.func, ast.Name)
                or self.constants.get(it.func.id) is not builtins.range
                or not 1 <= len(it.args) <= 3):
            return None
        bounds = [self._int(a) for a in it.args]
        if any(b is None for b in bounds) or (len(bounds) == 3 and bounds[2] == 0):
            return None
        values = range(*bounds)
        if len(values) > self.max_trip:
            return None
        for inner in ast.walk(ast.Module(body=node.body, type_ignores=[])):
            if isinstance(inner, (ast.Break, ast.Continue, ast.Return, ast.Yield,
                                  ast.YieldFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                                  ast.Lambda, ast.ClassDef, ast.Global, ast.Nonlocal,
                                  ast.Try, ast.With)):
                return None
            if (isinstance(inner, ast.Name) and inner.id == node.target.id
                    and not isinstance(inner.ctx, ast.Load)):
                return None  # the body assigns the loop variable
        return values

    def visit_For(self, node):
        node = self.generic_visit(node)  # inner loops first
        values = self._trip(node)
        if values is None:
            return node
        self.changed = True
        name = node.target.id
        unrolled = []
        for value in values:
            for statement in node.body:
                unrolled.append(_Substitute(name, value).visit(copy.deepcopy(statement)))
        if len(values):
            # After the loop the variable holds the last value, as in Python.
            unrolled.append(ast.Assign(targets=[ast.Name(id=name, ctx=ast.Store())],
                                       value=ast.Constant(value=values[-1])))
        else:
            unrolled.append(ast.Pass())
        for statement in unrolled:
            ast.copy_location(statement, node)
        return unrolled


class _Substitute(ast.NodeTransformer):
    def __init__(self, name, value):
        self.name = name
        self.value = value

    def visit_Name(self, node):
        if node.id == self.name and isinstance(node.ctx, ast.Load):
            return ast.copy_location(ast.Constant(value=self.value), node)
        return node


def _count_statements(body):
    return sum(1 for statement in body for node in ast.walk(statement)
               if isinstance(node, ast.stmt))
