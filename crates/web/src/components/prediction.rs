//! Panel 1: top-5 classes with probability bars, and the inference time.

use yew::prelude::*;

use super::Shared;
use crate::protocol::RunResult;
use crate::viz::top_k;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub result: Option<Shared<RunResult>>,
    /// Class names, where the dataset has them (else "class i").
    pub labels: Option<&'static [&'static str]>,
    pub trained: bool,
    pub arch: &'static str,
    pub has_image: bool,
    pub running: bool,
    /// The class the heat map explains; a click on another class asks for its map.
    pub cam_class: Option<usize>,
    pub on_class: Callback<usize>,
}

/// What a screen reader hears when the prediction changes.
fn announcement(p: &Props) -> String {
    match (&p.result, p.trained) {
        _ if p.running => "classifying…".to_string(),
        (None, _) => String::new(),
        (Some(_), false) => format!("{} is untrained: no prediction", p.arch),
        (Some(r), true) => {
            let (i, prob) = top_k(&r.probs, 1)[0];
            let name =
                p.labels.and_then(|l| l.get(i)).map_or_else(|| format!("class {i}"), |s| s.to_string());
            format!("prediction: {name}, {:.1} %", prob * 100.0)
        }
    }
}

/// "(the middle of 5 runs, 31.2 to 36.0 ms)", or for one run "(one run: a big net)".
fn runs_in_words(runs: &[f64]) -> String {
    if runs.len() < 2 {
        return "(one run: this net is too slow to time more than once)".to_string();
    }
    let lo = runs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = runs.iter().copied().fold(0.0, f64::max);
    format!("(the middle of {} runs, which took {lo:.1} to {hi:.1} ms)", runs.len())
}

/// "one thread", or "4 threads" where the page is cross-origin isolated and the threaded
/// worker runs.
fn threads_in_words(threads: u32) -> Html {
    match threads {
        0 | 1 => html! { "one thread" },
        n => html! { <><span data-testid="threads">{ n }</span>{ " threads" }</> },
    }
}

#[function_component(Prediction)]
pub fn prediction(p: &Props) -> Html {
    let timing = |r: &RunResult| {
        html! {
            <p class="timing" data-testid="timing" data-runs={r.inference_runs.len().to_string()}>
                { "The net takes " }<strong><span data-testid="inference-ms">{ format!("{:.1}", r.inference_ms) }</span>{ " ms" }</strong>
                { " to classify this image " }
                <span class="muted">{ runs_in_words(&r.inference_runs) }
                    { " — in WebAssembly with " }<span data-testid="instructions">{ &r.instructions }</span>
                    { ", on " }{ threads_in_words(r.threads) }
                    { format!(" of this computer. Keeping every layer's output for the panels below costs another {:.1} ms.", r.taps_ms) }</span>
            </p>
        }
    };
    let body = match (&p.result, p.trained) {
        (None, _) => html! {
            <p class="muted">{ if p.has_image { html! { <><span class="spinner"></span>{ "classifying the image as soon as the model is ready…" }</> } } else { html! { "Drop an image or click a sample to classify it." } } }</p>
        },
        (Some(r), false) => html! {
            <>
                <p class="untrained-note" data-testid="untrained-note">
                    <span class="badge untrained">{ "untrained" }</span>
                    { format!(" {} has random weights: its outputs mean nothing, so no classes are shown. Its filters, activations and shapes below are real.", p.arch) }
                </p>
                { timing(r) }
            </>
        },
        (Some(r), true) => {
            let top = top_k(&r.probs, 5);
            let name = |i: usize| {
                p.labels.and_then(|l| l.get(i)).map_or_else(|| format!("class {i}"), |s| s.to_string())
            };
            html! {
                <>
                    <p class="top-class">
                        <span data-testid="top-class">{ name(top[0].0) }</span>
                        <span class="muted">{ format!(" {:.1} %", top[0].1 * 100.0) }</span>
                    </p>
                    <ol class="topk">
                        { for top.iter().map(|&(i, prob)| html! {
                            <li data-testid="topk-row" data-class={name(i)} class={classes!((p.cam_class == Some(i)).then_some("explained"))}>
                                <button type="button" class="label link" data-testid="topk-pick"
                                    aria-pressed={(p.cam_class == Some(i)).to_string()}
                                    title={format!("where the net sees {}", name(i))}
                                    onclick={ let cb = p.on_class.clone(); move |_| cb.emit(i) }>{ name(i) }</button>
                                <span class="bar"><span style={format!("width: {:.2}%", prob * 100.0)}></span></span>
                                <span class="pct">{ format!("{:.1} %", prob * 100.0) }</span>
                            </li>
                        }) }
                    </ol>
                    <p class="muted domain-note" data-testid="domain-note">{ format!(
                        "{} knows only its {} classes: it picks among them for any image, even one of none of them — a high percentage says the others fit less, not that the picture is one.",
                        p.arch, r.probs.len()
                    ) }</p>
                    { timing(r) }
                </>
            }
        }
    };
    html! {
        <section class="panel prediction" data-testid="prediction" aria-label="Prediction" data-busy={p.running.to_string()}>
            <h2>{ "Prediction" }</h2>
            <p class="visually-hidden" role="status" aria-live="polite" data-testid="prediction-announcement">{ announcement(p) }</p>
            { body }
        </section>
    }
}
