"""FHIRPath evaluation over FHIR R4 JSON, a typed facade over fhirpathpy (https://hl7.org/fhirpath/N1/).

`compile(expression)` parses once (cached) and returns a callable `fn(resource, env=None)`; `evaluate`
is the one-shot form. `env` holds the `%name` variables. `resolve()` is added on top of fhirpathpy:
a Reference resolves to a contained resource (`#id`), to what the optional resolver hook returns, or
otherwise to a stub `{"resourceType": Type, "id": id}` taken from `Type/id` or an absolute URL ending
in `Type/id`, so that `where(resolve() is Patient)` works without a store.

Results are plain JSON values (dicts, str, bool, int) plus fhirpathpy's own classes for computed
values: `decimal.Decimal`, `FP_DateTime`/`FP_Time` (str() gives the FHIRPath literal without `@`)
and `FP_Quantity`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Protocol

import fhirpathpy
from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from antlr4.tree.Tree import ParseTreeWalker
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser.ASTPathListener import ASTPathListener
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from samverka.fhir import fhirpath_extensions, fhirpath_fixes

fhirpath_fixes.install()

Resolver = Callable[[str], "dict[str, Any] | None"]
"""Looks a reference string up (as written in Reference.reference) and returns the resource or None."""

_log = logging.getLogger(__name__)
R4_MODEL: dict[str, Any] = models["r4"]
_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


class FHIRPathError(ValueError):
    """An expression that does not parse or cannot be evaluated."""


class FHIRPathSyntaxError(FHIRPathError):
    """The expression does not parse."""


class CompiledExpression(Protocol):
    """A parsed expression, ready to run against resources."""

    def __call__(
        self, resource: Any, env: Mapping[str, Any] | None = None, *, resolver: Resolver | None = None
    ) -> list[Any]: ...


class _RaisingListener(ErrorListener):
    def syntaxError(self, recognizer: Any, offending: Any, line: int, column: int, msg: str, e: Any) -> None:
        raise FHIRPathSyntaxError(f"{line}:{column}: {msg}")


def _parse(expression: str) -> dict[str, Any]:
    """fhirpathpy's parse(), but with ANTLR errors raised instead of silently recovered."""
    listener = _RaisingListener()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.buildParseTrees = True
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    tree = parser.expression()
    if parser.getCurrentToken().type != FHIRPathParser.EOF:
        raise FHIRPathSyntaxError(f"unexpected input at {parser.getCurrentToken().text!r}")
    ast = ASTPathListener()
    ParseTreeWalker().walk(ast, tree)
    result: dict[str, Any] = ast.parentStack[0]
    return result


def reference_target(reference: str, root: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """What `resolve()` yields for a reference string without a resolver hook.

    `#id` gives the contained resource of `root`; a `urn:uuid:`/URL matching a Bundle entry's fullUrl
    gives that entry's resource; `Type/id` or a URL ending in it gives a stub with resourceType and id.
    """
    if root is not None:
        if reference.startswith("#"):
            for contained in root.get("contained", []):
                if isinstance(contained, dict) and contained.get("id") == reference[1:]:
                    return contained
            return None
        for entry in root.get("entry", []) if root.get("resourceType") == "Bundle" else []:
            if isinstance(entry, dict) and entry.get("fullUrl") == reference and "resource" in entry:
                found: dict[str, Any] = entry["resource"]
                return found
    match = _REFERENCE.search(reference)
    if match is None:
        return None
    return {"resourceType": match.group(1), "id": match.group(2)}


def _resolve_fn(root: Any, resolver: Resolver | None) -> Callable[..., list[Any]]:
    def resolve(inputs: list[Any]) -> list[Any]:
        out: list[Any] = []
        for item in inputs:
            ref = item.get("reference") if isinstance(item, dict) else item
            if not isinstance(ref, str):
                continue
            target = resolver(ref) if resolver is not None else None
            if target is None:
                target = reference_target(ref, root if isinstance(root, Mapping) else None)
            if target is not None:
                # A ResourceNode carries the resource type, so `is`/`ofType()` see e.g. Patient.
                out.append(ResourceNode.create_node(target))
        return out

    return resolve


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("children", []):
        if isinstance(child, dict):
            out.extend(_walk(child))
    return out


def _rewrite_sorts(parsed: dict[str, Any]) -> dict[str, str]:
    """Turn `sort(-a, b)` into `sort_da(a, b)`: fhirpathpy cannot negate strings, so direction moves
    into the function name, and the table gets one entry per variant."""
    variants: dict[str, str] = {}
    for node in _walk(parsed):
        if node.get("type") != "Functn" or node["children"][0].get("text") != "sort":
            continue
        if len(node["children"]) < 2:
            continue
        params = node["children"][1]["children"]
        directions = ""
        for i, param in enumerate(params):
            if param.get("type") == "PolarityExpression" and param["terminalNodeText"] == ["-"]:
                params[i] = param["children"][0]
                directions += "d"
            else:
                directions += "a"
        name = f"sort_{directions}"
        node["children"][0] = {**node["children"][0], "text": name, "terminalNodeText": [name]}
        variants[name] = directions
    return variants


def _spec_constants(parsed: dict[str, Any]) -> dict[str, str]:
    """The environment variables FHIR defines: %sct, %loinc, %vs-name and %ext-name."""
    out = {"sct": "http://snomed.info/sct", "loinc": "http://loinc.org", "ucum": "http://unitsofmeasure.org"}
    for node in _walk(parsed):
        if node.get("type") == "ExternalConstantTerm":
            name = str(node["children"][0]["children"][0].get("text", "")).strip("`")
            if name.startswith("vs-"):
                out[name] = "http://hl7.org/fhir/ValueSet/" + name[3:]
            elif name.startswith("ext-"):
                out[name] = "http://hl7.org/fhir/StructureDefinition/" + name[4:]
    return out


def _trace(label: str, value: Any) -> None:
    _log.debug("FHIRPath trace %s: %r", label, value)


@lru_cache(maxsize=4096)
def compile(expression: str) -> CompiledExpression:
    """Parse `expression` once; the result evaluates it against a resource (or list of resources)."""
    try:
        parsed = _parse(expression)
    except FHIRPathSyntaxError:
        raise
    except Exception as exc:  # the ANTLR listener of fhirpathpy raises bare exceptions
        raise FHIRPathSyntaxError(str(exc)) from exc
    sorts = _rewrite_sorts(parsed)
    constants = _spec_constants(parsed)

    def run(resource: Any, env: Mapping[str, Any] | None = None, *, resolver: Resolver | None = None) -> list[Any]:
        table = {**fhirpath_fixes.FUNCTIONS, **fhirpath_extensions.FUNCTIONS}
        table.update({name: fhirpath_extensions.sort_function(dirs) for name, dirs in sorts.items()})
        table["resolve"] = {"fn": _resolve_fn(resource, resolver)}
        variables = {**constants, "resource": resource, "rootResource": resource, **(env or {})}
        options = {"userInvocationTable": table, "traceFn": _trace}
        try:
            result: list[Any] = fhirpathpy.apply_parsed_path(resource, parsed, variables, R4_MODEL, options)
        except FHIRPathError:
            raise
        except Exception as exc:  # fhirpathpy signals every evaluation error with a bare Exception
            raise FHIRPathError(f"{expression}: {exc}") from exc
        return result

    return run


def evaluate(
    resource: Any,
    expression: str,
    env: Mapping[str, Any] | None = None,
    *,
    resolver: Resolver | None = None,
) -> list[Any]:
    """Evaluate `expression` against `resource`; `env` supplies `%variables` (names without `%`)."""
    return compile(expression)(resource, env, resolver=resolver)
