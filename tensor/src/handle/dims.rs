//! [`Dims`]: a short list of sizes or strides, kept inline.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};

/// How many entries a [`Dims`] holds without a heap allocation.
const INLINE: usize = 4;

/// A list of dimension sizes (or strides) that stores up to four entries inline and spills
/// to the heap beyond that.
///
/// Every tensor carries two of these (its shape and strides), and the small tensors of a
/// training loop are made and dropped by the million: keeping them inline makes cloning a
/// [`Tensor`](crate::Tensor) or building a view free of allocations. It dereferences to
/// `[usize]`, so it reads like a slice.
///
/// ```
/// use strata_tensor::Dims;
/// let mut d = Dims::from_slice(&[2, 3]);
/// d.push(4);
/// assert_eq!(&d[..], &[2, 3, 4]);
/// assert_eq!(d, [2, 3, 4]);
/// assert_eq!(d.iter().product::<usize>(), 24);
/// ```
#[derive(Clone)]
pub struct Dims(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: usize, buf: [usize; INLINE] },
    Heap(Vec<usize>),
}

impl Dims {
    /// An empty list (the shape of a 0-d tensor).
    #[inline]
    pub const fn new() -> Self {
        Dims(Repr::Inline {
            len: 0,
            buf: [0; INLINE],
        })
    }

    /// `n` zeros.
    #[inline]
    pub fn zeros(n: usize) -> Self {
        if n <= INLINE {
            Dims(Repr::Inline {
                len: n,
                buf: [0; INLINE],
            })
        } else {
            Dims(Repr::Heap(vec![0; n]))
        }
    }

    /// A copy of `values`.
    #[inline]
    pub fn from_slice(values: &[usize]) -> Self {
        let mut d = Self::zeros(values.len());
        d.copy_from_slice(values);
        d
    }

    /// Appends `value`, moving to the heap past four entries.
    pub fn push(&mut self, value: usize) {
        match &mut self.0 {
            Repr::Inline { len, buf } if *len < INLINE => {
                buf[*len] = value;
                *len += 1;
            }
            Repr::Inline { len, buf } => {
                let mut v = Vec::with_capacity(2 * INLINE);
                v.extend_from_slice(&buf[..*len]);
                v.push(value);
                self.0 = Repr::Heap(v);
            }
            Repr::Heap(v) => v.push(value),
        }
    }

    /// Inserts `value` at `index`, shifting later entries right.
    ///
    /// # Panics
    /// When `index > len`.
    pub fn insert(&mut self, index: usize, value: usize) {
        assert!(
            index <= self.len(),
            "insert index {index} past length {}",
            self.len()
        );
        self.push(value);
        self[index..].rotate_right(1);
    }

    /// Removes and returns the entry at `index`, shifting later entries left.
    ///
    /// # Panics
    /// When `index >= len`.
    pub fn remove(&mut self, index: usize) -> usize {
        let value = self[index];
        self[index..].rotate_left(1);
        match &mut self.0 {
            Repr::Inline { len, .. } => *len -= 1,
            Repr::Heap(v) => {
                v.pop();
            }
        }
        value
    }

    /// The entries as a slice.
    #[inline]
    pub fn as_slice(&self) -> &[usize] {
        match &self.0 {
            Repr::Inline { len, buf } => &buf[..*len],
            Repr::Heap(v) => v,
        }
    }

    /// The entries as a mutable slice.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [usize] {
        match &mut self.0 {
            Repr::Inline { len, buf } => &mut buf[..*len],
            Repr::Heap(v) => v,
        }
    }
}

impl Default for Dims {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for Dims {
    type Target = [usize];
    #[inline]
    fn deref(&self) -> &[usize] {
        self.as_slice()
    }
}

impl DerefMut for Dims {
    #[inline]
    fn deref_mut(&mut self) -> &mut [usize] {
        self.as_mut_slice()
    }
}

impl<'a> IntoIterator for &'a Dims {
    type Item = &'a usize;
    type IntoIter = std::slice::Iter<'a, usize>;
    #[inline]
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl From<&[usize]> for Dims {
    #[inline]
    fn from(values: &[usize]) -> Self {
        Self::from_slice(values)
    }
}

impl<const N: usize> From<[usize; N]> for Dims {
    #[inline]
    fn from(values: [usize; N]) -> Self {
        Self::from_slice(&values)
    }
}

impl From<Vec<usize>> for Dims {
    #[inline]
    fn from(values: Vec<usize>) -> Self {
        if values.len() <= INLINE {
            Self::from_slice(&values)
        } else {
            Dims(Repr::Heap(values))
        }
    }
}

impl From<Dims> for Vec<usize> {
    fn from(d: Dims) -> Self {
        match d.0 {
            Repr::Inline { len, buf } => buf[..len].to_vec(),
            Repr::Heap(v) => v,
        }
    }
}

impl FromIterator<usize> for Dims {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut d = Dims::new();
        for v in iter {
            d.push(v);
        }
        d
    }
}

impl PartialEq for Dims {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Dims {}

impl PartialEq<[usize]> for Dims {
    fn eq(&self, other: &[usize]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<&[usize]> for Dims {
    fn eq(&self, other: &&[usize]) -> bool {
        self.as_slice() == *other
    }
}

impl<const N: usize> PartialEq<[usize; N]> for Dims {
    fn eq(&self, other: &[usize; N]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<Vec<usize>> for Dims {
    fn eq(&self, other: &Vec<usize>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Hash for Dims {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl fmt::Debug for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_slice().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_spilled_lists_read_alike() {
        for n in 0..10 {
            let values: Vec<usize> = (1..=n).collect();
            let pushed: Dims = values.iter().copied().collect();
            let converted = Dims::from(values.clone());
            assert_eq!(pushed, values);
            assert_eq!(converted, pushed);
            assert_eq!(Vec::from(pushed), values);
            let mut z = Dims::zeros(n);
            z.copy_from_slice(&values);
            assert_eq!(&z[..], &values[..]);
            for i in 0..=n {
                let mut ins = z.clone();
                ins.insert(i, 99);
                let mut expected = values.clone();
                expected.insert(i, 99);
                assert_eq!(ins, expected);
                assert_eq!(ins.remove(i), 99);
                assert_eq!(ins, values);
            }
        }
    }

    #[test]
    fn a_list_prints_and_compares_as_its_slice() {
        let d = Dims::from([2, 0, 7]);
        assert_eq!(format!("{d:?}"), "[2, 0, 7]");
        assert_eq!(d, vec![2, 0, 7]);
        assert_ne!(d, Dims::from([2, 0]));
        assert!(Dims::new().is_empty());
    }
}
