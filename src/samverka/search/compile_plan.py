"""Compile SearchParameter FHIRPath into dictionary walkers (https://hl7.org/fhir/R4/searchparameter.html).

A compiled expression is a list of `Branch`es: a sequence of steps (child key, filter, index, back to
the root) ending in a statically known FHIR type. Choice elements fork one branch per allowed type
(`Observation.value` → `valueQuantity`, `valueCodeableConcept`, ...), so a cast such as
`.as(Quantity)` is a compile-time branch selection and costs nothing per resource.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from samverka.search.compile_parse import Ast, Unsupported
from samverka.search.compile_types import (
    SYSTEM_TYPE_ALIASES,
    TypeCtx,
    children,
    is_known_type,
    is_subtype,
    root_ctx,
)
from samverka.search.normalize import reference_type

Pred = Callable[[Any], bool]
# step kinds
KEY, FILTER, INDEX, ROOT = 0, 1, 2, 3
Step = tuple[int, Any]


@dataclass(frozen=True, slots=True)
class Branch:
    steps: tuple[Step, ...]
    ctx: TypeCtx


def _type_name(name: str) -> str:
    return SYSTEM_TYPE_ALIASES.get(name, name)


def compile_branches(ast: Ast, start: list[Branch], root: TypeCtx) -> list[Branch]:
    """Branches for `ast`, evaluated from each of the `start` branches; `root` is the resource context."""
    kind = ast[0]
    if kind == "ident":
        name = ast[1]
        if name[0].isupper() and is_known_type(name):
            # a type name at the head of a path: selects the resource itself when the types agree
            return [b for b in start if not b.steps and is_subtype(b.ctx.type, name)]
        return _member(start, name)
    if kind == "member":
        return _member(compile_branches(ast[1], start, root), ast[2])
    if kind == "union":
        return compile_branches(ast[1], start, root) + compile_branches(ast[2], start, root)
    if kind == "typeop":
        if ast[1] != "as":
            raise Unsupported("'is' outside a where()")
        return _cast(compile_branches(ast[2], start, root), _type_name(ast[3]))
    if kind == "var":
        if ast[1] not in ("resource", "rootResource"):
            raise Unsupported(f"variable %{ast[1]}")
        return [Branch(((ROOT, None),), root)]
    if kind == "index":
        idx = ast[2]
        if idx[0] != "lit" or type(idx[1]) is not int:
            raise Unsupported("non-literal indexer")
        return [Branch((*b.steps, (INDEX, idx[1])), b.ctx) for b in compile_branches(ast[1], start, root)]
    if kind == "fn":
        base = start if ast[1] is None else compile_branches(ast[1], start, root)
        return _function(base, ast[2], ast[3], root)
    raise Unsupported(f"{kind} in a value position")


def _member(start: list[Branch], name: str) -> list[Branch]:
    out: list[Branch] = []
    for b in start:
        kids = children(b.ctx, name)
        if not kids:
            if b.ctx.type in ("Resource", "DomainResource"):
                raise Unsupported(f"path into an untyped Resource: .{name}")
            continue  # element does not exist on this type: the path yields nothing
        for k in kids:
            out.append(Branch((*b.steps, (KEY, k.key)), k.ctx))
    return out


def _cast(branches: list[Branch], type_name: str) -> list[Branch]:
    return [b for b in branches if b.ctx.type == type_name]


def _function(base: list[Branch], name: str, args: list[Ast], root: TypeCtx) -> list[Branch]:
    if name in ("as", "ofType"):
        if len(args) != 1 or args[0][0] != "type":
            raise Unsupported(f"{name}() needs a type")
        return _cast(base, _type_name(args[0][1]))
    if name == "where":
        if len(args) != 1:
            raise Unsupported("where() needs one argument")
        return [Branch((*b.steps, (FILTER, compile_pred(args[0], b.ctx, root))), b.ctx) for b in base]
    if name == "extension":
        if len(args) != 1 or args[0][0] != "lit" or not isinstance(args[0][1], str):
            raise Unsupported("extension() needs a literal url")
        url = args[0][1]
        return [
            Branch((*b.steps, (FILTER, lambda n, u=url: type(n) is dict and n.get("url") == u)), b.ctx)
            for b in _member(base, "extension")
        ]
    if name == "first":
        return [Branch((*b.steps, (INDEX, 0)), b.ctx) for b in base]
    raise Unsupported(f"function {name}()")


def compile_pred(ast: Ast, ctx: TypeCtx, root: TypeCtx) -> Pred:
    """A predicate over one node for `where(...)`."""
    kind = ast[0]
    if kind == "typeop" and ast[1] == "is" and _is_resolve(ast[2]):
        return _ref_is(_type_name(ast[3]))
    if kind == "fn" and ast[2] == "is" and _is_resolve(ast[1]) and ast[3] and ast[3][0][0] == "type":
        return _ref_is(_type_name(ast[3][0][1]))
    if kind == "op" and ast[1] in ("and", "or"):
        left, right = compile_pred(ast[2], ctx, root), compile_pred(ast[3], ctx, root)
        if ast[1] == "and":
            return lambda n: left(n) and right(n)
        return lambda n: left(n) or right(n)
    if kind == "op" and ast[1] in ("=", "!=") and ast[3][0] == "lit":
        run = runner(compile_branches(ast[2], [Branch((), ctx)], root))
        lit = ast[3][1]
        if ast[1] == "=":
            return lambda n: any(v == lit for v in run(n))
        return lambda n: (vals := run(n)) != [] and all(v != lit for v in vals)
    if kind == "fn" and ast[2] == "exists" and not ast[3] and ast[1] is not None:
        run = runner(compile_branches(ast[1], [Branch((), ctx)], root))
        return lambda n: bool(run(n))
    raise Unsupported("where() condition")


def _is_resolve(ast: Ast) -> bool:
    return ast[0] == "fn" and ast[1] is None and ast[2] == "resolve" and not ast[3]


def _ref_is(type_name: str) -> Pred:
    if not is_known_type(type_name):
        raise Unsupported(f"unknown type {type_name}")
    return lambda n: reference_type(n) == type_name


def compile_bool(ast: Ast, root: TypeCtx) -> Callable[[Any], bool | None]:
    """A whole expression that yields one boolean (`Patient.deceased.exists() and ...`); None = empty."""
    kind = ast[0]
    start = [Branch((), root)]
    if kind == "op" and ast[1] in ("and", "or"):
        left, right = compile_bool(ast[2], root), compile_bool(ast[3], root)
        if ast[1] == "and":
            def _and(r: Any) -> bool | None:
                a, b = left(r), right(r)
                if a is False or b is False:
                    return False
                return None if a is None or b is None else True
            return _and

        def _or(r: Any) -> bool | None:
            a, b = left(r), right(r)
            if a is True or b is True:
                return True
            return None if a is None or b is None else False
        return _or
    if kind == "fn" and ast[2] == "exists" and not ast[3] and ast[1] is not None:
        run = runner(compile_branches(ast[1], start, root))
        return lambda r: bool(run(r))
    if kind == "op" and ast[1] in ("=", "!=") and ast[3][0] == "lit":
        run = runner(compile_branches(ast[2], start, root))
        lit, eq = ast[3][1], ast[1] == "="

        def _cmp(r: Any) -> bool | None:
            vals = run(r)
            if len(vals) != 1:
                return None
            return (vals[0] == lit and type(vals[0]) is type(lit)) is eq
        return _cmp
    raise Unsupported("boolean expression")


def is_boolean_expr(ast: Ast) -> bool:
    return (ast[0] == "op" and ast[1] in ("and", "or", "=", "!=")) or (ast[0] == "fn" and ast[2] == "exists")


def steps_runner(steps: tuple[Step, ...]) -> Callable[[list[Any], Any], list[Any]]:
    """Run `steps` from the nodes `cur` (with `root` the resource, for `%resource`)."""
    ops = tuple(steps)

    def run(cur: list[Any], root: Any) -> list[Any]:
        for kind, arg in ops:
            if kind == KEY:
                nxt: list[Any] = []
                for n in cur:
                    if type(n) is dict:
                        v = n.get(arg)
                        if v is None:
                            continue
                        if type(v) is list:
                            nxt.extend(x for x in v if x is not None)
                        else:
                            nxt.append(v)
                if not nxt:
                    return nxt
                cur = nxt
            elif kind == FILTER:
                cur = [n for n in cur if arg(n)]
            elif kind == INDEX:
                cur = cur[arg:arg + 1]
            else:
                cur = [root]
        return cur

    return run


def runner(branches: list[Branch]) -> Callable[[Any], list[Any]]:
    """All values of `branches` for one start node (in branch order, duplicates kept)."""
    runs = [steps_runner(b.steps) for b in branches]

    def run(node: Any) -> list[Any]:
        out: list[Any] = []
        for r in runs:
            out.extend(r([node], node))
        return out

    return run


def compile_expression(ast: Ast, resource_type: str) -> list[Branch]:
    root = root_ctx(resource_type)
    return compile_branches(ast, [Branch((), root)], root)
