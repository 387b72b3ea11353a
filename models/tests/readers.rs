//! The readers of real file formats (IDX, CIFAR-10, CSV, text, gzip) on generated
//! fixtures, good and broken, and the bundled data sets at their documented sizes.
//!
//! Every broken file must give a `ModelsError::Data` naming the file and saying what is
//! wrong: never a panic, never silently fewer samples.

use crate::common;

use common::{TempDir, assert_data_error, cifar_bytes, cifar_pixel, data_dir, gzip, idx_bytes};
use strata_models::ModelsError;
use strata_models::data::bundled;
use strata_models::data::readers::{
    CharVocab, read_cifar10, read_csv, read_idx, read_maybe_gzip, read_text,
};
use strata_models::data::{Dataset, InMemoryDataset, Label, Labels};

// ---------------------------------------------------------------------------------------
// IDX
// ---------------------------------------------------------------------------------------

#[test]
fn idx_round_trip_plain_and_gzip() {
    let dir = TempDir::new("idx-ok");
    let data: Vec<u8> = (0..24).map(|v| (v * 11) as u8).collect();
    let bytes = idx_bytes(&[3, 2, 4], &data);
    for (name, file) in [
        ("a-idx3-ubyte", bytes.clone()),
        ("a-idx3-ubyte.gz", gzip(&bytes)),
    ] {
        let path = dir.write(name, &file);
        let arr = read_idx(&path).unwrap();
        assert_eq!(arr.dims, vec![3, 2, 4], "{name}");
        assert_eq!(arr.data, data, "{name}");
    }
    let labels = dir.write("l-idx1-ubyte", &idx_bytes(&[5], &[9, 0, 3, 3, 7]));
    let arr = read_idx(&labels).unwrap();
    assert_eq!((arr.dims, arr.data), (vec![5], vec![9, 0, 3, 3, 7]));
    // A dimension of zero is an empty array, not an error.
    let empty = dir.write("e-idx2-ubyte", &idx_bytes(&[0, 28], &[]));
    assert_eq!(read_idx(&empty).unwrap().dims, vec![0, 28]);
}

#[test]
fn idx_bad_magic() {
    let dir = TempDir::new("idx-magic");
    let mut bytes = idx_bytes(&[2], &[1, 2]);
    bytes[0] = 0x50;
    let path = dir.write("magic", &bytes);
    assert_data_error(read_idx(&path), &path, &["bad magic"]);
    // Text is not IDX either.
    let path = dir.write("text", b"hello, world\n");
    assert_data_error(read_idx(&path), &path, &["bad magic"]);
    // Shorter than the magic number, and empty.
    let path = dir.write("short", &[0, 0]);
    assert_data_error(read_idx(&path), &path, &["bad magic"]);
    let path = dir.write("empty", &[]);
    assert_data_error(read_idx(&path), &path, &["bad magic"]);
}

#[test]
fn idx_rejects_types_other_than_unsigned_byte() {
    let dir = TempDir::new("idx-type");
    // 0x09 signed byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double.
    for ty in [0x09u8, 0x0B, 0x0C, 0x0D, 0x0E] {
        let mut bytes = idx_bytes(&[1], &[0, 0, 0, 0, 0, 0, 0, 0]);
        bytes[2] = ty;
        let path = dir.write(&format!("type-{ty:02x}"), &bytes);
        assert_data_error(
            read_idx(&path),
            &path,
            &[&format!("0x{ty:02x}"), "not unsigned byte"],
        );
    }
}

#[test]
fn idx_truncated_header() {
    let dir = TempDir::new("idx-header");
    // Three dimensions promised, one and a half given.
    let path = dir.write("header", &[0, 0, 8, 3, 0, 0, 0, 2, 0, 0]);
    assert_data_error(
        read_idx(&path),
        &path,
        &["truncated IDX header", "3 dimensions"],
    );
    // The magic number alone.
    let path = dir.write("magic-only", &[0, 0, 8, 1]);
    assert_data_error(read_idx(&path), &path, &["truncated IDX header"]);
    // No dimensions at all.
    let path = dir.write("zero-dims", &[0, 0, 8, 0, 7]);
    assert_data_error(read_idx(&path), &path, &["0 dimensions"]);
}

#[test]
fn idx_truncated_and_too_long_data() {
    let dir = TempDir::new("idx-data");
    let full: Vec<u8> = (0..12).collect();
    let path = dir.write("short", &idx_bytes(&[2, 2, 3], &full[..11]));
    assert_data_error(read_idx(&path), &path, &["truncated", "12 bytes", "has 11"]);
    let path = dir.write("nodata", &idx_bytes(&[2, 2, 3], &[]));
    assert_data_error(read_idx(&path), &path, &["truncated", "has 0"]);
    let mut long = full.clone();
    long.push(0);
    let path = dir.write("long", &idx_bytes(&[2, 2, 3], &long));
    assert_data_error(read_idx(&path), &path, &["too long", "12 bytes", "has 13"]);
    // The same inside gzip.
    let path = dir.write("short.gz", &gzip(&idx_bytes(&[2, 2, 3], &full[..5])));
    assert_data_error(read_idx(&path), &path, &["truncated", "has 5"]);
}

/// A header whose dimensions multiply past `usize` must not wrap around (2^16 · 2^16 ·
/// 2^16 · 2^16 = 2^64 would wrap to 0 and "match" an empty body) nor overflow-panic.
#[test]
fn idx_dimensions_that_overflow_are_rejected() {
    let dir = TempDir::new("idx-overflow");
    let path = dir.write("wrap", &idx_bytes(&[65536, 65536, 65536, 65536], &[]));
    assert_data_error(read_idx(&path), &path, &["too large"]);
    let path = dir.write(
        "huge",
        &idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[1, 2, 3]),
    );
    assert_data_error(read_idx(&path), &path, &["too large"]);
    // As images for the MNIST loader: [2^22, 2^21, 2^21] images would wrap to 0 bytes too.
    let mnist = TempDir::new("idx-overflow-mnist");
    mnist.write(
        "train-images-idx3-ubyte",
        &idx_bytes(&[1 << 22, 1 << 21, 1 << 21], &[]),
    );
    mnist.write("train-labels-idx1-ubyte", &idx_bytes(&[1], &[0]));
    let images = mnist.join("train-images-idx3-ubyte");
    assert_data_error(bundled::mnist(mnist.path()), &images, &["too large"]);
}

fn valid_gzip_fixture() -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..4096u32)
        .map(|v| (v.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let raw = idx_bytes(&[16, 16, 16], &data);
    let gz = gzip(&raw);
    (raw, gz)
}

#[test]
fn gzip_corrupted() {
    let dir = TempDir::new("gz-corrupt");
    let (raw, gz) = valid_gzip_fixture();
    let path = dir.write("ok.gz", &gz);
    assert_eq!(read_maybe_gzip(&path).unwrap(), raw);
    // Bytes flipped inside the deflate stream.
    let mut body = gz.clone();
    for k in [20, 40, 60, 200] {
        body[k] ^= 0x5A;
    }
    let path = dir.write("body.gz", &body);
    assert_data_error(read_idx(&path), &path, &["corrupt or truncated gzip"]);
    // A wrong CRC-32 in the trailer (the data itself intact).
    let mut crc = gz.clone();
    let at = crc.len() - 8;
    crc[at] ^= 0xFF;
    let path = dir.write("crc.gz", &crc);
    assert_data_error(read_idx(&path), &path, &["corrupt or truncated gzip"]);
    // A wrong length in the trailer.
    let mut len = gz.clone();
    let at = len.len() - 4;
    len[at] ^= 0x01;
    let path = dir.write("len.gz", &len);
    assert_data_error(read_idx(&path), &path, &["corrupt or truncated gzip"]);
    // A broken header (reserved flag bits set).
    let mut header = gz.clone();
    header[3] = 0xE0;
    let path = dir.write("header.gz", &header);
    assert_data_error(
        read_maybe_gzip(&path),
        &path,
        &["corrupt or truncated gzip"],
    );
}

#[test]
fn gzip_truncated() {
    let dir = TempDir::new("gz-trunc");
    let (_, gz) = valid_gzip_fixture();
    for keep in [2, 10, gz.len() / 2, gz.len() - 8, gz.len() - 1] {
        let path = dir.write(&format!("cut-{keep}.gz"), &gz[..keep]);
        assert_data_error(read_idx(&path), &path, &["corrupt or truncated gzip"]);
    }
    // Truncated CSV and text behind gzip too: no rows may go missing silently.
    let csv: String = (0..500).map(|i| format!("{i},{}\n", i * 2)).collect();
    let gz = gzip(csv.as_bytes());
    let path = dir.write("table.csv.gz", &gz[..gz.len() * 2 / 3]);
    assert_data_error(
        read_csv(&path, false, Some(',')),
        &path,
        &["corrupt or truncated gzip"],
    );
    let path = dir.write("text.gz", &gz[..gz.len() - 4]);
    assert_data_error(read_text(&path), &path, &["corrupt or truncated gzip"]);
}

/// RFC 1952: a gzip file is a series of members, and `gzip -d` (and Python's `gzip`)
/// decompress them all. Reading only the first member would silently drop rows.
#[test]
fn gzip_with_several_members_is_read_whole() {
    let dir = TempDir::new("gz-members");
    let mut two = gzip(b"1,2\n3,4\n");
    two.extend(gzip(b"5,6\n"));
    let path = dir.write("two.csv.gz", &two);
    let table = read_csv(&path, false, Some(',')).unwrap();
    assert_eq!(
        table.rows,
        vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]
    );
    // Garbage after a complete member is an error, not ignored.
    let mut trailing = gzip(b"1,2\n");
    trailing.extend_from_slice(b"garbage!");
    let path = dir.write("trailing.csv.gz", &trailing);
    assert_data_error(
        read_csv(&path, false, Some(',')),
        &path,
        &["corrupt or truncated gzip"],
    );
}

#[test]
fn missing_files_are_data_errors() {
    let dir = TempDir::new("missing");
    let path = dir.join("nope");
    assert_data_error(read_idx(&path), &path, &[]);
    assert_data_error(read_cifar10(&path), &path, &[]);
    assert_data_error(read_csv(&path, true, None), &path, &[]);
    assert_data_error(read_text(&path), &path, &[]);
    // A folder is not a file.
    assert_data_error(read_maybe_gzip(dir.path()), dir.path(), &[]);
}

// ---------------------------------------------------------------------------------------
// CIFAR-10
// ---------------------------------------------------------------------------------------

#[test]
fn cifar10_values_read_back() {
    let dir = TempDir::new("cifar-ok");
    let labels = [0u8, 9, 5];
    let bytes = cifar_bytes(&labels, 0);
    assert_eq!(bytes.len(), 3 * 3073);
    for (name, file) in [
        ("data_batch_1.bin", bytes.clone()),
        ("data_batch_1.bin.gz", gzip(&bytes)),
    ] {
        let path = dir.write(name, &file);
        let batch = read_cifar10(&path).unwrap();
        assert_eq!(batch.labels, labels, "{name}");
        assert_eq!(batch.pixels.len(), 3 * 3072, "{name}");
        for i in 0..3 {
            for (c, y, x) in [
                (0, 0, 0),
                (0, 31, 31),
                (1, 0, 0),
                (1, 7, 19),
                (2, 0, 0),
                (2, 31, 0),
            ] {
                assert_eq!(
                    batch.pixels[i * 3072 + c * 1024 + y * 32 + x],
                    cifar_pixel(i, c, y, x),
                    "{name} {i} {c} {y} {x}"
                );
            }
        }
    }
}

#[test]
fn cifar10_truncated_or_wrong() {
    let dir = TempDir::new("cifar-bad");
    let bytes = cifar_bytes(&[1, 2], 0);
    let path = dir.write("cut.bin", &bytes[..bytes.len() - 1]);
    assert_data_error(
        read_cifar10(&path),
        &path,
        &["6145 bytes", "not a whole number of 3073-byte"],
    );
    let path = dir.write("one-byte-more.bin", &[bytes.as_slice(), &[0]].concat());
    assert_data_error(read_cifar10(&path), &path, &["not a whole number"]);
    let path = dir.write("empty.bin", &[]);
    assert_data_error(read_cifar10(&path), &path, &["0 bytes"]);
    let path = dir.write("cut.bin.gz", &gzip(&bytes[..3073 + 100]));
    assert_data_error(read_cifar10(&path), &path, &["not a whole number"]);
    // A label above 9 in the second record.
    let mut bad = cifar_bytes(&[3, 3, 3], 0);
    bad[3073] = 10;
    let path = dir.write("label.bin", &bad);
    assert_data_error(
        read_cifar10(&path),
        &path,
        &["record 1 has label 10", "0-9"],
    );
    bad[3073] = 255;
    let path = dir.write("label255.bin", &bad);
    assert_data_error(read_cifar10(&path), &path, &["label 255"]);
}

/// The CIFAR-10 loader on a generated folder: the five training batches and the test
/// batch, channels normalised with their own statistics.
#[test]
fn cifar10_folder_loader() {
    let dir = TempDir::new("cifar-dir");
    for b in 1..=5 {
        dir.write(
            &format!("data_batch_{b}.bin"),
            &cifar_bytes(&[b as u8, 9 - b as u8], 2 * (b - 1)),
        );
    }
    dir.write("test_batch.bin.gz", &gzip(&cifar_bytes(&[7], 100)));
    let (train, test) = bundled::cifar10(dir.path()).unwrap();
    assert_eq!((train.len(), test.len()), (10, 1));
    assert_eq!(train.sample_shape(), &[3, 32, 32]);
    assert_eq!(train.classes(), Some(10));
    let want: Vec<usize> = (1..=5).flat_map(|b| [b, 9 - b]).collect();
    assert_eq!(
        train.labels(),
        &Labels::Classes {
            indices: want,
            classes: 10
        }
    );
    const MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
    const STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
    let mut out = vec![0f32; 3072];
    for (data, image, first) in [(&train, 7, 0), (&test, 0, 100)] {
        let label = data.read(image, &mut out);
        assert!(matches!(label, Label::Class(_)));
        for c in 0..3 {
            for (y, x) in [(0, 0), (13, 29), (31, 31)] {
                let p = cifar_pixel(first + image, c, y, x) as f32;
                let want = (p / 255.0 - MEAN[c]) / STD[c];
                let got = out[c * 1024 + y * 32 + x];
                assert!((got - want).abs() < 1e-6, "channel {c}: {got} vs {want}");
            }
        }
    }
    // A missing batch is named.
    std::fs::remove_file(dir.join("data_batch_4.bin")).unwrap();
    assert_data_error(
        bundled::cifar10(dir.path()),
        &dir.join("data_batch_4.bin"),
        &["no such file"],
    );
}

// ---------------------------------------------------------------------------------------
// CSV
// ---------------------------------------------------------------------------------------

#[test]
fn csv_reads_headers_delimiters_and_gzip() {
    let dir = TempDir::new("csv-ok");
    let path = dir.write("h.csv", b"\"a\", \"b\",c\n1,2.5,-3\n\n 4 ,5e-1,6\n");
    let t = read_csv(&path, true, Some(',')).unwrap();
    assert_eq!(
        t.header,
        Some(vec!["a".to_string(), "b".into(), "c".into()])
    );
    assert_eq!(t.rows, vec![vec![1.0, 2.5, -3.0], vec![4.0, 0.5, 6.0]]);
    let path = dir.write("ws.txt.gz", &gzip(b"1 2\t3\n  4   5 6  \r\n"));
    let t = read_csv(&path, false, None).unwrap();
    assert_eq!(t.header, None);
    assert_eq!(t.rows, vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
    let path = dir.write("semi.csv", b"1;2\n3;4");
    assert_eq!(read_csv(&path, false, Some(';')).unwrap().rows.len(), 2);
}

#[test]
fn csv_non_number_names_line_and_column() {
    let dir = TempDir::new("csv-nan");
    let path = dir.write("bad.csv", b"1,2,3\n4,five,6\n");
    assert_data_error(
        read_csv(&path, false, Some(',')),
        &path,
        &["line 2, column 2", "\"five\"", "not a number"],
    );
    // The header counts as a line; an empty line before the bad one too.
    let path = dir.write("bad-h.csv", b"x,y\n1,2\n\n3,4x\n");
    assert_data_error(
        read_csv(&path, true, Some(',')),
        &path,
        &["line 4, column 2", "\"4x\""],
    );
    // An empty field (a trailing comma).
    let path = dir.write("trailing.csv", b"1,2,\n");
    assert_data_error(
        read_csv(&path, false, Some(',')),
        &path,
        &["line 1, column 3", "\"\""],
    );
    // Whitespace-separated.
    let path = dir.write("ws.txt", b"1 2\n3 - 4\n");
    assert_data_error(
        read_csv(&path, false, None),
        &path,
        &["line 2, column 2", "\"-\""],
    );
}

#[test]
fn csv_ragged_rows() {
    let dir = TempDir::new("csv-ragged");
    let path = dir.write("short.csv", b"1,2,3\n4,5,6\n7,8\n");
    assert_data_error(
        read_csv(&path, false, Some(',')),
        &path,
        &["line 3 has 2 fields", "earlier rows have 3"],
    );
    let path = dir.write("long.csv", b"h\n1\n2,3\n");
    assert_data_error(
        read_csv(&path, true, Some(',')),
        &path,
        &["line 3 has 2 fields", "earlier rows have 1"],
    );
    let path = dir.write("ws.txt", b"1 2 3\n4 5 6 7\n");
    assert_data_error(
        read_csv(&path, false, None),
        &path,
        &["line 2 has 4 fields"],
    );
}

#[test]
fn csv_empty_and_not_text() {
    let dir = TempDir::new("csv-empty");
    let path = dir.write("empty.csv", b"");
    assert_data_error(read_csv(&path, false, Some(',')), &path, &["no data rows"]);
    assert_data_error(read_csv(&path, true, Some(',')), &path, &["empty file"]);
    let path = dir.write("blank.csv", b"\n  \n\n");
    assert_data_error(read_csv(&path, false, Some(',')), &path, &["no data rows"]);
    let path = dir.write("header-only.csv", b"a,b\n");
    assert_data_error(read_csv(&path, true, Some(',')), &path, &["no data rows"]);
    let path = dir.write("empty.csv.gz", &gzip(b""));
    assert_data_error(read_csv(&path, false, None), &path, &["no data rows"]);
    let path = dir.write("binary.csv", &[b'1', b',', 0xff, 0xfe, b'\n']);
    assert_data_error(
        read_csv(&path, false, Some(',')),
        &path,
        &["not valid UTF-8"],
    );
}

// ---------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------

#[test]
fn text_and_vocabulary() {
    let dir = TempDir::new("text-ok");
    let path = dir.write("t.txt.gz", &gzip("hello, wörld\n".as_bytes()));
    let (text, vocab) = read_text(&path).unwrap();
    assert_eq!(text, "hello, wörld\n");
    assert_eq!(vocab, CharVocab::from_text(&text));
    assert_eq!(vocab.len(), 11);
    assert_eq!(vocab.char(0), Some('\n'));
    assert_eq!(vocab.char(vocab.len() - 1), Some('ö'));
    assert_eq!(vocab.index('z'), None);
    assert_eq!(vocab.char(vocab.len()), None);
    let ids = vocab.encode(&text).unwrap();
    assert_eq!(vocab.decode(&ids).as_deref(), Some(text.as_str()));
    assert_eq!(vocab.encode("hex"), None);
    assert_eq!(vocab.decode(&[0, 99]), None);
    assert!(!vocab.is_empty());
    assert!(CharVocab::from_text("").is_empty());
}

#[test]
fn text_invalid_utf8_and_empty() {
    let dir = TempDir::new("text-bad");
    let path = dir.write("bad.txt", &[b'a', b'b', 0xC3, 0x28, b'c']);
    assert_data_error(read_text(&path), &path, &["not valid UTF-8"]);
    let path = dir.write("cut.txt", "é".as_bytes().split_last().unwrap().1);
    assert_data_error(read_text(&path), &path, &["not valid UTF-8"]);
    let path = dir.write("empty.txt", b"");
    assert_data_error(read_text(&path), &path, &["empty text file"]);
    let path = dir.write("empty.txt.gz", &gzip(b""));
    assert_data_error(read_text(&path), &path, &["empty text file"]);
}

#[test]
fn bundled_moby_dick_text() {
    let path = data_dir().join("moby-dick").join("moby-dick.txt");
    let (text, vocab) = read_text(&path).unwrap();
    assert_eq!(text.len(), std::fs::metadata(&path).unwrap().len() as usize);
    assert!(text.contains("Call me Ishmael"));
    assert!(('a'..='z').all(|c| vocab.index(c).is_some()));
    let start: String = text.chars().take(1000).collect();
    assert_eq!(vocab.encode(&start).map(|v| v.len()), Some(1000));
}

// ---------------------------------------------------------------------------------------
// The bundled data sets
// ---------------------------------------------------------------------------------------

fn class_counts(data: &InMemoryDataset) -> Vec<usize> {
    let Labels::Classes { indices, classes } = data.labels() else {
        panic!("not classification data")
    };
    let mut counts = vec![0; *classes];
    for &c in indices {
        counts[c] += 1;
    }
    counts
}

fn value_range(data: &InMemoryDataset) -> (f32, f32) {
    data.features()
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

#[test]
fn bundled_mnist() {
    let (train, test) = bundled::mnist(&data_dir().join("mnist")).unwrap();
    assert_eq!((train.len(), test.len()), (60000, 10000));
    assert_eq!(train.sample_shape(), &[1, 28, 28]);
    assert_eq!(test.sample_shape(), &[1, 28, 28]);
    assert_eq!(train.features().len(), 60000 * 784);
    assert_eq!(
        class_counts(&train),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        class_counts(&test),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    // Pixels 0..=255 scaled to [0, 1], normalised with mean 0.1307 and std 0.3081.
    let (lo, hi) = value_range(&test);
    assert!((lo - (-0.1307 / 0.3081)).abs() < 1e-5, "{lo}");
    assert!((hi - (1.0 - 0.1307) / 0.3081).abs() < 1e-5, "{hi}");
    let p = bundled::mnist_provenance();
    assert_eq!(p.name, "MNIST");
    assert!(p.license.contains("CC BY-SA 3.0"));
}

#[test]
fn bundled_digits() {
    let digits = bundled::digits(&data_dir()).unwrap();
    assert_eq!(digits.len(), 1797);
    assert_eq!(digits.sample_shape(), &[1, 8, 8]);
    assert_eq!(
        class_counts(&digits),
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
    assert_eq!(value_range(&digits), (0.0, 1.0));
    // The first image: 0,0,5,13,9,1,0,0, … label 0.
    let mut x = vec![0.0; 64];
    assert_eq!(digits.read(0, &mut x), Label::Class(0));
    assert_eq!(&x[..4], &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0]);
}

#[test]
fn bundled_tables() {
    let dir = data_dir();
    let iris = bundled::iris(&dir).unwrap();
    assert_eq!(
        (iris.len(), iris.sample_shape(), iris.classes()),
        (150, &[4][..], Some(3))
    );
    assert_eq!(class_counts(&iris), [50, 50, 50]);
    let mut x = vec![0.0; 4];
    assert_eq!(iris.read(0, &mut x), Label::Class(0));
    assert_eq!(x, [5.1, 3.5, 1.4, 0.2]);

    let wine = bundled::wine(&dir).unwrap();
    assert_eq!(
        (wine.len(), wine.sample_shape(), wine.classes()),
        (178, &[13][..], Some(3))
    );
    assert_eq!(class_counts(&wine), [59, 71, 48]);

    let cancer = bundled::breast_cancer(&dir).unwrap();
    assert_eq!(
        (cancer.len(), cancer.sample_shape(), cancer.classes()),
        (569, &[30][..], Some(2))
    );
    assert_eq!(class_counts(&cancer), [212, 357]);
    let mut x = vec![0.0; 30];
    assert_eq!(cancer.read(0, &mut x), Label::Class(0));
    assert_eq!((x[0], x[3], x[29]), (17.99, 1001.0, 0.1189));

    let diabetes = bundled::diabetes(&dir).unwrap();
    assert_eq!(
        (diabetes.len(), diabetes.sample_shape(), diabetes.classes()),
        (442, &[10][..], None)
    );
    let mut x = vec![0.0; 10];
    assert_eq!(diabetes.read(0, &mut x), Label::Value(151.0));
    assert_eq!(
        x,
        [59.0, 2.0, 32.1, 101.0, 157.0, 93.2, 38.0, 4.0, 4.8598, 87.0]
    );
    let Labels::Values(y) = diabetes.labels() else {
        panic!("regression data")
    };
    let (lo, hi) = y
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    assert_eq!((lo, hi), (25.0, 346.0));

    for name in ["iris", "wine", "breast_cancer", "diabetes", "digits"] {
        let p = bundled::uci_provenance(name);
        assert_eq!(p.name, name);
        assert!(!p.source.is_empty() && !p.license.is_empty());
    }
    assert!(
        bundled::uci_provenance("diabetes")
            .license
            .contains("Efron")
    );
}

/// The loaders take `name` or `name.gz` alike, for every table.
#[test]
fn bundled_loaders_read_gzipped_tables() {
    let dir = TempDir::new("bundled-gz");
    for file in ["iris.csv", "wine_data.csv", "breast_cancer.csv"] {
        let plain = std::fs::read(data_dir().join("uci-small").join(file)).unwrap();
        dir.write(&format!("uci-small/{file}.gz"), &gzip(&plain));
    }
    assert_eq!(
        bundled::iris(dir.path()).unwrap(),
        bundled::iris(&data_dir()).unwrap()
    );
    assert_eq!(
        bundled::wine(dir.path()).unwrap(),
        bundled::wine(&data_dir()).unwrap()
    );
    let cancer = bundled::breast_cancer(dir.path()).unwrap();
    assert!(cancer == bundled::breast_cancer(&data_dir()).unwrap());
}

/// The loaders check what the generic readers cannot: headers against rows, labels
/// against classes, images against labels.
#[test]
fn bundled_loaders_reject_inconsistent_files() {
    let dir = TempDir::new("bundled-bad");
    let iris = dir.join("uci-small/iris.csv");
    dir.write("uci-small/iris.csv", b"3,2,a,b\n1,2,0\n3,4,1\n");
    assert_data_error(
        bundled::iris(dir.path()),
        &iris,
        &["promises 3 samples", "has 2"],
    );
    dir.write("uci-small/iris.csv", b"2,2,a,b\n1,2,0\n3,4,2\n");
    assert_data_error(
        bundled::iris(dir.path()),
        &iris,
        &["row 2", "label 2", "below 2"],
    );
    dir.write("uci-small/iris.csv", b"2,2,a,b\n1,2,0\n3,4,0.5\n");
    assert_data_error(bundled::iris(dir.path()), &iris, &["label 0.5"]);
    dir.write("uci-small/iris.csv", b"2,3,a,b\n1,2,0\n3,4,1\n");
    assert_data_error(bundled::iris(dir.path()), &iris, &["promises 3 features"]);
    dir.write("uci-small/iris.csv", b"sepal,petal\n1,2,0\n");
    assert_data_error(bundled::iris(dir.path()), &iris, &["n_samples,n_features"]);
    dir.write("uci-small/iris.csv", b"");
    assert_data_error(bundled::iris(dir.path()), &iris, &[]);
    assert_data_error(
        bundled::wine(dir.path()),
        &dir.join("uci-small/wine_data.csv"),
        &["no such file"],
    );

    let digits = dir.join("uci-small/digits.csv");
    dir.write("uci-small/digits.csv", b"1,2,3\n");
    assert_data_error(bundled::digits(dir.path()), &digits, &["64 pixels"]);

    let x = dir.join("uci-small/diabetes_data_raw.csv.gz");
    let y = dir.join("uci-small/diabetes_target.csv");
    dir.write(
        "uci-small/diabetes_data_raw.csv.gz",
        &gzip(b"1 2 3 4 5 6 7 8 9 10\n1 2 3 4 5 6 7 8 9 10\n"),
    );
    dir.write("uci-small/diabetes_target.csv", b"1\n");
    assert_data_error(bundled::diabetes(dir.path()), &y, &["expected 2 targets"]);
    dir.write("uci-small/diabetes_data_raw.csv.gz", &gzip(b"1 2 3\n"));
    assert_data_error(bundled::diabetes(dir.path()), &x, &["10 features"]);

    let m = TempDir::new("bundled-bad-mnist");
    let images = m.join("train-images-idx3-ubyte");
    let labels = m.join("train-labels-idx1-ubyte.gz");
    m.write("train-images-idx3-ubyte", &idx_bytes(&[2, 2, 2], &[0; 8]));
    assert_data_error(
        bundled::mnist(m.path()),
        &m.join("train-labels-idx1-ubyte"),
        &["no such file"],
    );
    m.write(
        "train-labels-idx1-ubyte.gz",
        &gzip(&idx_bytes(&[3], &[0, 1, 2])),
    );
    assert_data_error(bundled::mnist(m.path()), &labels, &["expected 2 labels"]);
    m.write(
        "train-labels-idx1-ubyte.gz",
        &gzip(&idx_bytes(&[2], &[0, 10])),
    );
    assert_data_error(bundled::mnist(m.path()), &labels, &["label 10"]);
    m.write(
        "train-labels-idx1-ubyte.gz",
        &gzip(&idx_bytes(&[2], &[0, 9])),
    );
    m.write("train-images-idx3-ubyte", &idx_bytes(&[2, 4], &[0; 8]));
    assert_data_error(bundled::mnist(m.path()), &images, &["[n, rows, cols]"]);
    m.write("train-images-idx3-ubyte", &idx_bytes(&[2, 2, 2], &[0; 7]));
    assert_data_error(bundled::mnist(m.path()), &images, &["truncated"]);
    // With valid training files, the missing test files are named.
    m.write("train-images-idx3-ubyte", &idx_bytes(&[2, 2, 2], &[0; 8]));
    assert_data_error(
        bundled::mnist(m.path()),
        &m.join("t10k-images-idx3-ubyte"),
        &["no such file"],
    );
    m.write("t10k-images-idx3-ubyte", &idx_bytes(&[1, 2, 2], &[255; 4]));
    m.write("t10k-labels-idx1-ubyte", &idx_bytes(&[1], &[4]));
    let (train, test) = bundled::mnist(m.path()).unwrap();
    assert_eq!(
        (train.len(), test.len(), test.sample_shape()),
        (2, 1, &[1, 2, 2][..])
    );
    assert!(matches!(
        bundled::mnist(&m.join("nope")),
        Err(ModelsError::Data { .. })
    ));
}
