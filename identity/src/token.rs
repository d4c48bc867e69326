//! Local tokens: a service account vouched for by the CA's token-signing key, for clusters (and the
//! testbed) without Kubernetes TokenReview.
//!
//! Format: `base64url(claims JSON) "." base64url(ECDSA P-256 SHA-256 signature of the first part)`,
//! unpadded; claims `{"ns", "sa", "exp" (Unix seconds), "aud"}`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::CaError;

/// What a local token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    pub ns: String,
    pub sa: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    pub aud: String,
}

/// Why a local token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not <claims>.<signature> in unpadded base64url")]
    Malformed,
    #[error("the token's claims are not valid JSON claims ns, sa, exp, aud: {0}")]
    Claims(String),
    #[error("the token's signature does not verify with this CA's token-signing key")]
    Signature,
    #[error("the token expired at {exp} (Unix seconds)")]
    Expired { exp: u64 },
    #[error("the token is for audience {found:?}, not {expected:?}")]
    Audience { found: String, expected: String },
}

/// The CA's ECDSA P-256 key for local tokens.
pub struct TokenSigningKey {
    pkcs8: Vec<u8>,
    key: EcdsaKeyPair,
}

impl TokenSigningKey {
    pub fn generate() -> Result<Self, CaError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| CaError::Sign("cannot generate the token-signing key".into()))?;
        Self::from_pkcs8(pkcs8.as_ref().to_vec())
            .map_err(|e| CaError::Sign(format!("generated token-signing key unusable: {e}")))
    }

    pub fn from_pem(pem_text: &str) -> Result<Self, String> {
        match PrivateKeyDer::from_pem_slice(pem_text.as_bytes()).map_err(|e| e.to_string())? {
            PrivateKeyDer::Pkcs8(der) => Self::from_pkcs8(der.secret_pkcs8_der().to_vec()),
            _ => Err("the token-signing key must be a PKCS#8 ECDSA P-256 key".into()),
        }
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, String> {
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| format!("not a PKCS#8 ECDSA P-256 key: {e}"))?;
        Ok(Self { pkcs8, key })
    }

    pub fn to_pem(&self) -> String {
        weft_tls::pem::encode_pem("PRIVATE KEY", &self.pkcs8)
    }

    /// Mints a token for `claims`.
    pub fn mint(&self, claims: &TokenClaims) -> Result<String, CaError> {
        let json = serde_json::to_vec(claims).map_err(|e| CaError::Sign(e.to_string()))?;
        let payload = URL_SAFE_NO_PAD.encode(json);
        let signature = self
            .key
            .sign(&SystemRandom::new(), payload.as_bytes())
            .map_err(|_| CaError::Sign("cannot sign the token".into()))?;
        Ok(format!(
            "{payload}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        ))
    }

    /// Checks signature, expiry (at `now`) and audience; returns the claims.
    pub fn verify(
        &self,
        token: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<TokenClaims, TokenError> {
        let (payload, signature) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(payload.as_bytes(), &signature)
            .map_err(|_| TokenError::Signature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: TokenClaims =
            serde_json::from_slice(&json).map_err(|e| TokenError::Claims(e.to_string()))?;
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if claims.exp <= now_secs {
            return Err(TokenError::Expired { exp: claims.exp });
        }
        if claims.aud != audience {
            return Err(TokenError::Audience {
                found: claims.aud,
                expected: audience.to_owned(),
            });
        }
        Ok(claims)
    }
}

/// Claims for `ns`/`sa` expiring `lifetime` after `now`, for the CA's audience.
pub fn claims_for(ns: &str, sa: &str, lifetime: Duration, now: SystemTime) -> TokenClaims {
    let exp = now
        .checked_add(lifetime)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(u64::MAX, |d| d.as_secs());
    TokenClaims {
        ns: ns.to_owned(),
        sa: sa.to_owned(),
        exp,
        aud: weft_identity_api::TOKEN_AUDIENCE.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUD: &str = weft_identity_api::TOKEN_AUDIENCE;

    #[test]
    fn round_trips_and_survives_pem() {
        let key = TokenSigningKey::generate().unwrap();
        let now = SystemTime::now();
        let claims = claims_for("shop", "web", Duration::from_secs(60), now);
        let token = key.mint(&claims).unwrap();
        assert_eq!(token.matches('.').count(), 1);
        let reloaded = TokenSigningKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(reloaded.verify(&token, AUD, now).unwrap(), claims);
    }

    #[test]
    fn refuses_tampering_other_keys_expiry_and_audience() {
        let key = TokenSigningKey::generate().unwrap();
        let now = SystemTime::now();
        let token = key
            .mint(&claims_for("shop", "web", Duration::from_secs(60), now))
            .unwrap();

        let (_, sig) = token.split_once('.').unwrap();
        let forged_claims = claims_for("kube-system", "admin", Duration::from_secs(60), now);
        let forged = format!(
            "{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap())
        );
        assert_eq!(key.verify(&forged, AUD, now), Err(TokenError::Signature));

        let other = TokenSigningKey::generate().unwrap();
        assert_eq!(other.verify(&token, AUD, now), Err(TokenError::Signature));

        let later = now + Duration::from_secs(61);
        assert!(matches!(
            key.verify(&token, AUD, later),
            Err(TokenError::Expired { .. })
        ));

        assert!(matches!(
            key.verify(&token, "other", now),
            Err(TokenError::Audience { .. })
        ));
        assert_eq!(key.verify("garbage", AUD, now), Err(TokenError::Malformed));
        assert_eq!(key.verify("a.!!", AUD, now), Err(TokenError::Malformed));
    }
}
