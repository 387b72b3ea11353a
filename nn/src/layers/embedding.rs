//! `Embedding`.

use strata_autograd::Var;
use strata_tensor::rand::Rng;
use strata_tensor::{Element, IndexTensor, Tensor};

use crate::error::config_error;
use crate::{Module, Result, StateKind};

/// A lookup table of `num_embeddings` vectors of size `embedding_dim`, like
/// `nn.Embedding(num_embeddings, embedding_dim, padding_idx)`: the weight is initialised
/// standard normal, the `padding_idx` row zero, and that row never receives a gradient.
///
/// Its input is an [`IndexTensor`], so it has its own `forward` rather than [`Forward`](crate::Forward).
///
/// ```
/// use strata_nn::Embedding;
/// use strata_tensor::{IndexTensor, seeded_rng};
///
/// let emb = Embedding::<f32>::new(10, 4, Some(0), &mut seeded_rng(0))?;
/// let idx = IndexTensor::from_vec(vec![0, 3, 3, 9], &[2, 2])?;
/// let y = emb.forward(&idx)?;
/// assert_eq!(y.shape(), &[2, 2, 4]);
/// assert_eq!(y.to_vec()[..4], [0.0; 4]); // the padding row
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct Embedding<T: Element = f32> {
    /// `[num_embeddings, embedding_dim]`.
    pub weight: Var<T>,
    padding_idx: Option<usize>,
}

impl<T: Element> Embedding<T> {
    /// A table initialised from `rng`.
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) when `padding_idx` is out of range.
    pub fn new<R: Rng + ?Sized>(
        num_embeddings: usize,
        embedding_dim: usize,
        padding_idx: Option<usize>,
        rng: &mut R,
    ) -> Result<Self> {
        let mut w = Tensor::randn(&[num_embeddings, embedding_dim], rng);
        if let Some(p) = padding_idx {
            if p >= num_embeddings {
                return Err(config_error(
                    "Embedding",
                    format!("padding_idx {p} must be within num_embeddings ({num_embeddings})"),
                ));
            }
            w.as_mut_slice()[p * embedding_dim..(p + 1) * embedding_dim].fill(T::zero());
        }
        Ok(Embedding {
            weight: Var::parameter(w),
            padding_idx,
        })
    }

    /// The padding index.
    pub fn padding_idx(&self) -> Option<usize> {
        self.padding_idx
    }

    /// The vectors of `indices`: shape `indices.shape() + [embedding_dim]`.
    ///
    /// # Errors
    /// [`NnError::Input`](crate::NnError::Input) for an index out of range.
    pub fn forward(&self, indices: &IndexTensor) -> Result<Var<T>> {
        crate::functional::embedding(indices, &self.weight, self.padding_idx)
    }
}

impl<T: Element> Module<T> for Embedding<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        f("weight", &self.weight, StateKind::Parameter);
    }
}
