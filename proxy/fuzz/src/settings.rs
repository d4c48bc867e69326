//! The settings and annotation parsers (`weft_settings`): every `WEFT_*` value and `weft.io/`
//! annotation goes through one of these before the proxy or the injector acts on it.
//!
//! The input's first byte picks the parser, the rest (UTF-8) is the value. Holds for any value:
//! no parser panics; what a parser accepts prints (with the crate's printer, or the obvious one
//! where it has none) to a value that parses to the same thing; an authorization rule's exact
//! identity is a SPIFFE id `weft_tls` accepts too; the annotation table finds a setting only by
//! its own name and checks any value without panicking.

use std::time::Duration;

use weft_settings::{
    Cidr, IdentityPattern, SETTINGS, find, parse_bool, parse_cidrs, parse_count, parse_duration,
    parse_grpc_codes, parse_inbound_authz, parse_inbound_policy, parse_inject_mode,
    parse_log_format, parse_ports, parse_rate, parse_ratio, parse_status_ranges, parse_uint,
    validate,
};
use weft_tls::SpiffeId;

const PARSERS: u8 = 16;

pub fn check(data: &[u8]) {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return;
    };
    match selector % PARSERS {
        0 => duration(value),
        1 => ports(value),
        2 => cidrs(value),
        3 => authz(value),
        4 => rate(value),
        5 => statuses(value),
        6 => grpc_codes(value),
        7 => numbers(value),
        8 => words(value),
        _ => annotation(usize::from(selector), value),
    }
}

fn duration(value: &str) {
    if let Ok(d) = parse_duration(value) {
        let printed = format!("{}ms", d.as_millis());
        assert_eq!(parse_duration(&printed).ok(), Some(d), "{printed:?}");
    }
}

fn ports(value: &str) {
    if let Ok(set) = parse_ports(value) {
        let printed = set.to_string();
        assert_eq!(parse_ports(&printed).as_ref(), Ok(&set), "{printed:?}");
        for (low, high) in set.ranges() {
            assert!(low != 0 && low <= high);
            assert!(set.contains(low) && set.contains(high));
        }
    }
}

fn cidrs(value: &str) {
    if let Ok(list) = parse_cidrs(value) {
        for cidr in list {
            let printed = cidr.to_string();
            assert_eq!(printed.parse::<Cidr>().as_ref(), Ok(&cidr), "{printed:?}");
            assert!(cidr.contains(cidr.addr));
        }
    }
}

fn authz(value: &str) {
    let Ok(authz) = parse_inbound_authz(value) else {
        return;
    };
    let printed = authz.to_string();
    assert_eq!(
        parse_inbound_authz(&printed).as_ref(),
        Ok(&authz),
        "{printed:?}"
    );
    for rule in authz.rules() {
        let (low, _) = rule.ports.ranges().next().expect("a rule names a port");
        assert!(authz.allowed_on(low).is_some());
        for pattern in &rule.allowed {
            match pattern {
                IdentityPattern::Exact(id) => {
                    let parsed = SpiffeId::parse(id);
                    assert!(parsed.is_ok(), "authz accepts {id:?}, weft-tls refuses it");
                    assert!(pattern.matches(id));
                }
                IdentityPattern::Namespace(prefix) => {
                    let member = format!("{prefix}fuzz");
                    assert!(SpiffeId::parse(&member).is_ok(), "{member:?}");
                    assert!(pattern.matches(&member));
                    assert!(!pattern.matches(prefix));
                }
                IdentityPattern::AnyMeshed => {}
            }
        }
    }
}

fn rate(value: &str) {
    if let Ok(rate) = parse_rate(value) {
        let per_second = rate.per_second();
        assert!(per_second.is_finite() && per_second > 0.0);
        let unit = match rate.per {
            d if d == Duration::from_secs(1) => "s",
            d if d == Duration::from_secs(60) => "m",
            d if d == Duration::from_secs(3600) => "h",
            other => panic!("rate period {other:?} is none of s, m, h"),
        };
        let printed = format!("{}/{unit}", rate.requests);
        assert_eq!(parse_rate(&printed), Ok(rate));
    }
}

fn statuses(value: &str) {
    if let Ok(set) = parse_status_ranges(value) {
        let listed: Vec<String> = (0..=1000u16)
            .filter(|s| set.contains(*s))
            .map(|s| s.to_string())
            .collect();
        assert!(
            listed.iter().all(|s| s.len() == 3),
            "a status outside 100-599"
        );
        let printed = listed.join(",");
        assert_eq!(
            parse_status_ranges(&printed).as_ref(),
            Ok(&set),
            "{printed:?}"
        );
    }
}

fn grpc_codes(value: &str) {
    if let Ok(set) = parse_grpc_codes(value) {
        assert!((17..=64).all(|c| !set.contains(c)));
        let printed = (0..17u32)
            .filter(|c| set.contains(*c))
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse_grpc_codes(&printed), Ok(set), "{printed:?}");
    }
}

fn numbers(value: &str) {
    if let Ok(n) = parse_count(value) {
        assert!(n >= 1);
        assert_eq!(parse_count(&n.to_string()), Ok(n));
    }
    if let Ok(n) = parse_uint(value) {
        assert_eq!(parse_uint(&n.to_string()), Ok(n));
    }
    if let Ok(r) = parse_ratio(value) {
        assert!((0.0..=1.0).contains(&r));
        assert_eq!(parse_ratio(&r.to_string()), Ok(r));
    }
}

fn words(value: &str) {
    if let Ok(b) = parse_bool(value) {
        assert_eq!(parse_bool(&b.to_string()), Ok(b));
    }
    if let Ok(mode) = parse_inject_mode(value) {
        assert_eq!(parse_inject_mode(&mode.to_string()), Ok(mode));
    }
    if let Ok(format) = parse_log_format(value) {
        assert_eq!(parse_log_format(&format.to_string()), Ok(format));
    }
    if let Ok(policy) = parse_inbound_policy(value) {
        assert_eq!(parse_inbound_policy(&policy.to_string()), Ok(policy));
    }
}

/// The annotation table: a setting picked by the selector checks the value; the value as an
/// annotation name finds only the setting of that name.
fn annotation(selector: usize, value: &str) {
    let setting = &SETTINGS[selector % SETTINGS.len()];
    let _ = validate(setting, value);
    if let Some(found) = find(value) {
        assert_eq!(found.annotation, value);
        assert!(found.annotation_key().ends_with(value));
        assert_eq!(validate(found, found.example), Ok(()));
    }
}
