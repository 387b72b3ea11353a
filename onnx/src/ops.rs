//! The tensor ops that models call directly in their `forward` (`x.relu()`,
//! `x.flatten(1, -1)`, `y.squeeze(-1)`, …), each appending its ONNX node and computing its
//! example with the same strata op, so a model's [`Export`](crate::Export) reads like its
//! forward.

use strata_autograd::Var;

use crate::error::{OnnxError, Result};
use crate::graph::{Attr, Graph, Value};
use crate::layers::run;

/// `dim` (maybe negative) as an index into `rank` dimensions.
fn resolve(op: &str, x: &Value, dim: isize) -> Result<usize> {
    let rank = x.ndim() as isize;
    let d = if dim < 0 { dim + rank } else { dim };
    if d < 0 || d >= rank {
        return Err(OnnxError::Input {
            shape: x.shape().to_vec(),
            why: format!("{op}: no dimension {dim}"),
        });
    }
    Ok(d as usize)
}

fn unary(
    g: &mut Graph,
    x: &Value,
    op: &str,
    f: impl FnOnce(&Var<f32>) -> Var<f32>,
) -> Result<Value> {
    let v = x.float(op)?;
    let y = run(|| Ok(f(&v)))?;
    let out = g.op(op, &[x.name()], vec![]);
    Ok(x.with(out, y))
}

/// `x.relu()`.
///
/// # Errors
/// An example of indices.
pub fn relu(g: &mut Graph, x: &Value) -> Result<Value> {
    unary(g, x, "Relu", Var::relu)
}

/// `x.tanh()`.
///
/// # Errors
/// An example of indices.
pub fn tanh(g: &mut Graph, x: &Value) -> Result<Value> {
    unary(g, x, "Tanh", Var::tanh)
}

/// `x.sigmoid()`.
///
/// # Errors
/// An example of indices.
pub fn sigmoid(g: &mut Graph, x: &Value) -> Result<Value> {
    unary(g, x, "Sigmoid", Var::sigmoid)
}

/// `x.flatten(start, end)` (a `Reshape` that keeps the batch dynamic).
///
/// # Errors
/// A dimension out of range; flattening dimensions after the batch into it.
pub fn flatten(g: &mut Graph, x: &Value, start: isize, end: isize) -> Result<Value> {
    let v = x.float("Flatten")?;
    let y = run(|| Ok(v.flatten(start, end)?))?;
    crate::layers::flatten(g, x, start, end, y)
}

/// `x.squeeze(dim)` (of a dimension of size 1; not the batch).
///
/// # Errors
/// A dimension out of range or not of size 1, or the batch dimension.
pub fn squeeze(g: &mut Graph, x: &Value, dim: isize) -> Result<Value> {
    let d = resolve("Squeeze", x, dim)?;
    if x.is_dynamic(d) || x.shape()[d] != 1 {
        return Err(OnnxError::Input {
            shape: x.shape().to_vec(),
            why: format!("Squeeze: dimension {dim} is the batch, symbolic or not of size 1"),
        });
    }
    let v = x.float("Squeeze")?;
    let y = run(|| Ok(v.squeeze(dim)?))?;
    let axes = g.ints("axes", &[d as i64]);
    let out = g.op("Squeeze", &[x.name(), &axes], vec![]);
    Ok(x.without_axis(out, y, d))
}

/// `x.select(dim, index)`: one position along `dim` (not the batch), the dimension removed.
///
/// # Errors
/// A dimension or index out of range, or the batch dimension.
pub fn select(g: &mut Graph, x: &Value, dim: isize, index: isize) -> Result<Value> {
    let d = resolve("Select", x, dim)?;
    let len = x.shape()[d] as isize;
    let i = if index < 0 { index + len } else { index };
    if x.is_dynamic(d) || i < 0 || i >= len {
        return Err(OnnxError::Input {
            shape: x.shape().to_vec(),
            why: format!(
                "Select: index {index} of dimension {dim} is out of range, the batch or symbolic"
            ),
        });
    }
    let v = x.float("Select")?;
    let y = run(|| Ok(v.select(dim, index)?))?;
    let idx = g.ints("index", &[i as i64]);
    let picked = g.op(
        "Gather",
        &[x.name(), &idx],
        vec![("axis", Attr::Int(d as i64))],
    );
    let axes = g.ints("axes", &[d as i64]);
    let out = g.op("Squeeze", &[&picked, &axes], vec![]);
    Ok(x.without_axis(out, y, d))
}

/// `x.mean(&[dim], false)` (not over the batch).
///
/// # Errors
/// A dimension out of range, or the batch dimension.
pub fn mean(g: &mut Graph, x: &Value, dim: isize) -> Result<Value> {
    let d = resolve("ReduceMean", x, dim)?;
    if x.batch_axis() == Some(d) {
        return Err(OnnxError::Input {
            shape: x.shape().to_vec(),
            why: "ReduceMean over the batch cannot keep the batch dynamic".into(),
        });
    }
    let v = x.float("ReduceMean")?;
    let y = run(|| Ok(v.mean(&[dim], false)?))?;
    let attrs = vec![
        ("axes", Attr::Ints(vec![d as i64])),
        ("keepdims", Attr::Int(0)),
    ];
    let out = g.op("ReduceMean", &[x.name()], attrs);
    Ok(x.without_axis(out, y, d))
}
