//! The page's state, all in one place: which model, which image, the last run's results, the
//! selected layer and the error banner. Panels get what they show as props and report clicks
//! back as messages; the worker does the computing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use gloo::events::{EventListener, EventListenerOptions};
use gloo::render::{request_animation_frame, AnimationFrame};
use gloo::timers::callback::Timeout;
use gloo::worker::{Spawnable, WorkerBridge};
use resnet_core::spec::{BlockKind, Graph, Op};
use resnet_core::{find_arch, ArchInfo, Summary, ZOO};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, DragEvent, File, HtmlImageElement};
use yew::prelude::*;

use crate::components::activations::Activations;
use crate::components::diagram::Diagram;
use crate::components::drop_zone::DropZone;
use crate::components::filters::Filters;
use crate::components::layer_table::LayerTable;
use crate::components::prediction::Prediction;
use crate::components::Shared;
use crate::decode::{decode_blob, decode_img, Decoded};
use crate::protocol::{FeatureMap, FilterBank, Request, Response, RunResult};
use crate::worker::{InferenceWorker, PANIC_CHANNEL};

/// Pretrained weights shipped in `www/weights/`.
pub const PRETRAINED: [(&str, &str); 2] = [
    ("cifar-resnet20", "weights/cifar10-resnet20.safetensors"),
    ("cifar-resnet56", "weights/cifar10-resnet56.safetensors"),
];
const DEFAULT_ARCH: &str = "cifar-resnet20";
/// Random weights are the same for everyone (and equal to the CLI's with the same seed).
const SEED: u64 = 0;

thread_local! {
    /// Where a panic on the page goes: the error banner.
    static PANIC_SINK: RefCell<Option<Callback<String>>> = const { RefCell::new(None) };
}

pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = format!("internal error: {info}");
        let sink = PANIC_SINK.with(|s| s.borrow().clone());
        if let Some(cb) = sink {
            cb.emit(msg);
        }
    }));
}

pub fn weights_url(arch: &str) -> Option<&'static str> {
    PRETRAINED.iter().find(|(a, _)| *a == arch).map(|(_, url)| *url)
}

#[derive(Clone, Debug, PartialEq)]
pub enum LoadState {
    Fetching { done: f64, total: Option<f64> },
    Building,
    Ready { ms: f64 },
    Failed,
}

pub enum Msg {
    SelectModel(String),
    Fetched {
        job: u32,
        result: Result<Vec<u8>, String>,
    },
    Progress {
        job: u32,
        done: f64,
        total: Option<f64>,
    },
    Worker(Response),
    /// The frame showing a new prediction is on screen: time to fetch and draw the maps.
    Painted,
    WorkerPanicked(String),
    File(File),
    Sample(HtmlImageElement, String),
    Decoded(Result<Decoded, String>),
    SelectLayer(usize),
    Error(String),
    DismissError,
}

/// Everything about the current model that the panels draw from (one source: the core's graph).
pub struct ModelView {
    pub arch: &'static ArchInfo,
    pub trained: bool,
    pub graph: Shared<Graph>,
    pub summary: Shared<Summary>,
}

pub struct App {
    worker: WorkerBridge<InferenceWorker>,
    model: ModelView,
    load: LoadState,
    /// Job of the current model's `Load`; answers to older ones are dropped.
    load_job: u32,
    /// Job of the current image's `Run`.
    run_job: u32,
    next_job: u32,
    image: Option<Decoded>,
    /// A decode in flight: the previous image stays until it succeeds.
    decoding: bool,
    running: bool,
    filters: Option<Rc<FilterBank>>,
    result: Option<Rc<RunResult>>,
    maps: HashMap<usize, Rc<FeatureMap>>,
    requested: Vec<usize>,
    selected: usize,
    error: Option<String>,
    /// Asks for the activation maps once the prediction has been painted.
    maps_after_paint: Option<AnimationFrame>,
    _listeners: Vec<EventListener>,
    _panic_channel: Option<(web_sys::BroadcastChannel, gloo::events::EventListener)>,
}

fn spawn_worker(link: &html::Scope<App>) -> WorkerBridge<InferenceWorker> {
    let cb = link.callback(Msg::Worker);
    InferenceWorker::spawner().callback(move |r| cb.emit(r)).spawn("./worker.js")
}

/// The layer shown first: the output of the first residual block (or the first ReLU).
fn default_layer(graph: &Graph) -> usize {
    if let Some(b) = graph.blocks.first() {
        return b.output;
    }
    graph.nodes.iter().position(|n| matches!(n.op, Op::Relu | Op::Tanh)).unwrap_or(1.min(graph.output()))
}

fn model_view(arch: &'static ArchInfo) -> ModelView {
    let graph = arch.graph();
    let summary = graph.summary(None).expect("every architecture of the zoo fits its own input");
    ModelView {
        arch,
        trained: weights_url(arch.name).is_some(),
        graph: Shared(Rc::new(graph)),
        summary: Shared(Rc::new(summary)),
    }
}

impl App {
    fn start_load(&mut self, ctx: &Context<Self>) {
        self.next_job += 1;
        self.load_job = self.next_job;
        self.filters = None;
        self.result = None;
        self.maps.clear();
        self.requested.clear();
        let job = self.load_job;
        let arch = self.model.arch.name.to_string();
        match weights_url(&arch) {
            Some(url) => {
                self.load = LoadState::Fetching { done: 0.0, total: None };
                let link = ctx.link().clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let progress = {
                        let link = link.clone();
                        move |done, total| link.send_message(Msg::Progress { job, done, total })
                    };
                    let result = fetch_with_progress(url, progress).await;
                    link.send_message(Msg::Fetched { job, result });
                });
            }
            None => {
                self.load = LoadState::Building;
                self.worker.send(Request::Load { job, arch, weights: None, seed: SEED });
            }
        }
    }

    fn start_run(&mut self) {
        let (Some(img), LoadState::Ready { .. }) = (&self.image, &self.load) else { return };
        self.next_job += 1;
        self.run_job = self.next_job;
        self.running = true;
        self.maps.clear();
        self.requested.clear();
        self.worker.send(Request::Run {
            job: self.run_job,
            width: img.width,
            height: img.height,
            rgba: img.rgba.as_ref().clone(),
        });
    }

    /// The layers the activation panel needs: the selection, and for a residual block its x,
    /// F(x), shortcut and sum.
    fn wanted_layers(&self) -> Vec<usize> {
        let g = &self.model.graph;
        let mut nodes = vec![self.selected];
        if let Some(b) = g.nodes[self.selected].block.map(|b| &g.blocks[b]) {
            if b.kind != BlockKind::Inception {
                nodes.push(b.input);
                nodes.extend(b.residual);
                nodes.extend(b.shortcut_nodes.last());
                nodes.extend(b.add);
                nodes.push(b.output);
            }
        }
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    fn request_maps(&mut self) {
        if self.result.is_none() || self.running {
            return;
        }
        let missing: Vec<usize> = self
            .wanted_layers()
            .into_iter()
            .filter(|n| !self.maps.contains_key(n) && !self.requested.contains(n))
            .collect();
        if !missing.is_empty() {
            self.requested.extend(&missing);
            self.worker.send(Request::Maps { job: self.run_job, nodes: missing });
        }
    }
}

/// GET `url` reading the body chunk by chunk, reporting bytes done (and the total when known).
async fn fetch_with_progress(url: &str, progress: impl Fn(f64, Option<f64>)) -> Result<Vec<u8>, String> {
    let err = |e: wasm_bindgen::JsValue| format!("cannot download {url}: {e:?}");
    let resp: web_sys::Response =
        JsFuture::from(gloo::utils::window().fetch_with_str(url)).await.map_err(err)?.unchecked_into();
    if !resp.ok() {
        return Err(format!("cannot download {url}: HTTP {}", resp.status()));
    }
    let total = resp.headers().get("content-length").ok().flatten().and_then(|s| s.parse::<f64>().ok());
    let body = resp.body().ok_or_else(|| format!("cannot download {url}: empty body"))?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::with_capacity(total.unwrap_or(0.0) as usize);
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(err)?;
        let done = js_sys::Reflect::get(&chunk, &"done".into()).map_err(err)?.as_bool().unwrap_or(true);
        if done {
            break;
        }
        let value = js_sys::Reflect::get(&chunk, &"value".into()).map_err(err)?;
        bytes.extend(js_sys::Uint8Array::new(&value).to_vec());
        progress(bytes.len() as f64, total);
    }
    Ok(bytes)
}

fn files_of(dt: Option<web_sys::DataTransfer>) -> Option<File> {
    dt?.files()?.get(0)
}

impl Component for App {
    type Message = Msg;
    type Properties = ();

    fn create(ctx: &Context<Self>) -> Self {
        PANIC_SINK.with(|s| *s.borrow_mut() = Some(ctx.link().callback(Msg::Error)));
        let doc = gloo::utils::document();
        let opts = EventListenerOptions::enable_prevent_default();
        // Drop anywhere on the page; paste anywhere.
        let link = ctx.link().clone();
        let over = EventListener::new_with_options(&doc, "dragover", opts, |e| e.prevent_default());
        let drop = EventListener::new_with_options(&doc, "drop", opts, move |e| {
            e.prevent_default();
            let file = files_of(e.dyn_ref::<DragEvent>().and_then(|d| d.data_transfer()));
            match file {
                Some(f) => link.send_message(Msg::File(f)),
                None => link.send_message(Msg::Error("the drop held no file".into())),
            }
        });
        let link = ctx.link().clone();
        let paste = EventListener::new(&doc, "paste", move |e| {
            let Some(dt) = e.dyn_ref::<web_sys::ClipboardEvent>().and_then(|c| c.clipboard_data()) else {
                return;
            };
            if let Some(f) = files_of(Some(dt)) {
                link.send_message(Msg::File(f));
            }
        });
        let panic_channel = web_sys::BroadcastChannel::new(PANIC_CHANNEL).ok().map(|ch| {
            let link = ctx.link().clone();
            let l = EventListener::new(&ch, "message", move |e| {
                let text = e
                    .dyn_ref::<web_sys::MessageEvent>()
                    .and_then(|m| m.data().as_string())
                    .unwrap_or_default();
                link.send_message(Msg::WorkerPanicked(text));
            });
            (ch, l)
        });
        let arch = find_arch(DEFAULT_ARCH).expect("the default model is in the zoo");
        let model = model_view(arch);
        let selected = default_layer(&model.graph);
        let mut app = App {
            worker: spawn_worker(ctx.link()),
            model,
            load: LoadState::Building,
            load_job: 0,
            run_job: 0,
            next_job: 0,
            image: None,
            decoding: false,
            running: false,
            filters: None,
            result: None,
            maps: HashMap::new(),
            requested: vec![],
            selected,
            error: None,
            maps_after_paint: None,
            _listeners: vec![over, drop, paste],
            _panic_channel: panic_channel,
        };
        app.start_load(ctx);
        app
    }

    fn update(&mut self, ctx: &Context<Self>, msg: Msg) -> bool {
        match msg {
            Msg::SelectModel(name) => {
                let Ok(arch) = find_arch(&name) else {
                    self.error = Some(format!("unknown model {name}"));
                    return true;
                };
                self.model = model_view(arch);
                self.selected = default_layer(&self.model.graph);
                self.start_load(ctx);
            }
            Msg::Progress { job, done, total } => {
                if job != self.load_job {
                    return false;
                }
                self.load = LoadState::Fetching { done, total };
            }
            Msg::Fetched { job, result } => {
                if job != self.load_job {
                    return false;
                }
                match result {
                    Ok(bytes) => {
                        self.load = LoadState::Building;
                        let arch = self.model.arch.name.to_string();
                        self.worker.send(Request::Load { job, arch, weights: Some(bytes), seed: SEED });
                    }
                    Err(e) => {
                        self.load = LoadState::Failed;
                        self.error = Some(e);
                    }
                }
            }
            Msg::Worker(resp) => match resp {
                Response::Loaded { job, filters, ms } => {
                    if job != self.load_job {
                        return false;
                    }
                    self.load = LoadState::Ready { ms };
                    self.filters = filters.map(Rc::new);
                    self.start_run();
                }
                Response::Ran(r) => {
                    if r.job != self.run_job {
                        return false;
                    }
                    self.running = false;
                    self.result = Some(Rc::new(r));
                    // Drawing the maps can take a few hundred ms on a slow machine: let the
                    // prediction reach the screen first (the timeout runs after the frame).
                    let link = ctx.link().clone();
                    self.maps_after_paint = Some(request_animation_frame(move |_| {
                        Timeout::new(0, move || link.send_message(Msg::Painted)).forget();
                    }));
                }
                Response::Maps { job, maps } => {
                    if job != self.run_job {
                        return false;
                    }
                    for m in maps {
                        self.requested.retain(|&n| n != m.node);
                        self.maps.insert(m.node, Rc::new(m));
                    }
                }
                Response::Error { job, message } => {
                    if job == self.load_job && !matches!(self.load, LoadState::Ready { .. }) {
                        self.load = LoadState::Failed;
                    }
                    if job == self.run_job {
                        self.running = false;
                        self.requested.clear();
                    }
                    self.error = Some(message);
                }
            },
            Msg::Painted => {
                self.maps_after_paint = None;
                self.request_maps();
            }
            Msg::WorkerPanicked(text) => {
                self.error = Some(format!("the inference worker crashed ({text}); it was restarted"));
                self.running = false;
                self.worker = spawn_worker(ctx.link());
                self.start_load(ctx);
            }
            Msg::File(file) => {
                self.decoding = true;
                let link = ctx.link().clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let blob: &Blob = file.as_ref();
                    link.send_message(Msg::Decoded(decode_blob(blob, &file.name()).await));
                });
            }
            Msg::Sample(img, name) => {
                self.decoding = true;
                let link = ctx.link().clone();
                wasm_bindgen_futures::spawn_local(async move {
                    link.send_message(Msg::Decoded(decode_img(&img, &name).await));
                });
            }
            Msg::Decoded(result) => {
                self.decoding = false;
                match result {
                    Ok(img) => {
                        self.error = None;
                        self.image = Some(img);
                        self.start_run();
                    }
                    // The previous image and its results stay.
                    Err(e) => self.error = Some(e),
                }
            }
            Msg::SelectLayer(node) => {
                if node >= self.model.graph.nodes.len() {
                    return false;
                }
                self.selected = node;
                self.request_maps();
            }
            Msg::Error(e) => self.error = Some(e),
            Msg::DismissError => self.error = None,
        }
        true
    }

    fn view(&self, ctx: &Context<Self>) -> Html {
        let link = ctx.link();
        let m = &self.model;
        let on_model = link.callback(|e: Event| {
            let sel: web_sys::HtmlSelectElement = e.target_unchecked_into();
            Msg::SelectModel(sel.value())
        });
        let on_select = link.callback(Msg::SelectLayer);
        let status = match &self.load {
            LoadState::Fetching { done, total } => html! {
                <span class="status" data-testid="model-status" data-state="loading">
                    { "downloading weights " }
                    <progress max={total.unwrap_or(0.0).to_string()} value={done.to_string()}></progress>
                    { format!(" {:.1} MB", done / 1e6) }
                </span>
            },
            LoadState::Building => html! {
                <span class="status" data-testid="model-status" data-state="loading">
                    <span class="spinner"></span>{ if m.trained { "building the model…" } else { "building the model with random weights…" } }
                </span>
            },
            LoadState::Ready { ms } => html! {
                <span class="status" data-testid="model-status" data-state="ready">
                    { format!("ready · built in {ms:.0} ms") }
                    { if self.running { html!{ <> {" · "} <span class="spinner"></span>{ "running…" } </> } } else { html!{} } }
                </span>
            },
            LoadState::Failed => html! {
                <span class="status" data-testid="model-status" data-state="failed">{ "the model could not be loaded" }</span>
            },
        };
        let labels: Option<Vec<String>> =
            m.arch.dataset.labels().map(|l| l.iter().map(|s| s.to_string()).collect());
        let view = self.result.as_ref().map(|r| (Rc::new(r.view.clone()), r.side));
        html! {
            <>
            <header>
                <h1>{ "ResNet explorer" }</h1>
                <label class="model">
                    { "Model " }
                    <select data-testid="model-select" onchange={on_model}>
                        { for ZOO.iter().filter(|a| weights_url(a.name).is_some()).chain(ZOO.iter().filter(|a| weights_url(a.name).is_none())).map(|a| {
                            let trained = weights_url(a.name).is_some();
                            let label = if trained {
                                format!("{} — pretrained on CIFAR-10", a.name)
                            } else {
                                format!("{} — untrained (random weights)", a.name)
                            };
                            html! { <option value={a.name} selected={a.name == m.arch.name}>{ label }</option> }
                        }) }
                    </select>
                </label>
                { status }
                <p class="description">
                    { m.arch.description }
                    { if m.trained { html!{} } else { html!{ <span class="badge untrained" data-testid="untrained-badge">{ "untrained" }</span> } } }
                    { format!(" · input {}×{}×{} · {} parameters", m.graph.input.c, m.graph.input.h, m.graph.input.w, crate::viz::thousands(m.summary.total_params)) }
                </p>
            </header>
            { match &self.error {
                Some(e) => html! {
                    <div class="error" role="alert" data-testid="error-banner">
                        <span>{ e.clone() }</span>
                        <button aria-label="dismiss" onclick={link.callback(|_| Msg::DismissError)}>{ "×" }</button>
                    </div>
                },
                None => html! {},
            } }
            <main>
                <DropZone
                    on_file={link.callback(Msg::File)}
                    on_sample={link.callback(|(img, name)| Msg::Sample(img, name))}
                    image={self.image.as_ref().map(|i| (i.name.clone(), i.width, i.height))}
                    view={view.clone()}
                    busy={self.decoding}
                />
                <Prediction
                    result={self.result.clone()}
                    labels={labels}
                    trained={m.trained}
                    arch={m.arch.name}
                    has_image={self.image.is_some()}
                    running={self.running}
                />
                <Filters bank={self.filters.clone()} graph={m.graph.clone()} />
                <Activations
                    graph={m.graph.clone()}
                    summary={m.summary.clone()}
                    selected={self.selected}
                    maps={Rc::new(self.maps.clone())}
                    view={view}
                    has_result={self.result.is_some()}
                    on_select={on_select.clone()}
                />
                <div class="split">
                    <LayerTable graph={m.graph.clone()} summary={m.summary.clone()} selected={self.selected} on_select={on_select.clone()} />
                    <Diagram graph={m.graph.clone()} summary={m.summary.clone()} selected={self.selected} on_select={on_select} />
                </div>
            </main>
            <footer>
                <p>
                    { "Everything runs in your browser (Rust → WebAssembly, inference in a Web Worker): your image never leaves this page. " }
                    { "Untrained models have deterministic random weights (He initialisation, seed 0): their filters and activations show the architecture, not learned features, and they make no predictions." }
                </p>
                <p class="license" data-testid="weights-license">
                    { "Pretrained CIFAR-10 ResNet-20/56 weights from " }
                    <a href="weights/LICENSE-pytorch_resnet_cifar10">{ "akamaster/pytorch_resnet_cifar10" }</a>
                    { ", Copyright (c) 2018, Yerlan Idelbayev, BSD 2-Clause License. " }
                </p>
                <details class="license-text">
                    <summary>{ "Licence of the pretrained weights (BSD-2-Clause)" }</summary>
                    <pre>{ include_str!("../../../www/weights/LICENSE-pytorch_resnet_cifar10") }</pre>
                </details>
            </footer>
            </>
        }
    }
}
