//! `EmbeddingBag`: sums, means or maxima of bags of embeddings without materialising the
//! per-index embeddings of each bag as a padded tensor.

use strata_autograd::Var;
use strata_tensor::rand::Rng;
use strata_tensor::{Element, IndexTensor, Tensor};

use crate::error::{config_error, input_error};
use crate::{Module, Result, StateKind};

const LAYER: &str = "EmbeddingBag";

/// How an [`EmbeddingBag`] reduces each bag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BagMode {
    /// The sum (optionally weighted per index).
    Sum,
    /// The mean (PyTorch's default).
    #[default]
    Mean,
    /// The elementwise maximum.
    Max,
}

/// Bags of embeddings reduced to one vector each, like `nn.EmbeddingBag(num_embeddings,
/// embedding_dim, mode, padding_idx=..., include_last_offset=...)`: the weight is standard
/// normal (the `padding_idx` row zero); an index equal to `padding_idx` is left out of its
/// bag (not counted in a mean, no gradient); an empty bag gives zeros.
///
/// ```
/// use strata_nn::{BagMode, EmbeddingBag};
/// use strata_tensor::{IndexTensor, seeded_rng};
///
/// let bag = EmbeddingBag::<f32>::new(10, 3, BagMode::Sum, None, &mut seeded_rng(0))?;
/// let input = IndexTensor::from_vec(vec![1, 2, 4, 5, 4], &[5])?;
/// let offsets = IndexTensor::from_vec(vec![0, 2], &[2])?; // bags [1, 2] and [4, 5, 4]
/// assert_eq!(bag.forward(&input, Some(&offsets), None)?.shape(), &[2, 3]);
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct EmbeddingBag<T: Element = f32> {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Var<T>,
    mode: BagMode,
    padding_idx: Option<usize>,
    /// The offsets end with the total length (one more entry than bags).
    pub include_last_offset: bool,
}

impl<T: Element> EmbeddingBag<T> {
    /// A table initialised from `rng`.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when `padding_idx` is out of range.
    pub fn new<R: Rng + ?Sized>(
        num_embeddings: usize,
        embedding_dim: usize,
        mode: BagMode,
        padding_idx: Option<usize>,
        rng: &mut R,
    ) -> Result<Self> {
        if let Some(p) = padding_idx
            && p >= num_embeddings
        {
            return Err(config_error(
                LAYER,
                format!("padding_idx {p} must be within num_embeddings ({num_embeddings})"),
            ));
        }
        let mut w = Tensor::randn(&[num_embeddings, embedding_dim], rng);
        if let Some(p) = padding_idx {
            let mut v = w.to_vec();
            v[p * embedding_dim..(p + 1) * embedding_dim].fill(T::zero());
            w = Tensor::from_vec(v, &[num_embeddings, embedding_dim])?;
        }
        Ok(EmbeddingBag {
            weight: Var::parameter(w),
            mode,
            padding_idx,
            include_last_offset: false,
        })
    }

    /// How each bag is reduced.
    pub fn mode(&self) -> BagMode {
        self.mode
    }

    /// The index left out of every bag, if any.
    pub fn padding_idx(&self) -> Option<usize> {
        self.padding_idx
    }

    /// The bags' vectors `[B, embedding_dim]`: `input` is `[B, L]` (one bag per row,
    /// `offsets` `None`) or 1-D with `offsets` giving each bag's start (plus the end with
    /// `include_last_offset`). `per_sample_weights` (input-shaped, `Sum` mode only)
    /// scales each embedding.
    ///
    /// # Errors
    /// [`NnError::Input`](crate::NnError::Input) when the ranks, offsets (not starting at
    /// 0, decreasing, beyond the input) or weights do not fit, or an index is out of range.
    pub fn forward(
        &self,
        input: &IndexTensor,
        offsets: Option<&IndexTensor>,
        per_sample_weights: Option<&Var<T>>,
    ) -> Result<Var<T>> {
        let n = input.numel();
        let starts: Vec<usize> = match (input.ndim(), offsets) {
            (2, None) => {
                let (b, l) = (input.shape()[0], input.shape()[1]);
                (0..b).map(|i| i * l).collect()
            }
            (1, Some(o)) if o.ndim() == 1 => {
                let mut v = Vec::with_capacity(o.numel());
                for &x in o.as_slice() {
                    let x = usize::try_from(x)
                        .ok()
                        .filter(|&x| x <= n && v.last().is_none_or(|&p| p <= x))
                        .ok_or_else(|| {
                            input_error(
                                LAYER,
                                format!(
                                    "offsets must be non-decreasing within 0..={n}, got {:?}",
                                    o.as_slice()
                                ),
                            )
                        })?;
                    v.push(x);
                }
                if v.first().is_some_and(|&f| f != 0) {
                    return Err(input_error(LAYER, "the first offset must be 0"));
                }
                if self.include_last_offset {
                    if v.last() != Some(&n) && !v.is_empty() {
                        return Err(input_error(
                            LAYER,
                            format!("with include_last_offset the last offset must be {n}"),
                        ));
                    }
                    v.pop();
                }
                v
            }
            _ => {
                return Err(input_error(
                    LAYER,
                    format!(
                        "expected input [B, L] without offsets or 1-D input with 1-D offsets, got input {:?}",
                        input.shape()
                    ),
                ));
            }
        };
        let bags = starts.len();
        let d = self.weight.shape()[1];
        if let Some(w) = per_sample_weights {
            if self.mode != BagMode::Sum {
                return Err(input_error(
                    LAYER,
                    "per_sample_weights are only supported in Sum mode",
                ));
            }
            if w.shape() != input.shape() {
                return Err(input_error(
                    LAYER,
                    format!(
                        "per_sample_weights {:?} must have the input's shape {:?}",
                        w.shape(),
                        input.shape()
                    ),
                ));
            }
        }
        // Each kept index, its bag, and its position in the input.
        let flat = input.as_slice();
        let mut kept = Vec::with_capacity(n);
        let mut bag_of = Vec::with_capacity(n);
        let mut position = Vec::with_capacity(n);
        for b in 0..bags {
            let end = starts.get(b + 1).copied().unwrap_or(n);
            for (k, &ix) in flat.iter().enumerate().take(end).skip(starts[b]) {
                if self.padding_idx.is_some_and(|p| ix == p as i64) {
                    continue;
                }
                kept.push(ix);
                bag_of.push(b);
                position.push(k);
            }
        }
        let rows = self
            .weight
            .index_select(0, &IndexTensor::from_vec(kept, &[bag_of.len()])?)?;
        let rows = match per_sample_weights {
            Some(w) => {
                let w = w
                    .reshape(&[n][..])?
                    .index_select(0, &IndexTensor::from_indices(&position))?;
                rows.mul(&w.unsqueeze(1)?)?
            }
            None => rows,
        };
        let zeros = || Var::new(Tensor::zeros(&[bags, d]));
        let bag_index = IndexTensor::from_indices(&bag_of);
        Ok(match self.mode {
            BagMode::Sum => zeros().index_add(0, &bag_index, &rows)?,
            BagMode::Mean => {
                let mut counts = vec![T::zero(); bags];
                for &b in &bag_of {
                    counts[b] += T::one();
                }
                let counts: Vec<T> = counts.into_iter().map(|c| c.max(T::one())).collect();
                zeros()
                    .index_add(0, &bag_index, &rows)?
                    .div(&Var::new(Tensor::from_vec(counts, &[bags, 1])?))?
            }
            BagMode::Max => {
                let mut out = Vec::with_capacity(bags);
                let mut at = 0;
                for b in 0..bags {
                    let len = bag_of[at..].iter().take_while(|&&x| x == b).count();
                    out.push(if len == 0 {
                        Var::new(Tensor::zeros(&[d]))
                    } else {
                        rows.narrow(0, at, len)?.amax(&[0], false)?
                    });
                    at += len;
                }
                if out.is_empty() {
                    zeros()
                } else {
                    Var::stack(&out, 0)?
                }
            }
        })
    }
}

impl<T: Element> Module<T> for EmbeddingBag<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        f("weight", &self.weight, StateKind::Parameter);
    }
}
