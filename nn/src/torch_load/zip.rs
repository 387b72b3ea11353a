//! The part of the ZIP format `torch.save` writes: stored (uncompressed) entries found
//! through the central directory, ZIP64 sizes and offsets included. Every offset and size
//! read from the file is checked against the file's length before it is used.

use std::collections::BTreeMap;
use std::ops::Range;

/// The entries of an archive: name → byte range of its data in the file.
pub(super) struct Archive {
    entries: BTreeMap<String, Range<usize>>,
}

const EOCD: u32 = 0x0605_4b50;
const ZIP64_EOCD: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn to_usize(v: u64) -> Option<usize> {
    usize::try_from(v).ok()
}

impl Archive {
    /// Reads the central directory of `bytes`.
    pub(super) fn parse(bytes: &[u8]) -> Result<Archive, String> {
        let bad = |what: &str| format!("not a valid zip archive: {what}");
        // The end-of-central-directory record: 22 bytes plus a comment of up to 65535.
        let search_from = bytes.len().saturating_sub(22 + 65_535);
        let eocd = (search_from..=bytes.len().saturating_sub(22))
            .rev()
            .find(|&at| u32_at(bytes, at) == Some(EOCD))
            .ok_or_else(|| bad("no end-of-central-directory record"))?;
        let mut count = u64::from(u16_at(bytes, eocd + 10).ok_or_else(|| bad("truncated"))?);
        let mut cd_size = u64::from(u32_at(bytes, eocd + 12).ok_or_else(|| bad("truncated"))?);
        let mut cd_offset = u64::from(u32_at(bytes, eocd + 16).ok_or_else(|| bad("truncated"))?);
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            // ZIP64: the locator sits just before the record.
            let locator = eocd
                .checked_sub(20)
                .filter(|&at| u32_at(bytes, at) == Some(ZIP64_LOCATOR))
                .ok_or_else(|| bad("a ZIP64 archive without its locator"))?;
            let at = u64_at(bytes, locator + 8)
                .and_then(to_usize)
                .filter(|&at| u32_at(bytes, at) == Some(ZIP64_EOCD))
                .ok_or_else(|| bad("the ZIP64 end record is missing"))?;
            count = u64_at(bytes, at + 32).ok_or_else(|| bad("truncated ZIP64 record"))?;
            cd_size = u64_at(bytes, at + 40).ok_or_else(|| bad("truncated ZIP64 record"))?;
            cd_offset = u64_at(bytes, at + 48).ok_or_else(|| bad("truncated ZIP64 record"))?;
        }
        let start = to_usize(cd_offset).ok_or_else(|| bad("central directory offset"))?;
        let end = to_usize(cd_size)
            .and_then(|s| start.checked_add(s))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad("the central directory lies outside the file"))?;
        // Each entry takes at least 46 bytes of the directory.
        if count > ((end - start) / 46) as u64 {
            return Err(bad("more entries than the central directory can hold"));
        }
        let mut entries = BTreeMap::new();
        let mut at = start;
        for _ in 0..count {
            if u32_at(bytes, at) != Some(CENTRAL) {
                return Err(bad("a central directory entry has a wrong signature"));
            }
            let truncated = || bad("truncated central directory entry");
            let method = u16_at(bytes, at + 10).ok_or_else(truncated)?;
            let mut compressed = u64::from(u32_at(bytes, at + 20).ok_or_else(truncated)?);
            let mut size = u64::from(u32_at(bytes, at + 24).ok_or_else(truncated)?);
            let name_len = usize::from(u16_at(bytes, at + 28).ok_or_else(truncated)?);
            let extra_len = usize::from(u16_at(bytes, at + 30).ok_or_else(truncated)?);
            let comment_len = usize::from(u16_at(bytes, at + 32).ok_or_else(truncated)?);
            let mut local = u64::from(u32_at(bytes, at + 42).ok_or_else(truncated)?);
            let name_at = at + 46;
            let extra_at = name_at + name_len;
            let next = extra_at + extra_len + comment_len;
            if next > end {
                return Err(truncated());
            }
            let name = std::str::from_utf8(&bytes[name_at..extra_at])
                .map_err(|_| bad("an entry name is not UTF-8"))?
                .to_string();
            // ZIP64 extra field (id 1): the fields that overflowed, in order.
            let mut e = extra_at;
            while e + 4 <= extra_at + extra_len {
                let id = u16_at(bytes, e).ok_or_else(truncated)?;
                let len = usize::from(u16_at(bytes, e + 2).ok_or_else(truncated)?);
                let body = e + 4;
                if body + len > extra_at + extra_len {
                    return Err(truncated());
                }
                if id == 1 {
                    let mut f = body;
                    for field in [&mut size, &mut compressed, &mut local] {
                        if *field == 0xFFFF_FFFF && f + 8 <= body + len {
                            *field = u64_at(bytes, f).ok_or_else(truncated)?;
                            f += 8;
                        }
                    }
                }
                e = body + len;
            }
            if method != 0 {
                return Err(format!(
                    "entry {name} is compressed (method {method}); torch.save writes stored entries"
                ));
            }
            if compressed != size {
                return Err(bad(&format!("entry {name} has two different sizes")));
            }
            let local = to_usize(local).ok_or_else(|| bad("local header offset"))?;
            if u32_at(bytes, local) != Some(LOCAL) {
                return Err(bad(&format!("entry {name} has no local header")));
            }
            let local_name = usize::from(u16_at(bytes, local + 26).ok_or_else(truncated)?);
            let local_extra = usize::from(u16_at(bytes, local + 28).ok_or_else(truncated)?);
            let data_end = local
                .checked_add(30 + local_name + local_extra)
                .and_then(|d| Some((d, d.checked_add(to_usize(size)?)?)))
                .filter(|&(_, e)| e <= bytes.len());
            let (data, data_end) = data_end
                .ok_or_else(|| bad(&format!("entry {name} extends past the end of the file")))?;
            if entries.insert(name.clone(), data..data_end).is_some() {
                return Err(bad(&format!("entry {name} appears twice")));
            }
            at = next;
        }
        Ok(Archive { entries })
    }

    /// The byte range of `name`.
    pub(super) fn get(&self, name: &str) -> Option<Range<usize>> {
        self.entries.get(name).cloned()
    }

    /// The names of the entries.
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}
