"""FHIR XML <-> JSON conversion driven by the R4 StructureDefinitions (https://hl7.org/fhir/R4/xml.html).

`parse_xml` turns a FHIR XML resource into its JSON form (https://hl7.org/fhir/R4/json.html) and `to_xml`
does the reverse. Element cardinality decides arrays, primitive types decide JSON numbers and booleans,
primitive `id`/`extension` go to `_name` objects, and the narrative `div` is kept as an XHTML string.
DOCTYPE and ENTITY declarations are refused, so entity-expansion attacks cannot happen.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cache
from typing import Any

from samverka.fhir.definitions import structure_definitions

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_F = "{" + FHIR_NS + "}"
_H = "{" + XHTML_NS + "}"

_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt", "System.Integer"})
_DANGEROUS = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True)
class _Elem:
    """One element of a StructureDefinition, as the converter needs it."""

    name: str  # last path segment, without [x]
    path: str  # the path whose children describe this element's content (after contentReference)
    types: tuple[str, ...]
    many: bool
    choice: bool
    attr: bool  # represented as an XML attribute (Element.id, Extension.url)


@dataclass(frozen=True)
class _Type:
    """The ordered child elements of one type or backbone path."""

    children: tuple[_Elem, ...]
    by_name: dict[str, _Elem]


def _type_code(t: dict[str, Any]) -> str:
    code: str = t["code"]
    if code.startswith("http://hl7.org/fhirpath/"):
        for ext in t.get("extension", []):
            if ext.get("url", "").endswith("structuredefinition-fhir-type"):
                fhir_type: str = ext["valueUrl"]
                return fhir_type
        return code.rsplit("/", 1)[1]
    return code


@cache
def _index(sd_name: str) -> dict[str, _Type]:
    """Children per element path of one StructureDefinition snapshot."""
    elements = structure_definitions()[sd_name]["snapshot"]["element"]
    kids: dict[str, list[_Elem]] = {}
    for e in elements:
        path: str = e["path"]
        if "." not in path:
            continue
        parent, last = path.rsplit(".", 1)
        choice = last.endswith("[x]")
        ref = e.get("contentReference")
        kids.setdefault(parent, []).append(
            _Elem(
                name=last[:-3] if choice else last,
                path=ref.split("#", 1)[1] if ref else path,
                types=tuple(_type_code(t) for t in e.get("type", [])),
                many=e.get("max") not in ("0", "1"),
                choice=choice,
                attr="xmlAttr" in e.get("representation", []),
            )
        )
    return {p: _Type(tuple(cs), {c.name: c for c in cs}) for p, cs in kids.items()}


def _base_type(code: str) -> str:
    sd = structure_definitions().get(code)
    if sd is not None and sd.get("derivation") == "constraint":
        base: str = sd["type"]
        return base
    return code


def _content(sd_name: str, path: str, code: str) -> tuple[str, str]:
    """Which (StructureDefinition, path) describes the content of an element of type `code`."""
    idx = _index(sd_name)
    if path in idx and code in ("BackboneElement", "Element", ""):
        return sd_name, path
    base = _base_type(code)
    return base, base


def _is_primitive(code: str) -> bool:
    return code[:1].islower() or code.startswith("System.")


def _children(sd_name: str, path: str) -> _Type:
    t = _index(sd_name).get(path)
    if t is None:
        raise ValueError(f"unknown FHIR element path {path}")
    return t


def _lookup(kind: _Type, name: str) -> tuple[_Elem, str] | None:
    """The element definition for a JSON/XML name, with the concrete type of a choice."""
    e = kind.by_name.get(name)
    if e is not None and not e.choice:
        return e, e.types[0] if e.types else ""
    for e in kind.children:
        if e.choice and name.startswith(e.name):
            suffix = name[len(e.name) :]
            for t in e.types:
                if t[:1].upper() + t[1:] == suffix:
                    return e, t
    return None


# ---------------------------------------------------------------- XML -> JSON


class _SafeBuilder(ET.TreeBuilder):
    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise ValueError("DOCTYPE declarations are not allowed in FHIR XML")


def _parse_tree(data: bytes) -> ET.Element:
    if _DANGEROUS.search(data):
        raise ValueError("DOCTYPE/ENTITY declarations are not allowed in FHIR XML")
    parser = ET.XMLParser(target=_SafeBuilder())
    try:
        parser.feed(data)
        root: ET.Element = parser.close()
    except ET.ParseError as exc:
        raise ValueError(f"malformed XML: {exc}") from exc
    return root


def parse_xml(data: bytes) -> dict[str, Any]:
    """A FHIR XML resource as its FHIR JSON dict."""
    return _resource(_parse_tree(data))


def _local(tag: str, ns: str = _F) -> str:
    if not tag.startswith(ns):
        raise ValueError(f"element {tag} is not in the FHIR namespace")
    return tag[len(ns) :]


def _resource(node: ET.Element) -> dict[str, Any]:
    rtype = _local(node.tag)
    if structure_definitions().get(rtype, {}).get("kind") != "resource":
        raise ValueError(f"unknown resource type {rtype}")
    out: dict[str, Any] = {"resourceType": rtype}
    _fill(out, node, rtype, rtype)
    return out


def _primitive(text: str, code: str) -> Any:
    if code in _INTEGERS:
        return int(text)
    if code in ("decimal", "System.Decimal"):
        return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
    if code in ("boolean", "System.Boolean"):
        if text not in ("true", "false"):
            raise ValueError(f"invalid boolean {text!r}")
        return text == "true"
    return text


def _fill(out: dict[str, Any], node: ET.Element, sd_name: str, path: str) -> None:
    kind = _children(sd_name, path)
    for key, value in node.attrib.items():
        if key.startswith("{"):
            continue  # xsi:schemaLocation and other foreign attributes carry no FHIR content
        e = kind.by_name.get(key)
        if e is None or not e.attr:
            raise ValueError(f"unexpected attribute {key} on {path}")
        out[key] = value
    groups: dict[str, tuple[_Elem, str, list[ET.Element]]] = {}
    for child in node:
        if not isinstance(child.tag, str):
            continue  # comments and processing instructions
        if child.tag == _H + "div":
            groups.setdefault("div", (kind.by_name["div"], "xhtml", []))[2].append(child)
            continue
        name = _local(child.tag)
        found = _lookup(kind, name)
        if found is None:
            raise ValueError(f"unknown element {name} in {path}")
        groups.setdefault(name, (found[0], found[1], []))[2].append(child)
    for name, (e, code, nodes) in groups.items():
        if len(nodes) > 1 and not e.many:
            raise ValueError(f"{path}.{name} repeats but allows at most one")
        if code == "xhtml":
            out[name] = _xhtml(nodes[0])
        elif _is_primitive(code):
            values = [_primitive(n.attrib["value"], code) if "value" in n.attrib else None for n in nodes]
            extras = [_primitive_extras(n) for n in nodes]
            if any(v is not None for v in values):
                out[name] = values if e.many else values[0]
            if any(x is not None for x in extras):
                out["_" + name] = extras if e.many else extras[0]
        else:
            items = [_complex(n, sd_name, e, code) for n in nodes]
            out[name] = items if e.many else items[0]


def _primitive_extras(node: ET.Element) -> dict[str, Any] | None:
    extra: dict[str, Any] = {}
    if "id" in node.attrib:
        extra["id"] = node.attrib["id"]
    exts = [c for c in node if isinstance(c.tag, str)]
    if exts:
        holder = ET.Element("holder")
        holder.extend(exts)
        _fill(extra, holder, "Element", "Element")
    return extra or None


def _complex(node: ET.Element, sd_name: str, e: _Elem, code: str) -> dict[str, Any]:
    if code == "Resource":
        inner = [c for c in node if isinstance(c.tag, str)]
        if len(inner) != 1:
            raise ValueError(f"{e.path} must hold exactly one resource")
        return _resource(inner[0])
    out: dict[str, Any] = {}
    content_sd, content_path = _content(sd_name, e.path, code)
    _fill(out, node, content_sd, content_path)
    return out


def _xhtml(node: ET.Element) -> str:
    parts: list[str] = []
    _write_xhtml(node, parts, top=True)
    return "".join(parts)


def _escape(text: str, attr: bool = False) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    if attr:  # keep whitespace through attribute-value normalisation
        text = text.replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")
    return text


def _xhtml_name(tag: str) -> str:
    if tag.startswith(_H):
        return tag[len(_H) :]
    if tag.startswith("{" + _XML_NS + "}"):
        return "xml:" + tag.split("}", 1)[1]
    if tag.startswith("{"):
        raise ValueError(f"narrative element {tag} is not XHTML")
    return tag


def _write_xhtml(node: ET.Element, parts: list[str], top: bool = False) -> None:
    name = _xhtml_name(node.tag)
    parts.append("<" + name)
    if top:
        parts.append(f' xmlns="{XHTML_NS}"')
    for key, value in node.attrib.items():
        parts.append(f' {_xhtml_name(key)}="{_escape(value, attr=True)}"')
    if node.text is None and len(node) == 0:
        parts.append("/>")
        return
    parts.append(">" + _escape(node.text or ""))
    for child in node:
        if isinstance(child.tag, str):
            _write_xhtml(child, parts)
        if child.tail:
            parts.append(_escape(child.tail))
    parts.append(f"</{name}>")


# ---------------------------------------------------------------- JSON -> XML


def to_xml(resource: dict[str, Any]) -> bytes:
    """A FHIR JSON resource dict as FHIR XML bytes (UTF-8, with an XML declaration)."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>']
    _write_resource(resource, parts, top=True)
    return "".join(parts).encode()


def _write_resource(resource: dict[str, Any], parts: list[str], top: bool = False) -> None:
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or structure_definitions().get(rtype, {}).get("kind") != "resource":
        raise ValueError(f"unknown resource type {rtype!r}")
    body = {k: v for k, v in resource.items() if k != "resourceType"}
    _write_element(rtype, body, rtype, rtype, parts, f' xmlns="{FHIR_NS}"' if top else "")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"not a primitive value: {value!r}")


def _as_list(value: Any, many: bool, name: str) -> list[Any]:
    if many:
        if not isinstance(value, list):
            raise ValueError(f"{name} must be an array")
        return value
    if isinstance(value, list):
        raise ValueError(f"{name} must not be an array")
    return [value]


def _write_element(
    tag: str, obj: dict[str, Any], sd_name: str, path: str, parts: list[str], extra_attrs: str = ""
) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{path} must be an object")
    kind = _children(sd_name, path)
    attrs = extra_attrs
    body: list[str] = []
    used: set[str] = set()
    for e in kind.children:
        if e.attr:
            if e.name in obj:
                attrs += f' {e.name}="{_escape(_text(obj[e.name]), attr=True)}"'
                used.add(e.name)
            continue
        names = [e.name + t[:1].upper() + t[1:] for t in e.types] if e.choice else [e.name]
        for name, code in zip(names, e.types if e.choice else [e.types[0] if e.types else ""], strict=True):
            if name not in obj and "_" + name not in obj:
                continue
            used.update((name, "_" + name))
            _write_values(name, code, e, obj, sd_name, body)
    unknown = set(obj) - used
    if unknown:
        raise ValueError(f"unknown elements in {path}: {sorted(unknown)}")
    parts.append(f"<{tag}{attrs}")
    parts.append(">" + "".join(body) + f"</{tag}>" if body else "/>")


def _write_values(name: str, code: str, e: _Elem, obj: dict[str, Any], sd_name: str, out: list[str]) -> None:
    if code == "xhtml":
        out.append(_xhtml(_parse_tree(str(obj[name]).encode())))
        return
    if _is_primitive(code):
        values = _as_list(obj.get(name), e.many, name) if name in obj else []
        extras = _as_list(obj.get("_" + name), e.many, "_" + name) if "_" + name in obj else []
        for i in range(max(len(values), len(extras))):
            value = values[i] if i < len(values) else None
            extra = (extras[i] if i < len(extras) else None) or {}
            attrs = f' id="{_escape(str(extra["id"]), attr=True)}"' if "id" in extra else ""
            if value is not None:
                attrs += f' value="{_escape(_text(value), attr=True)}"'
            inner: list[str] = []
            for ext in extra.get("extension", []):
                _write_element("extension", ext, "Extension", "Extension", inner)
            out.append(f"<{name}{attrs}" + (">" + "".join(inner) + f"</{name}>" if inner else "/>"))
        return
    for item in _as_list(obj[name], e.many, name):
        if code == "Resource":
            out.append(f"<{name}>")
            _write_resource(item, out)
            out.append(f"</{name}>")
        else:
            content_sd, content_path = _content(sd_name, e.path, code)
            _write_element(name, item, content_sd, content_path, out)
