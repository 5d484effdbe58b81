//! Helpers shared by the integration tests.

use candle_core::{Device, Tensor};
use resnet_core::Model;

/// Gives every BatchNorm non-trivial running statistics (means and variances in 0.5..1.5), so
/// that folding them into the convs has something to fold.
pub fn vary_running_stats(model: &mut Model, dev: &Device) {
    for (i, p) in model.graph.param_specs().iter().enumerate() {
        if p.name.ends_with("running_mean") || p.name.ends_with("running_var") {
            let n = p.shape[0];
            let v: Vec<f32> = (0..n).map(|j| 0.5 + ((i * 31 + j * 17) % 13) as f32 / 13.0).collect();
            model.weights.insert(p.name.clone(), Tensor::from_vec(v, n, dev).unwrap());
        }
    }
}
