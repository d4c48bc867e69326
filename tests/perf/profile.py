"""Where Weft's time goes per request: the benchmark's weft topology (client and server pods,
mTLS between the proxies) with both proxies under valgrind's callgrind, a closed-loop load, and
callgrind_annotate's top functions per proxy (inclusive and self).

    sudo tests/perf/.venv/bin/python tests/perf/profile.py --bin-dir target/release \
        [--mode h1|h2|grpc] [--duration 15] [--out DIR]

The topology runs twice: with `--duration` seconds of load and with a fifth of it. Start-up,
certificates and discovery cost the same in both, so instructions per request are the difference
of the two totals divided by the difference in requests; the top-function tables are those of
the long run (start-up included, a small share).
Build first: `cargo build --release -p weft-proxy -p weft-testbed -p weft-perf -p weft-discovery
-p weft-identity`.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the harness's topology, testbed driver and helpers)


def wrapper(real: Path, out_dir: Path, into: Path) -> Path:
    """A stand-in weft-proxy: `init` runs as is, the sidecar runs under callgrind."""
    script = into / "weft-proxy"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = init ]; then exec {real} "$@"; fi\n'
        "exec valgrind --tool=callgrind --dump-instr=no "
        f'--callgrind-out-file={out_dir}/callgrind.out.%p {real} "$@"\n'
    )
    script.chmod(0o755)
    return script


def total_ir(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    return 0


def top(path: Path, inclusive: bool, n: int) -> list:
    p = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100", str(path)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    rows = []
    for line in p.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        rows.append((int(m.group(1).replace(",", "")), float(m.group(2)), m.group(3).strip()))
        if len(rows) == n:
            break
    return rows


def profile_once(a, bins, work, out, duration):
    """One topology with both proxies under callgrind and `duration` s of closed-loop load."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o1777)  # the proxies run as UID 2102 and write their profiles here
    wrap_dir = work / out.name
    wrap_dir.mkdir(exist_ok=True)
    profiled = dict(bins, **{"weft-proxy": wrapper(bins["weft-proxy"], out, wrap_dir)})
    bed = bench.Bed("weft", profiled, Path("/nonexistent"), work, work)
    bed.name += f"-{out.name}"
    try:
        bed.start()
        pids = bed.proxy_pids()
        url = f"http://{bed.server_ip}:{bench.HTTP_PORT}/"
        p = bed.exec("client", [bins["weft-load"], "http", "--url", url, "--mode", a.mode, "--rate", "0",
                                "--connections", str(a.connections), "--duration", str(duration),
                                "--warmup", "0"], timeout=600)
        load = json.loads(p.stdout)
        seen = bed.weft_mtls()
    finally:
        bed.down()
    # Each proxy writes its profile as it exits; valgrind runs in the proxy's process (pid).
    files = {pod: out / f"callgrind.out.{pid}" for pod, pid in pids.items()}
    deadline = time.monotonic() + 60
    while not all(f.is_file() for f in files.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pod, f in files.items():
        if not f.is_file():
            raise RuntimeError(f"no profile for the {pod} proxy at {f}")
    return {"requests": load["total_requests"], "errors": load["errors"], "mtls": seen, "profiles": files}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", type=Path, required=True)
    ap.add_argument("--mode", default="h1", choices=["h1", "h2", "grpc"])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if not shutil.which("valgrind") or not shutil.which("callgrind_annotate"):
        sys.exit("profile: valgrind is missing (apt-get install valgrind)")
    bins = {b: a.bin_dir.resolve() / b for b in ("weft-testbed", "weft-proxy", "weft-bench-server", "weft-load")}
    for b, p in bins.items():
        if not p.is_file():
            sys.exit(f"profile: {p} is missing (cargo build --release -p weft-proxy -p weft-testbed -p weft-perf -p weft-discovery -p weft-identity)")
    work = Path(tempfile.mkdtemp(prefix="weft-profile-"))
    work.chmod(0o755)
    out = (a.out or work / "out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for label, duration in (("short", a.duration / 5), ("long", a.duration)):
        runs[label] = profile_once(a, bins, work, out / label, duration)
    short, long_ = runs["short"], runs["long"]
    requests = long_["requests"] - short["requests"]
    report = {"mode": a.mode, "requests": {k: r["requests"] for k, r in runs.items()},
              "errors": long_["errors"] + short["errors"], "mtls": long_["mtls"], "proxies": {}}
    for pod, path in long_["profiles"].items():
        ir_long = total_ir(path)
        ir_short = total_ir(short["profiles"][pod])
        report["proxies"][pod] = {
            "profile": str(path),
            "instructions": {"long": ir_long, "short": ir_short},
            "instructions_per_request": (ir_long - ir_short) / requests if requests > 0 else None,
            "inclusive": top(path, True, a.top),
            "self": top(path, False, a.top),
        }
    (out / "profile.json").write_text(json.dumps(report, indent=1))
    print(f"requests {report['requests']} ({a.mode}, {a.connections} connections), {report['errors']} errors; "
          f"mTLS on the server proxy: {report['mtls']}")
    for pod, r in report["proxies"].items():
        per = r["instructions_per_request"]
        print(f"\n== {pod} proxy: {r['instructions']['long']:,} instructions (short run "
              f"{r['instructions']['short']:,}), {per:,.0f} per request ({r['profile']})")
        for kind in ("inclusive", "self"):
            print(f"-- {kind}")
            for ir, pct, fn in r[kind]:
                print(f"{pct:6.2f}%  {fn[:150]}")
    print(f"\nprofiles and profile.json in {out}")


if __name__ == "__main__":
    main()
