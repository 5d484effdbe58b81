//! The worker's side: one model, the last run's taps, and the answers the page asks for. Pure
//! Rust on resnet-core, so the native tests run exactly what the browser runs.

use candle_core::{Device, Tensor};
use resnet_core::explain::{layer_responses, residual_stream, Cam, CamMethod, Erf};
use resnet_core::recognise::{recognise, Recognised};
use resnet_core::spec::Op;
use resnet_core::{find_arch, model::softmax, Image, Model, TensorFile, Weights, WeightsSource};

use crate::protocol::{CamMap, FeatureMap, FilterBank, RunResult};

pub struct Engine {
    model: Model,
    /// Every layer's output of the last run (index = node id), kept for `maps`; `taps[0]` is
    /// the input tensor.
    taps: Vec<Tensor>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Engine {
    /// `weights`: safetensors bytes, or `None` for deterministic random weights from `seed`.
    pub fn load(arch: &str, weights: Option<&[u8]>, seed: u64) -> Result<Engine, String> {
        let info = find_arch(arch).map_err(err)?;
        let source = match weights {
            Some(bytes) => WeightsSource::Bytes(bytes),
            None => WeightsSource::Random(seed),
        };
        let engine = Engine { model: Model::load(info, source, &Device::Cpu).map_err(err)?, taps: vec![] };
        engine.warm_up()?;
        Ok(engine)
    }

    /// A user's weights file (a PyTorch `.pth`/`.pt` or safetensors, from its bytes): parsed
    /// once and its architecture recognised — every error a bad file can give comes from this
    /// step, before any tensor is made, so the caller can keep its current model until it
    /// succeeds. [`Engine::from_recognised`] then builds the model.
    pub fn recognise(bytes: &[u8]) -> Result<(TensorFile<'_>, Recognised), String> {
        let file = TensorFile::parse(bytes).map_err(err)?;
        let r = recognise(&file).map_err(err)?;
        Weights::check(&file, &r.graph, r.arch.name).map_err(err)?;
        Ok((file, r))
    }

    /// The model of a recognised file (its f32 tensors: the file's size again, for f32 files).
    pub fn from_recognised(file: &TensorFile, r: Recognised) -> Result<Engine, String> {
        let weights = Weights::from_file(file, &r.graph, r.arch.name, &Device::Cpu).map_err(err)?;
        let engine = Engine { model: Model::new(r.arch, r.graph, weights), taps: vec![] };
        engine.warm_up()?;
        Ok(engine)
    }

    /// One pass on a blank input for nets that take well under a second: folds BatchNorm into
    /// the convs and grows wasm memory now, so the first timed inference is a real one.
    fn warm_up(&self) -> Result<(), String> {
        let g = &self.model.graph;
        if g.summary(None).map_err(err)?.total_macs > 1_000_000_000 {
            return Ok(());
        }
        let x = Tensor::zeros((1, g.input.c, g.input.h, g.input.w), candle_core::DType::F32, &Device::Cpu)
            .map_err(err)?;
        self.model.forward(&x).map_err(err)?;
        Ok(())
    }

    /// The first conv layer's filters.
    pub fn filters(&self) -> Result<Option<FilterBank>, String> {
        let graph = &self.model.graph;
        let Some(node) = graph.nodes.iter().position(|n| matches!(n.op, Op::Conv2d(_))) else {
            return Ok(None);
        };
        let w = self.model.weights.tensor(&format!("{}.weight", graph.nodes[node].name)).map_err(err)?;
        let dims = w.dims();
        let shape = [dims[0], dims[1], dims[2], dims[3]];
        let data = w.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(err)?;
        Ok(Some(FilterBank { node, shape, data }))
    }

    /// Classifies `img` and keeps every layer's output. `clock` gives milliseconds.
    pub fn run(&mut self, img: &Image, job: u32, clock: &dyn Fn() -> f64) -> Result<RunResult, String> {
        let input = self.model.arch.preprocess().prepare(img).map_err(err)?;
        let x = input.tensor(&Device::Cpu).map_err(err)?;
        self.taps.clear(); // free the last run's outputs before computing new ones
                           // The inference, timed node by node (a clock reading per node: microseconds). One timing
                           // is noise: a fast net runs again (up to 5 runs, ~150 ms in all); the page shows the
                           // median, and the layer table the breakdown of the median run, so its rows add up to
                           // no more than the time shown.
        let mut runs: Vec<(f64, Vec<f64>)> = Vec::new();
        let mut logits = None;
        while runs.len() < 5
            && (runs.is_empty() || runs.iter().map(|r| r.0).sum::<f64>() + runs[0].0 <= 150.0)
        {
            let t0 = clock();
            let (out, node_ms) = self.model.forward_timed(&x, clock).map_err(err)?;
            if logits.is_none() {
                logits = Some(out.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(err)?);
            }
            runs.push((clock() - t0, node_ms));
        }
        let logits = logits.unwrap_or_default();
        let inference_runs: Vec<f64> = runs.iter().map(|r| r.0).collect();
        let inference_ms = median(&inference_runs);
        let node_ms = median_run(runs);
        let probs = softmax(&Tensor::new(logits.as_slice(), &Device::Cpu).map_err(err)?)
            .and_then(|t| t.to_vec1())
            .map_err(err)?;
        let t1 = clock();
        let (_, taps) = self.model.forward_taps(&x).map_err(err)?;
        let taps_ms = clock() - t1;
        let blocks = residual_stream(&self.model.graph, &taps).map_err(err)?;
        let responses = layer_responses(&self.model.graph, &taps).map_err(err)?;
        self.taps = taps;
        Ok(RunResult {
            job,
            side: input.side as u32,
            view: input.view,
            logits,
            probs,
            inference_ms,
            inference_runs,
            node_ms,
            taps_ms,
            threads: resnet_core::kernels::threads() as u32,
            instructions: resnet_core::kernels::instructions().to_string(),
            blocks,
            responses,
            memory: 0.0,
        })
    }

    /// Outputs of `nodes` from the last run.
    pub fn maps(&self, nodes: &[usize]) -> Result<Vec<FeatureMap>, String> {
        nodes
            .iter()
            .map(|&node| {
                let t = self.taps.get(node).ok_or("no image has been run yet")?;
                let dims = t.dims();
                let shape = match dims.len() {
                    4 => [dims[1], dims[2], dims[3]],
                    2 => [dims[1], 1, 1],
                    _ => return Err(format!("layer {node}: unexpected output shape {dims:?}")),
                };
                let data = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(err)?;
                Ok(FeatureMap { node, shape, data })
            })
            .collect()
    }

    /// The class activation map of `layer` on the last run's image (see [`Model::cam`]).
    pub fn cam(
        &self,
        layer: usize,
        class: Option<usize>,
        method: CamMethod,
        clock: &dyn Fn() -> f64,
    ) -> Result<CamMap, String> {
        if self.taps.is_empty() {
            return Err("no image has been run yet".into());
        }
        let t0 = clock();
        let cam = self.model.cam_from_taps(&self.taps, layer, class, method).map_err(err)?;
        let ms = clock() - t0;
        let Cam { layer, class, method, height, width, values } = cam;
        Ok(CamMap { layer, class, method, height, width, values, ms })
    }

    /// The effective receptive field of unit (`channel`, `y`, `x`) of `layer` on the last run's
    /// image (see [`Model::effective_rf`]), with the time it took.
    pub fn erf(
        &self,
        layer: usize,
        channel: usize,
        y: usize,
        x: usize,
        clock: &dyn Fn() -> f64,
    ) -> Result<(Erf, f64), String> {
        let input = self.taps.first().ok_or("no image has been run yet")?;
        if layer == 0 || layer >= self.taps.len() {
            return Err(format!("no layer {layer}"));
        }
        let t0 = clock();
        let erf = self.model.effective_rf(input, layer, channel, y, x).map_err(err)?;
        Ok((erf, clock() - t0))
    }

    pub fn graph(&self) -> &resnet_core::Graph {
        &self.model.graph
    }
}

/// The middle value (the mean of the middle two for an even count).
/// The breakdown of the run at the (lower) median: its total is at most [`median`]'s.
fn median_run(mut runs: Vec<(f64, Vec<f64>)>) -> Vec<f64> {
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    match runs.len() {
        0 => Vec::new(),
        n => runs.swap_remove((n - 1) / 2).1,
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod median_tests {
    #[test]
    fn the_median_is_the_middle_run() {
        assert_eq!(super::median(&[30.0, 90.0, 31.0]), 31.0);
        assert_eq!(super::median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(super::median(&[7.0]), 7.0);
    }

    #[test]
    fn the_breakdown_shown_is_of_a_run_no_slower_than_the_median() {
        let runs = |totals: &[f64]| totals.iter().map(|&t| (t, vec![t / 2.0, t / 2.0])).collect::<Vec<_>>();
        for totals in [&[9.0, 5.0, 7.0][..], &[8.0, 2.0, 6.0, 4.0], &[3.0]] {
            let shown: f64 = super::median_run(runs(totals)).iter().sum();
            assert!(totals.contains(&shown) && shown <= super::median(totals), "{totals:?}: {shown}");
        }
        assert_eq!(super::median_run(runs(&[9.0, 5.0, 7.0])), vec![3.5, 3.5]);
        assert!(super::median_run(Vec::new()).is_empty());
    }
}
