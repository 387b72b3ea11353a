#![allow(clippy::cloned_ref_to_slice_refs, clippy::neg_multiply)]

//! Higher-order gradients, functional gradients, anomaly mode and checkpointing, each
//! against derivatives worked out by hand.

use std::sync::Arc;

use strata_autograd::{
    AutogradError, GradOptions, Var, checkpoint, detect_anomaly, grad, hessian_vector_product, jvp,
    vjp,
};
use strata_tensor::Tensor;

fn t(values: &[f64]) -> Tensor<f64> {
    Tensor::from_slice(values, &[values.len()]).unwrap()
}

fn close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() < 1e-10 * (1.0 + w.abs()),
            "{got:?} vs {want:?}"
        );
    }
}

const GRAPH: GradOptions = GradOptions {
    retain_graph: false,
    create_graph: true,
    allow_unused: false,
};

/// y = x³ + sin x: y' = 3x² + cos x, y'' = 6x − sin x, y''' = 6 − cos x.
#[test]
fn third_derivatives_of_a_scalar_function() -> Result<(), AutogradError> {
    let xs = [0.3, -1.2, 2.0];
    let x = Var::parameter(t(&xs));
    let y = x.pow_scalar(3.0).add(&x.sin())?.sum_all();
    let d1 = grad(&[y], &[x.clone()], None, GRAPH)?[0].clone().unwrap();
    close(&d1.to_vec(), &xs.map(|x: f64| 3.0 * x * x + x.cos()));
    let d2 = grad(&[d1.sum_all()], &[x.clone()], None, GRAPH)?[0]
        .clone()
        .unwrap();
    close(&d2.to_vec(), &xs.map(|x: f64| 6.0 * x - x.sin()));
    let d3 = grad(&[d2.sum_all()], &[x], None, GradOptions::default())?[0]
        .clone()
        .unwrap();
    close(&d3.to_vec(), &xs.map(|x: f64| 6.0 - x.cos()));
    Ok(())
}

/// f(x) = Σ x_i² x_j (all pairs) = (Σx²)(Σx): H·v checked against the Hessian written out.
#[test]
fn hessian_vector_products() -> Result<(), AutogradError> {
    let xs = [1.0, 2.0, -0.5];
    let v = [0.3, -1.0, 2.0];
    let (y, hv) = hessian_vector_product(
        |x| x[0].square().sum_all().mul(&x[0].sum_all()),
        &[t(&xs)],
        &[Var::new(t(&v))],
    )?;
    let (s1, s2): (f64, f64) = (xs.iter().sum(), xs.iter().map(|x| x * x).sum());
    assert!((y.item()? - s1 * s2).abs() < 1e-12);
    // ∂f/∂x_i = 2x_i·s1 + s2, so H_ij = 2δ_ij·s1 + 2x_i + 2x_j.
    let want: Vec<f64> = (0..3)
        .map(|i| {
            (0..3)
                .map(|j| (if i == j { 2.0 * s1 } else { 0.0 } + 2.0 * xs[i] + 2.0 * xs[j]) * v[j])
                .sum()
        })
        .collect();
    close(&hv[0].to_vec(), &want);
    Ok(())
}

/// f(a, b) = (a ⊙ b, a²): J·v and vᵀ·J against the Jacobian by hand.
#[test]
fn jvp_and_vjp() -> Result<(), AutogradError> {
    let (a, b) = ([1.0, 2.0], [3.0, -1.0]);
    let f = |x: &[Var<f64>]| Ok(vec![x[0].mul(&x[1])?, x[0].square()]);
    let (ta, tb) = ([0.5, 1.0], [2.0, -2.0]);
    let (_, jv) = jvp(f, &[t(&a), t(&b)], &[Var::new(t(&ta)), Var::new(t(&tb))])?;
    // d(a⊙b) = da⊙b + a⊙db, d(a²) = 2a⊙da.
    close(
        &jv[0].to_vec(),
        &[0.5 * 3.0 + 1.0 * 2.0, 1.0 * -1.0 + 2.0 * -2.0],
    );
    close(&jv[1].to_vec(), &[2.0 * 1.0 * 0.5, 2.0 * 2.0 * 1.0]);
    let (u0, u1) = ([1.0, -1.0], [0.5, 2.0]);
    let (_, vj) = vjp(
        f,
        &[t(&a), t(&b)],
        &[Var::new(t(&u0)), Var::new(t(&u1))],
        false,
    )?;
    // ∂/∂a = u0⊙b + 2a⊙u1, ∂/∂b = u0⊙a.
    close(&vj[0].to_vec(), &[3.0 + 1.0, 1.0 + 8.0]);
    close(&vj[1].to_vec(), &[1.0, -2.0]);
    Ok(())
}

#[test]
fn grad_leaves_dot_grad_alone_and_reports_unused_inputs() -> Result<(), AutogradError> {
    let x = Var::parameter(t(&[1.0, 2.0]));
    let unused = Var::parameter(t(&[5.0]));
    let y = x.square().sum_all();
    let g = grad(
        &[y.clone()],
        &[x.clone()],
        None,
        GradOptions {
            retain_graph: true,
            ..GradOptions::default()
        },
    )?;
    close(&g[0].as_ref().unwrap().to_vec(), &[2.0, 4.0]);
    assert!(x.grad().is_none(), "grad() must not touch .grad");
    let err = grad(
        &[y.clone()],
        &[x.clone(), unused.clone()],
        None,
        GradOptions {
            retain_graph: true,
            ..GradOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, AutogradError::UnusedInput { index: 1 }));
    let allowed = GradOptions {
        allow_unused: true,
        ..GradOptions::default()
    };
    let g = grad(&[y], &[x, unused], None, allowed)?;
    assert!(g[1].is_none());
    Ok(())
}

/// A gradient penalty (WGAN-GP's shape): L = (‖∇_x f‖² − 1)² with f(x) = w·tanh(x);
/// dL/dw by hand.
#[test]
fn a_gradient_penalty_trains_through_the_gradient() -> Result<(), AutogradError> {
    let x = Var::parameter(t(&[0.4]));
    let w = Var::parameter(t(&[1.5]));
    let f = w.mul(&x.tanh())?.sum_all();
    let gx = grad(&[f], &[x.clone()], None, GRAPH)?[0].clone().unwrap();
    let penalty = gx.square().sum_all().sub_scalar(1.0).square();
    penalty.backward()?;
    // ∇_x f = w·sech²(x) = w·s; L = (w²s² − 1)²; dL/dw = 2(w²s² − 1)·2ws².
    let s: f64 = 1.0 - 0.4f64.tanh().powi(2);
    let want = 2.0 * (1.5f64.powi(2) * s * s - 1.0) * 2.0 * 1.5 * s * s;
    close(&w.grad().unwrap().to_vec(), &[want]);
    Ok(())
}

#[test]
fn backward_create_graph_keeps_a_differentiable_gradient() -> Result<(), AutogradError> {
    let x = Var::parameter(t(&[2.0]));
    x.exp().mul(&x)?.sum_all().backward_create_graph(None)?; // (1 + x)eˣ
    let dx = x.grad_var().expect("kept");
    close(&x.grad().unwrap().to_vec(), &[3.0 * 2f64.exp()]);
    x.zero_grad();
    dx.sum_all().backward()?; // (2 + x)eˣ
    close(&x.grad().unwrap().to_vec(), &[4.0 * 2f64.exp()]);
    Ok(())
}

#[test]
fn an_op_without_a_differentiable_backward_is_named() {
    let x = Var::parameter(t(&[1.0]));
    let y = Var::from_op("first_order_only", x.value(), &[&x], |g, _| {
        Ok(vec![Some(g.clone())])
    });
    let err = grad(&[y.sum_all()], &[x], None, GRAPH).unwrap_err();
    assert!(
        matches!(
            err,
            AutogradError::NoDoubleBackward {
                op: "first_order_only"
            }
        ),
        "{err}"
    );
}

/// log(x) at x = 0 gives an infinite gradient: anomaly mode names `log` and the place it
/// was called (this file), and it is off outside the closure.
#[test]
fn anomaly_mode_names_the_op_and_where_it_ran() {
    let x = Var::parameter(t(&[0.0, 1.0]));
    let err = detect_anomaly(|| x.log().sum_all().backward()).unwrap_err();
    match &err {
        AutogradError::Anomaly {
            op,
            input,
            recorded,
            ..
        } => {
            assert_eq!((*op, *input), ("log", 0));
            assert!(recorded.contains("higher_order.rs"), "{recorded}");
        }
        other => panic!("{other}"),
    }
    // Without anomaly mode the infinity goes through silently, as in PyTorch.
    let x = Var::parameter(t(&[0.0]));
    x.log().sum_all().backward().unwrap();
    assert!(x.grad().unwrap().to_vec()[0].is_infinite());
}

/// A checkpointed piece gives the same value and gradients as the plain one, for its input
/// and for a parameter it only captures.
#[test]
fn checkpoint_equals_the_plain_computation() -> Result<(), AutogradError> {
    let w = Var::parameter(t(&[0.7, -1.1, 0.2]));
    let plain_x = Var::parameter(t(&[0.5, 1.5, -2.0]));
    let f = {
        let w = w.clone();
        move |xs: &[Var<f64>]| -> Result<Var<f64>, AutogradError> {
            xs[0]
                .mul(&w)?
                .tanh()
                .mul(&xs[0])?
                .exp()
                .sum_all()
                .sqrt()
                .add_scalar(1.0)
                .log()
                .into_ok()
        }
    };
    let plain = f(std::slice::from_ref(&plain_x))?;
    plain.backward()?;
    let (gx, gw) = (plain_x.grad().unwrap().to_vec(), w.grad().unwrap().to_vec());
    w.zero_grad();
    let x = Var::parameter(t(&[0.5, 1.5, -2.0]));
    let y = checkpoint(Arc::new(f), &[x.clone()])?;
    assert_eq!(y.to_vec(), plain.to_vec());
    y.backward()?;
    assert_eq!(x.grad().unwrap().to_vec(), gx);
    assert_eq!(w.grad().unwrap().to_vec(), gw);
    // No differentiable backward through a checkpoint.
    let y = checkpoint(Arc::new(|xs: &[Var<f64>]| Ok(xs[0].square())), &[x.clone()])?;
    assert!(matches!(
        grad(&[y.sum_all()], &[x], None, GRAPH),
        Err(AutogradError::NoDoubleBackward { op: "checkpoint" })
    ));
    Ok(())
}

trait IntoOk: Sized {
    fn into_ok(self) -> Result<Self, AutogradError> {
        Ok(self)
    }
}
impl IntoOk for Var<f64> {}
