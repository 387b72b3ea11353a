//! The backward engine: accumulation, freeing, retain_graph, grad mode, errors.

use std::sync::Arc;

use strata_autograd::{AutogradError, Var, enable_grad, is_grad_enabled, no_grad};
use strata_tensor::{Tensor, TensorError};

fn t(values: &[f64], shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(values.to_vec(), shape).unwrap()
}

#[test]
fn var_is_send_and_sync() {
    fn check<S: Send + Sync + Clone>() {}
    check::<Var<f32>>();
    check::<Var<f64>>();
}

#[test]
fn gradients_accumulate_until_zero_grad() {
    let w = Var::parameter(t(&[1.0, 2.0, 3.0], &[3]));
    let x = Var::new(t(&[4.0, 5.0, 6.0], &[3]));
    for round in 1..=3 {
        w.mul(&x).unwrap().sum_all().backward().unwrap();
        let expected: Vec<f64> = [4.0, 5.0, 6.0].iter().map(|v| v * round as f64).collect();
        assert_eq!(w.grad().unwrap().to_vec(), expected);
    }
    w.zero_grad();
    assert!(w.grad().is_none());
    w.mul(&x).unwrap().sum_all().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec(), vec![4.0, 5.0, 6.0]);
    // The constant got nothing.
    assert!(x.grad().is_none());
}

#[test]
fn a_value_used_twice_sums_both_paths() {
    // y = x² + 3x with x an intermediate: dy/da = (2x + 3) · 2 at x = 2a.
    let a = Var::parameter(t(&[1.0, -2.0], &[2]));
    let x = a.mul_scalar(2.0);
    let y = x.mul(&x).unwrap().add(&x.mul_scalar(3.0)).unwrap();
    y.sum_all().backward().unwrap();
    assert_eq!(
        a.grad().unwrap().to_vec(),
        vec![(4.0 + 3.0) * 2.0, (-8.0 + 3.0) * 2.0]
    );
}

#[test]
fn backward_on_a_non_scalar_needs_a_gradient() {
    let a = Var::parameter(t(&[1.0, 2.0], &[2]));
    let y = a.exp();
    assert_eq!(
        y.backward(),
        Err(AutogradError::NonScalarOutput { shape: vec![2] })
    );
    let err = y.backward_with(&t(&[1.0, 2.0, 3.0], &[3])).unwrap_err();
    assert_eq!(
        err,
        AutogradError::GradShape {
            grad: vec![3],
            output: vec![2]
        }
    );
    y.backward_with(&t(&[1.0, 0.5], &[2])).unwrap();
    let e = [1f64.exp(), 2f64.exp() * 0.5];
    assert_eq!(a.grad().unwrap().to_vec(), e.to_vec());
    // A one-element output of any rank is fine without a gradient.
    let b = Var::parameter(t(&[3.0], &[1, 1]));
    b.square().backward().unwrap();
    assert_eq!(b.grad().unwrap().to_vec(), vec![6.0]);
    assert_eq!(b.grad().unwrap().shape(), &[1, 1]);
}

#[test]
fn a_second_backward_through_a_freed_graph_is_an_error() {
    let a = Var::parameter(t(&[1.0, 2.0], &[2]));
    let loss = a.exp().sum_all();
    loss.backward().unwrap();
    let err = loss.backward().unwrap_err();
    assert!(
        matches!(err, AutogradError::GraphFreed { op: "sum" }),
        "{err:?}"
    );
    assert!(err.to_string().contains("retain_graph"));
    // The freed node still knows its op.
    assert_eq!(loss.op_name(), Some("sum"));
}

#[test]
fn retain_graph_allows_a_second_walk() {
    let a = Var::parameter(t(&[1.0, 2.0], &[2]));
    let loss = a.square().sum_all();
    loss.backward_with_options(None, true).unwrap();
    loss.backward_with_options(None, false).unwrap();
    assert_eq!(a.grad().unwrap().to_vec(), vec![4.0, 8.0]);
    assert!(loss.backward().is_err());
}

#[test]
fn backward_without_a_graph_is_an_error() {
    let c = Var::new(t(&[1.0], &[1]));
    assert_eq!(c.exp().backward(), Err(AutogradError::NoGraph));
}

#[test]
fn ops_on_untracked_inputs_build_no_graph() {
    let a = Var::new(t(&[1.0, 2.0], &[2]));
    let b = Var::new(t(&[3.0, 4.0], &[2]));
    let y = a.mul(&b).unwrap().exp().sum_all();
    assert!(y.is_leaf());
    assert!(!y.needs_grad());
    assert_eq!(y.op_name(), None);
    let w = Var::parameter(t(&[1.0, 2.0], &[2]));
    let z = a.mul(&w).unwrap();
    assert!(!z.is_leaf());
    assert!(z.needs_grad());
    assert_eq!(z.op_name(), Some("mul"));
}

#[test]
fn no_grad_records_nothing_and_restores_the_mode() {
    let w = Var::parameter(t(&[1.0, 2.0], &[2]));
    assert!(is_grad_enabled());
    let y = no_grad(|| {
        assert!(!is_grad_enabled());
        let inner = enable_grad(|| w.exp());
        assert!(inner.needs_grad());
        assert!(!is_grad_enabled());
        w.exp()
    });
    assert!(is_grad_enabled());
    assert!(!y.needs_grad() && y.is_leaf());
    // The mode is restored after a panic inside.
    let caught = std::panic::catch_unwind(|| no_grad(|| panic!("boom")));
    assert!(caught.is_err());
    assert!(is_grad_enabled());
}

#[test]
fn detach_cuts_the_graph() {
    let a = Var::parameter(t(&[2.0], &[1]));
    let b = a.square();
    let c = b.detach().mul(&a).unwrap(); // d/da (const(a²) · a) = a² = 4
    c.backward().unwrap();
    assert_eq!(a.grad().unwrap().to_vec(), vec![4.0]);
    assert!(b.detach().is_leaf());
}

#[test]
fn requires_grad_on_leaves_and_results() {
    let a = Var::new(t(&[1.0], &[1])).requires_grad(true);
    assert!(a.needs_grad() && a.is_leaf());
    let y = a.exp();
    let cut = y.clone().requires_grad(false);
    assert!(cut.is_leaf() && !cut.needs_grad());
    assert!(!y.is_leaf(), "the original result keeps its node");
}

#[test]
fn retain_grad_keeps_an_intermediate_gradient() {
    let a = Var::parameter(t(&[1.0, 2.0], &[2]));
    let h = a.mul_scalar(3.0);
    h.retain_grad();
    let other = a.mul_scalar(5.0);
    h.square()
        .sum_all()
        .add(&other.sum_all())
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(h.grad().unwrap().to_vec(), vec![6.0, 12.0]);
    assert!(other.grad().is_none());
    assert_eq!(a.grad().unwrap().to_vec(), vec![18.0 + 5.0, 36.0 + 5.0]);
}

#[test]
fn the_graph_is_released_after_backward() {
    let sentinel = Arc::new(());
    let a = Var::parameter(t(&[1.0, 2.0], &[2]));
    let held = Arc::clone(&sentinel);
    let y = Var::from_op("custom", a.value().mul_scalar(2.0), &[&a], move |g, _| {
        let _keep = &held;
        Ok(vec![Some(g.mul_scalar(2.0))])
    });
    let weak_y = std::sync::Arc::downgrade(&sentinel);
    let loss = y.exp().sum_all();
    drop(y);
    assert_eq!(Arc::strong_count(&sentinel), 2);
    loss.backward().unwrap();
    // The custom node (and with it the intermediate var) is gone although `loss` lives.
    assert_eq!(Arc::strong_count(&sentinel), 1);
    assert!(weak_y.upgrade().is_some());
    assert_eq!(
        a.grad().unwrap().to_vec(),
        vec![2.0 * 2f64.exp(), 2.0 * 4f64.exp()]
    );
}

#[test]
fn errors_inside_ops_are_returned() {
    let a = Var::parameter(Tensor::<f32>::zeros(&[2, 3]));
    let b = Var::parameter(Tensor::<f32>::zeros(&[4, 5]));
    let err = a.matmul(&b).unwrap_err();
    assert_eq!(err.to_string(), "matmul: cannot multiply [2, 3] by [4, 5]");
    assert!(matches!(
        err,
        AutogradError::Tensor(TensorError::Matmul { .. })
    ));
    assert!(matches!(
        a.add(&b),
        Err(AutogradError::Tensor(TensorError::Broadcast { .. }))
    ));
    assert!(matches!(
        a.sum(&[2], false),
        Err(AutogradError::Tensor(TensorError::Dim { .. }))
    ));
    assert!(a.reshape([7]).is_err());
    assert!(matches!(
        a.item(),
        Err(AutogradError::Tensor(TensorError::NotScalar { .. }))
    ));
}

#[test]
#[should_panic(expected = "add: shapes [2, 3] and [4] cannot be broadcast together")]
fn operators_panic_with_the_error_message() {
    let a = Var::parameter(Tensor::<f32>::zeros(&[2, 3]));
    let b = Var::new(Tensor::<f32>::zeros(&[4]));
    let _ = &a + &b;
}

#[test]
fn operators_match_the_methods() {
    let a = Var::parameter(t(&[1.0, 2.0], &[2]));
    let b = Var::new(t(&[3.0, 5.0], &[2]));
    let y = &(&(&a * &b) - &a) / &b;
    let y = &(2.0 - &(-&y)) + 1.0;
    assert_eq!(
        y.to_vec(),
        vec![3.0 + (3.0 - 1.0) / 3.0, 3.0 + (10.0 - 2.0) / 5.0]
    );
    y.sum_all().backward().unwrap();
    // d/da (a·b − a)/b = (b − 1)/b
    let g = a.grad().unwrap().to_vec();
    assert!(
        (g[0] - 2.0 / 3.0).abs() < 1e-15 && (g[1] - 0.8).abs() < 1e-15,
        "{g:?}"
    );
}

#[test]
fn set_value_and_update_value_keep_the_shape() {
    let p = Var::parameter(t(&[1.0, 2.0], &[2]));
    assert!(matches!(
        p.set_value(t(&[1.0], &[1])),
        Err(AutogradError::Invalid { .. })
    ));
    p.set_value(t(&[3.0, 4.0], &[2])).unwrap();
    assert_eq!(p.to_vec(), vec![3.0, 4.0]);
    let err = p
        .update_value(|v| -> Result<(), TensorError> {
            *v = Tensor::zeros(&[3]);
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(
        err,
        AutogradError::Invalid {
            op: "update_value",
            ..
        }
    ));
    assert!(matches!(
        p.set_grad(Some(t(&[1.0], &[1]))),
        Err(AutogradError::Invalid { .. })
    ));
}

#[test]
fn a_graph_recorded_before_an_update_keeps_the_old_value() {
    let p = Var::parameter(t(&[2.0], &[1]));
    let loss = p.square().sum_all(); // saves p = 2
    p.set_value(t(&[10.0], &[1])).unwrap();
    loss.backward().unwrap();
    assert_eq!(p.grad().unwrap().to_vec(), vec![4.0]);
}

#[test]
fn graphs_cross_threads() {
    let p = Var::parameter(t(&[1.0, 2.0], &[2]));
    let loss = std::thread::scope(|s| s.spawn(|| p.square().sum_all()).join().unwrap());
    std::thread::scope(|s| s.spawn(|| loss.backward().unwrap()).join().unwrap());
    assert_eq!(p.grad().unwrap().to_vec(), vec![2.0, 4.0]);
}

#[test]
fn display_prints_like_pytorch() {
    let p = Var::parameter(Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap());
    assert_eq!(p.to_string(), "tensor([1., 2.], requires_grad=True)");
    assert_eq!(
        p.exp().to_string().split(", grad_fn").nth(1),
        Some("=<exp>)")
    );
    assert_eq!(
        Var::new(Tensor::from_vec(vec![1.0f32], &[1]).unwrap()).to_string(),
        "tensor([1.])"
    );
}

/// The literal linear fit of the reference material against the same loop with the
/// gradients written out by hand: the values agree to rounding.
#[test]
fn linear_regression_matches_hand_written_gradients() {
    let xs = [1.0, 2.0, 3.0, 4.0, 5.0];
    let x = Var::new(t(&xs, &[5]));
    let y = Var::new(t(&[2.0, 4.0, 6.0, 8.0, 10.0], &[5]));
    let theta0 = Var::parameter(Tensor::scalar(0.0f64));
    let theta1 = Var::parameter(Tensor::scalar(0.0f64));
    let (mut h0, mut h1) = (0.0f64, 0.0f64);
    for _ in 0..1000 {
        let loss = theta0
            .add(&theta1.mul(&x).unwrap())
            .unwrap()
            .sub(&y)
            .unwrap()
            .square()
            .mean_all();
        loss.backward().unwrap();
        no_grad(|| {
            for p in [&theta0, &theta1] {
                let g = p.take_grad().unwrap();
                p.update_value(|v| v.axpy_(-0.01, &g)).unwrap();
            }
        });
        let r: Vec<f64> = xs.iter().map(|&x| h0 + h1 * x - 2.0 * x).collect();
        let g0 = r.iter().sum::<f64>() * 2.0 / 5.0;
        let g1 = r.iter().zip(&xs).map(|(r, x)| r * x).sum::<f64>() * 2.0 / 5.0;
        h0 -= 0.01 * g0;
        h1 -= 0.01 * g1;
    }
    assert!((theta0.item().unwrap() - h0).abs() < 1e-12);
    assert!((theta1.item().unwrap() - h1).abs() < 1e-12);
    assert!(
        (h1 - 2.0).abs() < 0.05,
        "the fit converges toward 2, got {h1}"
    );
}

/// The fused cross-entropy terms: by hand on a [2, 3] input with weights, the gradient
/// `w·(softmax − onehot)`, and bad arguments are errors.
#[test]
fn cross_entropy_terms_by_hand_and_refusals() -> Result<(), AutogradError> {
    let x = Var::parameter(t(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], &[2, 3]));
    let target = strata_tensor::IndexTensor::from_vec(vec![2, 0], &[2])?;
    let w = t(&[1.0, 0.5], &[2]);
    let terms = x.cross_entropy_terms(1, &target, &w)?;
    let lse0 = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
    let want = [lse0 - 3.0, 0.5 * 3f64.ln()];
    for (g, w) in terms.value().to_vec().iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{g} vs {w}");
    }
    terms.sum_all().backward()?;
    let grad = x.grad().expect("a gradient").to_vec();
    let soft0: Vec<f64> = [1.0f64, 2.0, 3.0]
        .iter()
        .map(|v| (v - lse0).exp())
        .collect();
    let want = [
        soft0[0],
        soft0[1],
        soft0[2] - 1.0,
        0.5 * (1.0 / 3.0 - 1.0),
        0.5 / 3.0,
        0.5 / 3.0,
    ];
    for (g, w) in grad.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{g} vs {w}");
    }
    let bad_target = strata_tensor::IndexTensor::from_vec(vec![3, 0], &[2])?;
    let short = strata_tensor::IndexTensor::from_vec(vec![0], &[1])?;
    assert!(x.cross_entropy_terms(2, &target, &w).is_err());
    assert!(x.cross_entropy_terms(1, &bad_target, &w).is_err());
    assert!(x.cross_entropy_terms(1, &short, &w).is_err());
    assert!(x.cross_entropy_terms(1, &target, &t(&[1.0], &[1])).is_err());
    Ok(())
}
