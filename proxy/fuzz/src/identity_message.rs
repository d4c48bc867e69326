//! The CA's messages (`weft.identity.v1`): prost decoding of `CertifyRequest` and
//! `CertifyResponse`, and the certificates a response carries read as the proxy reads them.
//!
//! Holds for any bytes: a message that decodes re-encodes to an equal message; the leaf and
//! intermediates of a response go through the certificate readers (see [`crate::certificate`])
//! without panicking, and a request's identity is checked like any SPIFFE id.

use prost::Message;
use weft_identity_api::v1::{CertifyRequest, CertifyResponse};
use weft_tls::SpiffeId;

pub fn check(data: &[u8]) {
    if let Ok(response) = CertifyResponse::decode(data) {
        let again = CertifyResponse::decode(response.encode_to_vec().as_slice())
            .expect("a re-encoded response decodes");
        assert_eq!(again, response);
        crate::certificate::check(&response.leaf_certificate);
        for intermediate in &response.intermediate_certificates {
            let _ = weft_tls::certificate::inspect(intermediate);
        }
    }
    if let Ok(request) = CertifyRequest::decode(data) {
        let again = CertifyRequest::decode(request.encode_to_vec().as_slice())
            .expect("a re-encoded request decodes");
        assert_eq!(again, request);
        crate::spiffe_id::check(request.identity.as_bytes());
        if let Ok(id) = SpiffeId::parse(&request.identity) {
            assert_eq!(id.uri(), request.identity);
        }
    }
}
