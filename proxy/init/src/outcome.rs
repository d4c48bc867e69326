//! What `weft-proxy init` did, printed for the init container's log.

use std::fmt;

use crate::backend::Backend;
use crate::family::Family;
use crate::render::{INBOUND_CHAIN, OUTBOUND_CHAIN};

/// The result of `weft-proxy init`; `Display` prints it for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// `--dry-run`: the transactions that would be fed to iptables-restore.
    DryRun {
        /// The forced backend, or `None` for `auto`.
        backend: Option<Backend>,
        transactions: Vec<(Family, String)>,
    },
    /// What was done for each family.
    Done(Vec<FamilyReport>),
}

/// What happened to one family's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyReport {
    pub family: Family,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Chains written; `jumps_added` counts the jumps that were missing.
    Installed {
        backend: Backend,
        jumps_added: usize,
    },
    /// Chains and jumps taken out.
    Removed {
        backend: Backend,
        chains: usize,
        jumps: usize,
    },
    /// `--remove` found nothing of Weft's.
    NothingToRemove { backend: Backend },
    /// The family was left alone, and why.
    Skipped { reason: String },
}

impl fmt::Display for InitOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitOutcome::DryRun {
                backend,
                transactions,
            } => {
                writeln!(f, "# weft-proxy init --dry-run: nothing was changed.")?;
                for (family, text) in transactions {
                    let tool = match backend {
                        Some(b) => b.restore_tool(*family),
                        None => format!("{}-<auto>-restore", family.tool_stem()),
                    };
                    writeln!(f, "# {family}: input of `{tool} --noflush`")?;
                    f.write_str(text)?;
                }
                if backend.is_none() {
                    writeln!(
                        f,
                        "# <auto>: the backend already holding rules in the namespace, else nft."
                    )?;
                }
                Ok(())
            }
            InitOutcome::Done(reports) => {
                for (i, report) in reports.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{report}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for FamilyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = self.family;
        let stem = family.tool_stem();
        match &self.change {
            Change::Installed {
                backend,
                jumps_added: 0,
            } => write!(
                f,
                "{family} ({stem}-{backend}): rewrote {INBOUND_CHAIN} and {OUTBOUND_CHAIN}; jumps already in place"
            ),
            Change::Installed {
                backend,
                jumps_added,
            } => write!(
                f,
                "{family} ({stem}-{backend}): installed {INBOUND_CHAIN} and {OUTBOUND_CHAIN}, added {jumps_added} jump(s) from PREROUTING/OUTPUT"
            ),
            Change::Removed {
                backend,
                chains,
                jumps,
            } => write!(
                f,
                "{family} ({stem}-{backend}): removed {chains} chain(s) and {jumps} jump(s)"
            ),
            Change::NothingToRemove { backend } => write!(
                f,
                "{family} ({stem}-{backend}): no Weft rules installed, nothing to remove"
            ),
            Change::Skipped { reason } => write!(f, "{family}: skipped: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_one_line_per_family() {
        let outcome = InitOutcome::Done(vec![
            FamilyReport {
                family: Family::V4,
                change: Change::Installed {
                    backend: Backend::Nft,
                    jumps_added: 2,
                },
            },
            FamilyReport {
                family: Family::V6,
                change: Change::Skipped {
                    reason: "IPv6 is disabled".into(),
                },
            },
        ]);
        assert_eq!(
            outcome.to_string(),
            "IPv4 (iptables-nft): installed WEFT_PREROUTING and WEFT_OUTPUT, added 2 jump(s) from PREROUTING/OUTPUT\nIPv6: skipped: IPv6 is disabled"
        );
    }

    #[test]
    fn says_when_nothing_was_there_to_remove() {
        let report = FamilyReport {
            family: Family::V6,
            change: Change::NothingToRemove {
                backend: Backend::Legacy,
            },
        };
        assert_eq!(
            report.to_string(),
            "IPv6 (ip6tables-legacy): no Weft rules installed, nothing to remove"
        );
    }

    #[test]
    fn dry_run_prints_each_transaction_under_its_tool() {
        let outcome = InitOutcome::DryRun {
            backend: Some(Backend::Legacy),
            transactions: vec![(Family::V4, "*nat\nCOMMIT\n".into())],
        };
        assert_eq!(
            outcome.to_string(),
            "# weft-proxy init --dry-run: nothing was changed.\n# IPv4: input of `iptables-legacy-restore --noflush`\n*nat\nCOMMIT\n"
        );
    }
}
