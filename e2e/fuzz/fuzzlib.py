#!/usr/bin/env python3
"""Helpers for e2e/fuzz/run.sh: talk to a gatehouse server and summarise Schemathesis reports.

Standard library only, so it runs before the fuzzing venv exists and on a machine without curl.

    fuzzlib.py login BASE USER PASSWORD          print an access token (password grant)
    fuzzlib.py call BASE TOKEN METHOD PATH STATUS [JSON_BODY]
                                                 make one request; exit 1 unless it answers STATUS
                                                 (`!401`: anything but 401);
                                                 print the JSON answer's `id` if it has one
    fuzzlib.py reload-expect-error BASE TOKEN FILE
                                                 POST /policies/reload; exit 1 unless it answers 200
                                                 and lists FILE among the failed files
    fuzzlib.py summarize RUN_NAME REPORT_DIR     one block per distinct failure of one run, with a
                                                 curl command that replays it (token left as $TOKEN),
                                                 and which operations never answered 2xx
"""

from __future__ import annotations

import base64
import glob
import json
import os
import shlex
import sys
import urllib.error
import urllib.parse
import urllib.request


def _request(method: str, url: str, token: str | None = None, body: bytes | None = None,
             content_type: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def login(base: str, user: str, password: str) -> int:
    form = urllib.parse.urlencode({"grant_type": "password", "username": user, "password": password})
    status, _, body = _request("POST", base + "/token", body=form.encode(),
                               content_type="application/x-www-form-urlencoded")
    if status != 200:
        sys.stderr.write(f"login as {user} failed: {status} {body[:300]!r}\n")
        return 1
    print(json.loads(body)["access_token"])
    return 0


def call(base: str, token: str, method: str, path: str, expected: str, body: str | None = None) -> int:
    status, _, answer = _request(method, base + path, token=token or None,
                                 body=body.encode() if body is not None else None,
                                 content_type="application/json" if body is not None else None)
    if expected.startswith("!") and str(status) == expected[1:] or \
            not expected.startswith("!") and str(status) != expected:
        sys.stderr.write(f"{method} {path}: expected {expected}, got {status} {answer[:300]!r}\n")
        return 1
    try:
        value = json.loads(answer)
    except ValueError:
        return 0
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        print(value["id"])
    return 0


def reload_expect_error(base: str, token: str, file: str) -> int:
    status, _, answer = _request("POST", base + "/policies/reload", token=token)
    try:
        failed = json.loads(answer).get("failed", [])
    except ValueError:
        failed = []
    if status != 200 or not any(line.startswith(file + ":") for line in failed):
        sys.stderr.write(f"POST /policies/reload: expected 200 listing {file} as failed, got {status} "
                         f"{answer[:300]!r}\n")
        return 1
    return 0


# ---- report summary ---------------------------------------------------------------------------

def _decode(blob) -> str:
    if blob is None:
        return ""
    if isinstance(blob, dict):
        if "$base64" in blob:
            return base64.b64decode(blob["$base64"]).decode("utf-8", errors="replace")
        if "string" in blob:
            return blob["string"]
    if isinstance(blob, str):
        return blob
    return json.dumps(blob)


def _curl(request: dict) -> str:
    parts = ["curl", "-si", "-X", request["method"]]
    for name, values in (request.get("headers") or {}).items():
        if name.lower() in ("user-agent", "x-schemathesis-testcaseid", "accept", "accept-encoding",
                            "connection", "content-length"):
            continue
        for value in values:
            if name.lower() == "authorization":
                parts += ["-H", '"Authorization: Bearer $TOKEN"']
                continue
            parts += ["-H", shlex.quote(f"{name}: {value}")]
    body = _decode(request.get("body"))
    if body:
        parts += ["--data-binary", shlex.quote(body)]
    parts.append(shlex.quote(request["uri"]))
    return " ".join(parts)


def _size(interaction: dict) -> int:
    request = interaction.get("request")
    if not request:
        return 1 << 30
    return len(request["uri"]) + len(_decode(request.get("body")))


def _one_line(text: str, limit: int = 220) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summarize(run: str, report_dir: str) -> int:
    ndjson = sorted(glob.glob(os.path.join(report_dir, "*.ndjson")))
    reports = sorted(glob.glob(os.path.join(report_dir, "*.json")))
    if not ndjson or not reports:
        print(f"[{run}] no Schemathesis report in {report_dir}")
        return 1
    try:
        report = json.load(open(reports[-1], encoding="utf-8"))
    except ValueError:
        # Schemathesis was stopped (time-out) before it finished the report: use what it streamed.
        report = {"exit_code": "none (stopped)", "test_cases": {}}
    # One entry per (operation, check); each keeps its distinct messages and the first repro.
    seen: dict[tuple[str, str], dict] = {}
    # The status codes each operation answered (any phase), to show which never got a 2xx.
    statuses: dict[str, dict[int, int]] = {}
    operations: set[str] = set()
    for line in open(ndjson[-1], encoding="utf-8"):
        try:
            event = json.loads(line)
        except ValueError:  # a line cut off when Schemathesis was stopped
            continue
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished["recorder"]
        interactions = recorder.get("interactions") or {}
        if finished.get("phase") != "stateful":
            operations.add(recorder.get("label", "?"))
        for case_id, interaction in interactions.items():
            value = ((recorder.get("cases") or {}).get(case_id) or {}).get("value") or {}
            response = interaction.get("response")
            if value.get("method") and value.get("path") and response:
                counts = statuses.setdefault(f"{value['method'].upper()} {value['path']}", {})
                counts[response["status_code"]] = counts.get(response["status_code"], 0) + 1
        if finished.get("status") not in ("failure", "error"):
            continue
        for case_id, checks in (recorder.get("checks") or {}).items():
            for check in checks:
                if check.get("status") != "failure":
                    continue
                failure = (check.get("failure_info") or {}).get("failure") or {}
                operation = failure.get("operation") or recorder.get("label", "?")
                message = _one_line(failure.get("message") or failure.get("title") or "")
                interaction = interactions.get(case_id) or {}
                item = seen.setdefault((operation, check["name"]), {
                    "failure": failure, "interaction": interaction,
                    "phase": finished.get("phase"), "messages": {}})
                item["messages"][message] = item["messages"].get(message, 0) + 1
                # The shortest request that shows the failure makes the best repro.
                if interaction.get("request") and _size(interaction) < _size(item["interaction"]):
                    item.update(failure=failure, interaction=interaction, phase=finished.get("phase"))
    cases = report.get("test_cases", {})
    print(f"[{run}] {cases.get('generated', 0)} test cases, {len(seen)} failing operation/check pairs, "
          f"{len(report.get('errors') or [])} errors, exit code {report.get('exit_code')}, "
          f"{report.get('running_time', 0):.1f}s")
    no_2xx = [op for op in sorted(operations) if not any(200 <= code < 300 for code in statuses.get(op, {}))]
    print(f"  2xx answers on {len(operations) - len(no_2xx)} of {len(operations)} operations"
          + (f"; none on: " + "; ".join(
              f"{op} ({', '.join(f'{code} x{n}' for code, n in sorted(statuses.get(op, {}).items()))})"
              for op in no_2xx) if no_2xx else ""))
    for (operation, check), item in sorted(seen.items()):
        failure = item["failure"]
        total = sum(item["messages"].values())
        print(f"  - {failure.get('code', '?')} {check} on {operation}: {failure.get('title', '')} "
              f"({total} failing responses, first in the {item['phase']} phase)")
        messages = sorted(item["messages"].items(), key=lambda kv: -kv[1])
        for message, count in messages[:4]:
            print(f"      {count}x {message}")
        if len(messages) > 4:
            print(f"      ... and {len(messages) - 4} more distinct messages")
        interaction = item["interaction"]
        response = interaction.get("response") or {}
        if response:
            ctype = ",".join((response.get("headers") or {}).get("content-type", ["-"]))
            print(f"      answer: {response.get('status_code')} {ctype} "
                  f"{_one_line(_decode(response.get('content')), 160)}")
        if interaction.get("request"):
            print(f"      repro:  {_curl(interaction['request'])}")
    for error in report.get("errors") or []:
        print(f"  - error: {_one_line(json.dumps(error), 300)}")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    command, args = argv[1], argv[2:]
    if command == "login":
        return login(*args)
    if command == "call":
        return call(*args)
    if command == "reload-expect-error":
        return reload_expect_error(*args)
    if command == "summarize":
        return summarize(*args)
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
