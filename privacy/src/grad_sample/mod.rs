//! Per-sample gradients and their norms, from each op's activations and output gradient.
//!
//! [`GradSampler`] runs a model's forward under [`tap_parameters`], which reports every op
//! that consumes a parameter together with its activations (the layer's input, the
//! convolution's settings, the embedding's indices, …); one backward then captures the
//! gradient of each such op's output — and only those: the functional
//! [`grad`](strata_autograd::grad) walk computes nothing on the way to the parameters
//! themselves. From the two, [`Captured`] gives per-sample gradients, their norms without
//! forming them (ghost norms), or the per-sample-weighted sum that DP-SGD needs, each by
//! the rule of the op (see `rules`). Compared with Opacus, which hooks modules, working at
//! the level of ops sees every use of a parameter — also in custom modules and functional
//! code — and refuses any use it has no rule for, instead of computing a wrong gradient.
//!
//! Recurrent layers run as one fused kernel per layer and direction, whose gate
//! gradients stay inside the kernel; for those the sampler runs the kernel again on the
//! recorded inputs, once for the whole batch, and asks its backward for the gate
//! gradients of every step (see `recurrent`).

mod recurrent;
mod rules;

use std::collections::HashMap;

use strata_autograd::{GradOptions, Tap, TapOp, Var, grad, tap_parameters};
use strata_nn::{Module, StateKind};
use strata_tensor::{Conv2dParams, Element, Tensor};

use crate::{PrivacyError, Result};
pub use rules::NormMethod;
use rules::{ConvRule, GramCache, Rule};

/// How the loss the forward returns was reduced over the batch, like Opacus's
/// `loss_reduction`: per-sample gradients are gradients of each sample's own loss, so a
/// mean loss has its gradients multiplied by the batch size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LossReduction {
    /// The loss is the mean of the per-sample losses (PyTorch's default).
    #[default]
    Mean,
    /// The loss is their sum.
    Sum,
}

/// A view of a parameter that an op consumed instead of the parameter itself.
#[derive(Clone, Debug)]
enum View {
    /// `narrow(dim, start, length)` of a source of shape `source`.
    Narrow {
        dim: usize,
        start: usize,
        length: usize,
        source: Vec<usize>,
    },
    /// A reshape of a source of shape `source`.
    Reshape { source: Vec<usize> },
}

impl View {
    /// Maps a gradient of the view to one of its source; `batched` when the gradients have
    /// a leading batch dimension.
    fn to_source<T: Element>(&self, g: &Tensor<T>, batched: bool) -> Result<Tensor<T>> {
        let off = usize::from(batched);
        match self {
            View::Narrow {
                dim,
                start,
                length,
                source,
            } => {
                let nd = g.ndim();
                let mut pads = vec![0isize; 2 * nd];
                // `pad` lists (before, after) pairs from the last dimension backwards.
                let k = nd - 1 - (dim + off);
                pads[2 * k] = *start as isize;
                pads[2 * k + 1] = (source[*dim] - start - length) as isize;
                Ok(g.pad(&pads, T::zero())?)
            }
            View::Reshape { source } => {
                let mut shape = Vec::with_capacity(source.len() + 1);
                if batched {
                    shape.push(g.shape()[0]);
                }
                shape.extend_from_slice(source);
                Ok(g.reshape(shape.as_slice())?)
            }
        }
    }
}

/// One share of a parameter's gradient: slot `slot` of rule `rule`, reached through the
/// views `chain` (innermost first).
#[derive(Clone, Debug)]
struct Piece {
    rule: usize,
    slot: usize,
    chain: Vec<View>,
}

/// Computes per-sample gradients of a model's parameters (see the module docs).
///
/// ```
/// use strata_autograd::Var;
/// use strata_nn::{Forward, Linear, Module};
/// use strata_privacy::{GradSampler, LossReduction};
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let mut rng = seeded_rng(0);
/// let fc = Linear::<f64>::new(3, 2, true, &mut rng);
/// let x = Var::new(Tensor::randn(&[4, 3], &mut rng));
/// let sampler = GradSampler::new(&fc)?.loss_reduction(LossReduction::Sum);
/// let captured = sampler.capture(4, || Ok::<_, strata_nn::NnError>(fc.forward(&x)?.sum_all()))?;
/// let grads = captured.per_sample_grads()?;
/// assert_eq!(grads[0].shape(), &[4, 2, 3]); // weight, per sample
/// assert_eq!(grads[1].shape(), &[4, 2]); // bias
/// // The per-sample gradients add up to the batch gradient.
/// fc.forward(&x)?.sum_all().backward()?;
/// let total = grads[0].sum(&[0], false)?;
/// assert!(total.allclose(&fc.weight.grad().unwrap(), 1e-12, 1e-12)?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct GradSampler<T: Element = f32> {
    params: Vec<(String, Var<T>)>,
    batch_first: bool,
    reduction: LossReduction,
}

impl<T: Element> GradSampler<T> {
    /// A sampler for the trainable parameters of `model`, batch first, for a mean loss.
    ///
    /// # Errors
    /// [`PrivacyError::BatchNorm`] when the model has a BatchNorm layer with running
    /// statistics. One without them (`track_running_stats: false`), or a functional batch
    /// norm, is refused by [`capture`](GradSampler::capture) when it normalises a batch by
    /// its own statistics: the op reports it, whatever state the layer keeps.
    pub fn new<M: Module<T> + ?Sized>(model: &M) -> Result<Self> {
        let mut batch_norm = None;
        model.visit_state(&mut |name, _, kind| {
            if kind != StateKind::Parameter
                && batch_norm.is_none()
                && let Some(layer) = name
                    .strip_suffix("running_mean")
                    .or_else(|| name.strip_suffix("running_var"))
            {
                let layer = layer.trim_end_matches('.');
                batch_norm = Some(if layer.is_empty() { "the model" } else { layer }.to_string());
            }
        });
        if let Some(layer) = batch_norm {
            return Err(PrivacyError::BatchNorm { layer });
        }
        let params = model
            .named_parameters()
            .into_iter()
            .filter(|(_, p)| p.needs_grad())
            .collect();
        Ok(GradSampler {
            params,
            batch_first: true,
            reduction: LossReduction::Mean,
        })
    }

    /// Whether the batch is the first dimension of activations (true, the default) or the
    /// second (`[L, N, ..]`, as in PyTorch's sequence-first layers). Convolutions always
    /// have it first and the recurrent kernels second, whatever this says.
    pub fn batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }

    /// How the loss is reduced over the batch.
    pub fn loss_reduction(mut self, reduction: LossReduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// The loss reduction this sampler assumes.
    pub fn reduction(&self) -> LossReduction {
        self.reduction
    }

    /// The parameters with their state-dict names, in the model's order.
    pub fn parameters(&self) -> &[(String, Var<T>)] {
        &self.params
    }

    /// Runs `forward` (the model on a batch of `batch_size` samples, returning the loss)
    /// with every parameter use tapped, then one backward that captures the gradients of
    /// the ops' outputs. Parameters' `.grad` are left alone.
    ///
    /// # Errors
    /// The forward's errors; [`PrivacyError::BatchNorm`] when an op normalised by the
    /// batch's statistics (BatchNorm in training mode, see
    /// [`note_sample_mixing`](strata_autograd::note_sample_mixing)), naming the layer by
    /// its affine weight where it has one; [`PrivacyError::Unsupported`] when a parameter is used by an
    /// op without a per-sample rule; [`PrivacyError::Batch`] when an activation does not
    /// have `batch_size` samples along the batch dimension, or the loss is not a scalar
    /// that depends on the parameters.
    pub fn capture<E>(
        &self,
        batch_size: usize,
        forward: impl FnOnce() -> std::result::Result<Var<T>, E>,
    ) -> Result<Captured<T>>
    where
        PrivacyError: From<E>,
    {
        let vars: Vec<Var<T>> = self.params.iter().map(|(_, p)| p.clone()).collect();
        let (loss, taps) = tap_parameters(&vars, forward)?;
        let loss = loss?;
        if loss.numel() != 1 {
            return Err(PrivacyError::Batch(format!(
                "the forward must return the scalar loss, got shape {:?}",
                loss.shape()
            )));
        }
        let index: HashMap<u64, usize> =
            vars.iter().enumerate().map(|(i, v)| (v.id(), i)).collect();
        // An op that normalised by the batch's statistics (BatchNorm in training mode, with
        // or without running statistics or affine parameters, as a layer or a function):
        // each sample's output depends on the others, so there is no per-sample gradient.
        if let Some(mixing) = taps.mixing.first() {
            let named = mixing.params.iter().find_map(|id| index.get(id)).map(|&i| {
                let name = &self.params[i].0;
                let layer = name
                    .rsplit_once('.')
                    .map_or("the model", |(layer, _)| layer);
                layer.to_string()
            });
            let layer = named.unwrap_or_else(|| {
                format!(
                    "the {} on input {:?} (a layer without parameters or running statistics \
                     to name it by)",
                    mixing.op, mixing.input_shape
                )
            });
            return Err(PrivacyError::BatchNorm { layer });
        }
        // Views of parameters: derived id → (source id, view).
        let mut views: HashMap<u64, (u64, View)> = HashMap::new();
        for tap in &taps.taps {
            let source = tap.params[0].as_ref().map(Var::id);
            let view = match &tap.op {
                TapOp::Narrow { dim, start, length } => View::Narrow {
                    dim: *dim,
                    start: *start,
                    length: *length,
                    source: tap.params[0]
                        .as_ref()
                        .map(|p| p.shape().to_vec())
                        .unwrap_or_default(),
                },
                TapOp::Reshape => View::Reshape {
                    source: tap.params[0]
                        .as_ref()
                        .map(|p| p.shape().to_vec())
                        .unwrap_or_default(),
                },
                _ => continue,
            };
            if let Some(source) = source {
                views.insert(tap.output.id(), (source, view));
            }
        }
        let leaf_of = |mut id: u64| -> (u64, Vec<View>) {
            let mut chain = Vec::new();
            while let Some((source, view)) = views.get(&id) {
                chain.push(view.clone());
                id = *source;
            }
            (id, chain)
        };
        if let Some(used) = taps.untapped().next() {
            let (leaf, _) = leaf_of(used.param);
            let param = index
                .get(&leaf)
                .map(|&i| self.params[i].0.clone())
                .unwrap_or_else(|| format!("#{leaf}"));
            return Err(PrivacyError::Unsupported { param, op: used.op });
        }
        let computing: Vec<&Tap<T>> = taps
            .taps
            .iter()
            .filter(|t| !matches!(t.op, TapOp::Narrow { .. } | TapOp::Reshape))
            .collect();
        let outputs: Vec<Var<T>> = computing.iter().map(|t| t.output.clone()).collect();
        let grads = if outputs.is_empty() {
            Vec::new()
        } else {
            if !loss.needs_grad() {
                return Err(PrivacyError::Batch(
                    "the loss does not depend on the parameters".into(),
                ));
            }
            let options = GradOptions {
                allow_unused: true,
                ..GradOptions::default()
            };
            grad(std::slice::from_ref(&loss), &outputs, None, options)?
        };
        let ctx = Context {
            batch: batch_size,
            batch_dim: usize::from(!self.batch_first),
        };
        let mut rules = Vec::new();
        let mut pieces: Vec<Vec<Piece>> = vec![Vec::new(); vars.len()];
        for (tap, g) in computing.iter().zip(grads) {
            let Some(g) = g else { continue };
            let made = ctx.rules_for(tap, &g.value())?;
            for (rule, slots) in made {
                let r = rules.len();
                rules.push(rule);
                for (slot, k) in slots {
                    let Some(p) = &tap.params[k] else { continue };
                    let (leaf, chain) = leaf_of(p.id());
                    if let Some(&i) = index.get(&leaf) {
                        pieces[i].push(Piece {
                            rule: r,
                            slot,
                            chain,
                        });
                    }
                }
            }
        }
        let scale = match self.reduction {
            LossReduction::Mean => batch_size as f64,
            LossReduction::Sum => 1.0,
        };
        Ok(Captured {
            shapes: vars.iter().map(|v| v.shape().to_vec()).collect(),
            rules,
            pieces,
            batch: batch_size,
            scale,
            loss: Element::to_f64(loss.item()?),
        })
    }
}

/// Builds rules from taps for a batch of `batch` samples.
struct Context {
    batch: usize,
    batch_dim: usize,
}

/// `t` with dimension `dim` moved to the front.
fn to_front<T: Element>(t: &Tensor<T>, dim: usize) -> Result<Tensor<T>> {
    if dim == 0 {
        return Ok(t.clone());
    }
    let mut order: Vec<isize> = vec![dim as isize];
    order.extend((0..t.ndim()).filter(|&d| d != dim).map(|d| d as isize));
    Ok(t.permute(&order)?)
}

impl Context {
    fn check(&self, op: &str, shape: &[usize], dim: usize) -> Result<()> {
        if shape.get(dim) != Some(&self.batch) {
            return Err(PrivacyError::Batch(format!(
                "the activation of `{op}` has shape {shape:?}, whose dimension {dim} should be \
                 the batch of {} samples (set batch_first to match the model's layout)",
                self.batch
            )));
        }
        Ok(())
    }

    /// `t` (`[.., B at batch_dim, .., last]`) as `[B, rows, last]`.
    fn rows<T: Element>(&self, op: &str, t: &Tensor<T>) -> Result<Tensor<T>> {
        let dim = self.batch_dim;
        if t.ndim() < 2 {
            return Err(PrivacyError::Batch(format!(
                "the activation of `{op}` has shape {:?}: an unbatched input has no samples",
                t.shape()
            )));
        }
        self.check(op, t.shape(), dim)?;
        let last = *t.shape().last().expect("2-d at least") as isize;
        let front = if dim + 1 == t.ndim() {
            t.clone()
        } else {
            to_front(t, dim)?
        };
        Ok(front.reshape([self.batch as isize, -1, last])?)
    }

    /// The rules of one tapped call, each with its (slot, tap-param position) pairs.
    #[allow(clippy::type_complexity)]
    fn rules_for<T: Element>(
        &self,
        tap: &Tap<T>,
        g: &Tensor<T>,
    ) -> Result<Vec<(Rule<T>, Vec<(usize, usize)>)>> {
        Ok(match &tap.op {
            TapOp::Linear { input } => {
                let a = self.rows("linear", input)?;
                let g = self.rows("linear", g)?;
                vec![(
                    Rule::Linear {
                        a,
                        g,
                        gram: GramCache::default(),
                    },
                    vec![(0, 0), (1, 1)],
                )]
            }
            TapOp::Conv2d { input, params } => {
                let w = tap.params[0]
                    .as_ref()
                    .map(|w| w.shape().to_vec())
                    .unwrap_or_default();
                vec![(self.conv(input, g, *params, &w, &w)?, vec![(0, 0), (1, 1)])]
            }
            TapOp::Conv1d { input, params } => {
                let w = tap.params[0]
                    .as_ref()
                    .map(|w| w.shape().to_vec())
                    .unwrap_or_default();
                if input.ndim() != 3 || w.len() != 3 {
                    return Err(PrivacyError::Batch(format!(
                        "conv1d: per-sample gradients need a batched input [N, C, L], got {:?}",
                        input.shape()
                    )));
                }
                let w4 = [w[0], w[1], 1, w[2]];
                let rule = self.conv(
                    &input.unsqueeze(2)?,
                    &g.unsqueeze(2)?,
                    params.to_2d(),
                    &w4,
                    &w,
                )?;
                vec![(rule, vec![(0, 0), (1, 1)])]
            }
            TapOp::Embedding {
                indices,
                padding_idx,
            } => {
                let num = tap.params[0].as_ref().map(|w| w.shape()[0]).unwrap_or(0);
                let dim = if indices.ndim() == 1 {
                    0
                } else {
                    self.batch_dim
                };
                self.check("embedding", indices.shape(), dim)?;
                let idx: Vec<f64> = indices.as_slice().iter().map(|&i| i as f64).collect();
                let idx = Tensor::from_vec(idx, indices.shape())?;
                let idx = to_front(&idx, dim)?.contiguous();
                let idx: Vec<usize> = idx.to_vec().iter().map(|&i| i as usize).collect();
                let d = *g.shape().last().unwrap_or(&0) as isize;
                let g = to_front(g, dim)?.reshape([self.batch as isize, -1, d])?;
                let rule = Rule::Embedding {
                    indices: idx,
                    padding: *padding_idx,
                    num,
                    g,
                };
                vec![(rule, vec![(0, 0)])]
            }
            TapOp::LayerNorm { input, d, eps } => {
                let (xhat, _) = input.layer_norm(*d, None, None, *eps)?;
                // Rows of the last `d` elements, as the kernel sees them (a normalised
                // shape of several dimensions is flattened).
                let (b, dd) = (self.batch as isize, *d as isize);
                let g3 = self.rows("layer_norm", g)?.reshape([b, -1, dd])?;
                let x3 = self.rows("layer_norm", &xhat)?.reshape([b, -1, dd])?;
                let mut out = Vec::new();
                for (k, prod) in [(0usize, g3.mul(&x3)?), (1, g3)] {
                    if let Some(p) = &tap.params[k] {
                        let rule = Rule::Elementwise {
                            prod,
                            aligned: vec![1, *d],
                            pshape: p.shape().to_vec(),
                        };
                        out.push((rule, vec![(0, k)]));
                    }
                }
                out
            }
            TapOp::Mul { other } => vec![(self.elementwise(tap, &g.mul(other)?)?, vec![(0, 0)])],
            TapOp::Add { sign } => {
                let prod = if *sign < 0.0 { g.neg() } else { g.clone() };
                vec![(self.elementwise(tap, &prod)?, vec![(0, 0)])]
            }
            TapOp::Recurrent(_) => {
                let [ih, hh] = recurrent::rules(tap, g, self.batch)?;
                vec![(ih, vec![(0, 0), (1, 2)]), (hh, vec![(0, 1), (1, 3)])]
            }
            TapOp::Narrow { .. } | TapOp::Reshape => Vec::new(),
        })
    }

    fn conv<T: Element>(
        &self,
        input: &Tensor<T>,
        g: &Tensor<T>,
        params: Conv2dParams,
        weight4: &[usize],
        weight_shape: &[usize],
    ) -> Result<Rule<T>> {
        if input.ndim() != 4 || weight4.len() != 4 {
            return Err(PrivacyError::Batch(format!(
                "conv2d: per-sample gradients need a batched input [N, C, H, W], got {:?}",
                input.shape()
            )));
        }
        self.check("conv", input.shape(), 0)?;
        let cols = input.im2col([weight4[2], weight4[3]], params)?;
        let (n, o) = (g.shape()[0], g.shape()[1]);
        let g3 = g.reshape([n as isize, o as isize, -1])?;
        Ok(Rule::Conv(Box::new(ConvRule {
            cols,
            g: g3,
            input: input.clone(),
            grad4: g.clone(),
            params,
            weight4: [weight4[0], weight4[1], weight4[2], weight4[3]],
            weight_shape: weight_shape.to_vec(),
        })))
    }

    /// The elementwise rule for `prod` (the output's gradient times the other operand)
    /// and the tap's one parameter.
    fn elementwise<T: Element>(&self, tap: &Tap<T>, prod: &Tensor<T>) -> Result<Rule<T>> {
        let p = tap.params[0]
            .as_ref()
            .expect("a tapped elementwise op has its parameter");
        let (out, ps) = (prod.shape().to_vec(), p.shape().to_vec());
        let dim = self.batch_dim;
        self.check(tap.output.op_name().unwrap_or("elementwise"), &out, dim)?;
        if ps.len() > out.len() {
            return Err(PrivacyError::Batch(format!(
                "a parameter of shape {ps:?} is broadcast to {out:?}"
            )));
        }
        let mut aligned = vec![1; out.len() - ps.len()];
        aligned.extend_from_slice(&ps);
        if aligned[dim] != 1 {
            return Err(PrivacyError::Batch(format!(
                "a parameter of shape {ps:?} meets an activation {out:?} along the batch \
                 dimension: each sample would have its own share of the parameter"
            )));
        }
        aligned.remove(dim);
        let prod = to_front(prod, dim)?;
        Ok(Rule::Elementwise {
            prod,
            aligned,
            pshape: ps,
        })
    }
}

/// The activations and output gradients of one forward and backward (from
/// [`GradSampler::capture`]), from which per-sample gradients, their norms and weighted
/// sums are computed parameter by parameter.
pub struct Captured<T: Element = f32> {
    shapes: Vec<Vec<usize>>,
    rules: Vec<Rule<T>>,
    pieces: Vec<Vec<Piece>>,
    batch: usize,
    scale: f64,
    loss: f64,
}

impl<T: Element> Captured<T> {
    /// The number of samples.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// The loss the forward returned.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// The number of parameters (in [`GradSampler::parameters`]'s order).
    pub fn num_parameters(&self) -> usize {
        self.shapes.len()
    }

    /// The per-sample gradients of parameter `i`, `[B, *shape]` (zeros when the forward did
    /// not use it).
    ///
    /// # Errors
    /// Tensor errors of the rules (not expected for a forward that ran).
    pub fn per_sample_grad(&self, i: usize) -> Result<Tensor<T>> {
        let mut shape = vec![self.batch];
        shape.extend_from_slice(&self.shapes[i]);
        let mut total: Option<Tensor<T>> = None;
        for piece in &self.pieces[i] {
            let mut g = self.rules[piece.rule].per_sample(piece.slot)?;
            for view in &piece.chain {
                g = view.to_source(&g, true)?;
            }
            total = Some(match total {
                None => g,
                Some(t) => t.add(&g)?,
            });
        }
        let total = total.unwrap_or_else(|| Tensor::zeros(&shape));
        Ok(total
            .reshape(shape.as_slice())?
            .mul_scalar(T::from_f64(self.scale)))
    }

    /// The per-sample gradients of every parameter.
    ///
    /// # Errors
    /// As [`per_sample_grad`](Captured::per_sample_grad).
    pub fn per_sample_grads(&self) -> Result<Vec<Tensor<T>>> {
        (0..self.shapes.len())
            .map(|i| self.per_sample_grad(i))
            .collect()
    }

    /// The squared norms `‖gₙ‖²` of parameter `i`'s per-sample gradients, `[B]`, without
    /// forming them where the op's rule allows (ghost norms; see [`NormMethod`]). A
    /// parameter shared by several ops, other than through disjoint slices, has its
    /// per-sample gradients formed, as the cross terms require.
    ///
    /// # Errors
    /// As [`per_sample_grad`](Captured::per_sample_grad).
    pub fn norms_sq(&self, i: usize, method: NormMethod) -> Result<Vec<f64>> {
        let pieces = &self.pieces[i];
        let scale2 = self.scale * self.scale;
        let disjoint = pieces.len() == 1 || disjoint_slices(pieces);
        if !disjoint {
            let g = self.per_sample_grad(i)?;
            let b = self.batch;
            let flat = g.reshape([b as isize, -1])?.cast::<f64>();
            return Ok(flat.square().sum(&[1], false)?.to_vec());
        }
        let mut total = vec![0.0; self.batch];
        for piece in pieces {
            let part = self.rules[piece.rule].norms_sq(piece.slot, method)?;
            total
                .iter_mut()
                .zip(part)
                .for_each(|(t, p)| *t += p * scale2);
        }
        Ok(total)
    }

    /// `Σₙ c[n]·gₙ` for parameter `i`: its gradient with sample `n` weighted by `c[n]`
    /// (DP-SGD's clipped sum), from the activations in one product per op.
    ///
    /// # Errors
    /// [`PrivacyError::Batch`] when `c` does not have one weight per sample.
    pub fn weighted_sum(&self, i: usize, c: &[f64]) -> Result<Tensor<T>> {
        if c.len() != self.batch {
            return Err(PrivacyError::Batch(format!(
                "{} weights for {} samples",
                c.len(),
                self.batch
            )));
        }
        let c: Vec<T> = c.iter().map(|w| T::from_f64(w * self.scale)).collect();
        let mut total: Option<Tensor<T>> = None;
        for piece in &self.pieces[i] {
            let mut g = self.rules[piece.rule].weighted(piece.slot, &c)?;
            for view in &piece.chain {
                g = view.to_source(&g, false)?;
            }
            total = Some(match total {
                None => g,
                Some(t) => t.add(&g)?,
            });
        }
        Ok(total
            .map(|t| t.reshape(self.shapes[i].as_slice()))
            .transpose()?
            .unwrap_or_else(|| Tensor::zeros(&self.shapes[i])))
    }
}

/// Whether the pieces are single narrows of one dimension with disjoint ranges (their
/// gradients occupy disjoint parts of the parameter, so their squared norms add).
fn disjoint_slices(pieces: &[Piece]) -> bool {
    let mut ranges = Vec::new();
    let mut dim0 = None;
    for p in pieces {
        match p.chain.as_slice() {
            [
                View::Narrow {
                    dim, start, length, ..
                },
            ] => {
                if dim0.is_some_and(|d| d != *dim) {
                    return false;
                }
                dim0 = Some(*dim);
                ranges.push((*start, start + length));
            }
            _ => return false,
        }
    }
    ranges.sort_unstable();
    ranges.windows(2).all(|w| w[0].1 <= w[1].0)
}
