//! `weft-proxy init` against real iptables, each test in network namespaces it
//! creates and removes itself (on drop, also on panic). Needs root, `ip`,
//! iptables (both backends), socat and setpriv.

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_weft-proxy");

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("weft-init-{}-{n}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let netns = Netns { name };
        netns.sh("ip link set lo up");
        netns
    }

    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs a shell command in the namespace; it must succeed.
    fn sh(&self, script: &str) -> String {
        let out = run_ok(self.cmd("sh").args(["-c", script]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `weft-proxy init FLAGS` in the namespace.
    fn init(&self, flags: &[&str]) -> Output {
        let mut cmd = self.cmd(BIN);
        cmd.arg("init").args(flags);
        output(&mut cmd)
    }

    /// `init` that must succeed; returns its stdout.
    fn init_ok(&self, flags: &[&str]) -> String {
        let out = self.init(flags);
        assert!(
            out.status.success(),
            "weft-proxy init {flags:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `<tool> -t nat` output without comments and counters, for comparing.
    fn nat(&self, tool: &str) -> String {
        normalize(&self.sh(&format!("{tool} -t nat")))
    }

    /// Every table of both backends and both families, for "nothing changed" checks.
    fn everything(&self) -> String {
        [
            "iptables-nft-save",
            "iptables-legacy-save",
            "ip6tables-nft-save",
            "ip6tables-legacy-save",
        ]
        .iter()
        .map(|tool| format!("== {tool}\n{}", normalize(&self.sh(tool))))
        .collect()
    }

    /// Starts a long-running process in the namespace, killed on drop.
    fn spawn(&self, program: &str, args: &[&str]) -> Spawned {
        let child = self
            .cmd(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Spawned(child)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child process, killed and reaped on drop.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Drops comments (they carry timestamps) and chain counters.
fn normalize(dump: &str) -> String {
    dump.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| match (line.starts_with(':'), line.rfind(" [")) {
            (true, Some(at)) => &line[..at],
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

const V4_RULES: &[&str] = &[
    ":WEFT_PREROUTING -",
    ":WEFT_OUTPUT -",
    "-A PREROUTING -p tcp -j WEFT_PREROUTING",
    "-A OUTPUT -p tcp -j WEFT_OUTPUT",
    "-A WEFT_PREROUTING -p tcp -m tcp --dport 22 -j RETURN",
    "-A WEFT_PREROUTING -p tcp -j REDIRECT --to-ports 4143",
    "-A WEFT_OUTPUT -m owner --uid-owner 2102 -j RETURN",
    "-A WEFT_OUTPUT -o lo -j RETURN",
    "-A WEFT_OUTPUT -d 127.0.0.0/8 -j RETURN",
    "-A WEFT_OUTPUT -p tcp -m tcp --dport 8000:8010 -j RETURN",
    "-A WEFT_OUTPUT -d 10.0.0.0/8 -j RETURN",
    "-A WEFT_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
];

const FLAGS: &[&str] = &[
    "--skip-inbound-ports=22",
    "--skip-outbound-ports=8000-8010",
    "--skip-outbound-cidrs=10.0.0.0/8,fd00::/8",
];

fn assert_has(dump: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            dump.lines().any(|l| l == *line),
            "missing {line:?} in:\n{dump}"
        );
    }
}

/// Install, re-install, remove and remove again with one forced backend.
fn lifecycle(mode: &str) {
    let ns = Netns::new();
    let (v4, v6) = (
        format!("iptables-{mode}-save"),
        format!("ip6tables-{mode}-save"),
    );
    let mut flags = FLAGS.to_vec();
    let mode_flag = format!("--iptables-mode={mode}");
    flags.push(&mode_flag);

    let said = ns.init_ok(&flags);
    assert!(
        said.contains(&format!("IPv4 (iptables-{mode}): installed")),
        "{said}"
    );
    assert!(
        said.contains(&format!("IPv6 (ip6tables-{mode}): installed")),
        "{said}"
    );
    let first = ns.everything();
    assert_has(&ns.nat(&v4), V4_RULES);
    let v6_rules = ns.nat(&v6);
    assert_has(
        &v6_rules,
        &[
            "-A OUTPUT -p tcp -j WEFT_OUTPUT",
            "-A WEFT_OUTPUT -d ::1/128 -j RETURN",
            "-A WEFT_OUTPUT -d fd00::/8 -j RETURN",
            "-A WEFT_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
        ],
    );
    assert!(!v6_rules.contains("10.0.0.0/8"), "{v6_rules}");

    let said = ns.init_ok(&flags);
    assert!(said.contains("jumps already in place"), "{said}");
    assert_eq!(first, ns.everything(), "a second run changed the rules");

    let said = ns.init_ok(&[&mode_flag, "--remove"]);
    assert!(said.contains("removed 2 chain(s) and 2 jump(s)"), "{said}");
    for tool in [&v4, &v6] {
        let dump = ns.nat(tool);
        assert!(
            !dump.contains("WEFT"),
            "{tool} still holds Weft rules:\n{dump}"
        );
    }

    let said = ns.init_ok(&[&mode_flag, "--remove"]);
    assert!(said.contains("nothing to remove"), "{said}");
}

#[test]
fn nft_install_is_idempotent_and_removable() {
    lifecycle("nft");
}

#[test]
fn legacy_install_is_idempotent_and_removable() {
    lifecycle("legacy");
}

#[test]
fn auto_prefers_nft_in_a_clean_namespace() {
    let ns = Netns::new();
    let said = ns.init_ok(&[]);
    assert!(said.contains("IPv4 (iptables-nft): installed"), "{said}");
    assert!(ns.nat("iptables-nft-save").contains(":WEFT_OUTPUT -"));
    assert!(!ns.nat("iptables-legacy-save").contains("WEFT"));
}

#[test]
fn auto_follows_the_backend_already_holding_rules() {
    let ns = Netns::new();
    ns.sh("iptables-legacy -A INPUT -p tcp --dport 9 -j ACCEPT");
    let said = ns.init_ok(&[]);
    assert!(said.contains("IPv4 (iptables-legacy): installed"), "{said}");
    assert!(ns.nat("iptables-legacy-save").contains(":WEFT_OUTPUT -"));
    assert!(!ns.nat("iptables-nft-save").contains("WEFT"));
    // Auto removal finds the rules where they are.
    let said = ns.init_ok(&["--remove"]);
    assert!(said.contains("IPv4 (iptables-legacy): removed"), "{said}");
    assert!(!ns.nat("iptables-legacy-save").contains("WEFT"));
}

#[test]
fn ipv6_off_leaves_ip6tables_alone() {
    let ns = Netns::new();
    let said = ns.init_ok(&["--ipv6=off", "--iptables-mode=nft"]);
    assert!(said.contains("IPv6: skipped: --ipv6 off"), "{said}");
    assert!(ns.nat("iptables-nft-save").contains(":WEFT_OUTPUT -"));
    assert!(!ns.nat("ip6tables-nft-save").contains("WEFT"));
}

#[test]
fn dry_run_prints_the_rules_and_changes_nothing() {
    let ns = Netns::new();
    let before = ns.everything();
    let said = ns.init_ok(&[&["--dry-run"], FLAGS].concat());
    assert_eq!(before, ns.everything(), "--dry-run changed the rules");
    assert_has(&normalize(&said), V4_RULES);
    assert!(
        said.contains("-A WEFT_OUTPUT -d ::1/128 -j RETURN"),
        "{said}"
    );
}

#[test]
fn missing_capability_is_one_line_naming_it() {
    let ns = Netns::new();
    let out = output(ns.cmd("setpriv").args([
        "--bounding-set=-net_admin,-net_raw",
        "--inh-caps=-net_admin,-net_raw",
        BIN,
        "init",
    ]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_NET_ADMIN"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!ns.nat("iptables-nft-save").contains("WEFT"));
}

#[test]
fn missing_iptables_is_one_line_naming_the_package() {
    let ns = Netns::new();
    let out = output(
        ns.cmd("env")
            .args(["PATH=/nonexistent", BIN, "init", "--iptables-mode=nft"]),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("iptables-nft-save not found on PATH"), "{err}");
    assert!(err.contains("apt-get install iptables"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Connects from the pod to `target` (as `uid` when given) and returns what
/// the server said, retrying while listeners start (bounded).
fn fetch(pod: &Netns, target: &str, uid: Option<u32>) -> String {
    let socat = format!("socat -T 3 - TCP:{target},connect-timeout=3");
    let script = match uid {
        Some(uid) => format!("setpriv --reuid {uid} --regid {uid} --clear-groups {socat}"),
        None => socat,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = output(pod.cmd("sh").args(["-c", &script]));
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !said.is_empty() || Instant::now() > deadline {
            return said;
        }
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn app_traffic_is_redirected_but_the_proxy_uid_and_skipped_ports_are_not() {
    // pod (198.18.0.1) <-veth-> peer (198.18.0.2); the peer answers "direct",
    // a stand-in for the proxy's outbound listener in the pod answers "redirected".
    let pod = Netns::new();
    let peer = Netns::new();
    pod.sh(&format!(
        "ip link add weft0 type veth peer name weft0 netns {peer} \
         && ip addr add 198.18.0.1/30 dev weft0 && ip link set weft0 up",
        peer = peer.name
    ));
    peer.sh("ip addr add 198.18.0.2/30 dev weft0 && ip link set weft0 up");
    let _proxy = pod.spawn(
        "socat",
        &[
            "TCP-LISTEN:4140,bind=127.0.0.1,reuseaddr,fork",
            "SYSTEM:echo redirected",
        ],
    );
    let _server = peer.spawn(
        "socat",
        &["TCP-LISTEN:80,reuseaddr,fork", "SYSTEM:echo direct"],
    );
    let _skipped = peer.spawn(
        "socat",
        &["TCP-LISTEN:8005,reuseaddr,fork", "SYSTEM:echo direct"],
    );
    assert_eq!(
        fetch(&pod, "198.18.0.2:80", None),
        "direct",
        "peer not reachable before init"
    );

    pod.init_ok(&[&["--iptables-mode=nft"], FLAGS].concat());

    assert_eq!(fetch(&pod, "198.18.0.2:80", None), "redirected");
    assert_eq!(fetch(&pod, "198.18.0.2:80", Some(2102)), "direct");
    assert_eq!(fetch(&pod, "198.18.0.2:8005", None), "direct");
    // Another uid is an app like any other.
    assert_eq!(fetch(&pod, "198.18.0.2:80", Some(1000)), "redirected");

    pod.init_ok(&["--remove"]);
    assert_eq!(fetch(&pod, "198.18.0.2:80", None), "direct");
}
