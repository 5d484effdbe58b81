//! The page's state, all in one place: which model, which image, the last run's results, the
//! selected layer and the error banner. Panels get what they show as props and report clicks
//! back as messages; the worker does the computing. Large buffers (the run's result, the input
//! view, the filters, the maps) are wrapped in `Shared` once, when the worker's answer arrives,
//! so a render compares pointers, not pixels.

use gloo::events::EventListener;
use gloo::render::{request_animation_frame, AnimationFrame};
use gloo::timers::callback::Timeout;
use gloo::worker::{Spawnable, WorkerBridge};
use resnet_core::arch::CIFAR10_CLASSES;
use resnet_core::explain::{CamMethod, Erf};
use resnet_core::hub::{hub_weights, HubWeights};
use resnet_core::manifest::Entry;
use resnet_core::spec::{BlockKind, Graph, Op};
use resnet_core::train::run::parse_metrics;
use resnet_core::train::{EpochMetrics, Snapshot};
use resnet_core::{find_arch, ArchInfo, Summary};
use web_sys::{Blob, File, HtmlImageElement};
use yew::prelude::*;

use crate::camera::Camera;
use crate::components::activations::{Activations, Maps, ZeroPad};
use crate::components::cam::CamPanel;
use crate::components::degradation::{Degradation, RunCurve};
use crate::components::diagram::Diagram;
use crate::components::drop_zone::{DropZone, SAMPLES_PER_CLASS};
use crate::components::error_banner::ErrorBanner;
use crate::components::filters::Filters;
use crate::components::footer::Footer;
use crate::components::header::Header;
use crate::components::hub_weights::{HubOffer, HubWeightsOffer};
use crate::components::layer_table::LayerTable;
use crate::components::prediction::Prediction;
use crate::components::replay::{Replay, ReplayRun, YOURS};
use crate::components::residual_stream::ResidualStream;
use crate::components::user_weights::{self, FileLoad, UserFile, UserWeights};
use crate::components::{InputView, Shared};
use crate::decode::{decode_blob, decode_img, Decoded};
use crate::events;
use crate::fetch::{default_weights, fetch_bytes, fetch_weights, manifest};
use crate::hub;
use crate::link::{self, DeepLink};
use crate::protocol::{
    evict, CamMap, FeatureMap, FilterBank, MapParts, Request, Response, RunResult, MAP_BUDGET,
};
use crate::viz::rgb_to_rgba;
use crate::worker::InferenceWorker;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

const DEFAULT_ARCH: &str = "cifar-resnet20";
/// A worker whose WebAssembly memory has grown past this is replaced for the next model:
/// wasm memory never shrinks, so after VGG-16 (over 1 GB) the page would keep it all.
const FRESH_WORKER_BYTES: f64 = 512.0 * 1024.0 * 1024.0;
/// Random weights are the same for everyone (and equal to the CLI's with the same seed).
const SEED: u64 = 0;

#[derive(Clone, Debug, PartialEq)]
pub enum LoadState {
    Fetching { done: f64, total: Option<f64> },
    Building,
    Ready { ms: f64 },
    Failed,
}

pub enum Msg {
    SelectModel(String),
    /// A shipped weights file picked (the weights picker, a curve of the chart).
    SelectWeights(String),
    /// A shipped run's metrics, for the chart.
    Curve(&'static Entry, Result<Vec<EpochMetrics>, String>),
    /// The replay's run picked: a shipped weights file's name, or the user's files.
    ReplayRun(String),
    /// The replay slider moved to this position.
    ReplayAt(usize),
    /// A shipped snapshot downloaded (or not).
    SnapshotFetched {
        job: u32,
        epoch: usize,
        result: Result<Vec<u8>, String>,
    },
    /// Snapshot files of the user's run, chosen or dropped.
    SnapshotFiles(Vec<File>),
    SnapshotsRead(Vec<(String, Result<Vec<u8>, String>)>),
    /// The picked layer has stayed picked long enough: its CAM is worth a backward pass.
    CamDue,
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
    /// A layer picked in the layer table or the diagram (below or beside the maps): selects it
    /// and scrolls its maps into view.
    ShowLayer(usize),
    /// A class picked in the prediction: the CAM explains it.
    CamClass(usize),
    CamMethod(CamMethod),
    CamOpacity(f32),
    /// A channel of the selected layer picked to be shown enlarged.
    SelectChannel(usize),
    /// A first-layer filter clicked: that conv's output channel, in the maps.
    PickFilter(usize),
    /// A drag with a file is over the page (or no longer).
    Dragging(bool),
    /// A pixel (`y`, `x`) of the enlarged channel clicked: its effective receptive field.
    Unit(usize, usize),
    /// A link followed in this tab (the URL's hash changed).
    Navigate(DeepLink),
    /// The camera button: start (true) or stop classifying the camera's frames.
    Camera(bool),
    CameraOpened(Result<Rc<Camera>, String>),
    /// Time to grab the camera's next frame.
    CameraFrame,
    CameraDecoded(Result<Decoded, String>),
    /// Whether `arch`'s hub weights are in this browser's cache.
    HubCached(&'static str, bool),
    /// The "fetch pretrained weights" button.
    HubFetch,
    HubCancel,
    HubProgress {
        job: u32,
        done: f64,
        total: Option<f64>,
    },
    /// The hub's file, downloaded or from the cache, or why not.
    HubDone {
        job: u32,
        result: Result<File, String>,
    },
    Error(String),
    DismissError,
}

/// Pretrained weights from the hub: where from, whether the current model's are cached, and
/// the download in progress.
struct HubState {
    base: Result<String, String>,
    cached: Option<(&'static str, bool)>,
    download: Option<HubDownload>,
    /// A downloaded file on its way into the worker (its `LoadFile` job): cached once it loads.
    loading: Option<(u32, &'static HubWeights, File)>,
}

struct HubDownload {
    job: u32,
    weights: &'static HubWeights,
    done: f64,
    total: Option<f64>,
    abort: Option<web_sys::AbortController>,
}

impl HubState {
    fn cancel(&mut self) {
        self.loading = None;
        if let Some(d) = self.download.take() {
            if let Some(a) = d.abort {
                a.abort();
            }
        }
    }
}

/// Everything about the current model that the panels draw from (one source: the core's graph).
#[derive(Clone)]
pub struct ModelView {
    pub arch: &'static ArchInfo,
    pub trained: bool,
    /// The shipped weights file it runs (`None`: random weights, or a file of the user's).
    pub weights: Option<&'static Entry>,
    pub graph: Shared<Graph>,
    pub summary: Shared<Summary>,
}

/// A new model always comes with a new graph: comparing pointers is enough.
impl PartialEq for ModelView {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.arch, other.arch)
            && self.weights.map(|w| &w.file) == other.weights.map(|w| &w.file)
            && self.graph == other.graph
            && self.summary == other.summary
    }
}

struct Handlers {
    select_model: Callback<String>,
    select_layer: Callback<usize>,
    show_layer: Callback<usize>,
    file: Callback<File>,
    sample: Callback<(HtmlImageElement, String)>,
    dismiss_error: Callback<()>,
    cam_class: Callback<usize>,
    cam_method: Callback<CamMethod>,
    cam_opacity: Callback<f32>,
    select_channel: Callback<usize>,
    pick_filter: Callback<usize>,
    unit: Callback<(usize, usize)>,
    camera: Callback<bool>,
    hub_fetch: Callback<()>,
    hub_cancel: Callback<()>,
    select_weights: Callback<String>,
    pick_run: Callback<&'static str>,
    replay_run: Callback<String>,
    replay_at: Callback<usize>,
    snapshot_files: Callback<Vec<File>>,
}

/// The class activation map's state: what was asked for, and the last answer.
struct CamState {
    map: Option<Shared<CamMap>>,
    /// `None`: the top class.
    class: Option<usize>,
    /// A layer the user picked (table, diagram, select); `None` until then, and for a pick
    /// without a spatial map: the last block's output, Grad-CAM's usual layer.
    layer: Option<usize>,
    method: CamMethod,
    opacity: f32,
    /// Job of the request in flight (0: none); older answers are dropped.
    job: u32,
    /// The run (image) the request in flight, and then `map`, belong to.
    run: u32,
}

/// The camera while it classifies: a frame at a time, the next once the last is on screen.
struct CameraState {
    camera: Rc<Camera>,
    /// When the last frames' predictions were painted (ms), for the rate.
    painted: VecDeque<f64>,
}

impl CameraState {
    /// Frames per second over the last few frames.
    fn fps(&self) -> f64 {
        match (self.painted.front(), self.painted.back()) {
            (Some(a), Some(b)) if b > a => 1000.0 * (self.painted.len() - 1) as f64 / (b - a),
            _ => 0.0,
        }
    }
}

fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map_or_else(js_sys::Date::now, |p| p.now())
}

/// The training replay: whose run, where the slider is, the snapshots here so far.
#[derive(Default)]
struct ReplayState {
    run: Option<ReplayRun>,
    /// The slider's position in `epochs`.
    at: usize,
    epochs: Vec<usize>,
    snapshots: BTreeMap<usize, Shared<Snapshot>>,
    /// Shipped epochs on their way.
    fetching: Vec<usize>,
    /// The rest of a shipped run is fetched once the slider is first used.
    fetched_all: bool,
    /// Bumped with each new run: downloads for an older one are dropped.
    job: u32,
}

/// A snapshot is tens of kilobytes; a file far larger is not one.
const SNAPSHOT_LIMIT: f64 = 4e6;
/// The most snapshot files one replay reads.
const SNAPSHOT_FILES: usize = 2000;

/// The last effective receptive field asked for.
#[derive(Default)]
struct ErfState {
    map: Option<Shared<Erf>>,
    /// Job of the request in flight (0: none).
    job: u32,
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
    /// The sample the image is (`cat-0`), for the link; `None` for a file, a paste, a camera.
    sample: Option<String>,
    /// The sample being decoded, if the decode in flight is one.
    decoding_sample: Option<String>,
    /// What a followed link asks for once its model is built (layer, channel).
    restore: Option<DeepLink>,
    /// The hash last written to the address bar.
    written_hash: String,
    camera: Option<CameraState>,
    camera_opening: bool,
    dragging: bool,
    /// The worker's memory after its last load (bytes).
    worker_memory: f64,
    /// The job of the `Load` in the worker, not answered yet (0: none).
    building: u32,
    /// The latest model asked for while another builds: sent when that one is answered, so
    /// quick switches build two models at most, never every one picked.
    pending_load: Option<Request>,
    /// A decode in flight: the previous image stays until it succeeds.
    decoding: bool,
    running: bool,
    filters: Option<Shared<FilterBank>>,
    result: Option<Shared<RunResult>>,
    /// `result`'s view as RGBA, converted once.
    view: Option<InputView>,
    /// The last run's activation maps; a new `Shared` whenever one arrives.
    maps: Maps,
    /// The run before's maps, on screen (marked busy) until the new run's arrive: the panel
    /// keeps its size instead of collapsing while a new image runs.
    stale_maps: Maps,
    requested: Vec<usize>,
    /// The nodes of `maps`, oldest first: the oldest go when they exceed `MAP_BUDGET`.
    map_order: Vec<usize>,
    /// A large map arriving in parts.
    map_parts: MapParts,
    selected: usize,
    /// The channel shown enlarged.
    channel: usize,
    cam: CamState,
    /// Delays the CAM of a picked layer: stepping through layers with the arrow keys would
    /// queue a backward pass per step in the worker, ahead of the maps the user is looking at.
    cam_timer: Option<Timeout>,
    link: html::Scope<App>,
    /// A layer was picked below or beside the maps: bring them into view once rendered.
    scroll_to_maps: bool,
    /// While a new model builds and runs, the panels keep the heights they had (see
    /// [`hold_panel_heights`]); true until the new model's maps are shown.
    holding_heights: bool,
    erf: ErfState,
    /// The chart's runs, as their metrics arrive (manifest order), and any that failed.
    curves: Vec<RunCurve>,
    curves_error: Option<AttrValue>,
    replay: ReplayState,
    error: Option<AttrValue>,
    /// The user's weights file being read and built in the worker, and the one the model runs.
    file_load: Option<FileLoad>,
    user_file: Option<UserFile>,
    hub: HubState,
    /// Asks for the activation maps once the prediction has been painted.
    maps_after_paint: Option<AnimationFrame>,
    /// Made once: a callback is equal only to itself, and a new one each render would re-render
    /// every panel on every message (download progress included).
    on: Handlers,
    _listeners: Vec<EventListener>,
    _panic_channel: Option<(web_sys::BroadcastChannel, EventListener)>,
}

/// How long a picked layer stays picked before its CAM is computed.
const CAM_DELAY_MS: u32 = 300;

/// The inference worker this browser runs best: threaded where the page is cross-origin isolated
/// (shared memory is allowed), with relaxed SIMD where the browser validates it, through the
/// variant builds' loader (which falls back to the plain worker if its build cannot start);
/// otherwise the plain single-threaded SIMD128 worker.
fn spawn_worker(link: &html::Scope<App>) -> WorkerBridge<InferenceWorker> {
    let cb = link.callback(Msg::Worker);
    let mut spawner = InferenceWorker::spawner();
    spawner.callback(move |r| cb.emit(r));
    let build = match (relaxed_simd(), cross_origin_isolated()) {
        (false, false) => return spawner.spawn("./worker.js"),
        (false, true) => "threads",
        (true, false) => "relaxed",
        (true, true) => "relaxed-threads",
    };
    spawner.as_module(true).with_loader(true).spawn(&format!("./worker-variant.js?build={build}"))
}

fn cross_origin_isolated() -> bool {
    js_sys::Reflect::get(&js_sys::global(), &"crossOriginIsolated".into()).is_ok_and(|v| v.is_truthy())
}

/// Whether this browser's WebAssembly has relaxed SIMD: it validates a module whose one
/// function is `f32x4.relaxed_madd` of its three v128 parameters.
fn relaxed_simd() -> bool {
    const PROBE: [u8; 37] = [
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
        0x01, 0x08, 0x01, 0x60, 0x03, 0x7b, 0x7b, 0x7b, 0x01, 0x7b, // type: (v128 ×3) -> v128
        0x03, 0x02, 0x01, 0x00, // function 0 has that type
        0x0a, 0x0d, 0x01, 0x0b, 0x00, // code: one body of 11 bytes, no locals
        0x20, 0x00, 0x20, 0x01, 0x20, 0x02, // local.get 0, 1, 2
        0xfd, 0x85, 0x02, // f32x4.relaxed_madd (0xfd 0x105)
        0x0b, // end
    ];
    js_sys::WebAssembly::validate(&js_sys::Uint8Array::from(&PROBE[..]).into()).unwrap_or(false)
}

/// The layer shown first: the output of the first residual block (or the first ReLU).
fn default_layer(graph: &Graph) -> usize {
    if let Some(b) = graph.blocks.first() {
        return b.output;
    }
    graph.nodes.iter().position(|n| matches!(n.op, Op::Relu | Op::Tanh)).unwrap_or(1.min(graph.output()))
}

/// A class's name, where the dataset has them.
fn class_name(arch: &ArchInfo, class: usize) -> String {
    arch.dataset
        .labels()
        .and_then(|l| l.get(class))
        .map_or_else(|| format!("class {class}"), |s| s.to_string())
}

fn model_view(arch: &'static ArchInfo, weights: Option<&'static Entry>) -> ModelView {
    let graph = arch.graph();
    let summary = graph.summary(None).expect("every architecture of the zoo fits its own input");
    ModelView {
        arch,
        trained: weights.is_some(),
        weights,
        graph: Shared::new(graph),
        summary: Shared::new(summary),
    }
}

/// Brings the activation maps panel into view after a pick in the table or the diagram, unless
/// its top is already in the upper part of the viewport (then the maps are on screen). Scrolls
/// the page only; the focus stays where it is.
fn scroll_to_maps() {
    use wasm_bindgen::JsCast;
    let Some(win) = web_sys::window() else { return };
    let Some(panel) = win.document().and_then(|d| d.query_selector("section.activations").ok().flatten())
    else {
        return;
    };
    let Ok(panel) = panel.dyn_into::<web_sys::HtmlElement>() else { return };
    // The panel's top in page coordinates: offsets summed up the offset-parent chain.
    let mut top = 0i32;
    let mut el = Some(panel);
    while let Some(e) = el {
        top += e.offset_top();
        el = e.offset_parent().and_then(|p| p.dyn_into::<web_sys::HtmlElement>().ok());
    }
    let (Ok(y), Ok(x), Some(vh)) =
        (win.scroll_y(), win.scroll_x(), win.inner_height().ok().and_then(|h| h.as_f64()))
    else {
        return;
    };
    let on_screen = top as f64 - y;
    if on_screen >= 0.0 && on_screen <= vh * 0.4 {
        return;
    }
    win.scroll_to_with_x_and_y(x, (top as f64 - 8.0).max(0.0));
}

/// Each panel keeps at least its present height (`data-held` marks it): a model switch empties
/// the prediction, filters and maps for a second, and the page below jumped up and back.
fn hold_panel_heights() {
    use wasm_bindgen::JsCast;
    let Ok(panels) = gloo::utils::document().query_selector_all("main > section.panel") else { return };
    for el in (0..panels.length()).filter_map(|i| panels.item(i)?.dyn_into::<web_sys::Element>().ok()) {
        let height = el.get_bounding_client_rect().height();
        let _ = el.set_attribute("style", &format!("min-height: {height:.0}px"));
        let _ = el.set_attribute("data-held", "");
    }
}

/// The panels take their own heights again.
fn release_panel_heights() {
    use wasm_bindgen::JsCast;
    let Ok(panels) = gloo::utils::document().query_selector_all("main > section.panel[data-held]") else {
        return;
    };
    for el in (0..panels.length()).filter_map(|i| panels.item(i)?.dyn_into::<web_sys::Element>().ok()) {
        let _ = el.remove_attribute("style");
        let _ = el.remove_attribute("data-held");
    }
}

/// `cat-0` if it names a shipped sample.
fn sample_name(name: &str) -> Option<&str> {
    let (class, i) = name.rsplit_once('-')?;
    let known = CIFAR10_CLASSES.contains(&class) && i.parse::<usize>().is_ok_and(|i| i < SAMPLES_PER_CLASS);
    known.then_some(name)
}

impl App {
    /// Decodes a shipped sample by name, as a click on it would.
    fn load_sample(&mut self, ctx: &Context<Self>, name: &str) {
        let Some(name) = sample_name(name) else {
            self.error = Some(format!("the link names no sample '{name}' (samples are like cat-0)").into());
            return;
        };
        let Ok(img) = HtmlImageElement::new() else { return };
        img.set_src(&format!("samples/{name}.jpg"));
        let (link, file) = (ctx.link().clone(), format!("{name}.jpg"));
        self.decoding = true;
        self.decoding_sample = Some(name.to_string());
        wasm_bindgen_futures::spawn_local(async move {
            match wasm_bindgen_futures::JsFuture::from(img.decode()).await {
                Ok(_) => link.send_message(Msg::Sample(img, file)),
                Err(_) => link.send_message(Msg::Decoded(Err(format!("cannot load the sample {file}")))),
            }
        });
    }

    /// Switches to `arch` with its default weights (its state reset, its weights loaded).
    fn switch_model(&mut self, ctx: &Context<Self>, arch: &'static ArchInfo) {
        self.switch_weights(ctx, arch, default_weights(arch.name));
    }

    /// Switches to `arch` running `weights` (a file of the manifest; `None`: random weights).
    fn switch_weights(
        &mut self,
        ctx: &Context<Self>,
        arch: &'static ArchInfo,
        weights: Option<&'static Entry>,
    ) {
        if self.result.is_some() && !self.holding_heights {
            hold_panel_heights();
            self.holding_heights = true;
        }
        // A model picked (or linked) replaces the user's file, and one still loading or
        // downloading.
        self.file_load = None;
        self.user_file = None;
        self.hub.cancel();
        self.show_model(model_view(arch, weights));
        self.follow_run_in_replay();
        self.start_load(ctx);
    }

    /// Fetches the metrics of every shipped run for the chart (a few kilobytes each).
    fn fetch_curves(&mut self) {
        for entry in manifest().figure6_runs() {
            let (Some(url), link) = (entry.metrics.as_deref(), self.link.clone()) else { continue };
            wasm_bindgen_futures::spawn_local(async move {
                let result = match fetch_bytes(url, 1e6).await {
                    Ok(bytes) => String::from_utf8(bytes)
                        .map_err(|_| format!("{url} is not text"))
                        .and_then(|t| parse_metrics(&t).map_err(|e| format!("{url}: {e}"))),
                    Err(e) => Err(e),
                };
                link.send_message(Msg::Curve(entry, result));
            });
        }
    }

    /// The replay follows the model: a shipped run with snapshots replays from its last epoch
    /// (the weights now running). Other models leave the replay as it is; with none yet, it
    /// shows the first run trained here.
    fn follow_run_in_replay(&mut self) {
        let with_snapshots = |e: &&Entry| e.snapshots.is_some();
        let entry = match self.model.weights.filter(with_snapshots) {
            Some(e) => e,
            None if self.replay.run.is_none() => match manifest().runs().find(with_snapshots) {
                Some(e) => e,
                None => return,
            },
            None => return,
        };
        if self.replay.run != Some(ReplayRun::Shipped(entry)) {
            self.replay_shipped(entry);
        }
    }

    /// Replays `entry`'s run, from its last epoch.
    fn replay_shipped(&mut self, entry: &'static Entry) {
        let Some(epochs) = entry.epochs() else { return };
        self.replay = ReplayState {
            run: Some(ReplayRun::Shipped(entry)),
            epochs: (0..=epochs).collect(),
            at: epochs,
            job: self.replay.job + 1,
            ..Default::default()
        };
        self.fetch_snapshot(epochs);
    }

    /// Downloads epoch `epoch` of the shipped run replayed, unless it is here or coming.
    fn fetch_snapshot(&mut self, epoch: usize) {
        let Some(ReplayRun::Shipped(entry)) = &self.replay.run else { return };
        if self.replay.snapshots.contains_key(&epoch) || self.replay.fetching.contains(&epoch) {
            return;
        }
        let Some(url) = entry.snapshot(epoch) else { return };
        self.replay.fetching.push(epoch);
        let (job, link) = (self.replay.job, self.link.clone());
        wasm_bindgen_futures::spawn_local(async move {
            let result = fetch_bytes(&url, SNAPSHOT_LIMIT).await;
            link.send_message(Msg::SnapshotFetched { job, epoch, result });
        });
    }

    /// The snapshot the replay shows: the slider's epoch, else the nearest earlier one here.
    fn replay_snapshot(&self) -> Option<Shared<Snapshot>> {
        let epoch = *self.replay.epochs.get(self.replay.at)?;
        self.replay
            .snapshots
            .get(&epoch)
            .or_else(|| self.replay.snapshots.range(..epoch).next_back().map(|(_, s)| s))
            .or_else(|| self.replay.snapshots.values().next())
            .cloned()
    }

    /// Reads the user's snapshot files (each checked by the core's reader), then replays them.
    fn read_snapshot_files(&mut self, files: Vec<File>) {
        if files.len() > SNAPSHOT_FILES {
            self.error =
                Some(format!("{} files: a replay reads at most {SNAPSHOT_FILES}", files.len()).into());
            return;
        }
        let link = self.link.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let mut read = vec![];
            for f in files {
                let name = f.name();
                let bytes = if f.size() > SNAPSHOT_LIMIT {
                    Err(format!("{:.1} MB, larger than a snapshot", f.size() / 1e6))
                } else {
                    match wasm_bindgen_futures::JsFuture::from(f.array_buffer()).await {
                        Ok(buf) => Ok(js_sys::Uint8Array::new(&buf).to_vec()),
                        Err(e) => Err(crate::fetch::js_message(&e)),
                    }
                };
                read.push((name, bytes));
            }
            link.send_message(Msg::SnapshotsRead(read));
        });
    }

    /// The user's snapshots replace the replayed run (one architecture per run; files of
    /// another one are refused with their names).
    fn replay_yours(&mut self, read: Vec<(String, Result<Vec<u8>, String>)>) {
        let mut snapshots = BTreeMap::new();
        let mut errors = vec![];
        let mut arch: Option<String> = None;
        for (name, bytes) in read {
            match bytes.and_then(|b| Snapshot::from_bytes(&b).map_err(|e| e.to_string())) {
                Ok(s) if arch.as_ref().is_some_and(|a| *a != s.arch) => errors.push(format!(
                    "{name}: a snapshot of {}, not {}",
                    s.arch,
                    arch.as_deref().unwrap_or("")
                )),
                Ok(s) => {
                    arch = Some(s.arch.clone());
                    snapshots.insert(s.epoch, Shared::new(s));
                }
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        if !errors.is_empty() {
            let more =
                if errors.len() > 3 { format!(" (and {} more)", errors.len() - 3) } else { String::new() };
            errors.truncate(3);
            self.error = Some(format!("cannot replay {}{more}", errors.join("; ")).into());
        }
        let Some(arch) = arch else { return };
        let epochs: Vec<usize> = snapshots.keys().copied().collect();
        self.replay = ReplayState {
            run: Some(ReplayRun::Yours { arch }),
            at: epochs.len() - 1,
            epochs,
            snapshots,
            fetched_all: true,
            job: self.replay.job + 1,
            ..Default::default()
        };
    }

    /// For an untrained model with weights on the hub: are they in this browser's cache? (A
    /// Cache Storage lookup, not a network request.)
    fn check_hub_cache(&mut self) {
        let arch = self.model.arch.name;
        let (Some(w), Ok(base)) = (hub_weights(arch).filter(|_| !self.model.trained), &self.hub.base) else {
            return;
        };
        if self.hub.cached.is_some_and(|(a, _)| a == arch) {
            return;
        }
        let (link, base) = (self.link.clone(), base.clone());
        wasm_bindgen_futures::spawn_local(async move {
            let cached = hub::is_cached(w, &base).await;
            link.send_message(Msg::HubCached(w.arch, cached));
        });
    }

    /// The hub's weights offered for the current model: an untrained ImageNet ResNet, unless
    /// a file is on its way into the worker already.
    fn hub_offer(&self) -> Option<HubOffer> {
        let w = hub_weights(self.model.arch.name)?;
        let download = self.hub.download.as_ref().filter(|d| d.weights.arch == w.arch);
        if download.is_none() && (self.model.trained || self.file_load.is_some()) {
            return None;
        }
        Some(HubOffer {
            weights: w,
            base: self.hub.base.clone().map(Into::into).map_err(Into::into),
            cached: self.hub.cached.filter(|(a, _)| *a == w.arch).map(|(_, c)| c),
            download: download.map(|d| (d.done, d.total)),
        })
    }

    /// The hub's weights of the current model: from this browser's cache, else downloaded.
    fn fetch_hub_weights(&mut self) {
        let (Some(w), Ok(base)) = (hub_weights(self.model.arch.name), &self.hub.base) else { return };
        if self.hub.download.is_some() {
            return;
        }
        self.next_job += 1;
        let job = self.next_job;
        let cached = self.hub.cached == Some((w.arch, true));
        let abort = (!cached).then(|| web_sys::AbortController::new().ok()).flatten();
        let signal = abort.as_ref().map(|a| a.signal());
        self.hub.download = Some(HubDownload { job, weights: w, done: 0.0, total: None, abort });
        let (link, base) = (self.link.clone(), base.clone());
        wasm_bindgen_futures::spawn_local(async move {
            let result = match (cached, signal) {
                (true, _) => hub::cached(w, &base)
                    .await
                    .ok_or_else(|| format!("{} is no longer in this browser's cache", w.repo)),
                (false, Some(signal)) => {
                    let progress = link.callback(move |(done, total)| Msg::HubProgress { job, done, total });
                    hub::download(w, &base, &signal, |d, t| progress.emit((d, t))).await
                }
                (false, None) => Err("this browser cannot abort a download".to_string()),
            };
            link.send_message(Msg::HubDone { job, result });
        });
    }

    /// The user's weights file to the worker (the previous model runs until it is built).
    fn load_weights_file(&mut self, file: File) {
        self.load_file(file, None);
    }

    /// A weights file to the worker; `origin` says where it came from when not from the user.
    fn load_file(&mut self, file: File, origin: Option<AttrValue>) {
        self.next_job += 1;
        let (job, token, name) = (self.next_job, user_weights::new_token(), file.name());
        if let Err(e) = user_weights::post_file(token, &file) {
            self.error = Some(format!("cannot load {name}: {e}").into());
            return;
        }
        self.worker.send(Request::LoadFile { job, token });
        let total = file.size();
        self.file_load = Some(FileLoad { job, token, file, name: name.into(), origin, done: 0.0, total });
    }

    /// The panels' model, from its first layer, with nothing computed yet.
    fn show_model(&mut self, model: ModelView) {
        self.model = model;
        self.check_hub_cache();
        self.selected = default_layer(&self.model.graph);
        self.cam.map = None;
        self.cam.class = None;
        self.cam.layer = None;
        self.cam.job = 0;
        self.erf = ErfState::default();
    }

    /// Applies a link's layer and channel to the current model.
    fn restore_view(&mut self, link: DeepLink) {
        if let Some(layer) = &link.layer {
            match self.model.graph.node(layer) {
                Some(n) => self.select_layer(n),
                None => {
                    self.error =
                        Some(format!("the link's layer {layer} is not in {}", self.model.arch.name).into())
                }
            }
        }
        if let Some(c) = link.channel {
            self.channel = c;
        }
    }

    /// What the page shows, as a link.
    fn deep_link(&self) -> DeepLink {
        let g = &self.model.graph;
        DeepLink {
            model: Some(self.model.arch.name.to_string()),
            layer: Some(g.nodes[self.selected.min(g.nodes.len() - 1)].name.clone()),
            channel: Some(self.channel),
            sample: self.sample.clone(),
        }
    }

    /// Sends a `Load` now, or, while another builds, keeps it (replacing an older one) until
    /// that one is answered.
    fn send_load(&mut self, job: u32, req: Request) {
        if self.building != 0 {
            self.pending_load = Some(req);
        } else {
            self.building = job;
            self.worker.send(req);
        }
    }

    /// The `Load` in the worker has been answered: the kept one goes next.
    fn load_answered(&mut self, job: u32) {
        if job != self.building {
            return;
        }
        self.building = 0;
        if let Some(req) = self.pending_load.take() {
            if let Request::Load { job, .. } = &req {
                self.building = *job;
            }
            self.worker.send(req);
        }
    }

    fn start_load(&mut self, ctx: &Context<Self>) {
        // Wasm memory never shrinks: after a big model the next one gets a fresh worker. The
        // old one finishes what it is doing, then closes, and its memory goes with it.
        if self.worker_memory > FRESH_WORKER_BYTES {
            self.worker = spawn_worker(ctx.link());
            self.worker_memory = 0.0;
            self.building = 0;
            self.pending_load = None;
            self.running = false;
            self.cam.job = 0;
            self.erf.job = 0;
            self.requested.clear();
        }
        self.next_job += 1;
        self.load_job = self.next_job;
        self.filters = None;
        self.result = None;
        self.view = None;
        self.clear_maps();
        let job = self.load_job;
        let arch = self.model.arch.name.to_string();
        match self.model.weights.map(|w| w.file.as_str()) {
            Some(url) => {
                self.load = LoadState::Fetching { done: 0.0, total: None };
                let link = ctx.link();
                fetch_weights(
                    url,
                    link.callback(move |(done, total)| Msg::Progress { job, done, total }),
                    link.callback(move |result| Msg::Fetched { job, result }),
                );
            }
            None => {
                self.load = LoadState::Building;
                self.send_load(job, Request::Load { job, arch, weights: None, seed: SEED });
            }
        }
    }

    fn start_run(&mut self) {
        let (Some(img), LoadState::Ready { .. }) = (&self.image, &self.load) else { return };
        self.next_job += 1;
        self.run_job = self.next_job;
        let run = Request::Run {
            job: self.run_job,
            width: img.width,
            height: img.height,
            rgba: img.rgba.as_ref().clone(),
        };
        self.running = true;
        if !self.maps.is_empty() {
            self.stale_maps = std::mem::take(&mut self.maps);
        }
        self.requested.clear();
        self.erf = ErfState::default();
        // A new image is explained for its own top class; the old map stays on screen (marked
        // busy) until the new one arrives.
        self.cam.class = None;
        self.cam.job = 0;
        self.worker.send(run);
    }

    /// The layer the CAM looks at: the one the user picked where it has a spatial map (a conv,
    /// ReLU or block output), else the last block's output.
    fn cam_layer(&self) -> Option<usize> {
        self.cam.layer.or_else(|| self.model.graph.default_cam_layer())
    }

    fn select_layer(&mut self, node: usize) {
        self.selected = node;
        // In a block whose option-A shortcut pads zero channels, show one that carries x.
        let g = &self.model.graph;
        if let Some(b) = g.nodes[node].block.map(|b| &g.blocks[b]) {
            if let Some(z) =
                ZeroPad::of(b, &self.model.summary.node_shapes()).filter(|z| z.source(self.channel).is_none())
            {
                self.channel = z.pad;
            }
        }
        self.request_maps();
        self.pick_cam_layer(node);
    }

    /// The user picked `node`: the CAM follows it where it has a spatial map.
    fn pick_cam_layer(&mut self, node: usize) {
        let rows = &self.model.summary.layers;
        let spatial = rows.get(node.wrapping_sub(1)).is_some_and(|r| r.out_shape[1] * r.out_shape[2] > 1);
        self.cam.layer = spatial.then_some(node);
        let link = self.link.clone();
        self.cam_timer = Some(Timeout::new(CAM_DELAY_MS, move || link.send_message(Msg::CamDue)));
    }

    fn request_cam(&mut self) {
        let Some(layer) = self.cam_layer() else { return };
        if self.result.is_none() || self.running {
            return;
        }
        let unchanged = self.cam.run == self.run_job
            && self.cam.map.as_ref().is_some_and(|m| {
                m.layer == layer && m.method == self.cam.method && self.cam.class.is_none_or(|c| c == m.class)
            });
        if unchanged && self.cam.job == 0 {
            return;
        }
        self.next_job += 1;
        self.cam.job = self.next_job;
        self.cam.run = self.run_job;
        let (class, method) = (self.cam.class, self.cam.method);
        self.worker.send(Request::Cam { job: self.cam.job, layer, class, method });
    }

    fn add_maps(&mut self, maps: Vec<FeatureMap>) {
        // A new map, never one changed in place: the panels compare pointers.
        let mut all = (*self.maps).clone();
        for m in maps {
            self.requested.retain(|&n| n != m.node);
            self.map_order.retain(|&n| n != m.node);
            self.map_order.push(m.node);
            all.insert(m.node, Shared::new(m));
        }
        let wanted = self.wanted_layers();
        evict(&mut all, &mut self.map_order, &wanted, MAP_BUDGET, |m| m.data.len());
        self.maps = Shared::new(all);
        if self.maps.contains_key(&self.selected) {
            self.stale_maps = Maps::default();
        }
    }

    fn clear_maps(&mut self) {
        if !self.maps.is_empty() {
            self.maps = Maps::default();
        }
        if !self.stale_maps.is_empty() {
            self.stale_maps = Maps::default();
        }
        self.requested.clear();
        self.map_order.clear();
        self.map_parts = MapParts::default();
    }

    /// The maps the panel shows: this run's, or while they are on their way the last run's.
    fn shown_maps(&self) -> (Maps, bool) {
        if self.maps.contains_key(&self.selected) || self.stale_maps.is_empty() {
            (self.maps.clone(), false)
        } else {
            (self.stale_maps.clone(), true)
        }
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
        let mut missing: Vec<usize> = self
            .wanted_layers()
            .into_iter()
            .filter(|n| !self.maps.contains_key(n) && !self.requested.contains(n))
            .collect();
        // The selected layer's maps first: they come one message each.
        missing.sort_by_key(|&n| n != self.selected);
        if !missing.is_empty() {
            self.requested.extend(&missing);
            self.worker.send(Request::Maps { job: self.run_job, nodes: missing });
        }
    }
}

impl Component for App {
    type Message = Msg;
    type Properties = ();

    fn create(ctx: &Context<Self>) -> Self {
        let link = ctx.link();
        events::set_panic_sink(link.callback(Msg::Error));
        let mut listeners = events::listen_for_files(
            link.callback(Msg::File),
            link.callback(Msg::SnapshotFiles),
            link.callback(Msg::Error),
        );
        listeners.push(events::listen_for_links(link.callback(Msg::Navigate)));
        listeners.extend(events::listen_for_drags(link.callback(Msg::Dragging)));
        let followed = link::current();
        let panic_channel = events::listen_for_worker_panics(link.callback(Msg::WorkerPanicked));
        let linked = followed.model.as_deref().map(|m| find_arch(m).map_err(|_| m.to_string()));
        let arch = match linked {
            Some(Ok(a)) => a,
            _ => find_arch(DEFAULT_ARCH).expect("the default model is in the zoo"),
        };
        let model = model_view(arch, default_weights(arch.name));
        let selected = default_layer(&model.graph);
        let mut app = App {
            worker: spawn_worker(link),
            model,
            load: LoadState::Building,
            load_job: 0,
            run_job: 0,
            next_job: 0,
            image: None,
            sample: None,
            decoding_sample: None,
            restore: None,
            written_hash: String::new(),
            camera: None,
            camera_opening: false,
            dragging: false,
            worker_memory: 0.0,
            building: 0,
            pending_load: None,
            decoding: false,
            running: false,
            filters: None,
            result: None,
            view: None,
            maps: Maps::default(),
            stale_maps: Maps::default(),
            requested: vec![],
            map_order: vec![],
            map_parts: MapParts::default(),
            selected,
            channel: 0,
            erf: ErfState::default(),
            curves: vec![],
            curves_error: None,
            replay: ReplayState::default(),
            cam_timer: None,
            link: ctx.link().clone(),
            scroll_to_maps: false,
            holding_heights: false,
            cam: CamState {
                map: None,
                class: None,
                layer: None,
                method: CamMethod::GradCam,
                opacity: 0.5,
                job: 0,
                run: 0,
            },
            error: None,
            file_load: None,
            user_file: None,
            hub: HubState { base: hub::hub_base(), cached: None, download: None, loading: None },
            maps_after_paint: None,
            on: Handlers {
                select_model: link.callback(Msg::SelectModel),
                select_layer: link.callback(Msg::SelectLayer),
                show_layer: link.callback(Msg::ShowLayer),
                file: link.callback(Msg::File),
                sample: link.callback(|(img, name)| Msg::Sample(img, name)),
                dismiss_error: link.callback(|_| Msg::DismissError),
                cam_class: link.callback(Msg::CamClass),
                cam_method: link.callback(Msg::CamMethod),
                cam_opacity: link.callback(Msg::CamOpacity),
                select_channel: link.callback(Msg::SelectChannel),
                pick_filter: link.callback(Msg::PickFilter),
                unit: link.callback(|(y, x)| Msg::Unit(y, x)),
                camera: link.callback(Msg::Camera),
                hub_fetch: link.callback(|_| Msg::HubFetch),
                hub_cancel: link.callback(|_| Msg::HubCancel),
                select_weights: link.callback(Msg::SelectWeights),
                pick_run: link.callback(|f: &'static str| Msg::SelectWeights(f.to_string())),
                replay_run: link.callback(Msg::ReplayRun),
                replay_at: link.callback(Msg::ReplayAt),
                snapshot_files: link.callback(Msg::SnapshotFiles),
            },
            _listeners: listeners,
            _panic_channel: panic_channel,
        };
        if let Some(Err(m)) = linked {
            app.error = Some(format!("the link names no model '{m}': showing {DEFAULT_ARCH}").into());
        }
        if let Some(s) = &followed.sample {
            app.load_sample(ctx, s);
        }
        app.restore = (followed.layer.is_some() || followed.channel.is_some()).then_some(followed);
        app.start_load(ctx);
        app.check_hub_cache();
        app.fetch_curves();
        app.follow_run_in_replay();
        app
    }

    fn update(&mut self, ctx: &Context<Self>, msg: Msg) -> bool {
        match msg {
            Msg::SelectModel(name) => {
                let Ok(arch) = find_arch(&name) else {
                    self.error = Some(format!("unknown model {name}").into());
                    return true;
                };
                self.restore = None;
                self.switch_model(ctx, arch);
            }
            Msg::SelectWeights(file) => {
                let Some(entry) = manifest().find(&file) else {
                    self.error = Some(format!("no weights file {file} is offered").into());
                    return true;
                };
                let Ok(arch) = find_arch(&entry.arch) else { return false };
                if self.model.weights.is_some_and(|w| w.file == entry.file) {
                    return false;
                }
                self.restore = None;
                self.switch_weights(ctx, arch, Some(entry));
            }
            Msg::Curve(entry, result) => match result {
                Ok(metrics) => {
                    self.curves.push(RunCurve { entry, metrics: Shared::new(metrics) });
                    let order = |e: &Entry| manifest().models.iter().position(|m| m.file == e.file);
                    self.curves.sort_by_key(|c| order(c.entry));
                }
                Err(e) => self.curves_error = Some(e.into()),
            },
            Msg::ReplayRun(file) if file == YOURS => return false,
            Msg::ReplayRun(file) => match manifest().find(&file) {
                Some(entry) => self.replay_shipped(entry),
                None => return false,
            },
            Msg::ReplayAt(at) => {
                self.replay.at = at.min(self.replay.epochs.len().saturating_sub(1));
                if !self.replay.fetched_all {
                    self.replay.fetched_all = true;
                    // The slider's own epoch first, then the rest for smooth sliding.
                    let mut all = self.replay.epochs.clone();
                    all.sort_by_key(|&e| Some(e) != self.replay.epochs.get(self.replay.at).copied());
                    for e in all {
                        self.fetch_snapshot(e);
                    }
                } else if let Some(&e) = self.replay.epochs.get(self.replay.at) {
                    self.fetch_snapshot(e);
                }
            }
            Msg::SnapshotFetched { job, epoch, result } => {
                if job != self.replay.job {
                    return false;
                }
                self.replay.fetching.retain(|&e| e != epoch);
                let arch = self.replay.run.as_ref().map(|r| r.arch().to_string()).unwrap_or_default();
                match result.and_then(|b| Snapshot::from_bytes(&b).map_err(|e| e.to_string())) {
                    Ok(s) if s.arch == arch && s.epoch == epoch => {
                        self.replay.snapshots.insert(epoch, Shared::new(s));
                    }
                    Ok(s) => {
                        self.error = Some(
                            format!(
                                "the snapshot of {arch} epoch {epoch} is of {} epoch {}",
                                s.arch, s.epoch
                            )
                            .into(),
                        )
                    }
                    Err(e) => self.error = Some(format!("cannot replay epoch {epoch}: {e}").into()),
                }
            }
            Msg::SnapshotFiles(files) => {
                self.read_snapshot_files(files);
                return false;
            }
            Msg::SnapshotsRead(read) => self.replay_yours(read),
            Msg::Navigate(to) => {
                if let Some(s) = to.sample.as_deref().filter(|s| Some(*s) != self.sample.as_deref()) {
                    self.load_sample(ctx, s);
                }
                match to.model.as_deref().map(find_arch) {
                    Some(Ok(arch)) if arch.name != self.model.arch.name => {
                        self.restore = Some(to);
                        self.switch_model(ctx, arch);
                    }
                    Some(Err(_)) => {
                        self.error =
                            Some(format!("the link names no model '{}'", to.model.unwrap_or_default()).into())
                    }
                    _ => self.restore_view(to),
                }
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
                        self.send_load(job, Request::Load { job, arch, weights: Some(bytes), seed: SEED });
                    }
                    Err(e) => {
                        self.load = LoadState::Failed;
                        self.error = Some(e.into());
                    }
                }
            }
            Msg::Worker(resp) => match resp {
                Response::Loaded { job, filters, ms, memory } => {
                    self.load_answered(job);
                    self.worker_memory = memory;
                    if job != self.load_job {
                        return false;
                    }
                    self.load = LoadState::Ready { ms };
                    self.filters = filters.map(Shared::new);
                    if let Some(to) = self.restore.take() {
                        self.restore_view(to);
                    }
                    self.start_run();
                }
                Response::Ran(r) => {
                    if r.job != self.run_job {
                        return false;
                    }
                    self.running = false;
                    self.worker_memory = self.worker_memory.max(r.memory);
                    self.view = Some(InputView { rgba: Shared::new(rgb_to_rgba(&r.view)), side: r.side });
                    self.result = Some(Shared::new(r));
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
                    self.add_maps(maps);
                }
                Response::MapPart { job, node, shape, offset, values } => {
                    if job != self.run_job {
                        return false;
                    }
                    match self.map_parts.add(node, shape, offset, values) {
                        Some(map) => self.add_maps(vec![map]),
                        None => return false,
                    }
                }
                Response::Cam { job, cam } => {
                    if job != self.cam.job {
                        return false;
                    }
                    self.cam.job = 0;
                    self.cam.map = Some(Shared::new(cam));
                }
                Response::Erf { job, erf, .. } => {
                    if job != self.erf.job {
                        return false;
                    }
                    self.erf.job = 0;
                    self.erf.map = Some(Shared::new(erf));
                }
                Response::FileLate { job } => {
                    let Some(f) = self.file_load.as_ref().filter(|f| f.job == job) else { return false };
                    if let Err(e) = user_weights::post_file(f.token, &f.file) {
                        self.error = Some(format!("cannot load {}: {e}", f.name).into());
                    }
                    return false;
                }
                Response::Reading { job, done, total } => match &mut self.file_load {
                    Some(f) if f.job == job => (f.done, f.total) = (done, total),
                    _ => return false,
                },
                Response::LoadedFile { job, arch, shortcut_b, note, filters, ms, memory } => {
                    let Some(load) = self.file_load.take_if(|f| f.job == job) else { return false };
                    if let (Some((_, w, file)), Ok(base)) =
                        (self.hub.loading.take_if(|(j, ..)| *j == job), &self.hub.base)
                    {
                        let base = base.clone();
                        wasm_bindgen_futures::spawn_local(async move { hub::keep(w, &base, &file).await });
                        // Asked again next time: keeping it may have failed.
                        self.hub.cached = None;
                    }
                    self.worker_memory = memory;
                    let Ok(arch) = find_arch(&arch) else { return false };
                    let graph = match shortcut_b {
                        true => arch.graph_with(resnet_core::ShortcutOption::B),
                        false => arch.graph(),
                    };
                    let summary =
                        graph.summary(None).expect("every architecture of the zoo fits its own input");
                    self.show_model(ModelView {
                        arch,
                        trained: true,
                        weights: None,
                        graph: Shared::new(graph),
                        summary: Shared::new(summary),
                    });
                    // The model is the worker's now: answers to an earlier `Load` are stale.
                    self.next_job += 1;
                    self.load_job = self.next_job;
                    self.load = LoadState::Ready { ms };
                    self.filters = filters.map(Shared::new);
                    self.result = None;
                    self.view = None;
                    self.clear_maps();
                    self.user_file = Some(UserFile {
                        name: load.name,
                        origin: load.origin,
                        arch: arch.name,
                        note: note.map(Into::into),
                    });
                    self.error = None;
                    self.start_run();
                }
                Response::Error { job, message } => {
                    // An answer to work the page no longer waits for (a Grad-CAM asked of the
                    // model before a switch) is no news to the user.
                    let file_job = self.file_load.as_ref().is_some_and(|f| f.job == job);
                    let waited = file_job
                        || [self.load_job, self.run_job, self.cam.job, self.erf.job, self.building]
                            .contains(&job);
                    if !waited {
                        self.load_answered(job);
                        return false;
                    }
                    // A bad weights file: the banner says why, the previous model stays.
                    if self.file_load.as_ref().is_some_and(|f| f.job == job) {
                        self.file_load = None;
                        self.hub.loading = None;
                    }
                    if job == self.cam.job {
                        self.cam.job = 0;
                    }
                    if job == self.erf.job {
                        self.erf.job = 0;
                    }
                    self.load_answered(job);
                    if job == self.load_job && !matches!(self.load, LoadState::Ready { .. }) {
                        self.load = LoadState::Failed;
                    }
                    if job == self.run_job {
                        self.running = false;
                        self.requested.clear();
                    }
                    self.error = Some(message.into());
                }
            },
            Msg::Painted => {
                self.maps_after_paint = None;
                self.request_maps();
                self.request_cam();
                if let Some(cam) = &mut self.camera {
                    cam.painted.push_back(now_ms());
                    if cam.painted.len() > 10 {
                        cam.painted.pop_front();
                    }
                    ctx.link().send_message(Msg::CameraFrame);
                }
            }
            Msg::Camera(true) => {
                if self.camera.is_some() || self.camera_opening {
                    return false;
                }
                self.camera_opening = true;
                let link = ctx.link().clone();
                wasm_bindgen_futures::spawn_local(async move {
                    link.send_message(Msg::CameraOpened(Camera::open().await.map(Rc::new)));
                });
            }
            Msg::Camera(false) => {
                self.camera = None; // dropping it stops its tracks
                self.camera_opening = false;
            }
            Msg::CameraOpened(result) => {
                if !self.camera_opening {
                    return false; // stopped (or an image chosen) while the browser asked: drop it
                }
                self.camera_opening = false;
                match result {
                    Ok(camera) => {
                        self.camera = Some(CameraState { camera, painted: VecDeque::new() });
                        ctx.link().send_message(Msg::CameraFrame);
                    }
                    Err(e) => self.error = Some(e.into()),
                }
            }
            Msg::CameraFrame => {
                let Some(cam) = &self.camera else { return false };
                let (camera, link) = (cam.camera.clone(), ctx.link().clone());
                wasm_bindgen_futures::spawn_local(async move {
                    link.send_message(Msg::CameraDecoded(camera.frame().await));
                });
                return false;
            }
            Msg::CameraDecoded(result) => {
                if self.camera.is_none() {
                    return false;
                }
                match result {
                    Ok(img) => {
                        self.image = Some(img);
                        self.sample = None;
                        self.start_run();
                    }
                    // The first frames can come before the video has a picture: try again soon.
                    Err(_) => {
                        let link = ctx.link().clone();
                        Timeout::new(100, move || link.send_message(Msg::CameraFrame)).forget();
                        return false;
                    }
                }
            }
            Msg::WorkerPanicked(text) => {
                self.error = Some(format!("the inference worker crashed ({text}); it was restarted").into());
                self.running = false;
                self.worker = spawn_worker(ctx.link());
                (self.building, self.pending_load, self.worker_memory) = (0, None, 0.0);
                self.start_load(ctx);
            }
            Msg::File(file) if events::is_snapshot_file(&file.name()) => {
                self.read_snapshot_files(vec![file]);
                return false;
            }
            Msg::File(file) if user_weights::is_weights_file(&file.name()) => self.load_weights_file(file),
            Msg::File(file) => {
                self.camera = None;
                self.camera_opening = false;
                self.decoding = true;
                self.decoding_sample = None;
                let link = ctx.link().clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let blob: &Blob = file.as_ref();
                    link.send_message(Msg::Decoded(decode_blob(blob, &file.name()).await));
                });
            }
            Msg::Sample(img, name) => {
                self.camera = None;
                self.camera_opening = false;
                self.decoding = true;
                self.decoding_sample = sample_name(name.trim_end_matches(".jpg")).map(str::to_string);
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
                        self.sample = self.decoding_sample.take();
                        self.start_run();
                    }
                    // The previous image and its results stay.
                    Err(e) => self.error = Some(e.into()),
                }
            }
            Msg::SelectLayer(node) | Msg::ShowLayer(node) if node >= self.model.graph.nodes.len() => {
                return false
            }
            Msg::CamDue => {
                self.cam_timer = None;
                self.request_cam();
            }
            Msg::SelectLayer(node) => self.select_layer(node),
            Msg::ShowLayer(node) => {
                self.select_layer(node);
                self.scroll_to_maps = true;
            }
            Msg::CamClass(class) => {
                self.cam.class = Some(class);
                self.request_cam();
            }
            Msg::CamMethod(method) => {
                self.cam.method = method;
                self.request_cam();
            }
            Msg::CamOpacity(o) => self.cam.opacity = o.clamp(0.0, 1.0),
            Msg::SelectChannel(c) => self.channel = c,
            Msg::Dragging(on) => {
                if self.dragging == on {
                    return false;
                }
                self.dragging = on;
            }
            Msg::PickFilter(c) => {
                let Some(node) = self.filters.as_ref().map(|f| f.node) else { return false };
                self.select_layer(node);
                self.channel = c;
                self.scroll_to_maps = true;
            }
            Msg::Unit(y, x) => {
                if self.result.is_none() || self.running {
                    return false;
                }
                let rows = &self.model.summary.layers;
                let channels = rows.get(self.selected.wrapping_sub(1)).map_or(1, |r| r.out_shape[0]);
                self.next_job += 1;
                self.erf.job = self.next_job;
                let channel = self.channel.min(channels.saturating_sub(1));
                self.worker.send(Request::Erf { job: self.erf.job, layer: self.selected, channel, y, x });
            }
            Msg::HubCached(arch, cached) => {
                self.hub.cached = Some((arch, cached));
                return arch == self.model.arch.name;
            }
            Msg::HubFetch => self.fetch_hub_weights(),
            Msg::HubCancel => self.hub.cancel(),
            Msg::HubProgress { job, done, total } => match &mut self.hub.download {
                Some(d) if d.job == job => (d.done, d.total) = (done, total),
                _ => return false,
            },
            Msg::HubDone { job, result } => {
                let Some(d) = self.hub.download.take_if(|d| d.job == job) else { return false };
                let w = d.weights;
                match result {
                    Ok(file) => {
                        let origin =
                            format!("pretrained: torchvision's ImageNet weights ({}, {})", w.repo, w.licence);
                        self.load_file(file.clone(), Some(origin.into()));
                        let downloaded = d.abort.is_some();
                        self.hub.loading =
                            self.file_load.as_ref().filter(|_| downloaded).map(|f| (f.job, w, file));
                    }
                    Err(e) => {
                        self.error =
                            Some(format!("cannot fetch the pretrained weights of {}: {e}", w.arch).into())
                    }
                }
            }
            Msg::Error(e) => self.error = Some(e.into()),
            Msg::DismissError => self.error = None,
        }
        true
    }

    /// Keeps the address's hash on what is shown (not while a followed link is still being
    /// restored: its layer would be overwritten by the default one).
    fn rendered(&mut self, _ctx: &Context<Self>, _first: bool) {
        // Released once the new model's maps are on screen, or nothing more is coming.
        let settled = match self.load {
            LoadState::Ready { .. } => self.image.is_none() || self.maps.contains_key(&self.selected),
            LoadState::Failed => true,
            _ => false,
        };
        if self.holding_heights && (settled || self.error.is_some()) {
            release_panel_heights();
            self.holding_heights = false;
        }
        // After the render: scrolled before it, Chrome's scroll anchoring put the page back
        // where the click was once the maps panel changed size.
        if std::mem::take(&mut self.scroll_to_maps) {
            scroll_to_maps();
        }
        if self.restore.is_some() {
            return;
        }
        let hash = self.deep_link().to_hash();
        if hash != self.written_hash {
            link::write(&hash);
            self.written_hash = hash;
        }
    }

    fn view(&self, _ctx: &Context<Self>) -> Html {
        let (m, on) = (&self.model, &self.on);
        let (maps, stale) = self.shown_maps();
        html! {
            <>
            <Header model={m.clone()} load={self.load.clone()} running={self.running} on_model={on.select_model.clone()}
                on_weights={on.select_weights.clone()}
                from_hub={self.user_file.as_ref().is_some_and(|u| u.origin.is_some())} />
            <UserWeights loading={self.file_load.clone()} current={self.user_file.clone()} />
            { for self.hub_offer().map(|offer| html! {
                <HubWeightsOffer offer={offer} on_fetch={on.hub_fetch.clone()} on_cancel={on.hub_cancel.clone()} />
            }) }
            { match &self.error {
                Some(e) => html! { <ErrorBanner message={e.clone()} on_dismiss={on.dismiss_error.clone()} /> },
                None => html! {},
            } }
            <main>
                <DropZone
                    on_file={on.file.clone()}
                    on_sample={on.sample.clone()}
                    image={self.image.as_ref().map(|i| (i.name.clone(), i.width, i.height))}
                    view={self.view.clone()}
                    busy={self.decoding}
                    camera={self.camera.as_ref().map(CameraState::fps)}
                    camera_opening={self.camera_opening}
                    dragging={self.dragging}
                    on_camera={on.camera.clone()}
                />
                <Prediction
                    result={self.result.clone()}
                    labels={m.arch.dataset.labels()}
                    trained={m.trained}
                    arch={m.arch.name}
                    has_image={self.image.is_some()}
                    running={self.running}
                    cam_class={self.cam.map.as_ref().map(|m| m.class)}
                    on_class={on.cam_class.clone()}
                />
                <CamPanel
                    view={self.view.clone()}
                    cam={self.cam.map.clone()}
                    layer={self.cam.map.as_ref().map_or(String::new(), |c| m.graph.nodes[c.layer.min(m.graph.nodes.len() - 1)].name.clone())}
                    label={self.cam.map.as_ref().map_or(String::new(), |c| class_name(m.arch, c.class))}
                    method={self.cam.method}
                    opacity={self.cam.opacity}
                    trained={m.trained}
                    busy={self.cam.job != 0 || self.running}
                    on_opacity={on.cam_opacity.clone()}
                    on_method={on.cam_method.clone()}
                />
                <Filters bank={self.filters.clone()} graph={m.graph.clone()} on_pick={on.pick_filter.clone()} />
                <Activations
                    graph={m.graph.clone()}
                    summary={m.summary.clone()}
                    selected={self.selected}
                    maps={maps}
                    stale={stale}
                    view={self.view.clone()}
                    has_result={self.result.is_some()}
                    on_select={on.select_layer.clone()}
                    channel={self.channel}
                    on_channel={on.select_channel.clone()}
                    erf={self.erf.map.clone()}
                    erf_busy={self.erf.job != 0}
                    on_unit={on.unit.clone()}
                    labels={m.arch.dataset.labels()}
                />
                <ResidualStream graph={m.graph.clone()} result={self.result.clone()} running={self.running} on_select={on.show_layer.clone()} />
                <LayerTable graph={m.graph.clone()} summary={m.summary.clone()} selected={self.selected} on_select={on.show_layer.clone()} result={self.result.clone()} />
                <Diagram graph={m.graph.clone()} summary={m.summary.clone()} selected={self.selected} on_select={on.show_layer.clone()} result={self.result.clone()} />
                <Degradation runs={self.curves.clone()} current={m.weights.map(|w| AttrValue::from(w.file.clone()))}
                    cursor={self.replay.run.as_ref().and_then(|r| match r {
                        ReplayRun::Shipped(e) => Some((e.file.as_str(), *self.replay.epochs.get(self.replay.at)?)),
                        ReplayRun::Yours { .. } => None,
                    })}
                    on_pick={on.pick_run.clone()} error={self.curves_error.clone()} />
                <Replay runs={manifest().runs().filter(|e| e.snapshots.is_some()).collect::<Vec<_>>()}
                    run={self.replay.run.clone()} epochs={self.replay.epochs.clone()} at={self.replay.at}
                    snapshot={self.replay_snapshot()} busy={!self.replay.fetching.is_empty()}
                    on_run={on.replay_run.clone()} on_at={on.replay_at.clone()} on_files={on.snapshot_files.clone()} />
            </main>
            <Footer />
            </>
        }
    }
}
