//! [`SharedRows`]: an append-only table of fixed-width rows that successive generations of a
//! live index share. A generation is made from the one before by a copy plus the new commits;
//! copying a `Vec` there would cost O(every insert so far) per commit. Here rows live in
//! chunks of [`ROWS_PER_CHUNK`] behind `Arc`s: a copy clones the chunk pointers (one per
//! 1,024 rows), and appending or changing rows copies only the chunks it touches that an
//! older generation still holds — at most one chunk per commit for appends.

use std::sync::Arc;

/// Rows per chunk.
pub(crate) const ROWS_PER_CHUNK: usize = 1024;

/// Fixed-width rows of `T`, shared copy-on-write between clones (module doc).
#[derive(Debug, Clone)]
pub(crate) struct SharedRows<T> {
    chunks: Vec<Arc<Vec<T>>>,
    width: usize,
    rows: usize,
}

impl<T: Copy> SharedRows<T> {
    /// An empty table of rows of `width` elements (at least 1).
    pub(crate) fn new(width: usize) -> Self {
        Self {
            chunks: Vec::new(),
            width: width.max(1),
            rows: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Row `i` (panics when `i >= len`, like a slice).
    #[inline]
    pub(crate) fn row(&self, i: usize) -> &[T] {
        assert!(i < self.rows, "row {i} of {}", self.rows);
        let at = (i % ROWS_PER_CHUNK) * self.width;
        &self.chunks[i / ROWS_PER_CHUNK][at..at + self.width]
    }

    /// Appends a row of exactly `width` elements.
    pub(crate) fn push_row(&mut self, row: &[T]) {
        assert_eq!(row.len(), self.width, "row width");
        if self.rows.is_multiple_of(ROWS_PER_CHUNK) {
            self.chunks
                .push(Arc::new(Vec::with_capacity(ROWS_PER_CHUNK * self.width)));
        }
        let last = self.chunks.last_mut().expect("a chunk was pushed");
        Arc::make_mut(last).extend_from_slice(row);
        self.rows += 1;
    }

    /// Row `i`, to change in place (copies its chunk first when a clone still shares it).
    pub(crate) fn row_mut(&mut self, i: usize) -> &mut [T] {
        assert!(i < self.rows, "row {i} of {}", self.rows);
        let at = (i % ROWS_PER_CHUNK) * self.width;
        let width = self.width;
        &mut Arc::make_mut(&mut self.chunks[i / ROWS_PER_CHUNK])[at..at + width]
    }

    /// Every row's first element, in order (for width-1 tables: every element).
    pub(crate) fn firsts(&self) -> impl Iterator<Item = T> + '_ {
        (0..self.rows).map(|i| self.row(i)[0])
    }
}

impl<T: Copy> Default for SharedRows<T> {
    /// An empty width-1 table.
    fn default() -> Self {
        Self::new(1)
    }
}

impl<T: Copy> SharedRows<T> {
    /// Element `i` of a width-1 table.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> T {
        self.row(i)[0]
    }

    /// Appends one element to a width-1 table.
    pub(crate) fn push(&mut self, v: T) {
        self.push_row(std::slice::from_ref(&v));
    }
}

/// `table[i]`: element `i` of a width-1 table.
impl<T: Copy> std::ops::Index<usize> for SharedRows<T> {
    type Output = T;

    #[inline]
    fn index(&self, i: usize) -> &T {
        debug_assert_eq!(self.width, 1, "indexing a table of wider rows");
        &self.row(i)[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_across_chunks_and_clones_do_not_see_later_writes() {
        let mut a = SharedRows::<u32>::new(3);
        for i in 0..(2 * ROWS_PER_CHUNK + 5) as u32 {
            a.push_row(&[i, i + 1, i + 2]);
        }
        let frozen = a.clone();
        for i in 0..10u32 {
            a.push_row(&[7, 7, i]);
        }
        a.row_mut(3)[1] = 99;
        assert_eq!(frozen.len(), 2 * ROWS_PER_CHUNK + 5);
        assert_eq!(a.len(), 2 * ROWS_PER_CHUNK + 15);
        for i in 0..frozen.len() {
            let v = i as u32;
            assert_eq!(frozen.row(i), &[v, v + 1, v + 2]);
        }
        assert_eq!(a.row(3), &[3, 99, 5]);
        assert_eq!(a.row(ROWS_PER_CHUNK + 1), &[1025, 1026, 1027]);
        assert_eq!(a.row(a.len() - 1), &[7, 7, 9]);
        // The chunks no write touched are still shared.
        assert!(Arc::ptr_eq(&a.chunks[1], &frozen.chunks[1]));
        assert!(!Arc::ptr_eq(&a.chunks[0], &frozen.chunks[0]));
    }

    #[test]
    fn width_one_tables_push_and_get() {
        let mut a = SharedRows::<u64>::new(1);
        (0..3000u64).for_each(|v| a.push(v * 2));
        assert_eq!(a.get(2999), 5998);
        assert_eq!(a.firsts().sum::<u64>(), 2999 * 3000);
        assert!(!a.is_empty());
    }

    #[test]
    #[should_panic(expected = "row 3 of 3")]
    fn reading_past_the_end_panics_like_a_slice() {
        let mut a = SharedRows::<u8>::new(2);
        (0..3).for_each(|_| a.push_row(&[1, 2]));
        let _ = a.row(3);
    }
}
