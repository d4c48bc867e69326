//! Protocol detection runs once per connection on its first bytes: it must stay in the tens of
//! nanoseconds so it never shows in the handshake price.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use weft_proxy::detect::classify;

fn bench_classify(c: &mut Criterion) {
    let http1 =
        b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: catalog.default.svc.cluster.local\r\n\r\n";
    let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00";
    let tls = [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let opaque = b"\x00\x00\x00\x2c\x00\x03\x00\x00user\x00bench\x00";
    let mut group = c.benchmark_group("detect/classify");
    group.bench_function("http1", |b| b.iter(|| classify(black_box(http1))));
    group.bench_function("http2_preface", |b| b.iter(|| classify(black_box(h2))));
    group.bench_function("tls_client_hello", |b| b.iter(|| classify(black_box(&tls))));
    group.bench_function("opaque", |b| b.iter(|| classify(black_box(opaque))));
    // The worst case: a long HTTP/1 request line that arrives whole.
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(3000));
    group.bench_function("http1_long_target", |b| {
        b.iter(|| classify(black_box(long.as_bytes())))
    });
    group.finish();
}

criterion_group!(benches, bench_classify);
criterion_main!(benches);
