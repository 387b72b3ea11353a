//! `Bilinear`, a layer of two inputs: `y_o = Σ_ij x1_i·A_oij·x2_j + b_o` as a `MatMul`
//! with the weight laid out `[in1, out·in2]`, a product with `x2` and a sum.

use strata_nn::Bilinear;

use super::run;
use crate::error::{OnnxError, Result};
use crate::graph::{Attr, Graph, Value};

/// Exports `layer` on the pair `x1` `[*, in1]`, `x2` `[*, in2]` (the same leading
/// dimensions, the batch among them): `x1 · A'` with `A'` the weight `[out, in1, in2]`
/// re-laid `[in1, out·in2]` (the initializer `weight_i_oj`), reshaped `[*, out, in2]`,
/// times `x2` `[*, 1, in2]`, summed over `in2`, plus the bias. Use it inside
/// [`export_with_inputs`](crate::export_with_inputs) with two inputs.
///
/// # Errors
/// [`OnnxError::Input`] for inputs that are not floats; the layer's own errors (shapes
/// that do not fit).
pub fn export_bilinear(
    layer: &Bilinear<f32>,
    g: &mut Graph,
    x1: &Value,
    x2: &Value,
) -> Result<Value> {
    let (a, b) = (x1.float("Bilinear")?, x2.float("Bilinear")?);
    let y = run(|| Ok(layer.forward(&a, &b)?))?;
    let ws = layer.weight.shape().to_vec();
    let (out, in1, in2) = (ws[0], ws[1], ws[2]);
    if x1.ndim() < 2 {
        return Err(OnnxError::Input {
            shape: x1.shape().to_vec(),
            why: "Bilinear exports batched inputs [N, *, in1]".into(),
        });
    }
    let w = layer
        .weight
        .value()
        .permute(&[1, 0, 2])?
        .contiguous()
        .reshape([in1, out * in2])?;
    let w = g.constant("weight_i_oj", &w);
    let h = g.op("MatMul", &[x1.name(), &w], vec![]);
    let lead = x1.ndim() - 1;
    let mut shape = vec![0i64; lead];
    shape.extend([out as i64, in2 as i64]);
    let h = g.reshape(&h, &shape);
    let x2u = g.unsqueeze(x2.name(), &[-2]);
    let h = g.op("Mul", &[&h, &x2u], vec![]);
    let axes = g.ints("axes", &[-1]);
    let mut h = g.op("ReduceSum", &[&h, &axes], vec![("keepdims", Attr::Int(0))]);
    if let Some(bias) = &layer.bias {
        let bias = g.param("bias", bias);
        h = g.op("Add", &[&h, &bias], vec![]);
    }
    Ok(x1.with(h, y))
}
