//! Hooks with PyTorch's semantics: order, replacement, removal, retain_graph, and when a
//! leaf's post-accumulate-grad hook fires.

use std::sync::{Arc, Mutex};

use strata_autograd::{AutogradError, Var};
use strata_tensor::Tensor;

fn leaf(values: &[f64]) -> Var<f64> {
    Var::parameter(Tensor::from_slice(values, &[values.len()]).unwrap())
}

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn entries(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// y = x², so dL/dy = 1 and dL/dx = 2x · (whatever the hooks make of dL/dy).
#[test]
fn gradient_hooks_run_in_order_and_chain_their_replacements() -> Result<(), AutogradError> {
    let x = leaf(&[1.0, 2.0]);
    let y = x.square();
    let seen = log();
    let (a, b) = (seen.clone(), seen.clone());
    let h1 = y.register_hook(move |g| {
        a.lock().unwrap().push(format!("first {:?}", g.to_vec()));
        Some(g.mul_scalar(3.0))
    });
    let _h2 = y.register_hook(move |g| {
        b.lock().unwrap().push(format!("second {:?}", g.to_vec()));
        None
    });
    y.sum_all().backward_with_options(None, true)?;
    // The second hook sees the first one's replacement; x gets 2x · 3.
    assert_eq!(entries(&seen), ["first [1.0, 1.0]", "second [3.0, 3.0]"]);
    assert_eq!(x.grad().unwrap().to_vec(), vec![6.0, 12.0]);
    // Removed: the next walk (through the retained graph) runs only the second hook and
    // accumulates 2x more.
    h1.remove();
    y.sum_all().backward()?;
    assert_eq!(entries(&seen).len(), 3);
    assert_eq!(entries(&seen)[2], "second [1.0, 1.0]");
    assert_eq!(x.grad().unwrap().to_vec(), vec![8.0, 16.0]);
    Ok(())
}

#[test]
fn hooks_fire_on_every_walk_of_a_retained_graph() -> Result<(), AutogradError> {
    let x = leaf(&[0.5]);
    let y = x.exp();
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    let _h = y.register_hook(move |_| {
        *c.lock().unwrap() += 1;
        None
    });
    let loss = y.sum_all();
    for _ in 0..3 {
        loss.backward_with_options(None, true)?;
    }
    assert_eq!(*count.lock().unwrap(), 3);
    Ok(())
}

#[test]
fn a_leaf_hook_changes_what_accumulates() -> Result<(), AutogradError> {
    let x = leaf(&[1.0, -1.0]);
    let _h = x.register_hook(|g| Some(g.clamp(Some(0.0), None)));
    // d(sum(-3x))/dx = -3, clamped to 0 before it reaches .grad.
    x.mul_scalar(-3.0).sum_all().backward()?;
    assert_eq!(x.grad().unwrap().to_vec(), vec![0.0, 0.0]);
    Ok(())
}

#[test]
fn a_hook_returning_another_shape_is_an_error() {
    let x = leaf(&[1.0, 2.0]);
    let y = x.mul_scalar(2.0);
    let _h = y.register_hook(|_| Some(Tensor::zeros(&[3])));
    let err = y.sum_all().backward().unwrap_err();
    assert!(err.to_string().contains("shape [3]"), "{err}");
}

/// w feeds two branches: the post-accumulate-grad hook fires once, after both
/// contributions are in `.grad`, and again on a second backward with the sum of both.
#[test]
fn post_accumulate_hooks_see_the_final_gradient_once_per_backward() -> Result<(), AutogradError> {
    let w = leaf(&[2.0]);
    let b = leaf(&[1.0]);
    let seen = log();
    let (s1, s2) = (seen.clone(), seen.clone());
    let _hw = w.register_post_accumulate_grad_hook(move |p| {
        s1.lock()
            .unwrap()
            .push(format!("w {:?}", p.grad().unwrap().to_vec()));
    })?;
    let _hb = b.register_post_accumulate_grad_hook(move |p| {
        s2.lock()
            .unwrap()
            .push(format!("b {:?}", p.grad().unwrap().to_vec()));
    })?;
    // L = w·w + 3w + b: dL/dw = 2w + 3 = 7, dL/db = 1.
    let loss = w.mul(&w)?.add(&w.mul_scalar(3.0))?.add(&b)?.sum_all();
    loss.backward_with_options(None, true)?;
    let first = entries(&seen);
    assert_eq!(first.len(), 2);
    assert!(first.contains(&"w [7.0]".to_string()) && first.contains(&"b [1.0]".to_string()));
    loss.backward()?;
    let all = entries(&seen);
    assert_eq!(all.len(), 4);
    assert!(all[2..].contains(&"w [14.0]".to_string()));
    Ok(())
}

#[test]
fn post_accumulate_hooks_are_for_leaves_that_require_grad() {
    let x = leaf(&[1.0]);
    let y = x.mul_scalar(2.0);
    assert!(y.register_post_accumulate_grad_hook(|_| {}).is_err());
    let constant = Var::new(Tensor::<f64>::ones(&[1]));
    assert!(constant.register_post_accumulate_grad_hook(|_| {}).is_err());
}

#[test]
fn removing_a_post_accumulate_hook() -> Result<(), AutogradError> {
    let w = leaf(&[1.0]);
    let count = Arc::new(Mutex::new(0));
    let c = count.clone();
    let h = w.register_post_accumulate_grad_hook(move |_| *c.lock().unwrap() += 1)?;
    w.square().sum_all().backward()?;
    h.remove();
    w.square().sum_all().backward()?;
    assert_eq!(*count.lock().unwrap(), 1);
    Ok(())
}

/// A two-layer net h = relu(x·W1ᵀ + b1), y = h·W2ᵀ + b2: the walk reaches each layer's
/// parameters right after that layer's backward, so the second layer's post-accumulate-grad
/// hooks fire before any gradient reaches h (what data-parallel training overlaps its
/// all-reduce with), and the first layer's after.
#[test]
fn post_accumulate_hooks_fire_as_soon_as_their_layer_is_done() -> Result<(), AutogradError> {
    let x = Var::new(Tensor::from_slice(&[1.0f64, -2.0, 0.5], &[1, 3])?);
    let w1 = Var::parameter(Tensor::from_slice(&[0.1f64; 6], &[2, 3])?);
    let b1 = leaf(&[0.0, 0.1]);
    let w2 = Var::parameter(Tensor::from_slice(&[0.3f64, -0.2], &[1, 2])?);
    let b2 = leaf(&[0.5]);
    let seen = log();
    let mut handles = Vec::new();
    for (name, p) in [("w1", &w1), ("b1", &b1), ("w2", &w2), ("b2", &b2)] {
        let s = seen.clone();
        handles.push(p.register_post_accumulate_grad_hook(move |_| {
            s.lock().unwrap().push(name.to_string());
        })?);
    }
    let h = x.linear(&w1, Some(&b1))?.relu();
    let s = seen.clone();
    let _hh = h.register_hook(move |_| {
        s.lock().unwrap().push("h".to_string());
        None
    });
    h.linear(&w2, Some(&b2))?.sum_all().backward()?;
    let order = entries(&seen);
    let at = |name: &str| order.iter().position(|e| e == name).unwrap();
    assert!(at("w2") < at("h") && at("b2") < at("h"), "{order:?}");
    assert!(at("h") < at("w1") && at("h") < at("b1"), "{order:?}");
    Ok(())
}
