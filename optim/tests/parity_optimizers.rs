//! Adamax, NAdam, RAdam and ASGD against PyTorch trajectories of 12 steps
//! (`parity_trajectories` in tests/fixtures/generate.py), and their state round trips.

use strata_autograd::Var;
use strata_optim::*;
use strata_tensor::Tensor;

use crate::pytorch_trajectories::{assert_close, get, load};

const STEPS: usize = 12;

/// Feeds the fixture's gradients and compares the parameters after each step; halfway,
/// the optimizer is rebuilt from its state dict, which must continue identically.
fn check<O: Optimizer<f64>>(
    name: &str,
    make: impl Fn(Vec<Var<f64>>) -> O,
    after: impl Fn(&O, usize),
) {
    let sd = load(name);
    let ps: Vec<Var<f64>> = (0..2)
        .map(|i| Var::parameter(get(&sd, &format!("init.{i}"))))
        .collect();
    let mut opt = make(ps.clone());
    for t in 0..STEPS {
        if t == STEPS / 2 {
            let state = opt.state_dict();
            opt = make(ps.clone());
            opt.load_state_dict(&state).unwrap();
        }
        for (i, p) in ps.iter().enumerate() {
            p.set_grad(Some(get(&sd, &format!("grad.{t}.{i}"))))
                .unwrap();
        }
        opt.step().unwrap();
        for (i, p) in ps.iter().enumerate() {
            let want = get(&sd, &format!("param.{t}.{i}")).to_vec();
            assert_close(&p.to_vec(), &want, &format!("{name} step {t} param {i}"));
        }
        after(&opt, t);
    }
}

#[test]
fn adamax() {
    check(
        "adamax",
        |p| {
            Adamax::new(
                p,
                AdamaxConfig {
                    lr: 0.02,
                    ..Default::default()
                },
            )
            .unwrap()
        },
        |_, _| {},
    );
    let cfg = AdamaxConfig {
        lr: 0.02,
        betas: (0.8, 0.95),
        weight_decay: 0.1,
        maximize: true,
        ..Default::default()
    };
    check(
        "adamax_wd_maximize",
        |p| Adamax::new(p, cfg).unwrap(),
        |_, _| {},
    );
}

#[test]
fn nadam() {
    check(
        "nadam",
        |p| {
            NAdam::new(
                p,
                NAdamConfig {
                    lr: 0.01,
                    ..Default::default()
                },
            )
            .unwrap()
        },
        |_, _| {},
    );
    let cfg = NAdamConfig {
        lr: 0.01,
        weight_decay: 0.1,
        decoupled_weight_decay: true,
        momentum_decay: 0.01,
        ..Default::default()
    };
    check(
        "nadam_decoupled",
        |p| NAdam::new(p, cfg).unwrap(),
        |_, _| {},
    );
    let cfg = NAdamConfig {
        lr: 0.01,
        weight_decay: 0.05,
        ..Default::default()
    };
    check("nadam_l2", |p| NAdam::new(p, cfg).unwrap(), |_, _| {});
}

#[test]
fn radam() {
    check(
        "radam",
        |p| {
            RAdam::new(
                p,
                RAdamConfig {
                    lr: 0.01,
                    ..Default::default()
                },
            )
            .unwrap()
        },
        |_, _| {},
    );
    let cfg = RAdamConfig {
        lr: 0.01,
        betas: (0.9, 0.9),
        weight_decay: 0.05,
        ..Default::default()
    };
    check(
        "radam_rectified",
        |p| RAdam::new(p, cfg).unwrap(),
        |_, _| {},
    );
    let cfg = RAdamConfig {
        lr: 0.01,
        betas: (0.8, 0.7),
        weight_decay: 0.1,
        decoupled_weight_decay: true,
        ..Default::default()
    };
    check(
        "radam_decoupled",
        |p| RAdam::new(p, cfg).unwrap(),
        |_, _| {},
    );
}

#[test]
fn asgd() {
    check(
        "asgd",
        |p| {
            Asgd::new(
                p,
                AsgdConfig {
                    lr: 0.05,
                    ..Default::default()
                },
            )
            .unwrap()
        },
        |_, _| {},
    );
    let sd = load("asgd_averaging");
    let cfg = AsgdConfig {
        lr: 0.05,
        lambd: 0.01,
        alpha: 0.5,
        t0: 3.0,
        weight_decay: 0.02,
        ..Default::default()
    };
    check(
        "asgd_averaging",
        |p| Asgd::new(p, cfg).unwrap(),
        |opt, t| {
            for (i, ax) in opt.averaged().iter().enumerate() {
                let want = get(&sd, &format!("ax.{t}.{i}")).to_vec();
                assert_close(
                    &ax.as_ref().unwrap().to_vec(),
                    &want,
                    &format!("ax step {t} param {i}"),
                );
            }
        },
    );
}

#[test]
fn settings_are_checked() {
    let p = || vec![Var::parameter(Tensor::<f64>::zeros(&[2]))];
    assert!(
        Adamax::new(
            p(),
            AdamaxConfig {
                betas: (1.0, 0.9),
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(
        NAdam::new(
            p(),
            NAdamConfig {
                momentum_decay: -1.0,
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(
        RAdam::new(
            p(),
            RAdamConfig {
                eps: -1.0,
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(
        Asgd::new(
            p(),
            AsgdConfig {
                lr: f64::NAN,
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(Asgd::<f64>::new(Vec::new(), AsgdConfig::default()).is_err());
    // A loaded state with a flag that is not 0 or 1 is refused.
    let mut opt = NAdam::new(p(), NAdamConfig::default()).unwrap();
    let mut state = opt.state_dict();
    state.hyper.insert("maximize".into(), 0.5);
    assert!(opt.load_state_dict(&state).is_err());
}

/// 30 steps of a schedule against `parity_schedules.safetensors`: the lr (and momentum)
/// before each step, and a scheduler rebuilt from its state at step 13 continues the same.
fn check_schedule<S: strata_optim::schedule::Schedule>(
    name: &str,
    momentum: f64,
    make: impl Fn(&mut Sgd<f64>) -> strata_optim::schedule::Scheduler<S>,
) {
    let sd = load("parity_schedules");
    let want_lr = get(&sd, &format!("{name}.lr")).to_vec();
    let want_m = get(&sd, &format!("{name}.momentum")).to_vec();
    let p = Var::parameter(Tensor::<f64>::zeros(&[1]));
    let cfg = SgdConfig {
        lr: 0.1,
        momentum,
        ..Default::default()
    };
    let mut opt = Sgd::new(vec![p], cfg).unwrap();
    let mut sched = make(&mut opt);
    let (mut lrs, mut ms) = (Vec::new(), Vec::new());
    for t in 0..want_lr.len() {
        if t == 13 {
            let state = sched.state();
            sched = make(&mut opt);
            sched.load_state(&state, &mut opt).unwrap();
        }
        lrs.push(opt.lr());
        ms.push(opt.momentum().unwrap());
        sched.step(&mut opt).unwrap();
    }
    assert_close(&lrs, &want_lr, &format!("{name} lr"));
    assert_close(&ms, &want_m, &format!("{name} momentum"));
}

#[test]
fn parity_schedules() {
    use strata_optim::schedule::*;
    check_schedule("lambda", 0.0, |o| {
        Scheduler::new(
            LambdaLR {
                lr_lambda: Box::new(|e| 1.0 / (1.0 + 0.1 * e as f64)),
            },
            o,
        )
    });
    check_schedule("multiplicative", 0.0, |o| {
        let f: LrLambda = Box::new(|e| if e % 2 == 1 { 0.9 } else { 0.97 });
        Scheduler::new(MultiplicativeLR::new(f), o)
    });
    check_schedule("polynomial", 0.0, |o| {
        Scheduler::new(
            PolynomialLR {
                total_iters: 12,
                power: 2.0,
            },
            o,
        )
    });
    check_schedule("warm_restarts", 0.0, |o| {
        Scheduler::new(CosineAnnealingWarmRestarts::new(4, 2, 0.01).unwrap(), o)
    });
    check_schedule("warm_restarts_flat", 0.0, |o| {
        Scheduler::new(CosineAnnealingWarmRestarts::new(5, 1, 0.0).unwrap(), o)
    });
    check_schedule("cyclic", 0.9, |o| {
        CyclicLR {
            step_size_up: 4,
            ..CyclicLR::new(0.01, 0.1)
        }
        .scheduler(o)
        .unwrap()
    });
    check_schedule("cyclic_triangular2", 0.9, |o| {
        CyclicLR {
            step_size_up: 3,
            step_size_down: Some(5),
            mode: CyclicMode::Triangular2,
            ..CyclicLR::new(0.01, 0.1)
        }
        .scheduler(o)
        .unwrap()
    });
    check_schedule("cyclic_exp_range", 0.0, |o| {
        CyclicLR {
            step_size_up: 5,
            mode: CyclicMode::ExpRange { gamma: 0.97 },
            cycle_momentum: false,
            ..CyclicLR::new(0.02, 0.2)
        }
        .scheduler(o)
        .unwrap()
    });
    check_schedule("chained", 0.0, |o| {
        let schedules: Vec<Box<dyn Schedule>> = vec![
            Box::new(StepLR {
                step_size: 5,
                gamma: 0.5,
            }),
            Box::new(ExponentialLR { gamma: 0.95 }),
        ];
        Scheduler::new(ChainedScheduler { schedules }, o)
    });
    // Settings PyTorch refuses.
    assert!(CosineAnnealingWarmRestarts::new(0, 1, 0.0).is_err());
    let mut adam = Adam::new(
        vec![Var::parameter(Tensor::<f64>::zeros(&[1]))],
        AdamConfig::default(),
    )
    .unwrap();
    assert!(
        CyclicLR {
            step_size_up: 0,
            step_size_down: Some(0),
            ..CyclicLR::new(0.01, 0.1)
        }
        .scheduler(&mut adam)
        .is_err()
    );
    let mut plain = Sgd::new(
        vec![Var::parameter(Tensor::<f64>::zeros(&[1]))],
        SgdConfig::default(),
    )
    .unwrap();
    assert!(CyclicLR::new(0.01, 0.1).scheduler(&mut plain).is_ok()); // SGD has a momentum (0)
}

/// L-BFGS with fixed steps and with the strong-Wolfe search (a quartic least squares and
/// Rosenbrock's function): parameters after each of three `step_with` calls, the first
/// loss of each call and the number of closure evaluations equal PyTorch's.
#[test]
fn lbfgs() {
    let sd = load("lbfgs");
    let (w, b) = (Var::new(get(&sd, "w")), Var::new(get(&sd, "b")));
    let quartic = |x: &Var<f64>| -> strata_autograd::Result<Var<f64>> {
        let r = w.matmul(x)?.sub(&b)?;
        r.square().sum_all().add(&x.square().square().sum_all())
    };
    let rosenbrock = |x: &Var<f64>| -> strata_autograd::Result<Var<f64>> {
        let (x0, x1) = (x.select(0, 0)?, x.select(0, 1)?);
        x0.rsub_scalar(1.0)
            .square()
            .add(&x1.sub(&x0.square())?.square().mul_scalar(100.0))
    };
    let plain = LbfgsConfig {
        lr: 0.1,
        max_iter: 5,
        ..Default::default()
    };
    let wolfe = LbfgsConfig {
        max_iter: 4,
        history_size: 3,
        strong_wolfe: true,
        ..Default::default()
    };
    let rosen = LbfgsConfig {
        max_iter: 10,
        strong_wolfe: true,
        ..Default::default()
    };
    type Problem<'a> = &'a dyn Fn(&Var<f64>) -> strata_autograd::Result<Var<f64>>;
    let cases: [(&str, Problem, LbfgsConfig); 3] = [
        ("lbfgs_plain", &quartic, plain),
        ("lbfgs_wolfe", &quartic, wolfe),
        ("lbfgs_rosenbrock", &rosenbrock, rosen),
    ];
    for (name, f, cfg) in cases {
        let x = Var::parameter(get(&sd, &format!("{name}.init")));
        let mut opt = Lbfgs::new(vec![x.clone()], cfg).unwrap();
        let mut evals = 0;
        for k in 0..3 {
            let loss = opt
                .step_with(|| -> strata_autograd::Result<f64> {
                    evals += 1;
                    x.zero_grad();
                    let l = f(&x)?;
                    l.backward()?;
                    l.item()
                })
                .unwrap();
            assert_close(
                &[loss],
                &get(&sd, &format!("{name}.loss.{k}")).to_vec(),
                &format!("{name} loss {k}"),
            );
            assert_close(
                &x.to_vec(),
                &get(&sd, &format!("{name}.param.{k}")).to_vec(),
                &format!("{name} step {k}"),
            );
        }
        assert_eq!(
            evals as f64,
            get(&sd, &format!("{name}.evals")).to_vec()[0],
            "{name} evaluations"
        );
        // The state round trip: a rebuilt optimizer continues identically.
        let state = opt.state_dict();
        let mut again = Lbfgs::new(vec![x.clone()], cfg).unwrap();
        again.load_state_dict(&state).unwrap();
        assert_eq!(again.state_dict().tensors.len(), state.tensors.len());
    }
    let x = Var::parameter(Tensor::<f64>::zeros(&[2]));
    let mut opt = Lbfgs::new(vec![x], LbfgsConfig::default()).unwrap();
    assert!(opt.step().unwrap_err().to_string().contains("step_with"));
    assert!(Lbfgs::<f64>::new(Vec::new(), LbfgsConfig::default()).is_err());
}
