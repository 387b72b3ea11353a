//! W4 (optimizer part): the AdamW update alone over 10 million parameters, in GB/s of
//! parameter-state memory touched (parameter read + write, gradient read, two moments
//! read + write: 7 × 4 bytes per element).
#![forbid(unsafe_code)]

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_autograd::Var;
use strata_optim::{AdamW, AdamWConfig, Optimizer};
use strata_tensor::{Tensor, seeded_rng};

fn w4_adamw_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("W4_adamw");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    let n = 10_000_000;
    let mut rng = seeded_rng(4);
    let p = Var::parameter(Tensor::<f32>::randn(&[n], &mut rng));
    p.set_grad(Some(Tensor::<f32>::randn(&[n], &mut rng)))
        .unwrap();
    let mut opt = AdamW::new(vec![p], AdamWConfig::default()).unwrap();
    group.throughput(Throughput::Bytes((7 * 4 * n) as u64));
    group.bench_function("strata/update_10M", |b| b.iter(|| opt.step().unwrap()));
    group.finish();
}

criterion_group!(benches, w4_adamw_update);
criterion_main!(benches);
