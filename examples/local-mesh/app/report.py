#!/usr/bin/env python3
"""Prints what each pod's weft-proxy saw, from /metrics texts saved as <dir>/<pod>.metrics.

One row per pod: requests by direction with their 2xx/5xx responses, accepted TCP
connections, and the resilience decisions of its outbound side (retries sent, endpoints its
circuit breakers ejected); then each pod's outbound requests by upstream. The catalog rows'
inbound counts show how web's calls were spread, and the flaky replica's 5xx how web's proxy
retried around it: web's own outbound 5xx stay at 0. Stdlib only.
"""

import collections
import pathlib
import re
import sys

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text):
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        yield m.group(1), dict(LABEL.findall(m.group(2) or "")), value


def total(text, name, **want):
    return sum(v for n, labels, v in samples(text) if n == name and all(labels.get(k) == w for k, w in want.items()))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: report.py DIR_OF_POD_METRICS")
    files = sorted(pathlib.Path(sys.argv[1]).glob("*.metrics"))
    if not files:
        sys.exit(f"report.py: no *.metrics files in {sys.argv[1]}")
    header = ("pod", "in req", "in 2xx", "in 5xx", "out req", "out 2xx", "out 5xx", "tcp in", "tcp out",
              "retries", "ejections")
    rows = []
    upstreams = collections.defaultdict(float)
    for f in files:
        text = f.read_text()
        pod = f.stem
        row = [pod]
        for direction in ("inbound", "outbound"):
            row.append(total(text, "weft_request_total", direction=direction))
            codes = [(labels.get("status_code", ""), v) for n, labels, v in samples(text)
                     if n == "weft_response_total" and labels.get("direction") == direction]
            row.append(sum(v for c, v in codes if c.startswith("2")))
            row.append(sum(v for c, v in codes if c.startswith("5")))
        row.append(total(text, "weft_tcp_open_total", direction="inbound"))
        row.append(total(text, "weft_tcp_open_total", direction="outbound"))
        row.append(total(text, "weft_retry_total", direction="outbound"))
        row.append(total(text, "weft_breaker_state_changes_total", direction="outbound", state="open"))
        rows.append([row[0]] + [f"{int(v)}" for v in row[1:]])
        for n, labels, v in samples(text):
            if n == "weft_request_total" and labels.get("direction") == "outbound":
                upstreams[(pod, labels.get("upstream", "?"))] += v

    widths = [max(len(str(r[i])) for r in rows + [list(header)]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    if upstreams:
        print("\noutbound requests by upstream (the logical service discovery named, else the original destination):")
        for (pod, upstream), v in sorted(upstreams.items()):
            print(f"  {pod:<32} -> {upstream:<24} {int(v)}")


if __name__ == "__main__":
    main()
