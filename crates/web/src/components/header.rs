//! The header: the model picker (pretrained models first), the model's loading status and what
//! the model is.

use resnet_core::hub::hub_weights;
use resnet_core::ZOO;
use yew::prelude::*;

use crate::app::{LoadState, ModelView};
use crate::fetch::{default_weights, manifest};
use crate::viz::thousands;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub model: ModelView,
    pub load: LoadState,
    pub running: bool,
    /// The name of the model picked.
    pub on_model: Callback<String>,
    /// A shipped weights file picked for the model (where it has more than one).
    pub on_weights: Callback<String>,
    /// The model runs the hub's pretrained weights (not a file of the user's).
    #[prop_or_default]
    pub from_hub: bool,
}

fn status(p: &Props) -> Html {
    match &p.load {
        LoadState::Fetching { done, total } => html! {
            <span class="status" data-testid="model-status" data-state="loading">
                { "downloading weights " }
                <progress max={total.unwrap_or(0.0).to_string()} value={done.to_string()}></progress>
                { format!(" {:.1} MB", done / 1e6) }
            </span>
        },
        LoadState::Building => html! {
            <span class="status" data-testid="model-status" data-state="loading">
                <span class="spinner"></span>{ if p.model.trained { "building the model…" } else { "building the model with random weights…" } }
            </span>
        },
        LoadState::Ready { ms } => html! {
            <span class="status" data-testid="model-status" data-state="ready">
                { format!("ready · built in {ms:.0} ms") }
                { if p.running { html!{ <> {" · "} <span class="spinner"></span>{ "running…" } </> } } else { html!{} } }
            </span>
        },
        LoadState::Failed => html! {
            <span class="status" data-testid="model-status" data-state="failed">{ "the model could not be loaded" }</span>
        },
    }
}

/// "copy link": the address (its hash holds model, layer, channel and sample) to the clipboard.
#[function_component(CopyLink)]
fn copy_link() -> Html {
    // `None`: not tried yet; then whether the clipboard took it.
    let copied = use_state(|| None::<bool>);
    let onclick = {
        let copied = copied.clone();
        Callback::from(move |_: MouseEvent| {
            let win = gloo::utils::window();
            let href = win.location().href().unwrap_or_default();
            let promise = win.navigator().clipboard().write_text(&href);
            let copied = copied.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let ok = wasm_bindgen_futures::JsFuture::from(promise).await.is_ok();
                copied.set(Some(ok));
                let reset = copied.clone();
                gloo::timers::callback::Timeout::new(2500, move || reset.set(None)).forget();
            });
        })
    };
    html! {
        <span class="copy-link">
            <button type="button" data-testid="copy-link" {onclick}
                title="copy a link to this view: model, layer, channel and sample">{ "copy link" }</button>
            <span role="status" aria-live="polite" data-testid="copy-link-status">{ match *copied {
                Some(true) => "link copied",
                Some(false) => "the clipboard refused: copy the address bar",
                None => "",
            } }</span>
        </span>
    }
}

#[function_component(Header)]
pub fn header(p: &Props) -> Html {
    let m = &p.model;
    let on_change = super::select_value(p.on_model.clone());
    let on_weights = super::select_value(p.on_weights.clone());
    let weights_url = |arch: &str| default_weights(arch).map(|w| w.file.as_str());
    // Pretrained models first: they are the ones that make real predictions.
    let zoo = ZOO
        .iter()
        .filter(|a| weights_url(a.name).is_some())
        .chain(ZOO.iter().filter(|a| weights_url(a.name).is_none()));
    let files: Vec<_> = manifest().for_arch(m.arch.name).collect();
    html! {
        <header>
            <h1>{ "ResNet explorer" }</h1>
            <label class="model">
                { "Model " }
                <select data-testid="model-select" onchange={on_change}>
                    { for zoo.map(|a| {
                        // A trained model without shipped weights runs the user's file.
                        let label = if a.name == m.arch.name && m.trained && weights_url(a.name).is_none() {
                            match p.from_hub {
                                true => format!("{} — pretrained on ImageNet (from the hub)", a.name),
                                false => format!("{} — your weights", a.name),
                            }
                        } else if let Some(w) = default_weights(a.name) {
                            format!("{} — {}", a.name, w.label())
                        } else if hub_weights(a.name).is_some() {
                            format!("{} — untrained (pretrained weights on request)", a.name)
                        } else {
                            format!("{} — untrained (random weights)", a.name)
                        };
                        html! { <option value={a.name} selected={a.name == m.arch.name}>{ label }</option> }
                    }) }
                </select>
            </label>
            { if files.len() > 1 && m.weights.is_some() { html! {
                <label class="weights">
                    { "Weights " }
                    <select data-testid="weights-select" onchange={on_weights}>
                        { for files.iter().map(|w| html! {
                            <option value={w.file.clone()} selected={m.weights.is_some_and(|c| c.file == w.file)}>{ w.label() }</option>
                        }) }
                    </select>
                </label>
            } } else { html! {} } }
            <span role="status" aria-live="polite">{ status(p) }</span>
            <CopyLink />
            <p class="description">
                { m.arch.description }
                { if m.trained { html!{} } else { html!{ <span class="badge untrained" data-testid="untrained-badge">{ "untrained" }</span> } } }
                { format!(" · input {}×{}×{} · {} parameters", m.graph.input.c, m.graph.input.h, m.graph.input.w, thousands(m.summary.total_params)) }
            </p>
        </header>
    }
}
