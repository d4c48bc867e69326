//! Hop-by-hop header handling runs on every request and response: the common case (no
//! hop-by-hop headers at all) must be close to free.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use weft_proxy::http::hop_by_hop::strip;

fn typical_request() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "catalog.default.svc.cluster.local:8080"),
        ("user-agent", "bench/1.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("content-type", "application/json"),
        ("x-request-id", "6f1c2a4e-8f0b-4c1e-9c57-3f5d9e2b7a10"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (
            "authorization",
            "Bearer abcdefghijklmnopqrstuvwxyz0123456789",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn bench_strip(c: &mut Criterion) {
    let mut group = c.benchmark_group("hop_by_hop/strip");
    group.bench_function("no_hop_by_hop", |b| {
        b.iter_batched_ref(typical_request, |h| strip(h, false), BatchSize::SmallInput)
    });
    group.bench_function("keep_alive_connection_te", |b| {
        b.iter_batched_ref(
            || {
                let mut h = typical_request();
                h.insert(
                    "connection",
                    HeaderValue::from_static("keep-alive, x-debug"),
                );
                h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
                h.insert("x-debug", HeaderValue::from_static("1"));
                h.insert("te", HeaderValue::from_static("trailers"));
                h
            },
            |h| strip(h, false),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("websocket_upgrade", |b| {
        b.iter_batched_ref(
            || {
                let mut h = typical_request();
                h.insert("connection", HeaderValue::from_static("Upgrade"));
                h.insert("upgrade", HeaderValue::from_static("websocket"));
                h
            },
            |h| strip(h, true),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_strip);
criterion_main!(benches);
