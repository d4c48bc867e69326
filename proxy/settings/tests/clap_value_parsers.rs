//! The parsers are the proxy's clap `value_parser`s; this pins that they plug in and that an
//! invalid value's message reaches the user naming the flag.

use std::time::Duration;

use clap::Parser;
use weft_settings::{Cidr, LogFormat, PortSet};

#[derive(Parser, Debug)]
struct Flags {
    #[arg(long, env = "WEFT_TEST_DETECT_TIMEOUT", value_parser = weft_settings::parse_duration, default_value = "1s")]
    detect_timeout: Duration,
    #[arg(long, value_parser = weft_settings::parse_ports, default_value = "")]
    opaque_ports: PortSet,
    // A plain `Vec<T>` field makes clap collect many values; the fully qualified path opts out,
    // so one value holding the whole comma-separated list is parsed by `parse_cidrs`.
    #[arg(long, value_parser = weft_settings::parse_cidrs, default_value = "")]
    skip_outbound_cidrs: ::std::vec::Vec<Cidr>,
    #[arg(long, value_parser = weft_settings::parse_ratio, default_value = "1.0")]
    ratio: f64,
    #[arg(long, value_parser = weft_settings::parse_count, default_value = "1")]
    worker_threads: u32,
    #[arg(long, value_parser = weft_settings::parse_log_format, default_value = "plain")]
    log_format: LogFormat,
    #[arg(long, value_parser = weft_settings::parse_log_filter, default_value = "warn,weft=info")]
    log: String,
}

#[test]
fn parsers_work_as_clap_value_parsers() {
    let flags = Flags::try_parse_from([
        "weft-proxy",
        "--detect-timeout",
        "250ms",
        "--opaque-ports",
        "25,8000-8010",
        "--skip-outbound-cidrs",
        "10.0.0.0/8,fd00::/8",
        "--worker-threads",
        "2",
        "--log-format",
        "json",
    ])
    .unwrap();
    assert_eq!(flags.detect_timeout, Duration::from_millis(250));
    assert!(flags.opaque_ports.contains(8005));
    assert_eq!(flags.skip_outbound_cidrs.len(), 2);
    assert_eq!(flags.worker_threads, 2);
    assert_eq!(flags.log_format, LogFormat::Json);
    assert_eq!(flags.ratio, 1.0);
    assert_eq!(flags.log, "warn,weft=info");
}

#[test]
fn defaults_parse() {
    let flags = Flags::try_parse_from(["weft-proxy"]).unwrap();
    assert_eq!(flags.detect_timeout, Duration::from_secs(1));
    assert!(flags.opaque_ports.is_empty());
    assert!(flags.skip_outbound_cidrs.is_empty());
}

#[test]
fn invalid_value_names_flag_and_expectation() {
    let err = Flags::try_parse_from(["weft-proxy", "--detect-timeout=-3s"]).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("--detect-timeout"), "{text}");
    assert!(
        text.contains("negative durations are not allowed"),
        "{text}"
    );
}
