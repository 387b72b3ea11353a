//! Initialisation: PyTorch's gains and fans, the spread of each initialiser, orthogonality,
//! seeding, and the default initialisation of Linear and Conv layers.

use strata_autograd::Var;
use strata_nn::init::{self, FanMode, Nonlinearity};
use strata_nn::{Conv2d, Linear};
use strata_tensor::{Tensor, seeded_rng};

fn var(shape: &[usize]) -> Var<f64> {
    Var::parameter(Tensor::zeros(shape))
}

fn std_of(v: &Var<f64>) -> f64 {
    v.value().std(&[], false, false).unwrap().item().unwrap()
}

fn max_abs(v: &Var<f64>) -> f64 {
    v.to_vec().iter().fold(0.0, |m, x| m.max(x.abs()))
}

#[test]
fn gains_and_fans_follow_pytorch() {
    assert_eq!(init::calculate_gain(Nonlinearity::Linear, 0.0), 1.0);
    assert_eq!(init::calculate_gain(Nonlinearity::Tanh, 0.0), 5.0 / 3.0);
    assert_eq!(init::calculate_gain(Nonlinearity::Relu, 0.0), 2f64.sqrt());
    assert!(
        (init::calculate_gain(Nonlinearity::LeakyRelu, 0.2) - (2.0 / 1.04f64).sqrt()).abs() < 1e-15
    );
    assert_eq!(init::calculate_gain(Nonlinearity::Selu, 0.0), 0.75);
    assert_eq!(
        init::fan_in_and_fan_out(&[32, 16, 3, 3]).unwrap(),
        (16 * 9, 32 * 9)
    );
    assert_eq!(init::fan_in_and_fan_out(&[10, 4]).unwrap(), (4, 10));
    assert!(init::fan_in_and_fan_out(&[10]).is_err());
}

#[test]
fn each_initialiser_has_its_spread() {
    let mut rng = seeded_rng(1);
    let w = var(&[400, 300]);
    init::uniform_(&w, -0.5, 0.25, &mut rng).unwrap();
    assert!(w.to_vec().iter().all(|&x| (-0.5..0.25).contains(&x)));
    init::normal_(&w, 1.0, 0.1, &mut rng).unwrap();
    assert!((w.value().mean_all().item().unwrap() - 1.0).abs() < 0.002);
    assert!((std_of(&w) - 0.1).abs() < 0.002);
    init::xavier_uniform_(&w, 1.0, &mut rng).unwrap();
    let bound = (6.0 / 700.0f64).sqrt();
    assert!(max_abs(&w) <= bound && max_abs(&w) > 0.99 * bound);
    init::xavier_normal_(&w, 2.0, &mut rng).unwrap();
    assert!((std_of(&w) - 2.0 * (2.0 / 700.0f64).sqrt()).abs() < 0.003);
    init::kaiming_uniform_(&w, 0.0, FanMode::FanIn, Nonlinearity::Relu, &mut rng).unwrap();
    let bound = (6.0 / 300.0f64).sqrt();
    assert!(max_abs(&w) <= bound && max_abs(&w) > 0.99 * bound);
    init::kaiming_normal_(&w, 0.0, FanMode::FanOut, Nonlinearity::Relu, &mut rng).unwrap();
    assert!((std_of(&w) - (2.0 / 400.0f64).sqrt()).abs() < 0.002);
    init::constant_(&w, 0.3).unwrap();
    assert!(w.to_vec().iter().all(|&x| x == 0.3));
    init::zeros_(&w).unwrap();
    init::ones_(&w).unwrap();
    assert!(w.to_vec().iter().all(|&x| x == 1.0));
}

/// `orthogonal_` gives orthonormal rows (wide) or columns (tall), scaled by the gain.
#[test]
fn orthogonal_is_orthogonal() {
    for (shape, gain) in [
        (vec![6usize, 4usize], 1.0),
        (vec![3, 8], 2.0),
        (vec![5, 2, 2], 1.0),
    ] {
        let w = var(&shape);
        init::orthogonal_(&w, gain, &mut seeded_rng(3)).unwrap();
        let rows = shape[0];
        let cols: usize = shape[1..].iter().product();
        let m = w.value().reshape([rows as isize, cols as isize]).unwrap();
        let gram = if rows < cols {
            m.matmul(&m.t().unwrap())
        } else {
            m.t().unwrap().matmul(&m)
        }
        .unwrap();
        let k = rows.min(cols);
        let g = gram.to_vec();
        for i in 0..k {
            for j in 0..k {
                let want = if i == j { gain * gain } else { 0.0 };
                assert!(
                    (g[i * k + j] - want).abs() < 1e-12,
                    "{shape:?}: gram[{i}][{j}] = {}",
                    g[i * k + j]
                );
            }
        }
    }
    assert!(init::orthogonal_(&var(&[4]), 1.0, &mut seeded_rng(0)).is_err());
}

#[test]
fn the_same_seed_gives_the_same_weights() {
    let a = Linear::<f32>::new(5, 3, true, &mut seeded_rng(9));
    let b = Linear::<f32>::new(5, 3, true, &mut seeded_rng(9));
    let c = Linear::<f32>::new(5, 3, true, &mut seeded_rng(10));
    assert_eq!(a.weight.to_vec(), b.weight.to_vec());
    assert_ne!(a.weight.to_vec(), c.weight.to_vec());
}

/// Linear and Conv weights and biases are uniform in ±1/√fan_in, as PyTorch initialises them.
#[test]
fn layers_use_pytorchs_default_initialisation() {
    let fc = Linear::<f64>::new(256, 200, true, &mut seeded_rng(0));
    let bound = 1.0 / 16.0;
    let w = &fc.weight;
    assert!(max_abs(w) <= bound && max_abs(w) > 0.99 * bound);
    assert!((std_of(w) - bound / 3f64.sqrt()).abs() < 0.001);
    let b = fc.bias.as_ref().unwrap();
    assert!(max_abs(b) <= bound);
    let conv = Conv2d::<f64>::new(8, 64, 3, &mut seeded_rng(0)).unwrap();
    let bound = 1.0 / (8.0 * 9.0f64).sqrt();
    assert!(max_abs(&conv.weight) <= bound && max_abs(&conv.weight) > 0.99 * bound);
}
