//! The inference worker: owns the model and the last run's taps, answers one request at a time.
//! The page never blocks on inference, and only the layers it shows cross the boundary.

use std::collections::VecDeque;

use gloo::events::EventListener;
use gloo::timers::callback::Timeout;
use gloo::worker::{HandlerId, Registrable, Worker, WorkerScope};
use resnet_core::Image;
use wasm_bindgen::JsCast;
use web_sys::{BroadcastChannel, File, FileReaderSync};

use crate::engine::Engine;
use crate::protocol::{
    map_messages, Request, Response, RunResult, WeightsFileMessage, MAP_PART, WEIGHTS_CHANNEL,
};

/// Where the worker's panic hook reports (the page listens and shows it in the error banner).
pub const PANIC_CHANNEL: &str = "resnet-explorer-worker-panic";

pub struct InferenceWorker {
    engine: Option<Engine>,
    /// Weights files posted on [`WEIGHTS_CHANNEL`], by token, the latest last (a few at most).
    files: VecDeque<(u64, File)>,
    /// A `LoadFile` whose file has not arrived yet: job, token, who asked.
    waiting: Option<(u32, u64, HandlerId)>,
    /// Gives up on the waiting `LoadFile` if its file never comes.
    overdue: Option<Timeout>,
    _channel: Option<(BroadcastChannel, EventListener)>,
}

/// What the worker hears besides the page's requests.
pub enum Event {
    /// A weights file arrived on [`WEIGHTS_CHANNEL`].
    FileArrived { token: u64, file: File },
    /// The file of `LoadFile` `job` has not come within [`FILE_LATE_MS`]: ask the page again.
    FileLate { job: u32 },
    /// Nor within [`FILE_WAIT_MS`]: give up.
    FileOverdue { job: u32 },
}

/// The page posts the file just before the request, so it is normally here at once; a worker
/// still starting up when it was posted (the gloo bridge queues requests, a broadcast channel
/// does not) asks for it again after this long.
const FILE_LATE_MS: u32 = 1_000;
/// How long a `LoadFile` waits for its file in all: longer only where the browser cannot pass
/// a `File` to a worker.
const FILE_WAIT_MS: u32 = 10_000;

/// The largest weights file the worker reads: VGG-19, the zoo's largest, is 548 MB, and a
/// model needs the file and its tensors at once in wasm32's 4 GiB.
const MAX_FILE_BYTES: f64 = 1024.0 * 1024.0 * 1024.0;
/// Bytes read per step: the worker's JS heap holds one step at a time, never the whole file.
const CHUNK: f64 = 16.0 * 1024.0 * 1024.0;
/// From this size on, the current model is freed before the new one's tensors are made (a
/// failure then can only be running out of memory; every check of the file came before).
const BIG_FILE: usize = 256 << 20;

fn js_error(e: wasm_bindgen::JsValue) -> String {
    e.as_string()
        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// The whole file in wasm memory, read `CHUNK` bytes at a time (`progress` after each).
fn read_file(file: &File, progress: impl Fn(f64)) -> Result<Vec<u8>, String> {
    let total = file.size();
    if total > MAX_FILE_BYTES {
        return Err(format!(
            "{:.0} MB is more than the explorer reads ({:.0} MB; VGG-19's weights are 548 MB)",
            total / 1e6,
            MAX_FILE_BYTES / 1e6
        ));
    }
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(total as usize)
        .map_err(|_| format!("not enough memory for a {:.0} MB file", total / 1e6))?;
    let reader = FileReaderSync::new().map_err(js_error)?;
    let mut at = 0.0;
    while at < total {
        let end = (at + CHUNK).min(total);
        let blob = file.slice_with_f64_and_f64(at, end).map_err(js_error)?;
        let chunk = js_sys::Uint8Array::new(&reader.read_as_array_buffer(&blob).map_err(js_error)?.into());
        if chunk.length() as f64 != end - at {
            return Err("the file changed while it was read".into());
        }
        let start = bytes.len();
        bytes.resize(start + chunk.length() as usize, 0);
        chunk.copy_to(&mut bytes[start..]);
        at = end;
        progress(at);
    }
    Ok(bytes)
}

/// The size of this worker's WebAssembly memory.
fn memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .map(|m| m.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as f64)
        .unwrap_or(0.0)
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
    /// Reads, recognises and loads the file; the current model stays unless it all succeeds
    /// (for files over [`BIG_FILE`], unless every check of the file succeeds).
    fn load_file(&mut self, scope: &WorkerScope<Self>, id: HandlerId, job: u32, file: &File) -> Response {
        let t0 = now();
        let name = file.name();
        let total = file.size();
        let bytes = match read_file(file, |done| scope.respond(id, Response::Reading { job, done, total })) {
            Ok(b) => b,
            Err(message) => {
                return Response::Error { job, message: format!("cannot read {name}: {message}") }
            }
        };
        let (parsed, recognised) = match Engine::recognise(&bytes) {
            Ok(r) => r,
            Err(message) => {
                return Response::Error { job, message: format!("cannot load {name}: {message}") }
            }
        };
        let arch = recognised.arch.name.to_string();
        let shortcut_b = recognised.shortcut == Some(resnet_core::ShortcutOption::B);
        let note = recognised.note.clone();
        if bytes.len() >= BIG_FILE {
            self.engine = None;
        }
        match Engine::from_recognised(&parsed, recognised).and_then(|e| e.filters().map(|f| (e, f))) {
            Ok((engine, filters)) => {
                self.engine = Some(engine);
                Response::LoadedFile {
                    job,
                    arch,
                    shortcut_b,
                    note,
                    filters,
                    ms: now() - t0,
                    memory: memory_bytes(),
                }
            }
            Err(message) => {
                Response::Error { job, message: format!("cannot load {name} as {arch}: {message}") }
            }
        }
    }

    /// Answers the `LoadFile` waiting for `token`'s file, if both are here.
    fn try_load_file(&mut self, scope: &WorkerScope<Self>) {
        let Some((job, token, id)) = self.waiting else { return };
        let Some(i) = self.files.iter().position(|(t, _)| *t == token) else { return };
        self.waiting = None;
        self.overdue = None;
        let (_, file) = self.files.remove(i).expect("found above");
        let response = self.load_file(scope, id, job, &file);
        scope.respond(id, response);
    }

    fn handle(&mut self, msg: Request) -> Response {
        match msg {
            Request::LoadFile { job, .. } => {
                Response::Error { job, message: "a weights file is loaded by `received`".into() }
            }
            Request::Load { job, arch, weights, seed } => {
                self.engine = None; // free the old model first: big nets need the memory
                let t0 = now();
                let loaded =
                    Engine::load(&arch, weights.as_deref(), seed).and_then(|e| e.filters().map(|f| (e, f)));
                match loaded {
                    Ok((engine, filters)) => {
                        self.engine = Some(engine);
                        Response::Loaded { job, filters, ms: now() - t0, memory: memory_bytes() }
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
                    Ok(r) => Response::Ran(RunResult { memory: memory_bytes(), ..r }),
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
    type Message = Event;
    type Input = Request;
    type Output = Response;

    fn create(scope: &WorkerScope<Self>) -> Self {
        std::panic::set_hook(Box::new(|info| {
            // Not the console: the page shows it in its error banner and restarts the worker.
            if let Ok(ch) = web_sys::BroadcastChannel::new(PANIC_CHANNEL) {
                let _ = ch.post_message(&info.to_string().into());
            }
        }));
        // The page's weights files: `{ token, file }` objects, the `File` a handle to the bytes.
        let channel = BroadcastChannel::new(WEIGHTS_CHANNEL).ok().map(|ch| {
            let scope = scope.clone();
            let listener = EventListener::new(&ch, "message", move |e| {
                let Some(data) = e.dyn_ref::<web_sys::MessageEvent>().map(|m| m.data()) else { return };
                let get = |key: &str| js_sys::Reflect::get(&data, &key.into()).ok();
                let token = get(WeightsFileMessage::TOKEN).and_then(|v| v.as_f64());
                let file = get(WeightsFileMessage::FILE).and_then(|v| v.dyn_into::<File>().ok());
                if let (Some(token), Some(file)) = (token, file) {
                    scope.send_message(Event::FileArrived { token: token as u64, file });
                }
            });
            (ch, listener)
        });
        InferenceWorker {
            engine: None,
            files: VecDeque::new(),
            waiting: None,
            overdue: None,
            _channel: channel,
        }
    }

    fn update(&mut self, scope: &WorkerScope<Self>, msg: Event) {
        match msg {
            Event::FileArrived { token, file } => {
                // Every tab's worker hears the channel: keep only the last few (handles, not bytes).
                if self.files.len() >= 4 {
                    self.files.pop_front();
                }
                self.files.push_back((token, file));
                self.try_load_file(scope);
            }
            Event::FileLate { job } => {
                let Some((_, _, id)) = self.waiting.filter(|(j, ..)| *j == job) else { return };
                scope.respond(id, Response::FileLate { job });
                let scope = scope.clone();
                self.overdue = Some(Timeout::new(FILE_WAIT_MS - FILE_LATE_MS, move || {
                    scope.send_message(Event::FileOverdue { job })
                }));
            }
            Event::FileOverdue { job } => {
                let Some((_, _, id)) = self.waiting.take_if(|(j, ..)| *j == job) else { return };
                self.overdue = None;
                let message = format!(
                    "the weights file did not reach the inference worker within {} s: this browser may not pass files to workers; try another browser",
                    FILE_WAIT_MS / 1000
                );
                scope.respond(id, Response::Error { job, message });
            }
        }
    }

    fn received(&mut self, scope: &WorkerScope<Self>, msg: Request, id: HandlerId) {
        match msg {
            // The file and this request come on different channels, in either order.
            Request::LoadFile { job, token } => {
                self.waiting = Some((job, token, id));
                self.try_load_file(scope);
                if self.waiting.is_some() {
                    let scope = scope.clone();
                    self.overdue =
                        Some(Timeout::new(FILE_LATE_MS, move || scope.send_message(Event::FileLate { job })));
                }
            }
            // A message a map, a large one in parts: the page decodes each in a task of its
            // own (a resnet50 block's six 3 MB maps in one message held it 110–160 ms).
            Request::Maps { job, nodes } => {
                for node in nodes {
                    match self.handle(Request::Maps { job, nodes: vec![node] }) {
                        Response::Maps { maps, .. } => maps
                            .into_iter()
                            .flat_map(|m| map_messages(job, m, MAP_PART))
                            .for_each(|r| scope.respond(id, r)),
                        other => scope.respond(id, other),
                    }
                }
            }
            msg => scope.respond(id, self.handle(msg)),
        }
    }
}

pub fn register() {
    InferenceWorker::registrar().register();
}
