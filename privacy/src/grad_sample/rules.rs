//! The per-sample gradient rules: how the gradient of a parameter splits into one
//! gradient per sample, computed from the layer's activations and output gradient.
//!
//! Every supported op reduces to one of four shapes of computation, with the batch first:
//!
//! - **Linear** (`y = a·Wᵀ + b` over `R` rows per sample): the gradient of sample `n` is
//!   `Gₙᵀ·Aₙ` (`[out, in]`) and `Σᵣ Gₙ` for the bias. Its squared norm is
//!   `‖gₙ‖²·‖aₙ‖²` for one row, `⟨Aₙ·Aₙᵀ, Gₙ·Gₙᵀ⟩` for several (the "ghost" norm of
//!   Goodfellow 2015 and Li et al. 2022, which never forms `Gₙᵀ·Aₙ`) — or, when
//!   `R² (in + out)` exceeds `R·in·out`, the norm of `Gₙᵀ·Aₙ` itself, formed a chunk of
//!   samples at a time (the "mixed" choice of Bu et al. 2022). Linear layers, the
//!   recurrent kernels (input and hidden products over time), and attention's projections
//!   are all this rule.
//! - **Conv**: the same with `Aₙ` the im2col matrix of sample `n` (`[C/g·kh·kw, L]`) and
//!   `Gₙ` its output gradient `[O/g, L]`, per group.
//! - **Embedding**: the gradient of sample `n` adds its rows of the output gradient at its
//!   indices; its norm adds up rows that share an index first (no `[num, dim]` table).
//! - **Elementwise** (`y = p ⊙ other`, `y = ±p + other`, and layer norm's affine part):
//!   the product of the output gradient and the other operand, summed over every dimension
//!   but the batch along which `p` is broadcast.
//!
//! Each rule answers three questions for each of its parameters: the per-sample gradients
//! (`[B, *shape]`), their squared norms (`[B]`, as cheaply as the rule allows), and the
//! sum `Σₙ cₙ·gₙ` for per-sample weights `c` (DP-SGD's clipped sum, computed from the
//! same activations in one product — "book-keeping", Bu et al. 2023 — instead of a second
//! backward).

use std::sync::{Arc, OnceLock};

use strata_tensor::{Conv2dParams, Element, Tensor};

use crate::Result;

/// The Gram matrices `Gₙ·Gₙᵀ` of a Linear rule's output gradient, computed at most once
/// and shared between rules whose `g` holds the same values (the LSTM's and RNN's input
/// and hidden products have the same gate gradients).
pub(crate) type GramCache<T> = Arc<OnceLock<Tensor<T>>>;

/// Elements of per-sample gradients formed at once when a norm is computed by
/// materialising (bounds the memory of the mixed choice).
const CHUNK_ELEMENTS: usize = 1 << 22;

/// One rule with its prepared operands (batch first, `B` samples).
#[derive(Clone, Debug)]
pub(crate) enum Rule<T: Element> {
    /// `a` `[B, R, in]`, `g` `[B, R, out]`; slot 0 the weight `[out, in]`, slot 1 the
    /// bias `[out]`. `gram` caches `g`'s per-sample Grams (shared with other rules of the
    /// same `g`).
    Linear {
        a: Tensor<T>,
        g: Tensor<T>,
        gram: GramCache<T>,
    },
    /// A convolution: `cols` `[B, C·kh·kw, L]` (im2col of `input`), `g` `[B, O, L]`;
    /// slot 0 the weight, slot 1 the bias.
    Conv(Box<ConvRule<T>>),
    /// `indices` `[B, R]` (rows at `padding` get nothing), `g` `[B, R, D]`, the table has
    /// `num` rows; slot 0 the weight.
    Embedding {
        indices: Vec<usize>,
        padding: Option<usize>,
        num: usize,
        g: Tensor<T>,
    },
    /// `prod` `[B, *rest]` summed over the dims where `aligned` is 1 gives the gradient of
    /// a parameter of shape `pshape` (`aligned` is `pshape` right-aligned to `rest`).
    Elementwise {
        prod: Tensor<T>,
        aligned: Vec<usize>,
        pshape: Vec<usize>,
    },
}

/// The operands of a convolution rule.
#[derive(Clone, Debug)]
pub(crate) struct ConvRule<T: Element> {
    /// `[B, C·kh·kw, L]`.
    pub cols: Tensor<T>,
    /// `[B, O, L]`.
    pub g: Tensor<T>,
    /// The 4-d input and output gradient, for the clipped sum through the conv kernel.
    pub input: Tensor<T>,
    pub grad4: Tensor<T>,
    /// The settings (2-d; a 1-d convolution runs as a 2-d one of height 1).
    pub params: Conv2dParams,
    /// The weight's shape as the kernel sees it (`[O, C/g, kh, kw]`).
    pub weight4: [usize; 4],
    /// The weight's own shape (3-d for a 1-d convolution).
    pub weight_shape: Vec<usize>,
}

/// How a per-sample norm is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormMethod {
    /// The cheaper of the ghost norm and the materialised one, layer by layer.
    Auto,
    /// Always the ghost norm where the rule has one.
    Ghost,
    /// Always from the materialised per-sample gradients.
    Materialize,
}

fn batch_of<T: Element>(t: &Tensor<T>) -> usize {
    t.shape().first().copied().unwrap_or(0)
}

/// `Σ` over every dim but the first, per sample, in f64.
fn per_sample_sum_sq<T: Element>(t: &Tensor<T>) -> Vec<f64> {
    let b = batch_of(t);
    let t = t.contiguous();
    let data = t.as_slice().expect("contiguous");
    let per = data.len() / b.max(1);
    (0..b)
        .map(|n| {
            data[n * per..(n + 1) * per]
                .iter()
                .map(|v| {
                    let v = Element::to_f64(*v);
                    v * v
                })
                .sum()
        })
        .collect()
}

/// `Σ` over every dim but the first of `x ⊙ y` (same shapes), per sample, in f64.
fn per_sample_dot<T: Element>(x: &Tensor<T>, y: &Tensor<T>) -> Vec<f64> {
    let b = batch_of(x);
    let (x, y) = (x.contiguous(), y.contiguous());
    let (xs, ys) = (
        x.as_slice().expect("contiguous"),
        y.as_slice().expect("contiguous"),
    );
    let per = xs.len() / b.max(1);
    (0..b)
        .map(|n| {
            xs[n * per..(n + 1) * per]
                .iter()
                .zip(&ys[n * per..(n + 1) * per])
                .map(|(a, b)| Element::to_f64(*a) * Element::to_f64(*b))
                .sum()
        })
        .collect()
}

/// `t` with sample `n` scaled by `c[n]`.
fn scale_samples<T: Element>(t: &Tensor<T>, c: &[T]) -> Result<Tensor<T>> {
    let mut shape = vec![1; t.ndim()];
    shape[0] = c.len();
    let c = Tensor::from_vec(c.to_vec(), &shape)?;
    Ok(t.mul(&c)?)
}

/// The ghost norm `⟨A·Aᵀ, G·Gᵀ⟩` per sample for `a` `[B, R, p]`, `g` `[B, R, q]`, with
/// `G·Gᵀ` from (or into) `gram`.
fn ghost_gram<T: Element>(a: &Tensor<T>, g: &Tensor<T>, gram: &GramCache<T>) -> Result<Vec<f64>> {
    let aa = a.matmul(&a.transpose(1, 2)?)?;
    let gg = match gram.get() {
        Some(gg) => gg.clone(),
        None => {
            let gg = g.matmul(&g.transpose(1, 2)?)?;
            // Another thread may have set it meanwhile: the same values.
            let _ = gram.set(gg.clone());
            gg
        }
    };
    Ok(per_sample_dot(&aa, &gg))
}

/// A rule's rows as one `[B·R, ·]` matrix each, in whatever order the memory has them,
/// with `c[n]` multiplying the rows of sample `n` in the narrower of the two: `Σₙ cₙ·Gₙᵀ·Aₙ`
/// is then one product. A batch-first view of time-first data (the recurrent kernels'
/// `[L, N, ·]`) is read in its own order, without a copy.
fn weighted_rows<T: Element>(a: &Tensor<T>, g: &Tensor<T>, c: &[T]) -> Result<Tensor<T>> {
    let (p, q) = (a.shape()[2], g.shape()[2]);
    let (ta, tg) = (a.transpose(0, 1)?, g.transpose(0, 1)?);
    let (a, g, batch_dim) = if !a.is_contiguous() && ta.is_contiguous() && tg.is_contiguous() {
        (ta, tg, 1)
    } else {
        (a.clone(), g.clone(), 0)
    };
    let mut shape = vec![1; 3];
    shape[batch_dim] = c.len();
    let c = Tensor::from_vec(c.to_vec(), &shape)?;
    let (a, g) = if p <= q {
        (a.mul(&c)?, g)
    } else {
        (a, g.mul(&c)?)
    };
    let a2 = a.reshape([-1, p as isize])?;
    let g2 = g.reshape([-1, q as isize])?;
    Ok(g2.t()?.matmul(&a2)?)
}

/// `‖Gₙᵀ·Aₙ‖²` per sample, forming the products a chunk of samples at a time.
fn materialized_norms<T: Element>(a: &Tensor<T>, g: &Tensor<T>) -> Result<Vec<f64>> {
    let (b, p, q) = (batch_of(a), a.shape()[2], g.shape()[2]);
    let chunk = (CHUNK_ELEMENTS / (p * q).max(1)).clamp(1, b.max(1));
    let mut out = Vec::with_capacity(b);
    let mut start = 0;
    while start < b {
        let len = chunk.min(b - start);
        let (ac, gc) = (a.narrow(0, start, len)?, g.narrow(0, start, len)?);
        out.extend(per_sample_sum_sq(&gc.transpose(1, 2)?.matmul(&ac)?));
        start += len;
    }
    Ok(out)
}

/// Whether the ghost norm of a product over `rows` rows of `p`- and `q`-wide operands is
/// the cheaper way (its Grams cost `rows²·(p + q)`, the product `rows·p·q`; a `q`-side
/// Gram shared by `sharing` rules costs each of them its share).
fn ghost_is_cheaper(method: NormMethod, rows: usize, p: usize, q: usize, sharing: usize) -> bool {
    match method {
        NormMethod::Ghost => true,
        NormMethod::Materialize => false,
        NormMethod::Auto => rows * (p + q / sharing.max(1)) <= p * q,
    }
}

impl<T: Element> Rule<T> {
    /// The per-sample gradients of slot `slot`, `[B, *shape]`.
    pub fn per_sample(&self, slot: usize) -> Result<Tensor<T>> {
        match (self, slot) {
            (Rule::Linear { a, g, .. }, 0) => Ok(g.transpose(1, 2)?.matmul(a)?),
            (Rule::Linear { g, .. }, _) => Ok(g.sum(&[1], false)?),
            (Rule::Conv(c), 0) => {
                let groups = c.params.groups;
                let (o, cg, kh, kw) = (c.weight4[0], c.weight4[1], c.weight4[2], c.weight4[3]);
                let (og, kg) = (o / groups, cg * kh * kw);
                let mut parts = Vec::with_capacity(groups);
                for j in 0..groups {
                    let gj = c.g.narrow(1, j * og, og)?;
                    let cj = c.cols.narrow(1, j * kg, kg)?;
                    parts.push(gj.matmul(&cj.transpose(1, 2)?)?);
                }
                let w = Tensor::cat(&parts, 1)?;
                let mut shape = vec![batch_of(&c.g)];
                shape.extend_from_slice(&c.weight_shape);
                Ok(w.reshape(shape.as_slice())?)
            }
            (Rule::Conv(c), _) => Ok(c.g.sum(&[2], false)?),
            (
                Rule::Embedding {
                    indices,
                    padding,
                    num,
                    g,
                },
                _,
            ) => {
                let (b, d) = (batch_of(g), g.shape()[2]);
                let rows = indices.len() / b.max(1);
                let g = g.contiguous();
                let gs = g.as_slice().expect("contiguous");
                let mut out = vec![T::zero(); b * num * d];
                for n in 0..b {
                    for r in 0..rows {
                        let i = indices[n * rows + r];
                        if Some(i) == *padding {
                            continue;
                        }
                        let src = &gs[(n * rows + r) * d..][..d];
                        let dst = &mut out[(n * num + i) * d..][..d];
                        dst.iter_mut().zip(src).for_each(|(o, s)| *o += *s);
                    }
                }
                Ok(Tensor::from_vec(out, &[b, *num, d])?)
            }
            (
                Rule::Elementwise {
                    prod,
                    aligned,
                    pshape,
                },
                _,
            ) => {
                let dims: Vec<isize> = aligned
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| **s == 1)
                    .map(|(k, _)| k as isize + 1)
                    .collect();
                let summed = if dims.is_empty() {
                    prod.clone()
                } else {
                    prod.sum(&dims, true)?
                };
                let mut shape = vec![batch_of(prod)];
                shape.extend_from_slice(pshape);
                Ok(summed.reshape(shape.as_slice())?)
            }
        }
    }

    /// The squared norms `‖gₙ‖²` of slot `slot`, `[B]`.
    pub fn norms_sq(&self, slot: usize, method: NormMethod) -> Result<Vec<f64>> {
        match (self, slot) {
            (Rule::Linear { a, g, gram }, 0) => {
                let (rows, p, q) = (a.shape()[1], a.shape()[2], g.shape()[2]);
                if rows == 1 {
                    // ‖gₙ aₙᵀ‖² = ‖gₙ‖²·‖aₙ‖²: nothing to choose.
                    let (na, ng) = (per_sample_sum_sq(a), per_sample_sum_sq(g));
                    Ok(na.iter().zip(&ng).map(|(x, y)| x * y).collect())
                } else if ghost_is_cheaper(method, rows, p, q, Arc::strong_count(gram)) {
                    ghost_gram(a, g, gram)
                } else {
                    materialized_norms(a, g)
                }
            }
            (Rule::Conv(c), 0) => {
                let groups = c.params.groups;
                let (o, cg, kh, kw) = (c.weight4[0], c.weight4[1], c.weight4[2], c.weight4[3]);
                let (og, kg, l) = (o / groups, cg * kh * kw, c.g.shape()[2]);
                let mut total = vec![0.0; batch_of(&c.g)];
                for j in 0..groups {
                    // Rows are output positions: A = colsᵀ [B, L, kg], G = gᵀ [B, L, og].
                    let gj = c.g.narrow(1, j * og, og)?.transpose(1, 2)?;
                    let cj = c.cols.narrow(1, j * kg, kg)?.transpose(1, 2)?;
                    let part = if ghost_is_cheaper(method, l, kg, og, 1) {
                        ghost_gram(&cj, &gj, &GramCache::default())?
                    } else {
                        materialized_norms(&cj, &gj)?
                    };
                    total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
                }
                Ok(total)
            }
            (
                Rule::Embedding {
                    indices,
                    padding,
                    g,
                    ..
                },
                _,
            ) => {
                // Rows sharing an index add up before they are squared: sort each
                // sample's rows by index and square the sums of runs.
                let (b, d) = (batch_of(g), g.shape()[2]);
                let rows = indices.len() / b.max(1);
                let g = g.contiguous();
                let gs = g.as_slice().expect("contiguous");
                let mut out = Vec::with_capacity(b);
                let mut order: Vec<usize> = Vec::with_capacity(rows);
                let mut acc = vec![0.0f64; d];
                for n in 0..b {
                    let idx = &indices[n * rows..(n + 1) * rows];
                    order.clear();
                    order.extend((0..rows).filter(|&r| Some(idx[r]) != *padding));
                    order.sort_by_key(|&r| idx[r]);
                    let mut total = 0.0;
                    let mut k = 0;
                    while k < order.len() {
                        acc.iter_mut().for_each(|a| *a = 0.0);
                        let i = idx[order[k]];
                        while k < order.len() && idx[order[k]] == i {
                            let src = &gs[(n * rows + order[k]) * d..][..d];
                            acc.iter_mut()
                                .zip(src)
                                .for_each(|(a, s)| *a += Element::to_f64(*s));
                            k += 1;
                        }
                        total += acc.iter().map(|a| a * a).sum::<f64>();
                    }
                    out.push(total);
                }
                Ok(out)
            }
            _ => Ok(per_sample_sum_sq(&self.per_sample(slot)?)),
        }
    }

    /// `Σₙ c[n]·gₙ` for slot `slot`, the parameter's shape.
    pub fn weighted(&self, slot: usize, c: &[T]) -> Result<Tensor<T>> {
        match (self, slot) {
            (Rule::Linear { a, g, .. }, 0) => weighted_rows(a, g, c),
            // Each sample's rows summed first ([B, out]), then weighted.
            (Rule::Linear { g, .. }, _) => {
                Ok(scale_samples(&g.sum(&[1], false)?, c)?.sum(&[0], false)?)
            }
            (Rule::Conv(cr), 0) => {
                let gs = scale_samples(&cr.grad4, c)?;
                let w = Tensor::conv2d_backward_weight(&gs, &cr.input, &cr.weight4, cr.params)?;
                Ok(w.reshape(cr.weight_shape.as_slice())?)
            }
            (Rule::Conv(cr), _) => Ok(scale_samples(&cr.g, c)?.sum(&[0, 2], false)?),
            (
                Rule::Embedding {
                    indices,
                    padding,
                    num,
                    g,
                },
                _,
            ) => {
                let (b, d) = (batch_of(g), g.shape()[2]);
                let rows = indices.len() / b.max(1);
                let g = g.contiguous();
                let gs = g.as_slice().expect("contiguous");
                let mut out = vec![T::zero(); num * d];
                for n in 0..b {
                    for r in 0..rows {
                        let i = indices[n * rows + r];
                        if Some(i) == *padding {
                            continue;
                        }
                        let src = &gs[(n * rows + r) * d..][..d];
                        let dst = &mut out[i * d..][..d];
                        dst.iter_mut().zip(src).for_each(|(o, s)| *o += c[n] * *s);
                    }
                }
                Ok(Tensor::from_vec(out, &[*num, d])?)
            }
            (Rule::Elementwise { pshape, .. }, _) => {
                let per = self.per_sample(slot)?;
                Ok(scale_samples(&per, c)?
                    .sum(&[0], false)?
                    .reshape(pshape.as_slice())?)
            }
        }
    }
}
