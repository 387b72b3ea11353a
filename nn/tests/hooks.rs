//! Module hooks through `Hooked`: forward-pre and forward hooks see and may replace the
//! input and output; backward hooks see `grad_input` and `grad_output` (checked against
//! the Linear layer's calculus) and may replace `grad_input`.

use std::sync::{Arc, Mutex};

use strata_autograd::Var;
use strata_nn::{Forward, Hooked, Linear, Module, Sequential};
use strata_tensor::{Tensor, seeded_rng};

fn linear() -> Hooked<Linear<f64>, f64> {
    Hooked::new(Linear::new(3, 2, true, &mut seeded_rng(1)))
}

#[test]
fn forward_hooks_replace_input_and_output_in_order() {
    let layer = linear();
    let order = Arc::new(Mutex::new(Vec::new()));
    let (o1, o2, o3) = (order.clone(), order.clone(), order.clone());
    let _a = layer.register_forward_pre_hook(move |x| {
        o1.lock().unwrap().push("pre");
        Some(x.mul_scalar(0.0))
    });
    let _b = layer.register_forward_hook(move |x, _y| {
        // The forward hook sees the input after the pre-hook replaced it.
        assert!(x.to_vec().iter().all(|&v| v == 0.0));
        o2.lock().unwrap().push("post1");
        None
    });
    let _c = layer.register_forward_hook(move |_x, y| {
        o3.lock().unwrap().push("post2");
        Some(y.add_scalar(100.0))
    });
    let y = layer.forward(&Var::new(Tensor::ones(&[1, 3]))).unwrap();
    // Zero input: the output is the bias, then +100 from the last hook.
    let bias = layer.inner().bias.as_ref().unwrap().to_vec();
    let want: Vec<f64> = bias.iter().map(|b| b + 100.0).collect();
    assert_eq!(y.to_vec(), want);
    assert_eq!(*order.lock().unwrap(), ["pre", "post1", "post2"]);
}

/// y = x·Wᵀ + b, L = Σ y·c with c = [1, 2]: grad_output = c for every row, and grad_input
/// = c·W.
#[test]
fn backward_hooks_see_the_gradients_of_the_layer() {
    let layer = linear();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let _h = layer.register_full_backward_hook(move |gi, go| {
        s.lock()
            .unwrap()
            .push((gi.map(|t| t.to_vec()), go.to_vec()));
        None
    });
    let x = Var::parameter(Tensor::<f64>::ones(&[2, 3]));
    let y = layer.forward(&x).unwrap();
    let c = Var::new(Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap());
    y.mul(&c).unwrap().sum_all().backward().unwrap();
    let w = layer.inner().weight.value();
    let cw = Tensor::from_vec(vec![1.0, 2.0], &[1, 2])
        .unwrap()
        .matmul(&w)
        .unwrap()
        .to_vec();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (gi, go) = &seen[0];
    assert_eq!(go, &vec![1.0, 2.0, 1.0, 2.0]);
    let gi = gi.as_ref().expect("x requires grad");
    for (row, chunk) in gi.chunks(3).enumerate() {
        for (a, b) in chunk.iter().zip(&cw) {
            assert!((a - b).abs() < 1e-12, "row {row}: {a} vs {b}");
        }
    }
    // x's gradient is what the hook saw (it did not replace it).
    assert_eq!(x.grad().unwrap().to_vec(), *gi);
}

#[test]
fn a_backward_hook_replaces_grad_input() {
    let layer = linear();
    let _h = layer.register_full_backward_hook(|gi, _go| gi.map(|g| g.mul_scalar(0.0)));
    let x = Var::parameter(Tensor::<f64>::ones(&[2, 3]));
    layer.forward(&x).unwrap().sum_all().backward().unwrap();
    assert!(x.grad().unwrap().to_vec().iter().all(|&v| v == 0.0));
    // The parameters' gradients are untouched: they do not flow through grad_input.
    assert!(
        layer
            .inner()
            .weight
            .grad()
            .unwrap()
            .to_vec()
            .iter()
            .any(|&v| v != 0.0)
    );
}

/// The first layer of a model sees inputs that need no gradient: its backward hook still
/// runs, with `grad_input = None` (what per-sample gradients need for every layer).
#[test]
fn backward_hooks_run_when_the_input_needs_no_gradient() {
    let first = linear();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let h = first.register_full_backward_hook(move |gi, go| {
        c.lock().unwrap().push((gi.is_none(), go.shape().to_vec()));
        None
    });
    let model = Sequential::new().push(first);
    let x = Var::new(Tensor::<f64>::ones(&[4, 3]));
    model.forward(&x).unwrap().sum_all().backward().unwrap();
    assert_eq!(*calls.lock().unwrap(), vec![(true, vec![4, 2])]);
    // Removed: no more calls; the state dict keys are the layer's.
    h.remove();
    model.forward(&x).unwrap().sum_all().backward().unwrap();
    assert_eq!(calls.lock().unwrap().len(), 1);
    assert_eq!(
        model.state_dict().keys().collect::<Vec<_>>(),
        ["0.weight", "0.bias"]
    );
}
