#!/usr/bin/env python3
"""bench/rewrite.py POLICY_FILE URL TOKEN N [SECONDS]

Rewrites POLICY_FILE N times within about SECONDS (default 28), the way editors save (write a
temp file, rename it over the policy), alternating a version that lets the owner read and one
that denies reads. After each save it asks URL with TOKEN until the answer is the one the new
version decides (200 or 403) and records how long that took (save-to-effect).

Prints: rewrites=N median_ms=... p95_ms=... max_ms=... timeouts=... (one line).
"""
import http.client
import os
import statistics
import sys
import time
import urllib.parse

ALLOW = """// bench/rewrite.py version {n}: the owner may read
if action == "read" {{ resource.owner == claims.sub }} else {{ true }}
"""
DENY = """// bench/rewrite.py version {n}: nobody may read
if action == "read" {{ #{{ allow: false, reason: "reads are off (version {n})" }} }} else {{ true }}
"""


def main():
    path, url, token, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 28.0
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    headers = {"Authorization": f"Bearer {token}"}

    def status():
        nonlocal conn
        try:
            conn.request("GET", u.path, headers=headers)
            r = conn.getresponse()
            r.read()
            return r.status
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
            return None

    delays, timeouts = [], 0
    gap = seconds / n
    for i in range(n):
        deny = i % 2 == 0
        text = (DENY if deny else ALLOW).format(n=i)
        want = 403 if deny else 200
        tmp = os.path.join(os.path.dirname(path), f".rewrite-{i}.tmp")
        started = time.monotonic()
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, path)
        saved = time.monotonic()
        while status() != want:
            if time.monotonic() - saved > 5:
                timeouts += 1
                break
            time.sleep(0.002)
        else:
            delays.append((time.monotonic() - saved) * 1000)
        rest = gap - (time.monotonic() - started)
        if rest > 0:
            time.sleep(rest)
    delays.sort()
    p95 = delays[int(len(delays) * 0.95) - 1] if delays else float("nan")
    print(
        f"rewrites={n} median_ms={statistics.median(delays) if delays else float('nan'):.0f} "
        f"p95_ms={p95:.0f} max_ms={max(delays) if delays else float('nan'):.0f} timeouts={timeouts}"
    )


if __name__ == "__main__":
    main()
