//! Panel 2: every first-layer filter as a tile (RGB when it reads RGB), min–max normalised per
//! filter; hover or click one to see it enlarged with its weights' range.

use resnet_core::Graph;
use yew::prelude::*;

use super::Shared;

use super::{group_keys, Raster};
use crate::protocol::FilterBank;
use crate::viz::filter_tile;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub bank: Option<Shared<FilterBank>>,
    pub graph: Shared<Graph>,
    /// A filter clicked: its channel of the first conv's output is wanted in the maps.
    pub on_pick: Callback<usize>,
}

#[function_component(Filters)]
pub fn filters(p: &Props) -> Html {
    let focus = use_state(|| 0usize);
    let tiles = use_memo(p.bank.clone(), |bank| {
        bank.as_ref()
            .map(|b| {
                let [o, i, k, _] = b.shape;
                let n = i * k * k;
                (0..o)
                    .map(|f| {
                        let (rgba, lo, hi) = filter_tile(&b.data[f * n..(f + 1) * n], i, k);
                        (Shared::new(rgba), lo, hi)
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    });
    let Some(bank) = &p.bank else {
        return html! {
            <section class="panel filters" aria-label="First-layer filters">
                <h2>{ "First-layer filters" }</h2>
                <p class="muted"><span class="spinner"></span>{ "loading the model…" }</p>
            </section>
        };
    };
    let [o, i, k, _] = bank.shape;
    let layer = &p.graph.nodes[bank.node].name;
    let f = (*focus).min(o.saturating_sub(1));
    let big = tiles.get(f).cloned();
    html! {
        <section class="panel filters" aria-label="First-layer filters">
            <h2>{ "First-layer filters" }</h2>
            <p class="muted">{ format!("{layer}: {o} filters of {i}×{k}×{k}, {}. Each tile is scaled to its own min–max.",
                if i == 3 { "shown as RGB" } else { "shown in grey" }) }</p>
            <div class="filter-layout">
                <div class="filter-grid" data-testid="filter-grid">
                    { for tiles.iter().enumerate().map(|(n, (rgba, lo, hi))| {
                        let select = { let focus = focus.clone(); Callback::from(move |_: MouseEvent| focus.set(n)) };
                        let focused = { let focus = focus.clone(); Callback::from(move |_: FocusEvent| focus.set(n)) };
                        let pick = { let (focus, cb) = (focus.clone(), p.on_pick.clone()); Callback::from(move |_: MouseEvent| { focus.set(n); cb.emit(n) }) };
                        // One Tab stop for the grid: arrows move between filters, Enter picks.
                        let keys = group_keys(p.on_pick.clone(), n, ".filter-grid", ".filter-tile");
                        html! {
                            <Raster rgba={rgba.clone()} width={k as u32} height={k as u32}
                                class={classes!("pixelated", "filter-tile", (n == f).then_some("active"))}
                                testid="filter-tile" title={format!("filter {n}: weights {lo:.3} … {hi:.3} (click: its output, channel {n} of {layer})")}
                                role="button" tabindex={if n == f { "0" } else { "-1" }}
                                onclick={pick} onmouseenter={select} onfocus={focused} onkeydown={keys} />
                        }
                    }) }
                </div>
                { match big {
                    Some((rgba, lo, hi)) => html! {
                        <figure class="filter-zoom" data-testid="filter-zoom">
                            <Raster rgba={rgba} width={k as u32} height={k as u32} class="pixelated"
                                label={format!("filter {f} enlarged: {k}×{k}, weights {lo:.3} to {hi:.3}")} />
                            <figcaption>{ format!("filter {f} · {k}×{k} · weights {lo:.3} … {hi:.3}") }</figcaption>
                        </figure>
                    },
                    None => html! {},
                } }
            </div>
        </section>
    }
}
