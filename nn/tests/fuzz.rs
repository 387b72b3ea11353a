//! The fuzz targets of the state-dict readers. Safetensors: mutated files (bit flips, extreme header
//! lengths and offsets, truncation, splices; a valid f32 file, an f64 file, one that
//! names a tensor twice) loaded into a module strictly and leniently, and read as a
//! state dict. Each load gives a clear error that leaves the module as it was, or loads
//! exactly the file's values into tensors of the module's own shapes. PyTorch checkpoints
//! (`torch.save` zip files, read by `load_pytorch`): the files PyTorch wrote, mutated; an
//! error, or a state dict whose every tensor holds as many values as its shape says. The
//! budget is `strata_testing::fuzz::budget()` (see `.ci/run`).

use proptest::prelude::*;
use strata_nn::{BatchNorm1d, Linear, Module, Sequential, StateDict};
use strata_tensor::io::{FileTensor, TensorFile};
use strata_tensor::seeded_rng;
use strata_testing::fuzz::{Verdict, fuzz, mutated, scratch, verdict};

fn model() -> Sequential<f32> {
    Sequential::new()
        .push(Linear::new(2, 3, true, &mut seeded_rng(0)))
        .push(BatchNorm1d::new(3))
}

/// The valid files the mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    let m = model();
    let mut own = TensorFile::<f32>::new();
    let mut wide = TensorFile::<f64>::new();
    for (name, t) in m.state_dict().iter() {
        if name.ends_with("num_batches_tracked") {
            own.tensors.push(FileTensor::counter(name, t.clone()));
            wide.tensors
                .push(FileTensor::counter(name, t.cast::<f64>()));
        } else {
            own.tensors.push(FileTensor::new(name, t.clone()));
            wide.tensors.push(FileTensor::new(name, t.cast::<f64>()));
        }
    }
    let mut twice = own.clone();
    twice.tensors.push(own.tensors[0].clone());
    let mut seeds = vec![own.to_bytes().unwrap(), wide.to_bytes().unwrap()];
    // The writer refuses a repeated name; splice one into the header by hand.
    seeds.push(twice.to_bytes().unwrap_or_else(|_| {
        let bytes = own.to_bytes().unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
        let doubled = header.replacen("\"0.bias\"", "\"0.weight\"", 1);
        let mut forged = (doubled.len() as u64).to_le_bytes().to_vec();
        forged.extend_from_slice(doubled.as_bytes());
        forged.extend_from_slice(&bytes[8 + n..]);
        forged
    }));
    seeds
}

fn bits(t: &strata_tensor::Tensor<f32>) -> Vec<u32> {
    t.to_vec().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn fuzz_state_dict_files() {
    let dir = scratch("nn-state-dict");
    let path = dir.join("state.safetensors");
    fuzz("safetensors-state-dict", mutated(seeds()), |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        let mut verdicts = Vec::new();
        for strict in [true, false] {
            let target = model();
            let before: Vec<Vec<u32>> = target.state_dict().iter().map(|(_, t)| bits(t)).collect();
            let loaded = target.load_safetensors(&path, strict);
            let after = target.state_dict();
            match &loaded {
                Err(_) => {
                    for ((k, t), b) in after.iter().zip(&before) {
                        prop_assert_eq!(&bits(t), b, "{} changed by a refused load", k);
                    }
                }
                Ok(_) => {
                    // What loaded is exactly the file's, in the module's shapes.
                    let file = TensorFile::<f32>::read(&path);
                    prop_assert!(file.is_ok(), "the module loaded a file the reader refuses");
                    let file = file.unwrap();
                    for ((k, t), (_, own)) in after.iter().zip(model().state_dict().iter()) {
                        prop_assert_eq!(t.shape(), own.shape(), "{}", k);
                        if let Some(entry) = file.tensors.iter().find(|e| e.name == k) {
                            // Bit for bit: a NaN in the file is loaded as that NaN (the
                            // checkpoint loader of strata-models refuses non-finite weights).
                            prop_assert_eq!(bits(&entry.tensor), bits(t), "{}", k);
                        } else {
                            prop_assert!(!strict, "strict load without {}", k);
                        }
                    }
                }
            }
            verdicts.push(verdict(&loaded)?);
        }
        let dict = StateDict::<f32>::load_safetensors(&path);
        if let Ok(d) = &dict {
            for (_, t) in d.iter() {
                prop_assert_eq!(t.to_vec().len(), t.numel());
            }
        }
        verdicts.push(verdict(&dict)?);
        Ok(Verdict::any(verdicts))
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fuzz_pytorch_checkpoints() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let seeds: Vec<Vec<u8>> = ["torch_state_dict.pt", "torch_linear.pt"]
        .iter()
        .map(|f| std::fs::read(fixtures.join(f)).unwrap())
        .collect();
    let dir = scratch("nn-pytorch");
    let path = dir.join("model.pt");
    fuzz("pytorch-checkpoint", mutated(seeds), |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        let read = strata_nn::load_pytorch::<f32>(&path);
        if let Ok(d) = &read {
            for (_, t) in d.iter() {
                prop_assert_eq!(t.to_vec().len(), t.numel());
            }
        }
        verdict(&read)
    });
    std::fs::remove_dir_all(dir).unwrap();
}
