//! The Kubernetes authenticator: asks the API server to review the token (TokenReview,
//! authentication.k8s.io/v1) for the audience `weft-identity`. The CA's service account needs
//! `create` on `tokenreviews` (ClusterRole `system:auth-delegator` grants it).

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use crate::authenticator::{AuthError, AuthFuture, Authenticator, ServiceAccount};

const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

pub struct TokenReviewAuthenticator {
    reviews: Api<TokenReview>,
}

impl TokenReviewAuthenticator {
    pub fn new(client: kube::Client) -> Self {
        Self {
            reviews: Api::all(client),
        }
    }
}

impl Authenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str) -> AuthFuture<'a> {
        Box::pin(async move {
            let reviewed = self
                .reviews
                .create(&PostParams::default(), &review_request(token))
                .await
                .map_err(|e| {
                    AuthError(format!("TokenReview request to the API server failed: {e}"))
                })?;
            service_account_of(&reviewed)
        })
    }

    fn kind(&self) -> &'static str {
        "kubernetes"
    }
}

/// The TokenReview to create for `token`.
pub fn review_request(token: &str) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![weft_identity_api::TOKEN_AUDIENCE.to_owned()]),
        },
        ..TokenReview::default()
    }
}

/// The service account a reviewed TokenReview proves: authenticated, for our audience, and a
/// service account (not a user).
pub fn service_account_of(review: &TokenReview) -> Result<ServiceAccount, AuthError> {
    let status = review
        .status
        .as_ref()
        .ok_or_else(|| AuthError("TokenReview came back without a status".into()))?;
    if status.authenticated != Some(true) {
        return Err(AuthError(format!(
            "the API server did not authenticate the token: {}",
            status.error.as_deref().unwrap_or("no reason given")
        )));
    }
    let audience = weft_identity_api::TOKEN_AUDIENCE;
    if !status
        .audiences
        .as_ref()
        .is_some_and(|auds| auds.iter().any(|a| a == audience))
    {
        return Err(AuthError(format!(
            "the token is not valid for audience {audience:?} (audiences {:?})",
            status.audiences.as_deref().unwrap_or_default()
        )));
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or_default();
    let (namespace, name) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .ok_or_else(|| AuthError(format!("token user {username:?} is not a service account")))?;
    Ok(ServiceAccount {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reviewed(json: serde_json::Value) -> TokenReview {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_request_names_the_token_and_audience() {
        let json = serde_json::to_value(review_request("abc")).unwrap();
        assert_eq!(json["spec"]["token"], "abc");
        assert_eq!(
            json["spec"]["audiences"],
            serde_json::json!(["weft-identity"])
        );
    }

    // Shaped as the API server answers (kubectl create -f review.yaml -o json).
    #[test]
    fn an_authenticated_service_account_token_is_accepted() {
        let review = reviewed(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "metadata": {"creationTimestamp": null},
            "spec": {"audiences": ["weft-identity"], "token": "x"},
            "status": {
                "audiences": ["weft-identity"], "authenticated": true,
                "user": {
                    "username": "system:serviceaccount:shop:web",
                    "uid": "4f4e7c3c-0b8a-4f5f-9d6b-3d3b9b6c1a11",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"],
                    "extra": {"authentication.kubernetes.io/pod-name": ["web-7d9f"]}
                }
            }
        }));
        assert_eq!(
            service_account_of(&review).unwrap(),
            ServiceAccount {
                namespace: "shop".into(),
                name: "web".into()
            }
        );
    }

    #[test]
    fn refusals_say_why() {
        let cases = [
            (
                serde_json::json!({"spec": {}, "status": {"authenticated": false, "error": "[invalid bearer token, token has been invalidated]"}}),
                "invalid bearer token",
            ),
            (
                serde_json::json!({"spec": {}, "status": {"authenticated": true, "audiences": ["https://kubernetes.default.svc"], "user": {"username": "system:serviceaccount:shop:web"}}}),
                "audience",
            ),
            (
                serde_json::json!({"spec": {}, "status": {"authenticated": true, "audiences": ["weft-identity"], "user": {"username": "alice@example.com"}}}),
                "not a service account",
            ),
            (serde_json::json!({"spec": {}}), "without a status"),
        ];
        for (json, reason) in cases {
            let err = service_account_of(&reviewed(json)).unwrap_err();
            assert!(err.to_string().contains(reason), "{err} lacks {reason}");
        }
    }
}
