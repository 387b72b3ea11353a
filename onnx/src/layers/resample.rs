//! Layers that resample or move values: `Upsample` (`Resize`, or gathers where `Resize`
//! does not carry over), `PixelShuffle`, `PixelUnshuffle` and `Unflatten` (`Reshape`
//! and `Transpose`, the batch kept dynamic).

use strata_nn::{
    Forward, InterpolateMode, PixelShuffle, PixelUnshuffle, Resize, Unflatten, Upsample,
};
use strata_tensor::Tensor;

use super::{Export, run};
use crate::error::{OnnxError, Result, unsupported};
use crate::graph::{Attr, Graph, Value};

/// Checks that the dimensions from `first` on are all static (their sizes are written
/// into the graph).
fn static_from(layer: &str, x: &Value, first: usize) -> Result<()> {
    if x.batch_axis() != Some(0) {
        return Err(OnnxError::Input {
            shape: x.shape().to_vec(),
            why: format!("{layer} exports inputs with the batch first"),
        });
    }
    if let Some(a) = (first..x.ndim()).find(|&a| x.is_dynamic(a)) {
        return Err(unsupported(
            layer,
            format!("dimension {a} is symbolic; the export writes its size into the graph"),
        ));
    }
    Ok(())
}

/// Linear interpolation along `axis` as strata computes it: the two neighbours of each
/// output position gathered (`lo`, `hi`) and mixed with weights `1 − w` and `w`.
fn linear_along(
    g: &mut Graph,
    y: &str,
    axis: usize,
    rank: usize,
    n: usize,
    out: usize,
    src: impl Fn(usize) -> f64,
) -> Result<String> {
    let (mut lo, mut hi, mut w) = (
        Vec::with_capacity(out),
        Vec::with_capacity(out),
        Vec::with_capacity(out),
    );
    for i in 0..out {
        let s = src(i);
        let i0 = (s.floor() as usize).min(n - 1);
        lo.push(i0 as i64);
        hi.push((i0 + 1).min(n - 1) as i64);
        w.push((s - i0 as f64) as f32);
    }
    let one_minus: Vec<f32> = w.iter().map(|&w| 1.0 - w).collect();
    let mut wshape = vec![out];
    wshape.extend(std::iter::repeat_n(1, rank - axis - 1));
    let w = g.constant("resize_w", &Tensor::from_vec(w, wshape.as_slice())?);
    let one_minus = g.constant(
        "resize_1mw",
        &Tensor::from_vec(one_minus, wshape.as_slice())?,
    );
    let lo = g.ints("resize_lo", &lo);
    let hi = g.ints("resize_hi", &hi);
    let a = g.op("Gather", &[y, &lo], vec![("axis", Attr::Int(axis as i64))]);
    let b = g.op("Gather", &[y, &hi], vec![("axis", Attr::Int(axis as i64))]);
    let a = g.op("Mul", &[&a, &one_minus], vec![]);
    let b = g.op("Mul", &[&b, &w], vec![]);
    Ok(g.op("Add", &[&a, &b], vec![]))
}

impl Export for Upsample {
    /// With a scale factor: `Resize`, nearest with `asymmetric` coordinates and `floor`
    /// rounding (PyTorch's `'nearest'`: source `⌊i / scale⌋`, size `⌊in · scale⌋`), or
    /// linear with `align_corners` coordinates. Otherwise gathers along each spatial
    /// dimension with the source positions strata computes (constants: the spatial sizes
    /// are static), mixed by constant weights for linear modes: opset 17's `Resize` takes
    /// a target size for every dimension, batch included, which tract cannot infer with a
    /// symbolic batch, and runtimes differ at the border for `half_pixel` coordinates
    /// (PyTorch clamps a negative source to 0; tract extrapolates there).
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("Upsample")?)?))?;
        static_from("Upsample", x, 1)?;
        let rank = x.ndim();
        let inputs = x.shape()[2..].to_vec();
        let outputs = y.shape()[2..].to_vec();
        let align_corners = match self.mode {
            InterpolateMode::Linear { align_corners } => Some(align_corners),
            InterpolateMode::Nearest => None,
        };
        let factor = |f: &[f64], k: usize| if f.len() == 1 { f[0] } else { f[k] };
        if let Resize::Scale(f) = &self.resize
            && align_corners != Some(false)
            && !(align_corners == Some(true) && outputs.contains(&1))
        {
            let attrs = match align_corners {
                None => vec![
                    ("mode", Attr::Str("nearest".into())),
                    (
                        "coordinate_transformation_mode",
                        Attr::Str("asymmetric".into()),
                    ),
                    ("nearest_mode", Attr::Str("floor".into())),
                ],
                Some(_) => vec![
                    ("mode", Attr::Str("linear".into())),
                    (
                        "coordinate_transformation_mode",
                        Attr::Str("align_corners".into()),
                    ),
                ],
            };
            let mut scales = vec![1.0f32, 1.0];
            scales.extend((0..inputs.len()).map(|k| factor(f, k) as f32));
            let scales = g.constant("scales", &Tensor::from_vec(scales, &[rank])?);
            let out = g.op("Resize", &[x.name(), "", &scales], attrs);
            return Ok(x.with(out, y));
        }
        let mut h = x.name().to_string();
        for (k, (&n, &out)) in inputs.iter().zip(&outputs).enumerate() {
            // Positions scale as PyTorch's: in/out for a size, 1/factor for a scale.
            let scale = match &self.resize {
                Resize::Size(_) => n as f64 / out as f64,
                Resize::Scale(f) => 1.0 / factor(f, k),
            };
            let axis = Attr::Int((2 + k) as i64);
            h = match align_corners {
                None => {
                    let src: Vec<i64> = (0..out)
                        .map(|i| ((i as f64 * scale).floor() as usize).min(n - 1) as i64)
                        .collect();
                    let src = g.ints("resize_src", &src);
                    g.op("Gather", &[&h, &src], vec![("axis", axis)])
                }
                Some(true) => linear_along(g, &h, 2 + k, rank, n, out, |i| {
                    if out > 1 {
                        i as f64 * (n - 1) as f64 / (out - 1) as f64
                    } else {
                        0.0
                    }
                })?,
                Some(false) => linear_along(g, &h, 2 + k, rank, n, out, |i| {
                    ((i as f64 + 0.5) * scale - 0.5).max(0.0)
                })?,
            };
        }
        Ok(x.with(h, y))
    }
}

/// The number of dimensions before `[C, H, W]` (the batch among them, first), checking
/// that `C`, `H` and `W` are static.
fn lead_dims(layer: &str, x: &Value) -> Result<usize> {
    if x.ndim() < 4 {
        return Err(OnnxError::Input {
            shape: x.shape().to_vec(),
            why: format!("{layer} exports batched inputs [N, *, C, H, W]"),
        });
    }
    let k = x.ndim() - 3;
    static_from(layer, x, k)?;
    Ok(k)
}

/// `[*, C, H, W]` as `expanded` (leading dimensions kept by `0`), permuted by `perm` on
/// the last five, reshaped to `out` (leading dimensions kept).
fn shuffle(
    g: &mut Graph,
    x: &Value,
    expanded: [usize; 5],
    perm: [usize; 5],
    out: [usize; 3],
) -> String {
    let k = x.ndim() - 3;
    let mut shape = vec![0i64; k];
    shape.extend(expanded.iter().map(|&d| d as i64));
    let h = g.reshape(x.name(), &shape);
    let mut p: Vec<i64> = (0..k as i64).collect();
    p.extend(perm.iter().map(|&a| (a + k) as i64));
    let h = g.transpose(&h, &p);
    let mut shape = vec![0i64; k];
    shape.extend(out.iter().map(|&d| d as i64));
    g.reshape(&h, &shape)
}

impl Export for PixelShuffle {
    /// `[*, C·r², H, W]` → `[*, C, r, r, H, W]` → `[*, C, H, r, W, r]` → `[*, C, H·r, W·r]`.
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("PixelShuffle")?)?))?;
        let k = lead_dims("PixelShuffle", x)?;
        let r = self.upscale_factor();
        let [c, h, w] = [x.shape()[k], x.shape()[k + 1], x.shape()[k + 2]];
        let out = shuffle(
            g,
            x,
            [c / (r * r), r, r, h, w],
            [0, 3, 1, 4, 2],
            [c / (r * r), h * r, w * r],
        );
        Ok(x.with(out, y))
    }
}

impl Export for PixelUnshuffle {
    /// `[*, C, H·r, W·r]` → `[*, C, H, r, W, r]` → `[*, C, r, r, H, W]` → `[*, C·r², H, W]`.
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("PixelUnshuffle")?)?))?;
        let k = lead_dims("PixelUnshuffle", x)?;
        let r = self.downscale_factor();
        let [c, h, w] = [x.shape()[k], x.shape()[k + 1], x.shape()[k + 2]];
        let out = shuffle(
            g,
            x,
            [c, h / r, r, w / r, r],
            [0, 2, 4, 1, 3],
            [c * r * r, h / r, w / r],
        );
        Ok(x.with(out, y))
    }
}

impl Export for Unflatten {
    /// A `Reshape` keeping the dimensions before `dim` (`0`) and stating the sizes and the
    /// dimensions after it; `dim` and what follows must be static.
    fn export(&self, g: &mut Graph, x: &Value) -> Result<Value> {
        let y = run(|| Ok(Forward::<f32>::forward(self, &x.float("Unflatten")?)?))?;
        let rank = x.ndim();
        let d = if self.dim() < 0 {
            self.dim() + rank as isize
        } else {
            self.dim()
        } as usize;
        if let Some(a) = (d..rank).find(|&a| x.is_dynamic(a)) {
            return Err(unsupported(
                "Unflatten",
                format!("dimension {a} (at or after the one split, {d}) is the batch or symbolic"),
            ));
        }
        let sizes = self.sizes();
        let mut shape = vec![0i64; d];
        shape.extend(sizes.iter().map(|&s| s as i64));
        shape.extend(x.shape()[d + 1..].iter().map(|&s| s as i64));
        let out = g.reshape(x.name(), &shape);
        // The dimensions before `dim` keep their places.
        let mut v = Value::new(out, y.value(), x.batch_axis());
        for (a, name) in x.dynamic_axes() {
            v = v.with_dynamic(*a, name.clone());
        }
        Ok(v)
    }
}
