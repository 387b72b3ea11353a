//! Readers for real file formats: IDX (MNIST), CIFAR-10 binary batches, CSV, plain text.
//!
//! Every reader checks what it reads: a truncated, corrupt or mis-shaped file is an error
//! naming the file and the problem, never a panic and never silently fewer samples. And
//! every read is bounded:
//!
//! - only regular files are read ([`strata_tensor::io::fs::open_regular`]): a FIFO would
//!   block forever, `/dev/zero` never ends;
//! - a gzipped file is inflated as a stream, never whole before it is checked: IDX reads
//!   its header first and then exactly the bytes the header promises (one more is an
//!   error), and no stream may inflate beyond [`MAX_INFLATION`] times its compressed size
//!   (or [`MIN_INFLATION_LIMIT`] bytes, whichever is larger) — a gzip bomb of 6 MB stops
//!   at 600 MB with an error naming the file instead of filling memory.

use std::io::{self, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use strata_tensor::io::fs;

use crate::Result;
use crate::error::data_error;

/// How many times its compressed size a gzipped input may inflate to. Real data sets
/// inflate far less (MNIST's images about 5×, text about 3×); a gzip bomb inflates about
/// 1000×.
pub const MAX_INFLATION: u64 = 100;

/// The inflated size every gzipped input may reach whatever its compressed size.
pub const MIN_INFLATION_LIMIT: u64 = 64 << 20;

/// The gzip magic number.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A regular file opened for a bounded read, un-gzipped on the fly when it starts with the
/// gzip magic (every member of a multi-member file, as `gzip -d` does).
pub struct BoundedInput {
    reader: Box<dyn Read>,
    /// Bytes the stream may still yield before it is an error.
    limit: u64,
    gzipped: bool,
}

impl BoundedInput {
    /// Opens `path`: a regular file only, its size the bound of a plain read and
    /// [`MAX_INFLATION`] times it (at least [`MIN_INFLATION_LIMIT`]) that of a gzipped one.
    ///
    /// # Errors
    /// [`ModelsError::Data`](crate::ModelsError::Data) for a missing file, a FIFO, a
    /// device, a directory, or an unreadable file.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, len) = fs::open_regular(path).map_err(|e| data_error(path, e.to_string()))?;
        let mut file = BufReader::new(file);
        let mut magic = [0u8; 2];
        let got = read_full(&mut file, &mut magic).map_err(|e| data_error(path, e.to_string()))?;
        let head = io::Cursor::new(magic[..got].to_vec());
        let rest = file.take(len.saturating_sub(got as u64));
        if got == 2 && magic == GZIP_MAGIC {
            let limit = len.saturating_mul(MAX_INFLATION).max(MIN_INFLATION_LIMIT);
            Ok(BoundedInput {
                reader: Box::new(MultiGzDecoder::new(head.chain(rest))),
                limit,
                gzipped: true,
            })
        } else {
            Ok(BoundedInput {
                reader: Box::new(head.chain(rest)),
                limit: len,
                gzipped: false,
            })
        }
    }

    /// Whether the file is gzipped.
    pub fn is_gzipped(&self) -> bool {
        self.gzipped
    }

    /// Exactly `n` bytes, or an error for fewer (`what` names them in the message).
    ///
    /// # Errors
    /// A truncated or corrupt file, or one that would inflate beyond its bound.
    pub fn exact(&mut self, path: &Path, n: usize, what: &str) -> Result<Vec<u8>> {
        self.exact_or(path, n, |got| {
            data_error(
                path,
                format!("truncated: {what} needs {n} bytes, the file has {got}"),
            )
        })
    }

    /// Exactly `n` bytes, or `short(bytes found)` for fewer.
    ///
    /// # Errors
    /// `short`'s error for a file that ends early; a corrupt file, or one that would
    /// inflate beyond its bound.
    pub fn exact_or(
        &mut self,
        path: &Path,
        n: usize,
        short: impl FnOnce(usize) -> crate::ModelsError,
    ) -> Result<Vec<u8>> {
        if self.gzipped && n as u64 > self.limit {
            return Err(data_error(
                path,
                format!(
                    "{n} bytes promised, more than a gzipped input may inflate to ({MAX_INFLATION} \
                     times its compressed size); decompress it first if it is genuine"
                ),
            ));
        }
        // A plain file holds at most `limit` bytes: never reserve more than that.
        let want = (n as u64).min(self.limit) as usize;
        let mut out = Vec::new();
        out.try_reserve_exact(want)
            .map_err(|_| data_error(path, format!("{want} bytes cannot be held in memory")))?;
        let got = (&mut self.reader)
            .take(n as u64)
            .read_to_end(&mut out)
            .map_err(|e| self.corrupt(path, e))?;
        self.limit -= got as u64;
        if got < n {
            return Err(short(got));
        }
        Ok(out)
    }

    /// Everything that is left (at most the bound).
    ///
    /// # Errors
    /// A corrupt file, or one that inflates beyond its bound.
    pub fn rest(&mut self, path: &Path) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        // One byte past the bound tells a file that reaches it from one that exceeds it.
        (&mut self.reader)
            .take(self.limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| self.corrupt(path, e))?;
        if out.len() as u64 > self.limit {
            return Err(self.bomb(path));
        }
        self.limit -= out.len() as u64;
        Ok(out)
    }

    /// Whether the stream is at its end (reads one byte to find out).
    ///
    /// # Errors
    /// A corrupt file.
    pub fn at_end(&mut self, path: &Path) -> Result<bool> {
        let mut b = [0u8; 1];
        let got = read_full(&mut self.reader, &mut b).map_err(|e| self.corrupt(path, e))?;
        Ok(got == 0)
    }

    fn corrupt(&self, path: &Path, e: io::Error) -> crate::ModelsError {
        if self.gzipped {
            data_error(path, format!("corrupt or truncated gzip data: {e}"))
        } else {
            data_error(path, e.to_string())
        }
    }

    fn bomb(&self, path: &Path) -> crate::ModelsError {
        data_error(
            path,
            format!(
                "it inflates beyond {MAX_INFLATION} times its compressed size (a gzip bomb?); \
                 decompress it first if it is genuine"
            ),
        )
    }
}

/// Reads until `buf` is full or the stream ends; the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a whole file, transparently un-gzipping it when it starts with the gzip magic
/// (every member of a multi-member gzip file, as `gzip -d` does). Bounded: see the module
/// docs.
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) when the file is not a regular file or
/// cannot be read, or its gzip stream is corrupt, truncated or inflates beyond its bound.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    BoundedInput::open(path)?.rest(path)
}

/// Text as UTF-8, without a leading byte-order mark (which editors on Windows write and
/// which would otherwise become part of the first field or character).
pub(crate) fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String> {
    let mut text = String::from_utf8(bytes).map_err(|e| {
        data_error(
            path,
            format!(
                "not valid UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(text)
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
    let mut input = BoundedInput::open(path)?;
    // The header first: magic, type, rank, then the dimensions; the data after them is
    // read only up to what the dimensions promise.
    let magic = input.exact_or(path, 4, |got| {
        data_error(
            path,
            format!("not an IDX file (bad magic number: {got} bytes, fewer than 4)"),
        )
    })?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(data_error(path, "not an IDX file (bad magic number)"));
    }
    if magic[2] != 0x08 {
        return Err(data_error(
            path,
            format!(
                "IDX data type 0x{:02x} is not unsigned byte (0x08)",
                magic[2]
            ),
        ));
    }
    let ndim = magic[3] as usize;
    if ndim == 0 {
        return Err(data_error(
            path,
            "an IDX file of 0 dimensions holds no array",
        ));
    }
    let header = input.exact_or(path, 4 * ndim, |got| {
        data_error(
            path,
            format!(
                "truncated IDX header: {} bytes for {ndim} dimensions",
                4 + got
            ),
        )
    })?;
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let Some(expected) = strata_tensor::checked_numel(&dims) else {
        return Err(data_error(
            path,
            format!("corrupt IDX header: dimensions {dims:?} are too large"),
        ));
    };
    let data = input.exact_or(path, expected, |got| {
        data_error(
            path,
            format!(
                "truncated: the header promises {dims:?} = {expected} bytes of data, the file \
                 has {got}"
            ),
        )
    })?;
    if !input.at_end(path)? {
        let more = 1 + input.rest(path)?.len();
        return Err(data_error(
            path,
            format!(
                "too long: the header promises {dims:?} = {expected} bytes of data, the file \
                 has {}",
                expected + more
            ),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// One CIFAR-10 binary batch: labels and `[n, 3, 32, 32]` pixel bytes (R, G, B planes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CifarBatch {
    /// One label (0–9) per image.
    pub labels: Vec<u8>,
    /// `3 · 32 · 32` bytes per image.
    pub pixels: Vec<u8>,
}

/// Reads a CIFAR-10 binary batch (`data_batch_1.bin`, …, gzipped or not): records of one
/// label byte and 3072 pixel bytes.
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
    /// The line of each row in the file, from 1 (empty lines are skipped), for errors
    /// about a value that name its place.
    pub lines: Vec<usize>,
}

/// Reads a delimited numeric file (gzipped or not): `header` says whether the first line
/// is a header; `delimiter` `None` splits on runs of whitespace. Empty lines are skipped.
///
/// A leading byte-order mark is skipped.
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) for invalid UTF-8, a field that is not
/// a finite number (naming line and column: NaN and infinities are refused here, before
/// training, rather than reported later as a diverged training), a row of another length,
/// rows without fields, or no rows.
pub fn read_csv(path: &Path, header: bool, delimiter: Option<char>) -> Result<Table> {
    let text = utf8_text(path, read_maybe_gzip(path)?)?;
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
    let mut row_lines = Vec::new();
    for (lineno, line) in lines {
        let fields = split(line);
        let row = fields
            .iter()
            .enumerate()
            .map(|(col, f)| {
                let at = format!("line {}, column {}", lineno + 1, col + 1);
                match f.parse::<f64>() {
                    Ok(v) if v.is_finite() => Ok(v),
                    Ok(v) => Err(data_error(
                        path,
                        format!("{at}: {v} is not a finite number"),
                    )),
                    Err(_) => Err(data_error(path, format!("{at}: {f:?} is not a number"))),
                }
            })
            .collect::<Result<Vec<f64>>>()?;
        if row.is_empty() {
            return Err(data_error(
                path,
                format!("line {} has no fields", lineno + 1),
            ));
        }
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
        row_lines.push(lineno + 1);
    }
    if rows.is_empty() {
        return Err(data_error(path, "no data rows"));
    }
    Ok(Table {
        header,
        rows,
        lines: row_lines,
    })
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

/// Reads a UTF-8 text file (gzipped or not) and its character vocabulary. A leading
/// byte-order mark is skipped.
///
/// # Errors
/// [`ModelsError::Data`](crate::ModelsError::Data) for an unreadable or empty file or
/// invalid UTF-8.
pub fn read_text(path: &Path) -> Result<(String, CharVocab)> {
    let text = utf8_text(path, read_maybe_gzip(path)?)?;
    if text.is_empty() {
        return Err(data_error(path, "empty text file"));
    }
    let vocab = CharVocab::from_text(&text);
    Ok((text, vocab))
}
