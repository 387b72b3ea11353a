//! [`Module`]: named parameters and buffers, train/eval mode, state dicts.

use std::path::Path;

use strata_autograd::Var;
use strata_tensor::Element;

use crate::error::StateDictMismatch;
use crate::{NnError, Result, StateDict};

/// What a state entry is: a trainable parameter, or a buffer (state that is saved but not
/// trained, like BatchNorm's running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKind {
    /// A trainable parameter (requires grad).
    Parameter,
    /// A floating-point buffer.
    Buffer,
    /// An integer counter buffer (`num_batches_tracked`), held as a float in strata and
    /// saved as int64 as PyTorch does.
    Counter,
}

/// A neural-network component: it owns named parameters and buffers (as [`Var`]s, shared
/// handles) and knows its train/eval mode.
///
/// The names are PyTorch's state_dict keys, so `state_dict()` of a strata module and of the
/// same PyTorch module list the same keys in the same order, and weights move between them
/// through safetensors files unchanged.
///
/// Implementing `Module` for a model of your own is two short methods:
///
/// ```
/// use strata_nn::{Forward, Linear, Module, Result, StateKind, visit_child};
/// use strata_autograd::Var;
/// use strata_tensor::seeded_rng;
///
/// struct Mlp { fc1: Linear, fc2: Linear }
///
/// impl Module for Mlp {
///     fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
///         visit_child("fc1", &self.fc1, f);
///         visit_child("fc2", &self.fc2, f);
///     }
/// }
///
/// let mut rng = seeded_rng(0);
/// let mlp = Mlp { fc1: Linear::new(4, 8, true, &mut rng), fc2: Linear::new(8, 2, true, &mut rng) };
/// let keys: Vec<String> = mlp.state_dict().keys().map(String::from).collect();
/// assert_eq!(keys, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
/// ```
pub trait Module<T: Element = f32>: Send + Sync {
    /// Calls `f` with the name (relative to this module), the var and the kind of every
    /// parameter and buffer, in PyTorch's registration order.
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind));

    /// Switches train/eval mode (`module.train(mode)`). Layers whose behaviour depends on
    /// it (Dropout, BatchNorm) and containers override this; the default does nothing.
    fn set_training(&mut self, _training: bool) {}

    /// Train mode (`module.train()`).
    fn train(&mut self) {
        self.set_training(true);
    }

    /// Eval mode (`module.eval()`).
    fn eval(&mut self) {
        self.set_training(false);
    }

    /// The parameters with their state-dict names (`module.named_parameters()`).
    fn named_parameters(&self) -> Vec<(String, Var<T>)> {
        let mut out = Vec::new();
        self.visit_state(&mut |name, var, kind| {
            if kind == StateKind::Parameter {
                out.push((name.to_string(), var.clone()));
            }
        });
        out
    }

    /// The parameters (`module.parameters()`), shared handles an optimizer updates.
    fn parameters(&self) -> Vec<Var<T>> {
        self.named_parameters()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// The buffers with their names (`module.named_buffers()`).
    fn named_buffers(&self) -> Vec<(String, Var<T>)> {
        let mut out = Vec::new();
        self.visit_state(&mut |name, var, kind| {
            if kind != StateKind::Parameter {
                out.push((name.to_string(), var.clone()));
            }
        });
        out
    }

    /// The number of parameter elements.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(Var::numel).sum()
    }

    /// Clears every parameter's gradient.
    fn zero_grad(&self) {
        for p in self.parameters() {
            p.zero_grad();
        }
    }

    /// Parameters and buffers by name (`module.state_dict()`); the tensors share storage
    /// with the module until either side changes.
    fn state_dict(&self) -> StateDict<T> {
        let mut sd = StateDict::new();
        self.visit_state(&mut |name, var, kind| sd.insert_kind(name, var.value(), kind));
        sd
    }

    /// Copies the values of `state` into this module's parameters and buffers
    /// (`module.load_state_dict(state, strict)`).
    ///
    /// Shapes must always match, and an integer entry (a counter, as read from an integer
    /// dtype) loads only into a counter buffer, never into a floating-point parameter or
    /// buffer. With `strict`, the keys must match exactly; without it, missing and
    /// unexpected keys are skipped and returned.
    ///
    /// # Errors
    /// [`NnError::StateDict`] listing every missing key, unexpected key (when strict),
    /// shape mismatch and dtype mismatch; nothing is loaded then.
    fn load_state_dict(&self, state: &StateDict<T>, strict: bool) -> Result<StateDictMismatch> {
        let mut report = StateDictMismatch::default();
        let mut targets = Vec::new();
        self.visit_state(&mut |name, var, kind| {
            targets.push((name.to_string(), var.clone(), kind))
        });
        for (name, var, kind) in &targets {
            match state.get(name) {
                None => report.missing.push(name.clone()),
                Some(t) if t.shape() != var.shape() => report.shape_mismatch.push((
                    name.clone(),
                    t.shape().to_vec(),
                    var.shape().to_vec(),
                )),
                Some(_)
                    if state.kind(name) == Some(StateKind::Counter)
                        && *kind != StateKind::Counter =>
                {
                    report.dtype_mismatch.push(name.clone())
                }
                Some(_) => {}
            }
        }
        for key in state.keys() {
            if !targets.iter().any(|(name, _, _)| name == key) {
                report.unexpected.push(key.to_string());
            }
        }
        let fatal = !report.shape_mismatch.is_empty()
            || !report.dtype_mismatch.is_empty()
            || strict && !(report.missing.is_empty() && report.unexpected.is_empty());
        if fatal {
            return Err(NnError::StateDict(report));
        }
        for (name, var, _) in &targets {
            if let Some(t) = state.get(name) {
                var.set_value(t.contiguous())?;
            }
        }
        Ok(report)
    }

    /// Writes the state dict to a safetensors file (`safetensors.torch.save_file(
    /// model.state_dict(), path)`).
    ///
    /// # Errors
    /// [`NnError::Safetensors`] when the file cannot be written.
    fn save_safetensors(&self, path: &Path) -> Result<()> {
        self.state_dict().save_safetensors(path)
    }

    /// Loads a safetensors file written by strata or by PyTorch into this module
    /// (`model.load_state_dict(safetensors.torch.load_file(path), strict)`).
    ///
    /// # Errors
    /// [`NnError::Safetensors`] for an unreadable file, and as
    /// [`load_state_dict`](Module::load_state_dict).
    fn load_safetensors(&self, path: &Path, strict: bool) -> Result<StateDictMismatch> {
        let sd = StateDict::load_safetensors(path)?;
        self.load_state_dict(&sd, strict)
    }
}

/// A module with one input and one output, chainable in a [`Sequential`].
///
/// `Any` is a supertrait so that code holding a `&dyn Forward` (an exporter walking a
/// [`Sequential`]) can recognise the concrete layer by upcasting to `&dyn Any` and
/// downcasting.
pub trait Forward<T: Element = f32>: Module<T> + std::any::Any {
    /// Applies the module.
    ///
    /// # Errors
    /// [`NnError::Input`] when the input's shape does not fit the module, and errors of
    /// the ops inside.
    fn forward(&self, x: &Var<T>) -> Result<Var<T>>;

    /// The layer's type name (`strata_nn::layers::linear::Linear<f32>` and the like), for
    /// messages about a layer known only as a `dyn Forward`.
    fn type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// Visits the state of `child` under `name.` — the building block of
/// [`Module::visit_state`] for models with named submodules.
pub fn visit_child<T: Element>(
    name: &str,
    child: &(impl Module<T> + ?Sized),
    f: &mut dyn FnMut(&str, &Var<T>, StateKind),
) {
    child.visit_state(&mut |key, var, kind| f(&format!("{name}.{key}"), var, kind));
}

/// Modules applied one after another, named `0`, `1`, … as in `nn.Sequential`.
///
/// ```
/// use strata_nn::{Forward, Linear, Module, ReLU, Sequential};
/// use strata_autograd::Var;
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let mut rng = seeded_rng(0);
/// let model = Sequential::<f32>::new()
///     .push(Linear::new(4, 16, true, &mut rng))
///     .push(ReLU)
///     .push(Linear::new(16, 3, true, &mut rng));
/// let y = model.forward(&Var::new(Tensor::zeros(&[8, 4])))?;
/// assert_eq!(y.shape(), &[8, 3]);
/// assert!(model.state_dict().get("2.bias").is_some());
/// # Ok::<(), strata_nn::NnError>(())
/// ```
pub struct Sequential<T: Element = f32> {
    layers: Vec<Box<dyn Forward<T>>>,
}

impl<T: Element> Default for Sequential<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> Sequential<T> {
    /// An empty sequence (the identity).
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// This sequence with `layer` appended.
    pub fn push(mut self, layer: impl Forward<T> + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends a boxed layer.
    pub fn push_boxed(&mut self, layer: Box<dyn Forward<T>>) {
        self.layers.push(layer);
    }

    /// The number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layer at `index`.
    pub fn get(&self, index: usize) -> Option<&dyn Forward<T>> {
        self.layers.get(index).map(|b| b.as_ref())
    }

    /// Runs only the layers in `range` (a piece of the sequence).
    ///
    /// # Errors
    /// [`NnError::Config`](crate::NnError::Config) for a range outside the sequence, and the
    /// layers' errors.
    pub fn forward_range(&self, range: std::ops::Range<usize>, x: &Var<T>) -> Result<Var<T>> {
        let layers = self.layers.get(range.clone()).ok_or_else(|| {
            crate::error::config_error(
                "Sequential",
                format!("layers {range:?} of a sequence of {}", self.layers.len()),
            )
        })?;
        let mut h = x.clone();
        for layer in layers {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
}

/// Runs `model` in `segments` checkpointed pieces, like
/// `torch.utils.checkpoint.checkpoint_sequential`: each piece but the last keeps only its
/// input and recomputes its intermediates during backward (see
/// [`strata_autograd::checkpoint`]); the result and every gradient equal those of
/// `model.forward(x)`, bit for bit, dropout included. The model is shared (`Arc`) because
/// the backward runs it again.
///
/// ```
/// use std::sync::Arc;
/// use strata_autograd::Var;
/// use strata_nn::{Forward, Linear, Module, ReLU, Sequential, checkpoint_sequential};
/// use strata_tensor::{Tensor, seeded_rng};
///
/// let mut rng = seeded_rng(0);
/// let model = Arc::new(
///     Sequential::<f64>::new()
///         .push(Linear::new(4, 8, true, &mut rng))
///         .push(ReLU)
///         .push(Linear::new(8, 2, true, &mut rng)),
/// );
/// let x = Var::new(Tensor::randn(&[3, 4], &mut rng));
/// let y = checkpoint_sequential(&model, 2, &x)?;
/// y.sum_all().backward()?;
/// let checkpointed = model.parameters()[0].grad().unwrap();
/// model.zero_grad();
/// model.forward(&x)?.sum_all().backward()?;
/// assert_eq!(model.parameters()[0].grad().unwrap().to_vec(), checkpointed.to_vec());
/// # Ok::<(), strata_nn::NnError>(())
/// ```
///
/// # Errors
/// [`NnError::Config`](crate::NnError::Config) for zero segments; the layers' errors.
pub fn checkpoint_sequential<T: Element>(
    model: &std::sync::Arc<Sequential<T>>,
    segments: usize,
    x: &Var<T>,
) -> Result<Var<T>> {
    if segments == 0 {
        return Err(crate::error::config_error(
            "checkpoint_sequential",
            "segments must be at least 1",
        ));
    }
    let n = model.len();
    let per = n.div_ceil(segments).max(1);
    let mut h = x.clone();
    let mut start = 0;
    while start < n {
        let end = (start + per).min(n);
        if end == n {
            // The last piece runs plainly: its output is needed for the backward anyway.
            h = model.forward_range(start..end, &h)?;
        } else {
            let m = model.clone();
            let f: strata_autograd::CheckpointFn<T> = std::sync::Arc::new(move |xs| {
                m.forward_range(start..end, &xs[0]).map_err(to_autograd)
            });
            h = strata_autograd::checkpoint(f, &[h])?;
        }
        start = end;
    }
    Ok(h)
}

/// A strata-nn error as the autograd error a checkpointed function returns.
fn to_autograd(e: crate::NnError) -> strata_autograd::AutogradError {
    match e {
        crate::NnError::Autograd(e) => e,
        other => strata_autograd::AutogradError::Invalid {
            op: "checkpoint",
            msg: other.to_string(),
        },
    }
}

impl<T: Element> Module<T> for Sequential<T> {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<T>, StateKind)) {
        for (i, layer) in self.layers.iter().enumerate() {
            visit_child(&i.to_string(), layer.as_ref(), f);
        }
    }

    fn set_training(&mut self, training: bool) {
        for layer in &mut self.layers {
            layer.set_training(training);
        }
    }
}

impl<T: Element> Forward<T> for Sequential<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
}
