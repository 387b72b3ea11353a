//! Linear regression step by step: tensors, parameters, a loss built from ops, its
//! gradient by `backward`, and the gradient-descent update written by hand — then the
//! fitted coefficients against the least-squares solution.
//!
//! `cargo run --release -p strata-examples --example linear_regression`

use strata_autograd::{Var, no_grad};
use strata_tensor::{Tensor, seeded_rng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps = if strata_examples::quick() { 50 } else { 300 };
    let mut rng = seeded_rng(0);

    // 200 samples of y = 2·x₀ − 3·x₁ + 0.5 + noise.
    let n = 200;
    let x = Tensor::<f32>::randn(&[n, 2], &mut rng);
    let true_w = Tensor::from_vec(vec![2.0f32, -3.0], &[2, 1])?;
    let noise = Tensor::<f32>::randn(&[n, 1], &mut rng).mul_scalar(0.1);
    let y = x.matmul(&true_w)?.add_scalar(0.5).add(&noise)?;

    // The parameters: leaves that collect gradients.
    let w = Var::parameter(Tensor::<f32>::zeros(&[2, 1]));
    let b = Var::parameter(Tensor::<f32>::zeros(&[1]));
    let (xv, yv) = (Var::new(x.clone()), Var::new(y.clone()));

    let lr = 0.1;
    for step in 0..steps {
        // Forward: the graph is recorded as the ops run.
        let pred = xv.matmul(&w)?.add(&b)?;
        let loss = pred.sub(&yv)?.square().mean_all();
        // Backward: d loss / d w and d loss / d b land in w.grad() and b.grad().
        w.zero_grad();
        b.zero_grad();
        loss.backward()?;
        // The update is not part of the graph.
        no_grad(|| -> Result<(), Box<dyn std::error::Error>> {
            for p in [&w, &b] {
                let g = p.grad().ok_or("no gradient")?;
                p.set_value(p.value().sub(&g.mul_scalar(lr))?)?;
            }
            Ok(())
        })?;
        if step % 50 == 0 || step + 1 == steps {
            println!("step {step:>3}: loss {:.5}", loss.item()?);
        }
    }

    // Least squares on [x, 1] for comparison.
    let design = Tensor::cat(&[&x, &Tensor::ones(&[n, 1])], 1)?;
    let exact = design.cast::<f64>().lstsq(&y.cast::<f64>())?.to_vec();
    let fitted = [w.value().to_vec(), b.value().to_vec()].concat();
    println!(
        "gradient descent: w = [{:.4}, {:.4}], b = {:.4}",
        fitted[0], fitted[1], fitted[2]
    );
    println!(
        "least squares:    w = [{:.4}, {:.4}], b = {:.4}",
        exact[0], exact[1], exact[2]
    );
    let gap = fitted
        .iter()
        .zip(&exact)
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max);
    println!("largest difference {gap:.2e}");
    if gap > 0.05 {
        return Err(format!("gradient descent ended {gap} from the least-squares solution").into());
    }
    Ok(())
}
