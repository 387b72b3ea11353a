//! The reference models: each trains on a small slice of its real data set and its loss
//! falls by a stated factor; runs repeat bit for bit; linear regression by gradient
//! descent approaches the closed form, which recovers known coefficients exactly; and
//! checkpoints round-trip.

use crate::common;

use common::{TempDir, data_dir};
use strata_autograd::Var;
use strata_models::ModelsError;
use strata_models::checkpoint;
use strata_models::data::bundled;
use strata_models::data::{Dataset, InMemoryDataset, Labels, Standardizer};
use strata_models::models::{
    Cnn, CnnConfig, LinearRegression, LogisticRegression, Mlp, PolynomialRegression, r2_score,
};
use strata_models::reference::{self, Model, TrainOptions};
use strata_models::train::{self, EpochRecord, Evaluation, Objective, TrainConfig};
use strata_nn::{Forward, Module};
use strata_optim::{Adam, AdamConfig, Optimizer, OptimizerState, Sgd, SgdConfig};
use strata_tensor::{Tensor, seeded_rng};

/// The first `n` samples.
fn head(data: &InMemoryDataset, n: usize) -> InMemoryDataset {
    data.subset(&(0..n.min(data.len())).collect::<Vec<_>>())
}

/// An 80/20 split, standardised on the training part, as the reference trainings do.
fn standardized_split(data: InMemoryDataset, seed: u64) -> (InMemoryDataset, InMemoryDataset) {
    let mut parts = data.split(&[0.8, 0.2], seed).unwrap();
    let mut test = parts.pop().unwrap();
    let mut train = parts.pop().unwrap();
    let st = Standardizer::fit(&train);
    st.apply(&mut train).unwrap();
    st.apply(&mut test).unwrap();
    (train, test)
}

fn digits_slices(train_n: usize, test_n: usize) -> (InMemoryDataset, InMemoryDataset) {
    let all = bundled::digits(&data_dir()).unwrap();
    let mut parts = all.split(&[0.8, 0.2], 0).unwrap();
    let test = parts.pop().unwrap();
    let train = parts.pop().unwrap();
    (head(&train, train_n), head(&test, test_n))
}

struct Run {
    before: Evaluation,
    after: Evaluation,
    history: Vec<EpochRecord>,
    params: Vec<Vec<f32>>,
}

/// Trains `model` on `train` and evaluates it on `train` before and after.
fn run(
    model: &mut dyn Forward,
    opt: &mut dyn Optimizer,
    train: &InMemoryDataset,
    test: &InMemoryDataset,
    objective: Objective,
    epochs: usize,
    batch_size: usize,
) -> Run {
    run_scheduled(model, opt, train, test, objective, epochs, batch_size, None)
}

/// [`run`], optionally with a one-cycle schedule peaking at `one_cycle_max_lr`.
#[allow(clippy::too_many_arguments)]
fn run_scheduled(
    model: &mut dyn Forward,
    opt: &mut dyn Optimizer,
    train: &InMemoryDataset,
    test: &InMemoryDataset,
    objective: Objective,
    epochs: usize,
    batch_size: usize,
    one_cycle_max_lr: Option<f64>,
) -> Run {
    let before = train::evaluate(&*model, train, objective, batch_size).unwrap();
    let config = TrainConfig {
        epochs,
        batch_size,
        seed: 1,
        progress: false,
        one_cycle_max_lr,
    };
    let mut seen = 0;
    let history = train::fit(model, opt, train, test, objective, &config, |r| {
        seen += 1;
        assert_eq!(r.epoch, seen);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, epochs);
    let after = train::evaluate(&*model, train, objective, batch_size).unwrap();
    let params = model.parameters().iter().map(|p| p.to_vec()).collect();
    Run {
        before,
        after,
        history,
        params,
    }
}

/// The loss on the training data fell by at least `factor`.
#[track_caller]
fn assert_loss_falls(name: &str, r: &Run, factor: f64) {
    eprintln!(
        "{name}: train loss {:.4} -> {:.4} (x{:.1}), epochs' train losses {:?}",
        r.before.loss,
        r.after.loss,
        r.before.loss / r.after.loss,
        r.history.iter().map(|h| h.train_loss).collect::<Vec<_>>()
    );
    assert!(
        r.after.loss.is_finite() && r.after.loss * factor <= r.before.loss,
        "{name}: loss {} -> {}, wanted a fall by {factor}x",
        r.before.loss,
        r.after.loss
    );
    // The epochs' mean training losses fall too.
    let first = r.history.first().unwrap().train_loss;
    let last = r.history.last().unwrap().train_loss;
    assert!(last < first, "{name}: epoch train loss {first} -> {last}");
}

fn cnn_digits(seed: u64) -> Run {
    let (train, test) = digits_slices(512, 128);
    let mut model = Cnn::new(CnnConfig::DIGITS, &mut seeded_rng(seed)).unwrap();
    // Adam under a one-cycle schedule, as the reference training does.
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: 5e-3,
            ..AdamConfig::default()
        },
    )
    .unwrap();
    run_scheduled(
        &mut model,
        &mut opt,
        &train,
        &test,
        Objective::CrossEntropy,
        6,
        32,
        Some(5e-3),
    )
}

#[test]
fn cnn_learns_the_8x8_digits() {
    let r = cnn_digits(0);
    assert_loss_falls("cnn digits", &r, 10.0);
    let acc = r.history.last().unwrap().test.accuracy.unwrap();
    assert!(acc > 0.8, "test accuracy {acc}");
    assert!(r.after.accuracy.unwrap() > 0.9);
}

fn mlp_digits(seed: u64) -> Run {
    let (train, test) = digits_slices(256, 128);
    let mut model = Mlp::new(&[64, 64, 10], &mut seeded_rng(seed)).unwrap();
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: 5e-3,
            ..AdamConfig::default()
        },
    )
    .unwrap();
    run(
        &mut model,
        &mut opt,
        &train,
        &test,
        Objective::CrossEntropy,
        10,
        32,
    )
}

#[test]
fn mlp_learns_the_8x8_digits() {
    let r = mlp_digits(0);
    assert_loss_falls("mlp digits", &r, 5.0);
    assert!(r.history.last().unwrap().test.accuracy.unwrap() > 0.8);
}

#[test]
fn binary_logistic_regression_on_breast_cancer() {
    let (train, test) = standardized_split(bundled::breast_cancer(&data_dir()).unwrap(), 0);
    let train = head(&train, 200);
    let mut model = LogisticRegression::new(30, 2, &mut seeded_rng(0));
    assert!(model.is_binary());
    assert_eq!(model.classes(), 2);
    assert_eq!(model.linear.weight.shape(), &[1, 30]);
    let mut opt = Sgd::new(
        model.parameters(),
        SgdConfig {
            lr: 0.05,
            ..SgdConfig::default()
        },
    )
    .unwrap();
    let r = run(
        &mut model,
        &mut opt,
        &train,
        &test,
        Objective::BinaryLogits,
        5,
        16,
    );
    assert_loss_falls("logreg breast cancer", &r, 3.0);
    assert!(r.history.last().unwrap().test.accuracy.unwrap() > 0.9);
}

#[test]
fn multinomial_logistic_regression_on_iris() {
    let (train, test) = standardized_split(bundled::iris(&data_dir()).unwrap(), 0);
    let mut model = LogisticRegression::new(4, 3, &mut seeded_rng(0));
    assert!(!model.is_binary());
    assert_eq!(model.linear.weight.shape(), &[3, 4]);
    let mut opt = Sgd::new(
        model.parameters(),
        SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        },
    )
    .unwrap();
    let r = run(
        &mut model,
        &mut opt,
        &train,
        &test,
        Objective::CrossEntropy,
        20,
        16,
    );
    assert_loss_falls("logreg iris", &r, 3.0);
    assert!(r.history.last().unwrap().test.accuracy.unwrap() > 0.85);
}

fn xy(data: &InMemoryDataset) -> (Tensor<f32>, Tensor<f32>) {
    let n = data.len();
    let f = data.sample_shape().iter().product();
    let Labels::Values(y) = data.labels() else {
        panic!("regression data")
    };
    (
        Tensor::from_vec(data.features().to_vec(), &[n, f]).unwrap(),
        Tensor::from_vec(y.clone(), &[n]).unwrap(),
    )
}

/// Full-batch gradient descent on the standardised diabetes data approaches the
/// least-squares optimum: its training loss within 1 %, its test R² within 0.01.
#[test]
fn linear_regression_gradient_descent_approaches_the_closed_form() {
    let (train, test) = standardized_split(bundled::diabetes(&data_dir()).unwrap(), 0);
    let mut model = LinearRegression::new(10, &mut seeded_rng(0));
    let mut opt = Sgd::new(
        model.parameters(),
        SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        },
    )
    .unwrap();
    let r = run(
        &mut model,
        &mut opt,
        &train,
        &test,
        Objective::Mse,
        600,
        train.len(),
    );
    assert_loss_falls("linreg diabetes", &r, 5.0);

    let exact = LinearRegression::new(10, &mut seeded_rng(1));
    let (x, y) = xy(&train);
    let (w, b) = exact.fit_closed_form(&x, &y).unwrap();
    let best = train::evaluate(&exact, &train, Objective::Mse, 1024).unwrap();
    let exact_test = train::evaluate(&exact, &test, Objective::Mse, 1024).unwrap();
    let gd_test = r.history.last().unwrap().test;
    eprintln!(
        "closed form: train mse {} test r2 {:?}; gd: train mse {} test r2 {:?}",
        best.loss, exact_test.r2, r.after.loss, gd_test.r2
    );
    assert!(
        r.after.loss >= best.loss * (1.0 - 1e-5),
        "gradient descent beat least squares: {} < {}",
        r.after.loss,
        best.loss
    );
    assert!(
        r.after.loss <= best.loss * 1.01,
        "{} vs the optimum {}",
        r.after.loss,
        best.loss
    );
    assert!((gd_test.r2.unwrap() - exact_test.r2.unwrap()).abs() < 0.01);
    // The intercept of standardised features is the mean target.
    let Labels::Values(yv) = train.labels() else {
        unreachable!()
    };
    let mean = yv.iter().map(|&v| v as f64).sum::<f64>() / yv.len() as f64;
    assert!((b - mean).abs() < 1e-3, "{b} vs {mean}");
    let gd_bias = r.params[1][0] as f64;
    assert!((gd_bias - mean).abs() < 0.01 * mean, "{gd_bias} vs {mean}");
    // bmi (feature 2) and s5 (feature 8) are the strongest predictors.
    assert!(w[2] > 15.0 && w[8] > 15.0, "{w:?}");
    // The test R² of the bundled split is in the usual range for this data set.
    assert!(
        (0.3..0.7).contains(&exact_test.r2.unwrap()),
        "{:?}",
        exact_test.r2
    );
}

#[test]
fn polynomial_regression_of_progression_on_bmi() {
    let all = bundled::diabetes(&data_dir()).unwrap();
    let bmi: Vec<f32> = all.features().chunks(10).map(|r| r[2]).collect();
    let Labels::Values(y) = all.labels().clone() else {
        unreachable!()
    };
    let data = InMemoryDataset::new(bmi, &[1], Labels::Values(y)).unwrap();
    let mut parts = data.split(&[0.8, 0.2], 0).unwrap();
    let test = parts.pop().unwrap();
    let train = parts.pop().unwrap();
    let mut model = PolynomialRegression::new(3, &mut seeded_rng(0)).unwrap();
    assert_eq!(model.degree(), 3);
    let (x, _) = xy(&train);
    model.fit_standardization(&x).unwrap();
    let mut opt = Sgd::new(
        model.parameters(),
        SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        },
    )
    .unwrap();
    let r = run(
        &mut model,
        &mut opt,
        &train,
        &test,
        Objective::Mse,
        300,
        train.len(),
    );
    assert_loss_falls("polyreg bmi", &r, 5.0);
    // The optimum: least squares on the standardised powers.
    let p = model.powers(&x).unwrap();
    let st = model.state_dict();
    let (mean, std) = (
        st.get("feature_mean").unwrap().to_vec(),
        st.get("feature_std").unwrap().to_vec(),
    );
    let z: Vec<f32> = p
        .to_vec()
        .chunks(3)
        .flat_map(|row| {
            (0..3)
                .map(|k| (row[k] - mean[k]) / std[k])
                .collect::<Vec<_>>()
        })
        .collect();
    let (_, y) = xy(&train);
    let exact = LinearRegression::new(3, &mut seeded_rng(0));
    exact
        .fit_closed_form(&Tensor::from_vec(z, &[train.len(), 3]).unwrap(), &y)
        .unwrap();
    let best = no_grad_mse(&exact, &train, &mean, &std);
    eprintln!(
        "polyreg: gd train mse {} vs least squares {best}",
        r.after.loss
    );
    assert!(r.after.loss <= best * 1.02, "{} vs {best}", r.after.loss);
    // The fitted standardisation holds the statistics of bmi's powers (bmi's mean is about 26).
    assert!(
        mean[0] > 20.0 && mean[0] < 32.0 && mean[1] > mean[0] * mean[0],
        "{mean:?}"
    );
}

/// The training MSE of a linear model on standardised powers of `train`'s single input.
fn no_grad_mse(
    model: &LinearRegression,
    train: &InMemoryDataset,
    mean: &[f32],
    std: &[f32],
) -> f64 {
    let (x, y) = xy(train);
    let z: Vec<f32> = x
        .to_vec()
        .iter()
        .flat_map(|&v| {
            (1..=3).map(move |k| (v.powi(k) - mean[k as usize - 1]) / std[k as usize - 1])
        })
        .collect();
    let out = strata_autograd::no_grad(|| {
        model.forward(&Var::new(Tensor::from_vec(z, &[train.len(), 3]).unwrap()))
    })
    .unwrap();
    let preds = out.to_vec();
    let y = y.to_vec();
    preds
        .iter()
        .zip(&y)
        .map(|(p, t)| (*p as f64 - *t as f64).powi(2))
        .sum::<f64>()
        / y.len() as f64
}

/// The bits of everything a run computes, timings aside.
fn fingerprint(r: &Run) -> Vec<u64> {
    let mut bits = vec![r.before.loss.to_bits(), r.after.loss.to_bits()];
    for h in &r.history {
        bits.push(h.train_loss.to_bits());
        bits.push(h.test.loss.to_bits());
        bits.extend(h.test.accuracy.map(f64::to_bits));
        bits.extend(h.test.r2.map(f64::to_bits));
    }
    bits.extend(r.params.iter().flatten().map(|v| u64::from(v.to_bits())));
    bits
}

#[test]
fn same_seed_same_bits_cnn() {
    let a = cnn_digits(5);
    let b = cnn_digits(5);
    assert_eq!(fingerprint(&a), fingerprint(&b));
    assert_ne!(fingerprint(&a), fingerprint(&cnn_digits(6)));
}

#[test]
fn same_seed_same_bits_mlp_across_thread_counts() {
    let a = mlp_digits(3);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| mlp_digits(3));
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap()
        .install(|| mlp_digits(3));
    assert_eq!(fingerprint(&a), fingerprint(&one), "1 thread");
    assert_eq!(fingerprint(&a), fingerprint(&three), "3 threads");
}

#[test]
fn same_seed_same_metrics_through_the_reference_training() {
    let dir = TempDir::new("ref-determinism");
    let opts = |out: &str, seed: u64| TrainOptions {
        epochs: Some(2),
        seed,
        dataset: Some("digits".into()),
        limit: Some(200),
        progress: false,
        ..TrainOptions::new(Model::named("cnn").unwrap(), dir.join(out))
    };
    let a = reference::train(&opts("a", 4)).unwrap();
    let b = reference::train(&opts("b", 4)).unwrap();
    let c = reference::train(&opts("c", 5)).unwrap();
    for key in ["train_loss", "test_loss", "test_accuracy"] {
        let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        assert_eq!(x.to_bits(), y.to_bits(), "{key}: {x} vs {y}");
    }
    assert_ne!(a["train_loss"], c["train_loss"]);
    // The weights file is the same byte for byte.
    let weights = |run: &str| {
        std::fs::read(
            dir.join(run)
                .join("checkpoint")
                .join(checkpoint::MODEL_FILE),
        )
        .unwrap()
    };
    assert!(
        weights("a") == weights("b"),
        "the weights of two runs with one seed differ"
    );
    assert!(weights("a") != weights("c"));
    // The optimizer state holds the same values (its file's metadata is a hash map, whose
    // order may differ from one run to the next).
    let opt = |run: &str| {
        OptimizerState::<f32>::load(
            &dir.join(run)
                .join("checkpoint")
                .join(checkpoint::OPTIMIZER_FILE),
        )
        .unwrap()
    };
    let (oa, ob) = (opt("a"), opt("b"));
    assert_eq!(
        (&oa.optimizer, &oa.group_lrs, &oa.group_sizes, &oa.hyper),
        (&ob.optimizer, &ob.group_lrs, &ob.group_sizes, &ob.hyper)
    );
    assert_eq!(oa.tensors.len(), ob.tensors.len());
    for ((ka, ta), (kb, tb)) in oa.tensors.iter().zip(&ob.tensors) {
        assert_eq!(ka, kb);
        assert!(
            ta.to_vec()
                .iter()
                .map(|v| v.to_bits())
                .eq(tb.to_vec().iter().map(|v| v.to_bits())),
            "{ka} differs"
        );
    }
}

#[test]
fn closed_form_recovers_exact_coefficients() {
    // y = 2 + 3·x1 - 1.5·x2 + 0.25·x3, exactly representable.
    let rows = [
        [0.0, 0.0, 0.0],
        [1.0, 0.0, 2.0],
        [0.0, 1.0, -4.0],
        [2.0, 3.0, 1.0],
        [-1.0, 2.0, 8.0],
        [4.0, -2.0, 0.5],
        [0.5, 0.5, 0.5],
    ];
    let y: Vec<f32> = rows
        .iter()
        .map(|r| 2.0 + 3.0 * r[0] - 1.5 * r[1] + 0.25 * r[2])
        .collect();
    let x = Tensor::from_vec(rows.iter().flatten().copied().collect(), &[rows.len(), 3]).unwrap();
    let y = Tensor::from_vec(y, &[rows.len()]).unwrap();
    let (w, b) = LinearRegression::closed_form(&x, &y).unwrap();
    for (got, want) in w.iter().zip([3.0, -1.5, 0.25]) {
        assert!((got - want).abs() < 1e-10, "{w:?}");
    }
    assert!((b - 2.0).abs() < 1e-10, "{b}");
    // fit_closed_form puts them into the model, whose predictions are then exact.
    let model = LinearRegression::new(3, &mut seeded_rng(0));
    model.fit_closed_form(&x, &y).unwrap();
    assert_eq!(model.linear.weight.to_vec(), [3.0, -1.5, 0.25]);
    assert_eq!(model.linear.bias.as_ref().unwrap().to_vec(), [2.0]);
    let pred = model.forward(&Var::new(x.clone())).unwrap();
    assert_eq!(pred.shape(), &[rows.len()]);
    assert_eq!(pred.to_vec(), y.to_vec());
    assert_eq!(r2_score(&pred.to_vec(), &y.to_vec()), 1.0);
    // An overdetermined, noisy line: the least-squares line of (0,1), (1,1), (2,3), (3,3)
    // is y = 0.8 + 0.8·x.
    let x = Tensor::from_vec(vec![0.0, 1.0, 2.0, 3.0], &[4, 1]).unwrap();
    let y = Tensor::from_vec(vec![1.0, 1.0, 3.0, 3.0], &[4]).unwrap();
    let (w, b) = LinearRegression::closed_form(&x, &y).unwrap();
    assert!(
        (w[0] - 0.8).abs() < 1e-12 && (b - 0.8).abs() < 1e-12,
        "{w:?} {b}"
    );
}

#[test]
fn closed_form_errors() {
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    let y = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap();
    match LinearRegression::closed_form(&x, &y) {
        Err(ModelsError::Config(msg)) => assert!(
            msg.contains("2 samples cannot determine 3 coefficients"),
            "{msg}"
        ),
        other => panic!("expected a config error, got {other:?}"),
    }
    let flat = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
    let y3 = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
    assert!(matches!(
        LinearRegression::closed_form(&flat, &y3),
        Err(ModelsError::Config(_))
    ));
    // A target of another length is an error, not a panic.
    let x3 = Tensor::from_vec(vec![1.0, 2.0, 4.0], &[3, 1]).unwrap();
    assert!(LinearRegression::closed_form(&x3, &y).is_err());
}

#[test]
fn r2_score_values() {
    assert_eq!(r2_score(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 1.0);
    assert_eq!(r2_score(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]), 0.0);
    assert_eq!(r2_score(&[3.0, 2.0, 1.0], &[1.0, 2.0, 3.0]), -3.0);
    assert_eq!(r2_score(&[1.0, 1.0], &[5.0, 5.0]), 0.0);
}

#[test]
fn model_construction_and_state_dict_keys() {
    let mut rng = seeded_rng(0);
    let cnn = Cnn::new(CnnConfig::DIGITS, &mut rng).unwrap();
    let keys: Vec<String> = cnn.named_parameters().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "conv1.weight",
            "conv1.bias",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias"
        ]
    );
    assert_eq!(cnn.fc1.weight.shape(), &[128, 32 * 4 * 4]);
    assert_eq!(cnn.config(), CnnConfig::DIGITS);
    let out = cnn
        .forward(&Var::new(Tensor::zeros(&[3, 1, 8, 8])))
        .unwrap();
    assert_eq!(out.shape(), &[3, 10]);
    let mnist = Cnn::new(CnnConfig::MNIST, &mut rng).unwrap();
    assert_eq!(mnist.fc1.weight.shape(), &[128, 32 * 14 * 14]);
    for bad in [
        CnnConfig {
            in_channels: 1,
            image_size: [7, 8],
            classes: 10,
        },
        CnnConfig {
            in_channels: 0,
            image_size: [8, 8],
            classes: 10,
        },
        CnnConfig {
            in_channels: 1,
            image_size: [8, 8],
            classes: 0,
        },
        CnnConfig {
            in_channels: 1,
            image_size: [0, 0],
            classes: 10,
        },
    ] {
        assert!(
            matches!(Cnn::new(bad, &mut rng), Err(ModelsError::Config(_))),
            "{bad:?}"
        );
    }
    // A CNN for 8×8 images rejects 28×28 ones with an error.
    assert!(
        cnn.forward(&Var::new(Tensor::zeros(&[1, 1, 28, 28])))
            .is_err()
    );

    let mlp = Mlp::new(&[64, 32, 16, 10], &mut rng).unwrap();
    let keys: Vec<String> = mlp.named_parameters().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "layers.0.weight",
            "layers.0.bias",
            "layers.2.weight",
            "layers.2.bias",
            "layers.4.weight",
            "layers.4.bias"
        ]
    );
    assert_eq!(mlp.sizes(), &[64, 32, 16, 10]);
    // Images are flattened.
    assert_eq!(
        mlp.forward(&Var::new(Tensor::zeros(&[2, 1, 8, 8])))
            .unwrap()
            .shape(),
        &[2, 10]
    );
    assert!(matches!(
        Mlp::new(&[64], &mut rng),
        Err(ModelsError::Config(_))
    ));
    assert!(matches!(
        Mlp::new(&[64, 0, 10], &mut rng),
        Err(ModelsError::Config(_))
    ));

    assert!(matches!(
        PolynomialRegression::new(0, &mut rng),
        Err(ModelsError::Config(_))
    ));
    let poly = PolynomialRegression::new(2, &mut rng).unwrap();
    let keys: Vec<String> = poly.state_dict().keys().map(String::from).collect();
    assert!(
        keys.contains(&"feature_mean".to_string()) && keys.contains(&"feature_std".to_string()),
        "{keys:?}"
    );
    assert!(poly.powers(&Tensor::zeros(&[3, 2])).is_err());
    assert!(poly.forward(&Var::new(Tensor::zeros(&[3]))).is_err());
    let p = poly
        .powers(&Tensor::from_vec(vec![2.0, -3.0], &[2, 1]).unwrap())
        .unwrap();
    assert_eq!(p.to_vec(), [2.0, 4.0, -3.0, 9.0]);
}

#[test]
fn fit_errors() {
    let data = InMemoryDataset::new(
        vec![1.0, 2.0, 3.0],
        &[1],
        Labels::Values(vec![1.0, 2.0, 3.0]),
    )
    .unwrap();
    let mut model = LinearRegression::new(1, &mut seeded_rng(0));
    let mut opt = Sgd::new(model.parameters(), SgdConfig::default()).unwrap();
    for (epochs, batch_size) in [(0, 2), (2, 0)] {
        let config = TrainConfig {
            epochs,
            batch_size,
            seed: 0,
            progress: false,
            one_cycle_max_lr: None,
        };
        match train::fit(
            &mut model,
            &mut opt,
            &data,
            &data,
            Objective::Mse,
            &config,
            |_| Ok(()),
        ) {
            Err(ModelsError::Config(msg)) => assert!(msg.contains("must be positive"), "{msg}"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }
    // Regression data for a classification objective.
    let config = TrainConfig {
        epochs: 1,
        batch_size: 2,
        seed: 0,
        progress: false,
        one_cycle_max_lr: None,
    };
    match train::fit(
        &mut model,
        &mut opt,
        &data,
        &data,
        Objective::CrossEntropy,
        &config,
        |_| Ok(()),
    ) {
        Err(ModelsError::Config(msg)) => {
            assert!(msg.contains("needs labels the data does not have"), "{msg}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    // An error of the callback stops training.
    let mut calls = 0;
    let result = train::fit(
        &mut model,
        &mut opt,
        &data,
        &data,
        Objective::Mse,
        &TrainConfig {
            epochs: 5,
            ..config
        },
        |_| {
            calls += 1;
            Err(ModelsError::Config("stop".into()))
        },
    );
    assert!(matches!(result, Err(ModelsError::Config(m)) if m == "stop"));
    assert_eq!(calls, 1);
    // Raw (unstandardised) diabetes features with a large step: divergence is reported.
    let diabetes = bundled::diabetes(&data_dir()).unwrap();
    let mut model = LinearRegression::new(10, &mut seeded_rng(0));
    let mut opt = Sgd::new(
        model.parameters(),
        SgdConfig {
            lr: 1.0,
            ..SgdConfig::default()
        },
    )
    .unwrap();
    let config = TrainConfig {
        epochs: 50,
        batch_size: 442,
        seed: 0,
        progress: false,
        one_cycle_max_lr: None,
    };
    match train::fit(
        &mut model,
        &mut opt,
        &diabetes,
        &diabetes,
        Objective::Mse,
        &config,
        |_| Ok(()),
    ) {
        Err(ModelsError::Config(msg)) => assert!(msg.contains("training diverged"), "{msg}"),
        other => panic!("expected divergence, got {other:?}"),
    }
}

/// Weights and optimizer state round-trip through a checkpoint: a resumed run continues
/// bit for bit; a checkpoint of another model is refused.
#[test]
fn checkpoints_round_trip_and_resume_bit_for_bit() {
    let dir = TempDir::new("checkpoint");
    let (train, _) = digits_slices(64, 1);
    let batch = strata_models::data::DataLoader::new(&train, 64)
        .epoch(0)
        .next()
        .unwrap();
    let step = |model: &Mlp, opt: &mut Adam| {
        opt.zero_grad();
        let out = model.forward(&Var::new(batch.x.clone())).unwrap();
        train::batch_loss(Objective::CrossEntropy, &out, &batch)
            .unwrap()
            .backward()
            .unwrap();
        opt.step().unwrap();
    };
    let a = Mlp::new(&[64, 16, 10], &mut seeded_rng(0)).unwrap();
    let mut opt_a = Adam::new(a.parameters(), AdamConfig::default()).unwrap();
    for _ in 0..3 {
        step(&a, &mut opt_a);
    }
    let record = serde_json::json!({ "model": "mlp", "note": "test" });
    let ck = dir.join("ck");
    checkpoint::save(&ck, &a, &opt_a, &record, None::<&()>).unwrap();
    for f in [
        checkpoint::MODEL_FILE,
        checkpoint::OPTIMIZER_FILE,
        checkpoint::RECORD_FILE,
    ] {
        assert!(checkpoint::file(&ck, f).is_file(), "{f}");
    }
    assert_eq!(checkpoint::read_record(&ck).unwrap(), record);

    let b = Mlp::new(&[64, 16, 10], &mut seeded_rng(99)).unwrap();
    checkpoint::load_model(&ck, &b).unwrap();
    let mut opt_b = Adam::new(b.parameters(), AdamConfig::default()).unwrap();
    checkpoint::load_optimizer(&ck, &mut opt_b).unwrap();
    let bits = |m: &Mlp| {
        m.parameters()
            .iter()
            .flat_map(|p| p.to_vec())
            .map(f32::to_bits)
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&a), bits(&b));
    step(&a, &mut opt_a);
    step(&b, &mut opt_b);
    assert_eq!(bits(&a), bits(&b), "the resumed step differs");

    // Another architecture, another optimizer.
    let other = Mlp::new(&[64, 32, 10], &mut seeded_rng(0)).unwrap();
    match checkpoint::load_model(&ck, &other) {
        Err(ModelsError::Checkpoint { path, msg }) => {
            assert_eq!(path, ck);
            assert!(msg.contains("do not fit this model"), "{msg}");
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    let cnn = Cnn::new(CnnConfig::DIGITS, &mut seeded_rng(0)).unwrap();
    assert!(matches!(
        checkpoint::load_model(&ck, &cnn),
        Err(ModelsError::Checkpoint { .. })
    ));
    let mut sgd = Sgd::new(b.parameters(), SgdConfig::default()).unwrap();
    assert!(matches!(
        checkpoint::load_optimizer(&ck, &mut sgd),
        Err(ModelsError::Checkpoint { .. })
    ));

    // Missing or broken checkpoints.
    let missing = dir.join("missing");
    match checkpoint::read_record(&missing) {
        Err(e @ ModelsError::Checkpoint { .. }) => assert!(
            e.to_string().contains("no such checkpoint directory"),
            "{e}"
        ),
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    assert!(matches!(
        checkpoint::load_model(&missing, &b),
        Err(ModelsError::Checkpoint { .. })
    ));
    std::fs::write(ck.join(checkpoint::RECORD_FILE), "{ not json").unwrap();
    match checkpoint::read_record(&ck) {
        Err(e @ ModelsError::Checkpoint { .. }) => {
            assert!(e.to_string().contains("not valid JSON"), "{e}")
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    std::fs::remove_file(ck.join(checkpoint::RECORD_FILE)).unwrap();
    assert!(matches!(
        checkpoint::read_record(&ck),
        Err(ModelsError::Checkpoint { .. })
    ));
    std::fs::write(ck.join(checkpoint::MODEL_FILE), b"garbage").unwrap();
    assert!(matches!(
        checkpoint::load_model(&ck, &b),
        Err(ModelsError::Checkpoint { .. })
    ));
}

/// Digits through dropout (p = 0.5) and a linear layer: `fit` trains in train mode and
/// evaluates in eval mode, so each epoch's test figures are deterministic (equal to a
/// fresh `evaluate` of the same parameters) and the model ends in eval mode.
struct DropoutLinear {
    dropout: strata_nn::Dropout,
    linear: strata_nn::Linear<f32>,
}

impl Module for DropoutLinear {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<f32>, strata_nn::StateKind)) {
        strata_nn::visit_child("linear", &self.linear, f);
    }
    fn set_training(&mut self, training: bool) {
        Module::<f32>::set_training(&mut self.dropout, training);
    }
}

impl Forward for DropoutLinear {
    fn forward(&self, x: &Var<f32>) -> strata_nn::Result<Var<f32>> {
        let flat = x.reshape([x.shape()[0], 64])?;
        self.linear.forward(&self.dropout.forward(&flat)?)
    }
}

#[test]
fn fit_trains_in_train_mode_and_evaluates_in_eval_mode() {
    let (train_set, test_set) = digits_slices(256, 128);
    let mut model = DropoutLinear {
        dropout: strata_nn::Dropout::new(0.5, 3).unwrap(),
        linear: strata_nn::Linear::new(64, 10, true, &mut seeded_rng(0)),
    };
    let cfg = SgdConfig {
        lr: 0.05,
        ..SgdConfig::default()
    };
    let mut opt = Sgd::new(model.parameters(), cfg).unwrap();
    let config = TrainConfig {
        epochs: 2,
        batch_size: 32,
        seed: 0,
        progress: false,
        one_cycle_max_lr: None,
    };
    let history = train::fit(
        &mut model,
        &mut opt,
        &train_set,
        &test_set,
        Objective::CrossEntropy,
        &config,
        |_| Ok(()),
    )
    .unwrap();
    let last = &history.last().unwrap().test;
    for _ in 0..2 {
        let again = train::evaluate(&model, &test_set, Objective::CrossEntropy, 32).unwrap();
        assert_eq!(again.loss, last.loss);
        assert_eq!(again.accuracy, last.accuracy);
    }
    // Back in train mode, dropout makes two passes differ.
    model.train();
    let x = Var::new(Tensor::from_vec(test_set.features()[..8 * 64].to_vec(), &[8, 64]).unwrap());
    let (a, b) = (model.forward(&x).unwrap(), model.forward(&x).unwrap());
    assert_ne!(a.to_vec(), b.to_vec());
}
