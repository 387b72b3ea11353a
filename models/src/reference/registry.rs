//! [`Model`]: a handle on one entry of the registry
//! ([`REGISTRY`](crate::models::REGISTRY)), from which the command line takes its model
//! list and help, and checkpoints the model that rebuilds them.

use std::fmt;

use super::flows::Flows;
use super::spec::{Defaults, Length, ReferenceModel};
use crate::models::REGISTRY;
use crate::{ModelsError, Result};

/// A reference model of the registry: its name, its description and defaults, and the
/// trainings, evaluations and predictions of [`reference`](super) for it.
///
/// ```
/// use strata_models::reference::Model;
///
/// let cnn = Model::named("cnn")?;
/// assert_eq!(cnn.name(), "cnn");
/// assert!(Model::all().contains(&cnn));
/// assert!(Model::named("resnet").is_err());
/// # Ok::<(), strata_models::ModelsError>(())
/// ```
#[derive(Clone, Copy)]
pub struct Model(&'static dyn Flows);

impl Model {
    /// The handle of `spec`, for the registry.
    pub const fn new<S: ReferenceModel>(spec: &'static S) -> Model {
        Model(spec)
    }

    /// Every reference model, in the registry's order.
    pub fn all() -> &'static [Model] {
        REGISTRY
    }

    /// The model called `name` on the command line and in checkpoints.
    ///
    /// # Errors
    /// [`ModelsError::Config`] listing the models, for another name.
    pub fn named(name: &str) -> Result<Model> {
        Self::all()
            .iter()
            .copied()
            .find(|m| m.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::all().iter().map(|m| m.name()).collect();
                ModelsError::Config(format!(
                    "unknown model {name:?} (the reference models: {})",
                    names.join(", ")
                ))
            })
    }

    /// The name on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// One line about the model and its data.
    pub fn about(self) -> &'static str {
        self.0.about()
    }

    /// Its training defaults.
    pub fn defaults(self) -> Defaults {
        self.0.defaults()
    }

    /// The bundled data sets `--dataset` takes besides the default one.
    pub fn datasets(self) -> &'static [&'static str] {
        self.0.datasets()
    }

    pub(super) fn flows(self) -> &'static dyn Flows {
        self.0
    }
}

impl PartialEq for Model {
    fn eq(&self, other: &Model) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Model {}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Model({:?})", self.name())
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl clap::ValueEnum for Model {
    fn value_variants<'a>() -> &'a [Self] {
        REGISTRY
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()).help(self.about()))
    }
}

/// The help of `--epochs`, naming the models that train in steps instead.
pub fn epochs_help() -> String {
    let in_steps: Vec<&str> = Model::all()
        .iter()
        .filter(|m| matches!(m.defaults().length, Length::Steps(_)))
        .map(|m| m.name())
        .collect();
    format!(
        "Passes over the training data (default: the model's; not for {}, which train in --steps)",
        in_steps.join(" and ")
    )
}

/// The help of `--dataset`: the bundled data sets each model takes.
pub fn datasets_help() -> String {
    // Models that take the same data sets share one entry: "digits (mlp, cnn)".
    let mut groups: Vec<(&[&str], Vec<&str>)> = Vec::new();
    for m in Model::all().iter().filter(|m| !m.datasets().is_empty()) {
        match groups.iter_mut().find(|(sets, _)| *sets == m.datasets()) {
            Some((_, names)) => names.push(m.name()),
            None => groups.push((m.datasets(), vec![m.name()])),
        }
    }
    let entries: Vec<String> = groups
        .iter()
        .map(|(sets, names)| format!("{} ({})", sets.join(" or "), names.join(", ")))
        .collect();
    format!("Another bundled data set: {}", entries.join("; "))
}

/// The models' defaults, one line each, for the end of `strata train --help`.
pub fn defaults_help() -> String {
    let width = Model::all()
        .iter()
        .map(|m| m.name().len())
        .max()
        .unwrap_or(0);
    let mut text = String::from("Defaults of the models:");
    for m in Model::all() {
        text += &format!("\n  {:width$}  {}", m.name(), m.defaults());
    }
    text
}
