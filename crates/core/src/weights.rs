//! A network's tensors by PyTorch name: strict safetensors loading, saving in the same names,
//! and deterministic random initialisation.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, TensorView};

use crate::rng::Rng;
use crate::spec::{Graph, ParamKind, ParamSpec};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("not a safetensors file: {0}")]
    Format(String),
    #[error("cannot read {path}: {msg}")]
    Io { path: String, msg: String },
    #[error("{0}")]
    Mismatch(Mismatch),
    #[error("tensor {name}: unsupported dtype {dtype}")]
    Dtype { name: String, dtype: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Every difference between a file and the architecture, so one error shows them all.
#[derive(Debug, Default)]
pub struct Mismatch {
    pub arch: String,
    pub missing: Vec<(String, Vec<usize>)>,
    pub unexpected: Vec<(String, Vec<usize>)>,
    /// name, expected, found
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "weights do not match {}: {} missing, {} unexpected, {} with the wrong shape",
            self.arch,
            self.missing.len(),
            self.unexpected.len(),
            self.wrong_shape.len()
        )?;
        for (n, s) in &self.missing {
            write!(f, "\n  missing    {n} (expected {s:?})")?;
        }
        for (n, s) in &self.unexpected {
            write!(f, "\n  unexpected {n} {s:?}")?;
        }
        for (n, e, s) in &self.wrong_shape {
            write!(f, "\n  wrong shape {n}: expected {e:?}, found {s:?}")?;
        }
        Ok(())
    }
}

/// The state dict. Trainable tensors, running statistics and `num_batches_tracked` (I64).
#[derive(Clone, Debug, Default)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
}

fn seed_for(seed: u64, name: &str) -> u64 {
    // FNV-1a of the name, so each tensor's values do not depend on the order of the others.
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64 ^ seed, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

impl Weights {
    pub fn from_map(tensors: BTreeMap<String, Tensor>) -> Self {
        Weights { tensors }
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The tensor `name`; the graph guarantees it exists once loading succeeded.
    pub fn tensor(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("weights have no tensor {name}")))
    }

    pub fn insert(&mut self, name: String, t: Tensor) {
        self.tensors.insert(name, t);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.tensors.iter()
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn to_device(&self, device: &Device) -> candle_core::Result<Weights> {
        let tensors = self
            .tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_device(device)?)))
            .collect::<candle_core::Result<_>>()?;
        Ok(Weights { tensors })
    }

    /// He initialisation as in the paper (torchvision's: conv weights normal with std
    /// sqrt(2 / fan_out), BN γ = 1, β = 0, linear uniform ±1/sqrt(fan_in)), from `seed`, the same
    /// on every platform.
    pub fn random(graph: &Graph, seed: u64, device: &Device) -> candle_core::Result<Weights> {
        let mut tensors = BTreeMap::new();
        let specs = graph.param_specs();
        let weight_shape = |owner: &str| {
            let name = format!("{owner}.weight");
            specs.iter().find(|p| p.name == name).map(|p| p.shape.clone())
        };
        for spec in specs.iter().cloned() {
            let mut rng = Rng::new(seed_for(seed, &spec.name));
            let n = spec.elements();
            let values: Vec<f32> = match spec.kind {
                ParamKind::BatchCount => {
                    tensors.insert(spec.name, Tensor::new(0i64, device)?);
                    continue;
                }
                ParamKind::RunningMean => vec![0.0; n],
                ParamKind::RunningVar => vec![1.0; n],
                ParamKind::Weight if spec.shape.len() == 4 => {
                    let fan_out = spec.shape[0] * spec.shape[2] * spec.shape[3];
                    let std = (2.0 / fan_out as f32).sqrt();
                    (0..n).map(|_| rng.normal() * std).collect()
                }
                ParamKind::Weight if spec.shape.len() == 1 => vec![1.0; n],
                ParamKind::Weight => {
                    let bound = 1.0 / (spec.shape[1] as f32).sqrt();
                    (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * bound).collect()
                }
                ParamKind::Bias => {
                    // Linear/conv biases follow their weight's fan-in; BN biases start at 0.
                    let owner = spec.name.trim_end_matches(".bias");
                    match weight_shape(owner) {
                        Some(w) if w.len() > 1 => {
                            let fan_in: usize = w[1..].iter().product();
                            let bound = 1.0 / (fan_in as f32).sqrt();
                            (0..n).map(|_| (rng.uniform() * 2.0 - 1.0) * bound).collect()
                        }
                        _ => vec![0.0; n],
                    }
                }
            };
            tensors.insert(spec.name, Tensor::from_vec(values, spec.shape, device)?);
        }
        Ok(Weights { tensors })
    }

    /// Loads a safetensors file's bytes, strictly: every tensor the graph needs, no other, each
    /// with its shape. `num_batches_tracked` may be absent (it does not affect the network).
    pub fn from_safetensors(
        bytes: &[u8],
        graph: &Graph,
        arch: &str,
        device: &Device,
    ) -> Result<Weights, WeightsError> {
        let st =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format(e.to_string()))?;
        let expected: BTreeMap<String, ParamSpec> =
            graph.param_specs().into_iter().map(|p| (p.name.clone(), p)).collect();
        let mut mismatch = Mismatch { arch: arch.to_string(), ..Default::default() };
        let mut tensors = BTreeMap::new();
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        for name in names {
            let view = st.tensor(&name).map_err(|e| WeightsError::Format(e.to_string()))?;
            let shape = view.shape().to_vec();
            let Some(spec) = expected.get(&name) else {
                mismatch.unexpected.push((name, shape));
                continue;
            };
            if shape != spec.shape {
                mismatch.wrong_shape.push((name, spec.shape.clone(), shape));
                continue;
            }
            let t = if spec.kind == ParamKind::BatchCount {
                Tensor::new(read_i64(&name, &view)?, device)?
            } else {
                Tensor::from_vec(read_f32(&name, &view)?, shape, device)?
            };
            tensors.insert(name, t);
        }
        for (name, spec) in &expected {
            if !tensors.contains_key(name) && !mismatch.wrong_shape.iter().any(|w| &w.0 == name) {
                if spec.kind == ParamKind::BatchCount {
                    tensors.insert(name.clone(), Tensor::new(0i64, device)?);
                } else {
                    mismatch.missing.push((name.clone(), spec.shape.clone()));
                }
            }
        }
        if mismatch.missing.is_empty() && mismatch.unexpected.is_empty() && mismatch.wrong_shape.is_empty() {
            Ok(Weights { tensors })
        } else {
            Err(WeightsError::Mismatch(mismatch))
        }
    }

    /// Reads a file (native; in the browser pass the bytes to `from_safetensors`).
    pub fn load(
        path: &std::path::Path,
        graph: &Graph,
        arch: &str,
        device: &Device,
    ) -> Result<Weights, WeightsError> {
        let bytes = std::fs::read(path)
            .map_err(|e| WeightsError::Io { path: path.display().to_string(), msg: e.to_string() })?;
        Self::from_safetensors(&bytes, graph, arch, device)
    }

    /// safetensors bytes with the same names (float32, `num_batches_tracked` int64), loadable by
    /// PyTorch's `load_state_dict` after `safetensors.torch.load_file`.
    pub fn to_safetensors(
        &self,
        metadata: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Vec<u8>, WeightsError> {
        let mut data: Vec<(String, StDtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(self.tensors.len());
        for (name, t) in &self.tensors {
            let t = t.to_device(&Device::Cpu)?;
            let (dtype, bytes) = match t.dtype() {
                DType::I64 => {
                    let v: Vec<i64> = t.flatten_all()?.to_vec1()?;
                    (StDtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                _ => {
                    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                    (StDtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
            };
            data.push((name.clone(), dtype, t.dims().to_vec(), bytes));
        }
        let views = data
            .iter()
            .map(|(n, d, s, b)| {
                TensorView::new(*d, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| WeightsError::Format(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        safetensors::tensor::serialize(views, metadata).map_err(|e| WeightsError::Format(e.to_string()))
    }

    /// Writes atomically: a temporary file beside `path`, then a rename, so a crash never
    /// leaves a half-written file under the real name.
    pub fn save(
        &self,
        path: &std::path::Path,
        metadata: Option<std::collections::HashMap<String, String>>,
    ) -> Result<(), WeightsError> {
        let bytes = self.to_safetensors(metadata)?;
        let io =
            |e: std::io::Error| WeightsError::Io { path: path.display().to_string(), msg: e.to_string() };
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

fn read_f32(name: &str, view: &TensorView) -> Result<Vec<f32>, WeightsError> {
    let b = view.data();
    Ok(match view.dtype() {
        StDtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
        StDtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        StDtype::F16 => b.chunks_exact(2).map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        StDtype::BF16 => b
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        d => return Err(WeightsError::Dtype { name: name.into(), dtype: format!("{d:?}") }),
    })
}

fn read_i64(name: &str, view: &TensorView) -> Result<i64, WeightsError> {
    let b = view.data();
    match view.dtype() {
        StDtype::I64 if b.len() == 8 => Ok(i64::from_le_bytes(b.try_into().unwrap())),
        StDtype::I32 if b.len() == 4 => Ok(i32::from_le_bytes(b.try_into().unwrap()) as i64),
        d => Err(WeightsError::Dtype { name: name.into(), dtype: format!("{d:?}") }),
    }
}

fn half_to_f32(h: u16) -> f32 {
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
