#!/usr/bin/env python3
"""Proxy memory per idle connection, and whether it is given back.

Runs one weft-proxy in a throwaway network namespace (REDIRECT of 127.0.0.2 to its outbound
listener, as in a pod), opens N connections through it that never send a byte (each becomes
opaque after the detection window) to a backend that holds them, reads the proxy's RSS, closes
them all, and reads it again a few seconds later. Prints one line:

    baseline <KiB>, <N> idle connections <KiB> (<KiB> each), after close <KiB>

Usage (root): tests/perf/idle_rss.py --proxy target/release/weft-proxy --connections 10000
"""
import argparse
import os
import subprocess
import sys
import time

BACKEND = r"""
import resource, selectors, socket
h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
sel = selectors.DefaultSelector()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.2", 9000)); s.listen(65535); s.setblocking(False)
sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is s:
            c, _ = s.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)
        else:
            try:
                data = key.fileobj.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj); key.fileobj.close()
"""

CLIENT = r"""
import resource, socket, sys
h = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
conns = []
for _ in range(int(sys.argv[1])):
    c = socket.socket(); c.connect(("127.0.0.2", 9000)); conns.append(c)
print("held", flush=True)
sys.stdin.readline()
for c in conns:
    c.close()
print("closed", flush=True)
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proxy_pid(parent):
    """The weft-proxy process under `ip netns exec` / setpriv."""
    for _ in range(50):
        out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
        if out:
            child = out[0]
            # setpriv execs the proxy, so the child of `ip` is the proxy itself.
            return int(child)
        time.sleep(0.05)
    sys.exit("weft-proxy did not start")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--hold", type=float, default=6.0, help="seconds the connections stay open")
    parser.add_argument("--settle", type=float, default=7.0, help="seconds after closing before the last reading")
    args = parser.parse_args()
    ns = f"weft-idle-rss-{os.getpid()}"
    run = lambda *cmd: subprocess.run(cmd, check=True)
    run("ip", "netns", "add", ns)
    procs = []
    try:
        run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        run("ip", "netns", "exec", ns, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.2",
            "-m", "owner", "!", "--uid-owner", "2102", "-j", "REDIRECT", "--to-ports", "4140")
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", BACKEND]))
        env = {**os.environ, "WEFT_LOG": "warn", "WEFT_DETECT_TIMEOUT": "500ms"}
        launcher = subprocess.Popen(["ip", "netns", "exec", ns, "setpriv", "--reuid", "2102", "--regid", "2102",
                                     "--clear-groups", args.proxy], env=env)
        procs.append(launcher)
        time.sleep(1.5)
        pid = proxy_pid(launcher.pid) if rss_kib(launcher.pid) == 0 else launcher.pid
        baseline = rss_kib(pid)
        client = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, str(args.connections)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(client)
        if client.stdout.readline().strip() != "held":
            sys.exit("the client could not open its connections")
        time.sleep(args.hold)
        held = rss_kib(pid)
        client.stdin.write("close\n")
        client.stdin.flush()
        client.stdout.readline()
        time.sleep(args.settle)
        after = rss_kib(pid)
        each = (held - baseline) / args.connections
        print(f"baseline {baseline} KiB, {args.connections} idle connections {held} KiB ({each:.1f} KiB each), "
              f"after close {after} KiB")
    finally:
        for proc in procs:
            proc.kill()
        subprocess.run(f"ip netns pids {ns} | xargs -r kill -9", shell=True)
        subprocess.run(["ip", "netns", "del", ns])


if __name__ == "__main__":
    main()
