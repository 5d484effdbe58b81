//! The page (Trunk builds this binary for wasm32; natively it is a no-op).
fn main() {
    #[cfg(target_arch = "wasm32")]
    resnet_web::start_app();
}
