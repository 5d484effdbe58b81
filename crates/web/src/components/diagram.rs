//! Panel 5: the architecture as an SVG, drawn from the same graph as the table and the forward
//! pass: stem and head layers, every block with its shortcut (identity, option A, projection),
//! Inception's parallel branches, and the output size on each edge. Click to inspect.

use resnet_core::spec::{BlockKind, Graph, NodeId, Op, ShortcutKind};
use yew::prelude::*;

use super::LayerProps;

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

const W: f64 = 640.0;
const BOX_X: f64 = 110.0;
const BOX_W: f64 = 330.0;
const GAP: f64 = 30.0;

#[function_component(Diagram)]
pub fn diagram(p: &LayerProps) -> Html {
    let g = &p.graph;
    let shapes = p.summary.node_shapes();
    let dims = |n: NodeId| format!("{}×{}×{}", shapes[n][0], shapes[n][1], shapes[n][2]);
    let mut y = 10.0;
    let mut out: Vec<Html> = vec![];
    let cx = BOX_X + BOX_W / 2.0;
    // The input.
    out.push(html! {
        <g class="item input">
            <rect x={BOX_X.to_string()} y={y.to_string()} width={BOX_W.to_string()} height="26" rx="13" />
            <text x={cx.to_string()} y={(y + 17.0).to_string()} text-anchor="middle">{ format!("input {}", dims(0)) }</text>
        </g>
    });
    y += 26.0;
    let mut last_out = 0;
    for item in items(g) {
        // The edge into this item, labelled with the size flowing along it.
        out.push(html! {
            <g class="edge">
                <line x1={cx.to_string()} y1={y.to_string()} x2={cx.to_string()} y2={(y + GAP).to_string()} marker-end="url(#arrow)" />
                <text x={(cx - 8.0).to_string()} y={(y + GAP / 2.0 + 4.0).to_string()} text-anchor="end" class="edge-label">{ dims(last_out) }</text>
            </g>
        });
        y += GAP;
        let name = match &item {
            Item::Layers(nodes) => g.nodes[nodes[0]].name.clone(),
            Item::Block(b) => g.blocks[*b].name.clone(),
        };
        let (nodes, target, h, body): (Vec<NodeId>, NodeId, f64, Html) = match item {
            Item::Layers(nodes) => {
                let label = nodes.iter().map(|&n| short(g, n)).collect::<Vec<_>>().join(" → ");
                let last = *nodes.last().unwrap();
                let body = html! {
                    <>
                        <rect x={BOX_X.to_string()} y={y.to_string()} width={BOX_W.to_string()} height="32" rx="4" />
                        <text x={(BOX_X - 8.0).to_string()} y={(y + 20.0).to_string()} text-anchor="end" class="name">{ name.clone() }</text>
                        <text x={cx.to_string()} y={(y + 20.0).to_string()} text-anchor="middle">{ label }</text>
                    </>
                };
                (nodes, last, 32.0, body)
            }
            Item::Block(b) => {
                let blk = &g.blocks[b];
                let nodes: Vec<NodeId> =
                    (0..g.nodes.len()).filter(|&i| g.nodes[i].block == Some(b)).collect();
                if blk.kind == BlockKind::Inception {
                    let h = 78.0;
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
                    let body = html! {
                        <>
                            <rect x={BOX_X.to_string()} y={y.to_string()} width={BOX_W.to_string()} height={h.to_string()} rx="6" class="block" />
                            <text x={(BOX_X - 8.0).to_string()} y={(y + 20.0).to_string()} text-anchor="end" class="name">{ blk.name.clone() }</text>
                            <text x={cx.to_string()} y={(y + 17.0).to_string()} text-anchor="middle">{ format!("Inception: {} parallel branches, concatenated", blk.branches.len()) }</text>
                            { for branches }
                        </>
                    };
                    (nodes, blk.output, h, body)
                } else {
                    let h = 52.0;
                    let convs: Vec<String> = nodes
                        .iter()
                        .filter(|i| {
                            !blk.shortcut_nodes.contains(i) && matches!(g.nodes[**i].op, Op::Conv2d(_))
                        })
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
                    let measured =
                        p.result.as_ref().and_then(|r| r.blocks.iter().find(|m| m.block == blk.name));
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
                    let body = html! {
                        <>
                            <rect x={BOX_X.to_string()} y={y.to_string()} width={BOX_W.to_string()} height={h.to_string()} rx="6" class="block" />
                            <text x={(BOX_X - 8.0).to_string()} y={(y + 20.0).to_string()} text-anchor="end" class="name">{ blk.name.clone() }</text>
                            { ratio.unwrap_or_default() }
                            <text x={cx.to_string()} y={(y + 18.0).to_string()} text-anchor="middle">{ format!("{} · {}", kind_name(blk.kind), convs.join(" → ")) }</text>
                            { shortcut }
                            { plus.unwrap_or_default() }
                        </>
                    };
                    (nodes, blk.output, h, body)
                }
            }
        };
        let selected = nodes.contains(&p.selected);
        let cb = p.on_select.clone();
        out.push(html! {
            <g class={classes!("item", selected.then_some("selected"))} data-testid="diagram-item" data-node={target.to_string()} data-name={name}
                onclick={Callback::from(move |_| cb.emit(target))}>
                <title>{ format!("{} — click to inspect", g.nodes[target].name) }</title>
                { body }
            </g>
        });
        y += h;
        last_out = target;
    }
    out.push(html! {
        <text x={(cx + 8.0).to_string()} y={(y + 16.0).to_string()} class="edge-label">{ format!("output {}", dims(last_out)) }</text>
    });
    let height = y + 30.0;
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
                    xmlns="http://www.w3.org/2000/svg" role="img" aria-label="architecture diagram">
                    <defs>
                        <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse">
                            <path d="M 0 0 L 10 5 L 0 10 z" />
                        </marker>
                    </defs>
                    { for out }
                </svg>
            </div>
        </section>
    }
}
