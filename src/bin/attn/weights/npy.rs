//! q, k and v from NumPy `.npy` files (real activations): float32, float64 (read as f32) or float16,
//! C order, shape `[seq, heads, head_dim]` or `[batch, seq, heads, head_dim]`.

use std::path::Path;

use half::f16;
use npyz::{NpyFile, Order, TypeChar};

/// The values of one file, in the precision the kernels take.
pub enum Values {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

/// One tensor: `[batch, seq, heads, head_dim]` (batch 1 when the file has three axes), contiguous.
pub struct Tensor {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub values: Values,
}

/// Reads `path`.
///
/// # Errors
/// A message naming the file for anything it cannot take: I/O, not an .npy file, Fortran order, a
/// shape of other than 3 or 4 axes, an element type other than float16/32/64.
pub fn load(path: &Path) -> Result<Tensor, String> {
    let fail = |what: String| format!("{}: {what}", path.display());
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let file = NpyFile::new(&bytes[..]).map_err(|e| fail(format!("not a .npy file: {e}")))?;
    if file.order() == Order::Fortran {
        return Err(fail(
            "the array is in Fortran order: save it with np.ascontiguousarray(x)".into(),
        ));
    }
    let shape: Vec<usize> = file.shape().iter().map(|&n| n as usize).collect();
    let [batch, seq, heads, head_dim] = match shape[..] {
        [seq, heads, head_dim] => [1, seq, heads, head_dim],
        [batch, seq, heads, head_dim] => [batch, seq, heads, head_dim],
        _ => {
            return Err(fail(format!(
                "shape {shape:?}: expected [seq, heads, head_dim] or [batch, seq, heads, head_dim]"
            )))
        }
    };
    let dtype = file.dtype();
    let type_str = match &dtype {
        npyz::DType::Plain(type_str) => type_str.clone(),
        other => return Err(fail(format!("element type {other:?} is not a float"))),
    };
    let read_error = |e: std::io::Error| fail(format!("reading the values: {e}"));
    let values = match (type_str.type_char(), type_str.size_field()) {
        (TypeChar::Float, 4) => Values::F32(file.into_vec::<f32>().map_err(read_error)?),
        (TypeChar::Float, 8) => Values::F32(
            file.into_vec::<f64>()
                .map_err(read_error)?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
        ),
        (TypeChar::Float, 2) => Values::F16(file.into_vec::<f16>().map_err(read_error)?),
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
