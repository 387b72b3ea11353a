//! The one comparison helper of the multi-rank checks.

use strata_tensor::{Element, Tensor};

/// The largest difference between `got` and `want` relative to `want`'s largest magnitude,
/// or an error naming the first element beyond `tolerance` (index, both values).
pub fn relative_difference<T: Element>(
    what: &str,
    got: &Tensor<T>,
    want: &Tensor<T>,
    tolerance: f64,
) -> Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "{what}: shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    let (g, w) = (got.to_vec(), want.to_vec());
    let scale = w
        .iter()
        .map(|v| Element::to_f64(*v).abs())
        .fold(0.0, f64::max)
        .max(1e-300);
    let mut worst = 0.0f64;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let d = (Element::to_f64(*a) - Element::to_f64(*b)).abs() / scale;
        if d.is_nan() || d > tolerance {
            return Err(format!(
                "{what}: element {i} is {a:e}, expected {b:e} (relative difference {d:.3e} > {tolerance:e})"
            ));
        }
        worst = worst.max(d);
    }
    Ok(worst)
}

/// `Err(message)` unless `ok`.
pub fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(message()) }
}
