//! strata-optim against PyTorch: parameter trajectories of every optimizer and option,
//! and the learning rate of every schedule (fixtures from tests/fixtures/generate.py).

use std::path::PathBuf;

use strata_autograd::Var;
use strata_nn::StateDict;
use strata_optim::schedule::*;
use strata_optim::*;
use strata_tensor::Tensor;

const STEPS: usize = 6;

pub(crate) fn load(name: &str) -> StateDict<f64> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"));
    StateDict::load_safetensors(&path).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn get(sd: &StateDict<f64>, key: &str) -> Tensor<f64> {
    sd.get(key)
        .unwrap_or_else(|| panic!("fixture lacks {key}"))
        .clone()
}

#[track_caller]
pub(crate) fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 + 1e-10 * w.abs(),
            "{what}[{i}]: strata {g}, PyTorch {w}"
        );
    }
}

fn params(sd: &StateDict<f64>) -> Vec<Var<f64>> {
    (0..2)
        .map(|i| Var::parameter(get(sd, &format!("init.{i}"))))
        .collect()
}

/// Feeds the fixture's gradients to `opt` and compares the parameters after each step.
fn check(name: &str, make: impl Fn(Vec<Var<f64>>) -> Box<dyn Optimizer<f64>>) {
    let sd = load(name);
    let ps = params(&sd);
    let mut opt = make(ps.clone());
    for t in 0..STEPS {
        for (i, p) in ps.iter().enumerate() {
            p.set_grad(Some(get(&sd, &format!("grad.{t}.{i}"))))
                .unwrap();
        }
        opt.step().unwrap();
        for (i, p) in ps.iter().enumerate() {
            assert_close(
                &p.to_vec(),
                &get(&sd, &format!("param.{t}.{i}")).to_vec(),
                &format!("{name} step {t} param {i}"),
            );
        }
    }
}

#[test]
fn sgd() {
    check("sgd", |p| {
        Box::new(
            Sgd::new(
                p,
                SgdConfig {
                    lr: 0.1,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    });
    check("sgd_momentum", |p| {
        let c = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.1,
            weight_decay: 0.01,
            ..Default::default()
        };
        Box::new(Sgd::new(p, c).unwrap())
    });
    check("sgd_nesterov", |p| {
        let c = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.01,
            ..Default::default()
        };
        Box::new(Sgd::new(p, c).unwrap())
    });
    check("sgd_maximize", |p| {
        let c = SgdConfig {
            lr: 0.05,
            momentum: 0.5,
            maximize: true,
            ..Default::default()
        };
        Box::new(Sgd::new(p, c).unwrap())
    });
}

#[test]
fn adam_and_adamw() {
    check("adam", |p| {
        Box::new(
            Adam::new(
                p,
                AdamConfig {
                    lr: 0.01,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    });
    check("adam_wd_amsgrad", |p| {
        let c = AdamConfig {
            lr: 0.01,
            betas: (0.8, 0.99),
            weight_decay: 0.1,
            amsgrad: true,
            ..Default::default()
        };
        Box::new(Adam::new(p, c).unwrap())
    });
    check("adam_maximize", |p| {
        Box::new(
            Adam::new(
                p,
                AdamConfig {
                    lr: 0.01,
                    maximize: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    });
    check("adamw", |p| {
        Box::new(
            AdamW::new(
                p,
                AdamWConfig {
                    lr: 0.01,
                    weight_decay: 0.1,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    });
    check("adamw_amsgrad", |p| {
        let c = AdamWConfig {
            lr: 0.01,
            betas: (0.85, 0.95),
            amsgrad: true,
            ..Default::default()
        };
        Box::new(AdamW::new(p, c).unwrap())
    });
    check("adam_groups", |p| {
        let groups = vec![
            ParamGroup::new(vec![p[0].clone()]).lr(0.05),
            ParamGroup::new(vec![p[1].clone()]).weight_decay(0.2),
        ];
        Box::new(
            Adam::with_groups(
                groups,
                AdamConfig {
                    lr: 0.01,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    });
}

#[test]
fn rmsprop() {
    check("rmsprop", |p| {
        Box::new(
            RmsProp::new(
                p,
                RmsPropConfig {
                    lr: 0.01,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    });
    check("rmsprop_momentum", |p| {
        Box::new(
            RmsProp::new(
                p,
                RmsPropConfig {
                    lr: 0.01,
                    momentum: 0.9,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    });
    check("rmsprop_centered", |p| {
        let c = RmsPropConfig {
            lr: 0.01,
            alpha: 0.9,
            momentum: 0.5,
            centered: true,
            weight_decay: 0.05,
            ..Default::default()
        };
        Box::new(RmsProp::new(p, c).unwrap())
    });
    check("rmsprop_centered_plain", |p| {
        Box::new(
            RmsProp::new(
                p,
                RmsPropConfig {
                    lr: 0.01,
                    centered: true,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    });
}

#[test]
fn adagrad_and_lion() {
    check("adagrad", |p| {
        let c = AdagradConfig {
            lr: 0.1,
            lr_decay: 0.01,
            weight_decay: 0.05,
            initial_accumulator_value: 0.1,
            ..Default::default()
        };
        Box::new(Adagrad::new(p, c).unwrap())
    });
    check("lion", |p| {
        Box::new(
            Lion::new(
                p,
                LionConfig {
                    lr: 0.01,
                    betas: (0.9, 0.99),
                    weight_decay: 0.1,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
    });
}

fn sgd_for_schedule(momentum: f64) -> Sgd<f64> {
    let p = Var::parameter(Tensor::<f64>::zeros(&[1]));
    Sgd::new(
        vec![p],
        SgdConfig {
            lr: 0.1,
            momentum,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Runs 30 steps, comparing the lr (and momentum) before each step with PyTorch's.
fn check_schedule<S: Schedule>(
    name: &str,
    momentum: f64,
    make: impl FnOnce(&mut Sgd<f64>) -> Scheduler<S>,
) {
    let sd = load("schedules");
    let want_lr = get(&sd, &format!("{name}.lr")).to_vec();
    let want_m = get(&sd, &format!("{name}.momentum")).to_vec();
    let mut opt = sgd_for_schedule(momentum);
    let mut sched = make(&mut opt);
    let (mut lrs, mut ms) = (Vec::new(), Vec::new());
    for _ in 0..want_lr.len() {
        lrs.push(opt.lr());
        ms.push(opt.momentum().unwrap());
        sched.step(&mut opt).unwrap();
    }
    assert_close(&lrs, &want_lr, &format!("{name} lr"));
    assert_close(&ms, &want_m, &format!("{name} momentum"));
}

#[test]
fn schedules() {
    check_schedule("step", 0.0, |o| {
        Scheduler::new(
            StepLR {
                step_size: 7,
                gamma: 0.5,
            },
            o,
        )
    });
    check_schedule("multistep", 0.0, |o| {
        Scheduler::new(
            MultiStepLR {
                milestones: vec![3, 8, 15],
                gamma: 0.3,
            },
            o,
        )
    });
    check_schedule("exponential", 0.0, |o| {
        Scheduler::new(ExponentialLR { gamma: 0.9 }, o)
    });
    check_schedule("cosine", 0.0, |o| {
        Scheduler::new(CosineAnnealingLR::new(10, 0.001), o)
    });
    check_schedule("linear", 0.0, |o| {
        Scheduler::new(LinearLR::new(0.25, 1.0, 8), o)
    });
    check_schedule("linear_default", 0.0, |o| {
        Scheduler::new(LinearLR::default(), o)
    });
    check_schedule("onecycle", 0.9, |o| {
        OneCycleLR::new(0.5, 30).scheduler(o).unwrap()
    });
    check_schedule("onecycle_three_linear", 0.9, |o| {
        OneCycleLR {
            three_phase: true,
            anneal: Anneal::Linear,
            ..OneCycleLR::new(0.5, 30)
        }
        .scheduler(o)
        .unwrap()
    });
    check_schedule("warmup_cosine", 0.0, |o| {
        let s = SequentialLR::new(
            vec![
                Box::new(LinearLR::new(0.1, 1.0, 5)),
                Box::new(CosineAnnealingLR::new(15, 0.0)),
            ],
            vec![5],
        );
        Scheduler::new(s, o)
    });
}

#[test]
fn reduce_on_plateau() {
    let sd = load("schedules");
    let metrics = get(&sd, "plateau.metrics").to_vec();
    let want = get(&sd, "plateau.lr").to_vec();
    let mut opt = sgd_for_schedule(0.0);
    let mut plateau = ReduceLROnPlateau::new(PlateauConfig {
        factor: 0.5,
        patience: 2,
        cooldown: 1,
        ..PlateauConfig::default()
    })
    .unwrap();
    let mut lrs = Vec::new();
    for m in metrics {
        lrs.push(opt.lr());
        plateau.step(m, &mut opt);
    }
    assert_close(&lrs, &want, "plateau lr");
}
