//! Weft's settings: the one table mapping `weft.io/<name>` pod annotations to the proxy's
//! `WEFT_*` environment variables, init flags and container fields, and the parsers for their
//! values. The proxy uses the parsers as clap value parsers; the injector uses the table.

mod cidr;
mod duration;
mod error;
mod flag;
mod grpc;
mod image;
mod inbound_policy;
mod inject_mode;
mod log;
mod markdown;
mod number;
mod ports;
mod quantity;
mod rate;
mod status;
mod table;

pub use cidr::{Cidr, parse_cidrs};
pub use duration::parse_duration;
pub use error::SettingError;
pub use flag::parse_bool;
pub use grpc::{GrpcCodeSet, parse_grpc_codes};
pub use image::parse_image;
pub use inbound_policy::{
    AuthzRule, IdentityPattern, InboundAuthz, InboundPolicy, parse_inbound_authz,
    parse_inbound_policy,
};
pub use inject_mode::{InjectMode, parse_inject_mode};
pub use log::{LogFormat, parse_log_filter, parse_log_format};
pub use markdown::markdown_table;
pub use number::{parse_count, parse_ratio, parse_uint};
pub use ports::{PortSet, parse_ports};
pub use quantity::parse_quantity;
pub use rate::{Rate, parse_rate};
pub use status::{StatusSet, parse_status_ranges};
pub use table::{
    ANNOTATION_PREFIX, DEFAULT_PROXY_IMAGE, INJECTED_ANNOTATION, Kind, ResourceBound, SETTINGS,
    Setting, Target, find, validate,
};

/// The UID the proxy runs as; iptables exempts its traffic from redirection by this UID.
pub const PROXY_UID: u32 = 2102;
/// The proxy's outbound listener port (loopback), where iptables redirects the app's connections.
pub const OUTBOUND_PORT: u16 = 4140;
/// The proxy's inbound listener port, where iptables redirects connections to the pod.
pub const INBOUND_PORT: u16 = 4143;
/// The proxy's admin port: /metrics, /ready, /live, /shutdown.
pub const ADMIN_PORT: u16 = 4191;
