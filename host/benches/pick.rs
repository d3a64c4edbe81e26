//! `pick` cost per strategy over 100 backends (target: under 100 ns).
//!
//! Run: `cargo bench -p switchyard --bench pick`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::balance::{
    Backend, Balancer, HashRing, LeastConnections, LeastResponseTime, PickContext, RoundRobin,
    Weighted, hash_bytes,
};

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let addr = format!("10.1.{}.{}:8080", i / 200, i % 200 + 1);
            let b = Backend::detached(addr.parse().expect("valid address"), 1 + (i % 7) as u32);
            // Some load and latency history, as a live proxy has.
            b.state
                .in_flight
                .store((i % 5) as u32, std::sync::atomic::Ordering::Relaxed);
            b.state.ewma.observe(
                std::time::Duration::from_micros(500 + (i as u64 * 37) % 2000),
                1_000_000_000,
            );
            b
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let set = backends(100);
    let now = 1_050_000_000;
    let strategies: Vec<(&str, Box<dyn Balancer>)> = vec![
        ("round_robin", Box::new(RoundRobin::default())),
        (
            "weighted",
            Box::new(Weighted::new(&set, Default::default())),
        ),
        (
            "least_connections/p2c",
            Box::new(LeastConnections::new(true, Default::default())),
        ),
        (
            "least_connections/scan",
            Box::new(LeastConnections::new(false, Default::default())),
        ),
        (
            "least_response_time/p2c",
            Box::new(LeastResponseTime::new(true, Default::default())),
        ),
        (
            "least_response_time/scan",
            Box::new(LeastResponseTime::new(false, Default::default())),
        ),
        (
            "hash",
            Box::new(HashRing::new(&set, 160, None, Default::default())),
        ),
        (
            "hash/bounded",
            Box::new(HashRing::new(&set, 160, Some(1.25), Default::default())),
        ),
    ];
    let keys: Vec<u64> = (0..1024u64).map(|k| hash_bytes(&k.to_le_bytes())).collect();
    let mut group = c.benchmark_group("pick/100-backends");
    for (name, balancer) in &strategies {
        let mut k = 0usize;
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut ctx = PickContext::new(now);
                ctx.hash = Some(keys[k & 1023]);
                ctx.upstream_in_flight = 200;
                k += 1;
                black_box(balancer.pick(black_box(&set), &ctx))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
