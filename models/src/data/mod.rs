//! Data: the [`Dataset`] trait, an in-memory dataset, the [`DataLoader`], splits and
//! standardisation, readers for real formats, and the data sets bundled with the repo.

pub mod bundled;
pub mod readers;
mod scattering;

pub use scattering::Scattering2d;

use std::ops::Range;
use std::sync::Arc;

use strata_distributed::DistributedSampler;
use strata_tensor::rand::seq::SliceRandom;
use strata_tensor::{IndexTensor, Tensor, parallel_map, seeded_rng};

use crate::{ModelsError, Result};

/// Values per task when a dataset's features are transformed on strata's threads.
const PAR_VALUES: usize = 1 << 14;

/// The target of one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Label {
    /// A class index.
    Class(usize),
    /// A regression value.
    Value(f32),
}

/// A collection of samples with fixed-shape features, indexed from 0.
pub trait Dataset: Send + Sync {
    /// The number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of one sample's features (e.g. `[1, 28, 28]`).
    fn sample_shape(&self) -> &[usize];

    /// Writes sample `index`'s features into `out` (its length is the product of
    /// [`sample_shape`](Dataset::sample_shape)) and returns its label.
    fn read(&self, index: usize, out: &mut [f32]) -> Label;
}

/// The labels of an [`InMemoryDataset`].
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    /// Class indices below `classes`.
    Classes {
        /// One index per sample.
        indices: Vec<usize>,
        /// The number of classes.
        classes: usize,
    },
    /// One regression value per sample.
    Values(Vec<f32>),
}

/// Samples held in memory: features `[n, ...sample_shape]` in one buffer and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct InMemoryDataset {
    features: Vec<f32>,
    sample_shape: Vec<usize>,
    labels: Labels,
}

impl InMemoryDataset {
    /// A dataset from row-major features and labels.
    ///
    /// # Errors
    /// [`ModelsError::Config`] when the sizes disagree, a sample has no features, a class
    /// index is out of range, or a feature or target is NaN or infinite (named by sample
    /// and position: a NaN in the data is found here, not reported later as a diverged
    /// training).
    pub fn new(features: Vec<f32>, sample_shape: &[usize], labels: Labels) -> Result<Self> {
        let per = strata_tensor::checked_numel(sample_shape)
            .filter(|&p| p > 0)
            .ok_or_else(|| {
                ModelsError::Config(format!(
                    "samples of shape {sample_shape:?} hold no features (or too many to count)"
                ))
            })?;
        let n = match &labels {
            Labels::Classes { indices, classes } => {
                if let Some(bad) = indices.iter().find(|&&c| c >= *classes) {
                    return Err(ModelsError::Config(format!(
                        "class {bad} is not below {classes}"
                    )));
                }
                indices.len()
            }
            Labels::Values(v) => v.len(),
        };
        if n.checked_mul(per) != Some(features.len()) {
            return Err(ModelsError::Config(format!(
                "{} feature values do not make {n} samples of shape {sample_shape:?}",
                features.len()
            )));
        }
        if let Some(i) = features.iter().position(|v| !v.is_finite()) {
            return Err(ModelsError::Config(format!(
                "sample {}, feature {}: {} is not a finite number",
                i / per,
                i % per,
                features[i]
            )));
        }
        if let Labels::Values(v) = &labels
            && let Some(i) = v.iter().position(|v| !v.is_finite())
        {
            return Err(ModelsError::Config(format!(
                "sample {i}: its target {} is not a finite number",
                v[i]
            )));
        }
        Ok(InMemoryDataset {
            features,
            sample_shape: sample_shape.to_vec(),
            labels,
        })
    }

    /// The labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// The number of classes, for classification data.
    pub fn classes(&self) -> Option<usize> {
        match &self.labels {
            Labels::Classes { classes, .. } => Some(*classes),
            Labels::Values(_) => None,
        }
    }

    /// The features, row-major.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    fn per_sample(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// The samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let per = self.per_sample();
        let features = indices
            .iter()
            .flat_map(|&i| self.features[i * per..(i + 1) * per].iter().copied())
            .collect();
        let labels = match &self.labels {
            Labels::Classes {
                indices: l,
                classes,
            } => Labels::Classes {
                indices: indices.iter().map(|&i| l[i]).collect(),
                classes: *classes,
            },
            Labels::Values(v) => Labels::Values(indices.iter().map(|&i| v[i]).collect()),
        };
        InMemoryDataset {
            features,
            sample_shape: self.sample_shape.clone(),
            labels,
        }
    }

    /// A seeded random split into parts of the given fractions (summing to at most 1; the
    /// last part takes the rounding remainder when they sum to 1), e.g. `[0.8, 0.2]`.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for fractions outside `[0, 1]`, summing above 1, or leaving a
    /// part empty.
    pub fn split(&self, fractions: &[f64], seed: u64) -> Result<Vec<InMemoryDataset>> {
        let total: f64 = fractions.iter().sum();
        if fractions.iter().any(|f| !(0.0..=1.0).contains(f)) || total > 1.0 + 1e-9 {
            return Err(ModelsError::Config(format!(
                "bad split fractions {fractions:?}"
            )));
        }
        let n = self.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut seeded_rng(seed));
        let mut parts = Vec::with_capacity(fractions.len());
        let mut start = 0;
        for (k, f) in fractions.iter().enumerate() {
            let last = k == fractions.len() - 1 && (total - 1.0).abs() < 1e-9;
            let len = if last {
                n - start
            } else {
                (f * n as f64).round() as usize
            };
            let end = (start + len).min(n);
            if end == start {
                return Err(ModelsError::Config(format!(
                    "split {fractions:?} of {n} samples leaves part {k} empty"
                )));
            }
            parts.push(self.subset(&order[start..end]));
            start = end;
        }
        Ok(parts)
    }

    /// Applies `f` to every feature value (e.g. scaling pixels to `[0, 1]`).
    pub fn map_features(&mut self, f: impl Fn(f32) -> f32 + Sync) {
        parallel_map(self.features.chunks_mut(PAR_VALUES).collect(), |chunk| {
            chunk.iter_mut().for_each(|v| *v = f(*v));
        });
    }
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        match &self.labels {
            Labels::Classes { indices, .. } => indices.len(),
            Labels::Values(v) => v.len(),
        }
    }

    fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    fn read(&self, index: usize, out: &mut [f32]) -> Label {
        let per = self.per_sample();
        out.copy_from_slice(&self.features[index * per..(index + 1) * per]);
        match &self.labels {
            Labels::Classes { indices, .. } => Label::Class(indices[index]),
            Labels::Values(v) => Label::Value(v[index]),
        }
    }
}

/// Per-feature standardisation `(x - mean) / std`, fitted on training data and applied to
/// every split, as scikit-learn's `StandardScaler` (population std; constant features are
/// left centred, not divided by zero).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standardizer {
    /// Each feature's mean.
    pub mean: Vec<f32>,
    /// Each feature's standard deviation (1 for constant features).
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Fits the means and deviations of `data`'s features (over all samples).
    pub fn fit(data: &InMemoryDataset) -> Self {
        let per = data.per_sample();
        let n = data.len().max(1) as f64;
        let mut mean = vec![0f64; per];
        for row in data.features.chunks(per) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0f64; per];
        for row in data.features.chunks(per) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let std = var
            .iter()
            .map(|s| {
                let sd = (s / n).sqrt();
                if sd > 1e-12 { sd as f32 } else { 1.0 }
            })
            .collect();
        Standardizer {
            mean: mean.into_iter().map(|m| m as f32).collect(),
            std,
        }
    }

    /// Standardises `data`'s features in place.
    ///
    /// # Errors
    /// [`ModelsError::Config`] when the feature count differs from the fitted one.
    pub fn apply(&self, data: &mut InMemoryDataset) -> Result<()> {
        let per = data.per_sample();
        if per != self.mean.len() {
            return Err(ModelsError::Config(format!(
                "standardizer fitted on {} features, data has {per}",
                self.mean.len()
            )));
        }
        let per = per.max(1);
        let rows = (PAR_VALUES / per).max(1);
        let chunks = data.features.chunks_mut(rows * per).collect();
        parallel_map(chunks, |chunk| {
            for row in chunk.chunks_mut(per) {
                for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                    *v = (*v - m) / s;
                }
            }
        });
        Ok(())
    }
}

/// One batch: features `[B, ...sample_shape]` and the labels.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The features.
    pub x: Tensor<f32>,
    /// The class indices `[B]`, for classification data.
    pub classes: Option<IndexTensor>,
    /// The regression targets `[B]`, for regression data.
    pub values: Option<Tensor<f32>>,
}

impl Batch {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.x.shape()[0]
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which samples of a data set a [`DataLoader`] reads in an epoch, and in which order,
/// like `torch.utils.data.Sampler`.
pub trait Sampler: Send + Sync {
    /// The number of samples per epoch.
    fn len(&self) -> usize;

    /// Whether an epoch reads nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The indices of epoch `epoch`, [`len`](Sampler::len) of them.
    fn indices(&self, epoch: u64) -> Vec<usize>;
}

/// This rank's share of the data set, from strata-distributed: the loader reads, every
/// epoch, the rank's part of the permutation a shuffling loader of the same seed reads
/// whole.
impl Sampler for DistributedSampler {
    fn len(&self) -> usize {
        self.num_samples()
    }

    fn indices(&self, epoch: u64) -> Vec<usize> {
        DistributedSampler::indices(self, epoch)
    }
}

/// A contiguous run of samples, in order, every epoch.
impl Sampler for Range<usize> {
    fn len(&self) -> usize {
        ExactSizeIterator::len(self)
    }

    fn indices(&self, _epoch: u64) -> Vec<usize> {
        self.clone().collect()
    }
}

/// Batches of a dataset, like `torch.utils.data.DataLoader`: a batch size, an optional
/// shuffle seeded per epoch (`seed`, epoch) so that runs repeat exactly, or a [`Sampler`]
/// (a rank's share, with strata-distributed's `DistributedSampler`), `drop_last`, and
/// collation in parallel.
///
/// ```
/// use strata_models::data::{DataLoader, InMemoryDataset, Labels};
///
/// let data = InMemoryDataset::new((0..10).map(|v| v as f32).collect(), &[1], Labels::Values(vec![0.0; 10]))?;
/// let loader = DataLoader::new(&data, 4).shuffle(7).drop_last(true);
/// let batches: Vec<_> = loader.epoch(0).collect();
/// assert_eq!(batches.len(), 2);
/// assert_eq!(batches[0].x.shape(), &[4, 1]);
/// # Ok::<(), strata_models::ModelsError>(())
/// ```
pub struct DataLoader<'a, D: Dataset + ?Sized> {
    dataset: &'a D,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    sampler: Option<Arc<dyn Sampler>>,
    drop_last: bool,
}

impl<'a, D: Dataset + ?Sized> DataLoader<'a, D> {
    /// Batches of `batch_size` (at least 1) in order, the last one possibly smaller.
    pub fn new(dataset: &'a D, batch_size: usize) -> Self {
        DataLoader {
            dataset,
            batch_size: batch_size.max(1),
            shuffle_seed: None,
            sampler: None,
            drop_last: false,
        }
    }

    /// Shuffles every epoch with an RNG seeded from `seed` and the epoch number.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle_seed = Some(seed);
        self
    }

    /// Reads the samples `sampler` gives each epoch, in its order, instead of the whole
    /// data set (and instead of [`shuffle`](DataLoader::shuffle)).
    pub fn sampler(mut self, sampler: Arc<dyn Sampler>) -> Self {
        self.sampler = Some(sampler);
        self
    }

    /// Drops a last batch smaller than the batch size.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }

    /// The number of batches per epoch.
    pub fn num_batches(&self) -> usize {
        let n = self
            .sampler
            .as_ref()
            .map_or_else(|| self.dataset.len(), |s| s.len());
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The batches of epoch `epoch`.
    pub fn epoch(&self, epoch: u64) -> impl Iterator<Item = Batch> + '_ {
        let mut order: Vec<usize> = match &self.sampler {
            Some(s) => s.indices(epoch),
            None => (0..self.dataset.len()).collect(),
        };
        if let (Some(seed), None) = (self.shuffle_seed, &self.sampler) {
            let mixed = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            order.shuffle(&mut seeded_rng(mixed));
        }
        let batches = self.num_batches();
        let bs = self.batch_size;
        (0..batches).map(move |b| {
            let end = ((b + 1) * bs).min(order.len());
            self.collate(&order[b * bs..end])
        })
    }

    /// The samples at `indices`, in that order, as one batch (for samplers that choose
    /// each batch themselves, such as strata-privacy's Poisson sampler; an empty list
    /// gives an empty batch without labels).
    pub fn batch(&self, indices: &[usize]) -> Batch {
        self.collate(indices)
    }

    /// Gathers the samples at `indices` into one batch, in parallel for large samples.
    fn collate(&self, indices: &[usize]) -> Batch {
        let shape = self.dataset.sample_shape();
        let per: usize = shape.iter().product();
        let mut x = vec![0f32; indices.len() * per];
        let mut labels = vec![Label::Value(0.0); indices.len()];
        let fill = |(row, (&i, label)): (&mut [f32], (&usize, &mut Label))| {
            *label = self.dataset.read(i, row);
        };
        let samples = x
            .chunks_mut(per.max(1))
            .zip(indices.iter().zip(labels.iter_mut()));
        if indices.len() * per >= 1 << 16 {
            parallel_map(samples.collect(), fill);
        } else {
            samples.for_each(fill);
        }
        let mut batch_shape = vec![indices.len()];
        batch_shape.extend_from_slice(shape);
        let x = Tensor::from_vec(x, &batch_shape).expect("sizes computed above");
        let n = indices.len();
        let (classes, values) = match labels.first() {
            Some(Label::Class(_)) => {
                let c: Vec<i64> = labels
                    .iter()
                    .map(|l| match l {
                        Label::Class(c) => *c as i64,
                        Label::Value(_) => 0,
                    })
                    .collect();
                (
                    Some(IndexTensor::from_vec(c, &[n]).expect("n labels")),
                    None,
                )
            }
            Some(Label::Value(_)) => {
                let v: Vec<f32> = labels
                    .iter()
                    .map(|l| match l {
                        Label::Value(v) => *v,
                        Label::Class(c) => *c as f32,
                    })
                    .collect();
                (None, Some(Tensor::from_vec(v, &[n]).expect("n values")))
            }
            None => (None, None),
        };
        Batch { x, classes, values }
    }
}
