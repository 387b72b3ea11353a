//! Gradchecks of every layer of strata-nn over random configurations, in f64: the
//! gradients of the output with respect to the input AND to every parameter.
//!
//! gradcheck differentiates with respect to its own vars, so each closure puts them into
//! the layer before calling the layer's own `forward`: through `Linear::from_parameters`,
//! or by replacing the public `weight`/`bias` fields of a freshly built layer (Conv1d,
//! Conv2d, Embedding, LayerNorm, RMSNorm). BatchNorm keeps its parameters private, so its
//! parameter gradients are gradchecked through `functional::batch_norm`, the layer is
//! gradchecked in its input, and its forward, its gradients (input and parameters) and its
//! running statistics are checked equal to the functional form's.
//!
//! Inputs stay tiny: gradcheck runs two forward passes per input element.

use crate::common;

use common::*;
use proptest::prelude::*;
use strata_autograd::Var;
use strata_nn::{
    AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, BatchNormConfig, Conv1d, Conv2d,
    Dropout, Embedding, Flatten, Forward, GELU, Identity, LayerNorm, LeakyReLU, Linear, LogSoftmax,
    MaxPool2d, Padding, RMSNorm, ReLU, SiLU, Sigmoid, Softmax, Tanh, functional,
};
use strata_tensor::{Conv1dParams, Conv2dParams, IndexTensor, Pool2dParams, Tensor, seeded_rng};

/// Fresh parameters (tracked leaves) holding `tensors`.
fn params(tensors: &[Tensor<f64>]) -> Vec<Var<f64>> {
    tensors.iter().map(|t| Var::parameter(t.clone())).collect()
}

// ---------------------------------------------------------------------------------------
// Linear.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct LinearCase {
    x: Tensor<f64>,
    weight: Tensor<f64>,
    bias: Option<Tensor<f64>>,
}

impl LinearCase {
    fn inputs(&self) -> Vec<Tensor<f64>> {
        let mut t = vec![self.x.clone(), self.weight.clone()];
        t.extend(self.bias.clone());
        t
    }
}

/// `in`, `out` in 1..=3, with or without bias, input `[in]`, `[b, in]` or `[a, b, in]`.
fn linear_case() -> impl Strategy<Value = LinearCase> {
    (
        1..=3usize,
        1..=3usize,
        any::<bool>(),
        prop::collection::vec(1..=3usize, 0..=2),
    )
        .prop_flat_map(|(inf, outf, bias, mut lead)| {
            lead.push(inf);
            (
                filled(lead, smooth),
                filled(vec![outf, inf], smooth),
                optional(bias, vec![outf], smooth),
            )
        })
        .prop_map(|(x, weight, bias)| LinearCase { x, weight, bias })
}

/// `x·Wᵀ + b` by loops, over the flattened leading dims.
fn linear_reference(c: &LinearCase) -> Vec<f64> {
    let (x, w) = (c.x.to_vec(), c.weight.to_vec());
    let (outf, inf) = (c.weight.shape()[0], c.weight.shape()[1]);
    let b = c.bias.as_ref().map(Tensor::to_vec);
    let mut y = Vec::new();
    for row in x.chunks(inf) {
        for o in 0..outf {
            let dot: f64 = (0..inf).map(|i| row[i] * w[o * inf + i]).sum();
            y.push(dot + b.as_ref().map_or(0.0, |b| b[o]));
        }
    }
    y
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Linear in its input, weight and bias, for 1-d, 2-d and 3-d inputs.
    #[test]
    fn linear(c in linear_case()) {
        let layer = |v: &[Var<f64>]| Linear::from_parameters(v[1].clone(), v.get(2).cloned());
        check(|v| layer(v)?.forward(&v[0]), &c.inputs())?;

        let v = params(&c.inputs());
        let y = ok(layer(&v).and_then(|l| l.forward(&v[0])))?;
        let mut shape = c.x.shape().to_vec();
        *shape.last_mut().expect("input has a dim") = c.weight.shape()[0];
        assert_close(&y.value(), &tensor(linear_reference(&c), &shape), "Linear output")?;
        let f = ok(functional::linear(&v[0], &v[1], v.get(2)))?;
        assert_close(&f.value(), &y.value(), "F.linear output")?;
    }
}

// ---------------------------------------------------------------------------------------
// Convolutions.
// ---------------------------------------------------------------------------------------

/// The settings a conv case draws, before they become a layer's params (a Conv1d takes
/// the second entries).
#[derive(Clone, Copy, Debug)]
struct ConvConfig {
    stride: [usize; 2],
    padding: Padding<2>,
    dilation: [usize; 2],
    groups: usize,
    bias: bool,
}

impl ConvConfig {
    fn params2(&self) -> Conv2dParams {
        Conv2dParams {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
        }
    }

    fn params1(&self) -> Conv1dParams {
        Conv1dParams {
            stride: self.stride[1],
            padding: match self.padding {
                Padding::Explicit([_, p]) => Padding::Explicit([p]),
                Padding::Valid => Padding::Valid,
                Padding::Same => Padding::Same,
            },
            dilation: self.dilation[1],
            groups: self.groups,
        }
    }
}

#[derive(Clone, Debug)]
struct ConvCase {
    x: Tensor<f64>,
    weight: Tensor<f64>,
    bias: Option<Tensor<f64>>,
    in_channels: usize,
    out_channels: usize,
    config: ConvConfig,
}

impl ConvCase {
    fn inputs(&self) -> Vec<Tensor<f64>> {
        let mut t = vec![self.x.clone(), self.weight.clone()];
        t.extend(self.bias.clone());
        t
    }

    /// Input `[N, C, spatial…]` or, without a batch, `[C, spatial…]`.
    fn batched(&self) -> bool {
        self.x.ndim() == self.weight.ndim()
    }
}

/// The padding of a layer: kind 0 and 1 explicit `pads`, 2 `Valid`, 3 `Same` (which
/// forces stride 1, as PyTorch refuses `same` with strides).
fn padding_of(kind: usize, pads: [usize; 2]) -> Padding<2> {
    match kind {
        0 | 1 => Padding::Explicit(pads),
        2 => Padding::Valid,
        _ => Padding::Same,
    }
}

/// The smallest input size along a dim that gives at least one output, plus `extra`.
fn conv_size(
    padding: Padding<2>,
    axis: usize,
    kernel: usize,
    dilation: usize,
    extra: usize,
) -> usize {
    let span = dilation * (kernel - 1) + 1;
    let min = match padding {
        Padding::Explicit(p) => span.saturating_sub(2 * p[axis]),
        Padding::Valid => span,
        Padding::Same => 1,
    };
    min.max(1) + extra
}

/// The explicit `(before, after)` padding PyTorch applies along one dim: `same` pads
/// `d·(k-1)` in total, the odd zero at the end.
fn explicit_pads(
    padding: Padding<2>,
    axis: usize,
    kernel: usize,
    dilation: usize,
) -> (usize, usize) {
    match padding {
        Padding::Explicit(p) => (p[axis], p[axis]),
        Padding::Valid => (0, 0),
        Padding::Same => {
            let total = dilation * (kernel - 1);
            (total / 2, total - total / 2)
        }
    }
}

/// Conv2d: 1..=2 groups of 1..=2 input and output channels, kernel 1..=3, stride 1..=2,
/// dilation 1..=2 (each per dim), explicit padding 0..=2, `Valid` or `Same`, with or
/// without bias, batched (1..=2 samples) or not.
fn conv2d_case() -> impl Strategy<Value = ConvCase> {
    (
        (
            1..=2usize,
            1..=2usize,
            1..=2usize,
            prop::option::of(1..=2usize),
        ),
        (
            [1..=3usize, 1..=3usize],
            [1..=2usize, 1..=2usize],
            [1..=2usize, 1..=2usize],
        ),
        (
            0..4usize,
            [0..=2usize, 0..=2usize],
            any::<bool>(),
            [0..=1usize, 0..=1usize],
        ),
    )
        .prop_flat_map(
            |(
                (groups, cin_g, cout_g, batch),
                (kernel, stride, dilation),
                (kind, pads, bias, extra),
            )| {
                let padding = padding_of(kind, pads);
                let config = ConvConfig {
                    stride: if padding == Padding::Same {
                        [1, 1]
                    } else {
                        stride
                    },
                    padding,
                    dilation,
                    groups,
                    bias,
                };
                let (cin, cout) = (groups * cin_g, groups * cout_g);
                let h = conv_size(padding, 0, kernel[0], dilation[0], extra[0]);
                let w = conv_size(padding, 1, kernel[1], dilation[1], extra[1]);
                let x_shape: Vec<usize> = batch.into_iter().chain([cin, h, w]).collect();
                (
                    filled(x_shape, smooth),
                    filled(vec![cout, cin_g, kernel[0], kernel[1]], smooth),
                    optional(bias, vec![cout], smooth),
                    Just((cin, cout, config)),
                )
            },
        )
        .prop_map(
            |(x, weight, bias, (in_channels, out_channels, config))| ConvCase {
                x,
                weight,
                bias,
                in_channels,
                out_channels,
                config,
            },
        )
}

/// A Conv2d of the case's config holding gradcheck's vars as its parameters.
fn conv2d_layer(c: &ConvCase, v: &[Var<f64>]) -> strata_nn::Result<Conv2d<f64>> {
    let kernel = [c.weight.shape()[2], c.weight.shape()[3]];
    let mut layer = Conv2d::with_params(
        c.in_channels,
        c.out_channels,
        kernel,
        c.config.params2(),
        c.config.bias,
        &mut seeded_rng(0),
    )?;
    layer.weight = v[1].clone();
    layer.bias = v.get(2).cloned();
    Ok(layer)
}

/// Conv1d: as Conv2d along one dim; the config's first entries (stride, dilation,
/// explicit padding) are random too, and ignored.
fn conv1d_case() -> impl Strategy<Value = ConvCase> {
    (
        (
            1..=2usize,
            1..=2usize,
            1..=2usize,
            prop::option::of(1..=2usize),
        ),
        (
            1..=3usize,
            [1..=2usize, 1..=2usize],
            [1..=2usize, 1..=2usize],
        ),
        (
            0..4usize,
            [0..=2usize, 0..=2usize],
            any::<bool>(),
            0..=2usize,
        ),
    )
        .prop_flat_map(
            |(
                (groups, cin_g, cout_g, batch),
                (kernel, stride, dilation),
                (kind, pads, bias, extra),
            )| {
                let padding = padding_of(kind, pads);
                let config = ConvConfig {
                    stride: if padding == Padding::Same {
                        [stride[0], 1]
                    } else {
                        stride
                    },
                    padding,
                    dilation,
                    groups,
                    bias,
                };
                let (cin, cout) = (groups * cin_g, groups * cout_g);
                let l = conv_size(padding, 1, kernel, dilation[1], extra);
                let x_shape: Vec<usize> = batch.into_iter().chain([cin, l]).collect();
                (
                    filled(x_shape, smooth),
                    filled(vec![cout, cin_g, kernel], smooth),
                    optional(bias, vec![cout], smooth),
                    Just((cin, cout, config)),
                )
            },
        )
        .prop_map(
            |(x, weight, bias, (in_channels, out_channels, config))| ConvCase {
                x,
                weight,
                bias,
                in_channels,
                out_channels,
                config,
            },
        )
}

/// A Conv1d of the case's config holding gradcheck's vars as its parameters.
fn conv1d_layer(c: &ConvCase, v: &[Var<f64>]) -> strata_nn::Result<Conv1d<f64>> {
    let kernel = c.weight.shape()[2];
    let mut layer = Conv1d::with_params(
        c.in_channels,
        c.out_channels,
        kernel,
        c.config.params1(),
        c.config.bias,
        &mut seeded_rng(0),
    )?;
    layer.weight = v[1].clone();
    layer.bias = v.get(2).cloned();
    Ok(layer)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Conv2d in its input, weight and bias; and its output is `F.conv2d` of the input
    /// padded as PyTorch pads (`same`: `d·(k-1)` zeros in total, the odd one at the end),
    /// the spatial size kept under `same`.
    #[test]
    fn conv2d(c in conv2d_case()) {
        check(|v| conv2d_layer(&c, v)?.forward(&v[0]), &c.inputs())?;

        let v = params(&c.inputs());
        let y = ok(conv2d_layer(&c, &v).and_then(|l| l.forward(&v[0])))?;
        let cfg = c.config;
        let (k, d) = (&c.weight.shape()[2..], cfg.dilation);
        let (top, bottom) = explicit_pads(cfg.padding, 0, k[0], d[0]);
        let (left, right) = explicit_pads(cfg.padding, 1, k[1], d[1]);
        let padded = v[0].pad(&[left as isize, right as isize, top as isize, bottom as isize], 0.0)?;
        let params = Conv2dParams { stride: cfg.stride, padding: Padding::Explicit([0, 0]), dilation: d, groups: cfg.groups };
        let reference = padded.conv2d(&v[1], v.get(2), params)?;
        assert_close(&y.value(), &reference.value(), "Conv2d output")?;
        if cfg.padding == Padding::Same {
            let r = c.x.ndim();
            prop_assert_eq!(&y.shape()[r - 2..], &c.x.shape()[r - 2..]);
        }
        prop_assert_eq!(y.ndim(), c.x.ndim());
        prop_assert_eq!(c.batched(), y.ndim() == 4);
    }

    /// Conv1d in its input, weight and bias; its output is `F.conv1d` of the padded input.
    #[test]
    fn conv1d(c in conv1d_case()) {
        check(|v| conv1d_layer(&c, v)?.forward(&v[0]), &c.inputs())?;

        let v = params(&c.inputs());
        let y = ok(conv1d_layer(&c, &v).and_then(|l| l.forward(&v[0])))?;
        let cfg = c.config;
        let (before, after) = explicit_pads(cfg.padding, 1, c.weight.shape()[2], cfg.dilation[1]);
        let padded = v[0].pad(&[before as isize, after as isize], 0.0)?;
        let params = Conv1dParams {
            stride: cfg.stride[1],
            padding: Padding::Explicit([0]),
            dilation: cfg.dilation[1],
            groups: cfg.groups,
        };
        let reference = padded.conv1d(&v[1], v.get(2), params)?;
        assert_close(&y.value(), &reference.value(), "Conv1d output")?;
        if cfg.padding == Padding::Same {
            prop_assert_eq!(y.shape().last(), c.x.shape().last());
        }
        prop_assert_eq!(c.batched(), y.ndim() == 3);
    }
}

// ---------------------------------------------------------------------------------------
// Pooling and Flatten.
// ---------------------------------------------------------------------------------------

/// Random pooling settings: kernel 1..=3, stride 1..=3, padding up to half the kernel,
/// dilation 1..=`max_dilation`, ceil mode, `count_include_pad`, a divisor override one
/// time in three (the last three are for average pooling only).
fn pool_params(max_dilation: usize) -> impl Strategy<Value = Pool2dParams> {
    (
        [1..=3usize, 1..=3usize],
        [1..=3usize, 1..=3usize],
        [0..=1usize, 0..=1usize],
        [1..=max_dilation, 1..=max_dilation],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![2 => Just(None), 1 => (1..=5usize).prop_map(Some)],
    )
        .prop_map(
            |(kernel, stride, pad, dilation, ceil_mode, count_include_pad, divisor_override)| {
                Pool2dParams {
                    kernel,
                    stride,
                    padding: [pad[0] * (kernel[0] / 2), pad[1] * (kernel[1] / 2)],
                    dilation,
                    ceil_mode,
                    count_include_pad,
                    divisor_override,
                }
            },
        )
}

/// An input `[N, C, H, W]` (or `[C, H, W]`) large enough for `p` to give an output, 1..=2
/// samples and channels.
fn pool_input(
    p: Pool2dParams,
    values: fn(usize) -> BoxedStrategy<Vec<f64>>,
) -> BoxedStrategy<Tensor<f64>> {
    let min = move |i: usize| {
        (p.dilation[i] * (p.kernel[i] - 1) + 1)
            .saturating_sub(2 * p.padding[i])
            .max(1)
    };
    (
        prop::option::of(1..=2usize),
        1..=2usize,
        0..=2usize,
        0..=2usize,
    )
        .prop_flat_map(move |(n, c, eh, ew)| {
            let shape: Vec<usize> = n.into_iter().chain([c, min(0) + eh, min(1) + ew]).collect();
            filled(shape, values)
        })
        .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// MaxPool2d with random kernel, stride, padding, dilation and ceil mode. The values
    /// are pairwise distinct (at least 0.05 apart), so each window has one maximum and the
    /// gradient is defined: on a tie PyTorch picks one element, and the central difference
    /// sees a kink.
    #[test]
    fn max_pool2d((p, x) in pool_params(2).prop_flat_map(|p| (Just(p), pool_input(p, distinct)))) {
        let layer = MaxPool2d::with_params(p);
        let y = ok(layer.forward(&Var::new(x.clone())))?;
        // A window that dilation and padding leave without an input element is -inf (it
        // has no gradient to check); such draws are skipped.
        prop_assume!(y.to_vec().iter().all(|v| v.is_finite()));
        check(|v| layer.forward(&v[0]), &[x])?;
    }

    /// AvgPool2d with random kernel, stride, padding, ceil mode, `count_include_pad` and
    /// divisor override.
    #[test]
    fn avg_pool2d((p, x) in pool_params(1).prop_flat_map(|p| (Just(p), pool_input(p, smooth)))) {
        let layer = AvgPool2d::with_params(p);
        check(|v| layer.forward(&v[0]), &[x])?;
    }

    /// AdaptiveAvgPool2d to outputs smaller, equal to or larger than the input.
    #[test]
    fn adaptive_avg_pool2d(
        x in shaped(shape(3..=4, 4, 48), smooth),
        output_size in [1..=4usize, 1..=4usize],
    ) {
        let layer = AdaptiveAvgPool2d { output_size };
        let y = ok(layer.forward(&Var::new(x.clone())))?;
        prop_assert_eq!(&y.shape()[y.ndim() - 2..], &output_size[..]);
        check(|v| layer.forward(&v[0]), &[x])?;
    }

    /// Flatten between random start and end dims, each given as a positive or negative
    /// index.
    #[test]
    fn flatten(
        (x, start, end) in shaped(shape(1..=4, 3, 36), smooth).prop_flat_map(|x| {
            let r = x.ndim();
            (Just(x), 0..r).prop_flat_map(move |(x, s)| (Just(x), Just(s), s..r))
        }),
        negative in [any::<bool>(), any::<bool>()],
    ) {
        let r = x.ndim() as isize;
        let as_dim = |d: usize, neg: bool| if neg { d as isize - r } else { d as isize };
        let layer = Flatten { start_dim: as_dim(start, negative[0]), end_dim: as_dim(end, negative[1]) };
        let y = ok(layer.forward(&Var::new(x.clone())))?;
        let s = x.shape();
        let expected: Vec<usize> = s[..start]
            .iter()
            .copied()
            .chain([numel(&s[start..=end])])
            .chain(s[end + 1..].iter().copied())
            .collect();
        prop_assert_eq!(y.shape(), expected.as_slice());
        check(|v| layer.forward(&v[0]), &[x])?;
    }
}

// ---------------------------------------------------------------------------------------
// Dropout.
// ---------------------------------------------------------------------------------------

/// A drop probability: 0, 1, or in (0.05, 0.95).
fn drop_probability() -> impl Strategy<Value = f64> {
    prop_oneof![1 => Just(0.0), 1 => Just(1.0), 4 => 0.05..0.95f64]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Dropout in train mode is `x ⊙ mask / (1 - p)`, linear in `x` for a fixed mask.
    /// Every evaluation of gradcheck's closure must draw the same mask, so each builds its
    /// RNG (for `F.dropout`) or its layer (for `Dropout`, whose RNG advances per forward)
    /// afresh from the same seed. In eval mode the layer is the identity.
    #[test]
    fn dropout(
        x in shaped(shape(1..=3, 4, 24), smooth),
        p in drop_probability(),
        seed in any::<u64>(),
    ) {
        check(|v| functional::dropout(&v[0], p, true, &mut seeded_rng(seed)), std::slice::from_ref(&x))?;
        check(|v| Dropout::new(p, seed)?.forward(&v[0]), std::slice::from_ref(&x))?;

        let xv = Var::new(x.clone());
        let y = ok(Dropout::new(p, seed).and_then(|d| d.forward(&xv)))?;
        let f = ok(functional::dropout(&xv, p, true, &mut seeded_rng(seed)))?;
        assert_close(&y.value(), &f.value(), "Dropout vs F.dropout with the same seed")?;
        for (&yi, &xi) in y.to_vec().iter().zip(&x.to_vec()) {
            let kept = if p < 1.0 { xi / (1.0 - p) } else { 0.0 };
            prop_assert!(yi == 0.0 || (yi - kept).abs() <= 1e-12 * (1.0 + kept.abs()),
                "Dropout output {} for input {} (p = {})", yi, xi, p);
        }

        let mut layer = ok(Dropout::new(p, seed))?;
        layer.eval();
        let y = ok(layer.forward(&xv))?;
        assert_close(&y.value(), &x, "Dropout in eval mode")?;
        check(|v| layer.forward(&v[0]), &[x])?;
    }
}

// ---------------------------------------------------------------------------------------
// Embedding.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct EmbeddingCase {
    weight: Tensor<f64>,
    indices: IndexTensor,
    padding_idx: Option<usize>,
}

/// 1..=5 embeddings of size 1..=3, indices of rank 0..=2 (repeats allowed), and a
/// padding index, when there is one, placed at the first index so the padding row is
/// always looked up.
fn embedding_case() -> impl Strategy<Value = EmbeddingCase> {
    (1..=5usize, 1..=3usize, shape(0..=2, 3, 6))
        .prop_flat_map(|(num, dim, idx_shape)| {
            let n = numel(&idx_shape);
            (
                filled(vec![num, dim], smooth),
                prop::collection::vec(0..num as i64, n),
                Just(idx_shape),
                prop::option::of(0..num),
            )
        })
        .prop_map(|(weight, mut idx, idx_shape, padding_idx)| {
            if let Some(p) = padding_idx {
                idx[0] = p as i64;
            }
            EmbeddingCase {
                weight,
                indices: index(idx, &idx_shape),
                padding_idx,
            }
        })
}

/// An Embedding with `padding_idx` holding `weight`.
fn embedding_layer(
    c: &EmbeddingCase,
    weight: &Var<f64>,
    padding_idx: Option<usize>,
) -> strata_nn::Result<Embedding<f64>> {
    let s = c.weight.shape();
    let mut layer = Embedding::new(s[0], s[1], padding_idx, &mut seeded_rng(0))?;
    layer.weight = weight.clone();
    Ok(layer)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Embedding in its weight. With a padding index the padding row receives no gradient
    /// by definition (PyTorch's own gradcheck would flag that row, since the output does
    /// depend on it), so the layer without padding index is gradchecked, and the layer
    /// with one must give the same output and the same gradient except for a zero padding
    /// row.
    #[test]
    fn embedding(c in embedding_case()) {
        check(|v| embedding_layer(&c, &v[0], None)?.forward(&c.indices), std::slice::from_ref(&c.weight))?;

        let plain = Var::parameter(c.weight.clone());
        let y_plain = ok(embedding_layer(&c, &plain, None).and_then(|l| l.forward(&c.indices)))?;
        let mut expected_shape = c.indices.shape().to_vec();
        expected_shape.push(c.weight.shape()[1]);
        prop_assert_eq!(y_plain.shape(), expected_shape.as_slice());
        let g_plain = grads(&y_plain, &[&plain])?.remove(0);

        if let Some(p) = c.padding_idx {
            let padded = Var::parameter(c.weight.clone());
            let layer = ok(embedding_layer(&c, &padded, Some(p)))?;
            let y = ok(layer.forward(&c.indices))?;
            assert_close(&y.value(), &y_plain.value(), "Embedding output with padding_idx")?;
            let g = grads(&y, &[&padded])?.remove(0);
            let dim = c.weight.shape()[1];
            let mut expected = g_plain.to_vec();
            expected[p * dim..(p + 1) * dim].fill(0.0);
            assert_close(&g, &tensor(expected, c.weight.shape()), "Embedding gradient with padding_idx")?;

            let fresh = ok(Embedding::<f64>::new(c.weight.shape()[0], dim, Some(p), &mut seeded_rng(1)))?;
            prop_assert!(fresh.weight.to_vec()[p * dim..(p + 1) * dim].iter().all(|&w| w == 0.0));
        }
    }
}

// ---------------------------------------------------------------------------------------
// LayerNorm and RMSNorm.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct NormCase {
    x: Tensor<f64>,
    normalized_shape: Vec<usize>,
    weight: Option<Tensor<f64>>,
    bias: Option<Tensor<f64>>,
    eps: Option<f64>,
}

impl NormCase {
    fn inputs(&self) -> Vec<Tensor<f64>> {
        let mut t = vec![self.x.clone()];
        t.extend(self.weight.clone());
        t.extend(self.bias.clone());
        t
    }
}

/// An input `[lead…, normalized…]` with 0..=2 leading dims of 1..=2 and a normalized
/// shape of rank 1..=2 with dims 1..=3, values from `values`; an optional weight and
/// (with the weight) bias; eps PyTorch's default (`None`) or in [1e-6, 0.1].
fn norm_case(
    values: fn(usize) -> BoxedStrategy<Vec<f64>>,
    with_bias: bool,
) -> impl Strategy<Value = NormCase> {
    (
        prop::collection::vec(1..=2usize, 0..=2),
        prop::collection::vec(1..=3usize, 1..=2),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(1e-6..0.1f64),
    )
        .prop_flat_map(move |(lead, ns, affine, bias, eps)| {
            let x_shape: Vec<usize> = lead.iter().chain(&ns).copied().collect();
            (
                filled(x_shape, values),
                Just(ns.clone()),
                optional(affine, ns.clone(), smooth),
                optional(affine && bias && with_bias, ns, smooth),
                Just(eps),
            )
        })
        .prop_map(|(x, normalized_shape, weight, bias, eps)| NormCase {
            x,
            normalized_shape,
            weight,
            bias,
            eps,
        })
}

/// A LayerNorm holding gradcheck's vars as its weight and bias.
fn layer_norm_layer(c: &NormCase, v: &[Var<f64>]) -> LayerNorm<f64> {
    let affine = c.weight.is_some();
    let mut layer = LayerNorm::with_options(
        &c.normalized_shape,
        c.eps.unwrap_or(1e-5),
        affine,
        c.bias.is_some(),
    );
    layer.weight = affine.then(|| v[1].clone());
    layer.bias = c.bias.is_some().then(|| v[2].clone());
    layer
}

/// An RMSNorm holding gradcheck's var as its weight.
fn rms_norm_layer(c: &NormCase, v: &[Var<f64>]) -> RMSNorm<f64> {
    let affine = c.weight.is_some();
    let mut layer = RMSNorm::with_options(&c.normalized_shape, c.eps, affine);
    layer.weight = affine.then(|| v[1].clone());
    layer
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// LayerNorm in its input, weight and bias. Its gradient has a pole where a group's
    /// variance vanishes: the input values are pairwise distinct (at least 0.05 apart),
    /// so no group of two or more elements comes near it (a one-element group is exactly
    /// constant, with zero gradient).
    #[test]
    fn layer_norm(c in norm_case(distinct, true)) {
        check(|v| layer_norm_layer(&c, v).forward(&v[0]), &c.inputs())?;
    }

    /// RMSNorm in its input and weight, with eps PyTorch's default (the machine epsilon)
    /// or explicit. With the default eps a one-element group is `x / √(x² + ε)`, a sign
    /// function smoothed only within ~1e-8 of 0: the inputs keep |x| >= 0.1.
    #[test]
    fn rms_norm(c in norm_case(nonzero, false)) {
        check(|v| rms_norm_layer(&c, v).forward(&v[0]), &c.inputs())?;
    }
}

// ---------------------------------------------------------------------------------------
// BatchNorm.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct BatchNormCase {
    x: Tensor<f64>,
    config: BatchNormConfig,
    training: bool,
    weight: Tensor<f64>,
    bias: Tensor<f64>,
    running_mean: Tensor<f64>,
    running_var: Tensor<f64>,
}

/// BatchNorm1d on `[N, C]` or `[N, C, L]`, or BatchNorm2d on `[N, C, H, W]` (`rank`
/// 2, 3, 4), N 1..=3, C 1..=3, spatial dims 1..=3, with at least two values per channel
/// when it normalises by batch statistics; random affine, `track_running_stats`, momentum (or a cumulative average) and eps;
/// train or eval mode; random weight, bias and running statistics (variance in
/// [0.2, 2]). Inputs are pairwise distinct, so no channel's batch variance is near zero
/// (a pole of the gradient).
fn batch_norm_case() -> impl Strategy<Value = BatchNormCase> {
    (
        2..=4usize,
        1..=3usize,
        1..=3usize,
        prop::collection::vec(1..=3usize, 2),
        (
            any::<bool>(),
            any::<bool>(),
            prop::option::of(0.05..0.5f64),
            prop::option::of(1e-5..0.1f64),
        ),
        any::<bool>(),
    )
        .prop_flat_map(
            |(rank, n, c, spatial, (affine, track, momentum, eps), training)| {
                let mut shape: Vec<usize> = [n, c]
                    .into_iter()
                    .chain(spatial[..rank - 2].iter().copied())
                    .collect();
                fit(&mut shape, 36);
                // Batch statistics need two values per channel; running ones do not.
                if (training || !track) && numel(&shape) / shape[1] < 2 {
                    shape[0] = 2;
                }
                let config = BatchNormConfig {
                    eps: eps.unwrap_or(1e-5),
                    momentum,
                    affine,
                    track_running_stats: track,
                };
                (
                    filled(shape, distinct),
                    Just((config, training)),
                    filled(vec![c], smooth),
                    filled(vec![c], smooth),
                    filled(vec![c], smooth),
                    filled(vec![c], |n| within(n, 0.2, 2.0)),
                )
            },
        )
        .prop_map(
            |(x, (config, training), weight, bias, running_mean, running_var)| BatchNormCase {
                x,
                config,
                training,
                weight,
                bias,
                running_mean,
                running_var,
            },
        )
}

impl BatchNormCase {
    /// The layer in the case's mode, holding the case's parameters and statistics.
    fn layer(&self) -> std::result::Result<Box<dyn Forward<f64>>, TestCaseError> {
        let c = self.x.shape()[1];
        let mut layer: Box<dyn Forward<f64>> = if self.x.ndim() == 4 {
            Box::new(BatchNorm2d::with_config(c, self.config))
        } else {
            Box::new(BatchNorm1d::with_config(c, self.config))
        };
        layer.set_training(self.training);
        for (name, var) in layer
            .named_parameters()
            .into_iter()
            .chain(layer.named_buffers())
        {
            let value = match name.as_str() {
                "weight" => &self.weight,
                "bias" => &self.bias,
                "running_mean" => &self.running_mean,
                "running_var" => &self.running_var,
                _ => continue,
            };
            var.set_value(value.clone())?;
        }
        Ok(layer)
    }

    /// Whether the layer normalises by the batch statistics.
    fn batch_stats(&self) -> bool {
        self.training || !self.config.track_running_stats
    }

    /// `functional::batch_norm` as the layer calls it in its first forward, with `v` =
    /// `[x, weight, bias]` (the last two when affine) and running statistics `stats`.
    fn functional(
        &self,
        v: &[Var<f64>],
        stats: Option<&(Var<f64>, Var<f64>)>,
    ) -> strata_nn::Result<Var<f64>> {
        functional::batch_norm(
            &v[0],
            stats.map(|s| &s.0),
            stats.map(|s| &s.1),
            v.get(1),
            v.get(2),
            self.batch_stats(),
            // The first batch of a cumulative average has weight 1/1.
            self.config.momentum.unwrap_or(1.0),
            self.config.eps,
        )
    }

    fn stats(&self) -> Option<(Var<f64>, Var<f64>)> {
        self.config.track_running_stats.then(|| {
            (
                Var::new(self.running_mean.clone()),
                Var::new(self.running_var.clone()),
            )
        })
    }

    fn inputs(&self) -> Vec<Tensor<f64>> {
        let mut t = vec![self.x.clone()];
        if self.config.affine {
            t.extend([self.weight.clone(), self.bias.clone()]);
        }
        t
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// BatchNorm1d/2d in train and eval mode. `functional::batch_norm` is gradchecked in
    /// the input, weight and bias (in train mode it updates the running statistics on
    /// every evaluation, which is fine: the output depends only on the batch statistics);
    /// the layer is gradchecked in its input; and the layer's first forward must equal the
    /// functional form's in output, in the gradients of input, weight and bias, and in the
    /// running statistics it leaves.
    #[test]
    fn batch_norm(c in batch_norm_case()) {
        // The layer against the functional form, on its first forward.
        let layer = c.layer()?;
        let x = Var::parameter(c.x.clone());
        let y = ok(layer.forward(&x))?;
        let mut tracked = vec![&x];
        let layer_params = layer.parameters();
        tracked.extend(&layer_params);
        let g_layer = grads(&y, &tracked)?;

        let v = params(&c.inputs());
        let stats = c.stats();
        let f = ok(c.functional(&v, stats.as_ref()))?;
        assert_close(&f.value(), &y.value(), "BatchNorm output")?;
        let g_functional = grads(&f, &v.iter().collect::<Vec<_>>())?;
        prop_assert_eq!(g_layer.len(), g_functional.len());
        for (k, (a, b)) in g_layer.iter().zip(&g_functional).enumerate() {
            assert_close(a, b, &format!("BatchNorm gradient of input {k}"))?;
        }
        if let Some((rm, rv)) = &stats {
            let buffers = layer.named_buffers();
            assert_close(&buffers[0].1.value(), &rm.value(), "running_mean")?;
            assert_close(&buffers[1].1.value(), &rv.value(), "running_var")?;
        }

        // gradcheck: the functional form in every input, the layer in its input.
        check(|v| c.functional(v, stats.as_ref()), &c.inputs())?;
        check(|v| layer.forward(&v[0]), std::slice::from_ref(&c.x))?;
    }
}

// ---------------------------------------------------------------------------------------
// Activations.
// ---------------------------------------------------------------------------------------

/// An activation layer and its functional form.
#[derive(Clone, Copy, Debug)]
enum Activation {
    ReLU,
    LeakyReLU(f64),
    Gelu,
    GeluTanh,
    SiLU,
    Sigmoid,
    Tanh,
    Softmax(isize),
    LogSoftmax(isize),
    Identity,
}

impl Activation {
    fn layer(self) -> Box<dyn Forward<f64>> {
        match self {
            Activation::ReLU => Box::new(ReLU),
            Activation::LeakyReLU(s) => Box::new(LeakyReLU { negative_slope: s }),
            Activation::Gelu => Box::new(GELU::default()),
            Activation::GeluTanh => Box::new(GELU { tanh: true }),
            Activation::SiLU => Box::new(SiLU),
            Activation::Sigmoid => Box::new(Sigmoid),
            Activation::Tanh => Box::new(Tanh),
            Activation::Softmax(dim) => Box::new(Softmax { dim }),
            Activation::LogSoftmax(dim) => Box::new(LogSoftmax { dim }),
            Activation::Identity => Box::new(Identity),
        }
    }

    fn functional(self, x: &Var<f64>) -> strata_nn::Result<Var<f64>> {
        Ok(match self {
            Activation::ReLU => functional::relu(x),
            Activation::LeakyReLU(s) => functional::leaky_relu(x, s),
            Activation::Gelu => functional::gelu(x),
            Activation::GeluTanh => functional::gelu_tanh(x),
            Activation::SiLU => functional::silu(x),
            Activation::Sigmoid => functional::sigmoid(x),
            Activation::Tanh => functional::tanh(x),
            Activation::Softmax(dim) => functional::softmax(x, dim)?,
            Activation::LogSoftmax(dim) => functional::log_softmax(x, dim)?,
            Activation::Identity => x.clone(),
        })
    }

    /// ReLU and LeakyReLU have a kink at 0: their inputs keep |x| >= 0.1.
    fn values(self) -> fn(usize) -> BoxedStrategy<Vec<f64>> {
        match self {
            Activation::ReLU | Activation::LeakyReLU(_) => nonzero,
            _ => smooth,
        }
    }
}

/// Every activation, with a random slope (LeakyReLU) or dim (softmaxes, positive or
/// negative) for a rank-`rank` input (0 or -1 for a 0-d one, as PyTorch allows).
fn activation(rank: usize) -> BoxedStrategy<Activation> {
    let r = rank.max(1) as isize;
    prop_oneof![
        Just(Activation::ReLU),
        (0.0..1.5f64).prop_map(Activation::LeakyReLU),
        Just(Activation::Gelu),
        Just(Activation::GeluTanh),
        Just(Activation::SiLU),
        Just(Activation::Sigmoid),
        Just(Activation::Tanh),
        (-r..r).prop_map(Activation::Softmax),
        (-r..r).prop_map(Activation::LogSoftmax),
        Just(Activation::Identity),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CHEAP_CASES))]

    /// Every activation layer, gradchecked; its output equals the functional form's.
    #[test]
    fn activations(
        (act, x) in shape(0..=3, 4, 24)
            .prop_flat_map(|s| (activation(s.len()), Just(s)))
            .prop_flat_map(|(act, s)| (Just(act), filled(s, act.values()))),
    ) {
        let layer = act.layer();
        check(|v| layer.forward(&v[0]), std::slice::from_ref(&x))?;
        let xv = Var::new(x);
        let y = ok(layer.forward(&xv))?;
        let f = ok(act.functional(&xv))?;
        assert_close(&y.value(), &f.value(), &format!("{act:?} vs its functional form"))?;
    }
}
