//! Which dimensions of a concatenated row belong to which block.

use std::ops::Range;

use super::BlockError;

/// Longest block name, bytes (names are stored zero padded in `blocks.m3`).
pub const BLOCK_NAME_BYTES: usize = 32;

/// One block: its name and its dimensions `first_dim .. first_dim + dim` of the row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The block's name.
    pub name: String,
    /// Its dimension.
    pub dim: usize,
    /// Its first dimension in the concatenated row.
    pub first_dim: usize,
}

impl Block {
    /// Its dimensions in the concatenated row.
    pub fn range(&self) -> Range<usize> {
        self.first_dim..self.first_dim + self.dim
    }
}

/// The blocks of a row, in order, contiguous from dimension 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLayout {
    blocks: Vec<Block>,
    dim: usize,
}

/// Checks a block name: 1–32 bytes of ASCII letters, digits, `_`, `-`, `.`.
pub fn check_block_name(name: &str) -> Result<(), BlockError> {
    let ok = !name.is_empty()
        && name.len() <= BLOCK_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(BlockError::BadName { name: name.into() })
    }
}

/// Splits `NAME=VALUE` (a `--block`, `--query-block` or `--weight` argument).
pub fn split_assignment<'a>(
    what: &'static str,
    spec: &'a str,
) -> Result<(&'a str, &'a str), BlockError> {
    let bad = || BlockError::BadSpec {
        what,
        spec: spec.into(),
    };
    let (name, value) = spec.split_once('=').ok_or_else(bad)?;
    let (name, value) = (name.trim(), value.trim());
    if value.is_empty() {
        return Err(bad());
    }
    check_block_name(name)?;
    Ok((name, value))
}

impl BlockLayout {
    /// Blocks from `(name, dim)` pairs in row order. Names must be valid and distinct, dims ≥ 1.
    pub fn new<S: AsRef<str>>(blocks: &[(S, usize)]) -> Result<Self, BlockError> {
        if blocks.is_empty() {
            return Err(BlockError::NoBlocks(
                "a multi-vector layout needs at least one block",
            ));
        }
        let mut out: Vec<Block> = Vec::with_capacity(blocks.len());
        let mut first = 0usize;
        for (name, dim) in blocks {
            let name = name.as_ref();
            check_block_name(name)?;
            if out.iter().any(|b| b.name == name) {
                return Err(BlockError::DuplicateBlock { name: name.into() });
            }
            if *dim == 0 {
                return Err(BlockError::Data(crate::data::DataError::ZeroDim));
            }
            out.push(Block {
                name: name.into(),
                dim: *dim,
                first_dim: first,
            });
            first += dim;
        }
        Ok(Self {
            blocks: out,
            dim: first,
        })
    }

    /// The blocks, in order.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }
    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }
    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
    /// Total dimension (sum of the blocks').
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// The dimensions of block `b` in the concatenated row.
    pub fn range(&self, b: usize) -> Range<usize> {
        self.blocks[b].range()
    }

    /// Index of the block called `name`.
    pub fn position(&self, name: &str) -> Result<usize, BlockError> {
        self.blocks
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| BlockError::UnknownBlock {
                name: name.into(),
                known: self
                    .blocks
                    .iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Per-block weights from `(name, weight)` pairs: every named block must exist, appear
    /// once and have a finite weight ≥ 0; unnamed blocks get `default(b)`.
    pub fn weights(
        &self,
        given: &[(String, f32)],
        default: impl Fn(usize) -> f32,
    ) -> Result<Vec<f32>, BlockError> {
        let mut out: Vec<Option<f32>> = vec![None; self.len()];
        for (name, w) in given {
            let b = self.position(name)?;
            if out[b].is_some() {
                return Err(BlockError::DuplicateBlock { name: name.clone() });
            }
            check_weight(name, *w, false)?;
            out[b] = Some(*w);
        }
        Ok(out
            .into_iter()
            .enumerate()
            .map(|(b, w)| w.unwrap_or_else(|| default(b)))
            .collect())
    }
}

/// A weight must be finite and ≥ 0 (a query weight; 0 leaves the block out) or > 0 (a build
/// weight, which divides query weights).
pub(crate) fn check_weight(block: &str, w: f32, positive: bool) -> Result<(), BlockError> {
    let bad = |rule| {
        Err(BlockError::BadWeight {
            block: block.into(),
            value: w,
            rule,
        })
    };
    if !w.is_finite() {
        return bad("must be a finite number");
    }
    if positive && w <= 0.0 {
        return bad("a build weight must be > 0");
    }
    if w < 0.0 {
        return bad("must be ≥ 0");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_offsets_names_and_weights() {
        let l = BlockLayout::new(&[("img", 3), ("txt", 2)]).unwrap();
        assert_eq!(l.dim(), 5);
        assert_eq!(l.range(1), 3..5);
        assert_eq!(l.position("txt").unwrap(), 1);
        let e = l.position("audio").unwrap_err();
        assert!(e.to_string().contains("img, txt"), "{e}");
        assert!(matches!(
            BlockLayout::new(&[("a", 1), ("a", 2)]),
            Err(BlockError::DuplicateBlock { .. })
        ));
        assert!(matches!(
            BlockLayout::new(&[("a b", 1)]),
            Err(BlockError::BadName { .. })
        ));
        let w = l.weights(&[("txt".into(), 2.0)], |_| 1.0).unwrap();
        assert_eq!(w, vec![1.0, 2.0]);
        for bad in [-1.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                l.weights(&[("img".into(), bad)], |_| 1.0),
                Err(BlockError::BadWeight { .. })
            ));
        }
        assert!(check_weight("a", 0.0, true).is_err());
        assert_eq!(
            split_assignment("--block", "a=x.fbin").unwrap(),
            ("a", "x.fbin")
        );
        assert!(matches!(
            split_assignment("--block", "a"),
            Err(BlockError::BadSpec { .. })
        ));
    }
}
