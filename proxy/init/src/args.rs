//! The command-line flags of `weft-proxy init` (names are the contract in DESIGN.md).

use weft_settings::{Cidr, PortSet, parse_cidrs, parse_ports};

use crate::backend::Backend;

/// Flags of `weft-proxy init`.
#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {
    /// UID the proxy runs as; its own connections are never redirected.
    #[arg(long, value_name = "UID", default_value_t = 2102)]
    pub proxy_uid: u32,

    /// Port of the proxy's inbound listener; inbound TCP is redirected here.
    #[arg(long, value_name = "PORT", default_value_t = 4143, value_parser = clap::value_parser!(u16).range(1..))]
    pub inbound_port: u16,

    /// Port of the proxy's outbound listener; outbound TCP is redirected here.
    #[arg(long, value_name = "PORT", default_value_t = 4140, value_parser = clap::value_parser!(u16).range(1..))]
    pub outbound_port: u16,

    /// Inbound destination ports that reach the app directly, e.g. "25,3306,8000-8010".
    #[arg(long, value_name = "PORTS", default_value = "", value_parser = parse_ports)]
    pub skip_inbound_ports: PortSet,

    /// Outbound destination ports that bypass the proxy, e.g. "25,3306,8000-8010".
    #[arg(long, value_name = "PORTS", default_value = "", value_parser = parse_ports)]
    pub skip_outbound_ports: PortSet,

    /// Outbound destination networks that bypass the proxy, e.g. "10.0.0.0/8,fd00::/8".
    // The full path stops clap from treating the list as a repeatable flag:
    // one flag carries the whole comma-separated list.
    #[arg(long, value_name = "CIDRS", default_value = "", value_parser = parse_cidrs)]
    pub skip_outbound_cidrs: ::std::vec::Vec<Cidr>,

    /// Print the iptables-restore input instead of applying it; runs no command.
    #[arg(long)]
    pub dry_run: bool,

    /// Take Weft's rules out instead of installing them.
    #[arg(long)]
    pub remove: bool,

    /// iptables backend; `auto` uses the one already holding rules, else nft.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = IptablesMode::Auto)]
    pub iptables_mode: IptablesMode,

    /// IPv6 rules; `auto` installs them when the namespace's kernel has IPv6
    /// enabled and ip6tables can read its nat table, and skips them otherwise.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Ipv6Mode::Auto)]
    pub ipv6: Ipv6Mode,
}

/// `--iptables-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IptablesMode {
    Auto,
    Legacy,
    Nft,
}

impl IptablesMode {
    /// The backend this mode forces, if any.
    pub fn forced(self) -> Option<Backend> {
        match self {
            IptablesMode::Auto => None,
            IptablesMode::Legacy => Some(Backend::Legacy),
            IptablesMode::Nft => Some(Backend::Nft),
        }
    }
}

/// `--ipv6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6Mode {
    Auto,
    On,
    Off,
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

    #[test]
    fn defaults_match_the_contract() {
        let args = Cli::try_parse_from(["init"]).unwrap().init;
        assert_eq!(args.proxy_uid, 2102);
        assert_eq!(args.inbound_port, 4143);
        assert_eq!(args.outbound_port, 4140);
        assert_eq!(args.iptables_mode, IptablesMode::Auto);
        assert_eq!(args.ipv6, Ipv6Mode::Auto);
        assert!(!args.dry_run && !args.remove);
        assert!(args.skip_outbound_cidrs.is_empty());
    }

    #[test]
    fn long_flags_parse() {
        let args = Cli::try_parse_from([
            "init",
            "--proxy-uid=7",
            "--inbound-port=1",
            "--outbound-port=2",
            "--skip-inbound-ports=25",
            "--skip-outbound-ports=3306,8000-8010",
            "--skip-outbound-cidrs=10.0.0.0/8",
            "--dry-run",
            "--remove",
            "--iptables-mode=legacy",
            "--ipv6=off",
        ])
        .unwrap()
        .init;
        assert_eq!(
            (args.proxy_uid, args.inbound_port, args.outbound_port),
            (7, 1, 2)
        );
        assert_eq!(args.skip_outbound_ports.to_string(), "3306,8000-8010");
        assert_eq!(args.skip_inbound_ports.to_string(), "25");
        assert_eq!(args.skip_outbound_cidrs.len(), 1);
        assert_eq!(args.skip_outbound_cidrs[0].to_string(), "10.0.0.0/8");
        assert_eq!(args.iptables_mode.forced(), Some(Backend::Legacy));
        assert_eq!(args.ipv6, Ipv6Mode::Off);
        assert!(args.dry_run && args.remove);
    }

    #[test]
    fn bad_values_are_rejected_naming_the_flag() {
        for (flag, value) in [
            ("--skip-inbound-ports", "0"),
            ("--skip-outbound-ports", "http"),
            ("--skip-outbound-cidrs", "10.0.0.1/8"),
            ("--inbound-port", "0"),
            ("--outbound-port", "65536"),
        ] {
            let err = Cli::try_parse_from(["init", &format!("{flag}={value}")])
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(flag), "{err}");
        }
    }

    #[test]
    fn unknown_modes_are_rejected() {
        assert!(Cli::try_parse_from(["init", "--iptables-mode=nf"]).is_err());
        assert!(Cli::try_parse_from(["init", "--ipv6=yes"]).is_err());
    }
}
