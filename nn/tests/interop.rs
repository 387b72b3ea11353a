//! Weights between strata and PyTorch, the reference CNN against PyTorch, and the errors
//! a user sees for bad input.

use std::path::{Path, PathBuf};

use strata_autograd::Var;
use strata_nn::loss::{ClassLossOptions, cross_entropy};
use strata_nn::*;
use strata_tensor::{IndexTensor, Tensor, seeded_rng};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The same deterministic values as `formula` in generate.py.
fn formula(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    (0..n as u64)
        .map(|k| {
            ((k * 2_654_435_761 + seed * 97_531) % 4_294_967_296) as f64 / 4_294_967_296.0 - 0.5
        })
        .map(|v| v * scale)
        .collect()
}

fn interop_net() -> Sequential<f32> {
    let mut rng = seeded_rng(11);
    let conv = Conv2dParams::default().padding(1);
    Sequential::new()
        .push(Conv2d::with_params(3, 4, [3, 3], conv, true, &mut rng).unwrap())
        .push(BatchNorm2d::new(4))
        .push(ReLU)
        .push(MaxPool2d::new(2))
        .push(Flatten::default())
        .push(Linear::new(4 * 4 * 4, 5, true, &mut rng))
}

fn max_abs_diff(a: &Tensor<f32>, b: &Tensor<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.to_vec()
        .iter()
        .zip(b.to_vec())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn a_pytorch_state_dict_loads_and_gives_pytorchs_outputs() {
    let mut net = interop_net();
    let report = net
        .load_safetensors(&fixture("torch_export.safetensors"), true)
        .unwrap();
    assert!(report.is_empty());
    net.eval();
    let io = StateDict::<f32>::load_safetensors(&fixture("torch_export_io.safetensors")).unwrap();
    let y = net
        .forward(&Var::new(io.get("x").unwrap().clone()))
        .unwrap();
    let diff = max_abs_diff(&y.value(), io.get("y").unwrap());
    assert!(diff < 1e-5, "outputs differ by {diff}");
}

/// The strata → PyTorch direction: the file strata writes is the committed fixture
/// (byte for byte), which generate.py loads into PyTorch with strict=True and checks.
/// `STRATA_WRITE_FIXTURES=1` rewrites the fixture instead.
#[test]
fn export_matches_fixture() {
    let mut net = interop_net();
    let mut rng = seeded_rng(5);
    for _ in 0..3 {
        net.forward(&Var::new(Tensor::randn(&[6, 3, 8, 8], &mut rng)))
            .unwrap();
    }
    net.eval();
    let x = Tensor::from_vec(
        formula(2 * 3 * 8 * 8, 3, 2.0)
            .iter()
            .map(|&v| v as f32)
            .collect(),
        &[2, 3, 8, 8],
    )
    .unwrap();
    let y = net.forward(&Var::new(x.clone())).unwrap().value();
    let mut io = StateDict::new();
    io.insert("x", x);
    io.insert("y", y);
    let dir = if std::env::var_os("STRATA_WRITE_FIXTURES").is_some() {
        fixture("")
    } else {
        let d = std::env::temp_dir().join(format!("strata-export-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    net.save_safetensors(&dir.join("strata_export.safetensors"))
        .unwrap();
    io.save_safetensors(&dir.join("strata_export_io.safetensors"))
        .unwrap();
    for name in ["strata_export.safetensors", "strata_export_io.safetensors"] {
        let written = std::fs::read(dir.join(name)).unwrap();
        let committed = std::fs::read(fixture(name)).unwrap();
        assert!(
            written == committed,
            "{name} differs from the committed fixture"
        );
    }
    // The counter is saved as int64, as PyTorch writes it.
    let text =
        String::from_utf8_lossy(&std::fs::read(dir.join("strata_export.safetensors")).unwrap())
            .to_string();
    assert!(text.contains(r#""1.num_batches_tracked":{"dtype":"I64""#));
    if std::env::var_os("STRATA_WRITE_FIXTURES").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn save_and_load_round_trip_in_f64() {
    let mut rng = seeded_rng(1);
    let a = Linear::<f64>::new(3, 2, true, &mut rng);
    let b = Linear::<f64>::new(3, 2, true, &mut rng);
    let path = std::env::temp_dir().join(format!(
        "strata-roundtrip-{}.safetensors",
        std::process::id()
    ));
    a.save_safetensors(&path).unwrap();
    b.load_safetensors(&path, true).unwrap();
    assert_eq!(a.weight.to_vec(), b.weight.to_vec());
    assert_eq!(
        a.bias.as_ref().unwrap().to_vec(),
        b.bias.as_ref().unwrap().to_vec()
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_state_dict_from_another_architecture_is_refused_with_every_problem() {
    let mut rng = seeded_rng(0);
    let small = Sequential::<f32>::new().push(Linear::new(4, 3, true, &mut rng));
    let other = Sequential::<f32>::new()
        .push(Linear::new(4, 5, true, &mut rng))
        .push(ReLU)
        .push(Linear::new(5, 2, false, &mut rng));
    let before = small.state_dict();
    let err = small
        .load_state_dict(&other.state_dict(), true)
        .unwrap_err();
    let NnError::StateDict(m) = &err else {
        panic!("{err:?}")
    };
    assert!(m.missing.is_empty());
    assert_eq!(m.unexpected, vec!["2.weight".to_string()]);
    assert_eq!(
        m.shape_mismatch,
        vec![
            ("0.weight".to_string(), vec![5, 4], vec![3, 4]),
            ("0.bias".to_string(), vec![5], vec![3])
        ]
    );
    let msg = err.to_string();
    assert!(msg.contains("unexpected keys: \"2.weight\""), "{msg}");
    assert!(msg.contains("size mismatch for 0.weight"), "{msg}");
    // Nothing was loaded.
    assert_eq!(
        small.state_dict().get("0.weight").unwrap().to_vec(),
        before.get("0.weight").unwrap().to_vec()
    );
    // Non-strict loading still refuses shape mismatches but reports missing keys.
    let mut partial = StateDict::new();
    partial.insert("0.weight", Tensor::<f32>::ones(&[3, 4]));
    let report = small.load_state_dict(&partial, false).unwrap();
    assert_eq!(report.missing, vec!["0.bias".to_string()]);
    assert_eq!(
        small.state_dict().get("0.weight").unwrap().to_vec(),
        vec![1.0; 12]
    );
    let err = small.load_state_dict(&partial, true).unwrap_err();
    assert!(err.to_string().contains("missing keys: \"0.bias\""));
}

#[test]
fn bad_inputs_name_the_layer_and_the_shapes() {
    let mut rng = seeded_rng(0);
    let conv = Conv2d::<f32>::new(3, 8, 3, &mut rng).unwrap();
    let err = conv
        .forward(&Var::new(Tensor::zeros(&[2, 3, 32])))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Conv2d: expected input [N, C, H, W] or [C, H, W] with C = 3, got [2, 3, 32]"
    );
    let err = conv
        .forward_relu(&Var::new(Tensor::zeros(&[2, 4, 8, 8])))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Conv2d: expected input [N, C, H, W] or [C, H, W] with C = 3, got [2, 4, 8, 8]"
    );
    let fc = Linear::<f32>::new(4, 2, true, &mut rng);
    let err = fc
        .forward(&Var::new(Tensor::zeros(&[8, 5])))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Linear: expected input [*, 4] (in_features = 4), got [8, 5]"
    );
    let logits = Var::new(Tensor::<f32>::zeros(&[2, 10]));
    let err = cross_entropy(
        &logits,
        &IndexTensor::from_vec(vec![3, 12], &[2]).unwrap(),
        &ClassLossOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "cross_entropy: target 12 is out of bounds for 10 classes"
    );
    let err = cross_entropy(
        &logits,
        &IndexTensor::from_vec(vec![3], &[1]).unwrap(),
        &ClassLossOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("expected a target of shape [2]"), "{err}");
    assert!(
        Conv2d::<f32>::with_params(
            3,
            8,
            [3, 3],
            Conv2dParams::default().groups(2),
            true,
            &mut rng
        )
        .is_err()
    );
    assert!(
        Conv2d::<f32>::with_params(
            3,
            8,
            [3, 3],
            Conv2dParams::default().stride(2).padding(Padding::Same),
            true,
            &mut rng
        )
        .is_err()
    );
    assert!(Dropout::new(1.5, 0).is_err());
    let bn = BatchNorm1d::<f32>::new(3);
    let err = bn
        .forward(&Var::new(Tensor::zeros(&[1, 3])))
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than 1 value per channel"), "{err}");
    let err = bn
        .forward(&Var::new(Tensor::zeros(&[4, 5])))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "BatchNorm1d: expected input [N, C] or [N, C, L] with C = 3, got [4, 5]"
    );
    let emb = Embedding::<f32>::new(5, 2, None, &mut rng).unwrap();
    let err = emb
        .forward(&IndexTensor::from_vec(vec![5], &[1]).unwrap())
        .unwrap_err()
        .to_string();
    assert_eq!(err, "Embedding: index 5 is out of range for 5 embeddings");
    let ln = LayerNorm::<f32>::new(&[4]);
    assert!(ln.forward(&Var::new(Tensor::zeros(&[2, 3]))).is_err());
}

struct ReferenceCnn {
    conv1: Conv2d<f64>,
    fc1: Linear<f64>,
    fc2: Linear<f64>,
}

impl Module<f64> for ReferenceCnn {
    fn visit_state(&self, f: &mut dyn FnMut(&str, &Var<f64>, StateKind)) {
        visit_child("conv1", &self.conv1, f);
        visit_child("fc1", &self.fc1, f);
        visit_child("fc2", &self.fc2, f);
    }
}

impl Forward<f64> for ReferenceCnn {
    fn forward(&self, x: &Var<f64>) -> Result<Var<f64>> {
        let h = MaxPool2d::new(2).forward(&self.conv1.forward(x)?.relu())?;
        let h = self.fc1.forward(&h.flatten(1, -1)?)?.relu();
        self.fc2.forward(&h)
    }
}

fn load(path: &Path) -> StateDict<f64> {
    StateDict::load_safetensors(path).unwrap()
}

#[test]
fn the_reference_cnn_matches_pytorch() {
    let mut rng = seeded_rng(0);
    let conv = Conv2dParams::default().padding(1);
    let model = ReferenceCnn {
        conv1: Conv2d::with_params(3, 32, [3, 3], conv, true, &mut rng).unwrap(),
        fc1: Linear::new(32 * 16 * 16, 128, true, &mut rng),
        fc2: Linear::new(128, 10, true, &mut rng),
    };
    for (i, p) in model.parameters().iter().enumerate() {
        p.set_value(Tensor::from_vec(formula(p.numel(), i as u64 + 1, 0.2), p.shape()).unwrap())
            .unwrap();
    }
    let x =
        Var::new(Tensor::from_vec(formula(2 * 3 * 32 * 32, 100, 2.0), &[2, 3, 32, 32]).unwrap());
    let target = IndexTensor::from_vec(vec![3, 7], &[2]).unwrap();
    let logits = model.forward(&x).unwrap();
    let loss = cross_entropy(&logits, &target, &ClassLossOptions::default()).unwrap();
    loss.backward().unwrap();
    let want = load(&fixture("reference_cnn.safetensors"));
    let close = |got: &[f64], want: &[f64], what: &str| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-9 + 1e-7 * w.abs(),
                "{what}: strata {g}, PyTorch {w}"
            );
        }
    };
    close(
        &logits.to_vec(),
        &want.get("logits").unwrap().to_vec(),
        "logits",
    );
    close(
        &[loss.item().unwrap()],
        &want.get("loss").unwrap().to_vec(),
        "loss",
    );
    for (name, p) in model.named_parameters() {
        let g = p.grad().unwrap().to_vec();
        if name == "fc1.weight" {
            let every97: Vec<f64> = g.iter().step_by(97).copied().collect();
            close(
                &every97,
                &want.get("g.fc1.weight.every97").unwrap().to_vec(),
                "fc1.weight grad",
            );
            close(
                &[g.iter().sum()],
                &want.get("g.fc1.weight.sum").unwrap().to_vec(),
                "fc1.weight grad sum",
            );
            close(
                &[g.iter().map(|v| v * v).sum()],
                &want.get("g.fc1.weight.sumsq").unwrap().to_vec(),
                "sumsq",
            );
        } else {
            close(&g, &want.get(&format!("g.{name}")).unwrap().to_vec(), &name);
        }
    }
}
