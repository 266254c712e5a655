//! Quantization written into an ONNX graph as QuantizeLinear / DequantizeLinear
//! pairs (the QDQ form onnxruntime, TensorRT and tract run):
//! - [`insert_activations`]: every weighted layer's input (Conv, Gemm, MatMul with a
//!   stored weight) goes through Q → DQ with calibrated parameters, or through
//!   `DynamicQuantizeLinear` → DQ. The graph slimscope measures and the graph it
//!   exports are the same graph, so the simulated figure is the deployed one's.
//! - [`store_weight_codes`]: for the export, integer-quantized weights are stored as
//!   their codes (int8/uint8, or int4/uint4 at opset 21) with per-tensor, per-channel
//!   (axis 0) or blocked (axis 1) scales and a DequantizeLinear, which decodes to
//!   exactly the values slimscope evaluated.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

use crate::compress::activations::{ActivationType, QuantParams};
use crate::compress::apply::AppliedTensor;
use crate::compress::quant::IntCodes;

/// Activation quantization resolved for one graph.
#[derive(Debug, Clone, PartialEq)]
pub enum Activations {
    /// Calibrated parameters per quantized tensor (see [`quantized_inputs`]).
    Static(Vec<(String, QuantParams)>),
    /// Computed at run time, per tensor of one sample (the graph runs at batch 1).
    Dynamic,
}

/// How dynamic quantization is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynamicForm {
    /// `DynamicQuantizeLinear` → `DequantizeLinear`: the deployable form, which
    /// onnxruntime runs (and fuses into integer kernels).
    Operator,
    /// The same arithmetic in float operators (ReduceMin/Max, Div, Round, Clip):
    /// what tract, whose DequantizeLinear takes constant scales only, runs.
    FloatOps,
}

/// Operators whose second input, when stored in the graph, is a weight.
const WEIGHTED: [&str; 3] = ["Conv", "Gemm", "MatMul"];

/// Names of the tensors stored in the graph (initializers and `Constant` outputs).
fn stored(graph: &GraphProto) -> HashSet<&str> {
    let mut names: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    for n in graph.node.iter().filter(|n| n.op_type == "Constant") {
        names.extend(n.output.iter().map(String::as_str));
    }
    names
}

fn is_weighted(node: &NodeProto, stored: &HashSet<&str>) -> bool {
    WEIGHTED.contains(&node.op_type.as_str())
        && node
            .input
            .get(1)
            .is_some_and(|w| stored.contains(w.as_str()))
        && node
            .input
            .first()
            .is_some_and(|x| !stored.contains(x.as_str()))
}

/// The activations the weighted layers read (their first input), each once, in
/// graph order: what activation quantization quantizes and calibration observes.
pub fn quantized_inputs(graph: &GraphProto) -> Vec<String> {
    let stored = stored(graph);
    let mut seen = HashSet::new();
    graph
        .node
        .iter()
        .filter(|n| is_weighted(n, &stored))
        .map(|n| n.input[0].clone())
        .filter(|x| seen.insert(x.clone()))
        .collect()
}

/// The opset of the default domain the model imports.
pub fn opset(proto: &ModelProto) -> i64 {
    proto
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(1)
}

fn scalar_param(name: String, p: &QuantParams) -> (TensorProto, TensorProto) {
    let scale = TensorProto {
        name: format!("{name}_scale"),
        data_type: DataType::Float as i32,
        raw_data: p.scale.to_le_bytes().to_vec(),
        ..Default::default()
    };
    let zero_point = match p.dtype {
        ActivationType::Uint8 => code_tensor(
            format!("{name}_zero_point"),
            &[p.zero_point],
            false,
            vec![],
            false,
        ),
        ActivationType::Int8 => code_tensor(
            format!("{name}_zero_point"),
            &[p.zero_point],
            true,
            vec![],
            false,
        ),
    };
    (scale, zero_point)
}

/// Integer codes as an INT8 (`signed`) or UINT8 tensor.
/// Integer codes as an initializer: int8/uint8, or with `four_bits` int4/uint4 two
/// per byte, the first in the low nibble (onnx.proto: "the first element is stored
/// in the 4 LSB").
fn code_tensor(
    name: String,
    codes: &[i32],
    signed: bool,
    dims: Vec<i64>,
    four_bits: bool,
) -> TensorProto {
    let (data_type, raw_data) = match (four_bits, signed) {
        (false, true) => (
            DataType::Int8 as i32,
            codes.iter().map(|&q| q as u8).collect(),
        ),
        (false, false) => (
            DataType::Uint8 as i32,
            codes.iter().map(|&q| q as u8).collect(),
        ),
        (true, _) => (
            if signed { INT4 } else { UINT4 },
            codes
                .chunks(2)
                .map(|p| (p[0] as u8 & 0xF) | ((p.get(1).copied().unwrap_or(0) as u8 & 0xF) << 4))
                .collect(),
        ),
    };
    TensorProto {
        name,
        dims,
        data_type,
        raw_data,
        ..Default::default()
    }
}

/// Take `t`'s float initializer (or Constant) out of `graph` and put its codes,
/// scales and zero points in; returns the DequantizeLinear that gives `t` back.
fn replace_by_codes(
    graph: &mut GraphProto,
    t: &AppliedTensor,
    codes: &IntCodes,
    symmetric: bool,
    layout: &Layout,
) -> NodeProto {
    let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    let quantized = format!("{}_quantized", t.name);
    let (scale, zero_point) = (
        format!("{}_scale", t.name),
        format!("{}_zero_point", t.name),
    );
    graph.initializer.retain(|i| i.name != t.name);
    // Old graphs also list initializers as inputs; the name is now DQ's output.
    graph.input.retain(|i| i.name != t.name);
    graph
        .node
        .retain(|n| !(n.op_type == "Constant" && n.output.first() == Some(&t.name)));
    graph.initializer.push(code_tensor(
        quantized.clone(),
        &codes.codes,
        symmetric,
        dims,
        layout.four_bits,
    ));
    graph.initializer.push(TensorProto {
        name: scale.clone(),
        dims: layout.param_dims.clone(),
        data_type: DataType::Float as i32,
        raw_data: codes.scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
        ..Default::default()
    });
    graph.initializer.push(code_tensor(
        zero_point.clone(),
        &codes.zero_points,
        symmetric,
        layout.param_dims.clone(),
        layout.four_bits,
    ));
    let int = |name: &str, i: i64| AttributeProto {
        name: name.into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
        i,
        ..Default::default()
    };
    let mut attributes: Vec<AttributeProto> =
        layout.axis.map(|a| int("axis", a)).into_iter().collect();
    if layout.block > 0 {
        attributes.push(int("block_size", layout.block));
    }
    node(
        "DequantizeLinear",
        vec![quantized, scale, zero_point],
        vec![t.name.clone()],
        attributes,
    )
}

fn node(
    op: &str,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        name: outputs[0].clone(),
        op_type: op.into(),
        input: inputs,
        output: outputs,
        attribute,
        ..Default::default()
    }
}

/// Quantize every weighted layer's input as `acts` says: Q → DQ (static) or
/// DynamicQuantizeLinear → DQ placed before the first layer that reads it, the
/// weighted layers reading the dequantized tensor (other readers keep the float one).
pub fn insert_activations(
    proto: &mut ModelProto,
    acts: &Activations,
    form: DynamicForm,
) -> Result<(), String> {
    let version = opset(proto);
    let needed = match acts {
        Activations::Static(_) => 10,
        Activations::Dynamic => 11,
    };
    if version < needed {
        return Err(format!(
            "the graph imports opset {version}; {} needs opset {needed} or later",
            match acts {
                Activations::Static(_) => "QuantizeLinear",
                Activations::Dynamic => "DynamicQuantizeLinear",
            }
        ));
    }
    let graph = proto.graph.as_mut().ok_or("the model has no graph")?;
    let params: HashMap<&str, &QuantParams> = match acts {
        Activations::Static(list) => list.iter().map(|(n, p)| (n.as_str(), p)).collect(),
        Activations::Dynamic => HashMap::new(),
    };
    let quantized = quantized_inputs(graph);
    let stored: HashSet<String> = stored(graph).into_iter().map(str::to_owned).collect();
    let stored: HashSet<&str> = stored.iter().map(String::as_str).collect();
    let mut done: HashSet<String> = HashSet::new();
    let mut nodes = Vec::with_capacity(graph.node.len() + 2 * quantized.len());
    let mut initializers = Vec::new();
    for mut n in std::mem::take(&mut graph.node) {
        if is_weighted(&n, &stored) {
            let x = n.input[0].clone();
            let dq = format!("{x}_DequantizeLinear_Output");
            if done.insert(x.clone()) {
                let q = format!("{x}_QuantizeLinear_Output");
                let (scale, zero_point) = (format!("{x}_scale"), format!("{x}_zero_point"));
                match acts {
                    Activations::Static(_) => {
                        let p = params
                            .get(x.as_str())
                            .ok_or_else(|| format!("no calibrated range for `{x}`"))?;
                        let (s, z) = scalar_param(x.clone(), p);
                        initializers.extend([s, z]);
                        nodes.push(node(
                            "QuantizeLinear",
                            vec![x.clone(), scale.clone(), zero_point.clone()],
                            vec![q.clone()],
                            vec![],
                        ));
                    }
                    Activations::Dynamic if form == DynamicForm::FloatOps => {
                        dynamic_float_ops(&x, &dq, &mut nodes, &mut initializers);
                    }
                    Activations::Dynamic => nodes.push(node(
                        "DynamicQuantizeLinear",
                        vec![x.clone()],
                        vec![q.clone(), scale.clone(), zero_point.clone()],
                        vec![],
                    )),
                }
                if !(matches!(acts, Activations::Dynamic) && form == DynamicForm::FloatOps) {
                    nodes.push(node(
                        "DequantizeLinear",
                        vec![q, scale, zero_point],
                        vec![dq.clone()],
                        vec![],
                    ));
                }
            }
            n.input[0] = dq;
        }
        nodes.push(n);
    }
    debug_assert_eq!(done.len(), quantized.len());
    graph.node = nodes;
    graph.initializer.extend(initializers);
    Ok(())
}

/// ONNX's DynamicQuantizeLinear followed by DequantizeLinear, `x` → `out`, in float
/// operators: `scale = (max(x, 0) − min(x, 0)) / 255`, `zp = round(clip(−min/scale,
/// 0, 255))`, `out = (clip(round(x/scale) + zp, 0, 255) − zp)·scale` (rounding half
/// to even; a zero tensor's scale is lifted to the smallest normal float, so it
/// stays zero instead of NaN).
fn dynamic_float_ops(x: &str, out: &str, nodes: &mut Vec<NodeProto>, inits: &mut Vec<TensorProto>) {
    let c = |name: &str, v: f32, inits: &mut Vec<TensorProto>| {
        let name = format!("{x}_dyn_{name}");
        inits.push(TensorProto {
            name: name.clone(),
            data_type: DataType::Float as i32,
            raw_data: v.to_le_bytes().to_vec(),
            ..Default::default()
        });
        name
    };
    let (zero, top, tiny) = (
        c("zero", 0.0, inits),
        c("255", 255.0, inits),
        c("tiny", f32::MIN_POSITIVE, inits),
    );
    let keep0 = AttributeProto {
        name: "keepdims".into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
        i: 0,
        ..Default::default()
    };
    let v = |name: &str| format!("{x}_dyn_{name}");
    let mut op = |op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>| {
        nodes.push(node(
            op,
            inputs.iter().map(|s| (*s).to_owned()).collect(),
            vec![output.to_owned()],
            attrs,
        ));
    };
    op("ReduceMin", &[x], &v("min"), vec![keep0.clone()]);
    op("ReduceMax", &[x], &v("max"), vec![keep0]);
    op("Min", &[&v("min"), &zero], &v("lo"), vec![]);
    op("Max", &[&v("max"), &zero], &v("hi"), vec![]);
    op("Sub", &[&v("hi"), &v("lo")], &v("range"), vec![]);
    op("Div", &[&v("range"), &top], &v("scale0"), vec![]);
    op("Max", &[&v("scale0"), &tiny], &v("scale"), vec![]);
    op("Div", &[&v("lo"), &v("scale")], &v("zp0"), vec![]);
    op("Sub", &[&zero, &v("zp0")], &v("zp1"), vec![]);
    op("Clip", &[&v("zp1"), &zero, &top], &v("zp2"), vec![]);
    op("Round", &[&v("zp2")], &v("zp"), vec![]);
    op("Div", &[x, &v("scale")], &v("q0"), vec![]);
    op("Round", &[&v("q0")], &v("q1"), vec![]);
    op("Add", &[&v("q1"), &v("zp")], &v("q2"), vec![]);
    op("Clip", &[&v("q2"), &zero, &top], &v("q"), vec![]);
    op("Sub", &[&v("q"), &v("zp")], &v("centred"), vec![]);
    op("Mul", &[&v("centred"), &v("scale")], out, vec![]);
}

/// ONNX's 4-bit element types (onnx.proto `TensorProto.DataType`), which the
/// protobuf bindings slimscope reads with predate.
const UINT4: i32 = 21;
const INT4: i32 = 22;

/// How one weight's codes are stored.
struct Layout {
    /// Scale dimensions: none per tensor, `[rows]` per channel, `[rows, blocks]`
    /// per block of the row.
    param_dims: Vec<i64>,
    /// DequantizeLinear's `axis` and `block_size` (0 for none).
    axis: Option<i64>,
    block: i64,
    /// Two codes per byte (opset 21's int4/uint4).
    four_bits: bool,
}

/// Replace each integer-quantized weight of `applied` (8 bits or fewer; per tensor,
/// per output channel, or in blocks along the rows of a 2-D weight) by its codes,
/// scales and zero points and a DequantizeLinear that decodes them to the very
/// values evaluated. 4-bit codes are stored as int4/uint4 and blocks use opset 21's
/// blocked DequantizeLinear: on a graph importing opset 21, or on one slimscope
/// generated (`may_raise_opset`), whose opset is raised to 21 for them; elsewhere
/// 4-bit codes take a byte each and blocks stay float, with a note. Returns what
/// stays float or wide, and why. Runs after [`insert_activations`], which finds
/// weighted layers by their stored weights.
pub fn store_weight_codes(
    proto: &mut ModelProto,
    applied: &[(usize, AppliedTensor)],
    may_raise_opset: bool,
) -> Result<Vec<String>, String> {
    let version = opset(proto);
    let opset21 = version >= 21 || may_raise_opset;
    let mut raise = false;
    let graph = proto.graph.as_mut().ok_or("the model has no graph")?;
    let mut notes = Vec::new();
    let mut front = Vec::new();
    for (_, t) in applied {
        let Some(grid) = &t.grid else { continue };
        let rows = t.shape.first().copied().unwrap_or(1).max(1) as usize;
        let len = t.values.len();
        let per_channel = grid.group != len.max(1);
        let row_len = len / rows;
        let blocked = per_channel && grid.group * rows != len;
        if blocked && !(opset21 && t.shape.len() == 2 && row_len.is_multiple_of(grid.group)) {
            notes.push(format!(
                "{}: stored as float32 values (group scales are written as opset 21's blocked \
                 DequantizeLinear for 2-D weights of graphs at opset 21 or generated by slimscope)",
                t.name
            ));
            continue;
        }
        if per_channel && version < 13 {
            return Err(format!(
                "`{}` is quantized per channel, which DequantizeLinear takes from opset 13; \
                 the graph imports opset {version} (quantize it per tensor, or convert the \
                 model to opset 13 first)",
                t.name
            ));
        }
        let four_bits = grid.bits <= 4 && opset21;
        if grid.bits <= 4 && !opset21 {
            notes.push(format!(
                "{}: {}-bit codes stored one per byte (int4/uint4 need opset 21; the graph \
                 imports {version})",
                t.name, grid.bits
            ));
        }
        raise |= (four_bits || blocked) && version < 21;
        let layout = Layout {
            param_dims: match (blocked, per_channel) {
                (true, _) => vec![rows as i64, (row_len / grid.group) as i64],
                (false, true) => vec![rows as i64],
                (false, false) => vec![],
            },
            axis: match (blocked, per_channel) {
                (true, _) => Some(1),
                (false, true) => Some(0),
                (false, false) => None,
            },
            block: if blocked { grid.group as i64 } else { 0 },
            four_bits,
        };
        let codes = grid
            .codes(&t.values)
            .ok_or_else(|| format!("`{}`: the values are not on their integer grid", t.name))?;
        front.push(replace_by_codes(graph, t, &codes, grid.symmetric, &layout));
    }
    if raise {
        for o in &mut proto.opset_import {
            if o.domain.is_empty() || o.domain == "ai.onnx" {
                o.version = 21;
            }
        }
        // int4 and uint4 arrived with IR version 10.
        proto.ir_version = proto.ir_version.max(10);
    }
    let graph = proto.graph.as_mut().ok_or("the model has no graph")?;
    front.append(&mut graph.node);
    graph.node = front;
    Ok(notes)
}
