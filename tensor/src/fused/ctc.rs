//! Connectionist temporal classification (Graves et al. 2006): the negative log-likelihood
//! of a target sequence under every alignment of it to the frames of an input, by the
//! forward (α) recursion in log space, and its gradient by the backward (β) recursion.
//!
//! Glossary: `T` frames, `N` samples, `C` classes (the blank included); a target of `L`
//! labels is extended to `2L + 1` states, blank–label–blank–…–blank; `α_t(s)` is the log
//! probability of all alignment prefixes of frames `0..=t` that end in state `s`, `β_t(s)`
//! that of all suffixes of frames `t..` that start there (both include frame `t`'s own
//! probability, hence the subtraction in the gradient).

use crate::engine::par;
use crate::{Element, IndexTensor, Result, Tensor, TensorError};

const OP: &str = "ctc_loss";

/// One sample's view of the problem: its frames and labels.
struct Sample<'a> {
    /// Index in the batch.
    b: usize,
    /// Frames used (`input_lengths[b]`).
    frames: usize,
    /// The target labels (`target_lengths[b]` of them).
    labels: &'a [i64],
}

/// The checked problem: shapes, blank, and where each sample's labels are.
struct Plan<'a> {
    frames: usize,
    batch: usize,
    classes: usize,
    blank: usize,
    samples: Vec<Sample<'a>>,
}

impl Sample<'_> {
    /// States of the extended target.
    fn states(&self) -> usize {
        2 * self.labels.len() + 1
    }

    /// The class of extended state `s`: blank at even states, the labels between.
    fn class(&self, s: usize, blank: usize) -> usize {
        if s.is_multiple_of(2) {
            blank
        } else {
            // Checked in `plan`: every label is in 0..C.
            self.labels[s / 2] as usize
        }
    }
}

/// `log(e^a + e^b + e^c)` as PyTorch computes it (the maximum taken out, 0 when all are
/// -inf), so f32 results agree with its kernel.
fn log_sum3<T: Element>(a: T, b: T, c: T) -> T {
    let m = a.max(b).max(c);
    let m = if m == T::neg_infinity() { T::zero() } else { m };
    ((a - m).exp() + (b - m).exp() + (c - m).exp()).ln() + m
}

/// A `frames × states` table of -inf, refused (not aborted) when it cannot be had.
fn table<T: Element>(s: &Sample, states: usize) -> Result<Vec<T>> {
    let too_large = || {
        TensorError::invalid(
            OP,
            format!(
                "sample {}: {} frames × {states} target states do not fit in memory",
                s.b, s.frames
            ),
        )
    };
    let n = s.frames.checked_mul(states).ok_or_else(too_large)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| too_large())?;
    v.resize(n, T::neg_infinity());
    Ok(v)
}

fn plan<'a, T: Element>(
    log_probs: &Tensor<T>,
    targets: &'a IndexTensor,
    input_lengths: &[usize],
    target_lengths: &[usize],
    blank: usize,
) -> Result<Plan<'a>> {
    let &[frames, batch, classes] = log_probs.shape() else {
        return Err(TensorError::shape(
            OP,
            format!(
                "log_probs must be [T, N, C], got shape {:?}",
                log_probs.shape()
            ),
        ));
    };
    if classes == 0 {
        return Err(TensorError::shape(OP, "log_probs has no classes"));
    }
    if blank >= classes {
        return Err(TensorError::invalid(
            OP,
            format!("blank {blank} is not a class of the {classes} in log_probs"),
        ));
    }
    for (what, lengths) in [
        ("input_lengths", input_lengths),
        ("target_lengths", target_lengths),
    ] {
        if lengths.len() != batch {
            return Err(TensorError::shape(
                OP,
                format!(
                    "{what} has {} entries for a batch of {batch}",
                    lengths.len()
                ),
            ));
        }
    }
    if let Some((b, &len)) = input_lengths.iter().enumerate().find(|(_, l)| **l > frames) {
        return Err(TensorError::invalid(
            OP,
            format!("input_lengths[{b}] = {len} exceeds the {frames} frames of log_probs"),
        ));
    }
    let labels = targets.as_slice();
    let mut samples = Vec::with_capacity(batch);
    match *targets.shape() {
        [rows, width] => {
            if rows != batch {
                return Err(TensorError::shape(
                    OP,
                    format!("targets has {rows} rows for a batch of {batch}"),
                ));
            }
            for (b, &len) in target_lengths.iter().enumerate() {
                if len > width {
                    return Err(TensorError::invalid(
                        OP,
                        format!(
                            "target_lengths[{b}] = {len} exceeds the {width} columns of targets"
                        ),
                    ));
                }
                samples.push(Sample {
                    b,
                    frames: input_lengths[b],
                    labels: &labels[b * width..b * width + len],
                });
            }
        }
        [total] => {
            let mut start = 0usize;
            for (b, &len) in target_lengths.iter().enumerate() {
                let end = start.checked_add(len).filter(|&e| e <= total).ok_or_else(|| {
                    TensorError::invalid(
                        OP,
                        format!(
                            "the target lengths add up to more than the {total} concatenated targets"
                        ),
                    )
                })?;
                samples.push(Sample {
                    b,
                    frames: input_lengths[b],
                    labels: &labels[start..end],
                });
                start = end;
            }
        }
        _ => {
            return Err(TensorError::shape(
                OP,
                format!(
                    "targets must be [N, S] (padded) or [sum of target_lengths] (concatenated), got shape {:?}",
                    targets.shape()
                ),
            ));
        }
    }
    for s in &samples {
        if let Some(&l) = s
            .labels
            .iter()
            .find(|&&l| l < 0 || l as usize >= classes || l as usize == blank)
        {
            return Err(TensorError::invalid(
                OP,
                format!(
                    "sample {} has the target label {l}; labels must be classes in 0..{classes} other than the blank {blank}",
                    s.b
                ),
            ));
        }
    }
    Ok(Plan {
        frames,
        batch,
        classes,
        blank,
        samples,
    })
}

impl Plan<'_> {
    /// `log p(t, c)` of sample `b` in the contiguous `[T, N, C]` values.
    fn lp<T: Element>(&self, xs: &[T], b: usize, t: usize, c: usize) -> T {
        xs[(t * self.batch + b) * self.classes + c]
    }

    /// α of one sample, `frames × states`, row-major.
    fn alpha<T: Element>(&self, xs: &[T], s: &Sample) -> Result<Vec<T>> {
        let states = s.states();
        let mut la = table(s, states)?;
        if s.frames == 0 {
            return Ok(la);
        }
        la[0] = self.lp(xs, s.b, 0, self.blank);
        if states > 1 {
            la[1] = self.lp(xs, s.b, 0, s.class(1, self.blank));
        }
        for t in 1..s.frames {
            let (prev, row) = la[(t - 1) * states..(t + 1) * states].split_at_mut(states);
            for (k, out) in row.iter_mut().enumerate() {
                let c = s.class(k, self.blank);
                let stay = prev[k];
                let step = if k >= 1 {
                    prev[k - 1]
                } else {
                    T::neg_infinity()
                };
                let skip = if k >= 2 && c != self.blank && s.class(k - 2, self.blank) != c {
                    prev[k - 2]
                } else {
                    T::neg_infinity()
                };
                *out = log_sum3(stay, step, skip) + self.lp(xs, s.b, t, c);
            }
        }
        Ok(la)
    }

    /// The negative log-likelihood from α: the alignments ending in the last blank or the
    /// last label. No frames: 0 for an empty target, +inf otherwise.
    fn nll<T: Element>(&self, la: &[T], s: &Sample) -> T {
        if s.frames == 0 {
            return if s.labels.is_empty() {
                T::zero()
            } else {
                T::infinity()
            };
        }
        let states = s.states();
        let last = &la[(s.frames - 1) * states..];
        let l1 = last[states - 1];
        let l2 = if states > 1 {
            last[states - 2]
        } else {
            T::neg_infinity()
        };
        -log_sum3(l1, l2, T::neg_infinity())
    }

    /// β of one sample, `frames × states`, row-major.
    fn beta<T: Element>(&self, xs: &[T], s: &Sample) -> Result<Vec<T>> {
        let states = s.states();
        let mut lb = table(s, states)?;
        if s.frames == 0 {
            return Ok(lb);
        }
        let last = (s.frames - 1) * states;
        lb[last + states - 1] = self.lp(xs, s.b, s.frames - 1, self.blank);
        if states > 1 {
            lb[last + states - 2] = self.lp(xs, s.b, s.frames - 1, s.class(states - 2, self.blank));
        }
        for t in (0..s.frames - 1).rev() {
            let (row, next) = lb[t * states..(t + 2) * states].split_at_mut(states);
            for (k, out) in row.iter_mut().enumerate() {
                let c = s.class(k, self.blank);
                let stay = next[k];
                let step = if k + 1 < states {
                    next[k + 1]
                } else {
                    T::neg_infinity()
                };
                let skip = if k + 2 < states && c != self.blank && s.class(k + 2, self.blank) != c {
                    next[k + 2]
                } else {
                    T::neg_infinity()
                };
                *out = log_sum3(stay, step, skip) + self.lp(xs, s.b, t, c);
            }
        }
        Ok(lb)
    }
}

impl<T: Element> Tensor<T> {
    /// The CTC negative log-likelihood of each sample, like PyTorch's `ctc_loss` with
    /// `reduction='none'` (before `zero_infinity`): `self` holds log-probabilities
    /// `[T, N, C]`, `targets` the labels as padded rows `[N, S]` or concatenated
    /// `[Σ target_lengths]`, and sample `b` aligns its first `target_lengths[b]` labels to
    /// its first `input_lengths[b]` frames. An impossible alignment (too few frames) is
    /// `+inf`. Returns `[N]`.
    ///
    /// # Errors
    /// [`TensorError::Shape`] or [`TensorError::Invalid`] when the shapes, lengths, blank or
    /// labels do not fit (a label outside `0..C`, or equal to the blank).
    pub fn ctc_loss(
        &self,
        targets: &IndexTensor,
        input_lengths: &[usize],
        target_lengths: &[usize],
        blank: usize,
    ) -> Result<Tensor<T>> {
        let plan = plan(self, targets, input_lengths, target_lengths, blank)?;
        let x = self.contiguous();
        let xs = x.as_slice().expect("contiguous");
        let nll = par::map(plan.samples.len(), true, |i| {
            let s = &plan.samples[i];
            Ok(plan.nll(&plan.alpha(xs, s)?, s))
        })
        .into_iter()
        .collect::<Result<Vec<T>>>()?;
        Tensor::from_vec(nll, &[plan.batch])
    }

    /// The gradient of [`ctc_loss`](Tensor::ctc_loss) for the per-sample output gradient
    /// `grad` (`[N]`), as PyTorch's CTC backward computes it: for frames within a sample's
    /// length, `(e^lp − Σ_{s: class c} e^{α_t(s) + β_t(s) + nll − lp}) · grad[b]`, 0 beyond
    /// them, and 0 for samples whose loss `nll` is infinite when `zero_infinity` is set.
    /// The `e^lp` term makes this the gradient of the loss with respect to the logits
    /// before a `log_softmax` (to which that softmax's backward then adds nothing); with
    /// respect to the log-probabilities themselves the exact gradient lacks it.
    ///
    /// # Errors
    /// As [`ctc_loss`](Tensor::ctc_loss), and [`TensorError::Shape`] when `nll` or `grad`
    /// is not `[N]`.
    #[allow(clippy::too_many_arguments)]
    pub fn ctc_loss_backward(
        &self,
        targets: &IndexTensor,
        input_lengths: &[usize],
        target_lengths: &[usize],
        blank: usize,
        nll: &Tensor<T>,
        grad: &Tensor<T>,
        zero_infinity: bool,
    ) -> Result<Tensor<T>> {
        let plan = plan(self, targets, input_lengths, target_lengths, blank)?;
        for (what, t) in [("nll", nll), ("grad", grad)] {
            if t.shape() != [plan.batch] {
                return Err(TensorError::shape(
                    "ctc_loss_backward",
                    format!("{what} must be [{}], got shape {:?}", plan.batch, t.shape()),
                ));
            }
        }
        let (nll, grad) = (nll.to_vec(), grad.to_vec());
        let x = self.contiguous();
        let xs = x.as_slice().expect("contiguous");
        let classes = plan.classes;
        // Each sample's gradient over its own frames, `frames × C`; scattered after.
        let rows = par::map(plan.samples.len(), true, |i| {
            let s = &plan.samples[i];
            let (loss, g) = (nll[s.b], grad[s.b]);
            if s.frames == 0 || (zero_infinity && loss == T::infinity()) {
                return Ok(Vec::new());
            }
            let (la, lb) = (plan.alpha(xs, s)?, plan.beta(xs, s)?);
            let states = s.states();
            let mut out = vec![T::zero(); s.frames * classes];
            let mut lcab = vec![T::neg_infinity(); classes];
            for t in 0..s.frames {
                lcab.fill(T::neg_infinity());
                for k in 0..states {
                    let ab = la[t * states + k] + lb[t * states + k];
                    let acc = &mut lcab[s.class(k, plan.blank)];
                    *acc = if *acc == T::neg_infinity() {
                        ab
                    } else {
                        let m = acc.max(ab);
                        ((*acc - m).exp() + (ab - m).exp()).ln() + m
                    };
                }
                for (c, o) in out[t * classes..(t + 1) * classes].iter_mut().enumerate() {
                    let lp = plan.lp(xs, s.b, t, c);
                    *o = (lp.exp() - (lcab[c] + loss - lp).exp()) * g;
                }
            }
            Ok(out)
        })
        .into_iter()
        .collect::<Result<Vec<Vec<T>>>>()?;
        let mut out = vec![T::zero(); plan.frames * plan.batch * classes];
        for (s, row) in plan.samples.iter().zip(&rows) {
            for (t, frame) in row.chunks_exact(classes).enumerate() {
                let at = (t * plan.batch + s.b) * classes;
                out[at..at + classes].copy_from_slice(frame);
            }
        }
        Tensor::from_vec(out, self.shape())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_softmax_rows(v: &[f64], c: usize) -> Vec<f64> {
        v.chunks(c)
            .flat_map(|r| {
                let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z = r.iter().map(|x| (x - m).exp()).sum::<f64>().ln() + m;
                r.iter().map(move |x| x - z).collect::<Vec<_>>()
            })
            .collect()
    }

    /// Brute force over every path of `frames` symbols that collapses to `labels`.
    fn brute_nll(lp: &[f64], frames: usize, classes: usize, labels: &[usize]) -> f64 {
        let mut total = 0.0;
        let mut path = vec![0usize; frames];
        loop {
            let mut collapsed = Vec::new();
            let mut prev = None;
            for &c in &path {
                if c != 0 && Some(c) != prev {
                    collapsed.push(c);
                }
                prev = Some(c);
            }
            if collapsed == labels {
                total += path
                    .iter()
                    .enumerate()
                    .map(|(t, &c)| lp[t * classes + c])
                    .sum::<f64>()
                    .exp();
            }
            // Next path, odometer style.
            let mut i = 0;
            loop {
                if i == frames {
                    return -total.ln();
                }
                path[i] += 1;
                if path[i] < classes {
                    break;
                }
                path[i] = 0;
                i += 1;
            }
        }
    }

    #[test]
    fn likelihood_is_the_sum_over_alignments() {
        let (frames, classes) = (5, 3);
        let raw: Vec<f64> = (0..frames * classes)
            .map(|i| ((i * 37 % 11) as f64 - 5.0) / 3.0)
            .collect();
        let lp = log_softmax_rows(&raw, classes);
        let x = Tensor::from_vec(lp.clone(), &[frames, 1, classes]).unwrap();
        for labels in [vec![], vec![1], vec![1, 2], vec![1, 1], vec![2, 1, 2]] {
            let targets =
                IndexTensor::from_vec(labels.iter().map(|&l| l as i64).collect(), &[labels.len()])
                    .unwrap();
            let got = x
                .ctc_loss(&targets, &[frames], &[labels.len()], 0)
                .unwrap()
                .to_vec()[0];
            let want = brute_nll(&lp, frames, classes, &labels);
            assert!((got - want).abs() < 1e-12, "{labels:?}: {got} vs {want}");
        }
        // Three repeated labels need five frames (a blank between repeats); four cannot.
        let targets = IndexTensor::from_vec(vec![1, 1, 1], &[1, 3]).unwrap();
        let nll = x.ctc_loss(&targets, &[4], &[3], 0).unwrap().to_vec()[0];
        assert_eq!(nll, f64::INFINITY);
        assert!(x.ctc_loss(&targets, &[5], &[3], 0).unwrap().to_vec()[0].is_finite());
        // No frames: an empty target is certain, any other impossible.
        let empty = IndexTensor::from_vec(vec![], &[1, 0]).unwrap();
        assert_eq!(x.ctc_loss(&empty, &[0], &[0], 0).unwrap().to_vec(), [0.0]);
        assert_eq!(
            x.ctc_loss(&targets, &[0], &[1], 0).unwrap().to_vec(),
            [f64::INFINITY]
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        let x = Tensor::<f64>::zeros(&[4, 2, 3]);
        let t = IndexTensor::from_vec(vec![1, 2, 2, 1], &[2, 2]).unwrap();
        let err = |r: Result<Tensor<f64>>| r.unwrap_err().to_string();
        assert!(err(x.ctc_loss(&t, &[4], &[2, 2], 0)).contains("input_lengths has 1 entries"));
        assert!(err(x.ctc_loss(&t, &[5, 4], &[2, 2], 0)).contains("exceeds the 4 frames"));
        assert!(err(x.ctc_loss(&t, &[4, 4], &[3, 2], 0)).contains("exceeds the 2 columns"));
        assert!(err(x.ctc_loss(&t, &[4, 4], &[2, 2], 3)).contains("blank 3"));
        assert!(err(x.ctc_loss(&t, &[4, 4], &[2, 2], 1)).contains("other than the blank"));
        let flat = IndexTensor::from_vec(vec![1, 2, 2], &[3]).unwrap();
        assert!(err(x.ctc_loss(&flat, &[4, 4], &[2, 2], 0)).contains("add up to more"));
        let big = IndexTensor::from_vec(vec![1, 7], &[1, 2]).unwrap();
        let x1 = Tensor::<f64>::zeros(&[4, 1, 3]);
        assert!(err(x1.ctc_loss(&big, &[4], &[2], 0)).contains("label 7"));
        assert!(
            err(Tensor::<f64>::zeros(&[4, 3]).ctc_loss(&big, &[4], &[2], 0)).contains("[T, N, C]")
        );
        let huge = IndexTensor::from_vec(vec![1], &[1]).unwrap();
        assert!(err(x1.ctc_loss(&huge, &[4], &[usize::MAX], 0)).contains("add up to more"));
    }
}
