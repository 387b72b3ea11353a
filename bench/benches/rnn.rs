//! W5: one LSTM layer (input 64, hidden 256) over a sequence of 64 steps at batch 32, f32,
//! forward and backward of `mean(out²)`. Run with `RAYON_NUM_THREADS=2`.
#![forbid(unsafe_code)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use strata_autograd::Var;
use strata_nn::{LSTM, Module, RnnConfig};
use strata_tensor::{Tensor, seeded_rng};

fn w5_lstm(c: &mut Criterion) {
    let mut group = c.benchmark_group("W5_lstm");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let mut rng = seeded_rng(5);
    let lstm = LSTM::<f32>::new(RnnConfig::new(64, 256), &mut rng).unwrap();
    let x = Var::new(Tensor::<f32>::randn(&[64, 32, 64], &mut rng));
    group.bench_function("strata/fwd+bwd", |b| {
        b.iter(|| {
            let (out, _) = lstm.forward(&x, None).unwrap();
            out.square().mean_all().backward().unwrap();
            lstm.zero_grad();
        });
    });
    group.finish();
}

criterion_group!(benches, w5_lstm);
criterion_main!(benches);
