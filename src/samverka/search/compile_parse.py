"""A small FHIRPath parser for SearchParameter expressions (https://hl7.org/fhir/R4/searchparameter.html).

Parses the subset of FHIRPath (https://hl7.org/fhirpath/) that search parameter expressions use into
plain tuples; `compile_plan` turns them into dictionary walkers. Anything outside the subset raises
`Unsupported`, and the caller falls back to fhirpathpy for that expression.
"""

from __future__ import annotations

import re
from typing import Any

Ast = tuple[Any, ...]


class Unsupported(ValueError):
    """The expression uses FHIRPath the compiler does not handle."""


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>!=|!~|<=|>=|[.|()\[\],=<>~+\-*/&])"
    r"|(?P<var>%[A-Za-z_][A-Za-z0-9_]*)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<bt>`[^`]*`))"
)
_KEYWORDS = {"and", "or", "xor", "implies", "is", "as", "div", "mod", "in", "contains"}


def tokenize(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise Unsupported(f"cannot tokenize at {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        val = m.group(kind)
        if kind == "bt":
            kind, val = "id", val[1:-1]
        elif kind == "id" and val in _KEYWORDS:
            kind = "kw"
        elif kind == "str":
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        out.append((kind, val))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.t = tokens
        self.i = 0

    def peek(self, *vals: str) -> bool:
        return self.i < len(self.t) and self.t[self.i][1] in vals and self.t[self.i][0] in ("op", "kw")

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.t):
            raise Unsupported("unexpected end of expression")
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expect(self, val: str) -> None:
        if self.take()[1] != val:
            raise Unsupported(f"expected {val!r}")

    def parse(self) -> Ast:
        node = self.or_()
        if self.i != len(self.t):
            raise Unsupported(f"trailing input at token {self.t[self.i]!r}")
        return node

    def or_(self) -> Ast:
        node = self.and_()
        while self.peek("or"):
            self.take()
            node = ("op", "or", node, self.and_())
        return node

    def and_(self) -> Ast:
        node = self.eq()
        while self.peek("and"):
            self.take()
            node = ("op", "and", node, self.eq())
        return node

    def eq(self) -> Ast:
        node = self.union()
        if self.peek("=", "!="):
            op = self.take()[1]
            node = ("op", op, node, self.union())
        if self.peek("<", ">", "<=", ">=", "~", "!~", "+", "-", "*", "/", "&", "xor", "implies", "in"):
            raise Unsupported(f"operator {self.t[self.i][1]!r}")
        return node

    def union(self) -> Ast:
        node = self.typeop()
        while self.peek("|"):
            self.take()
            node = ("union", node, self.typeop())
        return node

    def typeop(self) -> Ast:
        node = self.postfix()
        while self.peek("is", "as"):
            op = self.take()[1]
            node = ("typeop", op, node, self.typename())
        return node

    def typename(self) -> str:
        kind, name = self.take()
        if kind != "id":
            raise Unsupported("expected a type name")
        while self.peek("."):  # FHIR.Patient, System.String
            self.take()
            name = self.take()[1]
        return name

    def postfix(self) -> Ast:
        node = self.primary()
        while True:
            if self.peek("."):
                self.take()
                kind, name = self.take()
                if kind not in ("id", "kw"):
                    raise Unsupported("expected a name after '.'")
                node = ("fn", node, name, self.args(name)) if self.peek("(") else ("member", node, name)
            elif self.peek("["):
                self.take()
                idx = self.or_()
                self.expect("]")
                node = ("index", node, idx)
            else:
                return node

    def args(self, name: str) -> list[Ast]:
        self.expect("(")
        out: list[Ast] = []
        if self.peek(")"):
            self.take()
            return out
        while True:
            if name in ("as", "is", "ofType"):
                out.append(("type", self.typename()))
            else:
                out.append(self.or_())
            if self.peek(","):
                self.take()
                continue
            self.expect(")")
            return out

    def primary(self) -> Ast:
        kind, val = self.take()
        if kind == "op" and val == "(":
            node = self.or_()
            self.expect(")")
            return node
        if kind == "str":
            return ("lit", val)
        if kind == "num":
            return ("lit", float(val) if "." in val else int(val))
        if kind == "var":
            return ("var", val[1:])
        if kind == "id":
            if val in ("true", "false"):
                return ("lit", val == "true")
            if self.peek("("):
                return ("fn", None, val, self.args(val))
            return ("ident", val)
        raise Unsupported(f"unexpected token {val!r}")


def parse(text: str) -> Ast:
    return _Parser(tokenize(text)).parse()


def split_union(ast: Ast) -> list[Ast]:
    """The top-level `|` operands of an expression, in order."""
    if ast[0] == "union":
        return split_union(ast[1]) + split_union(ast[2])
    return [ast]


def root_name(ast: Ast) -> str | None:
    """The leading identifier of a path (`Observation` in `(Observation.value as Quantity)`)."""
    while ast[0] in ("member", "fn", "index", "typeop"):
        nxt = ast[1] if ast[0] != "typeop" else ast[2]
        if nxt is None:
            return None
        ast = nxt
    return ast[1] if ast[0] == "ident" else None
