//! `attn bench --varlen DIST [--paged PAGE_SIZE,...]`: a ragged (varlen) batch of sequences of their own
//! lengths, timed beside a dense batch with as many sequences and about as many tokens.
//!
//! - [`LengthDist`]: the lengths, `uniform:MIN..MAX[:SEED]` (drawn until they sum to at least the
//!   sweep's tokens) or a list such as `128,512,2048`, parsed with a message that says what is accepted.
//! - [`RaggedCase`]: one ragged batch of self-attention prefill (`seq_q = seq_k` per sequence), with its
//!   keys and values packed or in a paged cache, and its FLOPs counted on the real lengths.
//! - [`RaggedLayout`]: the i32 metadata buffers of that batch (`cu_seqlens_q`, `cu_seqlens_k` or
//!   `seqused_k` and a block table of shuffled pages), and where each key lives.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::host_memory::vec_filled;
use crate::{
    AttentionError, AttentionProblem, AttentionShape, KeyStorage, Metadata, Paging, Ragged, Result,
};

/// Most sequences in a ragged batch (the flash kernels' grid limit on the batch).
pub const MAX_SEQUENCES: usize = 65_535;

/// Seed of the permutation that shuffles the pages of a paged cache.
const PAGE_SEED: u64 = 0x9e37_79b9;

/// `value` as an i32 metadata entry, or [`AttentionError::SizeOverflow`] naming `what`.
fn entry(what: &'static str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| AttentionError::SizeOverflow {
        what,
        detail: format!("{value} > {}", i32::MAX),
    })
}

/// What `--varlen` accepts, for messages.
const ACCEPTED: &str =
    "use uniform:MIN..MAX[:SEED] (lengths MIN to MAX inclusive, drawn until they sum \
     to --tokens) or a list of lengths such as 128,512,2048";

/// How the lengths of a ragged batch's sequences are chosen (`attn bench --varlen DIST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LengthDist {
    /// Lengths drawn uniformly from `min..=max` with a seeded generator, until they sum to at least the
    /// sweep's tokens (the last one kept whole).
    Uniform {
        /// Shortest length, at least 1.
        min: usize,
        /// Longest length, at least `min`.
        max: usize,
        /// Seed of the draws (0 unless given).
        seed: u64,
    },
    /// Exactly these lengths, one sequence each.
    List(Vec<usize>),
}

impl LengthDist {
    /// Whether the lengths are given (a list), so that they fix the token count.
    pub fn is_list(&self) -> bool {
        matches!(self, LengthDist::List(_))
    }

    /// The lengths of the batch: a list as it is; uniform draws until their sum reaches `tokens`.
    ///
    /// # Errors
    /// A message when the draws need more than [`MAX_SEQUENCES`] sequences to reach `tokens`, or
    /// `tokens` is 0.
    pub fn lengths(&self, tokens: usize) -> std::result::Result<Vec<usize>, String> {
        match self {
            LengthDist::List(lengths) => Ok(lengths.clone()),
            &LengthDist::Uniform { min, max, seed } => {
                if tokens == 0 {
                    return Err("--tokens 0: a ragged batch needs at least 1 token".into());
                }
                let mut rng = StdRng::seed_from_u64(seed);
                let mut lengths = Vec::new();
                let mut total = 0usize;
                while total < tokens {
                    if lengths.len() == MAX_SEQUENCES {
                        return Err(format!(
                            "--varlen {self}: {MAX_SEQUENCES} sequences hold only {total} of the {tokens} \
                             tokens (--tokens): use longer lengths or fewer tokens"
                        ));
                    }
                    let length = rng.random_range(min..=max);
                    lengths.push(length);
                    total = total.saturating_add(length);
                }
                Ok(lengths)
            }
        }
    }
}

impl fmt::Display for LengthDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LengthDist::Uniform { min, max, seed } => write!(f, "uniform:{min}..{max}:{seed}"),
            LengthDist::List(lengths) => {
                let words: Vec<String> = lengths.iter().map(usize::to_string).collect();
                f.write_str(&words.join(","))
            }
        }
    }
}

/// A length of `--varlen`: a number of at least 1.
fn length(word: &str, whole: &str) -> std::result::Result<usize, String> {
    let value: usize = word
        .trim()
        .parse()
        .map_err(|_| format!("'{word}' in '{whole}' is not a length: {ACCEPTED}"))?;
    if value == 0 {
        return Err(format!(
            "length 0 in '{whole}': every sequence needs at least 1 token"
        ));
    }
    Ok(value)
}

impl FromStr for LengthDist {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(format!("an empty length distribution: {ACCEPTED}"));
        }
        if let Some(rest) = s.strip_prefix("uniform:") {
            let (range, seed) = match rest.split_once(':') {
                Some((range, seed)) => (range, Some(seed)),
                None => (rest, None),
            };
            let Some((min, max)) = range.split_once("..") else {
                return Err(format!(
                    "'{s}': expected uniform:MIN..MAX[:SEED], e.g. uniform:1..2048"
                ));
            };
            let (min, max) = (length(min, s)?, length(max, s)?);
            if min > max {
                return Err(format!(
                    "'{s}': the shortest length {min} is above the longest {max}"
                ));
            }
            let seed = match seed {
                Some(seed) => seed
                    .trim()
                    .parse()
                    .map_err(|_| format!("'{seed}' in '{s}' is not a seed: use a whole number"))?,
                None => 0,
            };
            return Ok(LengthDist::Uniform { min, max, seed });
        }
        if !s.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("unknown length distribution '{s}': {ACCEPTED}"));
        }
        let lengths = s
            .split(',')
            .map(|word| length(word, s))
            .collect::<std::result::Result<Vec<usize>, String>>()?;
        if lengths.len() > MAX_SEQUENCES {
            return Err(format!(
                "'{s}' lists {} sequences: at most {MAX_SEQUENCES}",
                lengths.len()
            ));
        }
        Ok(LengthDist::List(lengths))
    }
}

/// Parses one page size of `--paged`: tokens per page, at least 1.
///
/// # Errors
/// A message naming the value and what is accepted.
pub fn parse_page_size(s: &str) -> std::result::Result<usize, String> {
    let value: usize = s.trim().parse().map_err(|_| {
        format!("'{s}' is not a page size: give the tokens per page of the KV cache, e.g. 16")
    })?;
    if value == 0 {
        return Err("page size 0: a page holds at least 1 token, e.g. 16".into());
    }
    Ok(value)
}

/// One ragged batch of self-attention prefill: sequence b has `lengths[b]` queries and as many keys,
/// q and out packed `[total, heads, d]`, k and v packed the same way or, with a page size, in a paged
/// NHD cache `[pages, page_size, heads, d]` whose pages are handed out in a shuffled order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaggedCase {
    /// Each sequence's length (seq_q = seq_k), in batch order.
    pub lengths: Arc<[usize]>,
    /// Tokens per page of a paged KV cache; `None`: packed k and v.
    pub page_size: Option<usize>,
}

impl RaggedCase {
    /// Tokens of the batch: the sum of the lengths.
    pub fn total(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// The longest sequence: the plan's bound on seq_q and seq_k.
    pub fn longest(&self) -> usize {
        self.lengths.iter().copied().max().unwrap_or(0)
    }

    /// Pages the cache holds: each sequence its own, `ceil(length / page_size)` of them (0 when packed).
    pub fn pages(&self) -> usize {
        self.page_size.map_or(0, |size| {
            self.lengths.iter().map(|l| l.div_ceil(size)).sum()
        })
    }

    /// Floating-point operations of one call on the real lengths: the sum over sequences of
    /// 4 * heads * length^2 * head_dim, halved when causal.
    pub fn flops(&self, heads: usize, head_dim: usize, causal: bool) -> f64 {
        let squares: f64 = self.lengths.iter().map(|&l| l as f64 * l as f64).sum();
        let full = 4.0 * heads as f64 * head_dim as f64 * squares;
        if causal {
            full / 2.0
        } else {
            full
        }
    }

    /// The problem: the bounds (batch = sequences, seq_q = seq_k = the longest) and the storage.
    pub fn problem(&self, heads: usize, head_dim: usize, causal: bool) -> AttentionProblem {
        let total = self.total();
        let longest = self.longest();
        let shape = AttentionShape::new(self.lengths.len(), longest, heads, head_dim);
        let (keys, seqused_k) = match self.page_size {
            None => (KeyStorage::Packed { total_k: total }, false),
            Some(size) => (
                KeyStorage::Paged(Paging::new(self.pages(), size, longest)),
                true,
            ),
        };
        AttentionProblem::ragged(
            shape,
            Ragged {
                total_q: total,
                keys,
                seqused_k,
            },
        )
        .with_causal(causal)
    }

    /// The metadata buffers of the batch.
    ///
    /// # Errors
    /// [`AttentionError::OutOfMemory`] or [`AttentionError::SizeOverflow`] for a block table this
    /// machine cannot hold, or offsets and pages beyond i32.
    pub fn layout(&self) -> Result<RaggedLayout> {
        let mut cu_seqlens_q = Vec::with_capacity(self.lengths.len() + 1);
        cu_seqlens_q.push(0i32);
        let mut total = 0usize;
        for &length in self.lengths.iter() {
            total += length;
            cu_seqlens_q.push(entry("cu_seqlens_q", total)?);
        }
        let Some(page_size) = self.page_size else {
            return Ok(RaggedLayout {
                cu_seqlens_k: Some(cu_seqlens_q.clone()),
                cu_seqlens_q,
                seqused_k: None,
                block_table: None,
                page_size: None,
                block_table_stride: 0,
            });
        };
        let paging = Paging::new(self.pages(), page_size, self.longest());
        let stride = paging.block_table_stride;
        let entries =
            self.lengths
                .len()
                .checked_mul(stride)
                .ok_or_else(|| AttentionError::SizeOverflow {
                    what: "block table",
                    detail: format!("{} sequences x {stride} pages", self.lengths.len()),
                })?;
        // Unused entries point at page 0: never followed (past each sequence's seqused_k).
        let mut block_table = vec_filled("block table", entries, 0i32)?;
        let mut order: Vec<usize> = (0..paging.num_pages).collect();
        order.shuffle(&mut StdRng::seed_from_u64(PAGE_SEED));
        let mut next = order.into_iter();
        for (b, &length) in self.lengths.iter().enumerate() {
            for (slot, page) in block_table[b * stride..][..length.div_ceil(page_size)]
                .iter_mut()
                .zip(next.by_ref())
            {
                *slot = entry("block table", page)?;
            }
        }
        let seqused_k = self
            .lengths
            .iter()
            .map(|&l| entry("seqused_k", l))
            .collect::<Result<Vec<i32>>>()?;
        Ok(RaggedLayout {
            seqused_k: Some(seqused_k),
            cu_seqlens_q,
            cu_seqlens_k: None,
            block_table: Some(block_table),
            page_size: Some(page_size),
            block_table_stride: stride,
        })
    }
}

/// The i32 metadata of a [`RaggedCase`], on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaggedLayout {
    /// `[batch + 1]` query row offsets.
    pub cu_seqlens_q: Vec<i32>,
    /// `[batch + 1]` key row offsets (packed keys: the same as the queries').
    pub cu_seqlens_k: Option<Vec<i32>>,
    /// `[batch]` key counts (paged keys).
    pub seqused_k: Option<Vec<i32>>,
    /// `[batch, block_table_stride]` pages (paged keys).
    pub block_table: Option<Vec<i32>>,
    /// Tokens per page (paged keys).
    pub page_size: Option<usize>,
    /// Entries per block-table row.
    pub block_table_stride: usize,
}

impl RaggedLayout {
    /// The buffers as the host backends take them.
    pub fn metadata(&self) -> Metadata<'_> {
        Metadata {
            cu_seqlens_q: &self.cu_seqlens_q,
            cu_seqlens_k: self.cu_seqlens_k.as_deref(),
            seqused_k: self.seqused_k.as_deref(),
            block_table: self.block_table.as_deref(),
        }
    }

    /// Bytes of the buffers.
    pub fn bytes(&self) -> usize {
        let entries = self.cu_seqlens_q.len()
            + [&self.cu_seqlens_k, &self.seqused_k, &self.block_table]
                .iter()
                .map(|b| b.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
        entries * size_of::<i32>()
    }

    /// First row of sequence `b` in q and out.
    pub fn query_row(&self, b: usize) -> usize {
        self.cu_seqlens_q[b] as usize
    }

    /// Where key `j` of sequence `b` lives, as (batch, seq) indices of the k and v strides: row
    /// `cu_seqlens_k[b] + j` of packed keys, or row `j % page_size` of page
    /// `block_table[b][j / page_size]`.
    pub fn key_position(&self, b: usize, j: usize) -> (usize, usize) {
        match (self.page_size, &self.block_table, &self.cu_seqlens_k) {
            (Some(size), Some(table), _) => (
                table[b * self.block_table_stride + j / size] as usize,
                j % size,
            ),
            (_, _, Some(cu_k)) => (0, cu_k[b] as usize + j),
            _ => (0, j),
        }
    }
}
