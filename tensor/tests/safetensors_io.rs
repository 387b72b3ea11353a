//! The safetensors codec (`strata_tensor::io`): round trips of every dtype, byte-for-byte
//! agreement with the `safetensors` crate's writer, deterministic output, hostile files
//! (truncated, lying about sizes, repeated names, huge shapes, values beyond f32, special
//! files) and atomic writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use safetensors::tensor::{Dtype, TensorView};
use strata_tensor::io::{
    FileTensor, SafetensorsError, SafetensorsErrorKind as Kind, StoredDType, TensorFile,
};
use strata_tensor::{DType, Element, Tensor};

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-io-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A file whose header is `header` verbatim, followed by `data`.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// The kind of the error `result` must be.
fn kind_of<T>(result: Result<T, SafetensorsError>) -> Kind {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind,
    }
}

fn tensor<T: Element>(values: &[f64], shape: &[usize]) -> Tensor<T> {
    Tensor::from_vec(values.iter().map(|&v| T::from_f64(v)).collect(), shape).unwrap()
}

fn bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

// ---------------------------------------------------------------------------------------
// Round trips.
// ---------------------------------------------------------------------------------------

#[test]
fn f32_tensors_and_counters_round_trip_bit_for_bit() {
    let special = [
        0.0,
        -0.0,
        1.5,
        f32::MAX as f64,
        f32::MIN_POSITIVE as f64 / 8.0, // subnormal
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    let matrix = tensor::<f32>(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let mut file = TensorFile::<f32>::new();
    file.tensors
        .push(FileTensor::new("special", tensor(&special, &[7])));
    file.tensors
        .push(FileTensor::new("scalar", Tensor::scalar(-2.5)));
    file.tensors
        .push(FileTensor::new("empty", tensor(&[], &[3, 0])));
    // Non-contiguous: written in logical (row-major) order.
    file.tensors
        .push(FileTensor::new("transposed", matrix.t().unwrap()));
    file.tensors
        .push(FileTensor::new("nan", tensor(&[f64::NAN], &[1])));
    file.tensors.push(FileTensor::counter(
        "count",
        tensor(&[0.0, -5.0, 16777216.0], &[3]),
    ));
    let back = TensorFile::<f32>::from_bytes(&file.to_bytes().unwrap()).unwrap();

    let names: Vec<&str> = back.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        ["count", "empty", "nan", "scalar", "special", "transposed"]
    );
    let get = |name: &str| back.get(name).unwrap();
    let f64s = |name: &str| -> Vec<f64> {
        get(name)
            .tensor
            .to_vec()
            .iter()
            .map(|v| v.to_f64())
            .collect()
    };
    assert_eq!(bits(&f64s("special")), bits(&special));
    assert_eq!(get("scalar").tensor.shape(), &[] as &[usize]);
    assert_eq!(f64s("scalar"), [-2.5]);
    assert_eq!(get("empty").tensor.shape(), &[3, 0]);
    assert_eq!(get("transposed").tensor.shape(), &[3, 2]);
    assert_eq!(f64s("transposed"), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert!(f64s("nan")[0].is_nan());
    assert_eq!(f64s("count"), [0.0, -5.0, 16777216.0]);
    assert_eq!(get("count").dtype, StoredDType::I64);
    assert_eq!(get("special").dtype, StoredDType::F32);
}

#[test]
fn f64_tensors_and_counters_round_trip_bit_for_bit() {
    // 2^53 and -(2^62): integers f64 holds exactly, as int64 does.
    let values = [0.1, -1e300, 5e-324, f64::MAX, f64::NEG_INFINITY];
    let mut file = TensorFile::<f64>::new();
    file.tensors
        .push(FileTensor::new("w", tensor(&values, &[5, 1])));
    file.tensors.push(FileTensor::counter(
        "n",
        tensor(&[9007199254740992.0, -4611686018427387904.0], &[2]),
    ));
    let back = TensorFile::<f64>::from_bytes(&file.to_bytes().unwrap()).unwrap();
    let w = back.get("w").unwrap();
    assert_eq!(
        (w.dtype, w.tensor.shape()),
        (StoredDType::F64, &[5usize, 1][..])
    );
    assert_eq!(bits(&w.tensor.to_vec()), bits(&values));
    let n = back.get("n").unwrap();
    assert_eq!(n.dtype, StoredDType::I64);
    assert_eq!(
        n.tensor.to_vec(),
        [9007199254740992.0, -4611686018427387904.0]
    );
}

/// One dtype's case: its bytes as the safetensors crate writes them, and their values.
struct Case {
    name: &'static str,
    dtype: Dtype,
    bytes: Vec<u8>,
    values: Vec<f64>,
    stored: StoredDType,
}

fn case<const N: usize>(
    name: &'static str,
    (dtype, stored): (Dtype, StoredDType),
    elements: &[[u8; N]],
    values: &[f64],
) -> Case {
    Case {
        name,
        dtype,
        bytes: elements.concat(),
        values: values.to_vec(),
        stored,
    }
}

#[test]
fn every_readable_dtype_decodes_and_says_what_it_was() {
    use StoredDType as S;
    let cases = [
        // f16 0x3c00 = 1, 0xc000 = -2, 0x0001 = 2^-24 (the smallest subnormal).
        case(
            "f16",
            (Dtype::F16, S::F16),
            &[0x3c00u16, 0xc000, 0x0001].map(u16::to_le_bytes),
            &[1.0, -2.0, 2f64.powi(-24)],
        ),
        // bf16 is f32's top half: 0x3f80 = 1.0, 0xc040 = -3.0.
        case(
            "bf16",
            (Dtype::BF16, S::BF16),
            &[0x3f80u16, 0xc040].map(u16::to_le_bytes),
            &[1.0, -3.0],
        ),
        case(
            "f32",
            (Dtype::F32, S::F32),
            &[0.5f32, -7.25].map(f32::to_le_bytes),
            &[0.5, -7.25],
        ),
        case("f64", (Dtype::F64, S::F64), &[0.1f64.to_le_bytes()], &[0.1]),
        case(
            "i8",
            (Dtype::I8, S::I8),
            &[i8::MIN, 127].map(i8::to_le_bytes),
            &[-128.0, 127.0],
        ),
        case(
            "i16",
            (Dtype::I16, S::I16),
            &[i16::MIN, 3].map(i16::to_le_bytes),
            &[-32768.0, 3.0],
        ),
        case(
            "i32",
            (Dtype::I32, S::I32),
            &[i32::MIN, 9].map(i32::to_le_bytes),
            &[i32::MIN as f64, 9.0],
        ),
        case(
            "i64",
            (Dtype::I64, S::I64),
            &[i64::MIN, 42].map(i64::to_le_bytes),
            &[i64::MIN as f64, 42.0],
        ),
        case("u8", (Dtype::U8, S::U8), &[[0], [255]], &[0.0, 255.0]),
        case(
            "u16",
            (Dtype::U16, S::U16),
            &[u16::MAX.to_le_bytes()],
            &[65535.0],
        ),
        case(
            "u32",
            (Dtype::U32, S::U32),
            &[u32::MAX.to_le_bytes()],
            &[u32::MAX as f64],
        ),
        case(
            "u64",
            (Dtype::U64, S::U64),
            &[u64::MAX.to_le_bytes()],
            &[u64::MAX as f64],
        ),
    ];
    let views: Vec<(&str, TensorView<'_>)> = cases
        .iter()
        .map(|c| {
            let view = TensorView::new(c.dtype, vec![c.values.len()], &c.bytes).unwrap();
            (c.name, view)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let file = TensorFile::<f64>::from_bytes(&bytes).unwrap();
    assert_eq!(file.tensors.len(), cases.len());
    for c in &cases {
        let t = file.get(c.name).unwrap();
        assert_eq!(t.dtype, c.stored, "{}", c.name);
        assert_eq!(t.dtype.name(), c.name.to_uppercase());
        let integer = c.name.starts_with(['i', 'u']);
        assert_eq!(t.dtype.is_integer(), integer, "{}", c.name);
        assert_eq!(bits(&t.tensor.to_vec()), bits(&c.values), "{}", c.name);
    }
}

#[test]
fn files_without_metadata_are_the_safetensors_crates_byte_for_byte() {
    // The crate orders tensors by dtype (I64 before F32), then name, and pads the header
    // with spaces; names with quotes, tabs and non-ASCII letters are escaped as it does.
    // Entry i holds 0, 1, …, i; "count" is a counter, written as I64.
    let names = ["b.weight", "a", "quote\"d", "tab\tbed", "ünïcode", "count"];
    let mut file = TensorFile::<f32>::new();
    let mut bytes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let values: Vec<f64> = (0..=i).map(|k| k as f64).collect();
        if *name == "count" {
            file.tensors
                .push(FileTensor::counter(*name, tensor(&values, &[i + 1])));
            bytes.push((
                Dtype::I64,
                values
                    .iter()
                    .flat_map(|&v| (v as i64).to_le_bytes())
                    .collect::<Vec<u8>>(),
            ));
        } else {
            file.tensors
                .push(FileTensor::new(*name, tensor(&values, &[1, i + 1])));
            bytes.push((
                Dtype::F32,
                values
                    .iter()
                    .flat_map(|&v| (v as f32).to_le_bytes())
                    .collect(),
            ));
        }
    }
    let views: Vec<(&str, TensorView<'_>)> = names
        .iter()
        .zip(&bytes)
        .enumerate()
        .map(|(i, (name, (dtype, data)))| {
            let shape = if *dtype == Dtype::I64 {
                vec![i + 1]
            } else {
                vec![1, i + 1]
            };
            (*name, TensorView::new(*dtype, shape, data).unwrap())
        })
        .collect();
    let expected = safetensors::serialize(views, None).unwrap();
    let ours = file.to_bytes().unwrap();
    assert!(
        ours == expected,
        "the header or data differ from the crate's:\n{}\n{}",
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&expected)
    );
}

#[test]
fn metadata_round_trips_and_the_crate_reads_it() {
    let mut file = TensorFile::<f64>::new();
    file.tensors
        .push(FileTensor::new("x", tensor(&[1.0], &[1])));
    for (k, v) in [
        ("zeta", "last"),
        ("alpha", "first"),
        ("odd \"key\"", "line\nbreak"),
    ] {
        file.metadata.insert(k.to_string(), v.to_string());
    }
    let bytes = file.to_bytes().unwrap();
    let back = TensorFile::<f64>::from_bytes(&bytes).unwrap();
    assert_eq!(back.metadata, file.metadata);
    let (_, crate_view) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let theirs = crate_view.metadata().clone().unwrap();
    assert_eq!(theirs.len(), 3);
    assert_eq!(theirs["odd \"key\""], "line\nbreak");
    // Sorted by key, so the same metadata always gives the same header.
    let header = String::from_utf8_lossy(&bytes[8..]).into_owned();
    let (a, o, z) = (
        header.find("alpha"),
        header.find("odd"),
        header.find("zeta"),
    );
    assert!(a < o && o < z, "{header}");
}

#[test]
fn equal_contents_give_byte_identical_files() {
    let make = |reverse: bool| {
        let mut file = TensorFile::<f32>::new();
        let mut tensors = vec![
            FileTensor::new("w", tensor(&[1.0, 2.0], &[2])),
            FileTensor::counter("state.0.step", Tensor::scalar(3.0)),
            FileTensor::new("b", tensor(&[0.5], &[1])),
        ];
        let mut meta: Vec<(String, String)> = (0..20)
            .map(|i| (format!("hyper.k{i}"), format!("{i}")))
            .collect();
        if reverse {
            tensors.reverse();
            meta.reverse();
        }
        file.tensors = tensors;
        file.metadata.extend(meta);
        file
    };
    let dir = scratch("identical");
    make(false).write(&dir.join("a")).unwrap();
    make(true).write(&dir.join("b")).unwrap();
    make(false).write(&dir.join("a")).unwrap(); // and again, over the first
    let a = std::fs::read(dir.join("a")).unwrap();
    assert!(a == std::fs::read(dir.join("b")).unwrap());
    assert!(a == make(true).to_bytes().unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Hostile input.
// ---------------------------------------------------------------------------------------

fn valid_file() -> Vec<u8> {
    let mut file = TensorFile::<f32>::new();
    file.tensors
        .push(FileTensor::new("w", tensor(&[1.0, 2.0, 3.0], &[3])));
    file.tensors
        .push(FileTensor::counter("n", tensor(&[4.0], &[1])));
    file.metadata.insert("format".into(), "pt".into());
    file.to_bytes().unwrap()
}

#[test]
fn every_truncation_and_any_trailing_byte_is_an_error() {
    let bytes = valid_file();
    for len in 0..bytes.len() {
        let kind = kind_of(TensorFile::<f32>::from_bytes(&bytes[..len]));
        assert!(matches!(kind, Kind::Header { .. }), "{len} bytes: {kind}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        kind_of(TensorFile::<f32>::from_bytes(&longer)),
        Kind::Header { .. }
    ));
    assert!(TensorFile::<f32>::from_bytes(&bytes).is_ok());
}

#[test]
fn a_header_that_lies_about_sizes_is_refused() {
    let f32x2 = [1.0f32, 2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>();
    let lies: Vec<(&str, Vec<u8>)> = vec![
        // The header length runs past the end of the file, or past any sane size.
        ("header length past the end", {
            let mut b = raw("{}", &[]);
            b[..8].copy_from_slice(&1000u64.to_le_bytes());
            b
        }),
        ("header length u64::MAX", {
            let mut b = raw("{}", &[]);
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        // Shape [4] of F32 is 16 bytes, but the offsets give it 8.
        (
            "shape bigger than its bytes",
            raw(
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#,
                &f32x2,
            ),
        ),
        // Shape [1] is 4 bytes, but the offsets give it 8.
        (
            "shape smaller than its bytes",
            raw(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}"#,
                &f32x2,
            ),
        ),
        // The offsets run past the data.
        (
            "offsets past the data",
            raw(
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                &f32x2,
            ),
        ),
        // Two tensors over the same bytes.
        (
            "overlapping tensors",
            raw(
                concat!(
                    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#,
                    r#""b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
                ),
                &f32x2,
            ),
        ),
        // Data the header does not account for.
        (
            "bytes left over",
            raw(
                r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
                &f32x2,
            ),
        ),
        ("not JSON", raw("{\"w\":", &[])),
        ("not an object", raw("[1, 2]", &[])),
        (
            "a negative dimension",
            raw(
                r#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#,
                &[],
            ),
        ),
        (
            "metadata that is not strings",
            raw(r#"{"__metadata__":{"a":1}}"#, &[]),
        ),
    ];
    for (what, bytes) in lies {
        let kind = kind_of(TensorFile::<f32>::from_bytes(&bytes));
        assert!(matches!(kind, Kind::Header { .. }), "{what}: {kind}");
    }
}

#[test]
fn huge_shapes_are_refused_before_anything_is_allocated() {
    // Element counts that overflow usize, byte counts that overflow it, and a count that
    // fits but is far beyond the 4 bytes the file holds: none may reach an allocation.
    let headers = [
        r#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#,
        r#"{"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]}}"#,
        r#"{"w":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4]}}"#,
        r#"{"w":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]}}"#,
    ];
    for header in headers {
        let kind = kind_of(TensorFile::<f32>::from_bytes(&raw(header, &[0; 4])));
        assert!(matches!(kind, Kind::Header { .. }), "{header}: {kind}");
    }
}

#[test]
fn repeated_names_are_refused() {
    // Two entries named `w` over the same 4 bytes: the safetensors crate keeps the last
    // and reads an I32 where the first said F32, a silently wrong result.
    let header = concat!(
        r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"#,
        r#""w":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#
    );
    let bytes = raw(header, &1.5f32.to_le_bytes());
    assert!(safetensors::SafeTensors::deserialize(&bytes).is_ok());
    let kind = kind_of(TensorFile::<f32>::from_bytes(&bytes));
    assert!(
        matches!(&kind, Kind::DuplicateName { name } if name == "w"),
        "{kind}"
    );

    let meta = raw(r#"{"__metadata__":{"lr":"0.1","lr":"10.0"}}"#, &[]);
    let kind = kind_of(TensorFile::<f32>::from_bytes(&meta));
    assert!(
        matches!(&kind, Kind::DuplicateMetadataKey { key } if key == "lr"),
        "{kind}"
    );

    let twice = raw(
        r#"{"__metadata__":{"a":"1"},"__metadata__":{"b":"2"}}"#,
        &[],
    );
    let kind = kind_of(TensorFile::<f32>::from_bytes(&twice));
    assert!(
        matches!(&kind, Kind::DuplicateName { name } if name == "__metadata__"),
        "{kind}"
    );
}

#[test]
fn unsupported_dtypes_are_named() {
    let bytes = raw(
        r#"{"mask":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}}"#,
        &[1, 0],
    );
    let kind = kind_of(TensorFile::<f32>::from_bytes(&bytes));
    assert!(
        matches!(
            &kind,
            Kind::UnsupportedDType { name, dtype } if name == "mask" && dtype == "BOOL"
        ),
        "{kind}"
    );
}

#[test]
fn f64_values_beyond_f32_are_an_error_naming_the_tensor() {
    let mut file = TensorFile::<f64>::new();
    file.tensors.push(FileTensor::new(
        "ok",
        tensor(&[1.0, f64::INFINITY, f64::NAN, 1e-300], &[4]),
    ));
    file.tensors
        .push(FileTensor::new("weight", tensor(&[1.0, -1e300], &[2])));
    let bytes = file.to_bytes().unwrap();
    // In f64 nothing is lost.
    assert!(TensorFile::<f64>::from_bytes(&bytes).is_ok());
    let kind = kind_of(TensorFile::<f32>::from_bytes(&bytes));
    match kind {
        Kind::Overflow {
            name,
            index,
            value,
            element,
        } => {
            assert_eq!(
                (name.as_str(), index, value, element),
                ("weight", 1, -1e300, DType::F32)
            );
        }
        other => panic!("{other}"),
    }
    // Infinities and NaN stored as such, and values that underflow to zero, are not
    // overflows: they load as themselves.
    file.tensors.pop();
    let back = TensorFile::<f32>::from_bytes(&file.to_bytes().unwrap()).unwrap();
    let ok = back.get("ok").unwrap().tensor.to_vec();
    assert_eq!(ok[..2], [1.0, f32::INFINITY]);
    assert!(ok[2].is_nan());
    assert_eq!(ok[3], 0.0);
}

#[test]
fn writing_refuses_what_could_not_be_read_back() {
    let encode = |t: FileTensor<f32>| {
        let mut file = TensorFile::<f32>::new();
        file.tensors.push(t);
        kind_of(file.to_bytes())
    };
    for (values, index) in [(vec![1.0, 1.5], 1), (vec![f64::NAN], 0), (vec![1e19], 0)] {
        let n = values.len();
        let kind = encode(FileTensor::counter("n", tensor(&values, &[n])));
        assert!(
            matches!(&kind, Kind::NotInteger { name, index: i, .. } if name == "n" && *i == index),
            "{kind}"
        );
    }
    let kind = encode(FileTensor::new("__metadata__", Tensor::scalar(1.0)));
    assert!(matches!(kind, Kind::ReservedName { .. }), "{kind}");
    let mut as_f16 = FileTensor::new("w", Tensor::scalar(1.0));
    as_f16.dtype = StoredDType::F64;
    let kind = encode(as_f16);
    assert!(
        matches!(
            kind,
            Kind::Unwritable {
                element: DType::F32,
                dtype: StoredDType::F64,
                ..
            }
        ),
        "{kind}"
    );
    let mut file = TensorFile::<f32>::new();
    file.tensors.push(FileTensor::new("w", Tensor::scalar(1.0)));
    file.tensors
        .push(FileTensor::counter("w", Tensor::scalar(1.0)));
    assert!(matches!(
        kind_of(file.to_bytes()),
        Kind::DuplicateName { .. }
    ));
}

#[test]
fn special_files_are_refused_without_reading() {
    #[cfg(unix)]
    {
        let kind = kind_of(TensorFile::<f32>::read(Path::new("/dev/zero")));
        assert!(
            matches!(
                kind,
                Kind::NotRegularFile {
                    what: "a character device"
                }
            ),
            "{kind}"
        );
    }
    let dir = scratch("special");
    let kind = kind_of(TensorFile::<f32>::read(&dir));
    assert!(
        matches!(
            kind,
            Kind::NotRegularFile {
                what: "a directory"
            }
        ),
        "{kind}"
    );
    let err = TensorFile::<f32>::read(&dir.join("missing")).unwrap_err();
    assert!(matches!(err.kind, Kind::Io { .. }), "{err}");
    assert_eq!(err.path.as_deref(), Some(dir.join("missing").as_path()));
    assert!(err.to_string().contains("missing"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_fifo_is_refused_instead_of_blocking() {
    let dir = scratch("fifo");
    let fifo = dir.join("pipe.safetensors");
    match std::process::Command::new("mkfifo").arg(&fifo).status() {
        Ok(status) if status.success() => {}
        _ => {
            eprintln!("mkfifo is unavailable; skipping the FIFO test");
            return;
        }
    }
    // Opening a FIFO for reading blocks until a writer comes: read it on another thread
    // so that a regression fails the test instead of hanging it.
    let (send, receive) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = send.send(TensorFile::<f32>::read(&path).map(drop).map_err(|e| e.kind));
    });
    let result = receive
        .recv_timeout(Duration::from_secs(20))
        .expect("reading a FIFO blocked");
    assert!(
        matches!(result, Err(Kind::NotRegularFile { what: "a FIFO" })),
        "{result:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_symlink_to_a_regular_file_is_read() {
    let dir = scratch("read-link");
    std::fs::write(dir.join("real"), valid_file()).unwrap();
    std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
    let file = TensorFile::<f32>::read(&dir.join("link")).unwrap();
    assert_eq!(file.tensors.len(), 2);
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Atomic writes.
// ---------------------------------------------------------------------------------------

fn small_file(value: f64) -> TensorFile<f32> {
    let mut file = TensorFile::new();
    file.tensors
        .push(FileTensor::new("w", tensor(&[value], &[1])));
    file
}

#[cfg(unix)]
#[test]
fn a_symlink_at_the_target_is_replaced_not_followed() {
    let dir = scratch("symlink");
    let victim = dir.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let target = dir.join("model.safetensors");
    std::os::unix::fs::symlink(&victim, &target).unwrap();
    small_file(1.0).write(&target).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(
        std::fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_file()
    );
    let back = TensorFile::<f32>::read(&target).unwrap();
    assert_eq!(back.get("w").unwrap().tensor.to_vec(), [1.0]);
    assert_eq!(entries(&dir), ["model.safetensors", "victim"]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_failed_write_leaves_the_previous_file_and_no_temporary() {
    let dir = scratch("failed-write");
    let path = dir.join("model.safetensors");
    small_file(1.0).write(&path).unwrap();
    let before = std::fs::read(&path).unwrap();

    // Contents that cannot be encoded: nothing is touched.
    let mut bad = small_file(2.0);
    bad.tensors
        .push(FileTensor::counter("n", Tensor::scalar(0.5)));
    assert!(matches!(kind_of(bad.write(&path)), Kind::NotInteger { .. }));
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // A rename that fails (a non-empty directory is in the way): the temporary file,
    // already written and synced, is removed again.
    let blocked = dir.join("blocked");
    std::fs::create_dir_all(blocked.join("inside")).unwrap();
    let err = small_file(3.0).write(&blocked).unwrap_err();
    assert!(matches!(err.kind, Kind::Io { .. }), "{err}");
    assert_eq!(entries(&dir), ["blocked", "model.safetensors"]);

    // A directory that does not exist: no temporary file can even be created.
    let err = small_file(4.0)
        .write(&dir.join("no/such/dir/f"))
        .unwrap_err();
    assert!(
        matches!(
            err.kind,
            Kind::Io {
                op: "create a temporary file",
                ..
            }
        ),
        "{err}"
    );

    assert_eq!(std::fs::read(&path).unwrap(), before);
    std::fs::remove_dir_all(dir).unwrap();
}
