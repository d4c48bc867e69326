//! What the resilience layers name in errors, logs and metrics: which limit refused a request and
//! which timeout struck, each with its label value.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// Which limit refused a request (the `limit` label of `weft_overload_rejected_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    Pending,
    InFlight,
    Connections,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Pending => "pending",
            Limit::InFlight => "in_flight",
            Limit::Connections => "connections",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Limit::Pending => "already waiting",
            Limit::InFlight => "already in flight",
            Limit::Connections => "in flight on every allowed connection",
        }
    }

    pub(crate) fn setting(self) -> &'static str {
        match self {
            Limit::Pending => "WEFT_MAX_PENDING / weft.io/max-pending",
            Limit::InFlight => "WEFT_MAX_IN_FLIGHT / weft.io/max-in-flight",
            Limit::Connections => "WEFT_MAX_CONNECTIONS / weft.io/max-connections",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// The whole request: `WEFT_TIMEOUT`.
    Request,
    /// One attempt: `WEFT_PER_TRY_TIMEOUT`.
    PerTry,
    /// An exchange whose bodies stopped moving: `WEFT_STREAM_IDLE_TIMEOUT` (`stream_idle`).
    StreamIdle,
    /// A client connection with nothing moving: `WEFT_IDLE_TIMEOUT` (`idle`).
    Idle,
    /// An HTTP/1 client too slow to send its request headers: `WEFT_HEADER_READ_TIMEOUT`.
    HeaderRead,
}

impl TimeoutKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::Request => "request",
            TimeoutKind::PerTry => "per_try",
            TimeoutKind::StreamIdle => "stream_idle",
            TimeoutKind::Idle => "idle",
            TimeoutKind::HeaderRead => "header_read",
        }
    }
}

impl EncodeLabelValue for TimeoutKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

impl EncodeLabelValue for Limit {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}
