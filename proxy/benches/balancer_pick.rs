//! The balancer's choice of endpoint runs once per request (per attempt, under retries): P2C over
//! peak-EWMA load among the endpoints whose breaker lets them take traffic. Measured alone
//! (`p2c`) and through the balancer layer as a request meets it (`layer`: breaker lookup and
//! filtering, in-flight tracking, the outcome fed back), with every breaker closed.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use tower::{Layer, ServiceExt};
use weft_proxy::balance::pick;
use weft_proxy::direction::Direction;
use weft_proxy::discovery::{Endpoint, Origin, Service};
use weft_proxy::http::balance::BalanceLayer;
use weft_proxy::http::error::ProxyError;
use weft_proxy::http::extensions::Routed;
use weft_proxy::http::target::{HttpVersion, Target};
use weft_proxy::labels::Upstream;
use weft_proxy::metrics::Metrics;
use weft_proxy::resilience::policy::ResiliencePolicy;
use weft_proxy::resilience::upstream::Upstreams;

const SIZES: [usize; 2] = [3, 100];

fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint {
            addr: SocketAddr::from(([198, 18, (i / 250) as u8, (i % 250 + 2) as u8], 8080)),
            weight: 1,
            zone: "".into(),
            identity: None,
            meshed: false,
            proxy_port: 0,
            pod: format!("web-{i}").into(),
            load: Default::default(),
            requests: Default::default(),
            peer: None,
        })
        .collect()
}

fn bench_p2c(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer_pick/p2c");
    for n in SIZES {
        let endpoints = endpoints(n);
        let refs: Vec<&Endpoint> = endpoints.iter().collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &refs, |b, refs| {
            b.iter(|| pick(black_box(refs)))
        });
    }
    group.finish();
}

fn bench_layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let metrics = Metrics::new();
    let upstreams = Upstreams::new(
        Direction::Outbound,
        ResiliencePolicy::default(),
        metrics.resilience.clone(),
    );
    let mut group = c.benchmark_group("balancer_pick/layer");
    for n in SIZES {
        let service = Arc::new(Service {
            name: format!("web{n}.default:8080").into(),
            origin: Origin::Discovery,
            endpoints: endpoints(n),
            split: vec![],
            policy: Default::default(),
        });
        let upstream = upstreams.get(Upstream::Service(service.name.clone()), None);
        // The endpoint client answers at once: what is left is the balancer's own work.
        let answer =
            tower::service_fn(|_req: Request<()>| async { Ok::<_, ProxyError>(Response::new(())) });
        let balance = BalanceLayer::new(upstream).layer(answer);
        let target = Target {
            addr: service.endpoints[0].addr,
            version: HttpVersion::Http1,
        };
        group.bench_with_input(BenchmarkId::from_parameter(n), &service, |b, service| {
            b.iter(|| {
                let mut req = Request::new(());
                req.extensions_mut().insert(Routed(service.clone()));
                req.extensions_mut().insert(target);
                rt.block_on(balance.clone().oneshot(req))
                    .expect("an endpoint answers")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_p2c, bench_layer);
criterion_main!(benches);
