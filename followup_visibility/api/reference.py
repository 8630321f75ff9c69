"""``reference/``: the OpenAPI document as a readable page, with no CDN and no script.

The page is generated in process from the same generator, URLs and settings as ``schema/``,
so the two cannot disagree; it needs a signed-in user like the rest of the API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.utils.html import escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from drf_spectacular.settings import patched_settings
from rest_framework.renderers import TemplateHTMLRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from followup_visibility.api import base, schema
from followup_visibility.api.errors import DESCRIPTIONS

METHODS = ("get", "post", "put", "patch", "delete")
CODE = re.compile(r"`([^`]+)`")
# How deep a body's fields are expanded in place; deeper ones link to their component.
NESTING = 1


def generate(request: Request, prefix: str) -> dict[str, Any]:
    """The OpenAPI document ``schema/`` serves, for the API mounted at ``prefix``."""
    patches = {**schema.SETTINGS, "SERVERS": [{"url": prefix or "/"}]}
    with patched_settings(patches):
        generator = schema.SchemaView.generator_class(urlconf=schema.SchemaView.urlconf)
        document: dict[str, Any] = generator.get_schema(  # type: ignore[no-untyped-call]
            request=request, public=True
        )
    return document


def prose(text: str) -> SafeString:
    """A description's text as HTML: paragraphs, ``*`` lists and backticked code."""
    blocks: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if lines and all(line.startswith(("* ", "- ")) for line in lines):
            items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines)
            blocks.append(f"<ul>{items}</ul>")
        elif lines:
            blocks.append(f"<p>{'<br>'.join(_inline(line) for line in lines)}</p>")
    # Safe: _inline escaped every piece of text, the tags are our own.
    return mark_safe("".join(blocks))


def _inline(text: str) -> str:
    return CODE.sub(r"<code>\1</code>", str(escape(text)))


def anchor(component: str) -> str:
    return f"schema-{component}"


@dataclass
class Field:
    """One field of a body: ``results[].id`` for a field of a nested object."""

    name: str
    depth: int
    type: SafeString
    required: bool
    nullable: bool
    read_only: bool
    enum: list[str]
    description: SafeString


@dataclass
class Parameter:
    name: str
    location: str
    type: SafeString
    required: bool
    enum: list[str]
    description: SafeString


@dataclass
class Variant:
    """One shape a body may take: its type and its fields."""

    type: SafeString
    fields: list[Field]


@dataclass
class Body:
    """A request or response body: its media type, its type and the shapes it may take
    (several for a ``oneOf``, such as one touch or a batch)."""

    media_type: str
    type: SafeString
    variants: list[Variant]
    is_error: bool = False


@dataclass
class Reply:
    status: str
    description: SafeString
    bodies: list[Body]


@dataclass
class Operation:
    method: str
    path: str
    anchor: str
    summary: str
    description: SafeString
    deprecated: bool
    parameters: list[Parameter]
    body: Body | None
    body_required: bool
    replies: list[Reply]


@dataclass
class Group:
    tag: str
    operations: list[Operation] = field(default_factory=list)


@dataclass
class Component:
    name: str
    anchor: str
    type: SafeString
    description: SafeString
    enum: list[str]
    fields: list[Field]


class Reader:
    """Reads an OpenAPI document's schemas, resolving ``$ref`` to its components."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.components: dict[str, Any] = document.get("components", {}).get("schemas", {})

    def resolve(self, schema: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """The component a schema names (or ``None``) and the schema it stands for."""
        name = None
        for _hop in range(10):  # a bound, in case a document refers to itself
            if "$ref" in schema:
                name = str(schema["$ref"]).rsplit("/", 1)[-1]
                schema = self.components.get(name, {})
            elif len(schema.get("allOf", [])) == 1:
                schema = schema["allOf"][0]
            else:
                break
        return name, schema

    def type(self, schema: dict[str, Any]) -> SafeString:
        """A schema's type in words, a component by a link to it."""
        if "$ref" in schema:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            return format_html('<a href="#{}">{}</a>', anchor(name), name)
        for key, joiner in (("allOf", " and "), ("oneOf", " or "), ("anyOf", " or ")):
            if schema.get(key):
                return format_html_join(joiner, "{}", ((self.type(s),) for s in schema[key]))
        kind = schema.get("type")
        if kind == "array":
            return format_html("array of {}", self.type(schema.get("items", {})))
        if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            return format_html("object of {}", self.type(schema["additionalProperties"]))
        label = str(kind or "any")
        if schema.get("format"):
            label = f"{label} ({schema['format']})"
        return format_html("{}", label)

    def enum(self, schema: dict[str, Any]) -> list[str]:
        """The values a schema (or the items of an array schema) allows, if it lists them."""
        _name, resolved = self.resolve(schema)
        if resolved.get("type") == "array":
            _name, resolved = self.resolve(resolved.get("items", {}))
        values = list(resolved.get("enum", []))
        for alternative in resolved.get("oneOf", []) + resolved.get("anyOf", []):
            values += self.enum(alternative)
        return [str(value) for value in values if value not in (None, "")]

    def object(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The object a schema describes, or the object its array holds ({} for neither)."""
        _name, resolved = self.resolve(schema)
        if resolved.get("type") == "array":
            _name, resolved = self.resolve(resolved.get("items", {}))
        return resolved if resolved.get("properties") else {}

    def fields(self, schema: dict[str, Any], depth: int = NESTING, prefix: str = "") -> list[Field]:
        """The fields of an object (or an array's object), those of nested objects ``depth``
        levels down in place."""
        found = self.object(schema)
        required = set(found.get("required", []))
        rows: list[Field] = []
        for name, prop in found.get("properties", {}).items():
            _name, target = self.resolve(prop)
            rows.append(
                Field(
                    name=prefix + name,
                    depth=prefix.count("."),
                    type=self.type(prop),
                    required=name in required,
                    nullable=bool(prop.get("nullable") or target.get("nullable")),
                    read_only=bool(prop.get("readOnly")),
                    enum=self.enum(prop),
                    description=prose(str(prop.get("description", ""))),
                )
            )
            if depth > 0 and self.object(prop):
                brackets = "[]" if target.get("type") == "array" else ""
                rows += self.fields(prop, depth - 1, f"{prefix}{name}{brackets}.")
        return rows

    def body(self, media_type: str, content: dict[str, Any]) -> Body:
        schema = content.get("schema", {})
        name, resolved = self.resolve(schema)
        if name == "Error":  # one shape, described once in its own section
            return Body(media_type, self.type(schema), [], is_error=True)
        shapes = resolved.get("oneOf") or resolved.get("anyOf") or [schema]
        variants = [Variant(self.type(shape), self.fields(shape)) for shape in shapes]
        return Body(media_type, self.type(schema), variants)


def operations(document: dict[str, Any], reader: Reader, prefix: str) -> list[Group]:
    """Every operation of the document, grouped by tag in the document's order."""
    groups: dict[str, Group] = {}
    for path, item in document.get("paths", {}).items():
        shared = item.get("parameters", [])
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            tag = (operation.get("tags") or ["api"])[0]
            groups.setdefault(tag, Group(tag)).operations.append(
                _operation(method, prefix + path, shared, operation, reader)
            )
    return list(groups.values())


def _operation(
    method: str, path: str, shared: list[Any], operation: dict[str, Any], reader: Reader
) -> Operation:
    parameters = [
        Parameter(
            name=p["name"],
            location=p["in"],
            type=reader.type(p.get("schema", {})),
            required=bool(p.get("required")),
            enum=reader.enum(p.get("schema", {})),
            description=prose(str(p.get("description", ""))),
        )
        for p in [*shared, *operation.get("parameters", [])]
    ]
    request = operation.get("requestBody", {})
    bodies = [reader.body(media, content) for media, content in request.get("content", {}).items()]
    replies = [
        Reply(
            status=str(status),
            description=prose(str(reply.get("description", ""))),
            bodies=[reader.body(m, c) for m, c in reply.get("content", {}).items()],
        )
        for status, reply in sorted(operation.get("responses", {}).items())
    ]
    return Operation(
        method=method,
        path=path,
        anchor=f"op-{operation.get('operationId', method + path)}",
        summary=str(operation.get("summary", "")),
        description=prose(str(operation.get("description", ""))),
        deprecated=bool(operation.get("deprecated")),
        parameters=parameters,
        # The first media type: the API parses JSON only.
        body=bodies[0] if bodies else None,
        body_required=bool(request.get("required")),
        replies=replies,
    )


def components(reader: Reader) -> list[Component]:
    """Every component schema, by name, with its own fields (nested ones as links)."""
    return [
        Component(
            name=name,
            anchor=anchor(name),
            type=reader.type(schema),
            description=prose(str(schema.get("description", ""))),
            enum=reader.enum(schema),
            fields=reader.fields(schema, depth=0),
        )
        for name, schema in sorted(reader.components.items())
    ]


def context(document: dict[str, Any], prefix: str) -> dict[str, Any]:
    """What the template shows of a document."""
    reader = Reader(document)
    info = document.get("info", {})
    schemes = document.get("components", {}).get("securitySchemes", {})
    return {
        "title": info.get("title", ""),
        "version": info.get("version", ""),
        "description": prose(str(info.get("description", ""))),
        "base": prefix or "/",
        "schema_url": f"{prefix}/schema/",
        "schemes": [
            {"name": name, "where": scheme.get("in", ""), "key": scheme.get("name", "")}
            for name, scheme in schemes.items()
        ],
        "groups": operations(document, reader, prefix),
        "error_fields": reader.fields({"$ref": "#/components/schemas/Error"}),
        "error_codes": [
            {"status": status, "description": prose(text)} for status, text in DESCRIPTIONS.items()
        ],
        "components": components(reader),
    }


class ReferenceRenderer(TemplateHTMLRenderer):
    """HTML, and a page of our own for errors (a 401 tells how to sign in)."""

    exception_template_names = ["followup_visibility/api/reference_error.html"]


class ReferenceView(base.ApiView):
    """``reference/``: every path, method, parameter, body, response and component."""

    renderer_classes = [ReferenceRenderer]
    template_name = "followup_visibility/api/reference.html"
    pagination_class = None
    filter_backends: list[Any] = []

    @base.document(exclude=True)
    def get(self, request: Request) -> Response:
        prefix = request.path.rsplit("reference/", 1)[0].rstrip("/")
        return Response(context(generate(request, prefix), prefix))
