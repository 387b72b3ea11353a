//! Hostile state dicts: integer entries where weights belong, values beyond f32, repeated
//! names, special files and malformed bytes. Each is an error that names the entry, and
//! nothing is loaded.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strata_nn::{
    BatchNorm1d, Conv2d, LSTM, Linear, Module, NnError, RnnConfig, Sequential, StateDict,
    StateDictMismatch,
};
use strata_tensor::io::{FileTensor, TensorFile};
use strata_tensor::{Tensor, seeded_rng, with_allocation_limit};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-nn-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn model() -> Sequential<f32> {
    Sequential::new()
        .push(Linear::new(2, 3, true, &mut seeded_rng(0)))
        .push(BatchNorm1d::new(3))
}

/// The model's state dict as a file, with `edit` applied to its entries.
fn file_with(edit: impl FnOnce(&mut TensorFile<f32>)) -> TensorFile<f32> {
    let m = model();
    let mut file = TensorFile::new();
    for (name, t) in m.state_dict().iter() {
        let entry = if name.ends_with("num_batches_tracked") {
            FileTensor::counter(name, t.clone())
        } else {
            FileTensor::new(name, t.clone())
        };
        file.tensors.push(entry);
    }
    edit(&mut file);
    file
}

fn load(dir: &Path, file: &TensorFile<f32>, strict: bool) -> Result<(), NnError> {
    let path = dir.join("state.safetensors");
    file.write(&path).unwrap();
    let target = model();
    let before = target.state_dict();
    let result = target.load_safetensors(&path, strict).map(drop);
    if result.is_err() {
        // Nothing was loaded.
        for ((k, a), (_, b)) in before.iter().zip(target.state_dict().iter()) {
            assert_eq!(a.to_vec(), b.to_vec(), "{k} changed by a refused load");
        }
    }
    result
}

/// An integer tensor (a counter, as PyTorch stores `num_batches_tracked`) where a weight
/// belongs: refused under a strict load and a lenient one alike, as a shape mismatch is.
#[test]
fn integer_entries_do_not_load_into_weights() {
    let dir = scratch("int");
    let ints = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]).unwrap();
    let file = file_with(|f| {
        let w = f.tensors.iter_mut().find(|t| t.name == "0.weight").unwrap();
        *w = FileTensor::counter("0.weight", ints.clone());
    });
    for strict in [true, false] {
        let err = load(&dir, &file, strict).unwrap_err();
        let NnError::StateDict(report) = &err else {
            panic!("{err}")
        };
        assert_eq!(report.dtype_mismatch, ["0.weight"]);
        assert!(
            err.to_string().contains(
                "dtype mismatch for 0.weight: the state dict holds integers, the module a \
                 floating-point tensor"
            ),
            "{err}"
        );
    }
    // A counter read back as a counter, and a float counter from another writer, load.
    load(&dir, &file_with(|_| {}), true).unwrap();
    let float_counter = file_with(|f| {
        let c = f
            .tensors
            .iter_mut()
            .find(|t| t.name.ends_with("num_batches_tracked"))
            .unwrap();
        *c = FileTensor::new(c.name.clone(), Tensor::scalar(3.0));
    });
    load(&dir, &float_counter, true).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn values_beyond_f32_and_repeated_names_are_refused() {
    let dir = scratch("range");
    // 1e300 as F64 would become +inf in an f32 model.
    let mut wide = TensorFile::<f64>::new();
    for (name, t) in model().state_dict().iter() {
        wide.tensors.push(FileTensor::new(name, t.cast::<f64>()));
    }
    wide.tensors[0].tensor = Tensor::from_vec(vec![1e300; 6], &[3, 2]).unwrap();
    let path = dir.join("wide.safetensors");
    wide.write(&path).unwrap();
    let err = model()
        .load_safetensors(&path, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("element 0 = 1e300 overflows f32"), "{err}");
    // A header naming one tensor twice: JSON readers keep the last, silently.
    let bytes = file_with(|_| {}).to_bytes().unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let doubled = header.replacen("\"0.bias\"", "\"0.weight\"", 1);
    let mut forged = (n as u64).to_le_bytes().to_vec();
    forged.extend_from_slice(doubled.as_bytes());
    forged.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, &forged).unwrap();
    let err = StateDict::<f32>::load_safetensors(&path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"0.weight\" appears more than once"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn special_files_are_refused_without_reading() {
    let err = model()
        .load_safetensors(Path::new("/dev/zero"), true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a character device, not a regular file"),
        "{err}"
    );
    let dir = scratch("dir");
    let err = model()
        .load_safetensors(&dir, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("a directory, not a regular file"), "{err}");
    // PyTorch checkpoints are read the same way.
    let err = strata_nn::load_pytorch::<f32>(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a character device, not a regular file"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Layers built from sizes in an untrusted record (a checkpoint's architecture), under
/// an allocation limit: too large, or so large that the shape's count wraps, is refused
/// (the limit's error, or a configuration error), never a crash or a wrapped shape.
#[test]
fn hostile_layer_sizes_are_refused_under_a_limit() {
    let limit = 1 << 20;
    let mut rng = seeded_rng(0);
    for (input, output) in [
        (1 << 20, 1),
        (1, 1 << 20),
        (3, usize::MAX / 3 + 1),
        (1 << 40, 1 << 40),
    ] {
        let built =
            with_allocation_limit(limit, || Linear::<f32>::new(input, output, true, &mut rng));
        assert!(
            built.is_err(),
            "Linear({input}, {output}) built under a 1 MiB limit"
        );
    }
    let conv = with_allocation_limit(limit, || Conv2d::<f32>::new(1 << 30, 1 << 30, 3, &mut rng));
    assert!(!matches!(conv, Ok(Ok(_))), "a 2^60-weight Conv2d built");
    // in_channels · 3 · 3 overflows the fan-in count itself.
    let conv = with_allocation_limit(limit, || Conv2d::<f32>::new(usize::MAX, 32, 3, &mut rng));
    assert!(
        !matches!(conv, Ok(Ok(_))),
        "a Conv2d of usize::MAX channels built"
    );
    assert!(strata_nn::init::fan_in_and_fan_out(&[32, usize::MAX, 3, 3]).is_err());
    for hidden in [1 << 20, usize::MAX / 4 + 1, usize::MAX] {
        let built = with_allocation_limit(limit, || {
            LSTM::<f32>::new(RnnConfig::new(4, hidden), &mut rng)
        });
        match built {
            Err(_) | Ok(Err(NnError::Config { .. })) => {}
            Ok(other) => panic!("LSTM with hidden_size {hidden}: {:?}", other.map(|_| ())),
        }
    }
    let mut wide = RnnConfig::new(4, 8);
    wide.num_layers = usize::MAX;
    wide.bidirectional = true;
    let err = LSTM::<f32>::new(wide, &mut rng).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("num_layers"), "{err}");
    // What fits is built.
    let small = with_allocation_limit(limit, || Linear::<f32>::new(10, 10, true, &mut rng));
    assert_eq!(small.unwrap().weight.shape(), [10, 10]);
}

/// A state dict of another depth reports its keys in a message of bounded length: the
/// first eight of each list and a count, not thousands of names.
#[test]
fn mismatch_reports_are_bounded() {
    let keys = |prefix: &str| (0..500).map(|i| format!("{prefix}.{i}.weight")).collect();
    let mismatch = StateDictMismatch {
        missing: keys("layers"),
        unexpected: keys("extra"),
        shape_mismatch: (0..20)
            .map(|i| (format!("w{i}"), vec![1], vec![2]))
            .collect(),
        dtype_mismatch: vec!["counter".into()],
    };
    let text = mismatch.to_string();
    assert!(text.len() < 2000, "{} characters", text.len());
    assert!(
        text.contains("\"layers.7.weight\", … (500 in all)"),
        "{text}"
    );
    assert!(!text.contains("layers.8.weight"), "{text}");
    assert!(text.contains("dtype mismatch for counter"), "{text}");
    assert!(text.contains("and 12 more mismatches"), "{text}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A valid state dict file with bytes overwritten, cut or appended: an error, or a
    /// dict whose every tensor has the shape its bytes hold — never a panic.
    #[test]
    fn mangled_files_are_errors_or_state_dicts(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
        tail in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut bytes = file_with(|_| {}).to_bytes().unwrap();
        for (at, byte) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        bytes.extend_from_slice(&tail);
        if let Ok(file) = TensorFile::<f32>::from_bytes(&bytes) {
            for t in &file.tensors {
                prop_assert_eq!(t.tensor.to_vec().len(), t.tensor.numel());
            }
            let m = model();
            let mut sd = StateDict::new();
            for t in &file.tensors {
                sd.insert(&t.name, t.tensor.clone());
            }
            let _ = m.load_state_dict(&sd, true);
        }
    }
}
