"""A user's drift evaluated for a block of lanes: its loops outside, the lanes inside.

The CPU kernel calls a model's ``drift(t, x, p, out)`` once per path, in a loop over the
block's 64 lanes that LLVM vectorises when the drift is straight-line code. A loop that
the kernel cannot unroll (its trip count read from ``p.shape``, or more than
:data:`unroll.MAX_TRIP` iterations; not one over the state's components, whose count
the kernel knows: :func:`needs_lane_form`) keeps that lane loop from vectorising: such
a drift runs path by path, at libm's speed. Here such a drift is rewritten, from its
source, into the block form that ``model.lane_block`` gives the kernel
(``mlp.LaneBlockDrift`` has the protocol): the user's loops stay where they are and every
run of statements that depends on the path becomes a loop over the lanes::

    def drift(t, x, p, out):               def drift_lanes(T, X, p, F, S):
        K = p.shape[0] // 3                    t = T[0]; (F cleared)
        den = 0.0                              K = p.shape[0] // 3
        num = 0.0                              for l in range(64):
        for k in range(K):                         S[0 + l] = 0.0; S[64 + l] = 0.0
            d = p[k] - x[0]                    for k in range(K):
            w = exp(-d * d * p[K + k])             for l in range(64):
            den += w                                   d = p[k] - X[0 * 64 + l]
            num += w * p[2 * K + k] * d                w = exp(-d * d * p[K + k])
        out[0] = num / den                             S[0 + l] += w
                                                       S[64 + l] += w * p[2 * K + k] * d
                                               for l in range(64):
                                                   F[0 * 64 + l] = S[64 + l] / S[0 + l]

Each lane computes the operations of the one-path function in their order, so the two
give the same bits. What is uniform (the same for every lane: ``t``, which every lane of a
drift call shares, ``p``, which the kernel uses only where one parameter row serves every
path, the closure, and whatever is computed from them alone) is computed once per block;
a per-path value used in more than one lane loop lives in the scratch ``S``, one row of
lanes per name.

What has a lane form (:func:`why_not` says why a drift has none): a drift whose loops,
once the kernel's unrolling has run, are ``for name in range(...)`` (or over another
uniform iterable) with uniform bounds, no ``else``, ``break`` or ``continue``; whose
``if`` statements either test uniform conditions or, testing per-path ones, hold only
assignments and ifs (such an if runs as it is inside a lane loop, what it assigns kept
in the scratch); which indexes
``x`` and ``out`` with uniform indices and assigns only names and ``out[...]``; and
which returns nothing before its end. A per-path name carried from one lane loop to
another must have the run's float type throughout (the scratch holds that type): an
accumulator started at ``0`` (an int) instead of ``0.0`` is refused when the kernel
types it (:meth:`UserLaneBlock.make` returns None) and the drift runs path by path.
"""

import ast
import hashlib
import inspect
import linecache

#: Bumped when the generated code changes (part of the kernels' cache key).
VERSION = 1

_LANE = "__fs_l"
_T, _X, _P, _F, _S = "__fs_T", "__fs_X", "__fs_P", "__fs_F", "__fs_S"


class NoLaneForm(Exception):
    """The function has no lane form; the message says why."""


def _function_def(fn):
    from . import unroll
    funcdef = unroll._function_def(fn)
    if funcdef is None:
        raise NoLaneForm("its source is not one plain function")
    return funcdef


def _is_dimension_bound(node, arrays):
    """An int literal, or the state's dimension (``len(x)``, ``x.shape[0]``, and
    ``out``'s)."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return True
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "len" and len(node.args) == 1
            and isinstance(node.args[0], ast.Name) and node.args[0].id in arrays):
        return True
    return (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "shape" and isinstance(node.value.value, ast.Name)
            and node.value.value.id in arrays)


def needs_lane_form(fn):
    """Whether ``fn`` keeps, once the kernel has unrolled its loops of constant trip
    count (``unroll.MAX_TRIP``), a loop other than one over the state's components
    (``range(len(x))``, ``range(x.shape[0])``: the dimension is a constant of the
    kernel, and LLVM unrolls those itself; OU's drift is one). Only such functions keep
    the lane loop around the step from vectorising, and only they get a lane form."""
    from . import unroll
    try:
        funcdef = unroll._function_def(fn)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return False
    if funcdef is None:
        return False
    funcdef = unroll.unrolled_def(fn, funcdef)
    args = [a.arg for a in funcdef.args.args]
    arrays = {args[1], args[3]} if len(args) == 4 else set()
    for node in ast.walk(funcdef):
        if isinstance(node, (ast.While, ast.AsyncFor)):
            return True
        if isinstance(node, ast.For):
            it = node.iter
            if not (isinstance(it, ast.Call) and isinstance(it.func, ast.Name)
                    and it.func.id == "range" and not it.keywords
                    and all(_is_dimension_bound(a, arrays) for a in it.args)):
                return True
    return False


class _Names(ast.NodeVisitor):
    """Names loaded and stored in a subtree."""

    def __init__(self):
        self.loaded, self.stored = set(), set()

    def visit_Name(self, node):
        (self.loaded if isinstance(node.ctx, ast.Load) else self.stored).add(node.id)


def _names(nodes):
    v = _Names()
    for node in nodes:
        v.visit(node)
    return v


class _Analysis:
    """Which names are per path (varying) and whether the body has a lane form."""

    def __init__(self, funcdef, per_path_params=False):
        args = funcdef.args
        if (args.posonlyargs or args.vararg or args.kwonlyargs or args.kwarg
                or args.defaults or len(args.args) != 4):
            raise NoLaneForm("it does not take exactly (t, x, p, out)")
        self.t, self.x, self.p, self.out = (a.arg for a in args.args)
        # With a row of parameters per path, p is per path too: indexed, it is the
        # lane's row.
        self.arrays = {self.x, self.out} | ({self.p} if per_path_params else set())
        body = list(funcdef.body)
        if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            body = body[1:]  # the docstring
        if body and isinstance(body[-1], ast.Return):
            if body[-1].value is not None and not (
                    isinstance(body[-1].value, ast.Constant) and body[-1].value.value is None):
                raise NoLaneForm("it returns a value")
            body = body[:-1]
        self.body = body
        stored = _names(body).stored
        taken = stored & {self.t, self.x, self.p, self.out}
        if taken:
            raise NoLaneForm(f"it assigns its argument {sorted(taken)[0]!r}")
        for node in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(node, ast.Name) and node.id.startswith("__fs_"):
                raise NoLaneForm(f"it uses the reserved name {node.id!r}")
            if isinstance(node, (ast.Return, ast.While, ast.Break, ast.Continue, ast.Try,
                                 ast.With, ast.FunctionDef, ast.Lambda, ast.ClassDef,
                                 ast.Global, ast.Nonlocal, ast.Yield, ast.YieldFrom,
                                 ast.ListComp, ast.SetComp, ast.DictComp,
                                 ast.GeneratorExp, ast.Delete, ast.AsyncFor,
                                 ast.NamedExpr, ast.Starred)):
                raise NoLaneForm(f"it holds a {type(node).__name__} statement or "
                                 "expression (line %d)" % getattr(node, "lineno", 0))
        # Fixed point: a name is varying when any assignment to it is.
        self.varying = set()
        while True:
            before = len(self.varying)
            self._visit_assignments(body)
            if len(self.varying) == before:
                break
        for node in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(node, ast.For) and node.target.id in self.varying:
                raise NoLaneForm(f"the loop name {node.target.id!r} is also a per-path "
                                 f"value (line {node.lineno})")

    # -- classification --
    def is_varying(self, expr):
        for node in ast.walk(expr):
            if isinstance(node, ast.Name) and (node.id in self.varying
                                               or node.id in self.arrays):
                if node.id in self.arrays and self._is_size(expr, node):
                    continue
                return True
        return False

    def _is_size(self, root, name_node):
        """``x.shape[...]`` / ``len(x)``: the dimension, uniform."""
        for node in ast.walk(root):
            if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "shape" and node.value.value is name_node):
                return True
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "len" and len(node.args) == 1
                    and node.args[0] is name_node):
                return True
        return False

    def _per_path_if(self, stmt):
        """An if statement on a per-path condition runs as it is inside a lane loop:
        assignments (to names and ``out[...]``) and nested ifs only; what it assigns is
        per path."""
        for node in ast.walk(ast.Module(body=stmt.body + stmt.orelse, type_ignores=[])):
            if isinstance(node, ast.stmt) and not isinstance(
                    node, (ast.Assign, ast.AugAssign, ast.If, ast.Pass)):
                raise NoLaneForm(f"an if statement on a per-path condition (line "
                                 f"{stmt.lineno}) holds a {type(node).__name__} "
                                 "statement")
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                self.varying.update(self._assigned_names(node))

    def _assigned_names(self, stmt):
        """The names an assignment binds; refuses any target but a name or
        ``out[...]``."""
        names = []
        for target in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
            if isinstance(target, ast.Name):
                names.append(target.id)
            elif not (isinstance(target, ast.Subscript)
                      and isinstance(target.value, ast.Name)
                      and target.value.id == self.out):
                raise NoLaneForm("it assigns something other than a name or "
                                 f"{self.out}[...] (line {stmt.lineno})")
        return names

    def _visit_assignments(self, body):
        for stmt in body:
            if isinstance(stmt, (ast.Assign, ast.AugAssign)):
                names = self._assigned_names(stmt)
                if self.is_varying(stmt.value) or (
                        isinstance(stmt, ast.AugAssign) and self.is_varying(stmt.target)):
                    self.varying.update(names)
            elif isinstance(stmt, ast.For):
                if stmt.orelse:
                    raise NoLaneForm(f"a loop has an else clause (line {stmt.lineno})")
                if not isinstance(stmt.target, ast.Name):
                    raise NoLaneForm(f"a loop's target is not a name (line {stmt.lineno})")
                if self.is_varying(stmt.iter):
                    raise NoLaneForm(f"a loop's range depends on the path (line "
                                     f"{stmt.lineno})")
                self._visit_assignments(stmt.body)
            elif isinstance(stmt, ast.If):
                if self.is_varying(stmt.test):
                    self._per_path_if(stmt)
                    continue
                self._visit_assignments(stmt.body)
                self._visit_assignments(stmt.orelse)
            elif isinstance(stmt, ast.Pass):
                pass
            elif isinstance(stmt, ast.Expr):
                if not isinstance(stmt.value, ast.Constant):
                    raise NoLaneForm(f"an expression statement (line {stmt.lineno})")
            else:
                raise NoLaneForm(f"a {type(stmt).__name__} statement (line {stmt.lineno})")


def _check_array_uses(analysis):
    """x and out appear only indexed by uniform expressions, or as x.shape / len(x)."""
    for node in ast.walk(ast.Module(body=analysis.body, type_ignores=[])):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Name) and child.id in analysis.arrays:
                if isinstance(node, ast.Subscript) and node.value is child:
                    if isinstance(node.slice, ast.Slice) or analysis.is_varying(node.slice):
                        raise NoLaneForm(f"{child.id} is indexed by a slice or a per-path "
                                         f"index (line {node.lineno})")
                elif isinstance(node, ast.Attribute) and node.attr == "shape":
                    pass
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                      and node.func.id == "len"):
                    pass
                else:
                    raise NoLaneForm(f"{child.id} is used whole (line {child.lineno}): "
                                     "only its entries can be")


class _Item:
    """A lane loop (``stmts`` per-path statements, ``pre`` uniform ones hoisted before
    it), a uniform statement, or a uniform loop / if around items."""

    def __init__(self, kind, node=None):
        self.kind, self.node = kind, node
        self.stmts, self.pre, self.body, self.orelse = [], [], [], []


def _plan(analysis, body):
    items = []
    run = None
    for stmt in body:
        if isinstance(stmt, ast.Pass) or isinstance(stmt, ast.Expr):
            continue
        if isinstance(stmt, (ast.Assign, ast.AugAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            varying = any(not isinstance(t, ast.Name) or t.id in analysis.varying
                          for t in targets)
            if varying:
                if run is None:
                    run = _Item("lanes")
                    items.append(run)
                run.stmts.append(stmt)
                continue
            # Uniform: hoisted before the open lane loop unless that loop reads a name
            # it assigns (it would then see the new value too early).
            assigned = {t.id for t in targets}
            if run is not None and not (assigned & _names(run.stmts).loaded):
                run.pre.append(stmt)
                continue
            run = None
            items.append(_Item("uniform", stmt))
            continue
        if isinstance(stmt, ast.If) and analysis.is_varying(stmt.test):
            # Per path: the statement as it is, inside the lane loop.
            if run is None:
                run = _Item("lanes")
                items.append(run)
            run.stmts.append(stmt)
            continue
        run = None
        item = _Item("for" if isinstance(stmt, ast.For) else "if", stmt)
        item.body = _plan(analysis, stmt.body)
        if isinstance(stmt, ast.If):
            item.orelse = _plan(analysis, stmt.orelse)
        items.append(item)
    return items


def _lane_runs(items):
    for item in items:
        if item.kind == "lanes":
            yield item
        else:
            yield from _lane_runs(item.body)
            yield from _lane_runs(item.orelse)


def _scratch_names(analysis, items):
    """The varying names that must live in the scratch: those seen in more than one lane
    loop, or read in their loop before that loop assigns them."""
    seen = {}
    scratch = set()
    for run in _lane_runs(items):
        written = set()
        for stmt in run.stmts:
            if isinstance(stmt, ast.If):
                # A per-path if: what it reads is read here, and what it assigns is
                # assigned on some lanes only, so kept in the scratch.
                names = _names([stmt])
                scratch.update((names.loaded & analysis.varying) - written)
                scratch.update(names.stored & analysis.varying)
                continue
            value = stmt.value
            read = _names([value]).loaded
            if isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
                read = read | {stmt.target.id}
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                if isinstance(target, ast.Subscript):
                    read = read | _names([target]).loaded
            for name in (read & analysis.varying) - written:
                scratch.add(name)
            for target in targets:
                if isinstance(target, ast.Name):
                    written.add(target.id)
        for name in _names(run.stmts).loaded | _names(run.stmts).stored:
            if name in analysis.varying:
                seen.setdefault(name, set()).add(id(run))
    scratch |= {name for name, runs in seen.items() if len(runs) > 1}
    return sorted(scratch)


class _Lanes(ast.NodeTransformer):
    """A per-path statement rewritten for lane ``__fs_l``."""

    def __init__(self, analysis, slots, lanes, sizes):
        self.a, self.slots, self.lanes, self.sizes = analysis, slots, lanes, sizes

    def _lane_index(self, base):
        return ast.BinOp(left=base, op=ast.Add(), right=ast.Name(id=_LANE, ctx=ast.Load()))

    def _component(self, index, size):
        if (isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub)
                and isinstance(index.operand, ast.Constant)
                and type(index.operand.value) is int):
            index = ast.Constant(value=size - index.operand.value)
        elif not (isinstance(index, ast.Constant) and type(index.value) is int):
            # A negative index counts from the end, as on the one-path array.
            index = ast.IfExp(test=ast.Compare(left=index, ops=[ast.Lt()],
                                               comparators=[ast.Constant(value=0)]),
                              body=ast.BinOp(left=index, op=ast.Add(),
                                             right=ast.Constant(value=size)),
                              orelse=index)
        return ast.BinOp(left=index, op=ast.Mult(), right=ast.Constant(value=self.lanes))

    def visit_Subscript(self, node):
        if isinstance(node.value, ast.Name) and node.value.id in self.a.arrays:
            name = node.value.id
            array = {self.a.x: _X, self.a.out: _F, self.a.p: _P}[name]
            index = self.sizes.visit(node.slice)
            return ast.Subscript(value=ast.Name(id=array, ctx=ast.Load()),
                                 slice=self._lane_index(
                                     self._component(index, self.sizes.size[name])),
                                 ctx=node.ctx)
        return self.generic_visit(node)

    def visit_Name(self, node):
        if node.id in self.slots:
            return ast.Subscript(
                value=ast.Name(id=_S, ctx=ast.Load()),
                slice=self._lane_index(ast.Constant(value=self.slots[node.id] * self.lanes)),
                ctx=node.ctx)
        return node

    def visit_Attribute(self, node):
        sized = self.sizes.visit(node)
        return self.generic_visit(node) if sized is node else sized

    def visit_Call(self, node):
        sized = self.sizes.visit(node)
        return self.generic_visit(node) if sized is node else sized


class _UniformSizes(ast.NodeTransformer):
    """``x.shape[0]``, ``len(x)`` (and out's, and p's where p is per path) as the
    array's length: ``size`` {name: length}."""

    def __init__(self, size):
        self.size = size

    def visit_Subscript(self, node):
        v = node.value
        if (isinstance(v, ast.Attribute) and v.attr == "shape"
                and isinstance(v.value, ast.Name) and v.value.id in self.size):
            return ast.Constant(value=self.size[v.value.id])
        return self.generic_visit(node)

    def visit_Attribute(self, node):
        if (node.attr == "shape" and isinstance(node.value, ast.Name)
                and node.value.id in self.size):
            return ast.Tuple(elts=[ast.Constant(value=self.size[node.value.id])],
                             ctx=ast.Load())
        return self.generic_visit(node)

    def visit_Call(self, node):
        if (isinstance(node.func, ast.Name) and node.func.id == "len"
                and len(node.args) == 1 and isinstance(node.args[0], ast.Name)
                and node.args[0].id in self.size):
            return ast.Constant(value=self.size[node.args[0].id])
        return self.generic_visit(node)


def _lane_loop(body):
    return ast.For(target=ast.Name(id=_LANE, ctx=ast.Store()),
                   iter=ast.Call(func=ast.Name(id="range", ctx=ast.Load()),
                                 args=[ast.Name(id="__fs_lanes", ctx=ast.Load())],
                                 keywords=[]),
                   body=body, orelse=[])


def _emit(items, analysis, lanes_rw, sizes):
    out = []
    for item in items:
        if item.kind == "lanes":
            out.extend(sizes.visit(s) for s in item.pre)
            out.append(_lane_loop([lanes_rw.visit(s) for s in item.stmts]))
        elif item.kind == "uniform":
            out.append(sizes.visit(item.node))
        elif item.kind == "for":
            node = item.node
            body = _emit(item.body, analysis, lanes_rw, sizes) or [ast.Pass()]
            out.append(ast.For(target=node.target, iter=sizes.visit(node.iter), body=body,
                               orelse=[]))
        else:
            node = item.node
            out.append(ast.If(test=sizes.visit(node.test),
                              body=_emit(item.body, analysis, lanes_rw, sizes) or [ast.Pass()],
                              orelse=_emit(item.orelse, analysis, lanes_rw, sizes)))
    return out


class LaneForm:
    """A drift's lane form: ``source`` (the block function's module text), ``scratch``
    (the per-path names kept in the scratch, in slot order)."""

    def __init__(self, fn, funcdef, analysis, items, scratch, dim, lanes, n_params=None):
        self.fn, self.scratch, self.dim, self.lanes = fn, scratch, dim, lanes
        slots = {name: i for i, name in enumerate(scratch)}
        size = {analysis.x: dim, analysis.out: dim}
        if n_params is not None:
            size[analysis.p] = n_params
        sizes = _UniformSizes(size)
        lanes_rw = _Lanes(analysis, slots, lanes, sizes)
        clear = ast.parse(f"for __fs_i in range({dim * lanes}):\n    {_F}[__fs_i] = 0.0\n"
                          ).body
        head = ast.parse(f"{analysis.t} = {_T}[0]").body
        body = head + clear + _emit(items, analysis, lanes_rw, sizes)
        name = f"{funcdef.name}_lanes"
        block = ast.FunctionDef(
            name=name,
            args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=a) for a in
                                                     (_T, _X, _P if n_params is not None
                                                      else analysis.p, _F, _S)],
                               vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None,
                               defaults=[]),
            body=body, decorator_list=[], returns=None)
        free = list(fn.__code__.co_freevars) + ["__fs_lanes"]
        factory = ast.FunctionDef(
            name="__fs_lane_factory",
            args=ast.arguments(posonlyargs=[], args=[ast.arg(arg=a) for a in free],
                               vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None,
                               defaults=[]),
            body=[block, ast.Return(value=ast.Name(id=name, ctx=ast.Load()))],
            decorator_list=[], returns=None)
        for node in (block, factory):
            if "type_params" in ast.FunctionDef._fields:  # Python >= 3.12
                node.type_params = []
        module = ast.fix_missing_locations(ast.Module(body=[factory], type_ignores=[]))
        self.source = ast.unparse(module) + "\n"
        self.name = name

    def function(self):
        """The block function ``block(T, X, p, F, S)``, a plain function with the
        drift's globals and closure values, whose source ``inspect`` can read (the
        kernel's rewrites read it)."""
        digest = hashlib.sha256(self.source.encode()).hexdigest()[:16]
        filename = f"<fastsde lane form {self.fn.__qualname__} {digest}>"
        lines = self.source.splitlines(True)
        linecache.cache[filename] = (len(self.source), None, lines, filename)
        namespace = {}
        exec(compile(self.source, filename, "exec"), self.fn.__globals__, namespace)
        cells = [cell.cell_contents for cell in (self.fn.__closure__ or ())]
        block = namespace["__fs_lane_factory"](*cells, self.lanes)
        block.__module__ = self.fn.__module__
        block.__fastsde_lane_form__ = True
        return block


def lane_form(fn, dim, lanes=64, n_params=None):
    """The :class:`LaneForm` of ``fn`` for ``dim`` components and ``lanes`` lanes; with
    ``n_params``, for a row of that many parameters per path (the block's ``p`` is then
    the lanes' rows, component-major, and what the function computes from ``p`` is per
    path).

    Raises
    ------
    NoLaneForm
        With the reason, when the function has none (module docstring).
    """
    from . import unroll
    if getattr(fn, "__code__", None) is None:
        raise NoLaneForm("it is not a Python function")
    try:
        funcdef = _function_def(fn)
    except (OSError, TypeError, SyntaxError, IndentationError) as exc:
        raise NoLaneForm(f"its source cannot be read ({exc})") from None
    # What the kernel unrolls is unrolled here too: those loops are straight-line code.
    funcdef = unroll.unrolled_def(fn, funcdef)
    analysis = _Analysis(funcdef, per_path_params=n_params is not None)
    _check_array_uses(analysis)
    items = _plan(analysis, analysis.body)
    if not any(True for _ in _lane_runs(items)):
        raise NoLaneForm("nothing in it depends on the path")
    scratch = _scratch_names(analysis, items)
    return LaneForm(fn, funcdef, analysis, items, scratch, int(dim), int(lanes),
                    None if n_params is None else int(n_params))


def has_lane_form(fn):
    """Whether ``fn`` needs a lane form (:func:`needs_lane_form`) and has one."""
    return needs_lane_form(fn) and why_not(fn) is None


def why_not(fn):
    """None when ``fn`` has a lane form (for some dimension), else the reason."""
    try:
        lane_form(fn, 1)
    except NoLaneForm as exc:
        return str(exc)
    return None


class UserLaneBlock:
    """``model.lane_block`` for a user's drift with a lane form (protocol:
    ``mlp.LaneBlockDrift``). Set by ``fs.ODE`` and ``fs.SDE`` on models whose drift keeps
    a loop and has a lane form; ``model.lane_block = None`` runs it path by path."""

    def __init__(self, drift, dim):
        self.drift, self.dim = drift, int(dim)
        digest = hashlib.sha256(repr((VERSION, self.dim)).encode())
        for fn in (_Analysis, _plan, _scratch_names, _Lanes, _UniformSizes, _emit,
                   LaneForm):
            digest.update(inspect.getsource(fn).encode())
        self.key = digest.hexdigest()

    def make(self, lanes, jit, prepare, per_path_params=None):
        """(the block function compiled by ``prepare``, scratch elements), or None when
        a per-path name carried between lane loops is not of the run's float type in
        the drift as the kernel types it, or, with a row of ``per_path_params``
        parameters per path, when the drift has no lane form with ``p`` per path (a
        loop's count read from p's values); the drift then runs path by path."""
        try:
            form = lane_form(self.drift, self.dim, lanes, per_path_params)
        except NoLaneForm:
            return None
        if form.scratch and not _scratch_typed_as_run(self.drift, form.scratch, prepare,
                                                      jit):
            return None
        return prepare(form.function()), max(1, len(form.scratch) * lanes)


def _scratch_typed_as_run(drift, names, prepare, jit):
    """Whether every version of each name in ``names`` is typed as the run's float type
    in the drift as the kernel compiles it (the scratch holds that type)."""
    from numba import types
    import numpy as np
    dtype = getattr(prepare, "dtype", None)
    if dtype is None:
        return False
    scalar = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    array = scalar[::1]
    compiled = prepare(drift)
    sig = (scalar, array, array, array)
    compiled.compile(sig)
    typemap = compiled.overloads[sig].type_annotation.typemap
    for name in names:
        seen = [ty for key, ty in typemap.items() if key.split(".")[0] == name]
        if not seen or any(ty != scalar for ty in seen):
            return False
    return True


def user_lane_block(model):
    """The :class:`UserLaneBlock` for ``model``'s drift, or None: math="libm" (libm's
    calls do not vectorise), no loop left once unrolled but loops over the state's
    components (:func:`needs_lane_form`), or no lane form."""
    drift = model.drift
    if model.math != "fastsde" or not has_lane_form(drift):
        return None
    return UserLaneBlock(drift, model.dim)
