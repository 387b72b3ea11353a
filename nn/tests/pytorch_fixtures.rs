//! strata-nn against PyTorch: every layer and loss given the inputs and parameters of a
//! fixture written by `tests/fixtures/generate.py`, compared on outputs and gradients.

use std::path::PathBuf;

use strata_autograd::Var;
use strata_nn::loss::{self, ClassLossOptions, KlReduction, Reduction};
use strata_nn::*;
use strata_tensor::{IndexTensor, Pool2dParams, Tensor, seeded_rng};

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"))
}

pub(crate) fn load(name: &str) -> StateDict<f64> {
    StateDict::load_safetensors(&fixture_path(name)).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn get(sd: &StateDict<f64>, key: &str) -> Tensor<f64> {
    sd.get(key)
        .unwrap_or_else(|| panic!("fixture lacks {key}"))
        .clone()
}

pub(crate) fn indices(t: &Tensor<f64>) -> IndexTensor {
    IndexTensor::from_tensor(t).unwrap()
}

#[track_caller]
pub(crate) fn assert_close(got: &Tensor<f64>, want: &Tensor<f64>, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    for (i, (g, w)) in got.to_vec().iter().zip(want.to_vec()).enumerate() {
        let tol = 1e-10 + 1e-8 * w.abs();
        assert!(
            (g - w).abs() <= tol || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: strata {g}, PyTorch {w}"
        );
    }
}

/// Loads the fixture's parameters into `module`, runs it, and compares the output, the
/// gradients of `sum(y · proj)` and the buffers after the step.
fn check_layer(name: &str, module: &dyn Forward<f64>) {
    let sd = load(name);
    let mut params = StateDict::new();
    for (k, t) in sd.iter() {
        if let Some(key) = k.strip_prefix("p.") {
            params.insert(key, t.clone());
        }
    }
    module.load_state_dict(&params, true).unwrap();
    let x = Var::parameter(get(&sd, "x"));
    let y = module.forward(&x).unwrap();
    assert_close(&y.value(), &get(&sd, "y"), &format!("{name} output"));
    y.mul(&Var::new(get(&sd, "proj")))
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    assert_close(
        &x.grad().unwrap(),
        &get(&sd, "grad_x"),
        &format!("{name} input gradient"),
    );
    for (key, p) in module.named_parameters() {
        assert_close(
            &p.grad().unwrap(),
            &get(&sd, &format!("g.{key}")),
            &format!("{name} {key} gradient"),
        );
    }
    for (key, b) in module.named_buffers() {
        assert_close(
            &b.value(),
            &get(&sd, &format!("after.{key}")),
            &format!("{name} {key} after the step"),
        );
    }
}

fn rng() -> strata_tensor::rand::rngs::StdRng {
    seeded_rng(0)
}

#[test]
fn linear() {
    check_layer("linear", &Linear::<f64>::new(5, 3, true, &mut rng()));
    check_layer(
        "linear_nobias_3d",
        &Linear::<f64>::new(5, 3, false, &mut rng()),
    );
}

#[test]
fn conv2d() {
    let c = Conv2dParams::default().stride(2).padding(1).groups(2);
    check_layer(
        "conv2d",
        &Conv2d::<f64>::with_params(4, 6, [3, 3], c, true, &mut rng()).unwrap(),
    );
    let c = Conv2dParams::default().padding(Padding::Same).dilation(2);
    check_layer(
        "conv2d_same",
        &Conv2d::<f64>::with_params(3, 4, [2, 3], c, false, &mut rng()).unwrap(),
    );
    let c = Conv2dParams {
        stride: [1, 2],
        padding: Padding::Explicit([2, 1]),
        ..Conv2dParams::default()
    };
    check_layer(
        "conv2d_unbatched",
        &Conv2d::<f64>::with_params(2, 3, [3, 3], c, true, &mut rng()).unwrap(),
    );
}

#[test]
fn conv1d() {
    let c = Conv1dParams::default().stride(2).padding(1).groups(2);
    check_layer(
        "conv1d",
        &Conv1d::<f64>::with_params(4, 6, 3, c, true, &mut rng()).unwrap(),
    );
    let c = Conv1dParams::default().padding(Padding::Same);
    check_layer(
        "conv1d_same",
        &Conv1d::<f64>::with_params(3, 2, 4, c, true, &mut rng()).unwrap(),
    );
}

#[test]
fn pooling() {
    check_layer(
        "maxpool2d",
        &MaxPool2d::with_params(Pool2dParams::new(3).stride(2).padding(1).ceil_mode(true)),
    );
    let p = Pool2dParams::new(3)
        .stride(2)
        .padding(1)
        .ceil_mode(true)
        .count_include_pad(false);
    check_layer("avgpool2d", &AvgPool2d::with_params(p));
    check_layer(
        "adaptive_avgpool2d",
        &AdaptiveAvgPool2d {
            output_size: [3, 2],
        },
    );
}

#[test]
fn norms() {
    check_layer("layernorm", &LayerNorm::<f64>::new(&[3, 4]));
    check_layer("rmsnorm", &RMSNorm::<f64>::new(&[6]));
}

#[test]
fn batch_norm_train_then_eval() {
    let mut bn1 = BatchNorm1d::<f64>::new(3);
    check_layer("batchnorm1d", &bn1);
    let cumulative = BatchNormConfig {
        momentum: None,
        ..BatchNormConfig::default()
    };
    let mut bn1_3d = BatchNorm1d::<f64>::with_config(3, cumulative);
    check_layer("batchnorm1d_3d", &bn1_3d);
    let mut bn2 = BatchNorm2d::<f64>::new(3);
    check_layer("batchnorm2d", &bn2);
    assert_eq!(bn2.num_batches_tracked(), Some(1));
    let layers: [(&str, &mut dyn Forward<f64>); 3] = [
        ("batchnorm1d", &mut bn1),
        ("batchnorm1d_3d", &mut bn1_3d),
        ("batchnorm2d", &mut bn2),
    ];
    for (name, layer) in layers {
        layer.eval();
        let sd = load(&format!("{name}_eval"));
        let y = layer.forward(&Var::new(get(&sd, "x"))).unwrap();
        assert_close(&y.value(), &get(&sd, "y"), &format!("{name} eval output"));
    }
}

#[test]
fn activations() {
    let cases: [(&str, &dyn Forward<f64>); 9] = [
        ("relu", &ReLU),
        (
            "leaky_relu",
            &LeakyReLU {
                negative_slope: 0.1,
            },
        ),
        ("gelu", &GELU::default()),
        ("gelu_tanh", &GELU { tanh: true }),
        ("silu", &SiLU),
        ("sigmoid", &Sigmoid),
        ("tanh", &Tanh),
        ("softmax", &Softmax { dim: 1 }),
        ("log_softmax", &LogSoftmax { dim: 0 }),
    ];
    for (name, layer) in cases {
        check_layer(&format!("act_{name}"), layer);
    }
}

#[test]
fn embedding() {
    let sd = load("embedding");
    let emb = Embedding::<f64>::new(10, 4, Some(2), &mut rng()).unwrap();
    emb.weight.set_value(get(&sd, "p.weight")).unwrap();
    let y = emb.forward(&indices(&get(&sd, "idx"))).unwrap();
    assert_close(&y.value(), &get(&sd, "y"), "embedding output");
    y.mul(&Var::new(get(&sd, "proj")))
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    assert_close(
        &emb.weight.grad().unwrap(),
        &get(&sd, "g.weight"),
        "embedding gradient",
    );
}

pub(crate) const REDUCTIONS: [(&str, Reduction); 3] = [
    ("none", Reduction::None),
    ("mean", Reduction::Mean),
    ("sum", Reduction::Sum),
];

/// Runs `f` for each reduction against the fixture `name`, comparing the loss and the
/// gradients of `sum(loss · proj)` for the input and (float targets) the target.
fn check_loss(name: &str, f: impl Fn(&Var<f64>, &StateDict<f64>, Reduction) -> Result<Var<f64>>) {
    let sd = load(name);
    for (key, reduction) in REDUCTIONS {
        let x = Var::parameter(get(&sd, "input"));
        let loss = f(&x, &sd, reduction).unwrap();
        assert_close(
            &loss.value(),
            &get(&sd, &format!("{key}.loss")),
            &format!("{name} {key} loss"),
        );
        loss.mul(&Var::new(get(&sd, &format!("{key}.proj"))))
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        assert_close(
            &x.grad().unwrap(),
            &get(&sd, &format!("{key}.grad_input")),
            &format!("{name} {key} input gradient"),
        );
    }
}

/// As [`check_loss`] for losses with a float target that also gets a gradient.
fn check_loss_with_target(
    name: &str,
    f: impl Fn(&Var<f64>, &Var<f64>, &StateDict<f64>, Reduction) -> Result<Var<f64>>,
) {
    let sd = load(name);
    for (key, reduction) in REDUCTIONS {
        let x = Var::parameter(get(&sd, "input"));
        let t = Var::parameter(get(&sd, "target"));
        let loss = f(&x, &t, &sd, reduction).unwrap();
        assert_close(
            &loss.value(),
            &get(&sd, &format!("{key}.loss")),
            &format!("{name} {key} loss"),
        );
        loss.mul(&Var::new(get(&sd, &format!("{key}.proj"))))
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        assert_close(
            &x.grad().unwrap(),
            &get(&sd, &format!("{key}.grad_input")),
            &format!("{name} {key} input gradient"),
        );
        assert_close(
            &t.grad().unwrap(),
            &get(&sd, &format!("{key}.grad_target")),
            &format!("{name} {key} target gradient"),
        );
    }
}

#[test]
fn pointwise_losses() {
    check_loss_with_target("mse", |x, t, _, r| loss::mse_loss(x, t, r));
    check_loss_with_target("l1", |x, t, _, r| loss::l1_loss(x, t, r));
    check_loss_with_target("smooth_l1", |x, t, _, r| loss::smooth_l1_loss(x, t, r, 0.5));
    check_loss_with_target("huber", |x, t, _, r| loss::huber_loss(x, t, r, 0.7));
}

fn class_options(
    sd: &StateDict<f64>,
    reduction: Reduction,
    smoothing: f64,
) -> ClassLossOptions<f64> {
    ClassLossOptions {
        weight: sd.get("kw.weight").cloned(),
        ignore_index: -100,
        reduction,
        label_smoothing: smoothing,
    }
}

#[test]
fn cross_entropy_and_nll() {
    for (name, smoothing) in [
        ("cross_entropy", 0.0),
        ("cross_entropy_weighted", 0.1),
        ("cross_entropy_smoothed", 0.2),
        ("cross_entropy_4d", 0.0),
    ] {
        check_loss(name, |x, sd, r| {
            loss::cross_entropy(
                x,
                &indices(&get(sd, "target")),
                &class_options(sd, r, smoothing),
            )
        });
    }
    check_loss_with_target("cross_entropy_probs", |x, t, sd, r| {
        loss::cross_entropy_probs(x, t, &class_options(sd, r, 0.1))
    });
    check_loss("nll", |x, sd, r| {
        loss::nll_loss(x, &indices(&get(sd, "target")), &class_options(sd, r, 0.0))
    });
}

#[test]
fn binary_cross_entropy() {
    check_loss_with_target("bce", |x, t, sd, r| {
        loss::binary_cross_entropy(x, t, sd.get("kw.weight"), r)
    });
    check_loss_with_target("bce_with_logits", |x, t, sd, r| {
        loss::binary_cross_entropy_with_logits(
            x,
            t,
            sd.get("kw.weight"),
            sd.get("kw.pos_weight"),
            r,
        )
    });
}

#[test]
fn kl_divergence() {
    for (key, reduction) in [
        ("batchmean", KlReduction::BatchMean),
        ("sum", KlReduction::Sum),
        ("mean", KlReduction::Mean),
        ("none", KlReduction::None),
    ] {
        for log_target in [false, true] {
            let name = format!("kl_div_{key}_{}", if log_target { "log" } else { "prob" });
            let sd = load(&name);
            let x = Var::parameter(get(&sd, "input"));
            let t = Var::parameter(get(&sd, "target"));
            let loss = loss::kl_div(&x, &t, reduction, log_target).unwrap();
            assert_close(&loss.value(), &get(&sd, "loss"), &format!("{name} loss"));
            loss.mul(&Var::new(get(&sd, "proj")))
                .unwrap()
                .sum_all()
                .backward()
                .unwrap();
            assert_close(
                &x.grad().unwrap(),
                &get(&sd, "grad_input"),
                &format!("{name} input gradient"),
            );
            assert_close(
                &t.grad().unwrap(),
                &get(&sd, "grad_target"),
                &format!("{name} target gradient"),
            );
        }
    }
}
