//! Logging through tracing: `WEFT_LOG` is the filter, `WEFT_LOG_FORMAT` picks plain or JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use weft_settings::LogFormat;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid WEFT_LOG={filter:?}: {source}")]
    Filter {
        filter: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("installing the log subscriber failed: {0}")]
    Install(String),
}

pub fn init(filter: &str, format: LogFormat) -> Result<(), LogError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| LogError::Filter {
        filter: filter.to_string(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        // Colour codes only for people at a terminal, never in collected pod logs.
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|err| LogError::Install(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filter_names_the_variable() {
        let err = init("weft=loud[", LogFormat::Plain).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(r#"invalid WEFT_LOG="weft=loud[""#),
            "{err}"
        );
    }
}
