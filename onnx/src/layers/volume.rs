//! Transposed convolutions (`ConvTranspose`) and the volumetric layers: `Conv3d`,
//! `MaxPool3d`, `AvgPool3d` as 3-d `Conv`, `MaxPool` and `AveragePool` nodes.

use strata_nn::{AvgPool3d, Conv3d, ConvTranspose1d, ConvTranspose2d, Forward, MaxPool3d};

use super::basic::{batched, conv, ints};
use super::{Export, run};
use crate::error::Result;
use crate::graph::{Attr, Graph, Value};

/// A `ConvTranspose` node with PyTorch's weight `[C_in, C_out/groups, *kernel]` (ONNX's
/// layout too), the padding removed on both sides and `output_padding` added at the end of
/// each dimension: ONNX's output size `stride·(in − 1) + output_padding + dilation·(k − 1)
/// + 1 − 2·padding` is PyTorch's.
#[allow(clippy::too_many_arguments)]
fn conv_transpose(
    g: &mut Graph,
    x: &Value,
    weight: &strata_autograd::Var<f32>,
    bias: Option<&strata_autograd::Var<f32>>,
    stride: &[usize],
    padding: &[usize],
    output_padding: &[usize],
    dilation: &[usize],
    groups: usize,
) -> String {
    let kernel = weight.shape()[2..].to_vec();
    let w = g.param("weight", weight);
    let b = bias.map(|b| g.param("bias", b));
    let mut inputs = vec![x.name(), w.as_str()];
    inputs.extend(b.as_deref());
    let pads: Vec<usize> = padding.iter().chain(padding).copied().collect();
    g.op(
        "ConvTranspose",
        &inputs,
        vec![
            ("kernel_shape", ints(&kernel)),
            ("strides", ints(stride)),
            ("pads", ints(&pads)),
            ("output_padding", ints(output_padding)),
            ("dilations", ints(dilation)),
            ("group", Attr::Int(groups as i64)),
        ],
    )
}

impl Export for ConvTranspose2d<f32> {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("ConvTranspose2d")?)?))?;
        batched("ConvTranspose2d", x, 4)?;
        let p = self.params();
        let out = conv_transpose(
            g,
            x,
            &self.weight,
            self.bias.as_ref(),
            &p.stride,
            &p.padding,
            &p.output_padding,
            &p.dilation,
            p.groups,
        );
        Ok(x.with(out, y))
    }
}

impl Export for ConvTranspose1d<f32> {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("ConvTranspose1d")?)?))?;
        batched("ConvTranspose1d", x, 3)?;
        let p = self.params();
        let out = conv_transpose(
            g,
            x,
            &self.weight,
            self.bias.as_ref(),
            &p.stride,
            &p.padding,
            &p.output_padding,
            &p.dilation,
            p.groups,
        );
        Ok(x.with(out, y))
    }
}

impl Export for Conv3d<f32> {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(self.forward(&x.float("Conv3d")?)?))?;
        batched("Conv3d", x, 5)?;
        let p = self.params();
        let kernel = self.weight.shape()[2..].to_vec();
        let out = conv(
            g,
            x.name(),
            &self.weight,
            self.bias.as_ref(),
            &kernel,
            &p.stride,
            &p.padding,
            &[0; 3],
            &p.dilation,
            p.groups,
        );
        Ok(x.with(out, y))
    }
}

impl Export for MaxPool3d {
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("MaxPool3d")?)?))?;
        batched("MaxPool3d", x, 5)?;
        let p = self.params;
        let pads: Vec<usize> = p.padding.iter().chain(&p.padding).copied().collect();
        let out = g.op(
            "MaxPool",
            &[x.name()],
            vec![
                ("kernel_shape", ints(&p.kernel)),
                ("strides", ints(&p.stride)),
                ("pads", ints(&pads)),
                ("dilations", ints(&p.dilation)),
                ("ceil_mode", Attr::Int(0)),
            ],
        );
        Ok(x.with(out, y))
    }
}

impl Export for AvgPool3d {
    /// `AveragePool` with `count_include_pad` as set: the divisor is the whole window, or
    /// the taps inside the input, as PyTorch's (strata's 3-d pools have no `ceil_mode`,
    /// so no window reaches past the padding).
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("AvgPool3d")?)?))?;
        batched("AvgPool3d", x, 5)?;
        // strata's average pools take no dilation (the forward refuses one in the planes
        // and uses none along depth), as ONNX's AveragePool before opset 19.
        let p = self.params;
        let pads: Vec<usize> = p.padding.iter().chain(&p.padding).copied().collect();
        let out = g.op(
            "AveragePool",
            &[x.name()],
            vec![
                ("kernel_shape", ints(&p.kernel)),
                ("strides", ints(&p.stride)),
                ("pads", ints(&pads)),
                ("ceil_mode", Attr::Int(0)),
                (
                    "count_include_pad",
                    Attr::Int(i64::from(p.count_include_pad)),
                ),
            ],
        );
        Ok(x.with(out, y))
    }
}
