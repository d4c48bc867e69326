//! Who may reach the app's ports: the inbound policy (strict: mTLS only; permissive: plaintext
//! too) and the per-port identity rules. Pure decisions; the connection and HTTP paths apply them.

use weft_settings::{InboundAuthz, InboundPolicy as Mode};

/// Why the inbound side refused a connection or request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Plaintext (or TLS not for this proxy) under the strict policy, or on a port with rules.
    Plaintext,
    /// mTLS whose client identity no rule of the port allows.
    Unauthorized,
    /// A TLS handshake for this proxy that failed (foreign CA, expired, no client certificate).
    Handshake,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Plaintext => "plaintext",
            Refusal::Unauthorized => "unauthorized",
            Refusal::Handshake => "handshake",
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct InboundPolicy {
    mode: Mode,
    authz: InboundAuthz,
}

impl InboundPolicy {
    pub fn new(mode: Mode, authz: InboundAuthz) -> Self {
        InboundPolicy { mode, authz }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether a plaintext connection (no client identity) may reach `port`: refused under the
    /// strict policy and on ports with identity rules.
    pub fn allows_plaintext(&self, port: u16) -> bool {
        self.mode == Mode::Permissive && self.authz.allowed_on(port).is_none()
    }

    /// Whether the client `identity` (a SPIFFE id, verified by the mTLS handshake; `None` for
    /// plaintext) may reach `port`.
    pub fn check(&self, port: u16, identity: Option<&str>) -> Result<(), Refusal> {
        match identity {
            None if self.allows_plaintext(port) => Ok(()),
            None => Err(Refusal::Plaintext),
            Some(identity) => match self.authz.allowed_on(port) {
                None => Ok(()),
                Some(allowed) if allowed.iter().any(|p| p.matches(identity)) => Ok(()),
                Some(_) => Err(Refusal::Unauthorized),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_settings::parse_inbound_authz;

    const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
    const OTHER: &str = "spiffe://cluster.local/ns/shop/sa/other";

    fn policy(mode: Mode, authz: &str) -> InboundPolicy {
        InboundPolicy::new(mode, parse_inbound_authz(authz).unwrap())
    }

    #[test]
    fn permissive_without_rules_serves_everyone() {
        let p = policy(Mode::Permissive, "");
        assert_eq!(p.check(8080, None), Ok(()));
        assert_eq!(p.check(8080, Some(WEB)), Ok(()));
    }

    #[test]
    fn strict_refuses_plaintext_only() {
        let p = policy(Mode::Strict, "");
        assert_eq!(p.check(8080, None), Err(Refusal::Plaintext));
        assert_eq!(p.check(8080, Some(OTHER)), Ok(()));
        assert!(!p.allows_plaintext(8080));
    }

    #[test]
    fn rules_bind_their_ports_in_either_mode() {
        for mode in [Mode::Permissive, Mode::Strict] {
            let p = policy(mode, &format!("8080={WEB};9090=*"));
            assert_eq!(p.check(8080, Some(WEB)), Ok(()));
            assert_eq!(p.check(8080, Some(OTHER)), Err(Refusal::Unauthorized));
            assert_eq!(p.check(8080, None), Err(Refusal::Plaintext));
            assert_eq!(p.check(9090, Some(OTHER)), Ok(()));
            assert_eq!(p.check(9090, None), Err(Refusal::Plaintext));
            let unlisted = p.check(7000, None);
            match mode {
                Mode::Permissive => assert_eq!(unlisted, Ok(())),
                Mode::Strict => assert_eq!(unlisted, Err(Refusal::Plaintext)),
            }
        }
    }
}
