//! The fused loss terms layers' losses build on, each with its backward: binary
//! cross-entropy on probabilities and on logits, and the Kullback–Leibler divergence.
//! Each returns the unreduced, per-element terms; strata-nn validates the arguments and
//! applies the reduction.

use strata_tensor::{Element, IndexTensor, Tensor};

use crate::ops::decomposed;
use crate::{Result, Var};

/// `t · w` when a weight is given.
fn weighted<T: Element>(t: Tensor<T>, w: &Option<Tensor<T>>) -> strata_tensor::Result<Tensor<T>> {
    match w {
        Some(w) => t.mul(w),
        None => Ok(t),
    }
}

impl<T: Element> Var<T> {
    /// The terms `-w·(y·log x + (1 - y)·log(1 - x))` of `F.binary_cross_entropy` for
    /// probabilities `self` and targets `target` (same shape; `weight` broadcasts), the
    /// logarithms clamped at -100 as PyTorch does.
    ///
    /// # Errors
    /// When the shapes do not fit.
    pub fn binary_cross_entropy_terms(
        &self,
        target: &Var<T>,
        weight: Option<&Tensor<T>>,
    ) -> Result<Var<T>> {
        let (x, y) = (self.value(), target.value());
        let floor = T::from_f64(-100.0);
        let log_x = x.log().maximum_scalar(floor);
        let log_1mx = x.rsub_scalar(T::one()).log().maximum_scalar(floor);
        let w = weight
            .map(|w| w.broadcast_to(x.shape()))
            .transpose()?
            .map(|w| w.contiguous());
        // -(y·log x + (1 - y)·log(1 - x)) = -(log(1 - x) + y·(log x - log(1 - x)))
        let value = weighted(log_1mx.add(&y.mul(&log_x.sub(&log_1mx)?)?)?.neg(), &w)?;
        let (values, w2) = ([Some(x.clone()), Some(y.clone())], w.clone());
        Ok(Var::from_op(
            "binary_cross_entropy",
            value,
            &[self, target],
            move |g, n| {
                Ok(vec![
                    n.grad(0, || {
                        let d = x.zip_with(&y, |x, y| {
                            (x - y) / (x * (T::one() - x)).max(T::from_f64(1e-12))
                        })?;
                        weighted(d.mul(g)?, &w)
                    })?,
                    n.grad(1, || weighted(log_1mx.sub(&log_x)?.mul(g)?, &w))?,
                ])
            },
        )
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &values, |xs| {
                let (x, y) = (xs[0].clone().expect("given"), xs[1].clone().expect("given"));
                let floor = Var::new(Tensor::scalar(T::from_f64(-100.0)));
                let log_x = x.log().maximum(&floor)?;
                let log_1mx = x.rsub_scalar(T::one()).log().maximum(&floor)?;
                let terms = log_1mx.add(&y.mul(&log_x.sub(&log_1mx)?)?)?.neg();
                weighted_var(terms, &w2)
            })
        }))
    }

    /// The terms of `F.binary_cross_entropy_with_logits` for logits `self` and targets
    /// `target`, computed stably as `(1 - y)·x + (1 + (p - 1)·y)·softplus(-x)` with `p`
    /// the positive-class weight (`pos_weight`), times `weight` (both broadcast).
    ///
    /// # Errors
    /// When the shapes do not fit.
    pub fn binary_cross_entropy_with_logits_terms(
        &self,
        target: &Var<T>,
        weight: Option<&Tensor<T>>,
        pos_weight: Option<&Tensor<T>>,
    ) -> Result<Var<T>> {
        let (x, y) = (self.value(), target.value());
        let shape = x.shape().to_vec();
        let w = weight
            .map(|w| w.broadcast_to(&shape))
            .transpose()?
            .map(|w| w.contiguous());
        let p = pos_weight
            .map(|p| p.broadcast_to(&shape))
            .transpose()?
            .map(|p| p.contiguous());
        // softplus(-x) = log1p(e^-|x|) + max(-x, 0), without overflow.
        let sp = x.map(|v| (-v.abs()).exp().ln_1p() + (-v).max(T::zero()));
        // 1 + (p - 1)·y
        let lw = match &p {
            Some(p) => p.sub_scalar(T::one()).mul(&y)?.add_scalar(T::one()),
            None => Tensor::ones(&shape),
        };
        let value = weighted(y.rsub_scalar(T::one()).mul(&x)?.add(&lw.mul(&sp)?)?, &w)?;
        let op = "binary_cross_entropy_with_logits";
        let (values, w2, p2) = ([Some(x.clone()), Some(y.clone())], w.clone(), p.clone());
        Ok(Var::from_op(op, value, &[self, target], move |g, n| {
            Ok(vec![
                // ∂/∂x = (1 - y) - lw·σ(-x) = lw·σ(x) - (lw - 1 + y)
                n.grad(0, || {
                    let d = lw
                        .mul(&x.sigmoid())?
                        .sub(&lw.sub_scalar(T::one()).add(&y)?)?;
                    weighted(d.mul(g)?, &w)
                })?,
                // ∂/∂y = -x + (p - 1)·softplus(-x)
                n.grad(1, || {
                    let d = match &p {
                        Some(p) => p.sub_scalar(T::one()).mul(&sp)?.sub(&x)?,
                        None => x.neg(),
                    };
                    weighted(d.mul(g)?, &w)
                })?,
            ])
        })
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &values, |xs| {
                let (x, y) = (xs[0].clone().expect("given"), xs[1].clone().expect("given"));
                // softplus(-x) = max(-x, 0) + log1p(e^-|x|)
                let sp = x.neg().relu().add(&x.abs().neg().exp().log1p())?;
                let lw = match &p2 {
                    Some(p) => y
                        .mul(&Var::new(p.sub_scalar(T::one())))?
                        .add_scalar(T::one()),
                    None => Var::new(Tensor::ones(x.shape())),
                };
                let terms = y.rsub_scalar(T::one()).mul(&x)?.add(&lw.mul(&sp)?)?;
                weighted_var(terms, &w2)
            })
        }))
    }

    /// The terms `target·(log target - self)` of `F.kl_div` for log-probabilities `self`
    /// (0 where the target is 0); with `log_target` the target is given as
    /// log-probabilities: `e^t·(t - self)`.
    ///
    /// # Errors
    /// When the shapes do not fit.
    pub fn kl_div_terms(&self, target: &Var<T>, log_target: bool) -> Result<Var<T>> {
        let (x, t) = (self.value(), target.value());
        let value = if log_target {
            t.exp().mul(&t.sub(&x)?)?
        } else {
            t.zip_with(&x, |t, x| {
                if t == T::zero() {
                    T::zero() - t * x
                } else {
                    t * (t.ln() - x)
                }
            })?
        };
        let values = [Some(x.clone()), Some(t.clone())];
        Ok(Var::from_op("kl_div", value, &[self, target], move |g, n| {
            Ok(vec![
                n.grad(0, || {
                    let d = if log_target { t.exp().neg() } else { t.neg() };
                    d.mul(g)
                })?,
                n.grad(1, || {
                    let d = if log_target {
                        t.exp().mul(&t.sub(&x)?.add_scalar(T::one()))?
                    } else {
                        // xlogy's gradient log t + t/t, which PyTorch evaluates to NaN at
                        // t = 0.
                        t.zip_with(&x, |t, x| {
                            let one = if t == T::zero() { T::nan() } else { T::one() };
                            t.ln() + one - x
                        })?
                    };
                    d.mul(g)
                })?,
            ])
        })
        .double_backward(move |g, inputs, _| {
            decomposed(g, inputs, &values, |xs| {
                let (x, t) = (xs[0].clone().expect("given"), xs[1].clone().expect("given"));
                if log_target {
                    return t.exp().mul(&t.sub(&x)?);
                }
                // xlogy: a zero target gives a zero term (a safe log there keeps NaN out
                // of the graph).
                let zero_t = t.value().eq_scalar(T::zero());
                let one = Var::new(Tensor::scalar(T::one()));
                let safe = Var::where_(&zero_t, &one, &t)?;
                let terms = t.mul(&safe.log().sub(&x)?)?;
                let zero = Var::new(Tensor::scalar(T::zero()));
                Var::where_(&zero_t, &zero.sub(&t.mul(&x)?)?, &terms)
            })
        }))
    }
}

impl<T: Element> Var<T> {
    /// The terms `-w_t·log softmax(self)_t` of `F.cross_entropy` for logits `self` (the
    /// classes along `cdim`, of `C`), class indices `target` (one per position: `self`'s
    /// shape without `cdim`, each in `0..C`) and per-position weights `weight` (the class
    /// weight of the target, 0 where it is ignored) as one op: the backward is one pass
    /// `w·g·(softmax − onehot)` over the saved log-probabilities, instead of a dense
    /// one-hot gradient, a gather's and a product's backward and the log-softmax backward
    /// over them.
    ///
    /// The terms are [`log_softmax`](Var::log_softmax), a gather and a product with the
    /// weight, to the last bit.
    ///
    /// # Errors
    /// When `cdim` is out of range, or `target` and `weight` do not have one value per
    /// position, or a target is out of range.
    pub fn cross_entropy_terms(
        &self,
        cdim: usize,
        target: &IndexTensor,
        weight: &Tensor<T>,
    ) -> Result<Var<T>> {
        let shape = self.shape().to_vec();
        let bad = |msg: String| strata_tensor::TensorError::shape("cross_entropy", msg);
        if cdim >= shape.len() {
            return Err(bad(format!("class dim {cdim} of a {}-d input", shape.len())).into());
        }
        let classes = shape[cdim];
        let mut positions_shape = shape.clone();
        positions_shape.remove(cdim);
        if target.shape() != positions_shape.as_slice()
            || weight.shape() != positions_shape.as_slice()
        {
            return Err(bad(format!(
                "a target and a weight of shape {positions_shape:?} for input {shape:?}, got {:?} and {:?}",
                target.shape(),
                weight.shape()
            ))
            .into());
        }
        let t = target.as_slice().to_vec();
        if let Some(&c) = t.iter().find(|&&c| c < 0 || c as usize >= classes) {
            return Err(bad(format!("target {c} is out of bounds for {classes} classes")).into());
        }
        let (outer, inner) = (
            shape[..cdim].iter().product::<usize>(),
            shape[cdim + 1..].iter().product::<usize>(),
        );
        let logp = self.value().log_softmax(cdim as isize)?;
        let w = weight.contiguous();
        let terms: Vec<T> = {
            let (ls, ws) = (
                logp.as_slice().expect("log_softmax is contiguous"),
                w.as_slice().expect("contiguous"),
            );
            (0..outer * inner)
                .map(|p| {
                    let (o, i) = (p / inner, p % inner);
                    -(ls[(o * classes + t[p] as usize) * inner + i] * ws[p])
                })
                .collect()
        };
        let value = Tensor::from_vec(terms, &positions_shape)?;
        let values = [Some(self.value())];
        let (t2, w2) = (target.clone(), w.clone());
        Ok(self
            .unary_op("cross_entropy", value, move |g| {
                let g = g.contiguous();
                let (gs, ws) = (
                    g.as_slice().expect("contiguous"),
                    w.as_slice().expect("contiguous"),
                );
                // The softmax, in a fresh (unshared) tensor from the buffer cache, scaled
                // in place and its target entries lowered by the scale.
                let mut out = logp.exp();
                let os = out.as_mut_slice();
                for p in 0..outer * inner {
                    let (o, i) = (p / inner, p % inner);
                    let scale = gs[p] * ws[p];
                    let base = o * classes * inner + i;
                    for c in 0..classes {
                        let e = &mut os[base + c * inner];
                        *e = if c == t[p] as usize {
                            scale * (*e - T::one())
                        } else {
                            scale * *e
                        };
                    }
                }
                Ok(out)
            })
            .double_backward(move |g, inputs, _| {
                decomposed(g, inputs, &values, |xs| {
                    let x = xs[0].clone().expect("given");
                    let mut index_shape = t2.shape().to_vec();
                    index_shape.insert(cdim, 1);
                    let index = IndexTensor::from_vec(t2.as_slice().to_vec(), &index_shape)?;
                    Ok(x.log_softmax(cdim as isize)?
                        .gather(cdim as isize, &index)?
                        .reshape(t2.shape())?
                        .mul(&Var::new(w2.clone()))?
                        .neg())
                })
            }))
    }
}

/// [`weighted`] on vars.
fn weighted_var<T: Element>(t: Var<T>, w: &Option<Tensor<T>>) -> Result<Var<T>> {
    match w {
        Some(w) => t.mul(&Var::new(w.clone())),
        None => Ok(t),
    }
}

/// The arguments of a CTC loss besides the log-probabilities, kept by its backward.
#[derive(Clone)]
struct Ctc {
    targets: IndexTensor,
    input_lengths: Vec<usize>,
    target_lengths: Vec<usize>,
    blank: usize,
    zero_infinity: bool,
}

/// A finite stand-in for log 0 in the differentiable recomputation, so that unreachable
/// states give zero gradients instead of the NaN of `-inf - -inf`.
const LOG_ZERO: f64 = -1e30;

impl Ctc {
    /// Sample `b`'s labels.
    fn labels(&self, b: usize) -> &[i64] {
        let len = self.target_lengths[b];
        let all = self.targets.as_slice();
        match *self.targets.shape() {
            [_, width] => &all[b * width..b * width + len],
            _ => {
                let start: usize = self.target_lengths[..b].iter().sum();
                &all[start..start + len]
            }
        }
    }

    /// The per-sample negative log-likelihood recomputed with differentiable ops on
    /// `lp` (`[T, N, C]`): the α recursion over the padded extended targets of the batch,
    /// each sample's α frozen after its last frame. Samples without frames, and those whose
    /// loss `nll` is infinite when `zero_infinity` is set, are constants.
    fn recompute<T: Element>(&self, lp: &Var<T>, nll: &Tensor<T>) -> Result<Var<T>> {
        let (frames, batch) = (lp.shape()[0], lp.shape()[1]);
        let longest = (0..batch)
            .map(|b| self.target_lengths[b])
            .max()
            .unwrap_or(0);
        let states = 2 * longest + 1;
        let blank = self.blank as i64;
        // Extended targets [N, S'] (padded with blanks), the allowed skips, the readout.
        let mut ext = vec![blank; batch * states];
        let mut skip = vec![T::zero(); batch * states];
        let mut ends = vec![0i64; batch * 2];
        let mut two_ends = vec![T::zero(); batch * 2];
        for b in 0..batch {
            let labels = self.labels(b);
            for (i, &l) in labels.iter().enumerate() {
                ext[b * states + 2 * i + 1] = l;
            }
            for s in 2..states {
                let c = ext[b * states + s];
                if c != blank && c != ext[b * states + s - 2] {
                    skip[b * states + s] = T::one();
                }
            }
            let last = 2 * labels.len();
            ends[2 * b] = last as i64;
            ends[2 * b + 1] = last.saturating_sub(1) as i64;
            two_ends[2 * b] = T::one();
            two_ends[2 * b + 1] = T::from_f64(f64::from(u8::from(last > 0)));
        }
        let ext = IndexTensor::from_vec(ext.repeat(frames), &[frames, batch, states])?;
        let emit = lp.gather(2, &ext)?; // [T, N, S']
        let neg = |shape: &[usize]| Var::new(Tensor::full(shape, T::from_f64(LOG_ZERO)));
        let skip = Tensor::from_vec(skip, &[batch, states])?;
        let first_two = Tensor::from_vec(
            (0..batch * states)
                .map(|i| T::from_f64(f64::from(u8::from(i % states < 2))))
                .collect(),
            &[batch, states],
        )?;
        let mut alpha = Var::where_(&first_two, &emit.select(0, 0)?, &neg(&[batch, states]))?;
        for t in 1..frames {
            let shifted = |by: usize| -> Result<Var<T>> {
                if by >= states {
                    return Ok(neg(&[batch, states]));
                }
                Var::cat(&[neg(&[batch, by]), alpha.narrow(1, 0, states - by)?], 1)
            };
            let step = shifted(1)?;
            let jump = Var::where_(&skip, &shifted(2)?, &neg(&[batch, states]))?;
            let next = Var::stack(&[alpha.clone(), step, jump], 2)?
                .logsumexp(&[2], false)?
                .add(&emit.select(0, t as isize)?)?;
            let live = Tensor::from_vec(
                (0..batch)
                    .map(|b| T::from_f64(f64::from(u8::from(t < self.input_lengths[b]))))
                    .collect(),
                &[batch, 1],
            )?;
            alpha = Var::where_(&live, &next, &alpha)?;
        }
        let ends = IndexTensor::from_vec(ends, &[batch, 2])?;
        let two_ends = Tensor::from_vec(two_ends, &[batch, 2])?;
        let finals = alpha.gather(1, &ends)?;
        let finals = Var::where_(
            &two_ends,
            &finals,
            &finals.narrow(1, 0, 1)?.add(&neg(&[batch, 1]))?,
        )?;
        let computed = finals.logsumexp(&[1], false)?.neg();
        let losses = nll.to_vec();
        let constant = Tensor::from_vec(
            (0..batch)
                .map(|b| {
                    let zeroed = self.zero_infinity && losses[b] == T::infinity();
                    T::from_f64(f64::from(u8::from(self.input_lengths[b] == 0 || zeroed)))
                })
                .collect(),
            &[batch],
        )?;
        Var::where_(&constant, &Var::new(nll.clone()), &computed)
    }
}

impl<T: Element> Var<T> {
    /// The CTC negative log-likelihood of each sample (`[N]`), like `F.ctc_loss` with
    /// `reduction='none'`: `self` holds log-probabilities `[T, N, C]` (a `log_softmax`
    /// over classes), `targets` padded rows `[N, S]` or the concatenated labels, sample `b`
    /// aligning its first `target_lengths[b]` labels to its first `input_lengths[b]`
    /// frames. `zero_infinity` turns the infinite loss of an impossible alignment (and its
    /// gradient) into 0. The backward is PyTorch's (see
    /// [`Tensor::ctc_loss_backward`]): exact for the logits of the `log_softmax`. Its
    /// `create_graph` path recomputes the loss with differentiable ops (log 0 as -1e30).
    ///
    /// # Errors
    /// When the shapes, lengths, blank or labels do not fit (see [`Tensor::ctc_loss`]).
    pub fn ctc_loss(
        &self,
        targets: &IndexTensor,
        input_lengths: &[usize],
        target_lengths: &[usize],
        blank: usize,
        zero_infinity: bool,
    ) -> Result<Var<T>> {
        let lp = self.value();
        let nll = lp.ctc_loss(targets, input_lengths, target_lengths, blank)?;
        let value = if zero_infinity {
            nll.map(|v| if v == T::infinity() { T::zero() } else { v })
        } else {
            nll.clone()
        };
        let ctc = Ctc {
            targets: targets.clone(),
            input_lengths: input_lengths.to_vec(),
            target_lengths: target_lengths.to_vec(),
            blank,
            zero_infinity,
        };
        let (ctc2, lp2, nll2) = (ctc.clone(), lp.clone(), nll.clone());
        Ok(Var::from_op("ctc_loss", value, &[self], move |g, _| {
            Ok(vec![Some(lp.ctc_loss_backward(
                &ctc.targets,
                &ctc.input_lengths,
                &ctc.target_lengths,
                ctc.blank,
                &nll,
                g,
                ctc.zero_infinity,
            )?)])
        })
        .double_backward(move |g, inputs, _| {
            let values = [Some(lp2.clone())];
            let mut grads = decomposed(g, inputs, &values, |xs| {
                ctc2.recompute(xs[0].as_ref().expect("given"), &nll2)
            })?;
            // PyTorch's first-order gradient adds e^lp·g over each sample's frames (the
            // part a log_softmax's backward cancels); so does its differentiable form.
            if let (Some(x), Some(grad)) = (&inputs[0], grads[0].take()) {
                let (frames, batch) = (lp2.shape()[0], lp2.shape()[1]);
                let losses = nll2.to_vec();
                let mask = Tensor::from_vec(
                    (0..frames * batch)
                        .map(|i| {
                            let b = i % batch;
                            let zeroed = ctc2.zero_infinity && losses[b] == T::infinity();
                            T::from_f64(f64::from(u8::from(
                                i / batch < ctc2.input_lengths[b] && !zeroed,
                            )))
                        })
                        .collect(),
                    &[frames, batch, 1],
                )?;
                let extra = x
                    .exp()
                    .mul(&g.reshape(&[1, batch, 1][..])?)?
                    .mul(&Var::new(mask))?;
                grads[0] = Some(grad.add(&extra)?);
            }
            Ok(grads)
        }))
    }
}
