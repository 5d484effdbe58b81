//! The architecture description: a network as a list of named layers (a DAG in topological
//! order). The forward pass, the layer table and the diagram all read this one description, so
//! they cannot disagree. A node's name is its PyTorch module path, so weight names follow:
//! conv `layer1.0.conv1` owns `layer1.0.conv1.weight`.

use serde::{Deserialize, Serialize};

pub type NodeId = usize;

/// Activation shape of one sample, channels × height × width. Vectors (after `Flatten` or
/// `Linear`) are `C×1×1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl Shape {
    pub const fn new(c: usize, h: usize, w: usize) -> Self {
        Shape { c, h, w }
    }
    pub fn elements(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn to_array(self) -> [usize; 3] {
        [self.c, self.h, self.w]
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}×{}×{}", self.c, self.h, self.w)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Conv {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Pool {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub ceil_mode: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Op {
    Input,
    Conv2d(Conv),
    BatchNorm2d {
        channels: usize,
        eps: f64,
    },
    Relu,
    Tanh,
    MaxPool2d(Pool),
    AvgPool2d(Pool),
    /// `AdaptiveAvgPool2d((h, w))`; `(1, 1)` is the global average pool.
    AdaptiveAvgPool2d {
        h: usize,
        w: usize,
    },
    /// Local response normalisation across channels (AlexNet, ZFNet), PyTorch's formula.
    LocalResponseNorm {
        size: usize,
        alpha: f64,
        beta: f64,
        k: f64,
    },
    Flatten,
    Dropout {
        p: f32,
    },
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
    /// Residual sum `F(x) + shortcut(x)`; inputs are `[residual, shortcut]`.
    Add,
    /// Channel concatenation (Inception).
    Concat,
    /// Paper option A shortcut: `x[:, :, ::s, ::s]` zero-padded to `out_ch` channels, no
    /// parameters.
    ShortcutA {
        out_ch: usize,
        stride: usize,
    },
}

impl Op {
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "Input",
            Op::Conv2d(_) => "Conv2d",
            Op::BatchNorm2d { .. } => "BatchNorm2d",
            Op::Relu => "ReLU",
            Op::Tanh => "Tanh",
            Op::MaxPool2d(_) => "MaxPool2d",
            Op::AvgPool2d(_) => "AvgPool2d",
            Op::AdaptiveAvgPool2d { .. } => "AdaptiveAvgPool2d",
            Op::LocalResponseNorm { .. } => "LocalResponseNorm",
            Op::Flatten => "Flatten",
            Op::Dropout { .. } => "Dropout",
            Op::Linear { .. } => "Linear",
            Op::Add => "Add",
            Op::Concat => "Concat",
            Op::ShortcutA { .. } => "ShortcutA",
        }
    }

    /// Kernel, stride, padding where the layer has them.
    pub fn window(&self) -> Option<(usize, usize, usize)> {
        match self {
            Op::Conv2d(c) => Some((c.kernel, c.stride, c.padding)),
            Op::MaxPool2d(p) | Op::AvgPool2d(p) => Some((p.kernel, p.stride, p.padding)),
            Op::ShortcutA { stride, .. } => Some((1, *stride, 0)),
            _ => None,
        }
    }

    /// Whether inference writes a new tensor for this layer. ReLU runs in place, Dropout and
    /// Flatten are views: like the classic per-image memory counts, they add nothing.
    fn allocates(&self) -> bool {
        !matches!(self, Op::Relu | Op::Dropout { .. } | Op::Flatten | Op::Input)
    }
}

/// What kind of parameter a tensor is: trained weights, or BatchNorm's running statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ParamKind {
    Weight,
    Bias,
    RunningMean,
    RunningVar,
    /// `num_batches_tracked`: an int64 scalar PyTorch keeps; optional when loading.
    BatchCount,
}

impl ParamKind {
    /// Trained by gradient descent (and counted in "parameters").
    pub fn trainable(self) -> bool {
        matches!(self, ParamKind::Weight | ParamKind::Bias)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
}

impl ParamSpec {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Node {
    /// PyTorch module path; unique in the graph.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
    /// Output channels (size-independent, known while building).
    pub channels: usize,
    /// The block this layer belongs to, if any.
    pub block: Option<usize>,
    /// The stage (`layer1`, `features`, `inception3`…) this layer belongs to, if any.
    pub stage: Option<String>,
    /// A remark for the layer table (e.g. where we follow torchvision rather than the paper).
    pub note: Option<String>,
    /// The paper's name where it differs from the module path (VGG's `conv4_1` for
    /// `features.17`).
    pub paper: Option<String>,
}

impl Node {
    pub fn params(&self) -> Vec<ParamSpec> {
        let p = |suffix: &str, shape: Vec<usize>, kind| ParamSpec {
            name: format!("{}.{suffix}", self.name),
            shape,
            kind,
        };
        match &self.op {
            Op::Conv2d(c) => {
                let mut v = vec![p("weight", vec![c.out_ch, c.in_ch, c.kernel, c.kernel], ParamKind::Weight)];
                if c.bias {
                    v.push(p("bias", vec![c.out_ch], ParamKind::Bias));
                }
                v
            }
            Op::BatchNorm2d { channels, .. } => vec![
                p("weight", vec![*channels], ParamKind::Weight),
                p("bias", vec![*channels], ParamKind::Bias),
                p("running_mean", vec![*channels], ParamKind::RunningMean),
                p("running_var", vec![*channels], ParamKind::RunningVar),
                p("num_batches_tracked", vec![], ParamKind::BatchCount),
            ],
            Op::Linear { in_features, out_features, bias } => {
                let mut v = vec![p("weight", vec![*out_features, *in_features], ParamKind::Weight)];
                if *bias {
                    v.push(p("bias", vec![*out_features], ParamKind::Bias));
                }
                v
            }
            _ => vec![],
        }
    }

    pub fn trainable_params(&self) -> usize {
        self.params().iter().filter(|p| p.kind.trainable()).map(ParamSpec::elements).sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum BlockKind {
    /// Two 3×3 convs (ResNet-18/34, CIFAR ResNets).
    Basic,
    /// 1×1 → 3×3 → 1×1 (ResNet-50/101/152).
    Bottleneck,
    /// Inception module: parallel branches concatenated.
    Inception,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ShortcutKind {
    /// Plain net: no shortcut at all.
    None,
    Identity,
    /// Option A: subsample + zero-padded channels.
    ZeroPad,
    /// Option B / torchvision `downsample`: 1×1 conv + BN.
    Projection,
}

/// A residual block (or Inception module): what the diagram draws as one box and the
/// explorer shows as x → F(x) → H(x).
#[derive(Clone, Debug, Serialize)]
pub struct Block {
    pub name: String,
    pub kind: BlockKind,
    pub stage: Option<String>,
    /// The node feeding the block: x.
    pub input: NodeId,
    /// The block's last node: H(x) (after the final ReLU).
    pub output: NodeId,
    /// The residual branch's last node: F(x). `None` for Inception.
    pub residual: Option<NodeId>,
    pub shortcut: ShortcutKind,
    /// The shortcut's nodes (projection conv+bn, or the option-A node).
    pub shortcut_nodes: Vec<NodeId>,
    /// Inception: each branch's nodes, in concatenation order.
    pub branches: Vec<Vec<NodeId>>,
    /// The sum node, where there is one.
    pub add: Option<NodeId>,
}

/// A whole network description.
#[derive(Clone, Debug, Serialize)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub blocks: Vec<Block>,
    /// Default input shape (the size the net was designed for).
    pub input: Shape,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShapeError {
    #[error("layer {layer} ({kind}): {msg}")]
    Layer { layer: String, kind: &'static str, msg: String },
    #[error("input {0} does not fit this network: {1}")]
    Input(Shape, String),
}

/// What one output pixel sees, per node.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Field {
    size: usize,
    jump: usize,
    start: f64,
}

/// The input pixels one output pixel sees, clipped to the input: `[y0, y1) × [x0, x1)`;
/// `size` is the receptive field before clipping, centred on (`centre_y`, `centre_x`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RfBox {
    pub y0: usize,
    pub y1: usize,
    pub x0: usize,
    pub x1: usize,
    pub size: usize,
    pub centre_y: f64,
    pub centre_x: f64,
}

/// One row of the layer table.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LayerRow {
    pub name: String,
    pub kind: &'static str,
    pub kernel: Option<usize>,
    pub stride: Option<usize>,
    pub padding: Option<usize>,
    pub in_shape: [usize; 3],
    pub out_shape: [usize; 3],
    pub params: u64,
    pub macs: u64,
    /// Output elements of one sample.
    pub activations: u64,
    /// Theoretical receptive field: the side, in input pixels, of the window one output pixel
    /// sees (unclipped, so it can exceed the image).
    pub rf: usize,
    /// Input pixels between neighbouring output pixels (the product of the strides so far).
    pub jump: usize,
    /// Whether `activations` counts towards the activation memory total (ReLU is in place,
    /// Flatten and Dropout are views).
    pub allocates: bool,
    pub block: Option<String>,
    pub stage: Option<String>,
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paper: Option<String>,
}

/// The layer table for one input size.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub input: [usize; 3],
    pub layers: Vec<LayerRow>,
    pub total_params: u64,
    pub total_macs: u64,
    /// Input plus every allocated layer output, elements per sample.
    pub total_activations: u64,
    /// `total_activations` in f32 bytes.
    pub activation_bytes: u64,
}

impl Summary {
    /// Every node's output shape, C×H×W, by node id (`[0]` is the input).
    pub fn node_shapes(&self) -> Vec<[usize; 3]> {
        std::iter::once(self.input).chain(self.layers.iter().map(|r| r.out_shape)).collect()
    }
}

/// Output length of a conv or pool along one side: `⌊(N − F + 2P)/S⌋ + 1` (`⌈…⌉` in ceil mode,
/// where PyTorch drops a last window that would start in the right padding). The one place the
/// formula lives: shapes, kernels and the training conv all call it.
pub fn out_size(n: usize, k: usize, s: usize, p: usize, ceil: bool) -> Result<usize, String> {
    let padded = n + 2 * p;
    if k > padded {
        return Err(format!("kernel {k} is larger than the padded input {padded} ({n} + 2×{p})"));
    }
    if s == 0 {
        return Err("stride 0".into());
    }
    let span = padded - k;
    let mut out = if ceil { span.div_ceil(s) + 1 } else { span / s + 1 };
    // PyTorch: in ceil mode the last window must start inside the input or left padding.
    if ceil && (out - 1) * s >= n + p {
        out -= 1;
    }
    Ok(out)
}

impl Graph {
    pub fn node(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The output node (the last one).
    pub fn output(&self) -> NodeId {
        self.nodes.len() - 1
    }

    pub fn num_classes(&self) -> usize {
        self.nodes[self.output()].channels
    }

    /// Every tensor of the state dict, in graph order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        self.nodes.iter().flat_map(Node::params).collect()
    }

    pub fn total_params(&self) -> u64 {
        self.nodes.iter().map(|n| n.trainable_params() as u64).sum()
    }

    /// Each node's only consumer, where it has exactly one (what a fused kernel may absorb).
    pub fn sole_consumers(&self) -> Vec<Option<NodeId>> {
        let mut consumers = vec![vec![]; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for &j in &node.inputs {
                consumers[j].push(i);
            }
        }
        consumers.into_iter().map(|c| if let [j] = c.as_slice() { Some(*j) } else { None }).collect()
    }

    /// Number of consumers of each node.
    pub fn fan_out(&self) -> Vec<usize> {
        let mut uses = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                uses[i] += 1;
            }
        }
        uses
    }

    /// Output shape of every node for `input` (the net's own input size when `None`), without
    /// running the net. Fails naming the first layer that cannot take its input.
    pub fn shapes(&self, input: Option<Shape>) -> Result<Vec<Shape>, ShapeError> {
        let input = input.unwrap_or(self.input);
        if input.c != self.input.c {
            return Err(ShapeError::Input(
                input,
                format!("the network takes {} input channels", self.input.c),
            ));
        }
        if input.h == 0 || input.w == 0 {
            return Err(ShapeError::Input(input, "empty image".into()));
        }
        let mut shapes: Vec<Shape> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let err = |msg: String| ShapeError::Layer { layer: node.name.clone(), kind: node.op.kind(), msg };
            let x = node.inputs.first().map(|&i| shapes[i]);
            let x = || x.expect("non-input layers have an input");
            let shape = match &node.op {
                Op::Input => input,
                Op::Conv2d(c) => {
                    let x = x();
                    if x.c != c.in_ch {
                        return Err(err(format!("expects {} channels, got {}", c.in_ch, x.c)));
                    }
                    let h = out_size(x.h, c.kernel, c.stride, c.padding, false).map_err(err)?;
                    let w = out_size(x.w, c.kernel, c.stride, c.padding, false).map_err(err)?;
                    Shape::new(c.out_ch, h, w)
                }
                Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
                    let x = x();
                    if p.padding * 2 > p.kernel {
                        return Err(err(format!(
                            "padding {} exceeds half the kernel {}",
                            p.padding, p.kernel
                        )));
                    }
                    let h = out_size(x.h, p.kernel, p.stride, p.padding, p.ceil_mode).map_err(err)?;
                    let w = out_size(x.w, p.kernel, p.stride, p.padding, p.ceil_mode).map_err(err)?;
                    Shape::new(x.c, h, w)
                }
                Op::AdaptiveAvgPool2d { h, w } => Shape::new(x().c, *h, *w),
                Op::Flatten => Shape::new(x().elements(), 1, 1),
                Op::Linear { in_features, out_features, .. } => {
                    let x = x();
                    if x.elements() != *in_features {
                        return Err(err(format!(
                            "expects {in_features} input features, got {} ({}); \
                             the input size {}×{} does not fit this network",
                            x.elements(),
                            x,
                            input.h,
                            input.w
                        )));
                    }
                    Shape::new(*out_features, 1, 1)
                }
                Op::Add => {
                    let (a, b) = (shapes[node.inputs[0]], shapes[node.inputs[1]]);
                    if a != b {
                        return Err(err(format!("cannot add {a} and {b}")));
                    }
                    a
                }
                Op::Concat => {
                    let first = shapes[node.inputs[0]];
                    let mut c = 0;
                    for &i in &node.inputs {
                        let s = shapes[i];
                        if (s.h, s.w) != (first.h, first.w) {
                            return Err(err(format!("cannot concatenate {first} and {s}")));
                        }
                        c += s.c;
                    }
                    Shape::new(c, first.h, first.w)
                }
                Op::ShortcutA { out_ch, stride } => {
                    let x = x();
                    Shape::new(*out_ch, x.h.div_ceil(*stride), x.w.div_ceil(*stride))
                }
                Op::BatchNorm2d { .. }
                | Op::Relu
                | Op::Tanh
                | Op::LocalResponseNorm { .. }
                | Op::Dropout { .. } => x(),
            };
            if shape.elements() == 0 {
                return Err(err(format!("output {shape} is empty: the input is too small")));
            }
            shapes.push(shape);
        }
        Ok(shapes)
    }

    /// Receptive field and jump of every node (see [`LayerRow::rf`]) for the given shapes: a
    /// window of kernel `k` and stride `s` gives `rf + (k − 1)·jump` and `jump·s`; a residual
    /// sum or a concatenation takes its widest input; a layer that sees its whole input map
    /// (flatten, an adaptive pool to fewer cells) covers the map.
    pub fn receptive_fields(&self, shapes: &[Shape]) -> Vec<(usize, usize)> {
        self.fields(shapes).into_iter().map(|f| (f.size, f.jump)).collect()
    }

    /// Receptive field, jump and the centre of output pixel 0 in input pixels, per node.
    fn fields(&self, shapes: &[Shape]) -> Vec<Field> {
        let mut rf: Vec<Field> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let widest = node
                .inputs
                .iter()
                .map(|&j| rf[j])
                .max_by_key(|f| (f.size, f.jump))
                .unwrap_or(Field { size: 1, jump: 1, start: 0.0 });
            let map = node.inputs.first().map_or(1, |&j| shapes[j].h.max(shapes[j].w));
            let out = shapes[i].h.max(shapes[i].w);
            let (k, s, p) = match &node.op {
                Op::AdaptiveAvgPool2d { .. } if out < map => (map.div_ceil(out), map / out, 0),
                Op::Flatten => (map, map, 0),
                op => op.window().unwrap_or((1, 1, 0)),
            };
            let Field { size, jump, start } = widest;
            rf.push(Field {
                size: size + (k - 1) * jump,
                jump: jump * s,
                start: start + ((k as f64 - 1.0) / 2.0 - p as f64) * jump as f64,
            });
        }
        rf
    }

    /// The depth in a network's name: weight layers (convs and fully connected) on the longest
    /// path from input to output — 18 for ResNet-18 (its projection shortcuts lie on shorter
    /// paths), 16 for VGG-16, 22 for GoogLeNet.
    pub fn depth(&self) -> usize {
        let mut depth: Vec<usize> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let before = node.inputs.iter().map(|&j| depth[j]).max().unwrap_or(0);
            depth.push(before + usize::from(matches!(node.op, Op::Conv2d(_) | Op::Linear { .. })));
        }
        depth[self.output()]
    }

    /// The input pixels that output pixel (`y`, `x`) of `node` sees, clipped to the input: rows
    /// and columns `[y0, y1) × [x0, x1)`, with the unclipped size (the receptive field). `None`
    /// where the node or the pixel does not exist for that input (`None`: the default size).
    pub fn rf_box(&self, input: Option<Shape>, node: NodeId, y: usize, x: usize) -> Option<RfBox> {
        let shapes = self.shapes(input).ok()?;
        let (f, out) = (self.fields(&shapes).get(node).copied()?, shapes.get(node)?);
        if y >= out.h || x >= out.w {
            return None;
        }
        let input = shapes[0];
        let half = (f.size as f64 - 1.0) / 2.0;
        let centre = |i: usize| f.start + (i * f.jump) as f64;
        let span = |i: usize, n: usize| {
            let centre = centre(i);
            let lo = (centre - half).round().max(0.0) as usize;
            let hi = ((centre + half).round() + 1.0).clamp(0.0, n as f64) as usize;
            (lo.min(n), hi.max(lo.min(n)))
        };
        let ((y0, y1), (x0, x1)) = (span(y, input.h), span(x, input.w));
        Some(RfBox { y0, y1, x0, x1, size: f.size, centre_y: centre(y), centre_x: centre(x) })
    }

    /// The layer table: one row per layer (sums, pools and concatenations included).
    pub fn summary(&self, input: Option<Shape>) -> Result<Summary, ShapeError> {
        let shapes = self.shapes(input)?;
        let fields = self.receptive_fields(&shapes);
        let input = shapes[0];
        let mut layers = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            let out = shapes[i];
            let in_shape = shapes[node.inputs[0]];
            let macs = match &node.op {
                Op::Conv2d(c) => out.elements() * c.in_ch * c.kernel * c.kernel,
                Op::Linear { in_features, out_features, .. } => in_features * out_features,
                _ => 0,
            };
            let (kernel, stride, padding) = match node.op.window() {
                Some((k, s, p)) => (Some(k), Some(s), Some(p)),
                None => (None, None, None),
            };
            // An adaptive pool that keeps the size (VGG's 7×7 at 224) is the identity.
            let identity_pool = matches!(node.op, Op::AdaptiveAvgPool2d { .. }) && out == in_shape;
            layers.push(LayerRow {
                name: node.name.clone(),
                kind: node.op.kind(),
                kernel,
                stride,
                padding,
                in_shape: in_shape.to_array(),
                out_shape: out.to_array(),
                params: node.trainable_params() as u64,
                macs: macs as u64,
                activations: out.elements() as u64,
                rf: fields[i].0,
                jump: fields[i].1,
                allocates: node.op.allocates() && !identity_pool,
                block: node.block.map(|b| self.blocks[b].name.clone()),
                stage: node.stage.clone(),
                note: node.note.clone(),
                paper: node.paper.clone(),
            });
        }
        let total_activations = input.elements() as u64
            + layers.iter().filter(|r| r.allocates).map(|r| r.activations).sum::<u64>();
        Ok(Summary {
            input: input.to_array(),
            total_params: layers.iter().map(|r| r.params).sum(),
            total_macs: layers.iter().map(|r| r.macs).sum(),
            total_activations,
            activation_bytes: total_activations * 4,
            layers,
        })
    }
}

/// Builds a [`Graph`] the way torchvision's modules nest: stages, blocks, layers.
pub struct GraphBuilder {
    nodes: Vec<Node>,
    blocks: Vec<Block>,
    stage: Option<String>,
    block: Option<usize>,
    prefix: String,
    input: Shape,
}

impl GraphBuilder {
    /// Starts a network whose design input is `input`.
    pub fn new(input: Shape) -> Self {
        let mut b = GraphBuilder {
            input,
            nodes: vec![],
            blocks: vec![],
            stage: None,
            block: None,
            prefix: String::new(),
        };
        b.push("input", Op::Input, vec![], input.c);
        b
    }

    pub fn input(&self) -> NodeId {
        0
    }

    /// Number of layers so far (the id the next one gets).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn channels(&self, x: NodeId) -> usize {
        self.nodes[x].channels
    }

    /// Names of later layers are `prefix + name` (e.g. `layer1.0.` + `conv1`).
    pub fn set_prefix(&mut self, prefix: &str) {
        self.prefix = prefix.to_string();
    }

    pub fn begin_stage(&mut self, name: &str) {
        self.stage = Some(name.to_string());
    }

    pub fn end_stage(&mut self) {
        self.stage = None;
    }

    fn push(&mut self, name: &str, op: Op, inputs: Vec<NodeId>, channels: usize) -> NodeId {
        let name = format!("{}{name}", self.prefix);
        debug_assert!(self.nodes.iter().all(|n| n.name != name), "duplicate layer {name}");
        self.nodes.push(Node {
            name,
            op,
            inputs,
            channels,
            block: self.block,
            stage: self.stage.clone(),
            note: None,
            paper: None,
        });
        self.nodes.len() - 1
    }

    /// Gives `id` the paper's name for it (see `Node::paper`).
    pub fn paper_name(&mut self, id: NodeId, name: String) {
        self.nodes[id].paper = Some(name);
    }

    pub fn note(&mut self, id: NodeId, note: &str) {
        self.nodes[id].note = Some(note.to_string());
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        x: NodeId,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> NodeId {
        let in_ch = self.channels(x);
        let op = Op::Conv2d(Conv { in_ch, out_ch, kernel, stride, padding, bias });
        self.push(name, op, vec![x], out_ch)
    }

    pub fn bn(&mut self, name: &str, x: NodeId) -> NodeId {
        self.bn_eps(name, x, 1e-5)
    }

    pub fn bn_eps(&mut self, name: &str, x: NodeId, eps: f64) -> NodeId {
        let channels = self.channels(x);
        self.push(name, Op::BatchNorm2d { channels, eps }, vec![x], channels)
    }

    pub fn relu(&mut self, name: &str, x: NodeId) -> NodeId {
        let c = self.channels(x);
        self.push(name, Op::Relu, vec![x], c)
    }

    pub fn tanh(&mut self, name: &str, x: NodeId) -> NodeId {
        let c = self.channels(x);
        self.push(name, Op::Tanh, vec![x], c)
    }

    pub fn max_pool(
        &mut self,
        name: &str,
        x: NodeId,
        kernel: usize,
        stride: usize,
        padding: usize,
        ceil_mode: bool,
    ) -> NodeId {
        let c = self.channels(x);
        let op = Op::MaxPool2d(Pool { kernel, stride, padding, ceil_mode });
        self.push(name, op, vec![x], c)
    }

    pub fn avg_pool(&mut self, name: &str, x: NodeId, kernel: usize, stride: usize) -> NodeId {
        let c = self.channels(x);
        let op = Op::AvgPool2d(Pool { kernel, stride, padding: 0, ceil_mode: false });
        self.push(name, op, vec![x], c)
    }

    pub fn adaptive_avg_pool(&mut self, name: &str, x: NodeId, h: usize, w: usize) -> NodeId {
        let c = self.channels(x);
        self.push(name, Op::AdaptiveAvgPool2d { h, w }, vec![x], c)
    }

    pub fn lrn(&mut self, name: &str, x: NodeId) -> NodeId {
        let c = self.channels(x);
        // AlexNet §3.3: k = 2, n = 5, α = 1e-4, β = 0.75.
        let op = Op::LocalResponseNorm { size: 5, alpha: 1e-4, beta: 0.75, k: 2.0 };
        self.push(name, op, vec![x], c)
    }

    /// Flatten; `features` is the flattened length, which the following `Linear` checks.
    pub fn flatten(&mut self, name: &str, x: NodeId, features: usize) -> NodeId {
        self.push(name, Op::Flatten, vec![x], features)
    }

    pub fn dropout(&mut self, name: &str, x: NodeId, p: f32) -> NodeId {
        let c = self.channels(x);
        self.push(name, Op::Dropout { p }, vec![x], c)
    }

    pub fn linear(&mut self, name: &str, x: NodeId, out_features: usize) -> NodeId {
        let in_features = self.channels(x);
        let op = Op::Linear { in_features, out_features, bias: true };
        self.push(name, op, vec![x], out_features)
    }

    pub fn add(&mut self, name: &str, residual: NodeId, shortcut: NodeId) -> NodeId {
        let c = self.channels(residual);
        self.push(name, Op::Add, vec![residual, shortcut], c)
    }

    pub fn concat(&mut self, name: &str, xs: Vec<NodeId>) -> NodeId {
        let c = xs.iter().map(|&x| self.channels(x)).sum();
        self.push(name, Op::Concat, xs, c)
    }

    pub fn shortcut_a(&mut self, name: &str, x: NodeId, out_ch: usize, stride: usize) -> NodeId {
        self.push(name, Op::ShortcutA { out_ch, stride }, vec![x], out_ch)
    }

    /// Opens a block; its layers are named `name.` + layer name until `end_block`.
    pub fn begin_block(&mut self, name: &str, kind: BlockKind, input: NodeId) -> usize {
        self.blocks.push(Block {
            name: name.to_string(),
            kind,
            stage: self.stage.clone(),
            input,
            output: input,
            residual: None,
            shortcut: ShortcutKind::None,
            shortcut_nodes: vec![],
            branches: vec![],
            add: None,
        });
        self.block = Some(self.blocks.len() - 1);
        self.prefix = format!("{name}.");
        self.blocks.len() - 1
    }

    pub fn block_mut(&mut self, id: usize) -> &mut Block {
        &mut self.blocks[id]
    }

    pub fn end_block(&mut self, output: NodeId) {
        if let Some(b) = self.block.take() {
            self.blocks[b].output = output;
        }
        self.prefix.clear();
    }

    pub fn finish(self) -> Graph {
        Graph { nodes: self.nodes, blocks: self.blocks, input: self.input }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_formula() {
        assert_eq!(out_size(227, 11, 4, 0, false), Ok(55));
        assert_eq!(out_size(55, 3, 2, 0, false), Ok(27));
        assert_eq!(out_size(32, 5, 1, 2, false), Ok(32));
        assert_eq!(out_size(110, 3, 2, 0, true), Ok(55));
        assert_eq!(out_size(26, 3, 2, 0, true), Ok(13));
        assert_eq!(out_size(13, 3, 2, 0, true), Ok(6));
        assert!(out_size(2, 5, 1, 1, false).is_err());
    }
}
