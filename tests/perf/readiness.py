"""Time from start to ready of one proxy process: starts the command given after `--`, polls an
HTTP readiness URL every millisecond until it answers 200 (bounded), prints the milliseconds as
JSON, then stops the process. Run inside a pod (weft-testbed exec) by tests/perf/bench.py."""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time


def ready(host, port, path):
    try:
        with socket.create_connection((host, port), timeout=0.2) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
            return head.split(b" ")[1:2] == [b"200"]
    except OSError:
        return False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url-host", default="127.0.0.1")
    p.add_argument("--url-port", type=int, required=True)
    p.add_argument("--url-path", default="/ready")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the command")
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    env = dict(os.environ)
    env.update(kv.split("=", 1) for kv in a.env)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = None
    try:
        while time.monotonic() - started < a.timeout:
            if ready(a.url_host, a.url_port, a.url_path):
                took = (time.monotonic() - started) * 1000.0
                break
            if proc.poll() is not None:
                break
            time.sleep(0.001)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    if took is None:
        sys.stderr.write(f"not ready within {a.timeout}s: {cmd}\n{err.decode(errors='replace')[-2000:]}\n")
        sys.exit(1)
    print(json.dumps({"ready_ms": took}))


if __name__ == "__main__":
    main()
