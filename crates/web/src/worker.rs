//! The inference worker: owns the model and the last run's taps, answers one request at a time.
//! The page never blocks on inference, and only the layers it shows cross the boundary.

use gloo::worker::{HandlerId, Registrable, Worker, WorkerScope};
use resnet_core::Image;
use wasm_bindgen::JsCast;

use crate::engine::Engine;
use crate::protocol::{Request, Response};

/// Where the worker's panic hook reports (the page listens and shows it in the error banner).
pub const PANIC_CHANNEL: &str = "resnet-explorer-worker-panic";

pub struct InferenceWorker {
    engine: Option<Engine>,
}

fn now() -> f64 {
    js_sys::global()
        .dyn_into::<web_sys::WorkerGlobalScope>()
        .ok()
        .and_then(|g| g.performance())
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

impl InferenceWorker {
    fn handle(&mut self, msg: Request) -> Response {
        match msg {
            Request::Load { job, arch, weights, seed } => {
                self.engine = None; // free the old model first: big nets need the memory
                let t0 = now();
                let loaded =
                    Engine::load(&arch, weights.as_deref(), seed).and_then(|e| e.filters().map(|f| (e, f)));
                match loaded {
                    Ok((engine, filters)) => {
                        self.engine = Some(engine);
                        Response::Loaded { job, filters, ms: now() - t0 }
                    }
                    Err(message) => {
                        Response::Error { job, message: format!("cannot load {arch}: {message}") }
                    }
                }
            }
            Request::Run { job, width, height, rgba } => {
                let Some(engine) = self.engine.as_mut() else {
                    return Response::Error { job, message: "no model is loaded".into() };
                };
                let img = Image { width: width as usize, height: height as usize, channels: 4, data: &rgba };
                match engine.run(&img, job, &now) {
                    Ok(r) => Response::Ran(r),
                    Err(message) => Response::Error { job, message: format!("inference failed: {message}") },
                }
            }
            Request::Maps { job, nodes } => match self.engine.as_ref().map(|e| e.maps(&nodes)) {
                Some(Ok(maps)) => Response::Maps { job, maps },
                Some(Err(message)) => Response::Error { job, message },
                None => Response::Error { job, message: "no model is loaded".into() },
            },
            Request::Cam { job, layer, class, method } => {
                match self.engine.as_ref().map(|e| e.cam(layer, class, method, &now)) {
                    Some(Ok(cam)) => Response::Cam { job, cam },
                    Some(Err(message)) => Response::Error { job, message: format!("Grad-CAM: {message}") },
                    None => Response::Error { job, message: "no model is loaded".into() },
                }
            }
            Request::Erf { job, layer, channel, y, x } => {
                match self.engine.as_ref().map(|e| e.erf(layer, channel, y, x, &now)) {
                    Some(Ok((erf, ms))) => Response::Erf { job, erf, ms },
                    Some(Err(message)) => {
                        Response::Error { job, message: format!("effective receptive field: {message}") }
                    }
                    None => Response::Error { job, message: "no model is loaded".into() },
                }
            }
        }
    }
}

impl Worker for InferenceWorker {
    type Message = ();
    type Input = Request;
    type Output = Response;

    fn create(_scope: &WorkerScope<Self>) -> Self {
        std::panic::set_hook(Box::new(|info| {
            // Not the console: the page shows it in its error banner and restarts the worker.
            if let Ok(ch) = web_sys::BroadcastChannel::new(PANIC_CHANNEL) {
                let _ = ch.post_message(&info.to_string().into());
            }
        }));
        InferenceWorker { engine: None }
    }

    fn update(&mut self, _scope: &WorkerScope<Self>, _msg: ()) {}

    fn received(&mut self, scope: &WorkerScope<Self>, msg: Request, id: HandlerId) {
        scope.respond(id, self.handle(msg));
    }
}

pub fn register() {
    InferenceWorker::registrar().register();
}
