//! A weights file as PyTorch users hold it, read from its bytes: safetensors (Hugging Face,
//! timm) or a `.pth`/`.pt` written by `torch.save` (see [`crate::pth`]). The format is told by
//! the bytes, not the file name. Tensors are views into the bytes: nothing is decoded until a
//! loader asks for it, so reading a file costs the file plus the f32 tensors made from it.

use safetensors::tensor::Dtype as StDtype;

use crate::weights::WeightsError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    /// `torch.save`'s zip archive holding a pickle.
    Pth,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Pth => "PyTorch .pth",
        }
    }

    /// What the bytes are: a zip archive (`PK\x03\x04`, torch.save since PyTorch 1.6) or
    /// safetensors (an 8-byte little-endian header length, then a JSON object).
    pub fn detect(bytes: &[u8]) -> Result<Format, WeightsError> {
        if bytes.starts_with(b"PK\x03\x04") {
            return Ok(Format::Pth);
        }
        if bytes.len() >= 9 {
            let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
            if bytes[8] == b'{' && n >= 2 {
                return Ok(Format::Safetensors);
            }
        }
        // Pickle protocol 2 (0x80 0x02): torch.save's format before PyTorch 1.6.
        if bytes.starts_with(&[0x80, 0x02]) || bytes.starts_with(&[0x80, 0x04]) {
            return Err(WeightsError::Format(
                "a PyTorch file in the legacy format (before PyTorch 1.6, or \
                 _use_new_zipfile_serialization=False); load it in PyTorch and save it again with \
                 torch.save(state_dict, path)"
                    .into(),
            ));
        }
        let what = match bytes.len() {
            0 => "the file is empty".to_string(),
            n if n < 9 => format!("only {n} bytes"),
            _ => "neither a PyTorch .pth (zip) nor a safetensors file".to_string(),
        };
        Err(WeightsError::Format(format!("not a weights file: {what}")))
    }
}

/// Element types a weights file may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawDtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    /// Any other (named as the file names it); an error only if the network needs the tensor.
    Other(String),
}

impl RawDtype {
    fn size(&self) -> Option<usize> {
        Some(match self {
            RawDtype::F32 | RawDtype::I32 => 4,
            RawDtype::F64 | RawDtype::I64 => 8,
            RawDtype::F16 | RawDtype::BF16 => 2,
            RawDtype::Other(_) => return None,
        })
    }
}

/// One tensor of a file: its name, shape, type and where its elements lie in the file.
#[derive(Clone, Debug)]
pub struct RawTensor<'a> {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: RawDtype,
    /// The bytes of the storage the tensor views (a safetensors tensor is its own storage).
    storage: &'a [u8],
    /// In elements: the first element's index and each dimension's stride.
    offset: usize,
    strides: Vec<usize>,
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

impl<'a> RawTensor<'a> {
    /// A view of `storage`, checked: every element it reaches lies inside the storage.
    pub(crate) fn new(
        name: String,
        shape: Vec<usize>,
        dtype: RawDtype,
        storage: &'a [u8],
        offset: usize,
        strides: Vec<usize>,
    ) -> Result<Self, WeightsError> {
        let bad = |msg: String| WeightsError::Format(format!("tensor {name}: {msg}"));
        if strides.len() != shape.len() {
            return Err(bad(format!("{} strides for {} dimensions", strides.len(), shape.len())));
        }
        if let Some(size) = dtype.size() {
            let elements = storage.len() / size;
            let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            let last = shape.iter().zip(&strides).try_fold(offset, |at, (&d, &s)| {
                (d.checked_sub(1)).map_or(Some(at), |d| d.checked_mul(s).and_then(|x| x.checked_add(at)))
            });
            match (numel, last) {
                (Some(0), _) => {}
                (Some(_), Some(last)) if last < elements => {}
                _ => {
                    return Err(bad(format!(
                        "shape {shape:?} (strides {strides:?}, offset {offset}) reaches beyond its \
                         {elements} stored elements (truncated or corrupt file)"
                    )))
                }
            }
        }
        Ok(RawTensor { name, shape, dtype, storage, offset, strides })
    }

    pub(crate) fn contiguous(
        name: String,
        shape: Vec<usize>,
        dtype: RawDtype,
        data: &'a [u8],
    ) -> Result<Self, WeightsError> {
        let strides = contiguous_strides(&shape);
        Self::new(name, shape, dtype, data, 0, strides)
    }

    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Calls `f` with every element's byte offset in the storage, in C order (a strided view).
    fn for_each_offset(&self, size: usize, mut f: impl FnMut(usize)) {
        let mut index = vec![0usize; self.shape.len()];
        for _ in 0..self.elements() {
            let at = self.offset + index.iter().zip(&self.strides).map(|(i, s)| i * s).sum::<usize>();
            f(at * size);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < self.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
    }

    fn dtype_error(&self) -> WeightsError {
        WeightsError::Dtype { name: self.name.clone(), dtype: format!("{:?}", self.dtype) }
    }

    /// The elements as f32, in C order (floats of any width; an error for other types).
    pub fn to_f32(&self) -> Result<Vec<f32>, WeightsError> {
        let b = self.storage;
        let size = self.dtype.size().ok_or_else(|| self.dtype_error())?;
        let contiguous = self.strides == contiguous_strides(&self.shape);
        let conv: fn(&[u8]) -> f32 = match self.dtype {
            RawDtype::F32 => |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            RawDtype::F64 => |c| f64::from_le_bytes(c[..8].try_into().expect("8 bytes")) as f32,
            RawDtype::F16 => |c| half_to_f32(u16::from_le_bytes([c[0], c[1]])),
            RawDtype::BF16 => |c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16),
            _ => return Err(self.dtype_error()),
        };
        if contiguous {
            let start = self.offset * size;
            let bytes = &b[start..start + self.elements() * size];
            return Ok(bytes.chunks_exact(size).map(conv).collect());
        }
        let mut out = Vec::with_capacity(self.elements());
        self.for_each_offset(size, |at| out.push(conv(&b[at..at + size])));
        Ok(out)
    }

    /// A one-element integer tensor (`num_batches_tracked`).
    pub fn to_i64_scalar(&self) -> Result<i64, WeightsError> {
        if self.elements() != 1 {
            return Err(self.dtype_error());
        }
        let at = self.offset * self.dtype.size().ok_or_else(|| self.dtype_error())?;
        let b = self.storage;
        match self.dtype {
            RawDtype::I64 => Ok(i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))),
            RawDtype::I32 => Ok(i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as i64),
            _ => Err(self.dtype_error()),
        }
    }
}

/// The tensors of a weights file by name, with `module.` / `model.` prefixes that every name
/// shares (nn.DataParallel, Lightning-style wrappers) taken off.
#[derive(Debug)]
pub struct TensorFile<'a> {
    pub format: Format,
    /// Sorted by name.
    pub tensors: Vec<RawTensor<'a>>,
    /// The prefix taken off every name ("" if none).
    pub prefix: String,
}

const PREFIXES: [&str; 2] = ["module.", "model."];

impl<'a> TensorFile<'a> {
    /// Reads the bytes of a safetensors or `.pth` file (told apart by their first bytes).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WeightsError> {
        let format = Format::detect(bytes)?;
        let tensors = match format {
            Format::Safetensors => safetensors_tensors(bytes)?,
            Format::Pth => crate::pth::tensors(bytes)?,
        };
        Ok(Self::from_tensors(format, tensors))
    }

    fn from_tensors(format: Format, mut tensors: Vec<RawTensor<'a>>) -> Self {
        let mut prefix = String::new();
        while let Some(p) =
            PREFIXES.iter().find(|p| !tensors.is_empty() && tensors.iter().all(|t| t.name.starts_with(*p)))
        {
            for t in &mut tensors {
                t.name.drain(..p.len());
            }
            prefix.push_str(p);
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        TensorFile { format, tensors, prefix }
    }

    /// Every tensor's name and shape.
    pub fn shapes(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.tensors.iter().map(|t| (t.name.as_str(), t.shape.as_slice()))
    }
}

fn safetensors_tensors(bytes: &[u8]) -> Result<Vec<RawTensor<'_>>, WeightsError> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| WeightsError::Format(format!("not a valid safetensors file: {e}")))?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let dtype = match view.dtype() {
                StDtype::F32 => RawDtype::F32,
                StDtype::F64 => RawDtype::F64,
                StDtype::F16 => RawDtype::F16,
                StDtype::BF16 => RawDtype::BF16,
                StDtype::I64 => RawDtype::I64,
                StDtype::I32 => RawDtype::I32,
                d => RawDtype::Other(format!("{d:?}")),
            };
            RawTensor::contiguous(name, view.shape().to_vec(), dtype, view.data())
        })
        .collect()
}

pub(crate) fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_views_read_in_c_order_and_stay_inside() {
        let data: Vec<u8> = (0..6u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        // The transpose of a 2×3 matrix, as a 3×2 view with strides (1, 3).
        let t = RawTensor::new("t".into(), vec![3, 2], RawDtype::F32, &data, 0, vec![1, 3]).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let err = RawTensor::new("t".into(), vec![3, 2], RawDtype::F32, &data, 1, vec![1, 3]).unwrap_err();
        assert!(err.to_string().contains("beyond"), "{err}");
        let huge = RawTensor::new("t".into(), vec![usize::MAX, 2], RawDtype::F32, &data, 0, vec![1, 1]);
        assert!(huge.is_err());
    }

    #[test]
    fn formats_are_told_by_their_bytes() {
        assert!(matches!(Format::detect(b"PK\x03\x04rest"), Ok(Format::Pth)));
        assert!(Format::detect(b"").unwrap_err().to_string().contains("empty"));
        assert!(Format::detect(b"hello world, not weights").unwrap_err().to_string().contains("neither"));
        assert!(Format::detect(&[0x80, 0x02, 0x8a, 0x0a]).unwrap_err().to_string().contains("legacy"));
    }
}
