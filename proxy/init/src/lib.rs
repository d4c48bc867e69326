//! `weft-proxy init`: installs the pod's iptables nat rules in the current
//! network namespace, or takes them out.
//!
//! Rendering is pure (`render`, from the flags and the parsed `iptables-save`
//! state); commands run only here and in `exec`. Each family's rules are one
//! `iptables-restore --noflush` transaction, so a failure leaves that family as
//! it was, and a re-run leaves the rule set unchanged. IPv4 goes first; if IPv6
//! then fails, IPv4 stays installed and a re-run completes the job.

mod args;
mod backend;
mod error;
mod exec;
mod family;
mod ipv6;
mod outcome;
mod render;
mod save;

pub use args::{InitArgs, IptablesMode, Ipv6Mode};
pub use backend::Backend;
pub use error::InitError;
pub use family::Family;
pub use outcome::{Change, FamilyReport, InitOutcome};
pub use render::{INBOUND_CHAIN, OUTBOUND_CHAIN};

use exec::{LOCK_WAIT_SECS, run_tool};
use save::{NatState, SavedRules};

/// Runs `weft-proxy init` with `args` in the current network namespace.
pub fn run(args: &InitArgs) -> Result<InitOutcome, InitError> {
    if args.dry_run {
        return Ok(dry_run(args));
    }
    let backend = match args.iptables_mode.forced() {
        Some(backend) => backend,
        None => detect_backend()?,
    };
    let v4_state = read_nat(backend, Family::V4)?;
    let mut reports = vec![program(args, backend, Family::V4, &v4_state)?];
    let v6 = match ipv6_state(args.ipv6, backend)? {
        Ok(state) => program(args, backend, Family::V6, &state)?,
        Err(reason) => FamilyReport {
            family: Family::V6,
            change: Change::Skipped { reason },
        },
    };
    reports.push(v6);
    Ok(InitOutcome::Done(reports))
}

/// The transactions for a namespace without Weft's rules (or, with `--remove`,
/// with all of them). Runs nothing, so it works anywhere, unprivileged.
fn dry_run(args: &InitArgs) -> InitOutcome {
    let families: &[Family] = match args.ipv6 {
        Ipv6Mode::Off => &[Family::V4],
        Ipv6Mode::Auto | Ipv6Mode::On => &[Family::V4, Family::V6],
    };
    let transactions = families
        .iter()
        .filter_map(|&family| {
            let text = if args.remove {
                render::remove(&NatState::fully_installed())?
            } else {
                render::install(args, family, &NatState::default())
            };
            Some((family, text))
        })
        .collect();
    InitOutcome::DryRun {
        backend: args.iptables_mode.forced(),
        transactions,
    }
}

/// Installs or removes one family's rules, given its current nat state.
fn program(
    args: &InitArgs,
    backend: Backend,
    family: Family,
    state: &NatState,
) -> Result<FamilyReport, InitError> {
    let change = if args.remove {
        match render::remove(state) {
            Some(text) => {
                restore(backend, family, &text)?;
                Change::Removed {
                    backend,
                    chains: state.chains.len(),
                    jumps: state.jumps.len(),
                }
            }
            None => Change::NothingToRemove { backend },
        }
    } else {
        let text = render::install(args, family, state);
        restore(backend, family, &text)?;
        let present = [
            state.jumps_from("PREROUTING", INBOUND_CHAIN),
            state.jumps_from("OUTPUT", OUTBOUND_CHAIN),
        ];
        Change::Installed {
            backend,
            jumps_added: present.iter().filter(|p| !**p).count(),
        }
    };
    Ok(FamilyReport { family, change })
}

fn read_nat(backend: Backend, family: Family) -> Result<NatState, InitError> {
    let dump = run_tool(&backend.save_tool(family), &["-t", "nat"], None)?;
    Ok(SavedRules::parse(&dump).nat_state())
}

fn restore(backend: Backend, family: Family, text: &str) -> Result<(), InitError> {
    let wait = format!("--wait={LOCK_WAIT_SECS}");
    run_tool(
        &backend.restore_tool(family),
        &["--noflush", &wait],
        Some(text),
    )
    .map(drop)
}

/// Looks at what each backend holds (all tables, IPv4) and picks one. When
/// neither can be read, a missing capability explains it before anything else.
fn detect_backend() -> Result<Backend, InitError> {
    let probe = |backend: Backend| {
        run_tool(&backend.save_tool(Family::V4), &[], None).map(|dump| SavedRules::parse(&dump))
    };
    backend::decide(probe(Backend::Nft), probe(Backend::Legacy))
}

/// The IPv6 nat state when IPv6 rules are to be programmed, else why not
/// (see `ipv6` for the `auto` policy). `--ipv6 on` turns every reason into an error.
fn ipv6_state(mode: Ipv6Mode, backend: Backend) -> Result<Result<NatState, String>, InitError> {
    match mode {
        Ipv6Mode::Off => Ok(Err("--ipv6 off".to_string())),
        Ipv6Mode::On => {
            ipv6::kernel_support().map_err(|reason| InitError::Ipv6Unavailable { reason })?;
            read_nat(backend, Family::V6).map(Ok)
        }
        Ipv6Mode::Auto => {
            if let Err(reason) = ipv6::kernel_support() {
                return Ok(Err(reason));
            }
            match read_nat(backend, Family::V6) {
                Ok(state) => Ok(Ok(state)),
                Err(err @ InitError::NotPermitted { .. }) => Err(err),
                Err(err) => Ok(Err(err.to_string())),
            }
        }
    }
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
    fn dry_run_renders_both_families_and_runs_nothing() {
        // No namespace, no privileges, no iptables needed: this must succeed anywhere.
        let outcome = run(&args(&[
            "--dry-run",
            "--skip-outbound-cidrs=10.0.0.0/8,fd00::/8",
        ]))
        .unwrap();
        let InitOutcome::DryRun {
            backend,
            transactions,
        } = &outcome
        else {
            panic!("{outcome:?}");
        };
        assert_eq!(*backend, None);
        assert_eq!(transactions.len(), 2);
        assert!(transactions[0].1.contains("-d 10.0.0.0/8 -j RETURN"));
        assert!(transactions[1].1.contains("-d fd00::/8 -j RETURN"));
        let text = outcome.to_string();
        assert!(text.contains("iptables-<auto>-restore --noflush"), "{text}");
        assert!(text.contains("-A OUTPUT -p tcp -j WEFT_OUTPUT"), "{text}");
    }

    #[test]
    fn dry_run_honours_ipv6_off_remove_and_forced_backend() {
        let outcome = run(&args(&[
            "--dry-run",
            "--remove",
            "--ipv6=off",
            "--iptables-mode=nft",
        ]))
        .unwrap();
        let InitOutcome::DryRun {
            backend,
            transactions,
        } = &outcome
        else {
            panic!("{outcome:?}");
        };
        assert_eq!(*backend, Some(Backend::Nft));
        assert_eq!(transactions.len(), 1);
        assert!(transactions[0].1.contains("-X WEFT_OUTPUT"));
        assert!(
            outcome
                .to_string()
                .contains("iptables-nft-restore --noflush")
        );
    }
}
