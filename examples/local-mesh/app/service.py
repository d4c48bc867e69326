#!/usr/bin/env python3
"""The local mesh demo's services, one program with a role per Deployment.

  pricing   GET /price?item=X   -> {"item", "cents", "pod"}
  catalog   GET /items          -> the items, each priced by a call to pricing
  web       GET /               -> a page summary built from a call to catalog
  traffic   calls web --requests times, prints a summary, then idles so its log stays readable

--fail-ratio R makes a serving role answer 503 to a share R of its requests, at random (seeded by
--fail-seed, so a run is reproducible): the demo's flaky catalog replica, which the callers'
proxies retry around and eject.

Services find each other by cluster DNS names, exactly as in Kubernetes; the apps know nothing of
the mesh: every call below is plain HTTP that the pods' weft-proxy sidecars intercept.
"""

import argparse
import collections
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POD = os.environ.get("POD_NAME") or socket.gethostname()
ITEMS = ["loom", "shuttle", "bobbin"]
TIMEOUT_S = 5


def log(msg):
    print(f"[{POD}] {msg}", flush=True)


def get_json(url):
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
        return json.load(resp)


def price_of(item):
    # Deterministic so every pricing replica agrees.
    return 100 + int(hashlib.sha256(item.encode()).hexdigest(), 16) % 900


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    role = None
    upstream = None
    fail_ratio = 0.0
    rng = random.Random(1)
    rng_lock = threading.Lock()

    def log_message(self, fmt, *args):
        log(fmt % args)

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.fail_ratio:
            with self.rng_lock:
                fail = self.rng.random() < self.fail_ratio
            if fail:
                self.send_json(503, {"error": f"{self.role}: injected failure", "pod": POD})
                return
        try:
            self.send_json(200, self.answer())
        except (urllib.error.URLError, OSError, ValueError) as e:
            self.send_json(502, {"error": f"{self.role} -> {self.upstream}: {e}", "pod": POD})

    def answer(self):
        path, _, query = self.path.partition("?")
        if self.role == "pricing":
            item = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("item", "")
            return {"item": item, "cents": price_of(item), "pod": POD}
        if self.role == "catalog":
            priced = [get_json(f"{self.upstream}/price?item={item}") for item in ITEMS]
            return {"items": priced, "pod": POD}
        catalog = get_json(f"{self.upstream}/items")
        total = sum(i["cents"] for i in catalog["items"])
        return {"web": POD, "catalog": catalog["pod"], "items": len(catalog["items"]), "total": total}


def serve(role, port, upstream, fail_ratio, fail_seed):
    Handler.role = role
    Handler.upstream = upstream
    Handler.fail_ratio = fail_ratio
    Handler.rng.seed(fail_seed)
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    log(f"{role} listening on :{port}" + (f", calling {upstream}" if upstream else "")
        + (f", failing {fail_ratio:.0%} of requests" if fail_ratio else ""))
    server.serve_forever()


def wait_until_serving(target, limit_s=60):
    """The generator may start before web and its upstreams are ready; wait (bounded) for one success."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            get_json(target)
            return
        except (urllib.error.URLError, OSError, ValueError) as e:
            if time.monotonic() > deadline:
                sys.exit(f"traffic: {target} still failing after {limit_s} s: {e}")
            time.sleep(0.5)


def traffic(target, requests, interval):
    wait_until_serving(target)
    log(f"traffic start: {requests} requests to {target}")
    statuses = collections.Counter()
    catalogs = collections.Counter()
    for n in range(requests):
        try:
            body = get_json(target)
            statuses[200] += 1
            catalogs[body.get("catalog", "?")] += 1
        except urllib.error.HTTPError as e:
            statuses[e.code] += 1
        except (urllib.error.URLError, OSError, ValueError) as e:
            statuses["error"] += 1
            log(f"request {n}: {e}")
        time.sleep(interval)
    log(f"traffic done: {requests} requests, status {dict(statuses)}, served by catalog pods {dict(catalogs)}")
    # Stay up: the run script reads this log and the proxies' counters before tearing down.
    while True:
        time.sleep(3600)


def main():
    parser = argparse.ArgumentParser(description="local mesh demo service")
    parser.add_argument("role", choices=["web", "catalog", "pricing", "traffic"])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--upstream", help="base URL of the service this one calls")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--fail-ratio", type=float, default=0.0,
                        help="answer 503 to this share of requests, at random")
    parser.add_argument("--fail-seed", type=int, default=1, help="seed of --fail-ratio's draws")
    args = parser.parse_args()
    if args.role != "pricing" and not args.upstream:
        sys.exit(f"{args.role}: --upstream is required")
    if args.role == "traffic":
        traffic(args.upstream, args.requests, args.interval)
    else:
        serve(args.role, args.port, args.upstream, args.fail_ratio, args.fail_seed)


if __name__ == "__main__":
    main()
