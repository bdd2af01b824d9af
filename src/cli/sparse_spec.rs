//! `--sparse SPEC`: a block-sparse mask named on the command line (`attn check`, `attn weights`), built
//! for the problem's sequence once its length is known.
//!
//! - `bigbird[:block=64,window=1,global=1,random=3,seed=0]`: [`BlockMask::bigbird`] (window, global and
//!   random counts in blocks);
//! - `longformer[:block=64,window=256,global=0+511]`: [`BlockMask::longformer`] (the window in tokens,
//!   global token positions joined by `+`).
//!
//! Both are self-attention patterns: the problem needs `seq_q == seq_k`.

use std::fmt;
use std::str::FromStr;

use crate::{BigBird, BlockMask, Result};

/// A parsed `--sparse` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SparseSpec {
    /// BigBird's pattern in square blocks of `block`.
    BigBird { block: usize, pattern: BigBird },
    /// Longformer's pattern in square blocks of `block`.
    Longformer {
        block: usize,
        window: usize,
        global: Vec<usize>,
    },
}

impl SparseSpec {
    /// The mask for a self-attention sequence of `seq` tokens.
    ///
    /// # Errors
    /// The builder's typed error (block size, global positions past the sequence).
    pub fn build(&self, seq: usize) -> Result<BlockMask> {
        match self {
            SparseSpec::BigBird { block, pattern } => BlockMask::bigbird(seq, *block, *pattern),
            SparseSpec::Longformer {
                block,
                window,
                global,
            } => BlockMask::longformer(seq, *block, *window, global),
        }
    }

    /// The pattern's name.
    pub fn name(&self) -> &'static str {
        match self {
            SparseSpec::BigBird { .. } => "bigbird",
            SparseSpec::Longformer { .. } => "longformer",
        }
    }
}

/// The spec with every option spelled out (`bigbird:block=64,window=1,global=1,random=3,seed=0`): what
/// the benchmark records, and what parses back to the same spec.
impl fmt::Display for SparseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SparseSpec::BigBird { block, pattern } => write!(
                f,
                "bigbird:block={block},window={},global={},random={},seed={}",
                pattern.window, pattern.global, pattern.random, pattern.seed
            ),
            SparseSpec::Longformer {
                block,
                window,
                global,
            } => {
                write!(f, "longformer:block={block},window={window}")?;
                if !global.is_empty() {
                    let positions: Vec<String> = global.iter().map(usize::to_string).collect();
                    write!(f, ",global={}", positions.join("+"))?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for SparseSpec {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let (name, options) = text.split_once(':').unwrap_or((text, ""));
        let allowed: &[&str] = match name {
            "bigbird" => &["block", "window", "global", "random", "seed"],
            "longformer" => &["block", "window", "global"],
            other => {
                return Err(format!(
                    "unknown sparse pattern '{other}': use bigbird[:block=64,window=1,global=1,random=3,seed=0] or \
                     longformer[:block=64,window=256,global=0+511]"
                ))
            }
        };
        let mut values: Vec<(&str, &str)> = Vec::new();
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("'{option}' in --sparse {text}: write KEY=VALUE"))?;
            if !allowed.contains(&key) {
                return Err(format!(
                    "'{key}' is not an option of {name}: use {}",
                    allowed.join(", ")
                ));
            }
            values.push((key, value));
        }
        let number = |key: &str, default: u64| -> std::result::Result<u64, String> {
            match values.iter().rev().find(|(k, _)| *k == key) {
                None => Ok(default),
                Some((_, v)) => v
                    .parse::<u64>()
                    .map_err(|_| format!("{name} {key}={v}: not a non-negative integer")),
            }
        };
        let size = |key: &str, default: u64| number(key, default).map(|n| n as usize);
        Ok(match name {
            "bigbird" => SparseSpec::BigBird {
                block: size("block", 64)?,
                pattern: BigBird {
                    window: size("window", 1)?,
                    global: size("global", 1)?,
                    random: size("random", 3)?,
                    seed: number("seed", 0)?,
                },
            },
            _ => {
                let global = match values.iter().rev().find(|(k, _)| *k == "global") {
                    None => Vec::new(),
                    Some((_, v)) => v
                        .split('+')
                        .map(|p| {
                            p.parse::<usize>().map_err(|_| {
                                format!(
                                    "longformer global={v}: positions are integers joined by '+'"
                                )
                            })
                        })
                        .collect::<std::result::Result<_, _>>()?,
                };
                SparseSpec::Longformer {
                    block: size("block", 64)?,
                    window: size("window", 256)?,
                    global,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_defaults_and_refuse_typos() {
        let spec: SparseSpec = "bigbird:random=2,seed=7".parse().unwrap();
        assert_eq!(
            spec,
            SparseSpec::BigBird {
                block: 64,
                pattern: BigBird {
                    window: 1,
                    global: 1,
                    random: 2,
                    seed: 7
                }
            }
        );
        let spec: SparseSpec = "longformer:block=128,global=0+300".parse().unwrap();
        assert_eq!(
            spec,
            SparseSpec::Longformer {
                block: 128,
                window: 256,
                global: vec![0, 300]
            }
        );
        assert!(spec.build(512).unwrap().density() > 0.5);
        assert!("dense"
            .parse::<SparseSpec>()
            .unwrap_err()
            .contains("unknown sparse pattern"));
        assert!("bigbird:windo=2"
            .parse::<SparseSpec>()
            .unwrap_err()
            .contains("not an option"));
        assert!("bigbird:window=-1"
            .parse::<SparseSpec>()
            .unwrap_err()
            .contains("non-negative"));
        assert!("longformer:global=1+x"
            .parse::<SparseSpec>()
            .unwrap_err()
            .contains("joined by '+'"));
        for text in [
            "bigbird:block=128,window=2,global=0,random=5,seed=9",
            "longformer:block=64,window=100,global=3+70",
            "longformer:block=64,window=100",
        ] {
            let spec: SparseSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            "bigbird".parse::<SparseSpec>().unwrap().to_string(),
            "bigbird:block=64,window=1,global=1,random=3,seed=0"
        );
        let odd: SparseSpec = "bigbird:block=48".parse().unwrap();
        assert!(odd.build(256).is_err(), "48 is not a multiple of 64");
    }
}
