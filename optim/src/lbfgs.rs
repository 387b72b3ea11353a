//! L-BFGS with an optional strong-Wolfe line search, like `torch.optim.LBFGS`: a
//! closure re-evaluates the loss and the gradients, and one `step_with` runs up to
//! `max_iter` quasi-Newton iterations. The arithmetic runs in f64 on the flattened
//! parameters, in PyTorch's order of operations.

use std::collections::BTreeMap;

use strata_autograd::Var;
use strata_tensor::{Element, Tensor};

use crate::error::config;
use crate::optimizer::{ParamGroup, check_lr};
use crate::{OptimError, Optimizer, OptimizerState, Result};

const NAME: &str = "LBFGS";

/// The settings of [`Lbfgs`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LbfgsConfig {
    /// Learning rate, the initial step of each line search (1).
    pub lr: f64,
    /// Iterations per `step_with` (20).
    pub max_iter: usize,
    /// Closure evaluations per `step_with` (`None`: `max_iter · 5/4`).
    pub max_eval: Option<usize>,
    /// Stop when the largest gradient entry is at most this (1e-7).
    pub tolerance_grad: f64,
    /// Stop when the step or the loss change is below this (1e-9).
    pub tolerance_change: f64,
    /// Curvature pairs kept (100).
    pub history_size: usize,
    /// Search the step length for the strong Wolfe conditions (`None`: fixed steps of
    /// `lr`, PyTorch's default).
    pub strong_wolfe: bool,
    /// Maximise the objective instead.
    pub maximize: bool,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        LbfgsConfig {
            lr: 1.0,
            max_iter: 20,
            max_eval: None,
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            history_size: 100,
            strong_wolfe: false,
            maximize: false,
        }
    }
}

/// The search state carried from one `step_with` to the next.
#[derive(Clone, Debug, Default)]
struct History {
    n_iter: usize,
    func_evals: usize,
    d: Vec<f64>,
    t: f64,
    old_dirs: Vec<Vec<f64>>,
    old_stps: Vec<Vec<f64>>,
    ro: Vec<f64>,
    h_diag: f64,
    prev_flat_grad: Option<Vec<f64>>,
    prev_loss: f64,
}

/// L-BFGS, like `torch.optim.LBFGS(params, lr, max_iter, max_eval, tolerance_grad,
/// tolerance_change, history_size, line_search_fn)`. It needs a closure that recomputes
/// the loss (clearing and refilling the gradients), so it runs by
/// [`step_with`](Lbfgs::step_with); [`Optimizer::step`] without one is an error.
///
/// ```
/// use strata_autograd::Var;
/// use strata_optim::{Lbfgs, LbfgsConfig};
/// use strata_tensor::Tensor;
///
/// // The Rosenbrock function from (-1.5, 2): its minimum is at (1, 1).
/// let xy = Var::parameter(Tensor::from_vec(vec![-1.5f64, 2.0], &[2])?);
/// let mut opt = Lbfgs::new(vec![xy.clone()], LbfgsConfig { strong_wolfe: true, max_iter: 100, ..Default::default() })?;
/// let loss = || -> strata_autograd::Result<f64> {
///     xy.zero_grad();
///     let (x, y) = (xy.select(0, 0)?, xy.select(0, 1)?);
///     let f = x.rsub_scalar(1.0).square().add(&y.sub(&x.square())?.square().mul_scalar(100.0))?;
///     f.backward()?;
///     f.item()
/// };
/// opt.step_with(loss)?;
/// let v = xy.to_vec();
/// assert!((v[0] - 1.0).abs() < 1e-4 && (v[1] - 1.0).abs() < 1e-4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Lbfgs<T: Element = f32> {
    params: Vec<Var<T>>,
    cfg: LbfgsConfig,
    state: History,
}

impl<T: Element> Lbfgs<T> {
    /// L-BFGS over `params` (one group, as PyTorch allows).
    ///
    /// # Errors
    /// [`OptimError::Config`] for a negative or NaN lr or tolerance, a `max_iter` or
    /// `history_size` of 0, or no parameters.
    pub fn new(params: Vec<Var<T>>, cfg: LbfgsConfig) -> Result<Self> {
        check_lr(NAME, cfg.lr)?;
        let bad = |v: f64| v.is_nan() || v < 0.0;
        if bad(cfg.tolerance_grad) || bad(cfg.tolerance_change) {
            return Err(config(NAME, "the tolerances must be non-negative numbers"));
        }
        if cfg.max_iter == 0 || cfg.history_size == 0 || cfg.max_eval == Some(0) {
            return Err(config(
                NAME,
                "max_iter, max_eval and history_size must be positive",
            ));
        }
        if params.is_empty() {
            return Err(config(NAME, "optimizer got an empty parameter list"));
        }
        Ok(Lbfgs {
            params,
            cfg,
            state: History {
                h_diag: 1.0,
                ..History::default()
            },
        })
    }

    /// The optimizer over groups: exactly one is accepted, as in PyTorch.
    ///
    /// # Errors
    /// As [`new`](Lbfgs::new), and [`OptimError::Config`] for more than one group.
    pub fn with_groups(groups: Vec<ParamGroup<T>>, cfg: LbfgsConfig) -> Result<Self> {
        let [group] = <[ParamGroup<T>; 1]>::try_from(groups).map_err(|g| {
            config(
                NAME,
                format!("expected exactly one parameter group, got {}", g.len()),
            )
        })?;
        let cfg = LbfgsConfig {
            lr: group.lr.unwrap_or(cfg.lr),
            ..cfg
        };
        Self::new(group.params, cfg)
    }

    fn flat_grad(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for p in &self.params {
            match p.grad() {
                Some(g) => out.extend(g.contiguous().to_vec().iter().map(|&v| Element::to_f64(v))),
                None => out.extend(std::iter::repeat_n(0.0, p.numel())),
            }
        }
        if self.cfg.maximize {
            out.iter_mut().for_each(|v| *v = -*v);
        }
        out
    }

    fn values(&self) -> Vec<Vec<T>> {
        self.params
            .iter()
            .map(|p| p.value().contiguous().to_vec())
            .collect()
    }

    fn set_values(&self, values: &[Vec<T>]) -> Result<()> {
        for (p, v) in self.params.iter().zip(values) {
            p.set_value(Tensor::from_vec(v.clone(), p.shape())?)?;
        }
        Ok(())
    }

    /// `params += t·d`.
    fn add_step(&self, t: f64, d: &[f64]) -> Result<()> {
        let mut offset = 0;
        for p in &self.params {
            let n = p.numel();
            let mut v = p.value().contiguous().to_vec();
            for (x, &di) in v.iter_mut().zip(&d[offset..offset + n]) {
                *x = T::from_f64(Element::to_f64(*x) + t * di);
            }
            p.set_value(Tensor::from_vec(v, p.shape())?)?;
            offset += n;
        }
        Ok(())
    }

    fn evaluate(&self, closure: &mut dyn FnMut() -> Result<f64>) -> Result<(f64, Vec<f64>)> {
        let loss = closure()?;
        let loss = if self.cfg.maximize { -loss } else { loss };
        Ok((loss, self.flat_grad()))
    }

    /// Runs up to `max_iter` iterations, calling `closure` (which must clear the
    /// gradients, compute the loss, run its backward and return the loss) whenever the
    /// loss and gradients are needed. Returns the loss of the first evaluation, as
    /// PyTorch's `step(closure)` does.
    ///
    /// # Errors
    /// Whatever the closure returns; [`OptimError::State`] when the parameters change
    /// shape.
    pub fn step_with<E>(
        &mut self,
        mut closure: impl FnMut() -> std::result::Result<f64, E>,
    ) -> Result<f64>
    where
        OptimError: From<E>,
    {
        let mut call = || -> Result<f64> { Ok(closure()?) };
        let c = self.cfg;
        let max_eval = c.max_eval.unwrap_or(c.max_iter * 5 / 4);
        let orig_loss = call()?;
        let mut loss = if c.maximize { -orig_loss } else { orig_loss };
        let mut current_evals = 1;
        self.state.func_evals += 1;
        let mut flat_grad = self.flat_grad();
        if max_abs(&flat_grad) <= c.tolerance_grad {
            return Ok(orig_loss);
        }
        let mut s = std::mem::take(&mut self.state);
        let mut n_iter = 0;
        while n_iter < c.max_iter {
            n_iter += 1;
            s.n_iter += 1;
            if s.n_iter == 1 {
                s.d = flat_grad.iter().map(|g| -g).collect();
                s.old_dirs.clear();
                s.old_stps.clear();
                s.ro.clear();
                s.h_diag = 1.0;
            } else {
                let prev = s
                    .prev_flat_grad
                    .as_ref()
                    .expect("set after the first iteration");
                let y: Vec<f64> = flat_grad.iter().zip(prev).map(|(g, p)| g - p).collect();
                let step: Vec<f64> = s.d.iter().map(|d| d * s.t).collect();
                let ys = dot(&y, &step);
                if ys > 1e-10 {
                    if s.old_dirs.len() == c.history_size {
                        s.old_dirs.remove(0);
                        s.old_stps.remove(0);
                        s.ro.remove(0);
                    }
                    s.h_diag = ys / dot(&y, &y);
                    s.old_dirs.push(y);
                    s.old_stps.push(step);
                    s.ro.push(1.0 / ys);
                }
                // Two-loop recursion for H·(-g).
                let num_old = s.old_dirs.len();
                let mut al = vec![0.0; num_old];
                let mut q: Vec<f64> = flat_grad.iter().map(|g| -g).collect();
                for i in (0..num_old).rev() {
                    al[i] = dot(&s.old_stps[i], &q) * s.ro[i];
                    axpy(&mut q, -al[i], &s.old_dirs[i]);
                }
                let mut r: Vec<f64> = q.iter().map(|v| v * s.h_diag).collect();
                for (i, &al_i) in al.iter().enumerate() {
                    let be_i = dot(&s.old_dirs[i], &r) * s.ro[i];
                    axpy(&mut r, al_i - be_i, &s.old_stps[i]);
                }
                s.d = r;
            }
            s.prev_flat_grad = Some(flat_grad.clone());
            s.prev_loss = loss;
            s.t = if s.n_iter == 1 {
                (1.0 / flat_grad.iter().map(|g| g.abs()).sum::<f64>()).min(1.0) * c.lr
            } else {
                c.lr
            };
            let gtd = dot(&flat_grad, &s.d);
            if gtd > -c.tolerance_change {
                break;
            }
            let mut ls_func_evals = 0;
            let opt_cond;
            if c.strong_wolfe {
                let x_init = self.values();
                let max_ls = max_eval.saturating_sub(current_evals);
                let mut obj = |t: f64, d: &[f64]| -> Result<(f64, Vec<f64>)> {
                    self.add_step(t, d)?;
                    let out = self.evaluate(&mut call)?;
                    self.set_values(&x_init)?;
                    Ok(out)
                };
                let (f_new, g_new, t, evals) = strong_wolfe(
                    &mut obj,
                    s.t,
                    &s.d,
                    loss,
                    &flat_grad,
                    gtd,
                    c.tolerance_change,
                    max_ls,
                )?;
                loss = f_new;
                flat_grad = g_new;
                s.t = t;
                ls_func_evals = evals;
                self.add_step(s.t, &s.d)?;
                opt_cond = max_abs(&flat_grad) <= c.tolerance_grad;
            } else {
                self.add_step(s.t, &s.d)?;
                if n_iter != c.max_iter {
                    let (l, g) = self.evaluate(&mut call)?;
                    loss = l;
                    flat_grad = g;
                    ls_func_evals = 1;
                    opt_cond = max_abs(&flat_grad) <= c.tolerance_grad;
                } else {
                    opt_cond = false;
                }
            }
            current_evals += ls_func_evals;
            s.func_evals += ls_func_evals;
            if n_iter == c.max_iter || current_evals >= max_eval || opt_cond {
                break;
            }
            if s.d.iter().map(|d| (d * s.t).abs()).fold(0.0, f64::max) <= c.tolerance_change {
                break;
            }
            if (loss - s.prev_loss).abs() < c.tolerance_change {
                break;
            }
        }
        self.state = s;
        Ok(orig_loss)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().map(|x| x.abs()).fold(0.0, f64::max)
}

/// The minimiser of the cubic through `(x1, f1, g1)` and `(x2, f2, g2)` within
/// `bounds` (the interval itself by default); the middle when the cubic has none.
fn cubic_interpolate(
    x1: f64,
    f1: f64,
    g1: f64,
    x2: f64,
    f2: f64,
    g2: f64,
    bounds: Option<(f64, f64)>,
) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        min_pos.max(lo).min(hi)
    } else {
        (lo + hi) / 2.0
    }
}

type Objective<'a> = dyn FnMut(f64, &[f64]) -> Result<(f64, Vec<f64>)> + 'a;

/// The strong-Wolfe line search of PyTorch's LBFGS (after minFunc): a bracketing phase
/// that extrapolates by cubic interpolation, then a zoom phase. Returns the loss and
/// gradient at the chosen step, the step, and the evaluations used.
#[allow(clippy::too_many_arguments)]
fn strong_wolfe(
    obj: &mut Objective<'_>,
    mut t: f64,
    d: &[f64],
    f: f64,
    g: &[f64],
    gtd: f64,
    tolerance_change: f64,
    max_ls: usize,
) -> Result<(f64, Vec<f64>, f64, usize)> {
    let (c1, c2) = (1e-4, 0.9);
    let d_norm = max_abs(d);
    let (mut f_new, mut g_new) = obj(t, d)?;
    let mut evals = 1;
    let mut gtd_new = dot(&g_new, d);
    let (mut t_prev, mut f_prev, mut g_prev, mut gtd_prev) = (0.0, f, g.to_vec(), gtd);
    let mut done = false;
    let mut ls_iter = 0;
    // (step, loss, gradient, directional derivative) at the bracket's ends.
    let mut bracket: Vec<(f64, f64, Vec<f64>, f64)> = Vec::new();
    while ls_iter < max_ls {
        if f_new > f + c1 * t * gtd || (ls_iter > 1 && f_new >= f_prev) {
            bracket = vec![
                (t_prev, f_prev, g_prev.clone(), gtd_prev),
                (t, f_new, g_new.clone(), gtd_new),
            ];
            break;
        }
        if gtd_new.abs() <= -c2 * gtd {
            bracket = vec![(t, f_new, g_new.clone(), gtd_new)];
            done = true;
            break;
        }
        if gtd_new >= 0.0 {
            bracket = vec![
                (t_prev, f_prev, g_prev.clone(), gtd_prev),
                (t, f_new, g_new.clone(), gtd_new),
            ];
            break;
        }
        let (min_step, max_step) = (t + 0.01 * (t - t_prev), t * 10.0);
        let tmp = t;
        t = cubic_interpolate(
            t_prev,
            f_prev,
            gtd_prev,
            t,
            f_new,
            gtd_new,
            Some((min_step, max_step)),
        );
        t_prev = tmp;
        f_prev = f_new;
        g_prev = g_new.clone();
        gtd_prev = gtd_new;
        (f_new, g_new) = obj(t, d)?;
        evals += 1;
        gtd_new = dot(&g_new, d);
        ls_iter += 1;
    }
    if ls_iter == max_ls {
        bracket = vec![
            (0.0, f, g.to_vec(), gtd),
            (t, f_new, g_new.clone(), gtd_new),
        ];
    }
    let order = |b: &[(f64, f64, Vec<f64>, f64)]| {
        if b[0].1 <= b[b.len() - 1].1 {
            (0, 1)
        } else {
            (1, 0)
        }
    };
    let (mut low, mut high) = order(&bracket);
    let mut insuf_progress = false;
    while !done && ls_iter < max_ls {
        if (bracket[1].0 - bracket[0].0).abs() * d_norm < tolerance_change {
            break;
        }
        t = cubic_interpolate(
            bracket[0].0,
            bracket[0].1,
            bracket[0].3,
            bracket[1].0,
            bracket[1].1,
            bracket[1].3,
            None,
        );
        let (bmax, bmin) = (
            bracket[0].0.max(bracket[1].0),
            bracket[0].0.min(bracket[1].0),
        );
        let eps = 0.1 * (bmax - bmin);
        if (bmax - t).min(t - bmin) < eps {
            if insuf_progress || t >= bmax || t <= bmin {
                t = if (t - bmax).abs() < (t - bmin).abs() {
                    bmax - eps
                } else {
                    bmin + eps
                };
                insuf_progress = false;
            } else {
                insuf_progress = true;
            }
        } else {
            insuf_progress = false;
        }
        (f_new, g_new) = obj(t, d)?;
        evals += 1;
        gtd_new = dot(&g_new, d);
        ls_iter += 1;
        if f_new > f + c1 * t * gtd || f_new >= bracket[low].1 {
            bracket[high] = (t, f_new, g_new.clone(), gtd_new);
            (low, high) = order(&bracket);
        } else {
            if gtd_new.abs() <= -c2 * gtd {
                done = true;
            } else if gtd_new * (bracket[high].0 - bracket[low].0) >= 0.0 {
                bracket[high] = bracket[low].clone();
            }
            bracket[low] = (t, f_new, g_new.clone(), gtd_new);
        }
    }
    let (t, f_new, g_new, _) = bracket.swap_remove(low);
    Ok((f_new, g_new, t, evals))
}

impl<T: Element> Optimizer<T> for Lbfgs<T> {
    /// L-BFGS needs its closure: use [`Lbfgs::step_with`].
    fn step(&mut self) -> Result<()> {
        Err(config(
            NAME,
            "L-BFGS re-evaluates the loss during a step: call step_with(closure)",
        ))
    }

    fn zero_grad(&self) {
        for p in &self.params {
            p.zero_grad();
        }
    }

    fn num_groups(&self) -> usize {
        1
    }

    fn group_lr(&self, _group: usize) -> f64 {
        self.cfg.lr
    }

    fn set_group_lr(&mut self, _group: usize, lr: f64) {
        self.cfg.lr = lr;
    }

    fn state_dict(&self) -> OptimizerState<T> {
        let s = &self.state;
        let vector = |v: &[f64]| {
            Tensor::from_vec(v.iter().map(|&x| T::from_f64(x)).collect(), &[v.len()]).expect("1-d")
        };
        let mut tensors = vec![
            ("d".to_string(), vector(&s.d)),
            ("ro".to_string(), vector(&s.ro)),
        ];
        if let Some(p) = &s.prev_flat_grad {
            tensors.push(("prev_flat_grad".into(), vector(p)));
        }
        for (i, (y, st)) in s.old_dirs.iter().zip(&s.old_stps).enumerate() {
            tensors.push((format!("old_dirs.{i}"), vector(y)));
            tensors.push((format!("old_stps.{i}"), vector(st)));
        }
        OptimizerState {
            optimizer: NAME.to_string(),
            group_lrs: vec![self.cfg.lr],
            group_weight_decays: vec![0.0],
            group_sizes: vec![self.params.len()],
            hyper: BTreeMap::from([
                ("n_iter".into(), s.n_iter as f64),
                ("func_evals".into(), s.func_evals as f64),
                ("t".into(), s.t),
                ("h_diag".into(), s.h_diag),
                ("prev_loss".into(), s.prev_loss),
                ("history".into(), s.old_dirs.len() as f64),
            ]),
            // L-BFGS counts iterations for the whole parameter vector (`n_iter`), not
            // steps per parameter.
            steps: BTreeMap::new(),
            tensors,
        }
    }

    fn load_state_dict(&mut self, state: &OptimizerState<T>) -> Result<()> {
        let fail = |msg: String| OptimError::State {
            optimizer: NAME,
            msg,
        };
        // Another optimizer's state (an SGD file given to L-BFGS) is refused whole, as
        // every optimizer refuses one; the learning rate comes back as the others' do.
        if state.optimizer != NAME {
            return Err(fail(format!(
                "the state is of a {} optimizer",
                state.optimizer
            )));
        }
        if state.group_sizes != [self.params.len()] || state.group_lrs.len() != 1 {
            return Err(fail(format!(
                "the state has parameter groups of sizes {:?} and {} learning rates, this \
                 optimizer one group of {}",
                state.group_sizes,
                state.group_lrs.len(),
                self.params.len()
            )));
        }
        let lr = state.group_lrs[0];
        if !(lr >= 0.0 && lr.is_finite()) {
            return Err(fail(format!("its learning rate {lr} is invalid")));
        }
        for key in ["t", "h_diag", "prev_loss"] {
            if let Some(v) = state.hyper.get(key).filter(|v| !v.is_finite()) {
                return Err(fail(format!("{key} is {v}, not a finite number")));
            }
        }
        let total: usize = self.params.iter().map(Var::numel).sum();
        let count = |key: &str| -> Result<usize> {
            let v = state.hyper.get(key).copied().unwrap_or(0.0);
            if v.is_nan() || v < 0.0 || v.fract() != 0.0 || v >= 1e15 {
                return Err(fail(format!("{key} is {v}, not a count")));
            }
            Ok(v as usize)
        };
        let vector = |key: &str, len: Option<usize>| -> Result<Vec<f64>> {
            let t = state
                .get(key)
                .ok_or_else(|| fail(format!("{key} is missing")))?;
            let v: Vec<f64> = t.to_vec().iter().map(|&x| Element::to_f64(x)).collect();
            if len.is_some_and(|n| n != v.len()) || v.iter().any(|x| !x.is_finite()) {
                return Err(fail(format!(
                    "{key} does not fit the {total} parameters or is not finite"
                )));
            }
            Ok(v)
        };
        let history = count("history")?;
        if history > self.cfg.history_size {
            return Err(fail(format!(
                "{history} curvature pairs for a history of {}",
                self.cfg.history_size
            )));
        }
        let n_iter = count("n_iter")?;
        let mut s = History {
            n_iter,
            func_evals: count("func_evals")?,
            t: state.hyper.get("t").copied().unwrap_or(0.0),
            h_diag: state.hyper.get("h_diag").copied().unwrap_or(1.0),
            prev_loss: state.hyper.get("prev_loss").copied().unwrap_or(0.0),
            ..History::default()
        };
        if n_iter > 0 {
            s.d = vector("d", Some(total))?;
            s.prev_flat_grad = Some(vector("prev_flat_grad", Some(total))?);
            s.ro = vector("ro", Some(history))?;
            for i in 0..history {
                s.old_dirs
                    .push(vector(&format!("old_dirs.{i}"), Some(total))?);
                s.old_stps
                    .push(vector(&format!("old_stps.{i}"), Some(total))?);
            }
        }
        self.state = s;
        self.cfg.lr = lr;
        Ok(())
    }
}
