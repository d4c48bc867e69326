//! The names traffic is routed by: a watch target as discovery parses it
//! (`weft_discovery_api::Target`), an HTTP authority as the proxy turns it into a lookup key
//! (`weft_proxy::discovery::Key::from_authority`, fed by Host headers and request targets), and an
//! endpoint address (`weft_discovery_api::parse_addr`).
//!
//! Holds for any string: a target that parses prints back to a string that parses to the same
//! target, and a name target is lowercase without a trailing dot; an authority that yields a key
//! prints as a key that yields the same key again; an endpoint address re-parses from its printout.

use weft_discovery_api::{Target, parse_addr};
use weft_proxy::discovery::Key;

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(target) = text.parse::<Target>() {
        let printed = target.to_string();
        assert_eq!(
            printed.parse::<Target>().as_ref(),
            Ok(&target),
            "{printed:?}"
        );
        assert_ne!(target.port(), 0);
        if let Target::Name { host, .. } = &target {
            assert_eq!(*host, host.to_ascii_lowercase());
            assert!(!host.ends_with('.'));
        }
    }
    for default_port in [80, 0] {
        if let Some(key) = Key::from_authority(text, default_port) {
            let printed = key.to_string();
            assert_eq!(
                Key::from_authority(&printed, 1).as_ref(),
                Some(&key),
                "authority {text:?} gave key {printed:?}, which reads back differently"
            );
            if let Key::Name { host, .. } = &key {
                assert_eq!(**host, host.to_ascii_lowercase());
                assert!(!host.is_empty() && !host.ends_with('.'));
            }
        }
    }
    if let Ok(addr) = parse_addr(text) {
        assert_eq!(parse_addr(&addr.to_string()), Ok(addr));
    }
}
