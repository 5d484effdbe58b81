//! "Why residual?": the training and test error of the nets trained here against epoch, drawn as
//! He et al. draw their Figure 6 — plain nets on the left, ResNets on the right, thin = train,
//! bold = test — from the shipped runs' metrics. A curve is a button: it loads that model, so
//! its activations and residual stream can be compared on the same image.

use resnet_core::manifest::Entry;
use resnet_core::train::EpochMetrics;
use yew::prelude::*;

use super::Shared;
use crate::viz::{error_axis, polyline};

/// One run of the chart: its weights' entry and its metrics, one line per epoch.
#[derive(Clone, PartialEq)]
pub struct RunCurve {
    pub entry: &'static Entry,
    pub metrics: Shared<Vec<EpochMetrics>>,
}

#[derive(Properties, PartialEq)]
pub struct Props {
    pub runs: Vec<RunCurve>,
    /// The weights file the explorer runs: its curves are marked.
    pub current: Option<AttrValue>,
    /// The replay's run (its weights file) and epoch: a cursor on that run's plot, where the
    /// chart draws it.
    pub cursor: Option<(&'static str, usize)>,
    /// A curve clicked: load its weights file.
    pub on_pick: Callback<&'static str>,
    /// Runs still being fetched (or failed), with their error.
    #[prop_or_default]
    pub error: Option<AttrValue>,
}

const W: f64 = 320.0;
const H: f64 = 200.0;
/// Plot area inside the SVG: left, top, right, bottom margins.
const M: (f64, f64, f64, f64) = (34.0, 8.0, 8.0, 26.0);

/// Depth's colour, as the paper tells 20 and 56 layers apart.
fn colour(arch: &str) -> &'static str {
    if arch.ends_with("56") {
        "#b2182b"
    } else if arch.ends_with("20") {
        "#2166ac"
    } else {
        "#5e3c99"
    }
}

fn depth(arch: &str) -> String {
    arch.rsplit(|c: char| !c.is_ascii_digit()).next().map_or(arch.to_string(), |d| format!("{d}-layer"))
}

/// Labelled epochs: every one on a short run, about five on a longer one.
fn epoch_step(epochs: usize) -> usize {
    match epochs {
        0..=10 => 1,
        11..=30 => 5,
        n => n.div_ceil(50) * 10,
    }
}

/// The last test error of `arch`'s run, where it is in the chart.
fn final_error(runs: &[RunCurve], arch: &str) -> Option<(f64, usize)> {
    let r = runs.iter().find(|r| r.entry.arch == arch)?;
    let m = r.metrics.last()?;
    Some(((1.0 - m.val_acc?) * 100.0, m.epoch))
}

/// What these runs show, in words: each family's deeper net against its shallower one.
fn finding(runs: &[RunCurve]) -> Option<String> {
    let pair = |shallow: &str, deep: &str, name: &str| {
        let ((a, ea), (b, eb)) = (final_error(runs, shallow)?, final_error(runs, deep)?);
        let verdict = if b > a { "worse" } else { "better" };
        let epochs =
            if ea == eb { format!("after {ea} epochs") } else { format!("after {eb} and {ea} epochs") };
        Some(format!("{name}-56 ends at {b:.1} % test error, {verdict} than {name}-20's {a:.1} % ({epochs})"))
    };
    let parts: Vec<String> =
        [pair("cifar-plain20", "cifar-plain56", "plain"), pair("cifar-resnet20", "cifar-resnet56", "ResNet")]
            .into_iter()
            .flatten()
            .collect();
    (!parts.is_empty()).then(|| format!("Here: {}.", parts.join("; ")))
}

#[function_component(Degradation)]
pub fn degradation(p: &Props) -> Html {
    if p.runs.is_empty() {
        return html! {
            <section class="panel degradation" aria-label="Why residual?" data-testid="degradation-chart">
                <h2>{ "Why residual?" }</h2>
                { match &p.error {
                    Some(e) => html! { <p class="muted">{ format!("the training curves could not be loaded: {e}") }</p> },
                    None => html! { <p class="muted"><span class="spinner"></span>{ "loading the training curves…" }</p> },
                } }
            </section>
        };
    }
    let epochs = p.runs.iter().map(|r| r.metrics.len()).max().unwrap_or(1).max(1);
    let worst = p
        .runs
        .iter()
        .flat_map(|r| r.metrics.iter().flat_map(|m| [1.0 - m.train_acc, 1.0 - m.val_acc.unwrap_or(0.0)]))
        .fold(0.0f64, f64::max);
    let (y_max, ticks) = error_axis(worst * 100.0);
    let plot = |residual: bool| {
        let title = if residual { "ResNets" } else { "plain nets" };
        let runs: Vec<&RunCurve> =
            p.runs.iter().filter(|r| r.entry.arch.contains("resnet") == residual).collect();
        let (x0, y0, x1, y1) = (M.0, M.1, W - M.2, H - M.3);
        let x_of = |e: f64| x0 + (x1 - x0) * e / epochs as f64;
        let y_of = |err: f64| y1 - (y1 - y0) * (err / y_max).min(1.0);
        let area = ((x0, y0), (x1, y1), (epochs as f64, y_max));
        html! {
            <figure class="degradation-plot" data-testid={if residual { "plot-residual" } else { "plot-plain" }}>
                <figcaption>{ title }</figcaption>
                <svg viewBox={format!("0 0 {W} {H}")} role="group" aria-label={format!("{title}: error (%) against epoch")}>
                    { for ticks.iter().map(|&t| html! {
                        <g class="tick">
                            <line x1={x0.to_string()} x2={x1.to_string()} y1={y_of(t).to_string()} y2={y_of(t).to_string()} />
                            <text x={(x0 - 4.0).to_string()} y={(y_of(t) + 3.5).to_string()} text-anchor="end">{ format!("{t:.0}") }</text>
                        </g>
                    }) }
                    { for (0..=epochs).filter(|e| e % epoch_step(epochs) == 0).map(|e| html! {
                        <text x={x_of(e as f64).to_string()} y={(y1 + 11.0).to_string()} text-anchor="middle">{ e }</text>
                    }) }
                    <text class="axis-label" x={((x0 + x1) / 2.0).to_string()} y={(H - 3.0).to_string()} text-anchor="middle">{ "epoch" }</text>
                    <text class="axis-label" x="10" y={((y0 + y1) / 2.0).to_string()} text-anchor="middle"
                        transform={format!("rotate(-90 10 {})", (y0 + y1) / 2.0)}>{ "error %" }</text>
                    { for p.cursor.filter(|(file, _)| runs.iter().any(|r| r.entry.file == *file)).map(|(_, e)| html! {
                        <line class="cursor" data-testid="replay-cursor" x1={x_of(e as f64).to_string()} x2={x_of(e as f64).to_string()}
                            y1={y0.to_string()} y2={y1.to_string()} />
                    }) }
                    { for runs.iter().map(|r| {
                        let e = r.entry;
                        let train: Vec<(f64, f64)> = r.metrics.iter().map(|m| (m.epoch as f64, (1.0 - m.train_acc) * 100.0)).collect();
                        let test: Vec<(f64, f64)> = r.metrics.iter()
                            .filter_map(|m| m.val_acc.map(|a| (m.epoch as f64, (1.0 - a) * 100.0))).collect();
                        let last = |v: &[(f64, f64)]| v.last().map_or(f64::NAN, |p| p.1);
                        let label = format!("{}: train error {:.1} %, test error {:.1} % after {} epochs — load this model",
                            e.arch, last(&train), last(&test), r.metrics.len());
                        let pick = { let cb = p.on_pick.clone(); let f = e.file.as_str(); Callback::from(move |_: MouseEvent| cb.emit(f)) };
                        let keys = { let cb = p.on_pick.clone(); let f = e.file.as_str();
                            Callback::from(move |k: KeyboardEvent| if matches!(k.key().as_str(), "Enter" | " ") { k.prevent_default(); cb.emit(f) }) };
                        let current = p.current.as_deref() == Some(e.file.as_str());
                        html! {
                            <g class={classes!("run", current.then_some("current"))} data-testid={format!("curve-{}", e.arch)}
                                role="button" tabindex="0" aria-label={label.clone()} aria-pressed={current.to_string()}
                                onclick={pick} onkeydown={keys} style={format!("--run: {}", colour(&e.arch))}>
                                <title>{ label }</title>
                                <polyline class="hit" points={polyline(&test, area)} />
                                <polyline class="train" points={polyline(&train, area)} />
                                <polyline class="test" points={polyline(&test, area)} />
                            </g>
                        }
                    }) }
                </svg>
                <ul class="legend">
                    { for runs.iter().map(|r| {
                        let err = r.metrics.last().and_then(|m| m.val_acc).map_or(String::new(), |a| format!(" · test error {:.1} %", (1.0 - a) * 100.0));
                        html! { <li style={format!("--run: {}", colour(&r.entry.arch))}>{ format!("{}{err}", depth(&r.entry.arch)) }</li> }
                    }) }
                </ul>
            </figure>
        }
    };
    html! {
        <section class="panel degradation" aria-label="Why residual?" data-testid="degradation-chart">
            <h2>{ "Why residual?" }</h2>
            <p class="muted">{ "Nets trained here on CIFAR-10 with one schedule, drawn as He et al.'s Figure 6: thin lines are training error, bold lines test error. \
                The paper's finding: without shortcuts the deeper net is the worse one, even on its training set (the degradation problem); with them, depth helps. \
                Click a curve to load that model." }</p>
            { for finding(&p.runs).map(|f| html! { <p data-testid="degradation-finding">{ f }</p> }) }
            <div class="degradation-plots">{ plot(false) }{ plot(true) }</div>
        </section>
    }
}
