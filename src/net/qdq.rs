//! Quantization written into an ONNX graph as QuantizeLinear / DequantizeLinear
//! pairs (the QDQ form onnxruntime, TensorRT and tract run):
//! - [`insert_activations`]: every weighted layer's input (Conv, Gemm, MatMul with a
//!   stored weight) goes through Q → DQ with calibrated parameters, or through
//!   `DynamicQuantizeLinear` → DQ. The graph slimscope measures and the graph it
//!   exports are the same graph, so the simulated figure is the deployed one's.
//! - [`store_weight_codes`]: for the export, integer-quantized weights are stored as
//!   their int8/uint8 codes with per-tensor or per-channel (axis 0) scales and a
//!   DequantizeLinear, which decodes to exactly the values slimscope evaluated.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

use crate::compress::activations::{ActivationType, QuantParams};
use crate::compress::apply::AppliedTensor;

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
        ActivationType::Uint8 => {
            code_tensor(format!("{name}_zero_point"), &[p.zero_point], false, vec![])
        }
        ActivationType::Int8 => {
            code_tensor(format!("{name}_zero_point"), &[p.zero_point], true, vec![])
        }
    };
    (scale, zero_point)
}

/// Integer codes as an INT8 (`signed`) or UINT8 tensor.
fn code_tensor(name: String, codes: &[i32], signed: bool, dims: Vec<i64>) -> TensorProto {
    TensorProto {
        name,
        dims,
        data_type: if signed {
            DataType::Int8
        } else {
            DataType::Uint8
        } as i32,
        raw_data: codes.iter().map(|&q| q as u8).collect(),
        ..Default::default()
    }
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

/// Replace each integer-quantized weight of `applied` (8 bits or fewer, per tensor or
/// per output channel) by its codes, scales and zero points and a DequantizeLinear
/// that decodes them to the very values evaluated. Returns what stays float, and why.
/// Runs after [`insert_activations`], which finds weighted layers by their stored
/// weights.
pub fn store_weight_codes(
    proto: &mut ModelProto,
    applied: &[(usize, AppliedTensor)],
) -> Result<Vec<String>, String> {
    let version = opset(proto);
    let graph = proto.graph.as_mut().ok_or("the model has no graph")?;
    let mut notes = Vec::new();
    let mut front = Vec::new();
    for (_, t) in applied {
        let Some(grid) = &t.grid else { continue };
        let rows = t.shape.first().copied().unwrap_or(1).max(1) as usize;
        let len = t.values.len();
        let per_channel = grid.group != len.max(1);
        if per_channel && grid.group * rows != len {
            notes.push(format!(
                "{}: stored as float32 values (group scales need opset 21's blocked \
                 DequantizeLinear, which this export does not write)",
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
        let codes = grid
            .codes(&t.values)
            .ok_or_else(|| format!("`{}`: the values are not on their integer grid", t.name))?;
        let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        let quantized = format!("{}_quantized", t.name);
        let (scale, zero_point) = (
            format!("{}_scale", t.name),
            format!("{}_zero_point", t.name),
        );
        let param_dims = if per_channel {
            vec![rows as i64]
        } else {
            vec![]
        };
        graph.initializer.retain(|i| i.name != t.name);
        // Old graphs also list initializers as inputs; the name is now DQ's output.
        graph.input.retain(|i| i.name != t.name);
        graph
            .node
            .retain(|n| !(n.op_type == "Constant" && n.output.first() == Some(&t.name)));
        graph.initializer.push(code_tensor(
            quantized.clone(),
            &codes.codes,
            grid.symmetric,
            dims,
        ));
        graph.initializer.push(TensorProto {
            name: scale.clone(),
            dims: param_dims.clone(),
            data_type: DataType::Float as i32,
            raw_data: codes.scales.iter().flat_map(|s| s.to_le_bytes()).collect(),
            ..Default::default()
        });
        graph.initializer.push(code_tensor(
            zero_point.clone(),
            &codes.zero_points,
            grid.symmetric,
            param_dims,
        ));
        let axis = AttributeProto {
            name: "axis".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
            i: 0,
            ..Default::default()
        };
        front.push(node(
            "DequantizeLinear",
            vec![quantized, scale, zero_point],
            vec![t.name.clone()],
            if per_channel { vec![axis] } else { vec![] },
        ));
    }
    front.append(&mut graph.node);
    graph.node = front;
    Ok(notes)
}
