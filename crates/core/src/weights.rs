//! A network's tensors by PyTorch name: strict safetensors loading, saving in the same names,
//! and deterministic random initialisation.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, TensorView};

use crate::tensors::{RawDtype, TensorFile};

use crate::rng::Rng;
use crate::spec::{Graph, ParamKind, ParamSpec};

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// Not readable as weights (the message says why: truncated, not weights, …).
    #[error("{0}")]
    Format(String),
    #[error("cannot read {path}: {msg}")]
    Io { path: String, msg: String },
    #[error("{0}")]
    Mismatch(Mismatch),
    /// No architecture of the zoo has these tensors; the closest one's differences.
    #[error(
        "the weights match no architecture in the zoo; the closest is {arch} ({m} missing, {u} \
         unexpected, {w} with the wrong shape):{listing}",
        arch = .0.arch, m = .0.missing.len(), u = .0.unexpected.len(), w = .0.wrong_shape.len(),
        listing = .0.listing(3)
    )]
    Unrecognised(Mismatch),
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

impl Mismatch {
    /// Every difference between the tensors `expected` and those `found` (name, shape).
    /// An absent `num_batches_tracked` is no difference.
    pub fn between<'a>(
        arch: &str,
        expected: &BTreeMap<String, ParamSpec>,
        found: impl Iterator<Item = (&'a str, &'a [usize])>,
    ) -> Mismatch {
        let mut m = Mismatch { arch: arch.to_string(), ..Default::default() };
        let mut seen = std::collections::BTreeSet::new();
        for (name, shape) in found {
            match expected.get(name) {
                None => m.unexpected.push((name.to_string(), shape.to_vec())),
                Some(spec) if spec.shape != shape => {
                    m.wrong_shape.push((name.to_string(), spec.shape.clone(), shape.to_vec()))
                }
                Some(_) => {}
            }
            seen.insert(name);
        }
        for (name, spec) in expected {
            if spec.kind != ParamKind::BatchCount && !seen.contains(name.as_str()) {
                m.missing.push((name.clone(), spec.shape.clone()));
            }
        }
        m
    }

    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }

    /// How many differences in all.
    pub fn count(&self) -> usize {
        self.missing.len() + self.unexpected.len() + self.wrong_shape.len()
    }

    /// The counts and at most `max` names of each kind, one a line.
    pub fn listing(&self, max: usize) -> String {
        let mut s = String::new();
        let mut list = |lines: Vec<String>| {
            let n = lines.len();
            for l in lines.into_iter().take(max) {
                s.push_str("\n  ");
                s.push_str(&l);
            }
            if n > max {
                s.push_str(&format!("\n  … and {} more", n - max));
            }
        };
        list(self.missing.iter().map(|(n, sh)| format!("missing     {n} {sh:?}")).collect());
        list(self.unexpected.iter().map(|(n, sh)| format!("unexpected  {n} {sh:?}")).collect());
        list(
            self.wrong_shape
                .iter()
                .map(|(n, want, got)| format!("wrong shape {n}: expected {want:?}, found {got:?}"))
                .collect(),
        );
        s
    }
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

    /// Loads a weights file's bytes (safetensors or a `torch.save` `.pth`, told apart by the
    /// bytes), strictly: see [`Weights::from_file`].
    pub fn from_bytes(
        bytes: &[u8],
        graph: &Graph,
        arch: &str,
        device: &Device,
    ) -> Result<Weights, WeightsError> {
        Self::from_file(&TensorFile::parse(bytes)?, graph, arch, device)
    }

    /// What [`Weights::from_file`] checks before it makes a tensor: the names and shapes are
    /// the graph's, and every element type can be read. Returns the graph's tensors by name.
    pub fn check(
        file: &TensorFile,
        graph: &Graph,
        arch: &str,
    ) -> Result<BTreeMap<String, ParamSpec>, WeightsError> {
        let expected: BTreeMap<String, ParamSpec> =
            graph.param_specs().into_iter().map(|p| (p.name.clone(), p)).collect();
        let mismatch = Mismatch::between(arch, &expected, file.shapes());
        if !mismatch.is_empty() {
            return Err(WeightsError::Mismatch(mismatch));
        }
        for t in &file.tensors {
            let readable = match expected[&t.name].kind {
                ParamKind::BatchCount => matches!(t.dtype, RawDtype::I64 | RawDtype::I32),
                _ => matches!(t.dtype, RawDtype::F32 | RawDtype::F64 | RawDtype::F16 | RawDtype::BF16),
            };
            if !readable {
                return Err(WeightsError::Dtype { name: t.name.clone(), dtype: format!("{:?}", t.dtype) });
            }
        }
        Ok(expected)
    }

    /// The graph's tensors from a parsed file, strictly: every tensor the graph needs, no
    /// other, each with its shape; one error lists every difference. `num_batches_tracked` may
    /// be absent (it does not affect the network).
    pub fn from_file(
        file: &TensorFile,
        graph: &Graph,
        arch: &str,
        device: &Device,
    ) -> Result<Weights, WeightsError> {
        let expected = Self::check(file, graph, arch)?;
        let mut tensors = BTreeMap::new();
        for t in &file.tensors {
            let spec = &expected[&t.name];
            let value = match spec.kind {
                ParamKind::BatchCount => Tensor::new(t.to_i64_scalar()?, device)?,
                _ => Tensor::from_vec(t.to_f32()?, t.shape.clone(), device)?,
            };
            tensors.insert(t.name.clone(), value);
        }
        for (name, spec) in &expected {
            if spec.kind == ParamKind::BatchCount && !tensors.contains_key(name) {
                tensors.insert(name.clone(), Tensor::new(0i64, device)?);
            }
        }
        Ok(Weights { tensors })
    }

    /// Reads a file (native; in the browser pass the bytes to `from_bytes`).
    pub fn load(
        path: &std::path::Path,
        graph: &Graph,
        arch: &str,
        device: &Device,
    ) -> Result<Weights, WeightsError> {
        let bytes = std::fs::read(path)
            .map_err(|e| WeightsError::Io { path: path.display().to_string(), msg: e.to_string() })?;
        Self::from_bytes(&bytes, graph, arch, device)
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
