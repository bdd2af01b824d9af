//! Block-sparse attention masks: for each block of `block_q` query rows, the sorted list of the blocks of
//! `block_k` keys it attends to, in compressed sparse row form (`row_offsets`, `col_indices`, i32 as the
//! kernels read them). A key is visible to a query when its block is listed for the query's block **and**
//! the element-level masks (causal, window) keep it; the soft cap, ALiBi and sinks apply as usual. A row
//! whose block lists nothing (or whose listed keys are all masked) gets 0 and lse -inf (the sink, with
//! one).
//!
//! Block sizes: multiples of [`BLOCK_MULTIPLE`] (64) on both axes, so that every flash key tile lies in one
//! key block and every warp's query rows in one query block: the flash kernels then skip whole tiles
//! without a per-element lookup. One mask serves every batch entry (every sequence of a ragged batch, in
//! its own coordinates) and every head.
//!
//! Builders, deterministic given their seed: [`BlockMask::bigbird`] (window, global and random blocks),
//! [`BlockMask::longformer`] (a sliding window and global token positions, at block granularity),
//! [`BlockMask::from_rows`] (arbitrary lists) and [`BlockMask::from_csr`].

use crate::error::{AttentionError, Result};
use crate::host_memory::vec_filled;

/// Block sizes must be multiples of this (and at least this).
pub const BLOCK_MULTIPLE: usize = 64;

/// A block-sparse mask (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMask {
    block_q: usize,
    block_k: usize,
    seq_q: usize,
    seq_k: usize,
    row_offsets: Vec<i32>,
    col_indices: Vec<i32>,
}

/// BigBird's pattern ([`BlockMask::bigbird`]), in blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigBird {
    /// Blocks on each side of the diagonal block (the diagonal block is always kept): 1 gives BigBird's
    /// three-block window.
    pub window: usize,
    /// The first `global` blocks attend to every block and every block attends to them.
    pub global: usize,
    /// Random blocks per query block, drawn from the blocks not already listed.
    pub random: usize,
    /// Seed of the random blocks.
    pub seed: u64,
}

impl BlockMask {
    /// A mask from one list of key blocks per query block (`rows.len()` must be `ceil(seq_q /
    /// block_q)`); each list is sorted and deduplicated here.
    ///
    /// # Errors
    /// [`AttentionError::InvalidArgument`] for a bad block size, a wrong number of rows or a key block
    /// past `ceil(seq_k / block_k)`; [`AttentionError::SizeOverflow`] when the lists do not fit i32.
    pub fn from_rows(
        block_q: usize,
        block_k: usize,
        seq_q: usize,
        seq_k: usize,
        rows: &[Vec<usize>],
    ) -> Result<BlockMask> {
        let (row_blocks, col_blocks) = check_geometry(block_q, block_k, seq_q, seq_k)?;
        if rows.len() != row_blocks {
            return Err(AttentionError::InvalidArgument(format!(
                "a block mask of {seq_q} query rows in blocks of {block_q} has {row_blocks} rows of key blocks, \
                 not {}",
                rows.len()
            )));
        }
        let nnz: usize = rows.iter().map(Vec::len).sum();
        let mut col_indices = Vec::new();
        col_indices
            .try_reserve_exact(nnz)
            .map_err(|_| too_large("block mask entries", nnz))?;
        let mut row_offsets = vec_filled("block mask row offsets", row_blocks + 1, 0i32)?;
        for (r, row) in rows.iter().enumerate() {
            let mut sorted = row.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if let Some(&bad) = sorted.iter().find(|&&c| c >= col_blocks) {
                return Err(AttentionError::InvalidArgument(format!(
                    "block mask row {r} lists key block {bad}, past the {col_blocks} blocks of {seq_k} keys in \
                     blocks of {block_k}"
                )));
            }
            col_indices.extend(sorted.iter().map(|&c| c as i32));
            row_offsets[r + 1] = i32::try_from(col_indices.len())
                .map_err(|_| too_large("block mask entries", col_indices.len()))?;
        }
        Ok(BlockMask {
            block_q,
            block_k,
            seq_q,
            seq_k,
            row_offsets,
            col_indices,
        })
    }

    /// A mask from CSR arrays: `row_offsets` (`ceil(seq_q / block_q) + 1` non-decreasing entries from 0)
    /// and `col_indices` (each row's key blocks, strictly increasing, below `ceil(seq_k / block_k)`).
    ///
    /// # Errors
    /// [`AttentionError::InvalidMetadata`] naming the first bad entry, or the geometry errors of
    /// [`BlockMask::from_rows`].
    pub fn from_csr(
        block_q: usize,
        block_k: usize,
        seq_q: usize,
        seq_k: usize,
        row_offsets: Vec<i32>,
        col_indices: Vec<i32>,
    ) -> Result<BlockMask> {
        let (row_blocks, col_blocks) = check_geometry(block_q, block_k, seq_q, seq_k)?;
        let bad = |buffer: &'static str, index: usize, value: i32, rule: String| {
            Err(AttentionError::InvalidMetadata {
                buffer,
                index,
                value: i64::from(value),
                rule,
            })
        };
        if row_offsets.len() != row_blocks + 1 {
            return Err(AttentionError::InvalidArgument(format!(
                "block mask row_offsets holds {} entries; {row_blocks} query blocks need {}",
                row_offsets.len(),
                row_blocks + 1
            )));
        }
        if row_offsets[0] != 0 {
            return bad("row_offsets", 0, row_offsets[0], "must be 0".into());
        }
        for r in 0..row_blocks {
            let (begin, end) = (row_offsets[r], row_offsets[r + 1]);
            if end < begin || end as usize > col_indices.len() {
                return bad(
                    "row_offsets",
                    r + 1,
                    end,
                    format!("must lie in [{begin}, {}]", col_indices.len()),
                );
            }
            for i in begin as usize..end as usize {
                let c = col_indices[i];
                if c < 0
                    || c as usize >= col_blocks
                    || (i > begin as usize && c <= col_indices[i - 1])
                {
                    return bad(
                        "col_indices",
                        i,
                        c,
                        format!(
                            "must be a key block in [0, {col_blocks}), increasing within row {r}"
                        ),
                    );
                }
            }
        }
        if row_offsets[row_blocks] as usize != col_indices.len() {
            return Err(AttentionError::InvalidArgument(format!(
                "block mask col_indices holds {} entries but row_offsets ends at {}",
                col_indices.len(),
                row_offsets[row_blocks]
            )));
        }
        Ok(BlockMask {
            block_q,
            block_k,
            seq_q,
            seq_k,
            row_offsets,
            col_indices,
        })
    }

    /// Every key block for every query block (a dense mask, for comparisons).
    ///
    /// # Errors
    /// As [`BlockMask::from_rows`].
    pub fn dense(block_q: usize, block_k: usize, seq_q: usize, seq_k: usize) -> Result<BlockMask> {
        let (row_blocks, col_blocks) = check_geometry(block_q, block_k, seq_q, seq_k)?;
        check_entries(row_blocks, col_blocks)?;
        let rows: Vec<Vec<usize>> = (0..row_blocks).map(|_| (0..col_blocks).collect()).collect();
        BlockMask::from_rows(block_q, block_k, seq_q, seq_k, &rows)
    }

    /// BigBird's pattern on a self-attention sequence of `seq` tokens in square blocks of `block`: each
    /// query block sees the blocks within `window` of its own, the first `global` blocks, and `random`
    /// other blocks drawn with `seed`; the first `global` query blocks see everything. Deterministic
    /// given the seed.
    ///
    /// # Errors
    /// As [`BlockMask::from_rows`].
    pub fn bigbird(seq: usize, block: usize, pattern: BigBird) -> Result<BlockMask> {
        let (blocks, _) = check_geometry(block, block, seq, seq)?;
        let mut random = SplitMix64(pattern.seed);
        let mut rows = Vec::with_capacity(blocks);
        for r in 0..blocks {
            let mut listed = vec![false; blocks];
            if r < pattern.global {
                listed.iter_mut().for_each(|x| *x = true);
            }
            let (lo, hi) = (
                r.saturating_sub(pattern.window),
                (r + pattern.window).min(blocks - 1),
            );
            listed[lo..=hi].iter_mut().for_each(|x| *x = true);
            listed[..pattern.global.min(blocks)]
                .iter_mut()
                .for_each(|x| *x = true);
            let mut free: Vec<usize> = (0..blocks).filter(|&c| !listed[c]).collect();
            for _ in 0..pattern.random.min(free.len()) {
                let pick = (random.next() % free.len() as u64) as usize;
                listed[free.swap_remove(pick)] = true;
            }
            rows.push((0..blocks).filter(|&c| listed[c]).collect());
        }
        BlockMask::from_rows(block, block, seq, seq, &rows)
    }

    /// Longformer's pattern at block granularity on a self-attention sequence of `seq` tokens in square
    /// blocks of `block`: the blocks holding keys within `window` tokens of any of the query block's rows,
    /// and the blocks of the `global` token positions as global rows and columns (a global token makes
    /// its whole block global; positions past the sequence are an error).
    ///
    /// # Errors
    /// As [`BlockMask::from_rows`], and [`AttentionError::InvalidArgument`] for a global position past
    /// the sequence.
    pub fn longformer(
        seq: usize,
        block: usize,
        window: usize,
        global: &[usize],
    ) -> Result<BlockMask> {
        let (blocks, _) = check_geometry(block, block, seq, seq)?;
        if let Some(&bad) = global.iter().find(|&&g| g >= seq) {
            return Err(AttentionError::InvalidArgument(format!(
                "global token {bad} is past the sequence of {seq} tokens"
            )));
        }
        let mut global_blocks = vec![false; blocks];
        for &g in global {
            global_blocks[g / block] = true;
        }
        let reach = window.div_ceil(block);
        let rows: Vec<Vec<usize>> = (0..blocks)
            .map(|r| {
                (0..blocks)
                    .filter(|&c| global_blocks[r] || global_blocks[c] || r.abs_diff(c) <= reach)
                    .collect()
            })
            .collect();
        BlockMask::from_rows(block, block, seq, seq, &rows)
    }

    /// Query rows per block.
    pub fn block_q(&self) -> usize {
        self.block_q
    }
    /// Keys per block.
    pub fn block_k(&self) -> usize {
        self.block_k
    }
    /// The query rows the mask covers.
    pub fn seq_q(&self) -> usize {
        self.seq_q
    }
    /// The keys the mask covers.
    pub fn seq_k(&self) -> usize {
        self.seq_k
    }
    /// Query blocks: `ceil(seq_q / block_q)`.
    pub fn row_blocks(&self) -> usize {
        self.row_offsets.len() - 1
    }
    /// Key blocks: `ceil(seq_k / block_k)`.
    pub fn col_blocks(&self) -> usize {
        self.seq_k.div_ceil(self.block_k)
    }
    /// Listed (query block, key block) pairs.
    pub fn nnz(&self) -> usize {
        self.col_indices.len()
    }
    /// The CSR row offsets (`row_blocks + 1` entries).
    pub fn row_offsets(&self) -> &[i32] {
        &self.row_offsets
    }
    /// The CSR key blocks of every row, increasing within a row.
    pub fn col_indices(&self) -> &[i32] {
        &self.col_indices
    }
    /// The key blocks query block `r` lists.
    pub fn row(&self, r: usize) -> &[i32] {
        &self.col_indices[self.row_offsets[r] as usize..self.row_offsets[r + 1] as usize]
    }
    /// Listed blocks over all blocks (1.0: dense).
    pub fn density(&self) -> f64 {
        self.nnz() as f64 / (self.row_blocks() * self.col_blocks()).max(1) as f64
    }
    /// Whether query row `i` may see key `j` by the blocks (the element-level masks apply on top).
    pub fn allows(&self, i: usize, j: usize) -> bool {
        let r = i / self.block_q;
        r < self.row_blocks()
            && self
                .row(r)
                .binary_search(&((j / self.block_k) as i32))
                .is_ok()
    }
    /// The mask as text: one line per query block, `#` for a listed block and `.` otherwise (for
    /// small masks in messages and docs).
    pub fn pattern(&self) -> String {
        (0..self.row_blocks())
            .map(|r| {
                let row = self.row(r);
                (0..self.col_blocks())
                    .map(|c| if row.contains(&(c as i32)) { '#' } else { '.' })
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The number of query and key blocks, after checking the block sizes.
fn check_geometry(
    block_q: usize,
    block_k: usize,
    seq_q: usize,
    seq_k: usize,
) -> Result<(usize, usize)> {
    for (axis, size) in [("query", block_q), ("key", block_k)] {
        if size == 0 || size % BLOCK_MULTIPLE != 0 {
            return Err(AttentionError::InvalidArgument(format!(
                "block mask {axis} block of {size}: use a multiple of {BLOCK_MULTIPLE} (64, 128, ...), so that every \
                 flash tile lies in one block"
            )));
        }
    }
    if seq_q == 0 || seq_k == 0 {
        return Err(AttentionError::InvalidArgument(format!(
            "a block mask covers at least one query and one key (got {seq_q} x {seq_k})"
        )));
    }
    let (rows, cols) = (seq_q.div_ceil(block_q), seq_k.div_ceil(block_k));
    if rows >= i32::MAX as usize || cols >= i32::MAX as usize {
        return Err(too_large("block mask blocks", rows.max(cols)));
    }
    Ok((rows, cols))
}

/// Checks that a mask listing every block fits the i32 lists.
fn check_entries(rows: usize, cols: usize) -> Result<()> {
    match rows.checked_mul(cols) {
        Some(n) if n <= i32::MAX as usize => Ok(()),
        _ => Err(too_large("block mask entries", rows.saturating_mul(cols))),
    }
}

fn too_large(what: &'static str, n: usize) -> AttentionError {
    AttentionError::SizeOverflow {
        what,
        detail: format!("{n} entries do not fit the kernels' i32 lists"),
    }
}

/// A small deterministic generator (SplitMix64) for the random blocks: the same seed gives the same mask
/// on every platform and version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigbird_lists_window_global_and_random_blocks() {
        let pattern = BigBird {
            window: 1,
            global: 1,
            random: 2,
            seed: 7,
        };
        let mask = BlockMask::bigbird(64 * 10, 64, pattern).unwrap();
        assert_eq!(mask.row_blocks(), 10);
        assert_eq!(mask.row(0).len(), 10, "a global row sees everything");
        for r in 1..10 {
            let row = mask.row(r);
            assert!(row.contains(&0), "every row sees the global block");
            for c in r.saturating_sub(1)..=(r + 1).min(9) {
                assert!(row.contains(&(c as i32)), "row {r} misses window block {c}");
            }
            let window = r.saturating_sub(1)..=(r + 1).min(9);
            let fixed = 1 + window.clone().filter(|&c| c != 0).count();
            assert_eq!(row.len(), (fixed + 2).min(10), "row {r}: {row:?}");
        }
        assert_eq!(
            mask,
            BlockMask::bigbird(640, 64, pattern).unwrap(),
            "deterministic"
        );
        let other = BlockMask::bigbird(640, 64, BigBird { seed: 8, ..pattern }).unwrap();
        assert_ne!(mask, other, "another seed draws other blocks");
    }

    #[test]
    fn longformer_promotes_global_tokens_to_blocks() {
        let mask = BlockMask::longformer(64 * 6, 64, 64, &[200]).unwrap();
        // Token 200 is in block 3: row 3 sees all, every row sees block 3; the window reaches one block.
        assert_eq!(
            mask.pattern(),
            "##.#..\n####..\n.###..\n######\n...###\n...###"
        );
        assert!(BlockMask::longformer(128, 64, 10, &[128]).is_err());
    }

    #[test]
    fn csr_is_checked_entry_by_entry() {
        let ok = BlockMask::from_csr(64, 64, 128, 192, vec![0, 2, 3], vec![0, 2, 1]).unwrap();
        assert!(ok.allows(0, 150) && !ok.allows(0, 70) && ok.allows(100, 70));
        let unsorted = BlockMask::from_csr(64, 64, 128, 192, vec![0, 2, 3], vec![2, 0, 1]);
        assert!(matches!(
            unsorted,
            Err(AttentionError::InvalidMetadata {
                buffer: "col_indices",
                index: 1,
                value: 0,
                ..
            })
        ));
        let past = BlockMask::from_csr(64, 64, 128, 192, vec![0, 1, 2], vec![0, 3]);
        assert!(matches!(
            past,
            Err(AttentionError::InvalidMetadata {
                buffer: "col_indices",
                index: 1,
                value: 3,
                ..
            })
        ));
        assert!(BlockMask::from_csr(32, 64, 128, 192, vec![0, 0, 0], vec![]).is_err());
        assert!(BlockMask::from_rows(64, 64, 128, 128, &[vec![0], vec![2]]).is_err());
    }
}
