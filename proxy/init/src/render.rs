//! The iptables-restore input for installing and removing Weft's nat rules:
//! pure functions from the flags and the current state to text.
//!
//! Both transactions are fed to `iptables-restore --noflush`, which commits a
//! table at once. In a noflush restore, declaring a chain (`:CHAIN - [0:0]`)
//! creates it or flushes it, so re-installing rewrites the chain contents in
//! the same atomic step instead of appending duplicates.

use std::fmt::Write;

use crate::args::InitArgs;
use crate::family::Family;
use crate::save::NatState;

/// Weft's inbound chain, jumped to from PREROUTING.
pub const INBOUND_CHAIN: &str = "WEFT_PREROUTING";
/// Weft's outbound chain, jumped to from OUTPUT.
pub const OUTBOUND_CHAIN: &str = "WEFT_OUTPUT";

/// The jump from PREROUTING, as iptables-save prints it.
pub fn inbound_jump() -> String {
    format!("-A PREROUTING -p tcp -j {INBOUND_CHAIN}")
}

/// The jump from OUTPUT, as iptables-save prints it.
pub fn outbound_jump() -> String {
    format!("-A OUTPUT -p tcp -j {OUTBOUND_CHAIN}")
}

/// The transaction installing (or rewriting) Weft's rules for `family`, given
/// what the nat table holds now: the jumps are added only when absent.
pub fn install(args: &InitArgs, family: Family, state: &NatState) -> String {
    let mut out = String::from("*nat\n");
    for chain in [INBOUND_CHAIN, OUTBOUND_CHAIN] {
        line(&mut out, format_args!(":{chain} - [0:0]"));
    }
    inbound_rules(&mut out, args);
    outbound_rules(&mut out, args, family);
    if !state.jumps_from("PREROUTING", INBOUND_CHAIN) {
        line(&mut out, format_args!("{}", inbound_jump()));
    }
    if !state.jumps_from("OUTPUT", OUTBOUND_CHAIN) {
        line(&mut out, format_args!("{}", outbound_jump()));
    }
    out.push_str("COMMIT\n");
    out
}

/// The transaction taking out whatever of Weft's `state` shows; `None` when
/// nothing is installed.
pub fn remove(state: &NatState) -> Option<String> {
    if state.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    // A chain must be empty and unreferenced before it can be deleted:
    // flush it by declaring it, drop the jumps into it, then delete it.
    for chain in &state.chains {
        line(&mut out, format_args!(":{chain} - [0:0]"));
    }
    for jump in &state.jumps {
        let rule = jump.strip_prefix("-A ").unwrap_or(jump);
        line(&mut out, format_args!("-D {rule}"));
    }
    for chain in &state.chains {
        line(&mut out, format_args!("-X {chain}"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// Inbound: skipped ports reach the app directly, all other TCP goes to the proxy.
fn inbound_rules(out: &mut String, args: &InitArgs) {
    for (low, high) in args.skip_inbound_ports.ranges() {
        let ports = port_match(low, high);
        line(
            out,
            format_args!("-A {INBOUND_CHAIN} -p tcp -m tcp --dport {ports} -j RETURN"),
        );
    }
    let port = args.inbound_port;
    line(
        out,
        format_args!("-A {INBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {port}"),
    );
}

/// Outbound: the proxy's own connections, loopback, skipped ports and networks
/// leave untouched; all other TCP goes to the proxy.
fn outbound_rules(out: &mut String, args: &InitArgs, family: Family) {
    let uid = args.proxy_uid;
    // Without this the proxy's upstream connections would be redirected back to itself.
    line(
        out,
        format_args!("-A {OUTBOUND_CHAIN} -m owner --uid-owner {uid} -j RETURN"),
    );
    // Connections to the pod's own addresses route over lo; they stay in the pod.
    line(out, format_args!("-A {OUTBOUND_CHAIN} -o lo -j RETURN"));
    let loopback = family.loopback();
    line(
        out,
        format_args!("-A {OUTBOUND_CHAIN} -d {loopback} -j RETURN"),
    );
    for (low, high) in args.skip_outbound_ports.ranges() {
        let ports = port_match(low, high);
        line(
            out,
            format_args!("-A {OUTBOUND_CHAIN} -p tcp -m tcp --dport {ports} -j RETURN"),
        );
    }
    let same_family = |c: &&weft_settings::Cidr| c.is_ipv6() == (family == Family::V6);
    for cidr in args.skip_outbound_cidrs.iter().filter(same_family) {
        line(out, format_args!("-A {OUTBOUND_CHAIN} -d {cidr} -j RETURN"));
    }
    let port = args.outbound_port;
    line(
        out,
        format_args!("-A {OUTBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {port}"),
    );
}

fn port_match(low: u16, high: u16) -> String {
    if low == high {
        low.to_string()
    } else {
        format!("{low}:{high}")
    }
}

fn line(out: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = out.write_fmt(args);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    fn args(flags: &[&str]) -> InitArgs {
        let argv = std::iter::once("init").chain(flags.iter().copied());
        Cli::try_parse_from(argv).unwrap().init
    }

    #[test]
    fn defaults_on_a_clean_namespace() {
        let text = install(&args(&[]), Family::V4, &NatState::default());
        assert_eq!(
            text,
            "\
*nat
:WEFT_PREROUTING - [0:0]
:WEFT_OUTPUT - [0:0]
-A WEFT_PREROUTING -p tcp -j REDIRECT --to-ports 4143
-A WEFT_OUTPUT -m owner --uid-owner 2102 -j RETURN
-A WEFT_OUTPUT -o lo -j RETURN
-A WEFT_OUTPUT -d 127.0.0.0/8 -j RETURN
-A WEFT_OUTPUT -p tcp -j REDIRECT --to-ports 4140
-A PREROUTING -p tcp -j WEFT_PREROUTING
-A OUTPUT -p tcp -j WEFT_OUTPUT
COMMIT
"
        );
    }

    #[test]
    fn every_flag_shapes_the_rules_in_order() {
        let a = args(&[
            "--proxy-uid=3000",
            "--inbound-port=5143",
            "--outbound-port=5140",
            "--skip-inbound-ports=22,9000-9010",
            "--skip-outbound-ports=3306,8000-8010",
            "--skip-outbound-cidrs=10.0.0.0/8,fd00::/8,192.168.1.1",
        ]);
        let text = install(&a, Family::V4, &NatState::default());
        assert_eq!(
            text,
            "\
*nat
:WEFT_PREROUTING - [0:0]
:WEFT_OUTPUT - [0:0]
-A WEFT_PREROUTING -p tcp -m tcp --dport 22 -j RETURN
-A WEFT_PREROUTING -p tcp -m tcp --dport 9000:9010 -j RETURN
-A WEFT_PREROUTING -p tcp -j REDIRECT --to-ports 5143
-A WEFT_OUTPUT -m owner --uid-owner 3000 -j RETURN
-A WEFT_OUTPUT -o lo -j RETURN
-A WEFT_OUTPUT -d 127.0.0.0/8 -j RETURN
-A WEFT_OUTPUT -p tcp -m tcp --dport 3306 -j RETURN
-A WEFT_OUTPUT -p tcp -m tcp --dport 8000:8010 -j RETURN
-A WEFT_OUTPUT -d 10.0.0.0/8 -j RETURN
-A WEFT_OUTPUT -d 192.168.1.1/32 -j RETURN
-A WEFT_OUTPUT -p tcp -j REDIRECT --to-ports 5140
-A PREROUTING -p tcp -j WEFT_PREROUTING
-A OUTPUT -p tcp -j WEFT_OUTPUT
COMMIT
"
        );
    }

    #[test]
    fn ipv6_uses_v6_loopback_and_only_v6_networks() {
        let a = args(&[
            "--skip-outbound-cidrs=10.0.0.0/8,fd00::/8",
            "--skip-outbound-ports=25",
        ]);
        let text = install(&a, Family::V6, &NatState::default());
        assert!(
            text.contains("-A WEFT_OUTPUT -d ::1/128 -j RETURN\n"),
            "{text}"
        );
        assert!(
            text.contains("-A WEFT_OUTPUT -d fd00::/8 -j RETURN\n"),
            "{text}"
        );
        assert!(!text.contains("10.0.0.0/8"), "{text}");
        assert!(!text.contains("127.0.0.0/8"), "{text}");
        assert!(text.contains("--dport 25 -j RETURN"), "{text}");
        let v4 = install(&a, Family::V4, &NatState::default());
        assert!(!v4.contains("fd00::/8"), "{v4}");
    }

    #[test]
    fn proxy_uid_is_exempt_before_anything_is_redirected() {
        let text = install(&args(&[]), Family::V4, &NatState::default());
        let exempt = text.find("--uid-owner 2102 -j RETURN").unwrap();
        let redirect = text.find("-A WEFT_OUTPUT -p tcp -j REDIRECT").unwrap();
        assert!(exempt < redirect);
        assert!(text.ends_with("COMMIT\n"));
    }

    #[test]
    fn existing_jumps_are_not_added_again() {
        let a = args(&[]);
        let text = install(&a, Family::V4, &NatState::fully_installed());
        assert!(!text.contains("-A PREROUTING"), "{text}");
        assert!(!text.contains("-A OUTPUT"), "{text}");
        // The chains are still declared, so their rules are rewritten.
        assert!(text.contains(":WEFT_OUTPUT - [0:0]\n"));

        let half = NatState {
            chains: vec![INBOUND_CHAIN.into(), OUTBOUND_CHAIN.into()],
            jumps: vec![outbound_jump()],
        };
        let text = install(&a, Family::V4, &half);
        assert!(
            text.contains("-A PREROUTING -p tcp -j WEFT_PREROUTING\n"),
            "{text}"
        );
        assert!(!text.contains("-A OUTPUT -p tcp"), "{text}");
    }

    #[test]
    fn remove_flushes_unhooks_then_deletes() {
        let text = remove(&NatState::fully_installed()).unwrap();
        assert_eq!(
            text,
            "\
*nat
:WEFT_PREROUTING - [0:0]
:WEFT_OUTPUT - [0:0]
-D PREROUTING -p tcp -j WEFT_PREROUTING
-D OUTPUT -p tcp -j WEFT_OUTPUT
-X WEFT_PREROUTING
-X WEFT_OUTPUT
COMMIT
"
        );
    }

    #[test]
    fn remove_takes_out_only_what_is_there_and_every_duplicate_jump() {
        let state = NatState {
            chains: vec![OUTBOUND_CHAIN.into()],
            jumps: vec![outbound_jump(), "-A OUTPUT -j WEFT_OUTPUT".into()],
        };
        let text = remove(&state).unwrap();
        assert!(!text.contains(INBOUND_CHAIN), "{text}");
        assert!(
            text.contains("-D OUTPUT -p tcp -j WEFT_OUTPUT\n-D OUTPUT -j WEFT_OUTPUT\n"),
            "{text}"
        );
        assert!(remove(&NatState::default()).is_none());
    }
}
