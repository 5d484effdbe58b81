//! The inference worker (Trunk builds it as a module worker; natively it is a no-op).
fn main() {
    #[cfg(target_arch = "wasm32")]
    resnet_web::worker::register();
}
