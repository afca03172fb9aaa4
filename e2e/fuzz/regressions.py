"""Regression cases for what Schemathesis found, replayed with Schemathesis's own checks.

    regressions.py BASE ADMIN_TOKEN USER_TOKEN POLICY_DIR

Run by e2e/fuzz/run.sh (the `regressions` run) in the fuzzing venv, against a fresh server whose
policy directory is POLICY_DIR. Each case is one fixed request that once got an answer breaking
the OpenAPI document the server serves, checked with the same five response checks as the fuzz
runs. One case per way a class showed up, so a fix of the whole class is needed to pass:

1. Optional response fields sent as `null`, declared as plain `type: string` / `integer` (not
   `nullable`): `next` of both pages, PolicyView's `version`/`loaded_at`/`error`/`tests_passed`,
   PolicyChange's `old_version`/`new_version`, EvalResult's `reason`/`error`, ReloadView's
   `error`, ReplayChange's `sub`/`resource_id`/`*_reason`/`after_error`.
2. The static paths `/policies/reload` and `/policies/evaluate` (POST only) shadow
   `/policies/{name}` for the valid policy names `reload` and `evaluate`: GET/PUT/DELETE answer
   405, which no operation declares.

Exits 1 when any case fails; prints every case with its answer.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def nulls(value: Any, path: str = "") -> list[str]:
    """Where a JSON value holds `null` (to show that a case reached the class it guards)."""
    if value is None:
        return [path or "."]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return sorted({p for v in value for p in nulls(v, f"{path}[]")})
    return []


def describe(failure: Any) -> str:
    """One line for a Schemathesis failure: code, title, what, and where in the schema."""
    lines = [line.strip() for line in str(getattr(failure, "message", "")).splitlines() if line.strip()]
    what = lines[0] if lines else ""
    where = next((line[len("Schema at "):].rstrip(":") for line in lines if line.startswith("Schema at ")), "")
    text = f"{getattr(failure, 'code', '?')} {getattr(failure, 'title', type(failure).__name__)}: {what}"
    return f"{text} (schema at {where})" if where else text


def main(base: str, admin: str, user: str, policy_dir: str) -> int:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    session = requests.Session()
    tokens = {"admin": admin, "user": user}
    failed = 0

    def case(name: str, who: str, method: str, path: str, want: set[int] | None = None, **kwargs: Any) -> None:
        """One request through Schemathesis: the five checks, and the status when `want` is given
        (so that a case keeps reaching the answer it is about)."""
        nonlocal failed
        operation = schema[path][method]
        c = operation.Case(**kwargs)
        label = f"{method} {path.format(**kwargs.get('path_parameters', {}))} as {who}"
        try:
            response = c.call_and_validate(
                base_url=base, session=session, checks=CHECKS,
                headers={"Authorization": f"Bearer {tokens[who]}"}, timeout=10,
            )
        except FailureGroup as group:
            failed += 1
            print(f"  FAIL  {name}: {label}")
            for line in sorted(describe(failure) for failure in group.exceptions):
                print(f"          {line}")
            return
        except requests.RequestException as exc:
            failed += 1
            print(f"  FAIL  {name}: {label}: {exc}")
            return
        if want is not None and response.status_code not in want:
            failed += 1
            print(f"  FAIL  {name}: {label}: answered {response.status_code}, the case needs "
                  f"{sorted(want)}: {response.text[:200]}")
            return
        try:
            where = nulls(response.json())
        except ValueError:
            where = []
        shown = f", null at {', '.join(where[:6])}" if where else ""
        print(f"  ok    {name}: {label} -> {response.status_code}{shown}")

    # A policy that does not compile (no version, no load time) and kinds named like the two
    # POST-only paths under /policies. Written as files: the API cannot create the last two.
    for file, source in (("fuzzbroken.rhai", "if ("), ("reload.rhai", "true"), ("evaluate.rhai", "true")):
        with open(os.path.join(policy_dir, file), "w", encoding="utf-8") as f:
            f.write(source + "\n")
    reload = session.post(f"{base}/policies/reload", headers={"Authorization": f"Bearer {admin}"}, timeout=10)
    if reload.status_code != 200 or not any(line.startswith("fuzzbroken.rhai") for line in reload.json()["failed"]):
        print(f"  FAIL  setup: POST /policies/reload answered {reload.status_code} {reload.text[:300]}")
        return 1
    # Decisions for the replay below: the user lists and reads notes (logged by the decision log,
    # which the writer thread flushes every 50 ms).
    for _ in range(2):
        session.get(f"{base}/resources/notes", headers={"Authorization": f"Bearer {user}"}, timeout=10)
    time.sleep(0.3)

    print("class 1: optional fields answered as null must be declared nullable")
    case("next of a document page", "user", "GET", "/resources/{kind}", {200}, path_parameters={"kind": "notes"})
    case("next of a user page", "admin", "GET", "/users", {200})
    case("PolicyView of a broken file and of untested ones", "admin", "GET", "/policies", {200})
    case("PolicyView of a new policy", "admin", "PUT", "/policies/{name}", {201},
         path_parameters={"name": "fuzzreg"}, body="true", media_type="text/plain; charset=utf-8")
    case("PolicyView of a replaced policy", "admin", "PUT", "/policies/{name}", {200},
         path_parameters={"name": "fuzzreg"}, body="false", media_type="text/plain; charset=utf-8")
    case("PolicyChange of a creation (old_version)", "admin", "GET", "/policies/{name}/history", {200},
         path_parameters={"name": "fuzzreg"})
    case("delete it", "admin", "DELETE", "/policies/{name}", {204}, path_parameters={"name": "fuzzreg"})
    case("PolicyChange of a deletion (new_version)", "admin", "GET", "/policies/{name}/history", {200},
         path_parameters={"name": "fuzzreg"})
    case("EvalResult of an allow (reason, error)", "admin", "POST", "/policies/evaluate", {200},
         body={"kind": "notes", "claims": {"sub": "x", "roles": []}, "action": "list"})
    case("EvalResult of a failing policy (reason)", "admin", "POST", "/policies/evaluate", {200},
         body={"kind": "notes", "claims": {}, "action": "read"})
    case("ReloadView (error)", "admin", "POST", "/policies/reload", {200})
    case("ReplayChange (resource_id, reasons, after_error)", "admin", "POST", "/policies/{name}/replay", {200},
         path_parameters={"name": "notes"}, body={"source": "false"})

    print("class 2: every valid policy name reaches the /policies/{name} operations")
    for name in ("reload", "evaluate"):
        case(f"source of `{name}`", "admin", "GET", "/policies/{name}", path_parameters={"name": name})
        case(f"source of `{name}`, denied", "user", "GET", "/policies/{name}", path_parameters={"name": name})
        case(f"replace `{name}`", "admin", "PUT", "/policies/{name}",
             path_parameters={"name": name}, body="true", media_type="text/plain; charset=utf-8")
        case(f"history of `{name}`", "admin", "GET", "/policies/{name}/history", path_parameters={"name": name})
        case(f"delete `{name}`", "admin", "DELETE", "/policies/{name}", path_parameters={"name": name})

    print(f"regressions: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.stderr.write(__doc__ or "")
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
