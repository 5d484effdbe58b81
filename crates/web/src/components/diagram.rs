//! Panel 5: the architecture as an SVG, drawn from the same graph as the table and the forward
//! pass: stem and head layers, every block with its shortcut (identity, option A, projection),
//! Inception's parallel branches, and the output size on each edge. Click to inspect.

use resnet_core::spec::{BlockKind, Graph, NodeId, Op, ShortcutKind};
use resnet_core::Summary;
use yew::prelude::*;

use super::{group_keys, LayerProps, Shared};
use crate::protocol::RunResult;

/// One box of the diagram.
enum Item {
    /// Consecutive layers outside blocks, led by a conv / pool / linear.
    Layers(Vec<NodeId>),
    Block(usize),
}

fn leads_group(op: &Op) -> bool {
    !matches!(
        op,
        Op::BatchNorm2d { .. } | Op::Relu | Op::Tanh | Op::Dropout { .. } | Op::LocalResponseNorm { .. }
    )
}

fn items(g: &Graph) -> Vec<Item> {
    let mut items: Vec<Item> = vec![];
    for (i, n) in g.nodes.iter().enumerate().skip(1) {
        match (n.block, items.last_mut()) {
            (Some(b), Some(Item::Block(last))) if *last == b => {}
            (Some(b), _) => items.push(Item::Block(b)),
            (None, Some(Item::Layers(v))) if !leads_group(&n.op) => v.push(i),
            (None, _) => items.push(Item::Layers(vec![i])),
        }
    }
    items
}

/// "conv 3×3, 16" style label of one layer.
fn short(g: &Graph, i: NodeId) -> String {
    match &g.nodes[i].op {
        Op::Conv2d(c) if c.stride > 1 => {
            format!("{}×{} conv, {} /{}", c.kernel, c.kernel, c.out_ch, c.stride)
        }
        Op::Conv2d(c) => format!("{}×{} conv, {}", c.kernel, c.kernel, c.out_ch),
        Op::MaxPool2d(p) => format!("{}×{} max pool /{}", p.kernel, p.kernel, p.stride),
        Op::AvgPool2d(p) => format!("{}×{} avg pool /{}", p.kernel, p.kernel, p.stride),
        Op::AdaptiveAvgPool2d { h, w } => format!("avg pool → {h}×{w}"),
        Op::Linear { out_features, .. } => format!("fc {out_features}"),
        Op::Flatten => "flatten".into(),
        op => op.kind().to_lowercase(),
    }
}

fn kind_name(k: BlockKind) -> &'static str {
    match k {
        BlockKind::Basic => "BasicBlock",
        BlockKind::Bottleneck => "Bottleneck",
        BlockKind::Inception => "Inception",
    }
}

const W: f64 = 560.0;
const BOX_X: f64 = 110.0;
const BOX_W: f64 = 330.0;
const GAP: f64 = 30.0;

/// An item placed on the diagram: what it shows, where, and the layer a click selects.
struct Laid {
    item: Item,
    name: String,
    /// Its layers (a click on any of them marks it selected) and the one it selects.
    nodes: Vec<NodeId>,
    target: NodeId,
    y: f64,
    h: f64,
    /// The layer whose output flows into it (the edge's label).
    from: NodeId,
}

/// Where every item goes: computed once per model, not on every selection.
fn layout(g: &Graph) -> (Vec<Laid>, f64) {
    let mut y = 10.0 + 26.0;
    let mut from = 0;
    let mut out = vec![];
    for item in items(g) {
        y += GAP;
        let (name, nodes, target, h) = match &item {
            Item::Layers(nodes) => {
                (g.nodes[nodes[0]].name.clone(), nodes.clone(), *nodes.last().unwrap(), 32.0)
            }
            Item::Block(b) => {
                let blk = &g.blocks[*b];
                let nodes: Vec<NodeId> =
                    (0..g.nodes.len()).filter(|&i| g.nodes[i].block == Some(*b)).collect();
                let h = if blk.kind == BlockKind::Inception { 78.0 } else { 52.0 };
                (blk.name.clone(), nodes, blk.output, h)
            }
        };
        out.push(Laid { item, name, nodes, target, y, h, from });
        y += h;
        from = target;
    }
    (out, y)
}

/// The box of one item.
fn body(g: &Graph, shapes: &[[usize; 3]], laid: &Laid, result: Option<&RunResult>) -> Html {
    let cx = BOX_X + BOX_W / 2.0;
    let Laid { nodes, name, y, h, .. } = laid;
    let (y, h) = (*y, *h);
    match &laid.item {
        Item::Layers(nodes) => {
            let label = nodes.iter().map(|&n| short(g, n)).collect::<Vec<_>>().join(" → ");
            // The paper's name first where it has one (VGG's conv4_1).
            let label = match nodes.first().and_then(|&n| g.nodes[n].paper.as_ref()) {
                Some(paper) => format!("{paper}: {label}"),
                None => label,
            };
            html! {
                <>
                    <rect x={BOX_X.to_string()} y={y.to_string()} width={BOX_W.to_string()} height="32" rx="4" />
                    <text x={(BOX_X - 8.0).to_string()} y={(y + 20.0).to_string()} text-anchor="end" class="name">{ name.clone() }</text>
                    <text x={cx.to_string()} y={(y + 20.0).to_string()} text-anchor="middle">{ label }</text>
                </>
            }
        }
        Item::Block(b) => {
            let blk = &g.blocks[*b];
            if blk.kind == BlockKind::Inception {
                let n = blk.branches.len().max(1) as f64;
                let bw = (BOX_W - 10.0) / n;
                let branches = blk.branches.iter().enumerate().map(|(k, br)| {
                        let label = br
                            .iter()
                            .filter(|&&i| matches!(g.nodes[i].op, Op::Conv2d(_) | Op::MaxPool2d(_)))
                            .map(|&i| match &g.nodes[i].op {
                                Op::Conv2d(c) => format!("{}×{}", c.kernel, c.kernel),
                                _ => "pool".into(),
                            })
                            .collect::<Vec<_>>()
                            .join("→");
                        let out = br.last().map(|&i| shapes[i][0]).unwrap_or(0);
                        let x = BOX_X + 5.0 + k as f64 * bw;
                        html! {
                            <g class="branch">
                                <rect x={(x + 2.0).to_string()} y={(y + 26.0).to_string()} width={(bw - 4.0).to_string()} height="44" rx="3" />
                                <text x={(x + bw / 2.0).to_string()} y={(y + 44.0).to_string()} text-anchor="middle">{ label }</text>
                                <text x={(x + bw / 2.0).to_string()} y={(y + 60.0).to_string()} text-anchor="middle" class="edge-label">{ out }</text>
                            </g>
                        }
                    });
                html! {
                    <>
                        <rect x={BOX_X.to_string()} y={y.to_string()} width={BOX_W.to_string()} height={h.to_string()} rx="6" class="block" />
                        <text x={(BOX_X - 8.0).to_string()} y={(y + 20.0).to_string()} text-anchor="end" class="name">{ blk.name.clone() }</text>
                        <text x={cx.to_string()} y={(y + 17.0).to_string()} text-anchor="middle">{ format!("Inception: {} parallel branches, concatenated", blk.branches.len()) }</text>
                        { for branches }
                    </>
                }
            } else {
                let convs: Vec<String> = nodes
                    .iter()
                    .filter(|i| !blk.shortcut_nodes.contains(i) && matches!(g.nodes[**i].op, Op::Conv2d(_)))
                    .map(|&i| short(g, i).replace(" conv", ""))
                    .collect();
                let right = BOX_X + BOX_W;
                let (top, bottom) = (y - GAP / 2.0, y + h - 6.0);
                let shortcut = match blk.shortcut {
                    ShortcutKind::None => html! {},
                    kind => {
                        let (class, label) = match kind {
                            ShortcutKind::Identity => ("shortcut identity", "identity".to_string()),
                            ShortcutKind::ZeroPad => ("shortcut zero-pad", "option A".to_string()),
                            _ => (
                                "shortcut projection",
                                blk.shortcut_nodes.first().map(|&i| short(g, i)).unwrap_or_default()
                                    + " + BN",
                            ),
                        };
                        let path = format!("M {cx} {top} H {} V {bottom} H {}", right + 24.0, cx + 8.0);
                        html! {
                            <g class={class}>
                                <path d={path} fill="none" marker-end="url(#arrow)" />
                                <text x={(right + 30.0).to_string()} y={(y + h / 2.0 + 4.0).to_string()} class="edge-label">{ label }</text>
                            </g>
                        }
                    }
                };
                let plus = blk.add.map(|_| html! {
                        <g class="add">
                            <circle cx={cx.to_string()} cy={bottom.to_string()} r="7" />
                            <text x={cx.to_string()} y={(bottom + 4.0).to_string()} text-anchor="middle">{ "+" }</text>
                        </g>
                    });
                // What the block adds on the current image (the residual-stream panel's bar).
                let measured = result.and_then(|r| r.blocks.iter().find(|m| m.block == blk.name));
                let ratio = measured.map(|m| {
                        let what = if blk.add.is_some() { "‖F‖/‖x‖" } else { "‖H−x‖/‖x‖" };
                        let value = m.ratio.map_or("–".to_string(), |r| format!("{r:.2}"));
                        html! {
                            <text x={(BOX_X - 8.0).to_string()} y={(y + 38.0).to_string()} text-anchor="end" class="ratio"
                                data-testid="residual-ratio" data-block={blk.name.clone()}
                                data-ratio={m.ratio.map_or(String::new(), |r| format!("{r:.4}"))}>
                                { format!("{what} {value}") }
                            </text>
                        }
                    });
                html! {
                    <>
                        <rect x={BOX_X.to_string()} y={y.to_string()} width={BOX_W.to_string()} height={h.to_string()} rx="6" class="block" />
                        <text x={(BOX_X - 8.0).to_string()} y={(y + 20.0).to_string()} text-anchor="end" class="name">{ blk.name.clone() }</text>
                        { ratio.unwrap_or_default() }
                        <text x={cx.to_string()} y={(y + 18.0).to_string()} text-anchor="middle">{ format!("{} · {}", kind_name(blk.kind), convs.join(" → ")) }</text>
                        { shortcut }
                        { plus.unwrap_or_default() }
                    </>
                }
            }
        }
    }
}

#[derive(Properties, PartialEq)]
struct ItemProps {
    graph: Shared<Graph>,
    summary: Shared<Summary>,
    layout: Shared<(Vec<Laid>, f64)>,
    index: usize,
    result: Option<Shared<RunResult>>,
    selected: bool,
    /// Takes Tab (the selected item, and the first so that the diagram is always reachable).
    stop: bool,
    on_select: Callback<usize>,
}

/// One item with the edge into it: its own component, so that a new selection re-renders the
/// two items it changes, not resnet152's whole diagram.
#[function_component(DiagramItem)]
fn diagram_item(p: &ItemProps) -> Html {
    let g = &p.graph;
    let shapes = p.summary.node_shapes();
    let dims = |n: NodeId| format!("{}×{}×{}", shapes[n][0], shapes[n][1], shapes[n][2]);
    let laid = &p.layout.0 .0[p.index];
    let (y, target, name) = (laid.y, laid.target, &laid.name);
    let cx = BOX_X + BOX_W / 2.0;
    let cb = p.on_select.clone();
    // One Tab stop for the diagram (the selected item): arrows move, Enter or Space selects.
    let keys = group_keys(p.on_select.clone(), target, "svg", "g.item[data-testid]");
    html! {
        <>
            // The edge into this item, labelled with the size flowing along it.
            <g class="edge">
                <line x1={cx.to_string()} y1={(y - GAP).to_string()} x2={cx.to_string()} y2={y.to_string()} marker-end="url(#arrow)" />
                <text x={(cx - 8.0).to_string()} y={(y - GAP / 2.0 + 4.0).to_string()} text-anchor="end" class="edge-label">{ dims(laid.from) }</text>
            </g>
            <g class={classes!("item", p.selected.then_some("selected"))} data-testid="diagram-item" data-node={target.to_string()} data-name={name.clone()}
                role="button" tabindex={if p.stop { "0" } else { "-1" }} aria-label={format!("{name}: select")}
                aria-pressed={p.selected.to_string()} onkeydown={keys}
                onclick={Callback::from(move |_| cb.emit(target))}>
                <title>{ format!("{} — click to inspect", g.nodes[target].name) }</title>
                { body(g, &shapes, laid, p.result.as_deref()) }
            </g>
        </>
    }
}

#[function_component(Diagram)]
pub fn diagram(p: &LayerProps) -> Html {
    let g = &p.graph;
    let shapes = p.summary.node_shapes();
    let dims = |n: NodeId| format!("{}×{}×{}", shapes[n][0], shapes[n][1], shapes[n][2]);
    let layout = Shared(use_memo(p.graph.clone(), |g| layout(g)));
    let (laid, end) = (&layout.0 .0, layout.0 .1);
    let cx = BOX_X + BOX_W / 2.0;
    let last_out = laid.last().map_or(0, |l| l.target);
    let height = end + 30.0;
    html! {
        <section class="panel diagram" aria-label="Architecture diagram">
            <h2>{ "Architecture" }</h2>
            <p class="muted">{ if g.blocks.iter().any(|b| b.shortcut != ShortcutKind::None) {
                "Click a block or layer to inspect it. Shortcuts: solid = identity, dashed = option A (subsample + zero channels), dark = projection (1×1 conv)."
            } else {
                "Click a block or layer to inspect it."
            } }</p>
            <div class="diagram-scroll">
                <svg data-testid="arch-diagram" width={W.to_string()} height={height.to_string()} viewBox={format!("0 0 {W} {height}")}
                    xmlns="http://www.w3.org/2000/svg" role="group" aria-label="architecture diagram: Tab to its blocks, arrow keys move, Enter selects">
                    <defs>
                        <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse">
                            <path d="M 0 0 L 10 5 L 0 10 z" />
                        </marker>
                    </defs>
                    // The input.
                    <g class="item input">
                        <rect x={BOX_X.to_string()} y="10" width={BOX_W.to_string()} height="26" rx="13" />
                        <text x={cx.to_string()} y="27" text-anchor="middle">{ format!("input {}", dims(0)) }</text>
                    </g>
                    { for laid.iter().enumerate().map(|(i, l)| {
                        let selected = l.nodes.contains(&p.selected);
                        html! {
                            <DiagramItem key={i} graph={p.graph.clone()} summary={p.summary.clone()} layout={layout.clone()} index={i}
                                result={p.result.clone()} selected={selected} stop={selected || i == 0} on_select={p.on_select.clone()} />
                        }
                    }) }
                    <text x={(cx + 8.0).to_string()} y={(end + 16.0).to_string()} class="edge-label">{ format!("output {}", dims(last_out)) }</text>
                </svg>
            </div>
        </section>
    }
}
