//! A custom op with its own backward, like a `torch.autograd.Function`: the "soft clip"
//! y = x / (1 + |x|), its forward computed on tensors and its backward
//! dy/dx = 1 / (1 + |x|)² written by hand with `Var::from_op`; checked against central
//! differences with `gradcheck`, then used as the activation of a small network that
//! learns.
//!
//! `cargo run --release -p strata-examples --example custom_op`

use strata_autograd::{GradcheckOptions, Var, gradcheck};
use strata_nn::loss::{Reduction, mse_loss};
use strata_nn::{Forward, Linear, Module};
use strata_optim::{Adam, AdamConfig, Optimizer};
use strata_tensor::{Element, Tensor, seeded_rng};

/// y = x / (1 + |x|), with its backward written by hand.
fn soft_clip<T: Element>(x: &Var<T>) -> Var<T> {
    let input = x.value();
    let value = input.map(|v| v / (T::one() + v.abs()));
    Var::from_op("soft_clip", value, &[x], move |grad, needs| {
        // Only compute what is needed: `needs[0]` says whether x wants a gradient.
        if !needs[0] {
            return Ok(vec![None]);
        }
        let local = input.map(|v| {
            let d = T::one() + v.abs();
            T::one() / (d * d)
        });
        Ok(vec![Some(grad.mul(&local)?)])
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = strata_examples::quick();
    let mut rng = seeded_rng(0);

    // 1. The backward against central differences, in f64.
    let x = Tensor::<f64>::randn(&[4, 3], &mut rng);
    gradcheck(
        |v| Ok(soft_clip(&v[0]).square().sum_all()),
        &[x],
        &GradcheckOptions::default(),
    )?;
    println!("gradcheck: the hand-written backward agrees with central differences");

    // 2. As an activation: fit y = sin(2x) on [-2, 2] with 1 → 32 → 1.
    let n = 256;
    let xs = Tensor::<f32>::linspace(-2.0, 2.0, n)?.reshape(&[n, 1][..])?;
    let ys = xs.map(|v| (2.0 * v).sin());
    let (l1, l2) = (
        Linear::new(1, 32, true, &mut rng),
        Linear::new(32, 1, true, &mut rng),
    );
    let params = [l1.parameters(), l2.parameters()].concat();
    let mut opt = Adam::new(
        params,
        AdamConfig {
            lr: 1e-2,
            ..AdamConfig::default()
        },
    )?;
    let (xv, yv) = (Var::new(xs), Var::new(ys));
    let steps = if quick { 100 } else { 1500 };
    let mut first = None;
    let mut last = f32::NAN;
    for step in 0..steps {
        let pred = l2.forward(&soft_clip(&l1.forward(&xv)?))?;
        let loss = mse_loss(&pred, &yv, Reduction::Mean)?;
        opt.zero_grad();
        loss.backward()?;
        opt.step()?;
        last = loss.item()?;
        first.get_or_insert(last);
        if step % 300 == 0 {
            println!("step {step:>4}: mse {last:.5}");
        }
    }
    let first = first.unwrap_or(f32::NAN);
    println!("mse {first:.4} → {last:.5}");
    if last.is_nan() || last >= 0.5 * first {
        return Err("the network with the custom activation did not learn".into());
    }
    Ok(())
}
