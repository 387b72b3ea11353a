//! Attention and transformers: gradient checks over random configurations (f64, gradients
//! with respect to the inputs and every parameter), comparisons with PyTorch on the
//! fixtures of `tests/fixtures/generate_attention.py`, state-dict interop and errors.

use crate::common;

use std::path::PathBuf;

use common::{CASES, TestResult, check, ok};
use proptest::prelude::*;
use strata_autograd::Var;
use strata_nn::functional::scaled_dot_product_attention;
use strata_nn::*;
use strata_tensor::{Tensor, seeded_rng};

/// Proptest cases for the layer-sized properties (each gradchecks ~100 elements).
const LAYER_CASES: u32 = 64;

pub(crate) fn rng() -> strata_tensor::rand::rngs::StdRng {
    seeded_rng(0)
}

/// Values uniform in [-1.5, 1.5) from a seed.
fn values(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::uniform(shape, -1.5, 1.5, &mut seeded_rng(seed)).unwrap()
}

/// A 0/1 mask from a seed, with `keep` the probability of a 1.
fn bits(shape: &[usize], keep: f64, seed: u64) -> Tensor<f64> {
    Tensor::bernoulli(shape, keep, &mut seeded_rng(seed)).unwrap()
}

// ---------------------------------------------------------------------------------------
// Gradient checks: scaled_dot_product_attention.
// ---------------------------------------------------------------------------------------

/// What mask a case uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum MaskKind {
    None,
    Bool,
    Additive,
}

fn mask_kind() -> impl Strategy<Value = MaskKind> {
    prop_oneof![
        Just(MaskKind::None),
        Just(MaskKind::Bool),
        Just(MaskKind::Additive)
    ]
}

#[derive(Clone, Debug)]
struct SdpaCase {
    q: Vec<usize>,
    k: Vec<usize>,
    v: Vec<usize>,
    mask: Option<(Vec<usize>, MaskKind)>,
    is_causal: bool,
    scale: Option<f64>,
    dropout_p: f64,
    seed: u64,
}

/// Batch dims 0..=2 (each of q, k, v may have size 1 where the others do not, or miss
/// leading dims: broadcasting), L and S in 1..=3, E and Ev in 1..=3; a bool or additive
/// mask broadcast from a random sub-shape, or causal; a default or explicit scale;
/// sometimes dropout with a fixed mask.
fn sdpa_case() -> impl Strategy<Value = SdpaCase> {
    (
        prop::collection::vec(1..=2usize, 0..=2),
        (1..=3usize, 1..=3usize, 1..=3usize, 1..=3usize),
        (any::<[bool; 3]>(), any::<[bool; 4]>()),
        (mask_kind(), any::<bool>(), any::<bool>(), any::<bool>()),
        any::<u64>(),
    )
        .prop_map(
            |(batch, (l, s, e, ev), (lead, ones), (kind, causal, scale, drop), seed)| {
                // Each operand drops the leading batch dim or keeps it, as size 1 or full.
                let operand = |i: usize, rows: usize, cols: usize| {
                    let mut shape: Vec<usize> = batch
                        .iter()
                        .enumerate()
                        .map(|(d, &n)| if ones[(i + d) % 4] && d == 0 { 1 } else { n })
                        .collect();
                    if lead[i] && !shape.is_empty() {
                        shape.remove(0);
                    }
                    shape.extend([rows, cols]);
                    shape
                };
                let (q, k, v) = (operand(0, l, e), operand(1, s, e), operand(2, s, ev));
                // The batch the operands broadcast to (sizes 1 and n, right-aligned).
                let rank = q.len().max(k.len()).max(v.len()) - 2;
                let full: Vec<usize> = (0..rank)
                    .map(|d| {
                        [&q, &k, &v]
                            .iter()
                            .filter_map(|o| {
                                let lead = rank + 2 - o.len();
                                (d >= lead).then(|| o[d - lead])
                            })
                            .max()
                            .unwrap_or(1)
                    })
                    .collect();
                let mask = (kind != MaskKind::None && !causal).then(|| {
                    let mut shape: Vec<usize> = full
                        .iter()
                        .enumerate()
                        .map(|(d, &n)| if ones[(d + 1) % 4] { 1 } else { n })
                        .collect();
                    shape.extend([if ones[3] { 1 } else { l }, s]);
                    (shape, kind)
                });
                SdpaCase {
                    q,
                    k,
                    v,
                    mask,
                    is_causal: causal,
                    scale: scale.then_some(0.7),
                    dropout_p: if drop { 0.4 } else { 0.0 },
                    seed,
                }
            },
        )
}

impl SdpaCase {
    fn inputs(&self) -> Vec<Tensor<f64>> {
        vec![
            values(&self.q, self.seed),
            values(&self.k, self.seed ^ 1),
            values(&self.v, self.seed ^ 2),
        ]
    }

    fn mask(&self) -> Option<AttnMask<f64>> {
        self.mask.as_ref().map(|(shape, kind)| match kind {
            MaskKind::Bool => AttnMask::Bool(bits(shape, 0.7, self.seed ^ 3)),
            _ => AttnMask::Additive(values(shape, self.seed ^ 3)),
        })
    }

    /// The attention; the dropout RNG is reseeded on every call, so every call drops the
    /// same weights (a fixed linear map, which gradcheck can differentiate).
    fn run(&self, v: &[Var<f64>]) -> strata_nn::Result<Var<f64>> {
        let mask = self.mask();
        let options = SdpaOptions {
            attn_mask: mask.as_ref(),
            dropout_p: self.dropout_p,
            is_causal: self.is_causal,
            scale: self.scale,
        };
        let mut rng = seeded_rng(self.seed ^ 4);
        scaled_dot_product_attention(&v[0], &v[1], &v[2], &options, &mut rng)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// sdpa in query, key and value, with masks (bool, additive, broadcast), causal cuts,
    /// L ≠ S, E ≠ Ev, broadcast batch dimensions and dropout.
    #[test]
    fn sdpa_gradients(c in sdpa_case()) {
        check(|v| c.run(v), &c.inputs())?;
    }
}

// ---------------------------------------------------------------------------------------
// Gradient checks: MultiheadAttention.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct MhaCase {
    config: MhaConfig,
    /// `None` unbatched, else `N`.
    batch: Option<usize>,
    l: usize,
    s: usize,
    self_attention: bool,
    kpm: MaskKind,
    attn_mask: MaskKind,
    /// The attention mask per batch and head, `[N·H, L, S]`, rather than `[L, S]`.
    attn_3d: bool,
    need_weights: bool,
    average: bool,
    is_causal: bool,
    seed: u64,
}

/// 1..=2 heads of width 1..=2, batched (1..=2) or not, batch first or not, self- or
/// cross-attention, with or without biases, key padding and attention masks of every
/// kind and shape, weights on or off (averaged or per head), the causal hint, dropout.
fn mha_case() -> impl Strategy<Value = MhaCase> {
    (
        (
            1..=2usize,
            1..=2usize,
            prop::option::of(1..=2usize),
            1..=3usize,
            1..=3usize,
        ),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        (mask_kind(), mask_kind(), any::<bool>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        any::<u64>(),
    )
        .prop_map(
            |(
                (heads, width, batch, l, s),
                (batch_first, self_attention, bias, drop),
                (kpm, attn_mask, attn_3d),
                (need_weights, average, causal),
                seed,
            )| {
                let s = if self_attention { l } else { s };
                // The causal hint needs the causal mask: self-attention, additive [L, L].
                let is_causal = causal && self_attention;
                let config = MhaConfig::new(heads * width, heads)
                    .batch_first(batch_first)
                    .bias(bias)
                    .dropout(if drop { 0.3 } else { 0.0 })
                    .seed(seed);
                MhaCase {
                    config,
                    batch,
                    l,
                    s,
                    self_attention,
                    kpm,
                    attn_mask: if is_causal {
                        MaskKind::Additive
                    } else {
                        attn_mask
                    },
                    attn_3d: attn_3d && !is_causal,
                    need_weights,
                    average,
                    is_causal,
                    seed,
                }
            },
        )
}

impl MhaCase {
    fn shape(&self, len: usize) -> Vec<usize> {
        let e = self.config.embed_dim;
        match self.batch {
            None => vec![len, e],
            Some(n) if self.config.batch_first => vec![n, len, e],
            Some(n) => vec![len, n, e],
        }
    }

    /// Inputs: query (and key, value), then in_proj_weight, [in_proj_bias],
    /// out_proj.weight, [out_proj.bias].
    fn inputs(&self) -> Vec<Tensor<f64>> {
        let e = self.config.embed_dim;
        let mut t = vec![values(&self.shape(self.l), self.seed)];
        if !self.self_attention {
            t.push(values(&self.shape(self.s), self.seed ^ 1));
            t.push(values(&self.shape(self.s), self.seed ^ 2));
        }
        t.push(values(&[3 * e, e], self.seed ^ 3));
        if self.config.bias {
            t.push(values(&[3 * e], self.seed ^ 4));
        }
        t.push(values(&[e, e], self.seed ^ 5));
        if self.config.bias {
            t.push(values(&[e], self.seed ^ 6));
        }
        t
    }

    /// Masks that never block key 0 (a query with no key gives NaN on the weights path).
    fn masks(&self) -> (Option<AttnMask<f64>>, Option<AttnMask<f64>>) {
        let n = self.batch.unwrap_or(1);
        let (l, s, h) = (self.l, self.s, self.config.num_heads);
        let first_key_open = |t: Tensor<f64>, blocked: f64| {
            let cols = s;
            let data = t
                .to_vec()
                .iter()
                .enumerate()
                .map(|(i, &x)| if i % cols == 0 { blocked } else { x })
                .collect();
            Tensor::from_vec(data, t.shape()).unwrap()
        };
        let kpm_shape = if self.batch.is_some() {
            vec![n, s]
        } else {
            vec![s]
        };
        let kpm = match self.kpm {
            MaskKind::None => None,
            MaskKind::Bool => Some(AttnMask::Bool(first_key_open(
                bits(&kpm_shape, 0.4, self.seed ^ 7),
                0.0,
            ))),
            MaskKind::Additive => Some(AttnMask::Additive(values(&kpm_shape, self.seed ^ 7))),
        };
        let attn_shape = if self.attn_3d {
            vec![n * h, l, s]
        } else {
            vec![l, s]
        };
        let attn = match self.attn_mask {
            _ if self.is_causal => Some(AttnMask::square_subsequent(l)),
            MaskKind::None => None,
            MaskKind::Bool => Some(AttnMask::Bool(first_key_open(
                bits(&attn_shape, 0.4, self.seed ^ 8),
                0.0,
            ))),
            MaskKind::Additive => Some(AttnMask::Additive(values(&attn_shape, self.seed ^ 8))),
        };
        (kpm, attn)
    }

    /// A fresh layer (so the dropout RNG restarts) holding the vars as its parameters;
    /// the output, with the weights appended when returned.
    fn run(&self, v: &[Var<f64>]) -> strata_nn::Result<Var<f64>> {
        let mut mha = MultiheadAttention::new(self.config, &mut rng())?;
        let mut p = v[if self.self_attention { 1 } else { 3 }..].iter().cloned();
        mha.in_proj_weight = p.next().unwrap();
        mha.in_proj_bias = self.config.bias.then(|| p.next().unwrap());
        let w = p.next().unwrap();
        mha.out_proj = Linear::from_parameters(w, p.next())?;
        let (kpm, attn) = self.masks();
        let options = MhaForward {
            key_padding_mask: kpm.as_ref(),
            need_weights: self.need_weights,
            attn_mask: attn.as_ref(),
            average_attn_weights: self.average,
            is_causal: self.is_causal,
        };
        let (q, k, vv) = if self.self_attention {
            (&v[0], &v[0], &v[0])
        } else {
            (&v[0], &v[1], &v[2])
        };
        let (y, weights) = mha.forward(q, k, vv, &options)?;
        Ok(match weights {
            Some(w) => Var::cat(&[y.reshape([-1])?, w.reshape([-1])?], 0)?,
            None => y,
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(LAYER_CASES))]

    /// MultiheadAttention in its inputs and all four parameters, over masks, key padding,
    /// layouts, unbatched inputs, weights on and off, no bias, causal hint and dropout.
    #[test]
    fn mha_gradients(c in mha_case()) {
        check(|v| c.run(v), &c.inputs())?;
    }
}

// ---------------------------------------------------------------------------------------
// Gradient checks: transformer layers, the encoder and positional encodings.
// ---------------------------------------------------------------------------------------

/// Puts `vars` (in state-dict order) into `module`'s parameters.
fn set_parameters(
    module: &mut TransformerEncoderLayer<f64>,
    vars: &mut impl Iterator<Item = Var<f64>>,
) {
    let bias = module.config().bias;
    let mut next = || vars.next().unwrap();
    module.self_attn.in_proj_weight = next();
    module.self_attn.in_proj_bias = bias.then(&mut next);
    let w = next();
    module.self_attn.out_proj = Linear::from_parameters(w, bias.then(&mut next)).unwrap();
    let w = next();
    module.linear1 = Linear::from_parameters(w, bias.then(&mut next)).unwrap();
    let w = next();
    module.linear2 = Linear::from_parameters(w, bias.then(&mut next)).unwrap();
    for norm in [&mut module.norm1, &mut module.norm2] {
        norm.weight = Some(next());
        norm.bias = bias.then(&mut next);
    }
}

#[derive(Clone, Debug)]
struct LayerCase {
    config: TransformerEncoderLayerConfig,
    shape: Vec<usize>,
    layers: usize,
    final_norm: bool,
    kpm: bool,
    seed: u64,
}

impl LayerCase {
    fn inputs(&self) -> Vec<Tensor<f64>> {
        let mut rng = seeded_rng(self.seed);
        let layer = TransformerEncoderLayer::<f64>::new(self.config, &mut rng).unwrap();
        let mut t = vec![values(&self.shape, self.seed)];
        for i in 0..self.layers {
            for (k, (_, p)) in layer.named_parameters().into_iter().enumerate() {
                t.push(values(p.shape(), self.seed ^ (100 * i + k + 1) as u64));
            }
        }
        if self.final_norm {
            let d = self.config.d_model;
            t.push(values(&[d], self.seed ^ 1000));
            if self.config.bias {
                t.push(values(&[d], self.seed ^ 1001));
            }
        }
        t
    }

    fn padding(&self) -> Option<AttnMask<f64>> {
        let s = &self.shape;
        let (n, l) = match s.len() {
            2 => (None, s[0]),
            _ if self.config.batch_first => (Some(s[0]), s[1]),
            _ => (Some(s[1]), s[0]),
        };
        self.kpm.then(|| {
            let shape: Vec<usize> = n.into_iter().chain([l]).collect();
            // Never the first key: every query keeps one.
            let mut m = bits(&shape, 0.5, self.seed ^ 9).to_vec();
            for row in m.chunks_mut(l) {
                row[0] = 0.0;
            }
            AttnMask::Bool(Tensor::from_vec(m, &shape).unwrap())
        })
    }

    fn run(&self, v: &[Var<f64>]) -> strata_nn::Result<Var<f64>> {
        let kpm = self.padding();
        let mut params = v[1..].iter().cloned();
        if self.layers == 1 && !self.final_norm {
            let mut layer = TransformerEncoderLayer::new(self.config, &mut rng())?;
            set_parameters(&mut layer, &mut params);
            return layer.forward_with(&v[0], None, kpm.as_ref(), false);
        }
        let mut enc =
            TransformerEncoder::new(self.config, self.layers, self.final_norm, &mut rng())?;
        for layer in &mut enc.layers {
            set_parameters(layer, &mut params);
        }
        if let Some(norm) = &mut enc.norm {
            norm.weight = params.next();
            norm.bias = if self.config.bias {
                params.next()
            } else {
                None
            };
        }
        enc.forward_with(&v[0], None, kpm.as_ref(), false)
    }
}

/// d_model = heads · width (1..=2 each), feed-forward 1..=3, post- or pre-norm, ReLU or
/// GELU, with or without biases, batched or not, key padding, dropout 0.
fn layer_case(max_layers: usize) -> impl Strategy<Value = LayerCase> {
    (
        (1..=2usize, 1..=2usize, 1..=3usize, 1..=max_layers),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        (
            prop::option::of(1..=2usize),
            1..=3usize,
            any::<bool>(),
            any::<bool>(),
        ),
        any::<u64>(),
    )
        .prop_map(
            move |(
                (heads, width, ff, layers),
                (norm_first, gelu, bias, batch_first),
                (n, l, kpm, fin),
                seed,
            )| {
                let d = heads * width;
                let activation = if gelu {
                    TransformerActivation::Gelu
                } else {
                    TransformerActivation::Relu
                };
                let config = TransformerEncoderLayerConfig::new(d, heads)
                    .dim_feedforward(ff)
                    .dropout(0.0)
                    .activation(activation)
                    .norm_first(norm_first)
                    .bias(bias)
                    .batch_first(batch_first)
                    .layer_norm_eps(0.1);
                let shape = match n {
                    None => vec![l, d],
                    Some(n) if batch_first => vec![n, l, d],
                    Some(n) => vec![l, n, d],
                };
                LayerCase {
                    config,
                    shape,
                    layers,
                    final_norm: max_layers > 1 && fin,
                    kpm,
                    seed,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(LAYER_CASES))]

    /// TransformerEncoderLayer (both norm orders, ReLU and GELU) in its input and all of
    /// its parameters. (The eps of 0.1 keeps LayerNorm's curvature moderate for one- and
    /// two-element rows; ReLU's kink is met with probability ~0 at random values.)
    #[test]
    fn encoder_layer_gradients(c in layer_case(1)) {
        check(|v| c.run(v), &c.inputs())?;
    }

    /// TransformerEncoder of 1..=2 layers with or without a final norm, in its input and
    /// the parameters of every layer and of the norm.
    #[test]
    fn encoder_gradients(c in layer_case(2)) {
        check(|v| c.run(v), &c.inputs())?;
    }

    /// Positional encodings: the sine table is a constant; the learned table is a
    /// parameter, of which only the first L rows get a gradient.
    #[test]
    fn positional_encoding_gradients(
        (n, l, d, max_extra, seed) in (prop::option::of(1..=2usize), 1..=3usize, 1..=3usize, 0..=2usize, any::<u64>())
    ) {
        let shape: Vec<usize> = n.into_iter().chain([l, d]).collect();
        let x = values(&shape, seed);
        let sine = ok(SinusoidalPositionalEncoding::new(d, l + max_extra))?;
        check(|v| sine.forward(&v[0]), std::slice::from_ref(&x))?;
        let table = values(&[l + max_extra, d], seed ^ 1);
        check(
            |v| {
                let mut pe = LearnedPositionalEncoding::new(l + max_extra, d, &mut rng())?;
                pe.weight = v[1].clone();
                pe.forward(&v[0])
            },
            &[x, table],
        )?;
    }
}

// ---------------------------------------------------------------------------------------
// PyTorch fixtures.
// ---------------------------------------------------------------------------------------

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub(crate) fn load(name: &str) -> StateDict<f64> {
    StateDict::load_safetensors(&fixture_path(&format!("{name}.safetensors")))
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn get(sd: &StateDict<f64>, key: &str) -> Tensor<f64> {
    sd.get(key)
        .unwrap_or_else(|| panic!("fixture lacks {key}"))
        .clone()
}

/// The `p.`-prefixed parameters of a fixture, prefix removed.
pub(crate) fn params(sd: &StateDict<f64>) -> StateDict<f64> {
    let mut out = StateDict::new();
    for (k, t) in sd.iter() {
        if let Some(key) = k.strip_prefix("p.") {
            out.insert(key, t.clone());
        }
    }
    out
}

pub(crate) fn mask(sd: &StateDict<f64>, key: &str, kind: MaskKind) -> Option<AttnMask<f64>> {
    match kind {
        MaskKind::None => None,
        MaskKind::Bool => Some(AttnMask::Bool(get(sd, key))),
        MaskKind::Additive => Some(AttnMask::Additive(get(sd, key))),
    }
}

#[track_caller]
pub(crate) fn assert_close(got: &Tensor<f64>, want: &Tensor<f64>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.to_vec().iter().zip(want.to_vec()).enumerate() {
        let tol = 1e-10 + 1e-8 * w.abs();
        assert!(
            (g - w).abs() <= tol || (g.is_nan() && w.is_nan()) || g == &w,
            "{what}[{i}]: strata {g}, PyTorch {w}"
        );
    }
}

/// `Σ y ⊙ proj` backpropagated; every gradient compared.
#[track_caller]
pub(crate) fn check_grads(
    sd: &StateDict<f64>,
    loss: &Var<f64>,
    vars: &[(&str, &Var<f64>)],
    what: &str,
) {
    loss.backward().unwrap();
    for (key, var) in vars {
        let g = var
            .grad()
            .unwrap_or_else(|| panic!("{what}: no gradient for {key}"));
        assert_close(&g, &get(sd, key), &format!("{what} {key}"));
    }
}

fn sdpa_fixture(name: &str, kind: MaskKind, is_causal: bool, scale: Option<f64>) {
    let sd = load(name);
    let (q, k, v) = (
        Var::parameter(get(&sd, "q")),
        Var::parameter(get(&sd, "k")),
        Var::parameter(get(&sd, "v")),
    );
    let m = mask(&sd, "mask", kind);
    let options = SdpaOptions {
        attn_mask: m.as_ref(),
        is_causal,
        scale,
        ..SdpaOptions::default()
    };
    let y = scaled_dot_product_attention(&q, &k, &v, &options, &mut rng()).unwrap();
    assert_close(&y.value(), &get(&sd, "y"), &format!("{name} output"));
    let loss = y.mul(&Var::new(get(&sd, "proj"))).unwrap().sum_all();
    check_grads(
        &sd,
        &loss,
        &[("grad_q", &q), ("grad_k", &k), ("grad_v", &v)],
        name,
    );
}

/// PyTorch 2.x: F.scaled_dot_product_attention(q, k, v, attn_mask, is_causal, scale), with
/// a query that sees no key (zeros), broadcast masks and batch dims, L ≠ S causal cuts.
#[test]
fn sdpa_matches_pytorch() {
    sdpa_fixture("sdpa_plain", MaskKind::None, false, None);
    sdpa_fixture("sdpa_bool_mask", MaskKind::Bool, false, None);
    sdpa_fixture("sdpa_float_mask", MaskKind::Additive, false, None);
    sdpa_fixture("sdpa_causal_long", MaskKind::None, true, None);
    sdpa_fixture("sdpa_causal_short", MaskKind::None, true, None);
    sdpa_fixture("sdpa_scale_broadcast", MaskKind::None, false, Some(0.3));
    // The query with no key gets zeros (PyTorch's sdpa), not NaN.
    let y = get(&load("sdpa_bool_mask"), "y");
    assert!(y.to_vec().iter().all(|x| x.is_finite()));
}

struct MhaFixture {
    config: MhaConfig,
    self_attention: bool,
    kpm: MaskKind,
    attn_mask: MaskKind,
    need_weights: bool,
    average: bool,
    is_causal: bool,
}

impl MhaFixture {
    fn new(config: MhaConfig) -> Self {
        MhaFixture {
            config,
            self_attention: true,
            kpm: MaskKind::None,
            attn_mask: MaskKind::None,
            need_weights: true,
            average: true,
            is_causal: false,
        }
    }

    fn check(&self, name: &str) {
        let sd = load(name);
        let mha = MultiheadAttention::<f64>::new(self.config, &mut rng()).unwrap();
        mha.load_state_dict(&params(&sd), true).unwrap();
        let q = Var::parameter(get(&sd, "query"));
        let (k, v) = if self.self_attention {
            (q.clone(), q.clone())
        } else {
            (
                Var::parameter(get(&sd, "key")),
                Var::parameter(get(&sd, "value")),
            )
        };
        let (kpm, attn) = (
            mask(&sd, "kpm", self.kpm),
            mask(&sd, "attn_mask", self.attn_mask),
        );
        let options = MhaForward {
            key_padding_mask: kpm.as_ref(),
            need_weights: self.need_weights,
            attn_mask: attn.as_ref(),
            average_attn_weights: self.average,
            is_causal: self.is_causal,
        };
        let (y, w) = mha.forward(&q, &k, &v, &options).unwrap();
        assert_close(&y.value(), &get(&sd, "y"), &format!("{name} output"));
        let mut loss = y.mul(&Var::new(get(&sd, "proj"))).unwrap().sum_all();
        assert_eq!(w.is_some(), self.need_weights);
        if let Some(w) = w {
            assert_close(&w.value(), &get(&sd, "w"), &format!("{name} weights"));
            let lw = w.mul(&Var::new(get(&sd, "proj_w"))).unwrap().sum_all();
            loss = loss.add(&lw).unwrap();
        }
        let mut vars: Vec<(String, Var<f64>)> = vec![("grad_query".into(), q.clone())];
        if !self.self_attention {
            vars.push(("grad_key".into(), k.clone()));
            vars.push(("grad_value".into(), v.clone()));
        }
        for (key, p) in mha.named_parameters() {
            vars.push((format!("g.{key}"), p));
        }
        let refs: Vec<(&str, &Var<f64>)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
        check_grads(&sd, &loss, &refs, name);
    }
}

/// nn.MultiheadAttention: self-attention with key padding (weights on and off), the causal
/// hint (sdpa's causal path) and the same mask through the weights path, cross-attention
/// with a per-head bool mask and an additive key padding mask, unbatched, no bias.
#[test]
fn mha_matches_pytorch() {
    let seq_first = MhaConfig::new(8, 2);
    let padded = MhaFixture {
        kpm: MaskKind::Bool,
        ..MhaFixture::new(seq_first)
    };
    padded.check("mha_self_kpm");
    MhaFixture {
        need_weights: false,
        ..padded
    }
    .check("mha_self_kpm_noweights");

    let batch_first = MhaConfig::new(8, 2).batch_first(true);
    let causal = MhaFixture {
        attn_mask: MaskKind::Additive,
        is_causal: true,
        need_weights: false,
        ..MhaFixture::new(batch_first)
    };
    causal.check("mha_causal");
    MhaFixture {
        is_causal: false,
        need_weights: true,
        average: false,
        ..causal
    }
    .check("mha_causal_weights");

    let cross = MhaFixture {
        self_attention: false,
        kpm: MaskKind::Additive,
        attn_mask: MaskKind::Bool,
        average: false,
        ..MhaFixture::new(seq_first)
    };
    cross.check("mha_cross");
    MhaFixture {
        need_weights: false,
        ..cross
    }
    .check("mha_cross_noweights");

    MhaFixture {
        kpm: MaskKind::Bool,
        ..MhaFixture::new(MhaConfig::new(8, 4))
    }
    .check("mha_unbatched");
    MhaFixture {
        need_weights: false,
        ..MhaFixture::new(MhaConfig::new(8, 2).bias(false).batch_first(true))
    }
    .check("mha_nobias");
}

/// A sequence whose every key is padding: PyTorch's sdpa path (need_weights = false) gives
/// that sequence zero attention (its output is out_proj's bias), its softmax path
/// (need_weights = true) NaN; strata gives the same, and finite gradients on the first.
#[test]
fn mha_fully_padded_sequence_matches_pytorch() {
    MhaFixture {
        kpm: MaskKind::Bool,
        need_weights: false,
        ..MhaFixture::new(MhaConfig::new(4, 2))
    }
    .check("mha_fully_padded");
    let sd = load("mha_fully_padded_weights");
    let mha = MultiheadAttention::<f64>::new(MhaConfig::new(4, 2), &mut rng()).unwrap();
    mha.load_state_dict(&params(&load("mha_fully_padded")), true)
        .unwrap();
    let x = Var::new(get(&sd, "query"));
    let kpm = AttnMask::Bool(get(&sd, "kpm"));
    let options = MhaForward {
        key_padding_mask: Some(&kpm),
        ..MhaForward::default()
    };
    let (y, w) = mha.forward(&x, &x, &x, &options).unwrap();
    assert_close(
        &y.value(),
        &get(&sd, "y"),
        "fully padded output with weights",
    );
    assert_close(&w.unwrap().value(), &get(&sd, "w"), "fully padded weights");
    assert!(y.to_vec().iter().any(|v| v.is_nan()));
}

fn layer_fixture(
    name: &str,
    config: TransformerEncoderLayerConfig,
    src_mask: MaskKind,
    kpm: MaskKind,
    is_causal: bool,
) {
    let sd = load(name);
    let layer = TransformerEncoderLayer::<f64>::new(config, &mut rng()).unwrap();
    layer.load_state_dict(&params(&sd), true).unwrap();
    let x = Var::parameter(get(&sd, "x"));
    let (m, p) = (
        mask(&sd, "src_mask", src_mask),
        mask(&sd, "src_key_padding_mask", kpm),
    );
    let y = layer
        .forward_with(&x, m.as_ref(), p.as_ref(), is_causal)
        .unwrap();
    assert_close(&y.value(), &get(&sd, "y"), &format!("{name} output"));
    let loss = y.mul(&Var::new(get(&sd, "proj"))).unwrap().sum_all();
    let mut vars: Vec<(String, Var<f64>)> = vec![("grad_x".into(), x.clone())];
    for (key, p) in layer.named_parameters() {
        vars.push((format!("g.{key}"), p));
    }
    let refs: Vec<(&str, &Var<f64>)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    check_grads(&sd, &loss, &refs, name);
}

/// nn.TransformerEncoderLayer in both norm orders with ReLU and GELU, key padding, causal
/// and boolean source masks, another eps, no bias and unbatched input.
#[test]
fn encoder_layer_matches_pytorch() {
    let base = TransformerEncoderLayerConfig::new(8, 2)
        .dim_feedforward(16)
        .dropout(0.0);
    layer_fixture(
        "transformer_layer_post_relu",
        base,
        MaskKind::None,
        MaskKind::Bool,
        false,
    );
    let pre_gelu = base
        .norm_first(true)
        .activation(TransformerActivation::Gelu)
        .batch_first(true);
    layer_fixture(
        "transformer_layer_pre_gelu",
        pre_gelu,
        MaskKind::Additive,
        MaskKind::None,
        true,
    );
    let post_gelu = base
        .activation(TransformerActivation::Gelu)
        .batch_first(true);
    layer_fixture(
        "transformer_layer_post_gelu",
        post_gelu,
        MaskKind::None,
        MaskKind::None,
        false,
    );
    let pre_relu = base.norm_first(true).layer_norm_eps(1e-3);
    layer_fixture(
        "transformer_layer_pre_relu",
        pre_relu,
        MaskKind::Bool,
        MaskKind::None,
        false,
    );
    layer_fixture(
        "transformer_layer_nobias",
        base.bias(false),
        MaskKind::None,
        MaskKind::None,
        false,
    );
}

/// nn.TransformerEncoder of 2 layers (different parameters) with a final LayerNorm, a
/// causal float mask and key padding.
#[test]
fn encoder_matches_pytorch() {
    let sd = load("transformer_encoder");
    let config = TransformerEncoderLayerConfig::new(8, 2)
        .dim_feedforward(16)
        .dropout(0.0)
        .batch_first(true);
    let enc = TransformerEncoder::<f64>::new(config, 2, true, &mut rng()).unwrap();
    enc.load_state_dict(&params(&sd), true).unwrap();
    let x = Var::parameter(get(&sd, "x"));
    let m = AttnMask::Additive(get(&sd, "mask"));
    let p = AttnMask::Bool(get(&sd, "src_key_padding_mask"));
    let y = enc.forward_with(&x, Some(&m), Some(&p), false).unwrap();
    assert_close(&y.value(), &get(&sd, "y"), "encoder output");
    let loss = y.mul(&Var::new(get(&sd, "proj"))).unwrap().sum_all();
    let mut vars: Vec<(String, Var<f64>)> = vec![("grad_x".into(), x.clone())];
    for (key, p) in enc.named_parameters() {
        vars.push((format!("g.{key}"), p));
    }
    let refs: Vec<(&str, &Var<f64>)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
    check_grads(&sd, &loss, &refs, "encoder");
}

/// The table of PyTorch's transformer tutorial, added to a batch-first input.
#[test]
fn sinusoidal_table_matches_pytorch() {
    let sd = load("transformer_sinusoidal");
    let pe = SinusoidalPositionalEncoding::<f64>::new(6, 10).unwrap();
    assert_close(pe.table(), &get(&sd, "table"), "sine table");
    let y = pe.forward(&Var::new(get(&sd, "x"))).unwrap();
    assert_close(&y.value(), &get(&sd, "y"), "x + pe");
    // A buffer that is not persistent: no state at all.
    assert!(Module::<f64>::state_dict(&pe).is_empty());
}

/// The state-dict keys, in order, are PyTorch's (transformer_state_keys.json, written by
/// generate_attention.py from the PyTorch modules).
#[test]
fn state_dict_keys_and_order_match_pytorch() {
    let text = std::fs::read_to_string(fixture_path("transformer_state_keys.json")).unwrap();
    let want: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = |m: &dyn Module<f32>| m.state_dict().keys().map(String::from).collect::<Vec<_>>();
    let layer = TransformerEncoderLayerConfig::new(8, 2).dim_feedforward(16);
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "mha",
            keys(&MultiheadAttention::new(MhaConfig::new(8, 2), &mut rng()).unwrap()),
        ),
        (
            "mha_nobias",
            keys(&MultiheadAttention::new(MhaConfig::new(8, 2).bias(false), &mut rng()).unwrap()),
        ),
        (
            "layer",
            keys(&TransformerEncoderLayer::new(layer, &mut rng()).unwrap()),
        ),
        (
            "layer_nobias",
            keys(&TransformerEncoderLayer::new(layer.bias(false), &mut rng()).unwrap()),
        ),
        (
            "encoder",
            keys(&TransformerEncoder::new(layer, 2, true, &mut rng()).unwrap()),
        ),
        (
            "decoder_layer",
            keys(&TransformerDecoderLayer::new(layer, &mut rng()).unwrap()),
        ),
        (
            "transformer",
            keys(&Transformer::new(layer, 1, 1, &mut rng()).unwrap()),
        ),
    ];
    for (name, got) in cases {
        let want: Vec<String> = want[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

/// The strata → PyTorch direction: the state dict strata writes is the committed fixture
/// byte for byte (generate_attention.py loads it into nn.TransformerEncoder with
/// strict=True and checks the output, also committed, against its own), and strata's
/// output still matches the committed one. `STRATA_WRITE_FIXTURES=1` rewrites the files.
#[test]
fn transformer_export_loads_into_pytorch() {
    let config = TransformerEncoderLayerConfig::new(8, 2)
        .dim_feedforward(16)
        .dropout(0.0)
        .batch_first(true);
    let mut rng = seeded_rng(11);
    let enc = TransformerEncoder::<f64>::new(config, 2, true, &mut rng).unwrap();
    // The copies start equal, as in PyTorch; make the second layer and the norm differ.
    for (_, p) in enc.named_parameters().iter().skip(12) {
        p.set_value(Tensor::randn(p.shape(), &mut rng)).unwrap();
    }
    let x = Tensor::<f64>::randn(&[2, 5, 8], &mut rng);
    let mask = AttnMask::square_subsequent(5);
    let y = enc
        .forward_with(&Var::new(x.clone()), Some(&mask), None, false)
        .unwrap()
        .value();
    let mut io = StateDict::new();
    io.insert("x", x);
    io.insert("mask", mask.tensor().clone());
    io.insert("y", y.clone());
    let writing = std::env::var_os("STRATA_WRITE_FIXTURES").is_some();
    let dir = if writing {
        fixture_path("")
    } else {
        let d = std::env::temp_dir().join(format!("strata-attn-export-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    enc.save_safetensors(&dir.join("transformer_strata_export.safetensors"))
        .unwrap();
    io.save_safetensors(&dir.join("transformer_strata_export_io.safetensors"))
        .unwrap();
    let written = std::fs::read(dir.join("transformer_strata_export.safetensors")).unwrap();
    let committed = std::fs::read(fixture_path("transformer_strata_export.safetensors")).unwrap();
    assert!(
        written == committed,
        "the exported state dict differs from the fixture"
    );
    let committed_io = StateDict::<f64>::load_safetensors(&fixture_path(
        "transformer_strata_export_io.safetensors",
    ))
    .unwrap();
    assert_close(&y, &get(&committed_io, "y"), "export output");
    if !writing {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// Behaviour and errors.
// ---------------------------------------------------------------------------------------

/// Dropout acts in train mode only and `set_training` reaches every dropout of a layer.
#[test]
fn dropout_follows_train_and_eval_mode() {
    let config = TransformerEncoderLayerConfig::new(8, 2)
        .dim_feedforward(16)
        .dropout(0.5)
        .batch_first(true);
    let mut layer = TransformerEncoderLayer::<f64>::new(config, &mut rng()).unwrap();
    let reference = TransformerEncoderLayer::<f64>::new(config.dropout(0.0), &mut rng()).unwrap();
    let x = Var::new(Tensor::randn(&[2, 4, 8], &mut rng()));
    let want = reference.forward(&x).unwrap().to_vec();
    let a = layer.forward(&x).unwrap().to_vec();
    let b = layer.forward(&x).unwrap().to_vec();
    assert_ne!(a, b, "train mode drops differently on each call");
    assert_ne!(a, want);
    layer.eval();
    assert!(!layer.self_attn.is_training() && !layer.dropout.is_training());
    assert!(!layer.dropout1.is_training() && !layer.dropout2.is_training());
    assert_eq!(layer.forward(&x).unwrap().to_vec(), want);
    // MultiheadAttention's own weight dropout: weights of a dropped row no longer sum to 1.
    let mut mha =
        MultiheadAttention::<f64>::new(MhaConfig::new(8, 2).dropout(0.5), &mut rng()).unwrap();
    let (_, w) = mha.forward(&x, &x, &x, &MhaForward::default()).unwrap();
    let sums = w.unwrap().value().sum(&[-1], false).unwrap().to_vec();
    assert!(sums.iter().any(|s| (s - 1.0).abs() > 1e-9));
    mha.eval();
    let (_, w) = mha.forward(&x, &x, &x, &MhaForward::default()).unwrap();
    let sums = w.unwrap().value().sum(&[-1], false).unwrap().to_vec();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-12));
}

/// sdpa's dropout drops whole weights: with p = 1 the output is zero.
#[test]
fn sdpa_dropout_of_one_gives_zeros() {
    let q = Var::new(Tensor::<f64>::randn(&[2, 3, 4], &mut rng()));
    let options = SdpaOptions {
        dropout_p: 1.0,
        ..SdpaOptions::default()
    };
    let y = scaled_dot_product_attention(&q, &q, &q, &options, &mut rng()).unwrap();
    assert!(y.to_vec().iter().all(|&v| v == 0.0));
}

#[track_caller]
fn input_error<T: std::fmt::Debug>(r: strata_nn::Result<T>, layer: &str, needle: &str) {
    match r {
        Err(NnError::Input { layer: l, msg }) => {
            assert_eq!(l, layer);
            assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        }
        other => panic!("expected an input error of {layer}, got {other:?}"),
    }
}

#[test]
fn bad_inputs_are_errors_naming_the_layer_and_shapes() {
    let v = |shape: &[usize]| Var::new(Tensor::<f32>::zeros(shape));
    let sdpa = |q: &Var<f32>, k: &Var<f32>, vv: &Var<f32>, o: &SdpaOptions<'_, f32>| {
        scaled_dot_product_attention(q, k, vv, o, &mut rng())
    };
    let none = SdpaOptions::default();
    const SDPA: &str = "scaled_dot_product_attention";
    input_error(
        sdpa(&v(&[2, 3, 4]), &v(&[2, 5, 3]), &v(&[2, 5, 3]), &none),
        SDPA,
        "[2, 5, 3]",
    );
    input_error(
        sdpa(&v(&[2, 3, 4]), &v(&[2, 5, 4]), &v(&[2, 6, 4]), &none),
        SDPA,
        "[2, 6, 4]",
    );
    input_error(
        sdpa(&v(&[3, 3, 4]), &v(&[2, 5, 4]), &v(&[2, 5, 4]), &none),
        SDPA,
        "[3, 3, 4]",
    );
    input_error(sdpa(&v(&[4]), &v(&[5, 4]), &v(&[5, 4]), &none), SDPA, "[4]");
    let m = AttnMask::Bool(Tensor::zeros(&[3, 4]));
    let masked = SdpaOptions {
        attn_mask: Some(&m),
        ..SdpaOptions::default()
    };
    input_error(
        sdpa(&v(&[2, 3, 4]), &v(&[2, 5, 4]), &v(&[2, 5, 4]), &masked),
        SDPA,
        "[3, 4]",
    );
    let m = AttnMask::Bool(Tensor::zeros(&[3, 5]));
    let both = SdpaOptions {
        attn_mask: Some(&m),
        is_causal: true,
        ..SdpaOptions::default()
    };
    input_error(
        sdpa(&v(&[2, 3, 4]), &v(&[2, 5, 4]), &v(&[2, 5, 4]), &both),
        SDPA,
        "is_causal",
    );
    let drop = SdpaOptions {
        dropout_p: 1.5,
        ..SdpaOptions::default()
    };
    assert!(matches!(
        sdpa(&v(&[3, 4]), &v(&[3, 4]), &v(&[3, 4]), &drop),
        Err(NnError::Config { .. })
    ));

    // MultiheadAttention.
    assert!(matches!(
        MultiheadAttention::<f32>::new(MhaConfig::new(10, 3), &mut rng()),
        Err(NnError::Config {
            layer: "MultiheadAttention",
            ..
        })
    ));
    assert!(MultiheadAttention::<f32>::new(MhaConfig::new(8, 0), &mut rng()).is_err());
    let mha = MultiheadAttention::<f32>::new(MhaConfig::new(8, 2), &mut rng()).unwrap();
    const MHA: &str = "MultiheadAttention";
    let d = MhaForward::default();
    let x = v(&[4, 2, 8]);
    input_error(mha.forward(&v(&[4, 2, 6]), &x, &x, &d), MHA, "[4, 2, 6]");
    input_error(
        mha.forward(&x, &v(&[5, 2, 8]), &v(&[6, 2, 8]), &d),
        MHA,
        "[6, 2, 8]",
    );
    input_error(
        mha.forward(&x, &v(&[5, 3, 8]), &v(&[5, 3, 8]), &d),
        MHA,
        "[5, 3, 8]",
    );
    input_error(
        mha.forward(&v(&[2, 4, 2, 8]), &x, &x, &d),
        MHA,
        "[2, 4, 2, 8]",
    );
    let kpm = AttnMask::Bool(Tensor::zeros(&[2, 5]));
    let o = MhaForward {
        key_padding_mask: Some(&kpm),
        ..MhaForward::default()
    };
    input_error(mha.forward(&x, &x, &x, &o), MHA, "[2, 5]");
    let am = AttnMask::Bool(Tensor::zeros(&[3, 4, 4]));
    let o = MhaForward {
        attn_mask: Some(&am),
        ..MhaForward::default()
    };
    input_error(mha.forward(&x, &x, &x, &o), MHA, "[3, 4, 4]");
    let o = MhaForward {
        is_causal: true,
        ..MhaForward::default()
    };
    input_error(mha.forward(&x, &x, &x, &o), MHA, "is_causal");

    // Transformer layers and positional encodings.
    assert!(matches!(
        TransformerEncoderLayer::<f32>::new(TransformerEncoderLayerConfig::new(6, 4), &mut rng()),
        Err(NnError::Config { .. })
    ));
    assert!(
        TransformerEncoderLayer::<f32>::new(
            TransformerEncoderLayerConfig::new(8, 2).dropout(2.0),
            &mut rng()
        )
        .is_err()
    );
    let layer = TransformerEncoderLayer::<f32>::new(
        TransformerEncoderLayerConfig::new(8, 2).dim_feedforward(4),
        &mut rng(),
    )
    .unwrap();
    input_error(layer.forward(&v(&[4, 2, 7])), MHA, "[4, 2, 7]");
    let pe = SinusoidalPositionalEncoding::<f32>::new(8, 4).unwrap();
    input_error(
        pe.forward(&v(&[2, 5, 8])),
        "SinusoidalPositionalEncoding",
        "max_len = 4",
    );
    input_error(
        pe.forward(&v(&[2, 3, 6])),
        "SinusoidalPositionalEncoding",
        "[2, 3, 6]",
    );
    let lpe = LearnedPositionalEncoding::<f32>::new(4, 8, &mut rng()).unwrap();
    input_error(
        lpe.forward(&v(&[5, 8])),
        "LearnedPositionalEncoding",
        "max_len = 4",
    );
    assert!(SinusoidalPositionalEncoding::<f32>::new(0, 4).is_err());
}

/// Whatever a layer is asked, the results are `Result`s: a proptest over random shapes
/// (most of them wrong) never panics.
#[test]
fn random_shapes_never_panic() -> TestResult {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(128));
    let shapes = prop::collection::vec(prop::collection::vec(0..=4usize, 0..=4), 5);
    runner
        .run(&(shapes, any::<bool>()), |(s, flag)| {
            let v = |i: usize| Var::new(Tensor::<f32>::zeros(&s[i]));
            let m = AttnMask::Bool(Tensor::zeros(&s[3]));
            let kpm = AttnMask::Additive(Tensor::zeros(&s[4]));
            let options = SdpaOptions {
                attn_mask: flag.then_some(&m),
                ..SdpaOptions::default()
            };
            let _ = scaled_dot_product_attention(&v(0), &v(1), &v(2), &options, &mut rng());
            let mha =
                MultiheadAttention::<f32>::new(MhaConfig::new(4, 2).batch_first(flag), &mut rng())
                    .unwrap();
            let o = MhaForward {
                key_padding_mask: Some(&kpm),
                attn_mask: Some(&m),
                need_weights: flag,
                ..MhaForward::default()
            };
            let _ = mha.forward(&v(0), &v(1), &v(2), &o);
            let _ = mha.forward(&v(0), &v(0), &v(0), &o);
            Ok(())
        })
        .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))
}
