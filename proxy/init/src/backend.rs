//! The iptables backend (legacy xtables or nf_tables) and how `auto` picks one.
//!
//! Both backends can hold rules in one namespace, but packets only see both when
//! the kernel runs both, and a pod whose other tooling uses one backend should
//! get its rules there too. Like Istio and Linkerd, `auto` looks at which backend
//! already holds rules and prefers nf_tables when neither does.

use std::fmt;

use crate::error::InitError;
use crate::family::Family;
use crate::save::SavedRules;

/// Which iptables implementation programs the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    /// `iptables-legacy-save`, `ip6tables-nft-save`, ...
    pub fn save_tool(self, family: Family) -> String {
        format!("{}-{}-save", family.tool_stem(), self.suffix())
    }

    /// `iptables-legacy-restore`, `ip6tables-nft-restore`, ...
    pub fn restore_tool(self, family: Family) -> String {
        format!("{}-{}-restore", family.tool_stem(), self.suffix())
    }

    fn suffix(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// Picks the backend from what each one's save tool showed; `None` means that
/// backend's tools could not be used here. Returns `None` when neither can.
///
/// Order: the backend already holding Weft's chains (so re-runs and `--remove`
/// find them), then the only backend holding any rules, then nf_tables.
pub fn choose(legacy: Option<&SavedRules>, nft: Option<&SavedRules>) -> Option<Backend> {
    match (legacy, nft) {
        (None, None) => None,
        (Some(_), None) => Some(Backend::Legacy),
        (None, Some(_)) => Some(Backend::Nft),
        (Some(legacy), Some(nft)) => {
            let (legacy_weft, nft_weft) = (legacy.holds_weft_chains(), nft.holds_weft_chains());
            if legacy_weft != nft_weft {
                return Some(if legacy_weft {
                    Backend::Legacy
                } else {
                    Backend::Nft
                });
            }
            if legacy.rule_count() > 0 && nft.rule_count() == 0 {
                Some(Backend::Legacy)
            } else {
                Some(Backend::Nft)
            }
        }
    }
}

/// Picks the backend from both probes (`iptables-*-save` results). A denied
/// probe is an error even when the other one worked: both backends need the
/// same capabilities, and `iptables-legacy-save` reads an empty dump without
/// any, which proves nothing.
pub fn decide(
    nft: Result<SavedRules, InitError>,
    legacy: Result<SavedRules, InitError>,
) -> Result<Backend, InitError> {
    match (nft, legacy) {
        // nft is the preferred backend, so its complaint is the one to show.
        (Err(err @ InitError::NotPermitted { .. }), _) => Err(err),
        (_, Err(err @ InitError::NotPermitted { .. })) => Err(err),
        (Err(nft), Err(legacy)) => Err(InitError::NoBackend {
            nft: Box::new(nft),
            legacy: Box::new(legacy),
        }),
        (nft, legacy) => {
            Ok(choose(legacy.as_ref().ok(), nft.as_ref().ok()).unwrap_or(Backend::Nft))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(text: &str) -> SavedRules {
        SavedRules::parse(text)
    }

    const EMPTY: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    const SOME_RULES: &str =
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n";
    const WEFT: &str = "*nat\n:OUTPUT ACCEPT [0:0]\n:WEFT_OUTPUT - [0:0]\n-A OUTPUT -p tcp -j WEFT_OUTPUT\nCOMMIT\n";

    #[test]
    fn tool_names_follow_debian_layout() {
        assert_eq!(
            Backend::Legacy.save_tool(Family::V4),
            "iptables-legacy-save"
        );
        assert_eq!(
            Backend::Nft.restore_tool(Family::V6),
            "ip6tables-nft-restore"
        );
    }

    #[test]
    fn prefers_nft_when_neither_holds_rules() {
        let (l, n) = (saved(EMPTY), saved(EMPTY));
        assert_eq!(choose(Some(&l), Some(&n)), Some(Backend::Nft));
    }

    #[test]
    fn follows_the_only_backend_with_rules() {
        let (l, n) = (saved(SOME_RULES), saved(EMPTY));
        assert_eq!(choose(Some(&l), Some(&n)), Some(Backend::Legacy));
        let (l, n) = (saved(EMPTY), saved(SOME_RULES));
        assert_eq!(choose(Some(&l), Some(&n)), Some(Backend::Nft));
    }

    #[test]
    fn prefers_nft_when_both_hold_rules() {
        let (l, n) = (saved(SOME_RULES), saved(SOME_RULES));
        assert_eq!(choose(Some(&l), Some(&n)), Some(Backend::Nft));
    }

    #[test]
    fn weft_chains_win_over_other_rules() {
        let (l, n) = (saved(WEFT), saved(SOME_RULES));
        assert_eq!(choose(Some(&l), Some(&n)), Some(Backend::Legacy));
        let (l, n) = (saved(SOME_RULES), saved(WEFT));
        assert_eq!(choose(Some(&l), Some(&n)), Some(Backend::Nft));
    }

    fn missing(tool: &str) -> InitError {
        InitError::ToolMissing { tool: tool.into() }
    }

    fn denied(tool: &str) -> InitError {
        InitError::NotPermitted {
            tool: tool.into(),
            detail: "Permission denied (you must be root)".into(),
        }
    }

    #[test]
    fn decide_refuses_when_either_probe_is_denied() {
        let err = decide(Ok(saved(EMPTY)), Err(denied("iptables-legacy-save"))).unwrap_err();
        assert!(matches!(err, InitError::NotPermitted { .. }), "{err:?}");
        let err = decide(Err(denied("iptables-nft-save")), Ok(saved(EMPTY))).unwrap_err();
        assert!(err.to_string().starts_with("iptables-nft-save"), "{err}");
    }

    #[test]
    fn decide_uses_the_working_backend_when_the_other_is_missing() {
        let found = decide(Err(missing("iptables-nft-save")), Ok(saved(EMPTY))).unwrap();
        assert_eq!(found, Backend::Legacy);
        let found = decide(Ok(saved(EMPTY)), Err(missing("iptables-legacy-save"))).unwrap();
        assert_eq!(found, Backend::Nft);
    }

    #[test]
    fn decide_reports_a_missing_capability_first() {
        let err = decide(
            Err(missing("iptables-nft-save")),
            Err(denied("iptables-legacy-save")),
        )
        .unwrap_err();
        assert!(matches!(err, InitError::NotPermitted { .. }), "{err:?}");
        let err = decide(
            Err(denied("iptables-nft-save")),
            Err(denied("iptables-legacy-save")),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("iptables-nft-save"), "{err}");
    }

    #[test]
    fn decide_names_both_missing_tools() {
        let err = decide(
            Err(missing("iptables-nft-save")),
            Err(missing("iptables-legacy-save")),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("iptables-nft-save not found on PATH"), "{err}");
        assert!(
            err.contains("iptables-legacy-save not found on PATH"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn uses_whichever_backend_is_usable() {
        let s = saved(SOME_RULES);
        assert_eq!(choose(Some(&s), None), Some(Backend::Legacy));
        assert_eq!(choose(None, Some(&s)), Some(Backend::Nft));
        assert_eq!(choose(None, None), None);
    }
}
