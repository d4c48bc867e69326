//! The request target as the app will see it. An HTTP/1 request may name its target in
//! absolute form (`GET http://host:port/path`); forwarded as it came, the app would see a request
//! for one authority with a `Host` header naming another, and each side of the hop could route it
//! differently. So an absolute-form target whose authority disagrees with `Host` is refused (400),
//! and one that agrees is forwarded in origin form (`GET /path`, `Host` as it was, or the target's
//! authority when the client sent none). A target longer than `WEFT_MAX_URI_LENGTH` is refused
//! with 414. Both refusals are counted in `weft_http_refused_total`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::HOST;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Request, Uri, Version};
use pin_project_lite::pin_project;
use prometheus_client::metrics::counter::Counter;
use tower::{Layer, Service};

use crate::http::error::ProxyError;

/// The counters of the two refusals, resolved once per side.
#[derive(Clone, Debug, Default)]
pub struct TargetRefusals {
    pub uri_too_long: Counter,
    pub target_host_mismatch: Counter,
}

#[derive(Clone, Debug)]
pub struct RequestTargetLayer {
    max_uri_length: usize,
    refusals: TargetRefusals,
}

impl RequestTargetLayer {
    pub fn new(max_uri_length: usize, refusals: TargetRefusals) -> Self {
        RequestTargetLayer {
            max_uri_length,
            refusals,
        }
    }
}

impl<S> Layer<S> for RequestTargetLayer {
    type Service = RequestTarget<S>;

    fn layer(&self, inner: S) -> RequestTarget<S> {
        RequestTarget {
            inner,
            max_uri_length: self.max_uri_length,
            refusals: self.refusals.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequestTarget<S> {
    inner: S,
    max_uri_length: usize,
    refusals: TargetRefusals,
}

/// What to do with a request's target: a pure decision over the request head.
#[derive(Debug, PartialEq, Eq)]
pub enum TargetPlan {
    /// Forward as it is.
    Keep,
    /// Forward with this origin-form target, and this `Host` when the request had none.
    OriginForm {
        path: PathAndQuery,
        host: Option<HeaderValue>,
    },
    UriTooLong {
        length: usize,
    },
    Mismatch {
        target: String,
        host: String,
    },
}

pub fn plan(version: Version, uri: &Uri, host: Option<&HeaderValue>, max: usize) -> TargetPlan {
    // The longest form the target can have on the wire.
    let length = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri
            .authority()
            .map_or(0, |a| a.as_str().len() + "http://".len());
    if length > max {
        return TargetPlan::UriTooLong { length };
    }
    // HTTP/2 always names scheme and authority (:scheme, :authority); only HTTP/1 has forms.
    if version > Version::HTTP_11 || uri.scheme().is_none() {
        return TargetPlan::Keep;
    }
    let Some(authority) = uri.authority() else {
        return TargetPlan::Keep;
    };
    let https = uri.scheme() == Some(&Scheme::HTTPS);
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match host {
        None => TargetPlan::OriginForm {
            path,
            host: HeaderValue::from_str(authority.as_str()).ok(),
        },
        Some(host) => {
            let host_text = String::from_utf8_lossy(host.as_bytes());
            if same_authority(authority.as_str(), &host_text, https) {
                TargetPlan::OriginForm { path, host: None }
            } else {
                TargetPlan::Mismatch {
                    target: authority.as_str().to_owned(),
                    host: host_text.into_owned(),
                }
            }
        }
    }
}

/// Authorities compared as a server would: host case-insensitively, the scheme's default port
/// the same as none.
fn same_authority(a: &str, b: &str, https: bool) -> bool {
    let default = if https { ":443" } else { ":80" };
    let norm = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        match s.strip_suffix(default) {
            Some(bare) => bare.to_owned(),
            None => s,
        }
    };
    norm(a) == norm(b)
}

impl<S, B> Service<Request<B>> for RequestTarget<S>
where
    S: Service<Request<B>, Error = ProxyError>,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = TargetFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let verdict = plan(
            req.version(),
            req.uri(),
            req.headers().get(HOST),
            self.max_uri_length,
        );
        let refuse = |error: ProxyError| TargetFuture::Refused { error: Some(error) };
        match verdict {
            TargetPlan::Keep => {}
            TargetPlan::OriginForm { path, host } => {
                *req.uri_mut() = Uri::from(path);
                if let Some(host) = host {
                    req.headers_mut().insert(HOST, host);
                }
            }
            TargetPlan::UriTooLong { length } => {
                self.refusals.uri_too_long.inc();
                return refuse(ProxyError::UriTooLong {
                    length,
                    max: self.max_uri_length,
                });
            }
            TargetPlan::Mismatch { target, host } => {
                self.refusals.target_host_mismatch.inc();
                return refuse(ProxyError::TargetHostMismatch { target, host });
            }
        }
        TargetFuture::Inner {
            future: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The inner service's own future, or the refusal (no boxing on the common path).
    #[project = TargetFutureProj]
    pub enum TargetFuture<F> {
        Inner { #[pin] future: F },
        Refused { error: Option<ProxyError> },
    }
}

impl<F, T> Future for TargetFuture<F>
where
    F: Future<Output = Result<T, ProxyError>>,
{
    type Output = Result<T, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TargetFutureProj::Inner { future } => future.poll(cx),
            TargetFutureProj::Refused { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn plan_table() {
        let h11 = Version::HTTP_11;
        let abs: Uri = "http://198.19.2.99:8080/x?y=1".parse().unwrap();
        let origin: Uri = "/x?y=1".parse().unwrap();
        let path = PathAndQuery::from_static("/x?y=1");
        let table: Vec<(Version, &Uri, Option<HeaderValue>, TargetPlan)> = vec![
            (h11, &origin, Some(host("api")), TargetPlan::Keep),
            (h11, &origin, None, TargetPlan::Keep),
            (
                h11,
                &abs,
                Some(host("198.19.2.99:8080")),
                TargetPlan::OriginForm {
                    path: path.clone(),
                    host: None,
                },
            ),
            (
                h11,
                &abs,
                None,
                TargetPlan::OriginForm {
                    path: path.clone(),
                    host: Some(host("198.19.2.99:8080")),
                },
            ),
            (
                h11,
                &abs,
                Some(host("web.shop:8080")),
                TargetPlan::Mismatch {
                    target: "198.19.2.99:8080".into(),
                    host: "web.shop:8080".into(),
                },
            ),
            // HTTP/2 names :authority itself; the form question does not arise.
            (Version::HTTP_2, &abs, Some(host("other")), TargetPlan::Keep),
        ];
        for (version, uri, host, expected) in table {
            assert_eq!(
                plan(version, uri, host.as_ref(), 16384),
                expected,
                "{uri} {host:?}"
            );
        }
    }

    #[test]
    fn default_ports_and_case_are_the_same_authority() {
        let abs: Uri = "http://API.shop/x".parse().unwrap();
        assert!(matches!(
            plan(Version::HTTP_11, &abs, Some(&host("api.shop:80")), 16384),
            TargetPlan::OriginForm { host: None, .. }
        ));
        let tls: Uri = "https://api.shop:443/".parse().unwrap();
        assert!(matches!(
            plan(Version::HTTP_11, &tls, Some(&host("api.shop")), 16384),
            TargetPlan::OriginForm { host: None, .. }
        ));
    }

    #[test]
    fn long_targets_are_refused_in_any_form() {
        let long: Uri = format!("/{}", "a".repeat(300)).parse().unwrap();
        assert_eq!(
            plan(Version::HTTP_11, &long, None, 300),
            TargetPlan::UriTooLong { length: 301 }
        );
        assert_eq!(plan(Version::HTTP_11, &long, None, 301), TargetPlan::Keep);
        assert!(matches!(
            plan(Version::HTTP_2, &long, None, 100),
            TargetPlan::UriTooLong { .. }
        ));
    }
}
