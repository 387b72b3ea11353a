//! Gradchecks of matmul in every rank combination, softmax and log_softmax, conv1d and
//! conv2d (stride, padding, dilation, groups, optional bias, batched or not), and the
//! pooling ops. Inputs come in random layouts; convolution inputs stay tiny, since
//! gradcheck runs two forward passes per input element.

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_autograd::{Result, Var};
use strata_tensor::{Conv1dParams, Conv2dParams, Padding, Pool2dParams, Tensor};

// ---------------------------------------------------------------------------------------
// matmul.
// ---------------------------------------------------------------------------------------

/// Operand shapes for every rank combination `torch.matmul` accepts: 1-d·1-d, 1-d·2-d,
/// 2-d·1-d, 2-d·2-d, batched with broadcast batch dims (e.g. `[2, 1, m, k]·[3, k, n]`),
/// 3-d·2-d, 2-d·3-d, 1-d·3-d and 3-d·1-d; sizes 1..=3.
fn matmul_shapes() -> BoxedStrategy<(Vec<usize>, Vec<usize>)> {
    let batches = broadcast_shapes(2, 6);
    (
        0..9usize,
        1..=3usize,
        1..=3usize,
        1..=3usize,
        1..=3usize,
        batches,
    )
        .prop_map(|(kind, m, k, n, b, batch)| {
            let with = |lead: &[usize], tail: &[usize]| -> Vec<usize> {
                lead.iter().chain(tail).copied().collect()
            };
            match kind {
                0 => (vec![k], vec![k]),
                1 => (vec![k], vec![k, n]),
                2 => (vec![m, k], vec![k]),
                3 => (vec![m, k], vec![k, n]),
                4 => (with(&batch[0], &[m, k]), with(&batch[1], &[k, n])),
                5 => (vec![b, m, k], vec![k, n]),
                6 => (vec![m, k], vec![b, k, n]),
                7 => (vec![k], vec![b, k, n]),
                _ => (vec![b, m, k], vec![k]),
            }
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------
// Convolution.
// ---------------------------------------------------------------------------------------

/// `Var::conv1d` or `Var::conv2d`.
type Conv<P> = fn(&Var<f64>, &Var<f64>, Option<&Var<f64>>, P) -> Result<Var<f64>>;

/// A convolution's inputs: `x`, `weight`, an optional `bias`.
#[derive(Clone, Debug)]
struct ConvCase<P> {
    x: Arg,
    weight: Arg,
    bias: Option<Arg>,
    params: P,
}

impl<P: Copy> ConvCase<P> {
    fn tensors(&self) -> Vec<Tensor<f64>> {
        let mut t = vec![self.x.tensor(), self.weight.tensor()];
        t.extend(self.bias.as_ref().map(Arg::tensor));
        t
    }

    /// Gradchecks `conv(x, weight, bias, params)`: in every input, in `x` alone (weight
    /// and bias constants) or in weight and bias (`x` a constant), as `t` says.
    fn check(&self, t: Tracked, conv: Conv<P>) -> TestResult {
        let tensors = self.tensors();
        let (x_tracked, w_tracked) = match t {
            Tracked::Both => (true, true),
            Tracked::First => (true, false),
            Tracked::Second => (false, true),
        };
        // Input k of the convolution: gradcheck's var, or a constant.
        let input = |k: usize, arg: &Arg, v: &[Var<f64>]| -> Result<Var<f64>> {
            let tracked = if k == 0 { x_tracked } else { w_tracked };
            if !tracked {
                return arg.apply(&Var::new(tensors[k].clone()));
            }
            let position = if x_tracked { k } else { k - 1 };
            arg.apply(&v[position])
        };
        let inputs: Vec<_> = tensors
            .iter()
            .enumerate()
            .filter(|&(k, _)| if k == 0 { x_tracked } else { w_tracked })
            .map(|(_, t)| t.clone())
            .collect();
        check(
            |v| {
                let x = input(0, &self.x, v)?;
                let w = input(1, &self.weight, v)?;
                let b = match &self.bias {
                    Some(b) => Some(input(2, b, v)?),
                    None => None,
                };
                conv(&x, &w, b.as_ref(), self.params)
            },
            &inputs,
        )
    }
}

/// The channel counts of a grouped convolution: `groups` in 1..=2 with 1..=2 input and
/// output channels per group, and whether the input has a batch dim (1..=2 samples).
fn channels() -> impl Strategy<Value = (usize, usize, usize, Option<usize>)> {
    (
        1..=2usize,
        1..=2usize,
        1..=2usize,
        prop::option::of(1..=2usize),
    )
}

/// The number of outputs of a convolution along one dim, if any.
fn conv_out(size: usize, kernel: usize, stride: usize, padding: usize, dilation: usize) -> usize {
    let span = dilation * (kernel - 1) + 1;
    (size + 2 * padding)
        .checked_sub(span)
        .map_or(0, |r| r / stride + 1)
}

/// A bias of `channels` elements when `present`.
fn optional_bias(present: bool, channels: usize) -> BoxedStrategy<Option<Arg>> {
    if present {
        arg(vec![channels], smooth, true).prop_map(Some).boxed()
    } else {
        Just(None).boxed()
    }
}

fn conv1d_case() -> BoxedStrategy<ConvCase<Conv1dParams>> {
    (
        channels(),
        1..=3usize,
        1..=2usize,
        0..=2usize,
        1..=2usize,
        1..=6usize,
        any::<bool>(),
    )
        .prop_filter("a non-empty output", |&(_, k, s, p, d, l, _)| {
            conv_out(l, k, s, p, d) > 0
        })
        .prop_flat_map(
            |((groups, c, o, n), k, stride, padding, dilation, l, bias)| {
                let x: Vec<usize> = n.into_iter().chain([groups * c, l]).collect();
                let params = Conv1dParams {
                    stride,
                    padding: padding.into(),
                    dilation,
                    groups,
                };
                let bias = optional_bias(bias, groups * o);
                (
                    arg(x, smooth, true),
                    arg(vec![groups * o, c, k], smooth, true),
                    bias,
                    Just(params),
                )
            },
        )
        .prop_map(|(x, weight, bias, params)| ConvCase {
            x,
            weight,
            bias,
            params,
        })
        .boxed()
}

fn conv2d_case() -> BoxedStrategy<ConvCase<Conv2dParams>> {
    (
        channels(),
        [1..=3usize, 1..=3usize],
        [1..=2usize, 1..=2usize],
        [0..=1usize, 0..=1usize],
        [1..=2usize, 1..=2usize],
        [1..=5usize, 1..=5usize],
        any::<bool>(),
    )
        .prop_filter(
            "a small, non-empty convolution",
            |&((g, c, o, n), k, s, p, d, hw, _)| {
                let x = n.unwrap_or(1) * g * c * hw[0] * hw[1];
                let w = g * o * c * k[0] * k[1];
                x <= 40 && w <= 36 && (0..2).all(|i| conv_out(hw[i], k[i], s[i], p[i], d[i]) > 0)
            },
        )
        .prop_flat_map(
            |((groups, c, o, n), k, stride, padding, dilation, hw, bias)| {
                let x: Vec<usize> = n.into_iter().chain([groups * c, hw[0], hw[1]]).collect();
                let params = Conv2dParams {
                    stride,
                    padding: padding.into(),
                    dilation,
                    groups,
                };
                let bias = optional_bias(bias, groups * o);
                (
                    arg(x, smooth, true),
                    arg(vec![groups * o, c, k[0], k[1]], smooth, true),
                    bias,
                    Just(params),
                )
            },
        )
        .prop_map(|(x, weight, bias, params)| ConvCase {
            x,
            weight,
            bias,
            params,
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------
// Pooling.
// ---------------------------------------------------------------------------------------

/// A pooling input shape, `[N, C, H, W]` or `[C, H, W]` with H, W in 1..=6, at most 48
/// elements.
fn pool_shape() -> BoxedStrategy<Vec<usize>> {
    (
        prop::option::of(1..=2usize),
        1..=2usize,
        1..=6usize,
        1..=6usize,
    )
        .prop_map(|(n, c, h, w)| {
            let mut s: Vec<usize> = n.into_iter().chain([c, h, w]).collect();
            fit(&mut s, 48);
            s
        })
        .boxed()
}

/// Pooling parameters: kernel 1..=3, stride 1..=3, padding up to half the kernel,
/// dilation 1..=2 (when `dilate`), ceil mode, count_include_pad and divisor_override.
fn pool_params(dilate: bool) -> BoxedStrategy<Pool2dParams> {
    let max_dilation: usize = if dilate { 2 } else { 1 };
    (
        [1..=3usize, 1..=3usize],
        [1..=3usize, 1..=3usize],
        [0..=1usize, 0..=1usize],
        [1..=max_dilation, 1..=max_dilation],
        any::<bool>(),
        any::<bool>(),
        prop::option::of(1..=6usize),
    )
        .prop_map(
            |(kernel, stride, pad, dilation, ceil_mode, count_include_pad, divisor)| {
                Pool2dParams {
                    kernel,
                    stride,
                    // At most half the kernel, as PyTorch requires.
                    padding: [pad[0].min(kernel[0] / 2), pad[1].min(kernel[1] / 2)],
                    dilation,
                    ceil_mode,
                    count_include_pad,
                    divisor_override: divisor,
                }
            },
        )
        .boxed()
}

/// A pooling input with `values` (in any layout, broadcasts only when `expand`) and
/// parameters whose forward succeeds (the output is not empty).
fn pool_case(values: Values, expand: bool, dilate: bool) -> BoxedStrategy<(Arg, Pool2dParams)> {
    (pool_shape(), pool_params(dilate))
        .prop_filter("an output of at least one window", |(s, p)| {
            Tensor::<f64>::zeros(s).avg_pool2d(*p).is_ok()
                && Tensor::<f64>::zeros(s).max_pool2d(*p).is_ok()
        })
        .prop_flat_map(move |(s, p)| (arg(s, values, expand), Just(p)))
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn matmul(
        (a, b) in matmul_shapes().prop_flat_map(|(sa, sb)| {
            (arg(sa, smooth, true), arg(sb, smooth, true))
        }),
        t in tracked(),
    ) {
        check_pair(&a, &b, t, Var::matmul)?;
    }

    // Transposed operands: aᵀ·bᵀ from a [k, m] and b [n, k] (t()), or over a batch
    // (transpose(-1, -2)), with a the same var on both sides half the time (aᵀ·a).
    #[test]
    fn matmul_transposed_operands(
        (batch, m, k, n) in (prop::option::of(1..=3usize), 1..=3usize, 1..=4usize, 1..=3usize),
        same in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let lead: Vec<usize> = batch.into_iter().collect();
        let shape = |r: usize, c: usize| -> Vec<usize> {
            lead.iter().copied().chain([r, c]).collect()
        };
        let mut rng = strata_tensor::seeded_rng(seed);
        let a = Tensor::<f64>::randn(&shape(k, m), &mut rng);
        let b = Tensor::<f64>::randn(&shape(n, k), &mut rng);
        let tr = |x: &Var<f64>| if lead.is_empty() { x.t() } else { x.transpose(-1, -2) };
        if same {
            check(|v| tr(&v[0])?.matmul(&v[0]), &[a])?;
        } else {
            check(|v| tr(&v[0])?.matmul(&tr(&v[1])?), &[a, b])?;
        }
    }

    // The fused linear + ReLU, batched or not, with and without a bias; inputs whose
    // pre-activation comes near the kink at 0 are skipped (central differences straddle it).
    #[test]
    fn linear_relu(
        (rows, inf, outf) in (1..=3usize, 1..=3usize, 1..=3usize),
        lead in prop::option::of(1..=2usize),
        with_bias in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut rng = strata_tensor::seeded_rng(seed);
        let x_shape: Vec<usize> = lead.into_iter().chain([rows, inf]).collect();
        let x = Tensor::<f64>::randn(&x_shape, &mut rng);
        let w = Tensor::<f64>::randn(&[outf, inf], &mut rng);
        let b = Tensor::<f64>::randn(&[outf], &mut rng);
        let z = x.linear(&w, with_bias.then_some(&b)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assume!(z.to_vec().iter().all(|v| v.abs() > 0.05));
        let mut inputs = vec![x, w];
        if with_bias {
            inputs.push(b);
        }
        check(|v| v[0].linear_relu(&v[1], v.get(2)), &inputs)?;
        // The same values and gradients as the two ops.
        let vars: Vec<Var<f64>> = inputs.iter().map(|t| Var::parameter(t.clone())).collect();
        let fused = vars[0].linear_relu(&vars[1], vars.get(2)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let plain = vars[0].linear(&vars[1], vars.get(2)).map_err(|e| TestCaseError::fail(e.to_string()))?.relu();
        prop_assert_eq!(fused.value().to_vec(), plain.value().to_vec());
        let options = strata_autograd::GradOptions::default();
        let gf = strata_autograd::grad(&[fused.sum_all()], &vars, None, options)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let gp = strata_autograd::grad(&[plain.sum_all()], &vars, None, options)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for (f, p) in gf.iter().zip(&gp) {
            let (f, p) = (f.as_ref().expect("used"), p.as_ref().expect("used"));
            for (a, b) in f.value().to_vec().iter().zip(p.value().to_vec()) {
                prop_assert!((a - b).abs() < 1e-12, "{} vs {}", a, b);
            }
        }
    }

    #[test]
    fn softmax(
        (a, d) in shaped(0..=4, 24, smooth, true).prop_flat_map(|a| {
            let r = a.shape.len();
            (Just(a), dim(r))
        }),
    ) {
        check(|v| a.apply(&v[0])?.softmax(d), &[a.tensor()])?;
    }

    #[test]
    fn log_softmax(
        (a, d) in shaped(0..=4, 24, smooth, true).prop_flat_map(|a| {
            let r = a.shape.len();
            (Just(a), dim(r))
        }),
    ) {
        check(|v| a.apply(&v[0])?.log_softmax(d), &[a.tensor()])?;
    }

    #[test]
    fn conv1d(case in conv1d_case(), t in tracked()) {
        case.check(t, Var::conv1d)?;
    }

    #[test]
    fn conv2d(case in conv2d_case(), t in tracked()) {
        case.check(t, Var::conv2d)?;
    }

    // The fused conv2d + ReLU, with `Same` padding half the time (odd totals included,
    // which pad the input's end first): first and second order, and the values and
    // gradients of conv2d then relu. Cases whose pre-activation comes near the kink at 0
    // are skipped (central differences would straddle it).
    #[test]
    fn conv2d_relu(case in conv2d_case(), t in tracked(), same in any::<bool>()) {
        let case = if same {
            let params = Conv2dParams { stride: [1, 1], padding: Padding::Same, ..case.params };
            ConvCase { params, ..case }
        } else {
            case
        };
        let fail = |e: strata_autograd::AutogradError| TestCaseError::fail(e.to_string());
        let vars: Vec<Var<f64>> = case.tensors().into_iter().map(Var::parameter).collect();
        let x = case.x.apply(&vars[0]).map_err(fail)?;
        let w = case.weight.apply(&vars[1]).map_err(fail)?;
        let b = match &case.bias {
            Some(b) => Some(b.apply(&vars[2]).map_err(fail)?),
            None => None,
        };
        let z = x.conv2d(&w, b.as_ref(), case.params).map_err(fail)?;
        prop_assume!(z.value().to_vec().iter().all(|v| v.abs() > 0.05));
        case.check(t, Var::conv2d_relu)?;
        let fused = x.conv2d_relu(&w, b.as_ref(), case.params).map_err(fail)?;
        let plain = z.relu();
        prop_assert_eq!(fused.value().to_vec(), plain.value().to_vec());
        let options = strata_autograd::GradOptions {
            retain_graph: true,
            ..strata_autograd::GradOptions::default()
        };
        let gf = strata_autograd::grad(&[fused.sum_all()], &vars, None, options).map_err(fail)?;
        let gp = strata_autograd::grad(&[plain.sum_all()], &vars, None, options).map_err(fail)?;
        for (f, p) in gf.iter().zip(&gp) {
            let (f, p) = (f.as_ref().expect("used"), p.as_ref().expect("used"));
            for (a, b) in f.value().to_vec().iter().zip(p.value().to_vec()) {
                prop_assert!((a - b).abs() < 1e-12, "{} vs {}", a, b);
            }
        }
    }

    // Distinct values (and no broadcast views) so that every window's maximum is unique;
    // padding never wins, since every window holds at least one input element.
    #[test]
    fn max_pool2d((a, params) in pool_case(distinct, false, true)) {
        check(|v| a.apply(&v[0])?.max_pool2d(params), &[a.tensor()])?;
    }

    #[test]
    fn avg_pool2d((a, params) in pool_case(smooth, true, false)) {
        check(|v| a.apply(&v[0])?.avg_pool2d(params), &[a.tensor()])?;
    }

    // Output sizes up to one more than the input's: windows then overlap.
    #[test]
    fn adaptive_avg_pool2d(
        (a, out) in pool_shape().prop_flat_map(|s| {
            let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
            (arg(s, smooth, true), [1..=h + 1, 1..=w + 1])
        }),
    ) {
        check(|v| a.apply(&v[0])?.adaptive_avg_pool2d(out), &[a.tensor()])?;
    }
}
