//! Proving a caller's service account from its token: one trait, a local and a Kubernetes kind.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use crate::TokenSigningKey;

/// The Kubernetes service account a token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

/// Why a token does not prove a service account (surfaced to the caller as Unauthenticated).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct AuthError(pub String);

pub type AuthFuture<'a> =
    Pin<Box<dyn Future<Output = Result<ServiceAccount, AuthError>> + Send + 'a>>;

/// Turns a bearer token into the service account it proves.
pub trait Authenticator: Send + Sync {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a>;
    /// For logs: which kind of authenticator this is.
    fn kind(&self) -> &'static str;
}

/// Verifies tokens minted by `weft-identity token` with the CA's token-signing key.
pub struct LocalTokenAuthenticator {
    key: TokenSigningKey,
}

impl LocalTokenAuthenticator {
    pub fn new(key: TokenSigningKey) -> Self {
        Self { key }
    }
}

impl Authenticator for LocalTokenAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        let result = self
            .key
            .verify(token, weft_identity_api::TOKEN_AUDIENCE, SystemTime::now())
            .map(|claims| ServiceAccount {
                namespace: claims.ns,
                name: claims.sa,
            })
            .map_err(|e| AuthError(format!("local token refused: {e}")));
        Box::pin(async move { result })
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::claims_for;
    use std::time::Duration;

    #[tokio::test]
    async fn local_tokens_prove_their_service_account() {
        let key = TokenSigningKey::generate().unwrap();
        let token = key
            .mint(&claims_for(
                "shop",
                "web",
                Duration::from_secs(60),
                SystemTime::now(),
            ))
            .unwrap();
        let auth = LocalTokenAuthenticator::new(key);
        assert_eq!(
            auth.authenticate(&token).await.unwrap(),
            ServiceAccount {
                namespace: "shop".into(),
                name: "web".into()
            }
        );
        let err = auth.authenticate("nope").await.unwrap_err();
        assert!(err.to_string().starts_with("local token refused"), "{err}");
    }
}
