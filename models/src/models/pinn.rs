//! A physics-informed network (PINN) for the heat equation, and the `pinn` reference
//! training: a network trained through its own second derivative.
//!
//! The problem: `u_t = ν·u_xx` on `x ∈ [0, 1]`, `t ∈ [0, 1]`, with `u(0, t) = u(1, t) = 0`
//! and `u(x, 0) = sin(πx)`, whose solution is `u = e^(−νπ²t)·sin(πx)`. The network
//! `u(x, t)` (an MLP with tanh) is never shown the solution: its loss is the PDE residual
//! `u_t − ν·u_xx` at random interior points (both derivatives taken with respect to the
//! network's input, the second through the first with `create_graph`), plus the boundary
//! and initial conditions. The analytic solution only measures the result: the relative
//! L2 error on a 51 × 51 grid.

use serde::{Deserialize, Serialize};
use strata_autograd::{GradOptions, Var, grad, no_grad};
use strata_nn::{Forward, Linear, Module, Sequential, StateKind, Tanh};
use strata_optim::Optimizer;
use strata_tensor::rand::rngs::StdRng;
use strata_tensor::rand::{Rng, RngExt};
use strata_tensor::{Tensor, seeded_rng};

use crate::data::bundled::Provenance;
use crate::reference::{
    Defaults, Figures, Length, OptimizerKind, Plan, Prepared, ReferenceModel, Schedule, Task,
    TrainOptions, figures,
};
use crate::train::{self, Batches, EpochEnd, EpochRecord, Evaluation, Learner, StepLoss, Unit};
use crate::{ModelsError, Result};

/// The network `u(x, t)`: `[N, 2] → [N, 1]`, Linear layers with tanh between them (smooth,
/// so its second derivative exists everywhere). State-dict keys are `layers.0.weight`, ….
pub struct PinnNet {
    /// The layers.
    pub layers: Sequential,
}

impl PinnNet {
    /// `depth` hidden layers of `hidden` units.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for a zero size.
    pub fn new<R: Rng + ?Sized>(hidden: usize, depth: usize, rng: &mut R) -> Result<Self> {
        if hidden == 0 || depth == 0 {
            return Err(ModelsError::Config(format!(
                "a PINN needs hidden layers, got {depth} of {hidden} units"
            )));
        }
        let mut layers = Sequential::new().push(Linear::new(2, hidden, true, rng));
        for _ in 1..depth {
            layers = layers
                .push(Tanh)
                .push(Linear::new(hidden, hidden, true, rng));
        }
        layers = layers.push(Tanh).push(Linear::new(hidden, 1, true, rng));
        Ok(PinnNet { layers })
    }
}

impl Module for PinnNet {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var, StateKind)) {
        strata_nn::visit_child("layers", &self.layers, f);
    }
}

impl Forward for PinnNet {
    fn forward(&self, x: &Var) -> strata_nn::Result<Var> {
        self.layers.forward(x)
    }
}

impl strata_onnx::Export for PinnNet {
    fn export(
        &self,
        g: &mut strata_onnx::Graph,
        x: &strata_onnx::Value,
    ) -> strata_onnx::Result<strata_onnx::Value> {
        g.scoped("layers", |g| self.layers.export(g, x))
    }
}

/// The architecture record of `pinn` checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnArchitecture {
    /// Units per hidden layer.
    pub hidden: usize,
    /// Hidden layers.
    pub depth: usize,
}

/// The most collocation points of one kind a problem may have (`--limit` sets the
/// interior ones): ten million points are 80 MB of coordinates, far beyond what a PINN
/// trains on.
pub const MAX_POINTS: usize = 10_000_000;

/// The problem a `pinn` checkpoint solves: the diffusivity and the collocation points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnProblem {
    /// The diffusivity ν of `u_t = ν·u_xx`.
    pub nu: f64,
    /// Interior collocation points.
    pub interior: usize,
    /// Boundary points (half at `x = 0`, half at `x = 1`).
    pub boundary: usize,
    /// Initial points (`t = 0`).
    pub initial: usize,
    /// The seed the points were drawn with.
    pub seed: u64,
}

/// The points the loss is evaluated at, drawn once with a fixed seed.
pub struct Collocation {
    /// The problem.
    pub problem: PinnProblem,
    /// `[N_f, 2]` interior `(x, t)`.
    pub interior: Tensor<f32>,
    /// `[N_b, 2]` boundary `(0 or 1, t)`.
    pub boundary: Tensor<f32>,
    /// `[N_0, 2]` initial `(x, 0)`.
    pub initial: Tensor<f32>,
    /// `[N_0, 1]` `sin(πx)` at the initial points.
    pub initial_u: Tensor<f32>,
    /// `[G, 2]` the evaluation grid, and `[G, 1]` the exact solution on it.
    pub grid: (Tensor<f32>, Tensor<f32>),
}

impl Collocation {
    /// Draws the points of `problem`.
    ///
    /// # Errors
    /// Tensor errors (never for valid sizes).
    pub fn new(problem: PinnProblem) -> Result<Self> {
        let mut rng = seeded_rng(problem.seed);
        let mut draw = |n: usize, x: Option<f32>, t: Option<f32>| -> Result<Tensor<f32>> {
            let mut v = Vec::with_capacity(2 * n);
            for i in 0..n {
                let side = if i % 2 == 0 { 0.0 } else { 1.0 };
                v.push(x.map_or_else(|| rng.random::<f32>(), |_| side));
                v.push(t.unwrap_or_else(|| rng.random::<f32>()));
            }
            Ok(Tensor::from_vec(v, &[n, 2])?)
        };
        let interior = draw(problem.interior, None, None)?;
        let boundary = draw(problem.boundary, Some(0.0), None)?;
        let initial = draw(problem.initial, None, Some(0.0))?;
        let initial_u = Tensor::from_vec(
            initial
                .to_vec()
                .chunks(2)
                .map(|p| (std::f32::consts::PI * p[0]).sin())
                .collect(),
            &[problem.initial, 1],
        )?;
        let side = 51;
        let (mut g, mut exact) = (Vec::new(), Vec::new());
        for i in 0..side {
            for j in 0..side {
                let (x, t) = (i as f64 / (side - 1) as f64, j as f64 / (side - 1) as f64);
                g.extend([x as f32, t as f32]);
                exact.push(solution(problem.nu, x, t) as f32);
            }
        }
        let grid = (
            Tensor::from_vec(g, &[side * side, 2])?,
            Tensor::from_vec(exact, &[side * side, 1])?,
        );
        Ok(Collocation {
            problem,
            interior,
            boundary,
            initial,
            initial_u,
            grid,
        })
    }
}

impl Collocation {
    /// Rank `rank`'s share of the points among `ranks` (every `ranks`-th point of each set,
    /// from the `rank`-th), for data-parallel training: the mean of the ranks' losses is
    /// the loss over all points when the sets divide among the ranks (they do for the
    /// defaults and 2, 4 or 8 ranks), and close to it otherwise. The grid is everyone's.
    ///
    /// # Errors
    /// Tensor errors (never for a rank below `ranks`).
    pub fn shard(&self, rank: usize, ranks: usize) -> Result<Collocation> {
        let rows = |t: &Tensor<f32>| -> Result<Tensor<f32>> {
            let width = t.shape()[1];
            let values = t.to_vec();
            let picked: Vec<f32> = values
                .chunks(width)
                .skip(rank)
                .step_by(ranks.max(1))
                .flatten()
                .copied()
                .collect();
            let n = picked.len() / width;
            Ok(Tensor::from_vec(picked, &[n, width])?)
        };
        let interior = rows(&self.interior)?;
        Ok(Collocation {
            problem: PinnProblem {
                interior: interior.shape()[0],
                ..self.problem.clone()
            },
            interior,
            boundary: rows(&self.boundary)?,
            initial: rows(&self.initial)?,
            initial_u: rows(&self.initial_u)?,
            grid: self.grid.clone(),
        })
    }
}

/// The exact solution `e^(−νπ²t)·sin(πx)`.
pub fn solution(nu: f64, x: f64, t: f64) -> f64 {
    let pi = std::f64::consts::PI;
    (-nu * pi * pi * t).exp() * (pi * x).sin()
}

/// The loss of `net` on the collocation points: `mean(r²) + mean(u_b²) + mean((u_0 −
/// sin πx)²)` with the residual `r = u_t − ν·u_xx`, the derivatives taken with respect to
/// the network's input (`u_xx` through `u_x`, with `create_graph`).
///
/// # Errors
/// Model and autograd errors.
pub fn pinn_loss(net: &dyn Forward, points: &Collocation) -> Result<Var> {
    let with_graph = GradOptions {
        create_graph: true,
        ..GradOptions::default()
    };
    let x = Var::parameter(points.interior.clone());
    let u = net.forward(&x)?;
    let du = first(grad(
        &[u.sum_all()],
        std::slice::from_ref(&x),
        None,
        with_graph,
    )?)?;
    let (u_x, u_t) = (du.narrow(1, 0, 1)?, du.narrow(1, 1, 1)?);
    let d2 = first(grad(&[u_x.sum_all()], &[x], None, with_graph)?)?;
    let u_xx = d2.narrow(1, 0, 1)?;
    let residual = u_t.sub(&u_xx.mul_scalar(points.problem.nu as f32))?;
    let at_boundary = net.forward(&Var::new(points.boundary.clone()))?;
    let at_start = net
        .forward(&Var::new(points.initial.clone()))?
        .sub(&Var::new(points.initial_u.clone()))?;
    Ok(residual
        .square()
        .mean_all()
        .add(&at_boundary.square().mean_all())?
        .add(&at_start.square().mean_all())?)
}

fn first(grads: Vec<Option<Var>>) -> Result<Var> {
    grads
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| ModelsError::Config("the network ignores its input".into()))
}

/// The network against the exact solution on the grid: the mean squared error (`loss`)
/// and the relative L2 error.
fn against_solution(net: &dyn Forward, points: &Collocation) -> Result<(f64, f64)> {
    let (grid, exact) = &points.grid;
    let u = no_grad(|| net.forward(&Var::new(grid.clone())))?.to_vec();
    let exact = exact.to_vec();
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (&p, &e) in u.iter().zip(&exact) {
        err += (p as f64 - e as f64).powi(2);
        norm += (e as f64).powi(2);
    }
    Ok((err / u.len() as f64, (err / norm).sqrt()))
}

/// The figures of a `pinn` training.
#[derive(Serialize)]
struct PinnFigures {
    /// `‖u − u_exact‖ / ‖u_exact‖` on the 51 × 51 grid.
    relative_l2_error: f64,
    /// The mean squared error on the grid.
    grid_mse: f64,
    /// The training loss at the end.
    final_loss: f64,
}

/// How `pinn` trains: full-batch steps on the collocation points, evaluated against the
/// exact solution twenty times along the way.
pub struct PinnTask;

/// The steps of a PINN training, grouped into periods between evaluations.
struct Steps {
    steps: usize,
    per_period: usize,
}

impl Batches for Steps {
    type Batch = ();

    fn epochs(&self) -> usize {
        self.steps.div_ceil(self.per_period)
    }

    fn steps_in(&self, epoch: usize) -> usize {
        self.per_period
            .min(self.steps.saturating_sub((epoch - 1) * self.per_period))
    }

    fn epoch(&mut self, epoch: usize) -> Box<dyn Iterator<Item = Result<()>> + '_> {
        Box::new((0..self.steps_in(epoch)).map(|_| Ok(())))
    }

    fn unit(&self) -> Unit {
        Unit::Step
    }
}

struct Physics<'a> {
    net: &'a mut dyn Forward,
    points: &'a Collocation,
}

impl Learner for Physics<'_> {
    type Batch = ();

    fn module(&mut self) -> &mut dyn Module {
        self.net
    }

    fn loss(&self, _: &()) -> Result<StepLoss> {
        Ok(StepLoss {
            loss: pinn_loss(self.net, self.points)?,
            weight: 1.0,
            items: self.points.problem.interior,
        })
    }

    fn evaluate(&self, _last: bool) -> Result<Evaluation> {
        let (mse, rel) = against_solution(self.net, self.points)?;
        Ok(Evaluation {
            loss: mse,
            accuracy: None,
            r2: Some(1.0 - rel * rel),
        })
    }

    fn describe(&self, r: &EpochRecord) -> String {
        format!("loss {:.3e}, grid MSE {:.3e}", r.train_loss, r.test.loss)
    }

    fn items(&self) -> &'static str {
        "points"
    }
}

impl Task for PinnTask {
    type Network = dyn Forward;
    type Data = Collocation;

    fn limit(&self, _data: &mut Collocation, _n: usize) {}

    fn train_len(&self, data: &Collocation) -> usize {
        data.problem.interior
    }

    fn private_units(&self, _data: &Collocation) -> Result<(usize, &'static str)> {
        Err(ModelsError::Config(
            "pinn cannot train with DP-SGD: it learns from collocation points it generates \
             itself and a physics residual, not from records whose privacy a guarantee \
             would protect"
                .into(),
        ))
    }

    fn fit(
        &mut self,
        net: &mut Self::Network,
        data: &Collocation,
        optimizer: &mut dyn Optimizer,
        plan: &Plan,
        on_epoch: &mut dyn FnMut(&EpochEnd<'_>) -> Result<()>,
    ) -> Result<Vec<EpochRecord>> {
        let Length::Steps(steps) = plan.length else {
            return Err(ModelsError::Config(
                "pinn trains in steps: use --steps".into(),
            ));
        };
        let mut batches = Steps {
            steps,
            per_period: (steps / 20).max(1),
        };
        // Data-parallel, each rank trains on its share of the points.
        let comm = &plan.loop_config.comm;
        let shard;
        let points = if comm.size() > 1 {
            shard = data.shard(comm.rank(), comm.size())?;
            &shard
        } else {
            data
        };
        let mut learner = Physics { net, points };
        train::run_from(
            &mut learner,
            &mut batches,
            optimizer,
            &plan.loop_config,
            plan.start,
            on_epoch,
        )
    }

    fn evaluate(&self, net: &dyn Forward, data: &Collocation) -> Result<Evaluation> {
        let (mse, rel) = against_solution(net, data)?;
        Ok(Evaluation {
            loss: mse,
            accuracy: None,
            r2: Some(1.0 - rel * rel),
        })
    }

    fn metrics(
        &mut self,
        net: &dyn Forward,
        data: &Collocation,
        history: &[EpochRecord],
        _plan: &Plan,
    ) -> Result<Figures> {
        let (grid_mse, relative_l2_error) = against_solution(net, data)?;
        figures(&PinnFigures {
            relative_l2_error,
            grid_mse,
            final_loss: history.last().map_or(f64::NAN, |r| r.train_loss),
        })
    }
}

/// `strata train pinn`: a [`PinnNet`] (3 hidden layers of 32, tanh) solving the heat
/// equation `u_t = 0.1·u_xx` from its residual alone (2000 interior, 200 boundary and 200
/// initial points); 4000 full-batch Adam steps under a one-cycle schedule peaking at 1e-2.
pub struct PinnSpec;

impl ReferenceModel for PinnSpec {
    type Architecture = PinnArchitecture;
    type Extra = PinnProblem;
    type Task = PinnTask;

    const NAME: &'static str = "pinn";
    const ABOUT: &'static str =
        "A physics-informed network solving the heat equation through its second derivative.";

    fn preprocessing(
        &self,
        _dataset: &crate::reference::DatasetRecord,
        _extra: &Self::Extra,
    ) -> Option<crate::reference::Preprocessing> {
        Some(crate::reference::Preprocessing::described(
            "none: the network takes the coordinates (x, t) in [0, 1]² as they are",
        ))
    }

    fn defaults(&self) -> Defaults {
        Defaults {
            length: Length::Steps(4000),
            lr: 1e-2,
            batch_size: None,
            optimizer: OptimizerKind::Adam,
            schedule: Schedule::OneCycle,
            clip_grad_norm: None,
            ema: None,
        }
    }

    fn prepare(&self, opts: &TrainOptions) -> Result<Prepared<Self>> {
        if opts.data.is_some() || opts.dataset.is_some() {
            return Err(ModelsError::Config(
                "pinn draws its own collocation points: it takes no --data or --dataset".into(),
            ));
        }
        let problem = PinnProblem {
            nu: 0.1,
            interior: opts.limit.unwrap_or(2000).max(1),
            boundary: 200,
            initial: 200,
            seed: opts.seed,
        };
        if problem.interior > MAX_POINTS {
            return Err(ModelsError::Config(format!(
                "--limit {} asks for more than the {MAX_POINTS} interior points a PINN takes",
                problem.interior
            )));
        }
        Ok(Prepared {
            data: Collocation::new(problem.clone())?,
            architecture: PinnArchitecture {
                hidden: 32,
                depth: 3,
            },
            extra: problem,
            dataset: Provenance {
                name: "heat equation collocation points".into(),
                source: "drawn uniformly with the run's seed; exact solution e^(-0.1·π²t)·sin(πx)"
                    .into(),
                license: "none (generated)".into(),
            },
        })
    }

    fn build(&self, a: &PinnArchitecture, rng: &mut StdRng) -> Result<Box<dyn Forward>> {
        Ok(Box::new(PinnNet::new(a.hidden, a.depth, rng)?))
    }

    fn export(&self, net: &dyn Forward, _: &PinnArchitecture) -> Result<strata_onnx::Exported> {
        let example = strata_tensor::Tensor::randn(&[1, 2], &mut strata_tensor::seeded_rng(0));
        super::export_net::<PinnNet>(net, example, Self::NAME)
    }

    fn task(&self, _: &PinnArchitecture) -> PinnTask {
        PinnTask
    }

    /// The problem of a record: a finite diffusivity and point counts that a training
    /// could have drawn (a hand-edited count of 10^18 would otherwise be allocated).
    fn check_extra(
        &self,
        _: &PinnArchitecture,
        p: &PinnProblem,
    ) -> std::result::Result<(), String> {
        if !(p.nu.is_finite() && p.nu >= 0.0) {
            return Err(format!(
                "its diffusivity {} is not a finite number >= 0",
                p.nu
            ));
        }
        if [p.interior, p.boundary, p.initial]
            .iter()
            .any(|&n| n == 0 || n > MAX_POINTS)
        {
            return Err(format!(
                "its point counts ({}, {}, {}) must be between 1 and {MAX_POINTS}",
                p.interior, p.boundary, p.initial
            ));
        }
        Ok(())
    }

    fn check_reloaded(
        &self,
        recorded: &PinnProblem,
        reloaded: &PinnProblem,
    ) -> std::result::Result<(), String> {
        if recorded == reloaded {
            Ok(())
        } else {
            Err(format!(
                "the checkpoint solved {recorded:?}, the options now give {reloaded:?}"
            ))
        }
    }
}
