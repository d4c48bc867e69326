//! weft-fuzz: the bodies of Weft's fuzz targets, one module per target, each `check(data)`
//! feeding bytes to a parser through its crate's public API and asserting what must hold for
//! any input (no panic, always; round trips where the parser has a printer). The libFuzzer
//! binaries in `fuzz_targets/` call these; `tests/corpus.rs` replays the saved corpus through
//! them as ordinary tests. docs/fuzzing.md says how to run them.

pub mod certificate;
pub mod client_hello;
pub mod detect;
pub mod discovery_target;
pub mod discovery_update;
pub mod http_prefix;
pub mod identity_message;
pub mod settings;
pub mod spiffe_id;
pub mod transport_header;

mod runtime;
mod scripted_io;

/// A target's body: panics when a property fails.
pub type Check = fn(&[u8]);

/// Every target's name (its `fuzz_targets/<name>.rs` and `corpus/<name>/`) and body.
pub const TARGETS: &[(&str, Check)] = &[
    ("certificate", certificate::check),
    ("client_hello", client_hello::check),
    ("detect", detect::check),
    ("discovery_target", discovery_target::check),
    ("discovery_update", discovery_update::check),
    ("http_prefix", http_prefix::check),
    ("identity_message", identity_message::check),
    ("settings", settings::check),
    ("spiffe_id", spiffe_id::check),
    ("transport_header", transport_header::check),
];
