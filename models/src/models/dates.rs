//! The data of `seq2seq`: dates written the ways people write them ("Saturday, 5 December
//! 2026", "Dec 5 2026", "05.12.2026", …) paired with their ISO 8601 form ("2026-12-05"),
//! generated from a seed, and the character vocabulary both sides share.

use std::collections::HashSet;

use strata_tensor::IndexTensor;
use strata_tensor::rand::{Rng, RngExt};

use crate::{ModelsError, Result};

/// Padding (sources are padded to the longest in a batch).
pub const PAD: i64 = 0;
/// The first input of the decoder.
pub const BOS: i64 = 1;
/// The end of an output.
pub const EOS: i64 = 2;
/// The characters of the vocabulary after the three special tokens.
const ALPHABET: &str = " ,-./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Tokens in the vocabulary: the three special ones and the alphabet.
pub const VOCAB: usize = 3 + ALPHABET.len();
/// The longest source (in characters) the model reads.
pub const MAX_SOURCE: usize = 32;
/// Characters of an ISO date.
pub const ISO_LEN: usize = 10;
/// Tokens the decoder produces: the ISO date and [`EOS`].
pub const MAX_TARGET: usize = ISO_LEN + 1;
/// The most pairs a training (or test set) generates.
pub const MAX_PAIRS: usize = 1_000_000;
/// The first and last year of the generated dates.
const YEARS: (i64, i64) = (1950, 2049);
/// The human formats [`format_date`] writes.
pub const FORMATS: usize = 10;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// The token of character `c`, if the vocabulary has it.
pub fn token(c: char) -> Option<i64> {
    ALPHABET.find(c).map(|i| i as i64 + 3)
}

/// The characters of `tokens` up to the first [`EOS`] (special tokens are skipped).
pub fn decode(tokens: &[i64]) -> String {
    tokens
        .iter()
        .take_while(|&&t| t != EOS)
        .filter_map(|&t| {
            usize::try_from(t - 3)
                .ok()
                .and_then(|i| ALPHABET.as_bytes().get(i))
                .map(|&b| b as char)
        })
        .collect()
}

/// The tokens of `text`, a source of at most [`MAX_SOURCE`] characters.
///
/// # Errors
/// [`ModelsError::Config`] naming a character outside the vocabulary, or saying that the
/// text is empty or too long.
pub fn encode_source(text: &str) -> Result<Vec<i64>> {
    let n = text.chars().count();
    if n == 0 || n > MAX_SOURCE {
        return Err(ModelsError::Config(format!(
            "a date to translate has 1 to {MAX_SOURCE} characters, {text:?} has {n}"
        )));
    }
    text.chars()
        .map(|c| {
            token(c).ok_or_else(|| {
                ModelsError::Config(format!(
                    "{text:?} has the character {c:?}, which seq2seq's vocabulary (letters, \
                     digits, space and , - . /) does not"
                ))
            })
        })
        .collect()
}

/// The civil date (year, month 1–12, day 1–31) `days` after 1970-01-01 (proleptic
/// Gregorian calendar).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days from 1970-01-01 to the civil date (`month` 1–12).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `days` after 1970-01-01 written in human format `format` (0 to
/// [`FORMATS`] − 1), and in ISO 8601.
///
/// ```
/// use strata_models::models::dates::{days_from_civil, format_date};
///
/// let day = days_from_civil(2026, 12, 5);
/// assert_eq!(format_date(day, 4), ("Saturday, 5 December 2026".to_string(), "2026-12-05".to_string()));
/// assert_eq!(format_date(day, 6).0, "05.12.2026");
/// ```
pub fn format_date(days: i64, format: usize) -> (String, String) {
    let (y, m, d) = civil_from_days(days);
    let month = MONTHS[m as usize - 1];
    let short = &month[..3];
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS[(days + 3).rem_euclid(7) as usize];
    let human = match format % FORMATS {
        0 => format!("{d} {month} {y}"),
        1 => format!("{month} {d}, {y}"),
        2 => format!("{short} {d} {y}"),
        3 => format!("{d:02} {} {y}", short.to_lowercase()),
        4 => format!("{weekday}, {d} {month} {y}"),
        5 => format!("{weekday}, {month} {d}, {y}"),
        6 => format!("{d:02}.{m:02}.{y}"),
        7 => format!("{y}/{m:02}/{d:02}"),
        8 => format!("{} {d} {y}", month.to_uppercase()),
        _ => format!("{d}-{short}-{y}"),
    };
    (human, format!("{y:04}-{m:02}-{d:02}"))
}

/// Dates and their translations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatePairs {
    /// The human forms.
    pub sources: Vec<String>,
    /// The ISO forms.
    pub targets: Vec<String>,
}

impl DatePairs {
    /// `n` pairs of dates drawn uniformly from 1950–2049 in formats drawn uniformly, none
    /// of whose human forms is in `exclude` (nor repeated), drawn from `rng`.
    ///
    /// # Errors
    /// [`ModelsError::Config`] for more than [`MAX_PAIRS`] pairs.
    pub fn generate<R: Rng + ?Sized>(
        n: usize,
        rng: &mut R,
        exclude: &HashSet<String>,
    ) -> Result<DatePairs> {
        if n > MAX_PAIRS {
            return Err(ModelsError::Config(format!(
                "seq2seq generates at most {MAX_PAIRS} pairs, {n} were asked for"
            )));
        }
        let (first, last) = (
            days_from_civil(YEARS.0, 1, 1),
            days_from_civil(YEARS.1, 12, 31),
        );
        let mut seen = HashSet::with_capacity(n);
        let mut pairs = DatePairs::default();
        while pairs.sources.len() < n {
            let day = rng.random_range(first..=last);
            let (human, iso) = format_date(day, rng.random_range(0..FORMATS));
            if exclude.contains(&human) || !seen.insert(human.clone()) {
                continue;
            }
            pairs.sources.push(human);
            pairs.targets.push(iso);
        }
        Ok(pairs)
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

/// Date pairs as tokens: sources padded with [`PAD`] to [`MAX_SOURCE`], the decoder's
/// inputs ([`BOS`] and the ISO date) and its targets (the ISO date and [`EOS`]).
#[derive(Clone, Debug)]
pub struct EncodedPairs {
    /// `[N, MAX_SOURCE]`.
    pub src: Vec<i64>,
    /// `[N, MAX_TARGET]`.
    pub tgt_in: Vec<i64>,
    /// `[N, MAX_TARGET]`.
    pub tgt_out: Vec<i64>,
    /// Each source's length.
    pub src_len: Vec<usize>,
}

impl EncodedPairs {
    /// The tokens of `pairs`.
    ///
    /// # Errors
    /// As [`encode_source`]; a target that is not a 10-character ISO date.
    pub fn new(pairs: &DatePairs) -> Result<Self> {
        let n = pairs.len();
        let mut e = EncodedPairs {
            src: Vec::with_capacity(n * MAX_SOURCE),
            tgt_in: Vec::with_capacity(n * MAX_TARGET),
            tgt_out: Vec::with_capacity(n * MAX_TARGET),
            src_len: Vec::with_capacity(n),
        };
        for (s, t) in pairs.sources.iter().zip(&pairs.targets) {
            let src = encode_source(s)?;
            e.src_len.push(src.len());
            e.src.extend(&src);
            e.src
                .extend(std::iter::repeat_n(PAD, MAX_SOURCE - src.len()));
            let tgt = encode_source(t)?;
            if tgt.len() != ISO_LEN {
                return Err(ModelsError::Config(format!(
                    "{t:?} is not an ISO date of {ISO_LEN} characters"
                )));
            }
            e.tgt_in.push(BOS);
            e.tgt_in.extend(&tgt);
            e.tgt_out.extend(&tgt);
            e.tgt_out.push(EOS);
        }
        Ok(e)
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.src_len.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.src_len.is_empty()
    }

    /// The sources of the pairs `rows`, `[rows, L]` cut to the longest of them.
    pub fn sources(&self, rows: &[usize]) -> Result<IndexTensor> {
        let len = rows
            .iter()
            .map(|&r| self.src_len[r])
            .max()
            .unwrap_or(1)
            .max(1);
        let mut v = Vec::with_capacity(rows.len() * len);
        for &r in rows {
            v.extend(&self.src[r * MAX_SOURCE..r * MAX_SOURCE + len]);
        }
        Ok(IndexTensor::from_vec(v, &[rows.len(), len])?)
    }

    /// The decoder's inputs and targets of the pairs `rows`, each `[rows, MAX_TARGET]`.
    pub fn targets(&self, rows: &[usize]) -> Result<(IndexTensor, IndexTensor)> {
        let pick = |all: &[i64]| -> Result<IndexTensor> {
            let mut v = Vec::with_capacity(rows.len() * MAX_TARGET);
            for &r in rows {
                v.extend(&all[r * MAX_TARGET..(r + 1) * MAX_TARGET]);
            }
            Ok(IndexTensor::from_vec(v, &[rows.len(), MAX_TARGET])?)
        };
        Ok((pick(&self.tgt_in)?, pick(&self.tgt_out)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tensor::seeded_rng;

    #[test]
    fn the_calendar_round_trips_and_knows_its_weekdays() {
        for days in [-7305, -1, 0, 59, 365, 11_016, 20_427, 29_219] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(
            civil_from_days(days_from_civil(2000, 2, 29) + 1),
            (2000, 3, 1)
        );
        assert_eq!(
            civil_from_days(days_from_civil(1900, 2, 28) + 1),
            (1900, 3, 1)
        );
        let d = days_from_civil(1969, 7, 20);
        assert_eq!(format_date(d, 5).0, "Sunday, July 20, 1969");
    }

    #[test]
    fn every_format_writes_the_same_date() {
        let d = days_from_civil(2049, 3, 7);
        let all: Vec<String> = (0..FORMATS).map(|f| format_date(d, f).0).collect();
        assert_eq!(
            all,
            [
                "7 March 2049",
                "March 7, 2049",
                "Mar 7 2049",
                "07 mar 2049",
                "Sunday, 7 March 2049",
                "Sunday, March 7, 2049",
                "07.03.2049",
                "2049/03/07",
                "MARCH 7 2049",
                "7-Mar-2049",
            ]
        );
        assert!(all.iter().all(|s| s.chars().count() <= MAX_SOURCE));
        assert!(all.iter().all(|s| encode_source(s).is_ok()));
        assert_eq!(format_date(d, 0).1, "2049-03-07");
    }

    #[test]
    fn generated_sets_are_distinct_and_exclude_what_they_are_told() {
        let train = DatePairs::generate(500, &mut seeded_rng(1), &HashSet::new()).unwrap();
        let seen: HashSet<String> = train.sources.iter().cloned().collect();
        assert_eq!(seen.len(), 500);
        let test = DatePairs::generate(200, &mut seeded_rng(1), &seen).unwrap();
        assert!(test.sources.iter().all(|s| !seen.contains(s)));
        assert!(DatePairs::generate(MAX_PAIRS + 1, &mut seeded_rng(1), &seen).is_err());
    }

    #[test]
    fn tokens_decode_back_to_text() {
        let e = EncodedPairs::new(&DatePairs {
            sources: vec!["Dec 5 2026".into()],
            targets: vec!["2026-12-05".into()],
        })
        .unwrap();
        let (tin, tout) = e.targets(&[0]).unwrap();
        assert_eq!(decode(&tout.to_vec()), "2026-12-05");
        assert_eq!(tin.to_vec()[0], BOS);
        assert_eq!(decode(&tin.to_vec()[1..]), "2026-12-05");
        assert_eq!(e.sources(&[0]).unwrap().shape(), &[1, 10]);
        assert!(encode_source("5 Décembre 2026").is_err());
        assert!(encode_source("").is_err());
        assert!(encode_source(&"1".repeat(MAX_SOURCE + 1)).is_err());
    }
}
