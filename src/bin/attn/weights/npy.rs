//! q, k and v from NumPy `.npy` files (real activations): float32, float64 (read as f32) or float16,
//! C order, shape `[seq, heads, head_dim]` or `[batch, seq, heads, head_dim]`.
//!
//! The header's shape is read and checked here first (its product in checked arithmetic, against the
//! bytes the file holds), so that a corrupt or hostile header is an error naming the file, never a
//! panic or an abort in the reader; the values go into a buffer from the host memory guard.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use cuda_attention::cli::{reject, CliError};
use cuda_attention::host_memory::vec_filled;
use half::f16;
use npyz::{Deserialize, NpyFile, Order, TypeChar};

/// Longest header accepted, in bytes (NumPy writes a few hundred).
const MAX_HEADER: usize = 1 << 20;

/// The values of one file, in the precision the kernels take.
pub enum Values {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

/// One tensor: `[batch, seq, heads, head_dim]` (batch 1 when the file has three axes), contiguous; the
/// values hold exactly `batch * seq * heads * head_dim` elements.
pub struct Tensor {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub values: Values,
}

/// The header of a `.npy` file as this reader needs it: its length in bytes (magic and length fields
/// included) and the shape, when the header states one this parser understands.
struct Header {
    bytes: u64,
    shape: Option<Vec<u64>>,
}

/// Reads the magic, the version, the header length and the header text, and picks the `'shape'` tuple
/// out of the header dict (`None` when it is not there: the full parser then says what is wrong).
fn read_header(file: &mut impl Read) -> Result<Header, String> {
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)
        .map_err(|e| format!("not a .npy file: {e}"))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err("not a .npy file: the magic string \\x93NUMPY is missing".into());
    }
    let (length_bytes, len) = match magic[6] {
        1 => {
            let mut len = [0u8; 2];
            file.read_exact(&mut len)
                .map_err(|e| format!("not a .npy file: {e}"))?;
            (2, usize::from(u16::from_le_bytes(len)))
        }
        2 | 3 => {
            let mut len = [0u8; 4];
            file.read_exact(&mut len)
                .map_err(|e| format!("not a .npy file: {e}"))?;
            (4, u32::from_le_bytes(len) as usize)
        }
        version => return Err(format!("unsupported .npy format version {version}")),
    };
    if len > MAX_HEADER {
        return Err(format!(
            "the header claims {len} bytes, more than the {MAX_HEADER} this reader accepts"
        ));
    }
    let mut text = vec![0u8; len];
    file.read_exact(&mut text)
        .map_err(|e| format!("the header is cut short: {e}"))?;
    let text = String::from_utf8_lossy(&text);
    Ok(Header {
        bytes: (8 + length_bytes + len) as u64,
        shape: shape_of(&text),
    })
}

/// The integers of the `'shape': (a, b, ...)` entry of a header dict.
fn shape_of(header: &str) -> Option<Vec<u64>> {
    let key = header
        .find("'shape'")
        .or_else(|| header.find("\"shape\""))?;
    let rest = header[key + 7..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let tuple = rest.strip_prefix('(')?;
    let tuple = &tuple[..tuple.find(')')?];
    tuple
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| item.trim_end_matches('L').parse().ok())
        .collect()
}

/// Reads `count` values of `S` from the file's data into a buffer from the host memory guard,
/// converting each with `convert`.
fn read_values<S: Deserialize, T: Clone + Default>(
    file: NpyFile<BufReader<File>>,
    count: usize,
    convert: impl Fn(S) -> T,
    fail: &impl Fn(String) -> CliError,
) -> Result<Vec<T>, CliError> {
    let mut values = vec_filled("values of a .npy file", count, T::default())
        .map_err(|e| fail(e.to_string()))?;
    let reader = file
        .data::<S>()
        .map_err(|e| fail(format!("reading the values: {e}")))?;
    let mut read = 0;
    for (slot, value) in values.iter_mut().zip(reader) {
        *slot = convert(value.map_err(|e| fail(format!("reading the values: {e}")))?);
        read += 1;
    }
    if read < count {
        return Err(fail(format!(
            "the file ends after {read} of {count} values"
        )));
    }
    Ok(values)
}

/// Reads `path`.
///
/// # Errors
/// [`CliError::Rejected`] naming the file for anything it cannot take: I/O, not an .npy file, Fortran
/// order, a shape of other than 3 or 4 axes or whose size overflows, fewer bytes than the shape needs, an
/// element type other than float16/32/64, more values than this machine's memory holds.
pub fn load(path: &Path) -> Result<Tensor, CliError> {
    let fail = |what: String| reject(format!("{}: {what}", path.display()));
    let mut file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let file_bytes = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    let header = read_header(&mut file).map_err(&fail)?;
    // The shape is checked before the full parser sees it (that parser multiplies the axes unchecked).
    let Some(shape) = header.shape else {
        return Err(fail(
            "the header has no 'shape' tuple this reader understands: save the array with numpy.save"
                .into(),
        ));
    };
    let elements = shape
        .iter()
        .try_fold(1u64, |n, &axis| n.checked_mul(axis))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| {
            fail(format!(
                "shape {shape:?} has more elements than this machine can address: the header is corrupt"
            ))
        })?;
    // Every axis fits a usize now, as their product does.
    let [batch, seq, heads, head_dim] = match shape[..] {
        [seq, heads, head_dim] => [1, seq, heads, head_dim],
        [batch, seq, heads, head_dim] => [batch, seq, heads, head_dim],
        _ => {
            return Err(fail(format!(
                "shape {shape:?}: expected [seq, heads, head_dim] or [batch, seq, heads, head_dim]"
            )))
        }
    }
    .map(|axis| axis as usize);
    file.seek(SeekFrom::Start(0))
        .map_err(|e| fail(e.to_string()))?;
    let file =
        NpyFile::new(BufReader::new(file)).map_err(|e| fail(format!("not a .npy file: {e}")))?;
    if file.shape() != shape.as_slice() {
        return Err(fail(format!(
            "the header's shape reads as {shape:?} here and {:?} in the .npy parser: save the array with \
             numpy.save",
            file.shape()
        )));
    }
    if file.order() == Order::Fortran {
        return Err(fail(
            "the array is in Fortran order: save it with np.ascontiguousarray(x)".into(),
        ));
    }
    let type_str = match file.dtype() {
        npyz::DType::Plain(type_str) => type_str,
        other => return Err(fail(format!("element type {other:?} is not a float"))),
    };
    let size = type_str.size_field() as u64;
    let data_bytes = file_bytes.saturating_sub(header.bytes);
    if (elements as u64)
        .checked_mul(size)
        .is_none_or(|needed| needed > data_bytes)
    {
        return Err(fail(format!(
            "shape {shape:?} of {size}-byte values needs more than the {data_bytes} bytes of data the \
             file holds: the file is cut short or its header is wrong"
        )));
    }
    let values = match (type_str.type_char(), size) {
        (TypeChar::Float, 4) => Values::F32(read_values(file, elements, |x: f32| x, &fail)?),
        (TypeChar::Float, 8) => Values::F32(read_values(file, elements, |x: f64| x as f32, &fail)?),
        (TypeChar::Float, 2) => Values::F16(read_values(file, elements, |x: f16| x, &fail)?),
        _ => {
            return Err(fail(format!(
                "element type {type_str} is not float16, float32 or float64 (bfloat16 arrays: save \
                 them as float32)"
            )))
        }
    };
    Ok(Tensor {
        batch,
        seq,
        heads,
        head_dim,
        values,
    })
}
