//! resnet-core in the browser for `bench/run`: a model, an input, and loops of forward passes
//! that stay inside wasm so the page's timer measures our code, not the JS boundary.

use candle_core::{Device, Tensor};
use resnet_core::{find_arch, Model, Weights};
use wasm_bindgen::prelude::*;

fn js(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// Turns gemm's wasm simd128 kernels on or off (off by default in gemm 0.19). Takes effect on
/// the next matmul.
#[wasm_bindgen(js_name = setGemmSimd128)]
pub fn set_gemm_simd128(on: bool) {
    gemm_common::set_wasm_simd128(on);
}

#[wasm_bindgen(js_name = gemmSimd128)]
pub fn gemm_simd128() -> bool {
    gemm_common::get_wasm_simd128()
}

#[wasm_bindgen]
pub struct BenchModel {
    model: Model,
    input: Option<Tensor>,
}

#[wasm_bindgen]
impl BenchModel {
    /// `arch` from the zoo; `weights` a safetensors file's bytes, or random weights (seed 0).
    #[wasm_bindgen(constructor)]
    pub fn new(arch: &str, weights: Option<Vec<u8>>) -> Result<BenchModel, JsError> {
        let arch = find_arch(arch).map_err(js)?;
        let device = Device::Cpu;
        let model = match weights {
            Some(bytes) => {
                let graph = arch.graph();
                let w = Weights::from_safetensors(&bytes, &graph, arch.name, &device).map_err(js)?;
                Model::new(arch, graph, w)
            }
            None => Model::random(arch, 0, &device).map_err(js)?,
        };
        Ok(BenchModel { model, input: None })
    }

    /// The input batch, NCHW, of the model's own input size.
    #[wasm_bindgen(js_name = setInput)]
    pub fn set_input(&mut self, data: &[f32], batch: usize) -> Result<(), JsError> {
        let s = self.model.graph.input;
        let x = Tensor::from_slice(data, (batch, s.c, s.h, s.w), &Device::Cpu).map_err(js)?;
        self.input = Some(x);
        Ok(())
    }

    fn x(&self) -> Result<&Tensor, JsError> {
        self.input.as_ref().ok_or_else(|| JsError::new("setInput first"))
    }

    /// Logits of the fast path (BatchNorm folded), flattened.
    pub fn logits(&self) -> Result<Vec<f32>, JsError> {
        self.model.forward(self.x()?).and_then(|t| t.flatten_all()?.to_vec1()).map_err(js)
    }

    /// Runs `n` forward passes; with `taps`, every layer's output is kept (the explorer's
    /// activation maps). Returns the number of tensors the last pass produced.
    pub fn run(&self, n: u32, taps: bool) -> Result<usize, JsError> {
        let x = self.x()?;
        let mut produced = 0;
        for _ in 0..n {
            produced = if taps {
                self.model.forward_taps(x).map_err(js)?.1.len()
            } else {
                self.model.forward(x).map_err(js)?;
                1
            };
        }
        Ok(produced)
    }

    /// Multiply-accumulates of one sample (for GFLOP/s).
    pub fn macs(&self) -> Result<f64, JsError> {
        Ok(self.model.graph.summary(None).map_err(js)?.total_macs as f64)
    }
}

/// Which part of the fast path a node runs on, for the profile's groups.
fn kind(op: &resnet_core::spec::Op) -> &'static str {
    use resnet_core::kernels::conv::ConvPath;
    use resnet_core::spec::Op;
    match op {
        Op::Conv2d(c) => match ConvPath::of(c.kernel, c.stride, c.padding) {
            ConvPath::Winograd => "conv_winograd",
            ConvPath::Pointwise => "conv_1x1",
            ConvPath::Im2col => "conv_im2col",
        },
        Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::AdaptiveAvgPool2d { .. } => "pooling",
        Op::BatchNorm2d { .. } | Op::Relu | Op::Add | Op::ShortcutA { .. } => "bn_relu_add",
        Op::Linear { .. } => "linear",
        _ => "other",
    }
}

/// Where an inference spends its time: [`Model::forward`] timed node by node
/// ([`Model::forward_timed`]), the median of `reps` passes per node, grouped by kernel. A conv's
/// time includes the BatchNorm, residual add and ReLU fused into it. `conv_gflops` counts a
/// conv's direct multiply-adds (2·MACs), so Winograd's saving shows as a higher rate. `now()` is
/// a millisecond clock (performance.now in the browser, Instant natively).
pub fn profile_forward(model: &Model, reps: usize, now: &dyn Fn() -> f64) -> candle_core::Result<String> {
    use resnet_core::spec::Op;
    let dev = Device::Cpu;
    let g = &model.graph;
    let x = Tensor::randn(0f32, 1f32, (1, g.input.c, g.input.h, g.input.w), &dev)?;
    model.forward(&x)?;
    let reps = reps.max(1);
    let mut per_node = vec![vec![]; g.nodes.len()];
    let mut totals = vec![];
    for _ in 0..reps {
        let t0 = now();
        let (_, ms) = model.forward_timed(&x, now)?;
        totals.push(now() - t0);
        for (v, t) in per_node.iter_mut().zip(ms) {
            v.push(t);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let summary = g.summary(None).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let mut groups: Vec<(&str, f64)> = vec![];
    let (mut conv_ms, mut conv_macs) = (0.0, 0u64);
    let mut layers = vec![];
    for (i, node) in g.nodes.iter().enumerate().skip(1) {
        let ms = median(&mut per_node[i]);
        let k = kind(&node.op);
        match groups.iter_mut().find(|(name, _)| *name == k) {
            Some((_, t)) => *t += ms,
            None => groups.push((k, ms)),
        }
        if let Op::Conv2d(_) = node.op {
            conv_ms += ms;
            conv_macs += summary.layers.iter().find(|r| r.name == node.name).map_or(0, |r| r.macs);
        }
        layers.push(format!("{{\"layer\":\"{}\",\"kind\":\"{k}\",\"ms\":{ms:.4}}}", node.name));
    }
    let groups: Vec<String> = groups.iter().map(|(k, t)| format!("\"{k}\":{t:.4}")).collect();
    Ok(format!(
        "{{\"forward_ms\":{:.4},\"by_kind\":{{{}}},\"conv_ms\":{conv_ms:.4},\"conv_gflops\":{:.2},\"layers\":[{}]}}",
        median(&mut totals),
        groups.join(","),
        2.0 * conv_macs as f64 / (conv_ms.max(1e-9) * 1e6),
        layers.join(",")
    ))
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

#[wasm_bindgen]
impl BenchModel {
    /// [`profile_forward`] in the browser, as JSON.
    pub fn profile(&self, reps: usize) -> Result<String, JsError> {
        profile_forward(&self.model, reps, &performance_now).map_err(js)
    }
}
