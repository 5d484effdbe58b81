//! Fast paths for inference on the CPU (native and wasm32). Each is tested against the plain
//! Candle forward (`Model::forward_reference`, max abs diff ≤ 1e-4).

pub mod conv;
