//! W8: autograd overhead. `linreg` is the literal linear-regression loop of the reference
//! material (five points on y = 2x, θ0 and θ1 as 0-d leaf vars, loss = mean((θ0 + θ1·x −
//! y)²), backward, an update under no_grad with lr 0.01); one iteration is 1000 steps.
//! `small_op` is one elementwise op on a [1]-shaped var plus its backward.
//!
//! `W8_backward`: for each op on large inputs, the forward alone (`strata/OP-fwd`, graph
//! recorded) and forward plus backward (`strata/OP-fwd+bwd`); the backward's cost relative
//! to the forward is `(fwd+bwd − fwd) / fwd`.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strata_autograd::{Var, no_grad};
use strata_tensor::{Conv2dParams, IndexTensor, Pool2dParams, Tensor, seeded_rng};

const STEPS: u64 = 1000;

fn linreg_steps(theta0: &Var, theta1: &Var, x: &Var, y: &Var) {
    for _ in 0..STEPS {
        let prediction = theta0.add(&theta1.mul(x).unwrap()).unwrap();
        let loss = prediction.sub(y).unwrap().square().mean_all();
        loss.backward().unwrap();
        no_grad(|| {
            for p in [theta0, theta1] {
                let g = p.take_grad().unwrap();
                p.update_value(|v| v.axpy_(-0.01, &g)).unwrap();
            }
        });
    }
}

fn w8_autograd(c: &mut Criterion) {
    let mut group = c.benchmark_group("W8_autograd");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));

    let x = Var::new(Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0], &[5]).unwrap());
    let y = Var::new(Tensor::from_vec(vec![2.0f32, 4.0, 6.0, 8.0, 10.0], &[5]).unwrap());
    let theta0 = Var::parameter(Tensor::scalar(0.0f32));
    let theta1 = Var::parameter(Tensor::scalar(0.0f32));
    group.throughput(Throughput::Elements(STEPS));
    group.bench_function("strata/linreg", |bench| {
        bench.iter(|| linreg_steps(&theta0, &theta1, &x, &y));
    });
    // Criterion skips the closure when a filter excludes it; check the fit only if it ran.
    if theta1.item().unwrap() != 0.0 {
        assert!(
            (theta1.item().unwrap() - 2.0).abs() < 1e-3,
            "the fit converged"
        );
    }

    let a = Var::parameter(Tensor::from_vec(vec![0.5f32], &[1]).unwrap());
    let b = Var::new(Tensor::from_vec(vec![1.5f32], &[1]).unwrap());
    let ones = Tensor::<f32>::ones(&[1]);
    group.throughput(Throughput::Elements(1));
    group.bench_function("strata/small_op", |bench| {
        bench.iter(|| {
            let out = a.mul(&b).unwrap();
            out.backward_with(black_box(&ones)).unwrap();
        });
    });
    group.finish();
}

/// Measures `op` alone and followed by a backward of a gradient of ones.
fn forward_and_backward(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    op: impl Fn() -> Var<f32>,
) {
    let ones = Tensor::<f32>::ones(op().shape());
    group.bench_function(BenchmarkId::new("strata", format!("{name}-fwd")), |b| {
        b.iter(|| black_box(op()))
    });
    group.bench_function(BenchmarkId::new("strata", format!("{name}-fwd+bwd")), |b| {
        b.iter(|| op().backward_with(&ones).unwrap())
    });
}

fn backward_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("W8_backward");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut rng = seeded_rng(8);
    let mut param = |shape: &[usize]| Var::parameter(Tensor::<f32>::randn(shape, &mut rng));
    let (a, b, row) = (param(&[1024, 1024]), param(&[1024, 1024]), param(&[1024]));
    let (m1, m2) = (param(&[512, 512]), param(&[512, 512]));
    let img = param(&[16, 64, 32, 32]);
    let kernel = param(&[64, 64, 3, 3]);
    let w2_x = param(&[32, 3, 32, 32]);
    let w2_w = param(&[32, 3, 3, 3]);
    // Gradients are dropped at each iteration's end, but accumulating into leaves would
    // add a copy the forward does not have: clear them inside the timed loop.
    let clear = |vars: &[&Var<f32>]| vars.iter().for_each(|v| v.zero_grad());
    forward_and_backward(&mut group, "add_broadcast", || {
        clear(&[&a, &row]);
        a.add(&row).unwrap()
    });
    forward_and_backward(&mut group, "mul", || {
        clear(&[&a, &b]);
        a.mul(&b).unwrap()
    });
    forward_and_backward(&mut group, "tanh", || {
        clear(&[&a]);
        a.tanh()
    });
    forward_and_backward(&mut group, "sum_dim", || {
        clear(&[&a]);
        a.sum(&[1], false).unwrap()
    });
    forward_and_backward(&mut group, "softmax", || {
        clear(&[&a]);
        a.softmax(-1).unwrap()
    });
    forward_and_backward(&mut group, "matmul_512", || {
        clear(&[&m1, &m2]);
        m1.matmul(&m2).unwrap()
    });
    let p = Conv2dParams::default().padding(1);
    forward_and_backward(&mut group, "conv2d_64x64x3x3", || {
        clear(&[&img, &kernel]);
        img.conv2d(&kernel, None, p).unwrap()
    });
    forward_and_backward(&mut group, "conv2d_w2", || {
        clear(&[&w2_x, &w2_w]);
        w2_x.conv2d(&w2_w, None, p).unwrap()
    });
    forward_and_backward(&mut group, "max_pool2d", || {
        clear(&[&img]);
        img.max_pool2d(Pool2dParams::new(2)).unwrap()
    });
    forward_and_backward(&mut group, "avg_pool2d", || {
        clear(&[&img]);
        img.avg_pool2d(Pool2dParams::new(2)).unwrap()
    });
    let rows: Vec<i64> = (0..1024).map(|i| (i * 7919) % 1024).collect();
    let rows = IndexTensor::from_vec(rows, &[1024]).unwrap();
    forward_and_backward(&mut group, "index_select", || {
        clear(&[&a]);
        a.index_select(0, &rows).unwrap()
    });
    forward_and_backward(&mut group, "cat", || {
        clear(&[&a, &b]);
        Var::cat(&[&a, &b], 1).unwrap()
    });
    forward_and_backward(&mut group, "transpose_contiguous", || {
        clear(&[&a]);
        a.t().unwrap().contiguous()
    });
    group.finish();
}

criterion_group!(benches, w8_autograd, backward_cost);
criterion_main!(benches);
