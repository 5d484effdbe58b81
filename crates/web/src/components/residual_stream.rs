//! Panel: the residual stream on the current image, measured. Per block, how large F(x) is
//! against what its shortcut carries (‖F(x)‖ / ‖x‖, with cos(F(x), x)); for a plain net, how
//! much each block changes its input. Below, the paper's Fig. 7: the std of every 3×3 layer's
//! response (after BN, before the ReLU or the add) by depth, in order and sorted.

use resnet_core::explain::{BlockResponse, LayerResponse};
use resnet_core::Graph;
use yew::prelude::*;

use super::Shared;
use crate::protocol::RunResult;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub graph: Shared<Graph>,
    pub result: Option<Shared<RunResult>>,
    pub running: bool,
    /// A block's bar was clicked: its output node.
    pub on_select: Callback<usize>,
}

const W: f64 = 560.0;
const H: f64 = 170.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 34.0;

/// A y-axis of `ticks` from 0 to `max`, labelled at the left (or right) of the plot.
fn axis(max: f64, ticks: usize, right: bool, fmt: impl Fn(f64) -> String) -> Html {
    let plot_h = H - TOP - BOTTOM;
    html! {
        <g class="axis">
            { for (0..=ticks).map(|i| {
                let v = max * i as f64 / ticks as f64;
                let y = TOP + plot_h * (1.0 - i as f64 / ticks as f64);
                let x = if right { W - RIGHT + 4.0 } else { LEFT - 4.0 };
                html! {
                    <>
                        { if right { html! {} } else { html! { <line class="grid" x1={LEFT.to_string()} x2={(W - RIGHT).to_string()} y1={y.to_string()} y2={y.to_string()} /> } } }
                        <text x={x.to_string()} y={(y + 4.0).to_string()} text-anchor={if right { "start" } else { "end" }}>{ fmt(v) }</text>
                    </>
                }
            }) }
        </g>
    }
}

/// A scale's top: 1, 2 or 5 times a power of ten, at least `v`.
fn nice(v: f64) -> f64 {
    let v = v.max(1e-6);
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|&t| t >= v * 0.999).unwrap_or(10.0 * p)
}

fn block_chart(blocks: &[BlockResponse], graph: &Graph, residual: bool, on_select: &Callback<usize>) -> Html {
    let n = blocks.len().max(1) as f64;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let top = nice(blocks.iter().filter_map(|b| b.ratio).fold(1.0f32, f32::max) as f64);
    let slot = plot_w / n;
    let y_of = |v: f64| TOP + plot_h * (1.0 - v / top);
    // cos ∈ [−1, 1] on the right-hand axis.
    let y_cos = |c: f64| TOP + plot_h * (1.0 - (c + 1.0) / 2.0);
    let one = y_of(1.0);
    let cos_points: Vec<String> = blocks
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            b.cosine.map(|c| format!("{:.1},{:.1}", LEFT + slot * (i as f64 + 0.5), y_cos(c as f64)))
        })
        .collect();
    let what = if residual { "‖F(x)‖ / ‖x‖" } else { "‖H(x) − x‖ / ‖x‖" };
    html! {
        <svg data-testid="residual-chart" class="chart" width={W.to_string()} height={H.to_string()} viewBox={format!("0 0 {W} {H}")}
            role="img" aria-label={format!("{what} of each block, by depth")}>
            { axis(top, 4, false, |v| format!("{v:.2}")) }
            { if residual { axis(2.0, 2, true, |v| match v as i32 { 0 => "−1".into(), 1 => "0".into(), _ => "+1".into() }) } else { html! {} } }
            <line class="unit-line" x1={LEFT.to_string()} x2={(W - RIGHT).to_string()} y1={one.to_string()} y2={one.to_string()} />
            { for blocks.iter().enumerate().map(|(i, b)| {
                let x = LEFT + slot * i as f64;
                let node = graph.blocks.iter().find(|blk| blk.name == b.block).map(|blk| blk.output);
                let cb = on_select.clone();
                let title = format!(
                    "{}: {what} = {}{}; std of F(x) {:.3}",
                    b.block,
                    b.ratio.map_or("– (the shape changes)".into(), |r| format!("{r:.3}")),
                    b.cosine.map_or(String::new(), |c| format!(", cos(F(x), x) = {c:.3}")),
                    b.response_std
                );
                let bar = b.ratio.map(|r| {
                    let y = y_of(r as f64);
                    html! { <rect x={(x + slot * 0.15).to_string()} y={y.to_string()} width={(slot * 0.7).to_string()} height={(TOP + plot_h - y).max(0.0).to_string()} /> }
                });
                let label = (blocks.len() <= 20 || i % 2 == 0).then(|| html! {
                    <text class="tick" x={(x + slot / 2.0).to_string()} y={(H - BOTTOM + 14.0).to_string()} text-anchor="middle">{ b.block.trim_start_matches("layer").to_string() }</text>
                });
                html! {
                    <g class="bar" data-testid="residual-bar" data-block={b.block.clone()}
                        data-ratio={b.ratio.map_or(String::new(), |r| format!("{r:.4}"))}
                        onclick={Callback::from(move |_| if let Some(n) = node { cb.emit(n) })}>
                        <title>{ title }</title>
                        <rect class="hit" x={x.to_string()} y={TOP.to_string()} width={slot.to_string()} height={plot_h.to_string()} />
                        { bar.unwrap_or_default() }
                        { label.unwrap_or_default() }
                    </g>
                }
            }) }
            { if cos_points.is_empty() { html! {} } else { html! {
                <polyline class="cos" points={cos_points.join(" ")} />
            } } }
            <text class="axis-title" x={(LEFT + plot_w / 2.0).to_string()} y={(H - 4.0).to_string()} text-anchor="middle">{ "block, input → output" }</text>
        </svg>
    }
}

fn response_chart(responses: &[LayerResponse]) -> Html {
    let n = responses.len().max(2) as f64;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let top = nice(responses.iter().map(|r| r.std).fold(0.0f32, f32::max) as f64);
    let x_of = |i: usize| LEFT + plot_w * i as f64 / (n - 1.0);
    let y_of = |v: f32| TOP + plot_h * (1.0 - v as f64 / top);
    let line = |v: &[f32]| {
        v.iter()
            .enumerate()
            .map(|(i, &s)| format!("{:.1},{:.1}", x_of(i), y_of(s)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let order: Vec<f32> = responses.iter().map(|r| r.std).collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    html! {
        <svg data-testid="response-chart" class="chart" width={W.to_string()} height={H.to_string()} viewBox={format!("0 0 {W} {H}")}
            role="img" aria-label="standard deviation of each 3×3 layer's response, by depth">
            { axis(top, 4, false, |v| format!("{v:.2}")) }
            <polyline class="sorted" points={line(&sorted)} />
            <polyline class="order" points={line(&order)} />
            { for responses.iter().enumerate().map(|(i, r)| html! {
                <circle class="order" data-testid="response-point" cx={x_of(i).to_string()} cy={y_of(r.std).to_string()} r="3">
                    <title>{ format!("{} (3×3 layer {}): std {:.3}", r.layer, i + 1, r.std) }</title>
                </circle>
            }) }
            <text class="axis-title" x={(LEFT + plot_w / 2.0).to_string()} y={(H - 4.0).to_string()} text-anchor="middle">
                { format!("3×3 layer 1 … {} (solid: in order; dashed: sorted by size)", responses.len()) }
            </text>
        </svg>
    }
}

#[function_component(ResidualStream)]
pub fn residual_stream(p: &Props) -> Html {
    let has_blocks = p.graph.blocks.iter().any(|b| b.residual.is_some());
    let has_3x3 =
        p.graph.nodes.iter().any(|n| matches!(&n.op, resnet_core::spec::Op::Conv2d(c) if c.kernel == 3));
    if !has_blocks && !has_3x3 {
        return html! {};
    }
    let residual = p.graph.blocks.iter().any(|b| b.add.is_some());
    let body = match &p.result {
        None => {
            html! { <p class="muted">{ "Classify an image to measure what each block adds to its input." }</p> }
        }
        Some(r) => html! {
            <>
                { if r.blocks.is_empty() { html! {} } else { html! {
                    <>
                        <p class="muted">{ if residual {
                            "Each bar is ‖F(x)‖ / ‖x‖: the size of what a block adds, against what its shortcut carries past it, on this image (line at 1: as large as x). Bars well below 1 are blocks close to the identity: they refine x instead of replacing it, which is why stacking more of them does not hurt. The dashed orange line is cos(F(x), x) (right axis, −1 … +1): near 0, the block adds a new direction to x. Click a bar to inspect the block."
                        } else {
                            "A plain net has no shortcut: each bar is ‖H(x) − x‖ / ‖x‖, how much the block changes its input (none where the shape changes). Every block must transform x itself; compare with a ResNet of the same depth."
                        } }</p>
                        { block_chart(&r.blocks, &p.graph, residual, &p.on_select) }
                    </>
                } } }
                { if r.responses.is_empty() { html! {} } else { html! {
                    <>
                        <h3>{ "Layer responses (He et al., Fig. 7)" }</h3>
                        <p class="muted">{ "The standard deviation of each 3×3 layer's output after its BatchNorm, before the ReLU or the addition. In the paper, ResNets' responses are smaller than plain nets' and shrink with depth: each residual function stays close to zero." }</p>
                        { response_chart(&r.responses) }
                    </>
                } } }
            </>
        },
    };
    html! {
        <section class={classes!("panel", "residual-stream", p.running.then_some("busy"))} aria-label="The residual stream" aria-busy={p.running.to_string()}>
            <h2>{ if has_blocks { "The residual stream" } else { "Layer responses" } }</h2>
            { body }
        </section>
    }
}
