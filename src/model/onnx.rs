//! ONNX models: weights come from graph initializers **and** from `Constant` nodes
//! (exporters such as Paddle2ONNX store every weight as a Constant), plus external
//! data files. The protobuf messages are declared below with prost's derive, holding
//! just the fields we read (field numbers from onnx/onnx.proto3); unknown fields are
//! skipped by prost. `raw_data` is decoded zero-copy from the memory-mapped file.
//! Layers are the graph's nodes: each node owns the weights it consumes.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use serde_json::json;

use super::{Ctx, Data, Layer, LayerKind, Loaded, Origin, TensorInfo, checked_numel, map_file};
use crate::dtype::DType;
use crate::error::Result;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(string, tag = "3")]
    producer_version: String,
    #[prost(int64, tag = "5")]
    model_version: i64,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(float, tag = "2")]
    f: f32,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(message, optional, tag = "5")]
    t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    /// A control-flow node's body (`If`'s branches, `Loop`'s and `Scan`'s body).
    #[prost(message, optional, boxed, tag = "6")]
    g: Option<Box<GraphProto>>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "bytes", tag = "9")]
    raw_data: Bytes,
    #[prost(double, repeated, tag = "10")]
    double_data: Vec<f64>,
    #[prost(uint64, repeated, tag = "11")]
    uint64_data: Vec<u64>,
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<StringStringEntryProto>,
    #[prost(int32, tag = "14")]
    data_location: i32,
}

/// `TensorProto.DataType` → element type.
fn dtype(code: i32) -> DType {
    match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        8 => DType::Other("STRING"),
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        14 => DType::Other("COMPLEX64"),
        15 => DType::Other("COMPLEX128"),
        16 => DType::BF16,
        17 => DType::F8E4M3,
        18 => DType::Other("FLOAT8E4M3FNUZ"),
        19 => DType::F8E5M2,
        20 => DType::Other("FLOAT8E5M2FNUZ"),
        21 => DType::Other("UINT4"),
        22 => DType::Other("INT4"),
        23 => DType::Other("FLOAT4E2M1"),
        _ => DType::Other("UNDEFINED"),
    }
}

pub(crate) fn open(ctx: &Ctx) -> Result<Loaded> {
    let file = ctx.map()?;
    let model = ModelProto::decode(file.clone())
        .map_err(|e| ctx.corrupt(format!("protobuf decoding failed: {e}")))?;
    let Some(graph) = model.graph else {
        return Err(ctx.corrupt("the model has no graph"));
    };
    let mut tensors = Vec::new();
    for t in &graph.initializer {
        tensors.push(tensor(ctx, &file, t, &t.name)?);
    }
    let initializers = tensors.len();
    for node in graph.node.iter().filter(|n| n.op_type == "Constant") {
        let Some(out) = node.output.first() else {
            continue;
        };
        if let Some(t) = node
            .attribute
            .iter()
            .find(|a| a.name == "value")
            .and_then(|a| a.t.as_ref())
        {
            tensors.push(tensor(ctx, &file, t, out)?);
        } else if let Some(a) = node.attribute.iter().find(|a| a.name.starts_with("value_")) {
            tensors.push(scalar_constant(ctx, a, out));
        }
    }
    let constants = tensors.len() - initializers;
    let layers = node_layers(&graph.node, &tensors);
    let hidden = subgraph_weights(&graph);
    let mut metadata = vec![
        ("ir_version".to_owned(), json!(model.ir_version)),
        (
            "producer".to_owned(),
            json!(format!("{} {}", model.producer_name, model.producer_version).trim()),
        ),
        (
            "opset".to_owned(),
            json!(
                model
                    .opset_import
                    .iter()
                    .map(|o| format!(
                        "{}:{}",
                        if o.domain.is_empty() {
                            "ai.onnx"
                        } else {
                            &o.domain
                        },
                        o.version
                    ))
                    .collect::<Vec<_>>()
            ),
        ),
        ("graph".to_owned(), json!(graph.name)),
        (
            "inputs".to_owned(),
            json!(graph.input.iter().map(|v| &v.name).collect::<Vec<_>>()),
        ),
        (
            "outputs".to_owned(),
            json!(graph.output.iter().map(|v| &v.name).collect::<Vec<_>>()),
        ),
        ("nodes".to_owned(), json!(graph.node.len())),
        ("initializers".to_owned(), json!(initializers)),
        ("constant_nodes".to_owned(), json!(constants)),
    ];
    if model.model_version != 0 {
        metadata.push(("model_version".to_owned(), json!(model.model_version)));
    }
    if hidden.0 > 0 {
        metadata.push((
            SUBGRAPH_WEIGHTS.to_owned(),
            json!(format!(
                "{} tensors, {} inside If/Loop/Scan subgraphs: not listed, not compressed",
                hidden.0,
                crate::units::human_bytes(hidden.1)
            )),
        ));
    }
    metadata.extend(
        model
            .metadata_props
            .into_iter()
            .map(|p| (p.key, json!(p.value))),
    );
    Ok(Loaded {
        metadata,
        tensors,
        layers: Some(layers),
    })
}

/// The metadata key saying how many weights subgraphs hold (the app warns of it).
pub const SUBGRAPH_WEIGHTS: &str = "subgraph_weights";

/// Tensors (initializers and Constant values) inside control-flow subgraphs, at any
/// depth, and their bytes: slimscope lists the main graph's weights only, so these
/// are said, not silently missing.
fn subgraph_weights(graph: &GraphProto) -> (usize, u64) {
    let bytes = |t: &TensorProto| -> u64 {
        if !t.raw_data.is_empty() {
            return t.raw_data.len() as u64;
        }
        let numel = t.dims.iter().try_fold(1u64, |n, &d| {
            u64::try_from(d).ok().and_then(|d| n.checked_mul(d))
        });
        numel
            .and_then(|n| dtype(t.data_type).size_bytes(n))
            .unwrap_or(0)
    };
    let (mut count, mut total) = (0usize, 0u64);
    // Depth-first without recursion; prost already bounds the nesting.
    let mut pending: Vec<&GraphProto> = graph
        .node
        .iter()
        .flat_map(|n| &n.attribute)
        .flat_map(|a| a.g.as_deref().into_iter().chain(&a.graphs))
        .collect();
    while let Some(g) = pending.pop() {
        for t in &g.initializer {
            count += 1;
            total = total.saturating_add(bytes(t));
        }
        for node in &g.node {
            if node.op_type == "Constant"
                && let Some(t) = node.attribute.iter().find_map(|a| a.t.as_ref())
            {
                count += 1;
                total = total.saturating_add(bytes(t));
            }
            pending.extend(
                node.attribute
                    .iter()
                    .flat_map(|a| a.g.as_deref().into_iter().chain(&a.graphs)),
            );
        }
    }
    (count, total)
}

fn tensor(ctx: &Ctx, file: &Bytes, t: &TensorProto, name: &str) -> Result<(TensorInfo, Data)> {
    let dtype = dtype(t.data_type);
    let shape = t
        .dims
        .iter()
        .map(|&d| {
            u64::try_from(d)
                .map_err(|_| ctx.corrupt(format!("tensor `{name}` has a negative dimension {d}")))
        })
        .collect::<Result<Vec<u64>>>()?;
    let numel = checked_numel(&shape)
        .ok_or_else(|| ctx.corrupt(format!("tensor `{name}` has an absurd shape {shape:?}")))?;
    let Some(size_bytes) = dtype.size_bytes(numel) else {
        // Strings and exotic types are listed, not decoded.
        return Ok((
            info(ctx, name, shape, dtype, numel, 0, None),
            Data::Bytes(Bytes::new()),
        ));
    };
    let (bytes, offset) = if t.data_location == 1 {
        external(ctx, t, name, size_bytes)?
    } else if !t.raw_data.is_empty() || size_bytes == 0 {
        // Zero-copy: raw_data points into the mapped file.
        let offset = (t.raw_data.as_ptr() as usize)
            .checked_sub(file.as_ptr() as usize)
            .map(|o| o as u64);
        (t.raw_data.clone(), offset)
    } else {
        (typed_data(ctx, t, name, dtype, numel)?, None)
    };
    if bytes.len() as u64 != size_bytes {
        return Err(ctx.corrupt(format!(
            "tensor `{name}` has {} bytes of data but its shape {shape:?} of {dtype} needs {size_bytes}",
            bytes.len()
        )));
    }
    Ok((
        info(ctx, name, shape, dtype, numel, size_bytes, offset),
        Data::Bytes(bytes),
    ))
}

fn info(
    ctx: &Ctx,
    name: &str,
    shape: Vec<u64>,
    dtype: DType,
    numel: u64,
    size_bytes: u64,
    offset: Option<u64>,
) -> TensorInfo {
    TensorInfo {
        name: name.to_owned(),
        shape,
        dtype,
        numel,
        size_bytes,
        origin: Origin {
            file: ctx.path.to_owned(),
            offset,
            member: None,
        },
    }
}

/// Values stored in the typed repeated fields, as little-endian bytes of `dtype`.
fn typed_data(ctx: &Ctx, t: &TensorProto, name: &str, dtype: DType, numel: u64) -> Result<Bytes> {
    let mut out = Vec::new();
    let count = match dtype {
        DType::F32 => {
            t.float_data
                .iter()
                .for_each(|v| out.extend(v.to_le_bytes()));
            t.float_data.len()
        }
        DType::F64 => {
            t.double_data
                .iter()
                .for_each(|v| out.extend(v.to_le_bytes()));
            t.double_data.len()
        }
        DType::I64 => {
            t.int64_data
                .iter()
                .for_each(|v| out.extend(v.to_le_bytes()));
            t.int64_data.len()
        }
        DType::U64 => {
            t.uint64_data
                .iter()
                .for_each(|v| out.extend(v.to_le_bytes()));
            t.uint64_data.len()
        }
        DType::U32 => {
            t.uint64_data
                .iter()
                .for_each(|&v| out.extend((v as u32).to_le_bytes()));
            t.uint64_data.len()
        }
        // The narrow types (and f16/bf16/fp8 bit patterns) ride in int32_data.
        _ => {
            let width = dtype.block().map_or(4, |b| b.1 as usize);
            t.int32_data
                .iter()
                .for_each(|v| out.extend(&v.to_le_bytes()[..width]));
            t.int32_data.len()
        }
    };
    if count as u64 != numel {
        return Err(ctx.corrupt(format!(
            "tensor `{name}` stores {count} values but its shape holds {numel}"
        )));
    }
    Ok(Bytes::from(out))
}

/// Data in a file beside the model (`data_location = EXTERNAL`).
fn external(
    ctx: &Ctx,
    t: &TensorProto,
    name: &str,
    size_bytes: u64,
) -> Result<(Bytes, Option<u64>)> {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let location = get("location")
        .ok_or_else(|| ctx.corrupt(format!("tensor `{name}` is external but names no file")))?;
    let number = |k: &str| {
        get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ctx.corrupt(format!("tensor `{name}`: bad external {k} `{v}`")))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?.unwrap_or(size_bytes);
    let path = super::file_beside(
        ctx,
        location,
        &format!("tensor `{name}`: external data file"),
    )?;
    let data = map_file(&path)?;
    let data_ctx = Ctx {
        path: &path,
        format: "ONNX external data",
    };
    Ok((data_ctx.slice(&data, name, offset, length)?, Some(offset)))
}

/// `Constant` nodes written with `value_float(s)` / `value_int(s)`.
fn scalar_constant(ctx: &Ctx, a: &AttributeProto, name: &str) -> (TensorInfo, Data) {
    let (dtype, shape, bytes): (DType, Vec<u64>, Vec<u8>) = match a.name.as_str() {
        "value_float" => (DType::F32, vec![], a.f.to_le_bytes().to_vec()),
        "value_floats" => (
            DType::F32,
            vec![a.floats.len() as u64],
            a.floats.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        "value_int" => (DType::I64, vec![], a.i.to_le_bytes().to_vec()),
        "value_ints" => (
            DType::I64,
            vec![a.ints.len() as u64],
            a.ints.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        _ => (DType::Other("STRING"), vec![], Vec::new()),
    };
    let numel = if dtype.is_float() || dtype == DType::I64 {
        checked_numel(&shape).unwrap_or(0)
    } else {
        0
    };
    let size = bytes.len() as u64;
    (
        info(ctx, name, shape, dtype, numel, size, None),
        Data::Bytes(Bytes::from(bytes)),
    )
}

/// One layer per node that consumes stored tensors (each tensor belongs to its first
/// consumer); tensors no node reads form their own layers.
fn node_layers(nodes: &[NodeProto], tensors: &[(TensorInfo, Data)]) -> Vec<Layer> {
    let index: HashMap<&str, usize> = tensors
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (t.name.as_str(), i))
        .collect();
    let mut taken = vec![false; tensors.len()];
    let mut layers = Vec::new();
    for (n, node) in nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op_type != "Constant")
    {
        let mine: Vec<usize> = node
            .input
            .iter()
            .filter_map(|i| index.get(i.as_str()).copied())
            .filter(|&i| !std::mem::replace(&mut taken[i], true))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let name = if node.name.is_empty() {
            format!("{}_{n}", node.op_type)
        } else {
            node.name.clone()
        };
        layers.push(Layer {
            name,
            kind: LayerKind::Node,
            op: Some(node.op_type.clone()),
            tensors: mine,
        });
    }
    for (i, (t, _)) in tensors.iter().enumerate().filter(|&(i, _)| !taken[i]) {
        layers.push(Layer {
            name: t.name.clone(),
            kind: LayerKind::Other,
            op: None,
            tensors: vec![i],
        });
    }
    layers
}
