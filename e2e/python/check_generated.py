"""Audit the generated Python SDK against the committed OpenAPI document.

    python check_generated.py SPEC GENERATED_PACKAGE_DIR

For every operation of the spec:
  * a module named exactly after its operationId exists (`api/<tag>/<operationId>.py`), with
    `sync`, `sync_detailed`, `asyncio` and `asyncio_detailed`: so the method names are the
    operationIds (`create_document`, `issue_token`), nothing path-derived;
  * every declared response status has a branch in `_parse_response`, and that branch builds the
    declared type: `<Schema>.from_dict(...)` for a `$ref` schema, `response.text` for a plain
    string, nothing for an empty body. A JSON body parsed into `Any`/`dict` where the spec names a
    schema, or a declared status the generator dropped, is a failure;
  * the annotated return type of `sync` names those models, not `Any`, except for statuses that
    the spec declares without a body (the generator types an empty body as `Any`);
  * every 4xx/5xx response has a body with a named schema, `application/problem+json` except for
    the token endpoints (`/token*`, RFC 6749 §5.2).
And for the models:
  * every schema of `components.schemas` has its model class;
  * no other model class is a copy of one of them (same fields under another name, as the
    generator makes for a property written `allOf: [{$ref}, {description}]`): SDK users would get
    two incompatible classes for one thing;
  * no model field is annotated `Any` (only the free-form `additional_properties` may hold `Any`).
Exits 1 with one line per problem.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import sys
import typing
from pathlib import Path
from typing import Any


def class_name(schema_name: str) -> str:
    # openapi-python-client keeps PascalCase schema names as they are.
    return schema_name[0].upper() + schema_name[1:]


def main() -> int:
    spec_path, pkg_dir = Path(sys.argv[1]), Path(sys.argv[2])
    spec: dict[str, Any] = json.loads(spec_path.read_text())
    sys.path.insert(0, str(pkg_dir.parent))
    pkg = pkg_dir.name
    problems: list[str] = []
    modules = {p.stem: p for p in (pkg_dir / "api").glob("*/*.py") if p.stem != "__init__"}
    op_ids: set[str] = set()
    checked = 0

    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in {"get", "put", "post", "delete", "patch", "head", "options"}:
                continue
            op_id = op["operationId"]
            op_ids.add(op_id)
            where = f"{op_id} ({method.upper()} {path})"
            mod_path = modules.get(op_id)
            if mod_path is None:
                problems.append(f"{where}: no module `{op_id}` was generated (endpoint skipped)")
                continue
            mod_name = f"{pkg}.api.{mod_path.parent.name}.{op_id}"
            try:
                mod = importlib.import_module(mod_name)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{where}: `{mod_name}` does not import: {e!r}")
                continue
            for fn in ("sync", "sync_detailed", "asyncio", "asyncio_detailed"):
                if not callable(getattr(mod, fn, None)):
                    problems.append(f"{where}: `{mod_name}.{fn}` is missing")
            for media, media_obj in ((op.get("requestBody") or {}).get("content") or {}).items():
                base = media.split(";")[0].strip().lower()
                raw = base not in {"application/json", "application/x-www-form-urlencoded", "multipart/form-data"}
                schema = media_obj.get("schema", {})
                if raw and not base.endswith("+json") and schema.get("format") != "binary":
                    problems.append(
                        f"{where}: request body {media} has schema {schema!r}; openapi-python-client sends a "
                        "raw (non-JSON, non-form) body only as a `File` (generator.yaml maps `text/plain` "
                        "to application/octet-stream), which needs `{type: string, format: binary}`: with "
                        "this schema the generated code calls `body.payload` on a `str`"
                    )
            src = inspect.getsource(mod._parse_response)
            try:
                ret = typing.get_type_hints(mod.sync)["return"]
            except Exception as e:  # noqa: BLE001
                problems.append(f"{where}: the return type of `sync` does not resolve: {e!r}")
                continue
            arms = set(typing.get_args(ret)) or {ret}
            arm_names = {getattr(a, "__name__", repr(a)) for a in arms}
            any_allowed = False
            for status, resp in op["responses"].items():
                if status[0] in "45":
                    # Errors are typed: a body with a named schema, problem+json except for the
                    # token endpoints (RFC 6749 §5.2 errors).
                    err_content = resp.get("content") or {}
                    oauth = path.startswith("/token")
                    if not err_content:
                        problems.append(f"{where}: error {status} is declared without a body (untyped error)")
                    for media, media_obj in err_content.items():
                        if "$ref" not in media_obj.get("schema", {}):
                            problems.append(f"{where}: error {status} ({media}) has no named schema")
                        if not oauth and media.split(";")[0].strip() != "application/problem+json":
                            problems.append(f"{where}: error {status} is {media}, not application/problem+json")
                m = re.search(
                    rf"if response\.status_code == {status}:\n(.*?)return response_{status}",
                    src,
                    re.S,
                )
                if m is None:
                    problems.append(
                        f"{where}: response {status} is declared in the spec but the generated "
                        "client has no branch for it (the generator omitted it)"
                    )
                    continue
                body = m.group(1)
                content = resp.get("content") or {}
                if not content:
                    any_allowed = True  # no body: the generator says cast(Any, None)
                    continue
                (media, media_obj), *_ = content.items()
                schema = media_obj.get("schema", {})
                if "$ref" in schema:
                    want = class_name(schema["$ref"].rsplit("/", 1)[1])
                    if f"{want}.from_dict(" not in body:
                        problems.append(
                            f"{where}: response {status} ({media}) should be parsed into `{want}`, "
                            f"the generated code is: {body.strip()!r}"
                        )
                    elif want not in arm_names:
                        problems.append(
                            f"{where}: `sync` is annotated {ret!r}, which does not name `{want}`"
                        )
                elif schema.get("type") == "string" and schema.get("format") == "binary":
                    if "File(" not in body or "response.content" not in body:
                        problems.append(
                            f"{where}: response {status} is bytes (format: binary), parsed as {body.strip()!r}"
                        )
                elif schema.get("type") == "string":
                    # Text is `response.text`; `cast(str, response.content)` would be bytes typed `str`.
                    if "response.text" not in body:
                        problems.append(
                            f"{where}: response {status} ({media}) is text, parsed as {body.strip()!r}"
                            + (" (bytes typed `str`: a content_type_overrides entry of generator.yaml "
                               "matches this response's media type)" if "response.content" in body else "")
                        )
                else:
                    problems.append(
                        f"{where}: response {status} has an inline schema {schema!r}; "
                        "a named schema is expected"
                    )
                if "cast(Any, response.json())" in body or re.search(r"= response\.json\(\)\s*$", body):
                    problems.append(f"{where}: response {status} is an untyped JSON blob")
            if Any in arms and not any_allowed:
                problems.append(f"{where}: `sync` is annotated {ret!r}: `Any` where a schema belongs")
            checked += 1

    for extra in sorted(set(modules) - op_ids):
        problems.append(f"module `{extra}` matches no operationId of the spec")

    problems += check_models(spec, pkg)

    print(
        "methods: "
        + ", ".join(f"{m.parent.name}.{name}.sync" for name, m in sorted(modules.items()))
    )
    for p in problems:
        print(f"FAIL  {p}")
    print(
        f"generated SDK audit: {checked} of {len(op_ids)} operations generated, "
        f"{len(problems)} problem(s)"
    )
    return 1 if problems else 0


def check_models(spec: dict[str, Any], pkg: str) -> list[str]:
    problems: list[str] = []
    models = importlib.import_module(f"{pkg}.models")
    classes = {
        name: cls
        for name in getattr(models, "__all__", [])
        if inspect.isclass(cls := getattr(models, name)) and hasattr(cls, "__attrs_attrs__")
    }
    wire_names: dict[str, frozenset[str]] = {}
    for name, cls in classes.items():
        try:
            # Models import each other under TYPE_CHECKING only: resolve in the package namespace.
            hints = typing.get_type_hints(cls, globalns={**vars(models), **vars(sys.modules[cls.__module__])})
        except Exception as e:  # noqa: BLE001
            problems.append(f"model `{name}`: its annotations do not resolve: {e!r}")
            continue
        for field in cls.__attrs_attrs__:
            if field.name != "additional_properties" and hints.get(field.name) is Any:
                problems.append(f"model `{name}`.{field.name} is annotated `Any`")
        # The JSON property names of the model (from an empty-ish to_dict of its fields).
        wire_names[name] = frozenset(f.name for f in cls.__attrs_attrs__ if f.name != "additional_properties")
    schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    for schema_name, schema in schemas.items():
        cls_name = class_name(schema_name)
        if schema.get("type") == "object" and cls_name not in classes:
            problems.append(f"schema `{schema_name}` has no model class (the generator dropped it)")
    named = {class_name(n) for n in schemas}
    for name, fields in sorted(wire_names.items()):
        if name in named or not fields:
            continue
        twins = sorted(n for n in named if n in wire_names and wire_names[n] == fields)
        if twins:
            problems.append(
                f"model `{name}` is a copy of `{twins[0]}` (same fields under another name): a property "
                f"of the spec refers to schema `{twins[0]}` through a wrapper (e.g. `allOf: [{{$ref}}, "
                "{description}]`) instead of a plain `$ref`"
            )
    return problems


if __name__ == "__main__":
    sys.exit(main())
