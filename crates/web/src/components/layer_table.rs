//! Panel 4: the layer table (torchinfo-style) from `Graph::summary`, the same numbers as
//! `resnet summary`; each row shows how its output size follows from kernel, stride, padding.

use yew::prelude::*;

use super::LayerProps;

use crate::viz::{formula, si, thousands};

fn dims(s: [usize; 3]) -> String {
    format!("{}×{}×{}", s[0], s[1], s[2])
}

#[function_component(LayerTable)]
pub fn layer_table(p: &LayerProps) -> Html {
    let s = &p.summary;
    // The last run's time per node, and their sum.
    let time = |node: usize| p.result.as_ref().and_then(|r| r.node_ms.get(node).copied());
    let total_ms: f64 = p.result.as_ref().map_or(0.0, |r| r.node_ms.iter().sum());
    let selected_ref = use_node_ref();
    {
        // Keep the selected row in view when the selection comes from another panel.
        let r = selected_ref.clone();
        use_effect_with(p.selected, move |_| {
            let el = r.cast::<web_sys::HtmlElement>();
            let parent = el.as_ref().and_then(|e| e.closest(".table-scroll").ok().flatten());
            if let (Some(el), Some(parent)) = (el, parent) {
                let parent: web_sys::HtmlElement = wasm_bindgen::JsCast::unchecked_into(parent);
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
            <div class="table-scroll">
            <table data-testid="layer-table">
                <thead>
                    <tr><th>{"#"}</th><th>{"layer"}</th><th>{"kind"}</th><th>{"k / s / p"}</th><th title="receptive field: input pixels one output pixel sees (per side) / input pixels between neighbouring outputs">{"RF / jump"}</th><th>{"output C×H×W"}</th><th>{"output size"}</th><th class="num">{"params"}</th><th class="num">{"MACs"}</th><th class="num" title="measured time of the last inference, ms (share of the whole); a conv's fused BatchNorm, add and ReLU take ~0: the conv computes them">{"ms"}</th></tr>
                </thead>
                <tbody>
                    { for s.layers.iter().enumerate().map(|(i, row)| {
                        let node = i + 1;
                        let ms = time(node);
                        let cb = p.on_select.clone();
                        let ksp = match (row.kernel, row.stride, row.padding) {
                            (Some(k), Some(s), Some(pad)) => format!("{k} / {s} / {pad}"),
                            _ => String::new(),
                        };
                        let is_sel = node == p.selected;
                        html! {
                            <tr data-testid="layer-row" data-name={row.name.clone()} data-params={row.params.to_string()} data-macs={row.macs.to_string()}
                                data-out={dims(row.out_shape)} data-rf={row.rf.to_string()} data-jump={row.jump.to_string()}
                                class={classes!(is_sel.then_some("selected"), row.block.is_some().then_some("in-block"))}
                                ref={if is_sel { selected_ref.clone() } else { NodeRef::default() }}
                                onclick={Callback::from(move |_| cb.emit(node))} title={row.note.clone()}>
                                <td class="num muted">{ node }</td>
                                <td class="name">{ &row.name }</td>
                                <td>{ row.kind }</td>
                                <td>{ ksp }</td>
                                <td class="num" data-testid="layer-rf">{ format!("{} / {}", row.rf, row.jump) }</td>
                                <td>{ dims(row.out_shape) }</td>
                                <td class="formula">{ formula(&p.graph.nodes[node], row).unwrap_or_default() }</td>
                                <td class="num">{ if row.params > 0 { thousands(row.params) } else { String::new() } }</td>
                                <td class="num">{ if row.macs > 0 { si(row.macs) } else { String::new() } }</td>
                                <td class="num ms" data-testid="layer-ms" data-ms={ms.map(|t| t.to_string())}>
                                    { ms.map(|t| format!("{t:.2} ({:.0} %)", 100.0 * t / total_ms.max(1e-9))).unwrap_or_default() }
                                </td>
                            </tr>
                        }
                    }) }
                </tbody>
                <tfoot>
                    <tr data-testid="layer-total" data-params={s.total_params.to_string()} data-macs={s.total_macs.to_string()}
                        data-activations={s.total_activations.to_string()}>
                        <td></td><td colspan="5">{ "total" }</td>
                        <td class="muted">{ format!("activations {:.2} MiB per image", s.activation_bytes as f64 / (1024.0 * 1024.0)) }</td>
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
