//! Log settings: the `WEFT_LOG` filter and the `WEFT_LOG_FORMAT` output format.

use std::fmt;
use std::str::FromStr;

use crate::SettingError;

const EXPECTED_FILTER: &str = r#"a log filter of comma-separated directives such as "warn,weft=info" (levels: trace, debug, info, warn, error, off)"#;
const EXPECTED_FORMAT: &str = r#""plain" or "json""#;
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// How the proxy writes its log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

impl FromStr for LogFormat {
    type Err = SettingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "plain" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            _ => Err(SettingError::new(EXPECTED_FORMAT, s)),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain => "plain",
            Self::Json => "json",
        })
    }
}

/// `LogFormat::from_str` as a function, for clap's `value_parser`.
pub fn parse_log_format(s: &str) -> Result<LogFormat, SettingError> {
    s.parse()
}

/// Checks a tracing-style filter ("warn,weft=info", "weft::detect=debug", "info") and returns it
/// trimmed. The proxy hands the text to its tracing filter; checking the syntax here lets the
/// injector refuse a typo before the pod starts instead of the proxy failing at start-up.
pub fn parse_log_filter(s: &str) -> Result<String, SettingError> {
    let err = || SettingError::new(EXPECTED_FILTER, s);
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err(err().because("empty"));
    }
    for directive in trimmed.split(',') {
        check_directive(directive.trim()).map_err(|reason| err().because(reason))?;
    }
    Ok(trimmed.to_owned())
}

fn check_directive(directive: &str) -> Result<(), String> {
    if directive.is_empty() {
        return Err("empty directive".to_owned());
    }
    let (selector, level) = match directive.rsplit_once('=') {
        // An '=' inside a span field filter ("target[span{f=1}]") is not the level separator.
        Some((selector, level)) if !level.contains(']') => (selector, Some(level)),
        _ => (directive, None),
    };
    if let Some(level) = level {
        if !is_level(level) {
            return Err(format!("unknown level {level:?}"));
        }
    } else if is_level(directive) {
        return Ok(());
    }
    let target = match selector.find('[') {
        Some(open) => {
            if !selector.ends_with(']') {
                return Err(format!("unclosed span filter in {directive:?}"));
            }
            &selector[..open]
        }
        None => selector,
    };
    let target_ok = target
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':'));
    if !target_ok || (target.is_empty() && !selector.starts_with('[')) {
        return Err(format!("{target:?} is not a module path"));
    }
    Ok(())
}

fn is_level(s: &str) -> bool {
    LEVELS.iter().any(|level| level.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_round_trips() {
        for f in [LogFormat::Plain, LogFormat::Json] {
            assert_eq!(f.to_string().parse::<LogFormat>().unwrap(), f);
        }
        assert_eq!(parse_log_format("json").unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::default(), LogFormat::Plain);
    }

    #[test]
    fn format_rejects_others() {
        for bad in ["", "text", "JSONL", "plain,json"] {
            let e = parse_log_format(bad).unwrap_err();
            assert!(e.to_string().contains(r#""plain" or "json""#), "{e}");
        }
    }

    #[test]
    fn filter_accepts_tracing_syntax() {
        for good in [
            "warn,weft=info",
            "info",
            "DEBUG",
            "off",
            "weft_proxy::detect=trace",
            "weft",
            "hyper=warn, h2=error ,weft=debug",
            "weft[conn{peer=1}]=debug",
            "[request]=trace",
        ] {
            assert!(
                parse_log_filter(good).is_ok(),
                "{good:?} should be accepted"
            );
        }
        assert_eq!(parse_log_filter(" info ").unwrap(), "info");
    }

    #[test]
    fn filter_rejects_typos() {
        assert_eq!(
            parse_log_filter("weft=verbose").unwrap_err().reason(),
            Some(r#"unknown level "verbose""#)
        );
        for bad in [
            "",
            "weft=",
            "=info",
            "warn,,info",
            "weft info",
            "we/ft=info",
            "weft[span=info",
            "info,",
        ] {
            assert!(parse_log_filter(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
