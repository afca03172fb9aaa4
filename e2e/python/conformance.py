"""Does every answer the server gives match what the OpenAPI document declares for it?

The generated SDK trusts the spec: it parses a declared status into the declared model and types
its fields as declared. An answer outside the spec (an undeclared status or media type, a `null`
where the spec says `string`, a property the spec does not name, a missing required header) is
then silently wrong in every client. scenario.py hooks `Conformance.check` into the SDK's httpx
client, so each answer of the scenario is checked here, independently of the generated code.

The schema check covers what the spec uses (OpenAPI 3.0): `$ref`, `allOf`, `type`, `nullable`,
`properties`, `required`, `additionalProperties`, `items`, `enum`, and the `uint*`/`int*` formats.
A property that the schema does not declare is reported too (the SDK's types cannot see it).
"""

from __future__ import annotations

import json
import re
from typing import Any

Json = Any
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _norm_media(value: str) -> str:
    """`Application/JSON;charset=UTF-8` -> `application/json; charset=utf-8`."""
    parts = [p.strip().lower() for p in value.split(";") if p.strip()]
    return "; ".join(parts)


class Conformance:
    def __init__(self, spec: dict[str, Json]) -> None:
        self.spec = spec
        routes: list[tuple[int, re.Pattern[str], str]] = []
        for template in spec["paths"]:
            n_params = template.count("{")
            rx = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
            routes.append((n_params, rx, template))
        # A literal path (`/policies/evaluate`) wins over a template (`/policies/{name}`).
        self.routes = sorted(routes, key=lambda r: r[0])

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Json]] | None:
        for _, rx, template in self.routes:
            op = self.spec["paths"][template].get(method.lower())
            if op is not None and rx.match(path):
                return f"{op['operationId']} ({method.upper()} {template})", op
        return None

    # ---- schemas ----------------------------------------------------------------------------------
    def _resolve(self, schema: dict[str, Json]) -> dict[str, Json]:
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#/components/schemas/") or seen > 20:
                raise ValueError(f"unsupported $ref {ref!r}")
            schema = self.spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
            seen += 1
        return schema

    def validate(self, value: Json, schema: dict[str, Json], at: str) -> list[str]:
        s = self._resolve(schema)
        errs: list[str] = []
        for sub in s.get("allOf", []):
            errs += self.validate(value, sub, at)
        if value is None:
            if s.get("type") is not None and not s.get("nullable", False):
                name = schema["$ref"].rsplit("/", 1)[1] if "$ref" in schema else s["type"]
                errs.append(f"{at} is null, the spec declares {name} without `nullable: true`")
            return errs
        typ = s.get("type")
        if typ == "object":
            if not isinstance(value, dict):
                return errs + [f"{at} is {type(value).__name__}, the spec declares object"]
            props: dict[str, Json] = s.get("properties", {})
            for req in s.get("required", []):
                if req not in value:
                    errs.append(f"{at}.{req} is missing (required by the spec)")
            extra = s.get("additionalProperties")
            for key, v in value.items():
                if key in props:
                    errs += self.validate(v, props[key], f"{at}.{key}")
                elif isinstance(extra, dict):
                    errs += self.validate(v, extra, f"{at}[{key!r}]")
                elif extra is True:
                    pass
                else:
                    errs.append(f"{at}.{key} is not declared in the spec's schema")
        elif typ == "array":
            if not isinstance(value, list):
                return errs + [f"{at} is {type(value).__name__}, the spec declares array"]
            for i, v in enumerate(value):
                errs += self.validate(v, s.get("items", {}), f"{at}[{i}]")
        elif typ == "string":
            if not isinstance(value, str):
                return errs + [f"{at} is {json.dumps(value)[:60]}, the spec declares string"]
        elif typ == "integer":
            if not isinstance(value, int) or isinstance(value, bool):
                return errs + [f"{at} is {json.dumps(value)[:60]}, the spec declares integer"]
            if str(s.get("format", "")).startswith("uint") and value < 0:
                errs.append(f"{at} is {value}, the spec declares {s['format']}")
        elif typ == "number":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return errs + [f"{at} is {json.dumps(value)[:60]}, the spec declares number"]
        elif typ == "boolean":
            if not isinstance(value, bool):
                return errs + [f"{at} is {json.dumps(value)[:60]}, the spec declares boolean"]
        if "enum" in s and value not in s["enum"]:
            errs.append(f"{at} is {json.dumps(value)[:60]}, not one of the spec's enum {s['enum']}")
        return errs

    # ---- answers ----------------------------------------------------------------------------------
    def check(
        self, method: str, path: str, status: int, headers: dict[str, str], body: bytes
    ) -> list[str]:
        """Everything about this answer that the spec does not declare, one line each."""
        found = self.operation(method, path)
        if found is None:
            return [f"{method.upper()} {path}: no operation in the spec"]
        where, op = found
        resp = op["responses"].get(str(status)) or op["responses"].get("default")
        if resp is None:
            return [f"{where}: status {status} is not declared (declared: {', '.join(op['responses'])})"]
        lower = {k.lower(): v for k, v in headers.items()}
        errs: list[str] = []
        for name, h in (resp.get("headers") or {}).items():
            if h.get("required") and name.lower() not in lower:
                errs.append(f"{where} {status}: required header {name} is missing")
        content: dict[str, Json] = resp.get("content") or {}
        got_ct = lower.get("content-type")
        if not content:
            if body:
                errs.append(f"{where} {status}: the spec declares no body, the server sent {body[:80]!r} ({got_ct})")
            return errs
        declared = {_norm_media(k): v for k, v in content.items()}
        media = declared.get(_norm_media(got_ct or ""))
        if media is None:
            return errs + [
                f"{where} {status}: content type {got_ct!r} is not declared (declared: {', '.join(content)})"
            ]
        schema = media.get("schema", {})
        base = _norm_media(got_ct or "").split(";")[0]
        if base == "application/json" or base.endswith("+json"):
            try:
                value = json.loads(body)
            except ValueError as e:
                return errs + [f"{where} {status}: body is not JSON ({e}): {body[:80]!r}"]
            errs += self.validate(value, schema, f"{where} {status} body")
        elif base.startswith("text/"):
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                errs.append(f"{where} {status}: {base} body is not UTF-8")
        return errs
