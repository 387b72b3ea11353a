//! Resuming, configuration errors, clipping, and an end-to-end training check.

use strata_autograd::Var;
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::{Forward, Linear, Module, ReLU, Sequential};
use strata_optim::schedule::{CosineAnnealingLR, Scheduler};
use strata_optim::*;
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

fn mlp(seed: u64) -> Sequential<f32> {
    let mut rng = seeded_rng(seed);
    Sequential::new()
        .push(Linear::new(4, 16, true, &mut rng))
        .push(ReLU)
        .push(Linear::new(16, 3, true, &mut rng))
}

/// Three Gaussian blobs in 4-d: a fixed, separable classification problem.
fn problem() -> (Var<f32>, IndexTensor) {
    let mut rng = seeded_rng(99);
    let n = 96;
    let noise = Tensor::<f32>::randn(&[n, 4], &mut rng)
        .mul_scalar(0.3)
        .to_vec();
    let labels: Vec<i64> = (0..n as i64).map(|i| i % 3).collect();
    let x: Vec<f32> = (0..n)
        .flat_map(|i| (0..4).map(move |j| (i, j)))
        .map(|(i, j)| noise[i * 4 + j] + if j as i64 == labels[i] { 1.5 } else { 0.0 })
        .collect();
    (
        Var::new(Tensor::from_vec(x, &[n, 4]).unwrap()),
        IndexTensor::from_vec(labels, &[n]).unwrap(),
    )
}

fn loss_of(model: &Sequential<f32>, x: &Var<f32>, y: &IndexTensor) -> Var<f32> {
    cross_entropy(&model.forward(x).unwrap(), y, &ClassLossOptions::default()).unwrap()
}

fn train(model: &Sequential<f32>, opt: &mut dyn Optimizer<f32>, steps: usize) -> f32 {
    let (x, y) = problem();
    let mut last = f32::NAN;
    for _ in 0..steps {
        opt.zero_grad();
        let loss = loss_of(model, &x, &y);
        loss.backward().unwrap();
        opt.step().unwrap();
        last = loss.item().unwrap();
    }
    last
}

#[test]
fn every_optimizer_trains_a_small_mlp() {
    type Make = fn(Vec<Var<f32>>) -> Box<dyn Optimizer<f32>>;
    let cases: [(&str, Make, f32); 6] = [
        (
            "SGD",
            |p| {
                Box::new(
                    Sgd::new(
                        p,
                        SgdConfig {
                            lr: 0.1,
                            momentum: 0.9,
                            ..Default::default()
                        },
                    )
                    .unwrap(),
                )
            },
            0.05,
        ),
        (
            "Adam",
            |p| {
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
            },
            0.05,
        ),
        (
            "AdamW",
            |p| {
                Box::new(
                    AdamW::new(
                        p,
                        AdamWConfig {
                            lr: 0.01,
                            ..Default::default()
                        },
                    )
                    .unwrap(),
                )
            },
            0.05,
        ),
        (
            "RMSprop",
            |p| {
                Box::new(
                    RmsProp::new(
                        p,
                        RmsPropConfig {
                            lr: 0.005,
                            ..Default::default()
                        },
                    )
                    .unwrap(),
                )
            },
            0.05,
        ),
        (
            "Adagrad",
            |p| {
                Box::new(
                    Adagrad::new(
                        p,
                        AdagradConfig {
                            lr: 0.1,
                            ..Default::default()
                        },
                    )
                    .unwrap(),
                )
            },
            0.05,
        ),
        (
            "Lion",
            |p| {
                Box::new(
                    Lion::new(
                        p,
                        LionConfig {
                            lr: 0.003,
                            ..Default::default()
                        },
                    )
                    .unwrap(),
                )
            },
            0.05,
        ),
    ];
    let (x, y) = problem();
    let start = loss_of(&mlp(1), &x, &y).item().unwrap();
    assert!(start > 0.9, "an untrained model is near chance: {start}");
    for (name, make, target) in cases {
        let model = mlp(1);
        let mut opt = make(model.parameters());
        let loss = train(&model, opt.as_mut(), 200);
        assert!(
            loss < target,
            "{name}: loss {loss} after 200 steps, expected below {target}"
        );
    }
}

/// Training 10 steps, saving, and resuming in a fresh optimizer and scheduler for 10 more
/// ends bit for bit where 20 uninterrupted steps end.
#[test]
fn resuming_from_a_saved_state_is_bit_exact() {
    let (x, y) = problem();
    let run = |steps: usize,
               model: &Sequential<f32>,
               opt: &mut AdamW<f32>,
               sched: &mut Scheduler<CosineAnnealingLR>| {
        for _ in 0..steps {
            opt.zero_grad();
            loss_of(model, &x, &y).backward().unwrap();
            opt.step().unwrap();
            sched.step(opt).unwrap();
        }
    };
    let cfg = AdamWConfig {
        lr: 0.01,
        amsgrad: true,
        ..Default::default()
    };

    let straight = mlp(3);
    let mut opt = AdamW::new(straight.parameters(), cfg).unwrap();
    let mut sched = Scheduler::new(CosineAnnealingLR::new(20, 1e-4), &mut opt);
    run(20, &straight, &mut opt, &mut sched);

    let first = mlp(3);
    let mut opt = AdamW::new(first.parameters(), cfg).unwrap();
    let mut sched = Scheduler::new(CosineAnnealingLR::new(20, 1e-4), &mut opt);
    run(10, &first, &mut opt, &mut sched);
    let dir = std::env::temp_dir().join(format!("strata-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    first
        .save_safetensors(&dir.join("model.safetensors"))
        .unwrap();
    opt.state_dict()
        .save(&dir.join("optim.safetensors"))
        .unwrap();
    let sched_state = sched.state();

    let resumed = mlp(42); // other initial weights: everything must come from the files
    resumed
        .load_safetensors(&dir.join("model.safetensors"), true)
        .unwrap();
    let mut opt = AdamW::new(resumed.parameters(), AdamWConfig::default()).unwrap();
    opt.load_state_dict(&OptimizerState::load(&dir.join("optim.safetensors")).unwrap())
        .unwrap();
    let mut sched = Scheduler::new(CosineAnnealingLR::new(20, 1e-4), &mut opt);
    sched.load_state(&sched_state, &mut opt).unwrap();
    run(10, &resumed, &mut opt, &mut sched);

    for ((name, a), (_, b)) in straight
        .named_parameters()
        .iter()
        .zip(resumed.named_parameters())
    {
        assert_eq!(a.to_vec(), b.to_vec(), "{name} differs after resuming");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_state_for_other_parameters_is_refused() {
    let a = mlp(1);
    let mut opt = Adam::new(a.parameters(), AdamConfig::default()).unwrap();
    let (x, y) = problem();
    loss_of(&a, &x, &y).backward().unwrap();
    opt.step().unwrap();
    let state = opt.state_dict();

    let mut rng = seeded_rng(0);
    let other = Linear::<f32>::new(4, 16, true, &mut rng);
    let mut wrong_count = Adam::new(other.parameters(), AdamConfig::default()).unwrap();
    let err = wrong_count.load_state_dict(&state).unwrap_err().to_string();
    assert!(err.contains("groups of sizes [4]"), "{err}");

    let shapes = Sequential::<f32>::new()
        .push(Linear::new(4, 8, true, &mut rng))
        .push(Linear::new(8, 3, true, &mut rng));
    let mut wrong_shape = Adam::new(shapes.parameters(), AdamConfig::default()).unwrap();
    let err = wrong_shape.load_state_dict(&state).unwrap_err().to_string();
    assert!(
        err.contains("state.0.exp_avg has shape [16, 4] but parameter 0 has shape [8, 4]"),
        "{err}"
    );

    let mut sgd = Sgd::new(a.parameters(), SgdConfig::default()).unwrap();
    assert!(
        sgd.load_state_dict(&state)
            .unwrap_err()
            .to_string()
            .contains("Adam optimizer")
    );
}

#[test]
fn bad_configurations_are_refused() {
    let p = || vec![Var::parameter(Tensor::<f32>::zeros(&[2]))];
    let msg = |r: Result<(), OptimError>| r.unwrap_err().to_string();
    assert_eq!(
        msg(Sgd::new(
            p(),
            SgdConfig {
                lr: -0.1,
                ..Default::default()
            }
        )
        .map(drop)),
        "SGD: invalid learning rate: -0.1"
    );
    assert!(
        msg(Sgd::new(
            p(),
            SgdConfig {
                nesterov: true,
                ..Default::default()
            }
        )
        .map(drop))
        .contains("Nesterov")
    );
    assert_eq!(
        msg(Adam::new(
            p(),
            AdamConfig {
                betas: (1.0, 0.999),
                ..Default::default()
            }
        )
        .map(drop)),
        "Adam: invalid beta parameter at index 0: 1"
    );
    assert!(
        AdamW::new(
            p(),
            AdamWConfig {
                betas: (0.9, -0.1),
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(
        AdamW::new(
            p(),
            AdamWConfig {
                eps: -1.0,
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(
        RmsProp::new(
            p(),
            RmsPropConfig {
                alpha: -0.5,
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(
        Adagrad::new(
            p(),
            AdagradConfig {
                lr_decay: -1.0,
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(
        Lion::new(
            p(),
            LionConfig {
                betas: (0.9, 1.5),
                ..Default::default()
            }
        )
        .is_err()
    );
    assert!(Adam::<f32>::new(vec![], AdamConfig::default()).is_err());
    let groups = vec![ParamGroup::new(p()).lr(-1.0)];
    assert!(Adam::with_groups(groups, AdamConfig::default()).is_err());
    let mut plain = Sgd::new(p(), SgdConfig::default()).unwrap();
    // One-cycle momentum needs an optimizer with momentum.
    let err = schedule::OneCycleLR::new(0.1, 10)
        .scheduler(&mut plain)
        .err()
        .unwrap();
    assert!(err.to_string().contains("momentum"), "{err}");
    let no_cycle = schedule::OneCycleLR {
        cycle_momentum: false,
        ..schedule::OneCycleLR::new(0.1, 10)
    };
    assert!(no_cycle.scheduler(&mut plain).is_ok());
    assert!(
        schedule::SequentialLR::try_new(
            vec![Box::new(schedule::ExponentialLR { gamma: 0.9 })],
            vec![3]
        )
        .is_err()
    );
}

#[test]
fn clipping() {
    let a = Var::parameter(Tensor::from_vec(vec![1.0f64, 2.0], &[2]).unwrap());
    let b = Var::parameter(Tensor::from_vec(vec![2.0f64], &[1]).unwrap());
    let none = Var::parameter(Tensor::from_vec(vec![5.0f64], &[1]).unwrap());
    a.set_grad(Some(Tensor::from_vec(vec![3.0, 0.0], &[2]).unwrap()))
        .unwrap();
    b.set_grad(Some(Tensor::from_vec(vec![-4.0], &[1]).unwrap()))
        .unwrap();
    let params = [a.clone(), b.clone(), none.clone()];
    // Below the threshold: unchanged apart from the 1e-6 guard's factor of one.
    assert_eq!(clip_grad_norm(&params, 10.0, 2.0, false).unwrap(), 5.0);
    assert_eq!(a.grad().unwrap().to_vec(), vec![3.0, 0.0]);
    let total = clip_grad_norm(&params, 1.0, 2.0, true).unwrap();
    assert_eq!(total, 5.0);
    let scale = 1.0 / (5.0 + 1e-6);
    assert_eq!(a.grad().unwrap().to_vec(), vec![3.0 * scale, 0.0]);
    assert_eq!(b.grad().unwrap().to_vec(), vec![-4.0 * scale]);
    assert!(none.grad().is_none());
    // The max norm and the 1-norm.
    b.set_grad(Some(Tensor::from_vec(vec![-4.0], &[1]).unwrap()))
        .unwrap();
    assert_eq!(
        clip_grad_norm(std::slice::from_ref(&b), 100.0, f64::INFINITY, false).unwrap(),
        4.0
    );
    a.set_grad(Some(Tensor::from_vec(vec![3.0, -1.0], &[2]).unwrap()))
        .unwrap();
    assert_eq!(
        clip_grad_norm(&[a.clone(), b.clone()], 100.0, 1.0, false).unwrap(),
        8.0
    );
    // A non-finite norm is an error when asked, and leaves the gradients alone.
    a.set_grad(Some(Tensor::from_vec(vec![f64::NAN, 1.0], &[2]).unwrap()))
        .unwrap();
    assert!(matches!(
        clip_grad_norm(std::slice::from_ref(&a), 1.0, 2.0, true),
        Err(OptimError::NonFiniteNorm { .. })
    ));
    assert_eq!(a.grad().unwrap().to_vec()[1], 1.0);
    // Clipping by value.
    a.set_grad(Some(Tensor::from_vec(vec![3.0, -0.5], &[2]).unwrap()))
        .unwrap();
    clip_grad_value(std::slice::from_ref(&a), 1.0).unwrap();
    assert_eq!(a.grad().unwrap().to_vec(), vec![1.0, -0.5]);
    assert!(clip_grad_value(&[a], -1.0).is_err());
}

/// The parallel update of a large parameter equals the same update on the calling thread.
#[test]
fn large_parameters_update_like_small_ones() {
    let n = 200_003;
    let mut rng = seeded_rng(5);
    let init = Tensor::<f32>::randn(&[n], &mut rng);
    let grad = Tensor::<f32>::randn(&[n], &mut rng);
    let big = Var::parameter(init.clone());
    let mut opt = Adam::new(
        vec![big.clone()],
        AdamConfig {
            lr: 0.01,
            weight_decay: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    // The same elements as 1000-element parameters, each below the parallel threshold.
    let pieces: Vec<Var<f32>> = (0..n)
        .step_by(1000)
        .map(|s| Var::parameter(init.narrow(0, s, 1000.min(n - s)).unwrap().contiguous()))
        .collect();
    let mut small = Adam::new(
        pieces.clone(),
        AdamConfig {
            lr: 0.01,
            weight_decay: 0.1,
            ..Default::default()
        },
    )
    .unwrap();
    for _ in 0..3 {
        big.set_grad(Some(grad.clone())).unwrap();
        for (i, p) in pieces.iter().enumerate() {
            p.set_grad(Some(
                grad.narrow(0, i * 1000, p.numel()).unwrap().contiguous(),
            ))
            .unwrap();
        }
        opt.step().unwrap();
        small.step().unwrap();
    }
    let joined: Vec<f32> = pieces.iter().flat_map(|p| p.to_vec()).collect();
    assert_eq!(big.to_vec(), joined);
}
