//! The connectionist temporal classification loss (`F.ctc_loss`, `nn.CTCLoss`): the
//! sequence loss of speech and handwriting recognisers, where the alignment of the labels
//! to the input frames is unknown.

use strata_autograd::Var;
use strata_tensor::{Element, IndexTensor, Tensor};

use super::Reduction;
use crate::Result;
use crate::error::input_error;

/// `nn.CTCLoss`, PyTorch's defaults by [`Default`]: blank 0, mean reduction, infinite
/// losses kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CTCLoss {
    /// The class of the blank.
    pub blank: usize,
    /// The reduction; `Mean` divides each sample's loss by its target length first.
    pub reduction: Reduction,
    /// Replace the infinite loss of an impossible alignment (and its gradient) by 0.
    pub zero_infinity: bool,
}

impl CTCLoss {
    /// The loss; see [`ctc_loss`].
    ///
    /// # Errors
    /// As [`ctc_loss`].
    pub fn forward<T: Element>(
        &self,
        log_probs: &Var<T>,
        targets: &IndexTensor,
        input_lengths: &[usize],
        target_lengths: &[usize],
    ) -> Result<Var<T>> {
        ctc_loss(
            log_probs,
            targets,
            input_lengths,
            target_lengths,
            self.blank,
            self.reduction,
            self.zero_infinity,
        )
    }
}

/// The CTC loss (`F.ctc_loss`) of log-probabilities `log_probs` — `[T, N, C]` (frames,
/// batch, classes incl. the blank; usually a `log_softmax` over C) or `[T, C]` for one
/// unbatched sample — against `targets`, padded rows `[N, S]` or the labels of all samples
/// concatenated (`[S]` for an unbatched sample). Sample `b` aligns its first
/// `target_lengths[b]` labels to its first `input_lengths[b]` frames. The reduction `Mean`
/// divides each loss by its target length (at least 1) and averages over the batch, as
/// PyTorch does; `None` gives `[N]` (a 0-d loss unbatched).
///
/// An alignment that is impossible (fewer frames than the target needs) has an infinite
/// loss; `zero_infinity` makes it 0 with a zero gradient. The gradient with respect to
/// `log_probs` is PyTorch's, which is exact for the logits a `log_softmax` turned into
/// `log_probs` (the case CTC is made for): feed it log-softmax outputs.
///
/// ```
/// use strata_autograd::Var;
/// use strata_nn::loss::{Reduction, ctc_loss};
/// use strata_tensor::{IndexTensor, Tensor};
///
/// // 4 frames, 1 sample, classes {blank, a, b}; target "ab".
/// let logits = Var::parameter(Tensor::<f32>::zeros(&[4, 1, 3]));
/// let log_probs = logits.log_softmax(-1)?;
/// let targets = IndexTensor::from_vec(vec![1, 2], &[1, 2])?;
/// let loss = ctc_loss(&log_probs, &targets, &[4], &[2], 0, Reduction::Sum, false)?;
/// // Uniform frames: each of the 3^4 paths has probability 1/81; 15 of them read "ab".
/// assert!((loss.item()? - (81.0f32 / 15.0).ln()).abs() < 1e-5);
/// loss.backward()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`NnError::Input`](crate::NnError::Input) when the ranks do not fit; the tensor errors of
/// [`Tensor::ctc_loss`] for lengths, labels or a blank that do not fit.
pub fn ctc_loss<T: Element>(
    log_probs: &Var<T>,
    targets: &IndexTensor,
    input_lengths: &[usize],
    target_lengths: &[usize],
    blank: usize,
    reduction: Reduction,
    zero_infinity: bool,
) -> Result<Var<T>> {
    const LOSS: &str = "ctc_loss";
    let unbatched = match log_probs.shape().len() {
        3 => false,
        2 => true,
        _ => {
            return Err(input_error(
                LOSS,
                format!(
                    "log_probs must be [T, N, C] or [T, C], got shape {:?}",
                    log_probs.shape()
                ),
            ));
        }
    };
    let losses = if unbatched {
        if targets.ndim() != 1 {
            return Err(input_error(
                LOSS,
                format!(
                    "an unbatched [T, C] input takes 1-D targets, got shape {:?}",
                    targets.shape()
                ),
            ));
        }
        let row = targets.reshape(&[1, targets.numel()])?;
        log_probs.unsqueeze(1)?.ctc_loss(
            &row,
            input_lengths,
            target_lengths,
            blank,
            zero_infinity,
        )?
    } else {
        log_probs.ctc_loss(targets, input_lengths, target_lengths, blank, zero_infinity)?
    };
    Ok(match reduction {
        Reduction::None if unbatched => losses.reshape(&[] as &[usize])?,
        Reduction::None => losses,
        Reduction::Sum => losses.sum_all(),
        Reduction::Mean => {
            let lengths: Vec<T> = target_lengths
                .iter()
                .map(|&l| T::from_f64(l.max(1) as f64))
                .collect();
            let n = lengths.len();
            losses
                .div(&Var::new(Tensor::from_vec(lengths, &[n])?))?
                .mean_all()
        }
    })
}
