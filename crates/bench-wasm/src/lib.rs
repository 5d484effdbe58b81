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

/// Where a forward pass spends its time, conv by conv: Candle's conv2d (im2col + gemm + copies)
/// beside a bare matmul of the same GEMM shape (`[out_ch, in_ch·k·k] × [in_ch·k·k, oh·ow]`), so
/// the difference is what the convolution costs beyond the arithmetic. `now()` is a millisecond
/// clock (performance.now in the browser, Instant natively).
pub fn profile_convs(model: &Model, reps: usize, now: &dyn Fn() -> f64) -> candle_core::Result<String> {
    use resnet_core::spec::Op;
    let dev = Device::Cpu;
    let shapes = model.graph.shapes(None).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let time = |f: &dyn Fn() -> candle_core::Result<Tensor>| -> candle_core::Result<f64> {
        f()?;
        let t0 = now();
        for _ in 0..reps {
            f()?;
        }
        Ok((now() - t0) / reps as f64)
    };
    let mut rows = vec![];
    let (mut conv_total, mut gemm_total, mut rowcopy_total) = (0.0, 0.0, 0.0);
    for node in &model.graph.nodes {
        let Op::Conv2d(c) = &node.op else { continue };
        let s = shapes[node.inputs[0]];
        let o = shapes[model.graph.node(&node.name).expect("node exists")];
        let x = Tensor::randn(0f32, 1f32, (1, s.c, s.h, s.w), &dev)?;
        let w = Tensor::randn(0f32, 1f32, (c.out_ch, c.in_ch, c.kernel, c.kernel), &dev)?;
        let a = w.reshape((c.out_ch, c.in_ch * c.kernel * c.kernel))?;
        let b = Tensor::randn(0f32, 1f32, (c.in_ch * c.kernel * c.kernel, o.h * o.w), &dev)?;
        let conv_ms = time(&|| x.conv2d(&w, c.padding, c.stride, 1, 1))?;
        let gemm_ms = time(&|| a.matmul(&b))?;
        let rowcopy_ms = time(&|| resnet_core::kernels::conv::conv2d(&x, &w, c.padding, c.stride))?;
        let macs = (c.out_ch * c.in_ch * c.kernel * c.kernel * o.h * o.w) as f64;
        conv_total += conv_ms;
        gemm_total += gemm_ms;
        rowcopy_total += rowcopy_ms;
        rows.push(format!(
            "{{\"layer\":\"{}\",\"k\":{},\"stride\":{},\"in\":[{},{},{}],\"out\":[{},{},{}],\"conv_ms\":{conv_ms:.4},\"gemm_ms\":{gemm_ms:.4},\"rowcopy_conv_ms\":{rowcopy_ms:.4},\"gemm_gflops\":{:.2}}}",
            node.name, c.kernel, c.stride, s.c, s.h, s.w, o.c, o.h, o.w, 2.0 * macs / (gemm_ms * 1e6)
        ));
    }
    let x =
        Tensor::randn(0f32, 1f32, (1, model.graph.input.c, model.graph.input.h, model.graph.input.w), &dev)?;
    let forward_ms = time(&|| model.forward(&x))?;
    Ok(format!(
        "{{\"forward_ms\":{forward_ms:.4},\"conv_ms\":{conv_total:.4},\"gemm_ms\":{gemm_total:.4},\"rowcopy_conv_ms\":{rowcopy_total:.4},\"layers\":[{}]}}",
        rows.join(",")
    ))
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

#[wasm_bindgen]
impl BenchModel {
    /// [`profile_convs`] in the browser, as JSON.
    pub fn profile(&self, reps: usize) -> Result<String, JsError> {
        profile_convs(&self.model, reps, &performance_now).map_err(js)
    }
}
