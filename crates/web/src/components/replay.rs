//! Training replay: a slider over a run's epochs swaps in that epoch's snapshot — the first
//! conv's filters growing out of noise into edge and colour detectors, and the maps two fixed
//! test images give at the stem and at each stage's end — with the epoch's metrics; the chart's
//! cursor follows. Runs trained here come from the manifest; a user can choose (or drop) the
//! `snapshots/epoch-NNN.safetensors` files of their own `resnet train --snapshots` run.

use resnet_core::arch::CIFAR10_CLASSES;
use resnet_core::manifest::Entry;
use resnet_core::train::Snapshot;
use web_sys::File;
use yew::prelude::*;

use super::{Raster, Shared};
use crate::viz::{filter_tile, rgb_to_rgba, snapshot_map_rgba};

/// Whose run the replay shows.
#[derive(Clone, Debug, PartialEq)]
pub enum ReplayRun {
    Shipped(&'static Entry),
    /// Snapshot files of the user's: their architecture, from the files.
    Yours {
        arch: String,
    },
}

impl ReplayRun {
    pub fn arch(&self) -> &str {
        match self {
            ReplayRun::Shipped(e) => &e.arch,
            ReplayRun::Yours { arch } => arch,
        }
    }
}

#[derive(Properties, PartialEq)]
pub struct Props {
    /// The shipped runs with snapshots.
    pub runs: Vec<&'static Entry>,
    pub run: Option<ReplayRun>,
    /// The epochs the slider steps through (ascending).
    pub epochs: Vec<usize>,
    /// The slider's position in `epochs`.
    pub at: usize,
    /// The snapshot shown: `epochs[at]`'s, or the nearest one already here while it comes.
    pub snapshot: Option<Shared<Snapshot>>,
    pub busy: bool,
    /// A shipped run picked (its weights file's name), or "yours".
    pub on_run: Callback<String>,
    pub on_at: Callback<usize>,
    pub on_files: Callback<Vec<File>>,
}

/// The value the run picker gives for the user's own files.
pub const YOURS: &str = "yours";

fn class(label: u32) -> String {
    CIFAR10_CLASSES.get(label as usize).map_or_else(|| format!("class {label}"), |c| c.to_string())
}

fn metrics_line(s: &Snapshot) -> String {
    match &s.metrics {
        None => "the initial weights (random, before any training)".into(),
        Some(m) => {
            let test =
                m.val_acc.map_or(String::new(), |a| format!(", test error {:.1} %", (1.0 - a) * 100.0));
            format!(
                "after epoch {}: train error {:.1} %{test}, train loss {:.3}, learning rate {}",
                m.epoch,
                (1.0 - m.train_acc) * 100.0,
                m.train_loss,
                resnet_core::format::lr(m.lr)
            )
        }
    }
}

#[function_component(Replay)]
pub fn replay(p: &Props) -> Html {
    let on_change_run = super::select_value(p.on_run.clone());
    let on_slide = {
        let cb = p.on_at.clone();
        Callback::from(move |e: InputEvent| {
            let input: web_sys::HtmlInputElement = e.target_unchecked_into();
            if let Ok(v) = input.value().parse::<usize>() {
                cb.emit(v)
            }
        })
    };
    let on_files = {
        let cb = p.on_files.clone();
        Callback::from(move |e: Event| {
            let input: web_sys::HtmlInputElement = e.target_unchecked_into();
            let files = input.files().map_or(vec![], |l| (0..l.length()).filter_map(|i| l.get(i)).collect());
            input.set_value("");
            if !files.is_empty() {
                cb.emit(files)
            }
        })
    };
    let tiles = use_memo(p.snapshot.clone(), |s| {
        s.as_ref().map_or(vec![], |s| {
            let [o, i, k, _] = s.filter_shape;
            let n = i * k * k;
            (0..o)
                .filter_map(|f| s.filters.get(f * n..(f + 1) * n))
                .map(|w| Shared::new(filter_tile(w, i, k).0))
                .collect()
        })
    });
    let pictures = use_memo(p.snapshot.clone(), |s| {
        s.as_ref().map_or(vec![], |s| {
            let bytes = s.side * s.side * 3;
            (0..s.labels.len())
                .map(|n| {
                    let image = Shared::new(rgb_to_rgba(
                        s.images.get(n * bytes..(n + 1) * bytes).unwrap_or_default(),
                    ));
                    let layers = s
                        .layers
                        .iter()
                        .map(|l| {
                            (0..l.channels)
                                .filter_map(|c| l.map(n, c))
                                .map(|(m, r)| Shared::new(snapshot_map_rgba(m, r)))
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>();
                    (image, layers)
                })
                .collect::<Vec<_>>()
        })
    });
    let last = p.epochs.len().saturating_sub(1);
    let at = p.at.min(last);
    let epoch = p.epochs.get(at).copied();
    let yours = matches!(p.run, Some(ReplayRun::Yours { .. }));
    html! {
        <section class="panel replay" aria-label="Training replay" data-testid="replay">
            <h2>{ "Training replay" }</h2>
            <div class="replay-controls">
                <label>{ "Run " }
                    <select data-testid="replay-run" onchange={on_change_run}>
                        { for p.runs.iter().map(|e| {
                            let picked = matches!(&p.run, Some(ReplayRun::Shipped(r)) if r.file == e.file);
                            html! { <option value={e.file.clone()} selected={picked}>{ format!("{} — {}", e.arch, e.label()) }</option> }
                        }) }
                        { for p.run.as_ref().filter(|_| yours).map(|r| html! {
                            <option value={YOURS} selected=true>{ format!("{} — your snapshot files", r.arch()) }</option>
                        }) }
                    </select>
                </label>
                <label class="file-button">{ "replay your own run…" }
                    <input type="file" accept=".safetensors" multiple=true data-testid="replay-files" onchange={on_files}
                        title="the snapshots/epoch-NNN.safetensors files of a `resnet train --snapshots` run" />
                </label>
            </div>
            { match epoch {
                None => html! { <p class="muted">{ "No run to replay: choose one above, or your own run's snapshot files (resnet train --snapshots)." }</p> },
                Some(epoch) => html! {
                    <>
                    <label class="replay-slider">
                        <span>{ format!("epoch {epoch} of {}", p.epochs[last]) }</span>
                        <input type="range" data-testid="replay-slider" min="0" max={last.to_string()} value={at.to_string()}
                            aria-valuetext={format!("epoch {epoch}")} oninput={on_slide} />
                    </label>
                    { match &p.snapshot {
                        None => html! { <p class="muted"><span class="spinner"></span>{ format!("loading epoch {epoch}…") }</p> },
                        Some(s) => html! {
                            <>
                            <p data-testid="replay-metrics" class={classes!(p.busy.then_some("stale"))}>
                                { metrics_line(s) }
                                { if s.epoch != epoch { html! { <span class="muted">{ format!(" (showing epoch {} while {epoch} loads)", s.epoch) }</span> } } else { html! {} } }
                            </p>
                            <div class="replay-body">
                                <figure class="replay-filters">
                                    <figcaption>{ format!("{}: {} filters", s.filter_layer, s.filter_shape[0]) }</figcaption>
                                    <div class="filter-grid" data-testid="replay-filters">
                                        { for tiles.iter().enumerate().map(|(f, rgba)| html! {
                                            <Raster rgba={rgba.clone()} width={s.filter_shape[3] as u32} height={s.filter_shape[2] as u32}
                                                class="pixelated filter-tile" title={format!("filter {f} at epoch {}", s.epoch)} />
                                        }) }
                                    </div>
                                </figure>
                                <div class="replay-maps" data-testid="replay-maps">
                                    { for pictures.iter().enumerate().map(|(n, (image, layers))| html! {
                                        <figure class="replay-image">
                                            <figcaption>{ format!("test image {}: {}", n + 1, class(s.labels[n])) }</figcaption>
                                            <div class="replay-rows">
                                                <Raster rgba={image.clone()} width={s.side as u32} height={s.side as u32} class="pixelated replay-input"
                                                    label={format!("the test image, a {}", class(s.labels[n]))} />
                                                { for layers.iter().zip(&s.layers).map(|(maps, l)| html! {
                                                    <div class="replay-layer">
                                                        <span class="replay-layer-name">{ format!("{} · {}/{} ch.", l.name, l.channels, l.total_channels) }</span>
                                                        { for maps.iter().enumerate().map(|(c, rgba)| html! {
                                                            <Raster rgba={rgba.clone()} width={l.width as u32} height={l.height as u32} class="pixelated replay-map"
                                                                title={format!("{} channel {c}, each map on its own scale", l.name)} />
                                                        }) }
                                                    </div>
                                                }) }
                                            </div>
                                        </figure>
                                    }) }
                                </div>
                            </div>
                            </>
                        },
                    } }
                    </>
                },
            } }
        </section>
    }
}
