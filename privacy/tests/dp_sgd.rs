//! The DP-SGD step: clipping bounds every sample's contribution, the step equals the
//! clipped sum written out by hand, micro-batches add up to their logical batch, every
//! optimizer steps on the result, the noise has the stated standard deviation, and models
//! the step cannot serve are refused with errors that say why.

use strata_autograd::Var;
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::{
    BatchNorm2d, BatchNormConfig, Conv2d, Flatten, Forward, Linear, Module, ReLU, Sequential, Tanh,
};
use strata_optim::{Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, Sgd, SgdConfig};
use strata_privacy::{
    Clipping, DpSgd, DpSgdConfig, GaussianNoise, GradSampler, LossReduction, PrivacyError,
};
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

fn model(seed: u64) -> Sequential<f64> {
    let mut rng = seeded_rng(seed);
    Sequential::new()
        .push(Linear::new(5, 6, true, &mut rng))
        .push(Tanh)
        .push(Linear::new(6, 3, true, &mut rng))
}

/// Inputs and labels of `n` samples; sample 0's input is scaled by `outlier`.
fn data(n: usize, outlier: f64) -> (Tensor<f64>, IndexTensor) {
    let mut x = Tensor::<f64>::randn(&[n, 5], &mut seeded_rng(11));
    x.as_mut_slice()[..5].iter_mut().for_each(|v| *v *= outlier);
    let y = IndexTensor::from_vec((0..n as i64).map(|i| i % 3).collect(), &[n]).unwrap();
    (x, y)
}

fn loss_of(
    m: &Sequential<f64>,
    x: &Tensor<f64>,
    y: &IndexTensor,
    rows: std::ops::Range<usize>,
) -> strata_nn::Result<Var<f64>> {
    let xs = Var::new(x.narrow(0, rows.start, rows.len())?);
    let ys = IndexTensor::from_vec(y.as_slice()[rows].to_vec(), &[xs.shape()[0]])?;
    let options = ClassLossOptions {
        reduction: strata_nn::loss::Reduction::Sum,
        ..ClassLossOptions::default()
    };
    cross_entropy(&m.forward(&xs)?, &ys, &options)
}

fn config(clipping: Clipping, sigma: f64) -> DpSgdConfig {
    DpSgdConfig {
        clipping,
        loss_reduction: LossReduction::Sum,
        ..DpSgdConfig::new(0.5, sigma, 0.1, 8.0)
    }
}

/// The gradients DP-SGD writes for the samples `rows`, without noise.
fn dp_grads(
    clipping: Clipping,
    x: &Tensor<f64>,
    y: &IndexTensor,
    rows: std::ops::Range<usize>,
) -> Vec<Vec<f64>> {
    let m = model(3);
    let mut dp = DpSgd::new(&m, config(clipping, 0.0), GaussianNoise::seeded(0)).unwrap();
    dp.step(rows.len(), || loss_of(&m, x, y, rows.clone()))
        .unwrap();
    m.parameters()
        .iter()
        .map(|p| p.grad().unwrap().to_vec())
        .collect()
}

fn norm(parts: &[Vec<f64>]) -> f64 {
    parts.iter().flatten().map(|v| v * v).sum::<f64>().sqrt()
}

#[test]
fn clipping_bounds_each_sample_s_contribution() {
    // Sample 0 has a huge gradient; removing it changes the step by its clipped
    // contribution, which must be at most C = 0.5 (flat), and at most C/√k per parameter
    // (per layer).
    let (x, y) = data(6, 1000.0);
    for clipping in [Clipping::Flat, Clipping::PerLayer] {
        let with = dp_grads(clipping.clone(), &x, &y, 0..6);
        let without = dp_grads(clipping.clone(), &x, &y, 1..6);
        let diff: Vec<Vec<f64>> = with
            .iter()
            .zip(&without)
            .map(|(a, b)| a.iter().zip(b).map(|(u, v)| u - v).collect())
            .collect();
        let total = norm(&diff);
        assert!(total <= 0.5 + 1e-9, "{clipping:?}: contribution {total}");
        // Clipped, not dropped: flat clipping saturates at C; per layer the saturated tanh
        // leaves the first layer's gradient small, and the second layer's two parameters
        // reach C/2 each, √2·C/2 together.
        let floor = if clipping == Clipping::Flat {
            0.45
        } else {
            0.3
        };
        assert!(
            total > floor,
            "{clipping:?}: the outlier is clipped, not dropped ({total})"
        );
        if clipping == Clipping::PerLayer {
            for d in &diff {
                assert!(norm(std::slice::from_ref(d)) <= 0.5 / 2.0 + 1e-9);
            }
        }
    }
}

#[test]
fn the_step_is_the_clipped_sum_of_single_sample_gradients() {
    let (x, y) = data(5, 20.0);
    let got = dp_grads(Clipping::Flat, &x, &y, 0..5);
    // By hand: each sample's own gradient, scaled by min(1, C/(‖g‖ + 1e-6)).
    let m = model(3);
    let mut want: Vec<Vec<f64>> = m
        .parameters()
        .iter()
        .map(|p| vec![0.0; p.numel()])
        .collect();
    for n in 0..5 {
        m.zero_grad();
        loss_of(&m, &x, &y, n..n + 1).unwrap().backward().unwrap();
        let g: Vec<Vec<f64>> = m
            .parameters()
            .iter()
            .map(|p| p.grad().unwrap().to_vec())
            .collect();
        let c = (0.5 / (norm(&g) + 1e-6)).min(1.0);
        for (w, gi) in want.iter_mut().zip(&g) {
            w.iter_mut().zip(gi).for_each(|(a, b)| *a += c * b);
        }
    }
    for (a, b) in got.iter().flatten().zip(want.iter().flatten()) {
        assert!((a - b).abs() < 1e-10, "{a} vs {b}");
    }
}

#[test]
fn micro_batches_add_up_to_their_logical_batch() {
    let (x, y) = data(7, 5.0);
    // Same seeded noise in both runs: the noise is drawn once per logical step.
    let run = |splits: &[std::ops::Range<usize>]| -> Vec<f64> {
        let m = model(3);
        let cfg = DpSgdConfig {
            loss_reduction: LossReduction::Sum,
            ..DpSgdConfig::new(0.5, 1.3, 0.1, 7.0)
        };
        let mut dp = DpSgd::new(&m, cfg, GaussianNoise::seeded(9)).unwrap();
        for r in splits {
            dp.accumulate(r.len(), || loss_of(&m, &x, &y, r.clone()))
                .unwrap();
        }
        // An empty micro-batch (Poisson sampling gives those) adds nothing.
        dp.accumulate(0, || -> strata_nn::Result<Var<f64>> { unreachable!() })
            .unwrap();
        dp.finish_step().unwrap();
        assert_eq!(dp.steps(), 1);
        m.parameters()
            .iter()
            .flat_map(|p| p.grad().unwrap().to_vec())
            .collect()
    };
    let whole = run(std::slice::from_ref(&(0..7)));
    let parts = run(&[0..3, 3..4, 4..7]);
    for (a, b) in whole.iter().zip(&parts) {
        assert!((a - b).abs() < 1e-10, "{a} vs {b}");
    }
}

#[test]
fn every_optimizer_steps_on_the_private_gradient() {
    let (x, y) = data(8, 1.0);
    type MakeOptimizer = Box<dyn Fn(Vec<Var<f64>>) -> Box<dyn Optimizer<f64>>>;
    let opts: Vec<MakeOptimizer> = vec![
        Box::new(|p| {
            Box::new(
                Sgd::new(
                    p,
                    SgdConfig {
                        lr: 0.1,
                        momentum: 0.9,
                        ..SgdConfig::default()
                    },
                )
                .unwrap(),
            )
        }),
        Box::new(|p| {
            Box::new(
                Adam::new(
                    p,
                    AdamConfig {
                        lr: 0.01,
                        ..AdamConfig::default()
                    },
                )
                .unwrap(),
            )
        }),
        Box::new(|p| {
            Box::new(
                AdamW::new(
                    p,
                    AdamWConfig {
                        lr: 0.01,
                        ..AdamWConfig::default()
                    },
                )
                .unwrap(),
            )
        }),
    ];
    for make in &opts {
        let m = model(3);
        let before: Vec<f64> = m.parameters().iter().flat_map(|p| p.to_vec()).collect();
        let mut opt = make(m.parameters());
        let mut dp = DpSgd::new(
            &m,
            DpSgdConfig::new(1.0, 1.0, 0.1, 8.0),
            GaussianNoise::seeded(1),
        )
        .unwrap();
        let mut first = None;
        for _ in 0..30 {
            opt.zero_grad();
            let stats = dp.step(8, || loss_of(&m, &x, &y, 0..8)).unwrap();
            first.get_or_insert(stats.loss);
            opt.step().unwrap();
        }
        let after: Vec<f64> = m.parameters().iter().flat_map(|p| p.to_vec()).collect();
        assert!(
            before.iter().zip(&after).all(|(a, b)| a != b),
            "every parameter moved"
        );
        assert_eq!(dp.steps(), 30);
        let eps = dp.epsilon(1e-5).unwrap();
        assert!(eps.is_finite() && eps > 0.0);
    }
}

#[test]
fn the_noise_of_a_step_has_the_stated_standard_deviation() {
    // A loss that does not depend on the data: the gradient is pure noise, N(0, (σC)²)
    // divided by the expected batch size. 90 000 coordinates with a fixed seed: the
    // sample standard deviation's relative error is about 0.24 %, the tolerance 1 %.
    let m = Linear::<f64>::new(300, 300, false, &mut seeded_rng(0));
    let cfg = DpSgdConfig::new(0.5, 2.0, 0.01, 4.0); // σC = 1, divided by 4
    let mut dp = DpSgd::new(&m, cfg, GaussianNoise::seeded(5)).unwrap();
    let x = Var::new(Tensor::<f64>::zeros(&[2, 300]));
    dp.step(2, || -> strata_nn::Result<Var<f64>> {
        Ok(m.forward(&x)?.sum_all())
    })
    .unwrap();
    let g = m.weight.grad().unwrap().to_vec();
    let n = g.len() as f64;
    let mean = g.iter().sum::<f64>() / n;
    let std = (g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    assert!((std - 0.25).abs() < 0.0025, "std {std}");
    assert!(mean.abs() < 4.0 * 0.25 / n.sqrt(), "mean {mean}");
    // Recorded as seeded, hence not private.
    let guarantee = dp.guarantee(1e-5).unwrap();
    assert!(!guarantee.secure_noise);
    assert_eq!(guarantee.steps, 1);
    assert!(
        guarantee.effective_noise_multiplier < 2.0
            && guarantee.effective_noise_multiplier > 2.0 * (1.0 - 1e-6)
    );
}

#[test]
fn a_model_with_batch_norm_is_refused_naming_the_layer() {
    struct Net {
        conv: Conv2d<f64>,
        bn1: BatchNorm2d<f64>,
    }
    impl Module<f64> for Net {
        fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<f64>, strata_nn::StateKind)) {
            strata_nn::visit_child("conv", &self.conv, f);
            strata_nn::visit_child("bn1", &self.bn1, f);
        }
    }
    let net = Net {
        conv: Conv2d::new(1, 2, 3, &mut seeded_rng(0)).unwrap(),
        bn1: BatchNorm2d::with_config(2, BatchNormConfig::default()),
    };
    let err = GradSampler::new(&net).err().expect("refused");
    assert!(
        matches!(&err, PrivacyError::BatchNorm { layer } if layer == "bn1"),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("bn1") && msg.contains("GroupNorm") && msg.contains("LayerNorm"),
        "{msg}"
    );
    let seq = Sequential::<f64>::new()
        .push(Conv2d::new(1, 2, 3, &mut seeded_rng(0)).unwrap())
        .push(BatchNorm2d::with_config(2, BatchNormConfig::default()))
        .push(ReLU)
        .push(Flatten::default());
    let err = DpSgd::new(
        &seq,
        DpSgdConfig::new(1.0, 1.0, 0.1, 8.0),
        GaussianNoise::seeded(0),
    )
    .err()
    .unwrap();
    assert!(
        matches!(&err, PrivacyError::BatchNorm { layer } if layer == "1"),
        "{err}"
    );
}

#[test]
fn batch_norm_without_running_statistics_is_refused_when_it_runs() {
    // No running statistics: nothing in the state says "BatchNorm", but the forward
    // normalises by the batch's statistics, which the capture sees.
    let no_stats = BatchNormConfig {
        track_running_stats: false,
        ..BatchNormConfig::default()
    };
    let seq = Sequential::<f64>::new()
        .push(Conv2d::new(1, 2, 3, &mut seeded_rng(0)).unwrap())
        .push(BatchNorm2d::with_config(2, no_stats))
        .push(Flatten::default())
        .push(Linear::new(2 * 4 * 4, 3, true, &mut seeded_rng(1)));
    let x = Var::new(Tensor::<f64>::randn(&[4, 1, 6, 6], &mut seeded_rng(2)));
    let y = IndexTensor::from_vec(vec![0, 1, 2, 0], &[4]).unwrap();
    let config = DpSgdConfig::new(1.0, 1.0, 0.1, 4.0);
    let mut dp = DpSgd::new(&seq, config.clone(), GaussianNoise::seeded(0)).unwrap();
    let err = dp
        .step(4, || {
            cross_entropy(&seq.forward(&x)?, &y, &ClassLossOptions::default())
        })
        .expect_err("refused");
    // Named by its affine weight, `1.weight`.
    assert!(
        matches!(&err, PrivacyError::BatchNorm { layer } if layer == "1"),
        "{err}"
    );
    assert!(err.to_string().contains("GroupNorm"), "{err}");
    // Neither running statistics nor affine parameters: named by what ran.
    let bare = BatchNormConfig {
        affine: false,
        ..no_stats
    };
    let seq = Sequential::<f64>::new()
        .push(Conv2d::new(1, 2, 3, &mut seeded_rng(0)).unwrap())
        .push(BatchNorm2d::with_config(2, bare))
        .push(Flatten::default())
        .push(Linear::new(2 * 4 * 4, 3, true, &mut seeded_rng(1)));
    let mut dp = DpSgd::new(&seq, config, GaussianNoise::seeded(0)).unwrap();
    let err = dp
        .step(4, || {
            cross_entropy(&seq.forward(&x)?, &y, &ClassLossOptions::default())
        })
        .expect_err("refused");
    assert!(
        matches!(&err, PrivacyError::BatchNorm { layer }
            if layer.contains("batch_norm") && layer.contains("[4, 2, 4, 4]")),
        "{err}"
    );
    // The functional batch norm with batch statistics, in a closure: refused too; with
    // running statistics in evaluation mode it mixes nothing and is allowed.
    let fc = Linear::<f64>::new(5, 3, true, &mut seeded_rng(3));
    let sampler = GradSampler::new(&fc).unwrap();
    let x = Var::new(Tensor::<f64>::randn(&[4, 5], &mut seeded_rng(4)));
    let batch_stats = sampler.capture(4, || -> strata_nn::Result<Var<f64>> {
        let h = strata_nn::functional::batch_norm(
            &fc.forward(&x)?,
            None,
            None,
            None,
            None,
            true,
            0.1,
            1e-5,
        )?;
        Ok(h.square().sum_all())
    });
    assert!(matches!(batch_stats, Err(PrivacyError::BatchNorm { .. })));
    let (mean, var) = (Var::new(Tensor::zeros(&[3])), Var::new(Tensor::ones(&[3])));
    let running = sampler.capture(4, || -> strata_nn::Result<Var<f64>> {
        let h = strata_nn::functional::batch_norm(
            &fc.forward(&x)?,
            Some(&mean),
            Some(&var),
            None,
            None,
            false,
            0.1,
            1e-5,
        )?;
        Ok(h.square().sum_all())
    });
    assert!(running.is_ok());
}

#[test]
fn a_parameter_used_by_an_op_without_a_rule_is_refused() {
    let m = Linear::<f64>::new(3, 2, false, &mut seeded_rng(0));
    let sampler = GradSampler::new(&m).unwrap();
    let x = Var::new(Tensor::<f64>::ones(&[4, 3]));
    // x·Wᵀ written with matmul instead of the linear op.
    let err = sampler
        .capture(4, || -> strata_autograd::Result<Var<f64>> {
            Ok(x.matmul(&m.weight.t()?)?.sum_all())
        })
        .err()
        .unwrap();
    assert!(
        matches!(&err, PrivacyError::Unsupported { param, op: "t" } if param == "weight"),
        "{err}"
    );
}

#[test]
fn batches_of_the_wrong_layout_and_bad_settings_are_errors() {
    let m = model(0);
    let sampler = GradSampler::new(&m).unwrap();
    let x = Var::new(Tensor::<f64>::ones(&[4, 5]));
    // Told 3 samples, given 4.
    let err = sampler
        .capture(3, || m.forward(&x).map(|y| y.sum_all()))
        .err()
        .unwrap();
    assert!(matches!(err, PrivacyError::Batch(_)), "{err}");
    for bad in [
        DpSgdConfig::new(0.0, 1.0, 0.1, 8.0),
        DpSgdConfig::new(1.0, -1.0, 0.1, 8.0),
        DpSgdConfig::new(1.0, 1.0, 1.5, 8.0),
        DpSgdConfig::new(1.0, 1.0, 0.1, 0.0),
        DpSgdConfig {
            clipping: Clipping::PerLayerThresholds(vec![1.0]),
            ..DpSgdConfig::new(1.0, 1.0, 0.1, 8.0)
        },
    ] {
        assert!(matches!(
            DpSgd::new(&m, bad, GaussianNoise::seeded(0)),
            Err(PrivacyError::Config { .. })
        ));
    }
    let mut dp = DpSgd::new(
        &m,
        DpSgdConfig::new(1.0, 1.0, 0.1, 8.0),
        GaussianNoise::seeded(0),
    )
    .unwrap();
    assert!(dp.finish_step().is_err(), "a step needs a batch first");
}
