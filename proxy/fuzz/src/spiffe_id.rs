//! SPIFFE ids (`weft_tls::SpiffeId`) and their SNI names, as found in certificates, discovery
//! updates, authorization rules and TLS SNI.
//!
//! Holds for any string: an id that parses prints back to exactly the same string (there is one
//! spelling of each identity) and rebuilds from its parts; its SNI name decodes back to it and,
//! when at most 253 bytes, is a server name rustls can dial; an SNI name that decodes to an
//! identity is that identity's SNI name.

use weft_tls::{SpiffeId, SpiffeIdError, validate_trust_domain};

pub fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(text) {
        assert_eq!(id.to_string(), text, "a parsed id prints differently");
        assert_eq!(id.uri(), text);
        assert_eq!(
            SpiffeId::new(id.trust_domain(), id.namespace(), id.service_account()).as_ref(),
            Ok(&id)
        );
        assert_eq!(validate_trust_domain(id.trust_domain()), Ok(()));
        let sni = id.sni_name();
        assert_eq!(
            SpiffeId::from_sni_name(&sni, id.trust_domain()).as_ref(),
            Some(&id),
            "the SNI name {sni:?} does not decode back"
        );
        match id.server_name() {
            Ok(_) => assert!(sni.len() <= 253),
            Err(SpiffeIdError::SniTooLong(name)) => assert!(
                name.len() > 253,
                "identity {id} has a valid-length SNI name {name:?} that rustls refuses"
            ),
            Err(other) => panic!("server_name of {id} failed with {other}"),
        }
    }
    // The same text as an SNI name, in the default trust domain and in one it names itself.
    let trust_domain = text.rsplit(".sa.").next().unwrap_or(text);
    for domain in ["cluster.local", trust_domain] {
        if let Some(id) = SpiffeId::from_sni_name(text, domain) {
            assert_eq!(
                id.sni_name(),
                text,
                "an SNI name decodes to another identity"
            );
            assert_eq!(id.trust_domain(), domain);
        }
    }
}
