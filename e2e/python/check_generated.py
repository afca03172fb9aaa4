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
    the spec declares without a body (the generator types an empty body as `Any`).
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
                elif schema.get("type") == "string":
                    if "response.text" not in body and "response.content" not in body:
                        problems.append(
                            f"{where}: response {status} is a string, parsed as {body.strip()!r}"
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


if __name__ == "__main__":
    sys.exit(main())
