//! resnet-core in the browser for `bench/run`: a model, an input, and loops of forward passes
//! that stay inside wasm so the page's timer measures our code, not the JS boundary.

use candle_core::{Device, Tensor};
use resnet_core::explain::CamMethod;
use resnet_core::{find_arch, Model, WeightsSource};
use wasm_bindgen::prelude::*;

/// The threaded build's pool (`initThreadPool(n)`, awaited by the page before any model runs).
#[cfg(all(target_arch = "wasm32", feature = "threads"))]
pub use wasm_bindgen_rayon::init_thread_pool;

/// The threads the forward pass runs on (1 in the build without threads).
#[wasm_bindgen]
pub fn threads() -> usize {
    resnet_core::kernels::threads()
}

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
    /// Every layer's output on the input, for `camBackward`.
    taps: Vec<Tensor>,
}

#[wasm_bindgen]
impl BenchModel {
    /// `arch` from the zoo; `weights` a safetensors file's bytes, or random weights (seed 0).
    #[wasm_bindgen(constructor)]
    pub fn new(arch: &str, weights: Option<Vec<u8>>) -> Result<BenchModel, JsError> {
        let arch = find_arch(arch).map_err(js)?;
        let device = Device::Cpu;
        let source = match &weights {
            Some(bytes) => WeightsSource::Bytes(bytes),
            None => WeightsSource::Random(0),
        };
        let model = Model::load(arch, source, &device).map_err(js)?;
        Ok(BenchModel { model, input: None, taps: vec![] })
    }

    /// The input batch, NCHW, of the model's own input size.
    #[wasm_bindgen(js_name = setInput)]
    pub fn set_input(&mut self, data: &[f32], batch: usize) -> Result<(), JsError> {
        let s = self.model.graph.input;
        let x = Tensor::from_slice(data, (batch, s.c, s.h, s.w), &Device::Cpu).map_err(js)?;
        self.input = Some(x);
        self.taps.clear();
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

    /// Runs `n` Grad-CAMs as the explorer makes one for a new image: the pass that keeps every
    /// layer's output, then the gradient of the top class from the last block's output.
    /// Returns the map's size (h·w).
    pub fn cam(&self, n: u32) -> Result<usize, JsError> {
        let x = self.x()?;
        let mut size = 0;
        for _ in 0..n {
            let (_, taps) = self.model.forward_taps(x).map_err(js)?;
            size = self.cam_of(&taps)?;
        }
        Ok(size)
    }

    /// Runs `n` Grad-CAMs from the taps of one pass made once (what the page computes when
    /// the class or the method changes): the backward alone.
    #[wasm_bindgen(js_name = camBackward)]
    pub fn cam_backward(&mut self, n: u32) -> Result<usize, JsError> {
        if self.taps.is_empty() {
            self.taps = self.model.forward_taps(self.x()?).map_err(js)?.1;
        }
        let mut size = 0;
        for _ in 0..n {
            size = self.cam_of(&self.taps)?;
        }
        Ok(size)
    }

    fn cam_of(&self, taps: &[Tensor]) -> Result<usize, JsError> {
        let layer = self.model.graph.default_cam_layer().ok_or_else(|| JsError::new("no spatial layer"))?;
        let cam = self.model.cam_from_taps(taps, layer, None, CamMethod::GradCam).map_err(js)?;
        Ok(cam.values.len())
    }

    /// Multiply-accumulates of one sample (for GFLOP/s).
    pub fn macs(&self) -> Result<f64, JsError> {
        Ok(self.model.graph.summary(None).map_err(js)?.total_macs as f64)
    }
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

#[wasm_bindgen]
impl BenchModel {
    /// [`resnet_core::profile::profile_forward`] in the browser, as JSON.
    pub fn profile(&self, reps: usize) -> Result<String, JsError> {
        let p = resnet_core::profile::profile_forward(&self.model, reps, &performance_now).map_err(js)?;
        serde_json::to_string(&p).map_err(js)
    }

    /// [`resnet_core::profile::kernel_choices`] in the browser (`min_ms` per conv shape), as JSON.
    pub fn kernel_choices(&self, min_ms: f64) -> Result<String, JsError> {
        let c = resnet_core::profile::kernel_choices(&self.model, min_ms, &performance_now).map_err(js)?;
        serde_json::to_string(&c).map_err(js)
    }
}
