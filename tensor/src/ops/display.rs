//! `Display` and `Debug` in PyTorch's format (`torch._tensor_str`, default print options:
//! precision 4, summarised above 1000 elements with 3 edge items, lines of 80 characters).

use std::fmt;

use crate::{DType, Element, Tensor};

const PRECISION: usize = 4;
const THRESHOLD: usize = 1000;
const EDGE_ITEMS: usize = 3;
const LINE_WIDTH: usize = 80;

/// How every element of one tensor is printed (PyTorch's `_Formatter`).
struct Formatter {
    /// Integer element type: no trailing dot, never scientific.
    integer: bool,
    int_mode: bool,
    sci_mode: bool,
    width: usize,
}

/// Python's `{:.Ne}`: Rust writes `1.0000e0`, Python `1.0000e+00`.
fn sci(value: f64) -> String {
    let s = format!("{value:.PRECISION$e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

impl Formatter {
    fn new(values: &[f64], integer: bool) -> Self {
        let mut f = Formatter {
            integer,
            int_mode: true,
            sci_mode: false,
            width: 1,
        };
        let finite: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && *v != 0.0)
            .collect();
        if integer {
            f.width = values
                .iter()
                .map(|v| format!("{v:.0}").len())
                .max()
                .unwrap_or(1);
            return f;
        }
        if finite.is_empty() {
            return f;
        }
        let min = finite.iter().fold(f64::INFINITY, |m, v| m.min(v.abs()));
        let max = finite.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        f.int_mode = finite.iter().all(|v| v.ceil() == *v);
        let wide_range = max / min > 1000.0 || max > 1.0e8;
        if f.int_mode {
            f.sci_mode = wide_range;
        } else {
            f.sci_mode = wide_range || min < 1.0e-4;
        }
        for &v in &finite {
            let len = if f.sci_mode {
                sci(v).len()
            } else if f.int_mode {
                format!("{v:.0}").len() + 1
            } else {
                format!("{v:.PRECISION$}").len()
            };
            f.width = f.width.max(len);
        }
        f
    }

    fn format(&self, v: f64) -> String {
        let s = if self.integer {
            format!("{v:.0}")
        } else if v.is_nan() {
            "nan".to_string()
        } else if v.is_infinite() {
            if v > 0.0 { "inf" } else { "-inf" }.to_string()
        } else if self.sci_mode {
            sci(v)
        } else if self.int_mode {
            format!("{v:.0}.")
        } else {
            format!("{v:.PRECISION$}")
        };
        format!("{s:>width$}", width = self.width)
    }
}

/// The values the formatter is fitted to: all of them, or only the edges when summarising.
fn summarized_values<T: Element>(t: &Tensor<T>, summarize: bool, out: &mut Vec<f64>) {
    match t.ndim() {
        0 => out.push(t.item().map(|v| v.to_f64()).unwrap_or(f64::NAN)),
        _ => {
            let n = t.shape()[0];
            let rows: Vec<usize> = if summarize && n > 2 * EDGE_ITEMS {
                (0..EDGE_ITEMS).chain(n - EDGE_ITEMS..n).collect()
            } else {
                (0..n).collect()
            };
            for i in rows {
                if let Ok(row) = t.select(0, i as isize) {
                    summarized_values(&row, summarize, out);
                }
            }
        }
    }
}

fn tensor_str<T: Element>(t: &Tensor<T>, indent: usize, summarize: bool, f: &Formatter) -> String {
    let ndim = t.ndim();
    if ndim == 0 {
        return f.format(t.item().map(|v| v.to_f64()).unwrap_or(f64::NAN));
    }
    let n = t.shape()[0];
    let rows: Vec<Option<usize>> = if summarize && n > 2 * EDGE_ITEMS {
        (0..EDGE_ITEMS)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((n - EDGE_ITEMS..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    };
    let row = |i: usize| t.select(0, i as isize).expect("index in range");
    if ndim == 1 {
        let element_len = f.width + 2;
        let per_line = ((LINE_WIDTH.saturating_sub(indent)) / element_len).max(1);
        let items: Vec<String> = rows
            .iter()
            .map(|r| match r {
                Some(i) => f.format(row(*i).item().map(|v| v.to_f64()).unwrap_or(f64::NAN)),
                None => " ...".to_string(),
            })
            .collect();
        let lines: Vec<String> = items.chunks(per_line).map(|c| c.join(", ")).collect();
        return format!(
            "[{}]",
            lines.join(&format!(",\n{}", " ".repeat(indent + 1)))
        );
    }
    let slices: Vec<String> = rows
        .iter()
        .map(|r| match r {
            Some(i) => tensor_str(&row(*i), indent + 1, summarize, f),
            None => "...".to_string(),
        })
        .collect();
    let sep = format!(",{}{}", "\n".repeat(ndim - 1), " ".repeat(indent + 1));
    format!("[{}]", slices.join(&sep))
}

/// Writes `t` in PyTorch's format; `integer` prints the values as an integer tensor (used by
/// [`IndexTensor`](crate::IndexTensor), whose values are exact in f64).
pub(crate) fn write_tensor<T: Element>(
    t: &Tensor<T>,
    out: &mut fmt::Formatter<'_>,
    mut suffixes: Vec<String>,
    integer: bool,
) -> fmt::Result {
    const PREFIX: &str = "tensor(";
    let indent = PREFIX.len();
    let body = if t.numel() == 0 {
        if t.ndim() != 1 {
            let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
            suffixes.insert(0, format!("size=({})", dims.join(", ")));
        }
        "[]".to_string()
    } else {
        let summarize = t.numel() > THRESHOLD;
        let mut values = Vec::new();
        summarized_values(t, summarize, &mut values);
        tensor_str(t, indent, summarize, &Formatter::new(&values, integer))
    };
    let mut s = format!("{PREFIX}{body}");
    let mut last_line_len = s.len() - s.rfind('\n').map_or(0, |p| p + 1) + 1;
    for suffix in suffixes {
        if last_line_len + suffix.len() + 2 > LINE_WIDTH {
            s.push_str(&format!(",\n{}{suffix}", " ".repeat(indent)));
            last_line_len = indent + suffix.len();
        } else {
            s.push_str(&format!(", {suffix}"));
            last_line_len += suffix.len() + 2;
        }
    }
    s.push(')');
    out.write_str(&s)
}

/// Prints like PyTorch: `tensor([[1.0000, 2.5000], [...]])`, summarised when large; f64
/// tensors add `dtype=f64` as PyTorch adds `dtype=torch.float64`.
impl<T: Element> fmt::Display for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffixes = match T::DTYPE {
            DType::F32 => vec![],
            DType::F64 => vec!["dtype=f64".to_string()],
        };
        write_tensor(self, f, suffixes, false)
    }
}

/// Like `Display`, always with the shape and dtype.
impl<T: Element> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_tensor(
            self,
            f,
            vec![
                format!("shape={:?}", self.shape()),
                format!("dtype={}", T::DTYPE),
            ],
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    // Each expected string is what `print(torch.tensor(...))` shows in PyTorch 2.15.
    #[test]
    fn prints_like_pytorch() {
        let t = Tensor::<f32>::from_vec(vec![1.0, 2.5, -3.0, 4.125], &[2, 2]).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([[ 1.0000,  2.5000],\n        [-3.0000,  4.1250]])"
        );
        let t = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
        assert_eq!(t.to_string(), "tensor([1., 2., 3.])");
        let t = Tensor::<f32>::from_vec(vec![1e-5, 1.0], &[2]).unwrap();
        assert_eq!(t.to_string(), "tensor([1.0000e-05, 1.0000e+00])");
        assert_eq!(Tensor::<f32>::scalar(0.5).to_string(), "tensor(0.5000)");
        let t = Tensor::<f64>::from_vec(vec![f64::NAN, f64::INFINITY, 1.5], &[3]).unwrap();
        assert_eq!(t.to_string(), "tensor([   nan,    inf, 1.5000], dtype=f64)");
        assert_eq!(
            Tensor::<f32>::zeros(&[0, 3]).to_string(),
            "tensor([], size=(0, 3))"
        );
    }

    #[test]
    fn summarizes_large_tensors() {
        let t = Tensor::<f32>::arange(0.0, 2000.0, 1.0).unwrap();
        assert_eq!(
            t.to_string(),
            "tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n        1.9990e+03])"
        );
        let t = t.reshape([40, 50]).unwrap();
        let s = t.to_string();
        assert!(s.starts_with(
            "tensor([[0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 4.7000e+01, 4.8000e+01,\n         4.9000e+01],\n        [5.0000e+01, 5."
        ));
        assert!(s.contains("\n        ...,\n"));
    }

    #[test]
    fn wraps_long_rows() {
        let t = Tensor::<f32>::arange(0.0, 30.0, 1.0)
            .unwrap()
            .mul_scalar(0.5);
        let s = t.to_string();
        assert_eq!(
            s,
            "tensor([ 0.0000,  0.5000,  1.0000,  1.5000,  2.0000,  2.5000,  3.0000,  3.5000,\n         4.0000,  4.5000,  5.0000,  5.5000,  6.0000,  6.5000,  7.0000,  7.5000,\n         8.0000,  8.5000,  9.0000,  9.5000, 10.0000, 10.5000, 11.0000, 11.5000,\n        12.0000, 12.5000, 13.0000, 13.5000, 14.0000, 14.5000])"
        );
    }
}
