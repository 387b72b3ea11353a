//! Hostile optimizer states and settings: hyper-parameters out of the constructors' range
//! in a loaded state (a hand-edited file), step counts beyond f32's integers, malformed
//! state entries, a schedule stepped past its end, clipping to a NaN norm. Each is a clear
//! error that leaves the optimizer as it was, or the documented result.

use std::collections::BTreeMap;

use proptest::prelude::*;
use strata_autograd::Var;
use strata_optim::schedule::{OneCycleLR, SchedulerState};
use strata_optim::*;
use strata_tensor::Tensor;

fn param() -> Var<f32> {
    Var::parameter(Tensor::from_vec(vec![1.0f32, -2.0, 0.5], &[3]).unwrap())
}

/// One step of `opt` on `p` (gradient 2p), so that it has per-parameter state.
fn one_step(p: &Var<f32>, opt: &mut dyn Optimizer<f32>) {
    opt.zero_grad();
    p.square().sum_all().backward().unwrap();
    opt.step().unwrap();
}

/// Every optimizer, freshly built over `p` and stepped once.
fn optimizers(p: &Var<f32>) -> Vec<Box<dyn Optimizer<f32>>> {
    let mut all: Vec<Box<dyn Optimizer<f32>>> = vec![
        Box::new(
            Sgd::new(
                vec![p.clone()],
                SgdConfig {
                    lr: 0.1,
                    momentum: 0.9,
                    ..SgdConfig::default()
                },
            )
            .unwrap(),
        ),
        Box::new(Adam::new(vec![p.clone()], AdamConfig::default()).unwrap()),
        Box::new(AdamW::new(vec![p.clone()], AdamWConfig::default()).unwrap()),
        Box::new(
            RmsProp::new(
                vec![p.clone()],
                RmsPropConfig {
                    momentum: 0.5,
                    ..RmsPropConfig::default()
                },
            )
            .unwrap(),
        ),
        Box::new(Adagrad::new(vec![p.clone()], AdagradConfig::default()).unwrap()),
        Box::new(Lion::new(vec![p.clone()], LionConfig::default()).unwrap()),
    ];
    for opt in &mut all {
        one_step(p, opt.as_mut());
    }
    all
}

/// Loading `edit`ed state into each optimizer fails with a state error containing
/// `needle`, and leaves the optimizer's own state as it was.
#[track_caller]
fn refused(edit: &dyn Fn(&mut OptimizerState<f32>), needle: &str, which: &[&str]) {
    let p = param();
    for mut opt in optimizers(&p) {
        let before = opt.state_dict();
        if !which.is_empty() && !which.contains(&before.optimizer.as_str()) {
            continue;
        }
        let mut state = before.clone();
        edit(&mut state);
        let err = opt.load_state_dict(&state).unwrap_err();
        assert!(
            matches!(err, OptimError::State { .. }) && err.to_string().contains(needle),
            "{}: {err}",
            before.optimizer
        );
        let after = opt.state_dict();
        assert_eq!(after.hyper, before.hyper, "{}", before.optimizer);
        assert_eq!(after.steps, before.steps);
        assert_eq!(after.group_lrs, before.group_lrs);
    }
}

#[test]
fn loaded_hyper_parameters_meet_the_constructors_rules() {
    let set = |k: &'static str, v: f64| {
        move |s: &mut OptimizerState<f32>| {
            s.hyper.insert(k.to_string(), v);
        }
    };
    refused(
        &set("beta1", 1.5),
        "invalid beta parameter at index 0: 1.5",
        &["Adam", "AdamW", "Lion"],
    );
    refused(
        &set("beta2", f64::NAN),
        "invalid beta parameter at index 1: NaN",
        &["Adam", "Lion"],
    );
    refused(
        &set("eps", -1.0),
        "invalid epsilon value: -1",
        &["Adam", "RMSprop", "Adagrad"],
    );
    refused(
        &set("momentum", -0.5),
        "invalid momentum value: -0.5",
        &["SGD", "RMSprop"],
    );
    refused(
        &set("amsgrad", 0.5),
        "the flag amsgrad is 0.5, not 0 or 1",
        &["Adam"],
    );
    refused(&set("maximize", f64::NAN), "the flag maximize is NaN", &[]);
    refused(
        &|s| {
            s.hyper.insert("nesterov".into(), 1.0);
            s.hyper.insert("dampening".into(), 0.5);
        },
        "Nesterov momentum requires a momentum and zero dampening",
        &["SGD"],
    );
    refused(&set("lr_decay", -1.0), "lr_decay", &["Adagrad"]);
    refused(
        &|s| s.group_lrs[0] = f64::NAN,
        "invalid learning rate: NaN",
        &[],
    );
    refused(
        &|s| s.group_weight_decays[0] = -1.0,
        "invalid weight_decay value: -1",
        &[],
    );
    refused(&|s| s.group_lrs.push(0.1), "2 learning rates", &[]);
}

#[test]
fn loaded_state_entries_are_checked() {
    refused(&|s| s.steps.clear(), "its step count is not", &[]);
    refused(
        &|s| {
            s.steps.insert(0, 0);
        },
        "a step count of 0",
        &[],
    );
    refused(
        &|s| {
            s.steps.insert(7, 3);
        },
        "a step count for parameter 7",
        &[],
    );
    refused(
        &|s| {
            let t = &mut s.tensors[0].1;
            *t = Tensor::from_vec(vec![f32::NAN, 0.0, 0.0], &[3]).unwrap();
        },
        "holds NaN at element 0",
        &[],
    );
}

/// A step count beyond 2^24 (f32's last exact integer) survives a save and a load in an
/// f32 optimizer: the bias corrections of Adam depend on it.
#[test]
fn step_counts_beyond_f32_survive_a_checkpoint() {
    let dir = std::env::temp_dir().join(format!("strata-optim-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("opt.safetensors");
    let p = param();
    let mut opt = Adam::new(vec![p.clone()], AdamConfig::default()).unwrap();
    one_step(&p, &mut opt);
    let mut state = opt.state_dict();
    let step = (1u64 << 24) + 1;
    state.steps.insert(0, step);
    opt.load_state_dict(&state).unwrap();
    opt.state_dict().save(&path).unwrap();
    let back = OptimizerState::<f32>::load(&path).unwrap();
    assert_eq!(back.steps[&0], step);
    let mut fresh = Adam::new(vec![p.clone()], AdamConfig::default()).unwrap();
    fresh.load_state_dict(&back).unwrap();
    assert_eq!(fresh.state_dict().steps[&0], step);
    std::fs::remove_dir_all(dir).unwrap();
}

/// PyTorch: "Tried to step 11 times. The specified number of total steps is 10".
#[test]
fn one_cycle_refuses_to_step_past_its_end() {
    let p = param();
    let mut opt = Adam::new(vec![p], AdamConfig::default()).unwrap();
    let mut s = OneCycleLR::new(0.01, 10).scheduler(&mut opt).unwrap();
    for _ in 0..10 {
        s.step(&mut opt).unwrap();
    }
    let lr = opt.lr();
    let err = s.step(&mut opt).unwrap_err();
    assert!(
        err.to_string()
            .contains("tried to step 11 times; the specified number of total steps is 10"),
        "{err}"
    );
    assert_eq!(opt.lr(), lr, "a refused step leaves the learning rate");
    assert_eq!(s.last_epoch(), 10);
    let past = SchedulerState {
        last_epoch: 11,
        base_lrs: vec![0.01],
    };
    assert!(s.load_state(&past, &mut opt).is_err());
    let nan = SchedulerState {
        last_epoch: 1,
        base_lrs: vec![f64::NAN],
    };
    assert!(s.load_state(&nan, &mut opt).is_err());
    for bad in [f64::NAN, -1.0, 0.0, f64::INFINITY] {
        assert!(
            matches!(
                OneCycleLR::new(bad, 10).scheduler(&mut opt),
                Err(OptimError::Config { .. })
            ),
            "max_lr {bad}"
        );
    }
}

#[test]
fn clipping_to_a_nan_or_negative_norm_is_an_error() {
    let p = param();
    p.set_grad(Some(Tensor::from_vec(vec![3.0, 4.0, 0.0], &[3]).unwrap()))
        .unwrap();
    for bad in [f64::NAN, -1.0, f64::NEG_INFINITY] {
        let err = clip_grad_norm(std::slice::from_ref(&p), bad, 2.0, false).unwrap_err();
        assert!(
            err.to_string().contains("max_norm must be a number >= 0"),
            "{err}"
        );
        assert_eq!(p.grad().unwrap().to_vec(), [3.0, 4.0, 0.0], "untouched");
    }
    // An infinite max_norm clips nothing, as in PyTorch.
    assert_eq!(
        clip_grad_norm(std::slice::from_ref(&p), f64::INFINITY, 2.0, false).unwrap(),
        5.0
    );
    assert_eq!(p.grad().unwrap().to_vec(), [3.0, 4.0, 0.0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any values for the hyper-parameters of a loaded state: the load succeeds exactly
    /// when the constructor would accept them, and never panics.
    #[test]
    fn any_loaded_hyper_parameters_load_iff_the_constructor_takes_them(
        beta1 in prop_oneof![Just(f64::NAN), Just(-0.1), Just(1.0), Just(f64::INFINITY), 0.0f64..1.0],
        beta2 in prop_oneof![Just(f64::NAN), Just(2.0), 0.0f64..1.0],
        eps in prop_oneof![Just(f64::NAN), Just(-1e-8), Just(f64::INFINITY), 0.0f64..1.0],
        lr in prop_oneof![Just(f64::NAN), Just(-1.0), Just(f64::INFINITY), 0.0f64..1.0],
        amsgrad in prop_oneof![Just(0.0f64), Just(1.0), Just(0.5), Just(f64::NAN)],
    ) {
        let p = param();
        let mut opt = Adam::new(vec![p.clone()], AdamConfig::default()).unwrap();
        one_step(&p, &mut opt);
        let mut state = opt.state_dict();
        state.hyper = BTreeMap::from([
            ("beta1".to_string(), beta1),
            ("beta2".to_string(), beta2),
            ("eps".to_string(), eps),
            ("amsgrad".to_string(), amsgrad),
        ]);
        state.group_lrs = vec![lr];
        if amsgrad == 1.0 {
            let v = state.get("state.0.exp_avg_sq").unwrap().clone();
            state.tensors.push(("state.0.max_exp_avg_sq".into(), v));
        }
        let loaded = opt.load_state_dict(&state);
        let flag_ok = amsgrad == 0.0 || amsgrad == 1.0;
        let cfg = AdamConfig { lr: if lr.is_nan() { -1.0 } else { lr }, betas: (beta1, beta2), eps, ..AdamConfig::default() };
        let constructible = flag_ok && Adam::new(vec![param()], cfg).is_ok();
        prop_assert_eq!(loaded.is_ok(), constructible, "{:?}", loaded.err().map(|e| e.to_string()));
    }
}

/// L-BFGS refuses another optimizer's state (it used to take an SGD file without a word,
/// as the fuzz target found) and a learning rate no constructor takes; its own state
/// round-trips, learning rate included.
#[test]
fn lbfgs_refuses_foreign_states() {
    let p = param();
    let sgd = Sgd::new(vec![p.clone()], SgdConfig::default()).unwrap();
    let mut lbfgs = Lbfgs::new(vec![p.clone()], LbfgsConfig::default()).unwrap();
    let err = lbfgs.load_state_dict(&sgd.state_dict()).unwrap_err();
    assert!(
        err.to_string().contains("the state is of a SGD optimizer"),
        "{err}"
    );
    let mut own = lbfgs.state_dict();
    own.group_lrs = vec![f64::NAN];
    let err = lbfgs.load_state_dict(&own).unwrap_err();
    assert!(
        err.to_string().contains("learning rate NaN is invalid"),
        "{err}"
    );
    own.group_lrs = vec![0.25];
    lbfgs.load_state_dict(&own).unwrap();
    assert_eq!(lbfgs.lr(), 0.25);
}
