//! `load_pytorch` on files `torch.save` wrote (fixtures of `generate_torch_files.py`) and
//! on hostile ones: pickles calling anything but the tensor reconstructors, corrupt
//! archives, truncations and flipped bytes — refused with an error, never a panic.

use std::path::PathBuf;

use strata_autograd::Var;
use strata_nn::*;
use strata_tensor::seeded_rng;

use crate::pytorch_fixtures::assert_close;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn every_storage_type_and_view_loads_as_pytorch_saved_it() {
    let sd = load_pytorch::<f64>(&path("torch_state_dict.pt")).unwrap();
    let want =
        StateDict::<f64>::load_safetensors(&path("torch_state_dict_values.safetensors")).unwrap();
    assert_eq!(sd.len(), want.len());
    for (key, w) in want.iter() {
        let got = sd.get(key).unwrap_or_else(|| panic!("{key} missing"));
        assert_close(got, w, key);
    }
    // f32 reads the same numbers (the f64 entry rounded).
    let sd32 = load_pytorch::<f32>(&path("torch_state_dict.pt")).unwrap();
    assert_eq!(
        sd32.get("bn.num_batches_tracked").unwrap().to_vec(),
        [12345.0]
    );
}

#[test]
fn a_linear_layer_runs_with_pytorch_weights() {
    // PyTorch computed in f32; so does strata here.
    let fc = Linear::<f32>::new(3, 2, true, &mut seeded_rng(0));
    let sd = load_pytorch(&path("torch_linear.pt")).unwrap();
    fc.load_state_dict(&sd, true).unwrap();
    let io = StateDict::<f32>::load_safetensors(&path("torch_linear_io.safetensors")).unwrap();
    let y = fc.forward(&Var::new(io.get("x").unwrap().clone())).unwrap();
    for (g, w) in y.to_vec().iter().zip(io.get("y").unwrap().to_vec()) {
        assert!(
            (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
            "strata {g}, PyTorch {w}"
        );
    }
}

/// A ZIP archive of stored entries, as torch.save writes them.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = 0u32; // not checked by the reader (nor by torch.load)
        let header = |sig: u32, extra: &mut Vec<u8>| {
            extra.extend(sig.to_le_bytes());
        };
        let mut local = Vec::new();
        header(0x0403_4b50, &mut local);
        local.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        local.extend(crc.to_le_bytes());
        local.extend((data.len() as u32).to_le_bytes());
        local.extend((data.len() as u32).to_le_bytes());
        local.extend((name.len() as u16).to_le_bytes());
        local.extend(0u16.to_le_bytes());
        local.extend(name.as_bytes());
        out.extend(&local);
        out.extend(*data);
        let mut c = Vec::new();
        header(0x0201_4b50, &mut c);
        c.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        c.extend(crc.to_le_bytes());
        c.extend((data.len() as u32).to_le_bytes());
        c.extend((data.len() as u32).to_le_bytes());
        c.extend((name.len() as u16).to_le_bytes());
        c.extend([0u8; 12]);
        c.extend(offset.to_le_bytes());
        c.extend(name.as_bytes());
        central.extend(c);
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend([0u8; 2]);
    out
}

fn refused(bytes: &[u8]) -> String {
    match load_pytorch_bytes::<f32>(bytes) {
        Ok(_) => panic!("a hostile file was accepted"),
        Err(e) => e,
    }
}

#[test]
fn hostile_pickles_are_refused_by_name() {
    // os.system('echo pwned') by REDUCE: refused at the GLOBAL, before anything runs.
    let evil = b"\x80\x02cos\nsystem\nq\x00X\x0a\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.";
    let msg = refused(&zip(&[("x/data.pkl", evil)]));
    assert!(msg.contains("os.system"), "{msg}");
    // builtins.eval through STACK_GLOBAL (protocol 4).
    let evil = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x041+1\x85R.";
    assert!(refused(&zip(&[("x/data.pkl", evil)])).contains("builtins.eval"));
    // An opcode a state dict never uses (INST).
    let inst = b"\x80\x02(ios\nsystem\nS'echo'\n.";
    assert!(refused(&zip(&[("x/data.pkl", inst)])).contains("opcode"));
    // A memo read before it is written, a pop from an empty stack, a non-dict root.
    assert!(refused(&zip(&[("x/data.pkl", b"\x80\x02h\x07.")])).contains("memo"));
    assert!(refused(&zip(&[("x/data.pkl", b"\x80\x02.")])).contains("empty stack"));
    assert!(refused(&zip(&[("x/data.pkl", b"\x80\x02K\x05.")])).contains("no dict"));
    // A tensor that reads past its storage, and a storage shorter than it claims.
    let past = b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQK\x00K\x03\x85K\x01\x85\x89)tRu.";
    assert!(
        refused(&zip(&[("x/data.pkl", past), ("x/data/0", &[0u8; 8])]))
            .contains("past its storage")
    );
    let short = b"\x80\x02}(X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89)tRu.";
    assert!(
        refused(&zip(&[("x/data.pkl", short), ("x/data/0", &[0u8; 8])])).contains("holds 8 bytes")
    );
    // The same pickle with its storage present loads.
    let ok = load_pytorch_bytes::<f32>(&zip(&[("x/data.pkl", short), ("x/data/0", &[0u8; 16])]))
        .unwrap();
    assert_eq!(ok.get("w").unwrap().shape(), [4]);
    // Not a zip, a legacy file, a compressed entry, no data.pkl.
    assert!(refused(b"hello").contains("zip"));
    assert!(refused(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.").contains("legacy"));
    assert!(refused(&zip(&[("x/other", b"1")])).contains("data.pkl"));
}

#[test]
fn corrupted_files_never_panic() {
    let good = std::fs::read(path("torch_state_dict.pt")).unwrap();
    // Every truncation.
    for n in 0..good.len() {
        let _ = load_pytorch_bytes::<f32>(&good[..n]);
    }
    // Flipped bytes all over the file, deterministic.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..3000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut bad = good.clone();
        let at = (state % bad.len() as u64) as usize;
        bad[at] ^= 1 << (state >> 61);
        let _ = load_pytorch_bytes::<f32>(&bad);
    }
    // A missing file is an error naming it.
    let err = load_pytorch::<f32>(&path("no_such_file.pt"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_file.pt"));
}
