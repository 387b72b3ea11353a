//! Readers for real file formats: IDX (MNIST), CIFAR-10 binary batches, CSV, plain text.
//!
//! Every reader checks what it reads: a truncated, corrupt or mis-shaped file is an error
//! naming the file and the problem, never a panic and never silently fewer samples.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::Result;
use crate::error::data_error;

/// Reads a whole file, transparently un-gzipping it when it starts with the gzip magic
/// (every member of a multi-member gzip file, as `gzip -d` does).
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) when the file cannot be read or its
/// gzip stream is corrupt or truncated.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| data_error(path, e.to_string()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| data_error(path, format!("corrupt or truncated gzip data: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// An IDX array: its dimensions and its unsigned-byte data, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions (e.g. `[60000, 28, 28]` for MNIST images).
    pub dims: Vec<usize>,
    /// The values.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (the MNIST format), gzipped or not.
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) for a bad magic number, a data type
/// other than unsigned byte, or a length that does not match the header.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_maybe_gzip(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(data_error(path, "not an IDX file (bad magic number)"));
    }
    if bytes[2] != 0x08 {
        return Err(data_error(
            path,
            format!(
                "IDX data type 0x{:02x} is not unsigned byte (0x08)",
                bytes[2]
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(data_error(
            path,
            format!(
                "truncated IDX header: {} bytes for {ndim} dimensions",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| {
            u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let Some(expected) = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
        return Err(data_error(
            path,
            format!("corrupt IDX header: dimensions {dims:?} are too large"),
        ));
    };
    let found = bytes.len() - header;
    if found != expected {
        let what = if found < expected {
            "truncated"
        } else {
            "too long"
        };
        return Err(data_error(
            path,
            format!(
                "{what}: the header promises {dims:?} = {expected} bytes of data, the file has {found}"
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// One CIFAR-10 binary batch: labels and `[n, 3, 32, 32]` pixel bytes (R, G, B planes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CifarBatch {
    /// One label (0–9) per image.
    pub labels: Vec<u8>,
    /// `3 · 32 · 32` bytes per image.
    pub pixels: Vec<u8>,
}

/// Reads a CIFAR-10 binary batch (`data_batch_1.bin`, …): records of one label byte and
/// 3072 pixel bytes.
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) when the length is not a whole number
/// of records or a label is above 9.
pub fn read_cifar10(path: &Path) -> Result<CifarBatch> {
    const RECORD: usize = 1 + 3 * 32 * 32;
    let bytes = read_maybe_gzip(path)?;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(data_error(
            path,
            format!(
                "{} bytes is not a whole number of {RECORD}-byte CIFAR-10 records (truncated or not CIFAR-10)",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / RECORD;
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    for (i, rec) in bytes.chunks_exact(RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(data_error(
                path,
                format!("record {i} has label {}, CIFAR-10 labels are 0-9", rec[0]),
            ));
        }
        labels.push(rec[0]);
        pixels.extend_from_slice(&rec[1..]);
    }
    Ok(CifarBatch { labels, pixels })
}

/// A numeric table: optional header fields, then rows of equal length.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The header's fields, when the file has one.
    pub header: Option<Vec<String>>,
    /// The rows.
    pub rows: Vec<Vec<f64>>,
}

/// Reads a delimited numeric file (gzipped or not): `header` says whether the first line
/// is a header; `delimiter` `None` splits on runs of whitespace. Empty lines are skipped.
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) for invalid UTF-8, a field that is not
/// a number (naming line and column), a row of another length, or no rows.
pub fn read_csv(path: &Path, header: bool, delimiter: Option<char>) -> Result<Table> {
    let bytes = read_maybe_gzip(path)?;
    let text = String::from_utf8(bytes).map_err(|_| data_error(path, "not valid UTF-8 text"))?;
    let split = |line: &str| -> Vec<String> {
        match delimiter {
            Some(d) => line
                .split(d)
                .map(|f| f.trim().trim_matches('"').to_string())
                .collect(),
            None => line.split_whitespace().map(String::from).collect(),
        }
    };
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header = if header {
        Some(split(
            lines
                .next()
                .ok_or_else(|| data_error(path, "empty file: no header"))?
                .1,
        ))
    } else {
        None
    };
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (lineno, line) in lines {
        let fields = split(line);
        let row = fields
            .iter()
            .enumerate()
            .map(|(col, f)| {
                f.parse::<f64>().map_err(|_| {
                    data_error(
                        path,
                        format!(
                            "line {}, column {}: {f:?} is not a number",
                            lineno + 1,
                            col + 1
                        ),
                    )
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        if let Some(first) = rows.first()
            && first.len() != row.len()
        {
            return Err(data_error(
                path,
                format!(
                    "line {} has {} fields, earlier rows have {}",
                    lineno + 1,
                    row.len(),
                    first.len()
                ),
            ));
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(data_error(path, "no data rows"));
    }
    Ok(Table { header, rows })
}

/// A character vocabulary: the distinct characters of a text, sorted, each with an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CharVocab {
    chars: Vec<char>,
}

impl CharVocab {
    /// The vocabulary of `text`.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        CharVocab { chars }
    }

    /// The number of characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// The index of `c`, if it is in the vocabulary.
    pub fn index(&self, c: char) -> Option<usize> {
        self.chars.binary_search(&c).ok()
    }

    /// The character at `index`.
    pub fn char(&self, index: usize) -> Option<char> {
        self.chars.get(index).copied()
    }

    /// `text` as indices; `None` if a character is not in the vocabulary.
    pub fn encode(&self, text: &str) -> Option<Vec<usize>> {
        text.chars().map(|c| self.index(c)).collect()
    }

    /// Indices back to text; `None` for an index out of range.
    pub fn decode(&self, indices: &[usize]) -> Option<String> {
        indices.iter().map(|&i| self.char(i)).collect()
    }
}

/// Reads a UTF-8 text file (gzipped or not) and its character vocabulary.
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) for an unreadable or empty file or
/// invalid UTF-8.
pub fn read_text(path: &Path) -> Result<(String, CharVocab)> {
    let bytes = read_maybe_gzip(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| data_error(path, format!("not valid UTF-8 text: {e}")))?;
    if text.is_empty() {
        return Err(data_error(path, "empty text file"));
    }
    let vocab = CharVocab::from_text(&text);
    Ok((text, vocab))
}
