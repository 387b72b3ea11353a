//! W6: one AdamW (lr 1e-4) step of a post-norm transformer encoder layer: d_model 256,
//! 8 heads, feed-forward 1024, dropout 0, input `[16, 128, 256]` batch-first, loss
//! `mean(out²)`; forward, backward, `optimizer.step()` and `zero_grad()`.
#![forbid(unsafe_code)]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use strata_autograd::Var;
use strata_nn::{Forward, Module, TransformerEncoderLayer, TransformerEncoderLayerConfig};
use strata_optim::{AdamW, AdamWConfig, Optimizer};
use strata_tensor::{Tensor, seeded_rng};

fn w6_transformer_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("W6_transformer");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    let mut rng = seeded_rng(6);
    let config = TransformerEncoderLayerConfig::new(256, 8)
        .dim_feedforward(1024)
        .dropout(0.0)
        .batch_first(true);
    let layer = TransformerEncoderLayer::<f32>::new(config, &mut rng).unwrap();
    let mut opt = AdamW::new(
        layer.parameters(),
        AdamWConfig {
            lr: 1e-4,
            ..AdamWConfig::default()
        },
    )
    .unwrap();
    let x = Var::new(Tensor::<f32>::randn(&[16, 128, 256], &mut rng));
    group.bench_function("strata/adamw_step", |b| {
        b.iter(|| {
            let out = layer.forward(&x).unwrap();
            let loss = out.square().mean_all();
            loss.backward().unwrap();
            opt.step().unwrap();
            opt.zero_grad();
        })
    });
    group.finish();
}

criterion_group!(benches, w6_transformer_step);
criterion_main!(benches);
