//! The offer of pretrained weights for an untrained ImageNet ResNet: one button that fetches
//! torchvision's weights from the hub (nothing is downloaded unless it is clicked), or loads
//! them from this browser's cache after an earlier visit; while downloading, its progress and
//! a cancel button.

use resnet_core::hub::HubWeights;
use yew::prelude::*;

#[derive(Clone, Debug, PartialEq)]
pub struct HubOffer {
    pub weights: &'static HubWeights,
    /// The hub's address, or why the page's `?hub=` is unusable.
    pub base: Result<AttrValue, AttrValue>,
    /// In this browser's cache (None: not known yet).
    pub cached: Option<bool>,
    /// Downloading: bytes done and the total when the hub says.
    pub download: Option<(f64, Option<f64>)>,
}

#[derive(Properties, PartialEq)]
pub struct Props {
    pub offer: HubOffer,
    pub on_fetch: Callback<()>,
    pub on_cancel: Callback<()>,
}

#[function_component(HubWeightsOffer)]
pub fn hub_weights_offer(p: &Props) -> Html {
    let o = &p.offer;
    let w = o.weights;
    let mb = |b: f64| format!("{:.0} MB", b / 1e6);
    let base = match &o.base {
        Ok(b) => b.clone(),
        Err(e) => {
            return html! {
                <p class="hub-weights" data-testid="hub-weights" data-state="unusable">{ format!("Pretrained weights cannot be fetched: {e}.") }</p>
            }
        }
    };
    let host = crate::hub::host(&base).to_string();
    if let Some((done, total)) = o.download {
        let of = total.map_or(String::new(), |t| format!(" of {}", mb(t)));
        let on_cancel = p.on_cancel.reform(|_: MouseEvent| ());
        return html! {
            <p class="hub-weights" data-testid="hub-weights" data-state="downloading" role="status">
                <span class="spinner"></span>
                { format!("downloading {} from {host}: {}{of} ", w.repo, mb(done)) }
                <progress data-testid="hub-progress" max={total.unwrap_or(0.0).max(done).max(1.0).to_string()} value={done.to_string()}></progress>
                <button type="button" data-testid="hub-cancel" onclick={on_cancel}>{ "cancel" }</button>
            </p>
        };
    }
    let on_fetch = p.on_fetch.reform(|_: MouseEvent| ());
    let name = w.arch_info().name;
    let (state, button, words) = match o.cached {
        Some(true) => (
            "cached",
            "load pretrained weights",
            format!(" torchvision's ImageNet weights for {name}, kept in this browser from an earlier visit: no download ({}, {}).", w.repo, w.licence),
        ),
        _ => (
            "offer",
            "fetch pretrained weights",
            format!(
                " torchvision's ImageNet weights for {name}: {} from {host} ({}, {}), kept in this browser for later visits.",
                mb(w.approx_bytes() as f64),
                w.repo,
                w.licence
            ),
        ),
    };
    html! {
        <p class="hub-weights" data-testid="hub-weights" data-state={state}>
            <button type="button" data-testid="hub-fetch" onclick={on_fetch}>{ button }</button>
            <span class="muted">{ words }</span>
        </p>
    }
}
