//! W8: autograd overhead. `linreg` is the literal linear-regression loop of the reference
//! material (five points on y = 2x, θ0 and θ1 as 0-d leaf vars, loss = mean((θ0 + θ1·x −
//! y)²), backward, an update under no_grad with lr 0.01); one iteration is 1000 steps.
//! `small_op` is one elementwise op on a [1]-shaped var plus its backward.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use strata_autograd::{Var, no_grad};
use strata_tensor::Tensor;

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

criterion_group!(benches, w8_autograd);
criterion_main!(benches);
