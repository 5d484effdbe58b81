//! Panel 4: the layer table (torchinfo-style) from `Graph::summary`, the same numbers as
//! `resnet summary`; each row shows how its output size follows from kernel, stride, padding.

use yew::prelude::*;

use resnet_core::{Graph, Summary};

use super::{group_keys, LayerProps, Shared};

use crate::viz::{formula, si, thousands};

fn dims(s: [usize; 3]) -> String {
    format!("{}×{}×{}", s[0], s[1], s[2])
}

/// One row: its own component, so that a new selection re-renders the two rows it changes, not
/// all of resnet152's 500 (props compare by pointer and value).
#[derive(Properties, PartialEq)]
struct RowProps {
    graph: Shared<Graph>,
    summary: Shared<Summary>,
    node: usize,
    selected: bool,
    /// Its time in the last inference's middle run, and that run's sum.
    ms: Option<f64>,
    total_ms: f64,
    on_select: Callback<usize>,
}

#[function_component(LayerRow)]
fn layer_row(p: &RowProps) -> Html {
    let node = p.node;
    let row = &p.summary.layers[node - 1];
    let cb = p.on_select.clone();
    let ksp = match (row.kernel, row.stride, row.padding) {
        (Some(k), Some(s), Some(pad)) => format!("{k} / {s} / {pad}"),
        _ => String::new(),
    };
    let is_sel = p.selected;
    // One Tab stop for the table (the selected row): arrows move, Enter or Space selects.
    let keys = group_keys(p.on_select.clone(), node, "tbody", "tr");
    html! {
        <tr data-testid="layer-row" data-name={row.name.clone()} data-params={row.params.to_string()} data-macs={row.macs.to_string()}
            data-out={dims(row.out_shape)} data-rf={row.rf.to_string()} data-jump={row.jump.to_string()}
            class={classes!(is_sel.then_some("selected"), row.block.is_some().then_some("in-block"))}
            tabindex={if is_sel { "0" } else { "-1" }} aria-current={is_sel.then_some("true")} onkeydown={keys}
            onclick={Callback::from(move |_| cb.emit(node))} title={row.note.clone()}>
            <td class="num muted wide">{ node }</td>
            <td class="name">{ &row.name }{ for row.paper.as_ref().map(|n| html! { <span class="paper-name" data-testid="paper-name">{ format!(" {n}") }</span> }) }</td>
            <td class="wide">{ row.kind }</td>
            <td>{ ksp }</td>
            <td class="num wide" data-testid="layer-rf">{ format!("{} / {}", row.rf, row.jump) }</td>
            <td>{ dims(row.out_shape) }</td>
            <td class="formula wide">{ formula(&p.graph.nodes[node], row).unwrap_or_default() }</td>
            <td class="num">{ if row.params > 0 { thousands(row.params) } else { String::new() } }</td>
            <td class="num">{ if row.macs > 0 { si(row.macs) } else { String::new() } }</td>
            <td class="num ms" data-testid="layer-ms" data-ms={p.ms.map(|t| t.to_string())}>
                { for p.ms.map(|t| html! { <>{ format!("{t:.2}") }<span class="wide">{ format!(" ({:.0} %)", 100.0 * t / p.total_ms.max(1e-9)) }</span></> }) }
            </td>
        </tr>
    }
}

#[function_component(LayerTable)]
pub fn layer_table(p: &LayerProps) -> Html {
    let s = &p.summary;
    // Each node's time in the last inference's middle run, and their sum.
    let time = |node: usize| p.result.as_ref().and_then(|r| r.node_ms.get(node).copied());
    let total_ms: f64 = p.result.as_ref().map_or(0.0, |r| r.node_ms.iter().sum());
    let scroll_ref = use_node_ref();
    {
        // Keep the selected row in view when the selection comes from another panel.
        let r = scroll_ref.clone();
        use_effect_with(p.selected, move |_| {
            let parent = r.cast::<web_sys::HtmlElement>();
            let el = parent.as_ref().and_then(|p| p.query_selector("tr.selected").ok().flatten());
            if let (Some(el), Some(parent)) = (el, parent) {
                let el: web_sys::HtmlElement = wasm_bindgen::JsCast::unchecked_into(el);
                // Scroll the table only, not the page.
                let top = el.offset_top() - parent.client_height() / 2;
                parent.set_scroll_top(top.max(0));
            }
        });
    }
    html! {
        <section class="panel layer-table" aria-label="Layer table">
            <h2>{ "Layers" }</h2>
            <p class="muted" data-testid="layer-count">{ format!(
                "{} operations, {} weight layers deep (convs and fully connected on the longest path: the number in the name) · input {} · output size per side: (N − F + 2P)/S + 1, floored (⌈⌉: ceil mode)",
                s.layers.len(),
                p.graph.depth(),
                dims(s.input)
            ) }</p>
            <div class="table-scroll" ref={scroll_ref}>
            <table data-testid="layer-table">
                <thead>
                    <tr><th class="wide">{"#"}</th><th>{"layer"}</th><th class="wide">{"kind"}</th><th>{"k / s / p"}</th><th class="wide" title="receptive field: input pixels one output pixel sees (per side) / input pixels between neighbouring outputs">{"RF / jump"}</th><th>{"output C×H×W"}</th><th class="wide">{"output size"}</th><th class="num">{"params"}</th><th class="num">{"MACs"}</th><th class="num" title="measured time of each layer in the middle run of the last inference, ms (share of the whole); a conv's fused BatchNorm, add and ReLU take ~0: the conv computes them">{"ms"}</th></tr>
                </thead>
                <tbody>
                    { for (1..=s.layers.len()).map(|node| html! {
                        <LayerRow key={node} graph={p.graph.clone()} summary={p.summary.clone()} node={node}
                            selected={node == p.selected} ms={time(node)} total_ms={total_ms} on_select={p.on_select.clone()} />
                    }) }
                </tbody>
                <tfoot>
                    <tr data-testid="layer-total" data-params={s.total_params.to_string()} data-macs={s.total_macs.to_string()}
                        data-activations={s.total_activations.to_string()}>
                        <td class="wide"></td><td>{ "total" }</td><td class="wide"></td><td></td><td class="wide"></td><td></td>
                        <td class="muted wide">{ format!("activations {:.2} MiB per image", s.activation_bytes as f64 / (1024.0 * 1024.0)) }</td>
                        <td class="num">{ thousands(s.total_params) }</td>
                        <td class="num" title={thousands(s.total_macs)}>{ si(s.total_macs) }</td>
                        <td class="num" data-testid="layer-ms-total">{ if p.result.is_some() { format!("{total_ms:.2}") } else { String::new() } }</td>
                    </tr>
                </tfoot>
            </table>
            </div>
        </section>
    }
}
