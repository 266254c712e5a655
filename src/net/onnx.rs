//! The ONNX runner: a model's own ONNX graph, run by tract (a pure-Rust ONNX engine),
//! with compressed weights written into the graph's initializers (or `Constant` nodes)
//! before it is optimised. The graph is planned for a fixed micro-batch and micro-batches
//! run in parallel on the rayon pool, so results depend neither on the evaluation's batch
//! size nor on the thread count.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use rayon::prelude::*;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::Dimension;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::pb::type_proto::{self, Value as TypeValue};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::DimLike;

use super::Runner;
use super::batchnorm_affine;
use super::qdq::{self, Activations, DynamicForm};
use super::spec::{ArchSpec, LayerSpec};
use super::weights::WeightSource;
use crate::compress::activations::{ActivationSpec, Mode};
use crate::compress::apply::AppliedTensor;
use crate::compress::observers::{RangeObserver, needs_histogram};
use crate::error::{Error, Result};
use crate::model::Model;

/// Samples per planned forward pass when the graph's batch dimension is free, given
/// the taps (input channels × kernel area) of its convolutions. At batch one tract
/// convolves through lazy im2col, reading patches in place instead of writing them
/// out, which pays off for wide convolutions but not for narrow ones (a first layer
/// over 1–3 channels), nor for dense layers, which want batches for the matrix kernels.
/// Measured on the digit CNN, 5,000 images, 2 threads: its first convolution direct
/// (`first_conv`) and the rest on tract 0.75 s at 1, 0.90 s at 2, 0.87–0.90 s at
/// 4–32, 0.97 s at 64; all on tract 1.09 s at 1, 0.97 s at 16.
fn micro_batch(conv_taps: &[usize]) -> usize {
    if !conv_taps.is_empty()
        && conv_taps
            .iter()
            .all(|&t| t > super::spec::DIRECT_CONV_MAX_TAPS)
    {
        1
    } else {
        DENSE_MICRO_BATCH
    }
}

/// Samples per forward pass otherwise: enough for tract's matrix kernels, few enough
/// that a micro-batch's activations stay in the L2 cache. Measured here (2 threads,
/// samples/s at 16 / 64): MLP 784-512-256-10 138k / 176k; 16 leaves room for wider
/// layers.
const DENSE_MICRO_BATCH: usize = 16;

/// A model's ONNX graph and its one input, ready to be bound to weights.
#[derive(Clone)]
pub struct OnnxGraph {
    /// What errors name: the model file, or the architecture spec's source.
    path: PathBuf,
    /// Where external data lives (the model's folder); none for generated graphs.
    dir: Option<PathBuf>,
    proto: Arc<ModelProto>,
    /// One sample's shape (the input's dimensions after the batch dimension).
    sample: Vec<usize>,
    /// Samples per forward pass: the input's fixed batch size, or [`micro_batch`].
    micro: usize,
}

/// The graph cannot be run as it is (a missing input, a shape tract cannot plan).
fn onnx_error(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Unsupported {
        path: path.to_owned(),
        what: format!("ONNX graph: {what}"),
    }
}

impl OnnxGraph {
    /// Read `model`'s ONNX graph. Its input must be one float tensor with a batch
    /// dimension; dimensions the graph leaves symbolic are taken from `sample_hint`
    /// (the data set's sample shape).
    pub fn load(model: &Model, sample_hint: &[usize]) -> Result<OnnxGraph> {
        let path = &model.path;
        let bytes = crate::model::map_file(path)?;
        let proto = ModelProto::decode(&bytes[..])
            .map_err(|e| onnx_error(path, format!("protobuf decoding failed: {e}")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| onnx_error(path, "the model has no graph"))?;
        let stored: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !stored.contains(i.name.as_str()))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(onnx_error(
                path,
                format!(
                    "the classifier runner needs one input, the graph has {} ({})",
                    inputs.len(),
                    inputs
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let Some(TypeValue::TensorType(tensor)) =
            input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Err(onnx_error(
                path,
                format!("input `{}` is not a tensor", input.name),
            ));
        };
        if tensor.elem_type != DataType::Float as i32 {
            return Err(onnx_error(
                path,
                format!(
                    "input `{}` has element type {}; the classifier runner feeds float32",
                    input.name,
                    DataType::try_from(tensor.elem_type)
                        .map_or_else(|_| tensor.elem_type.to_string(), |t| t.as_str_name().into())
                ),
            ));
        }
        let dims: Vec<Option<usize>> = tensor
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Dim::DimValue(v)) if v > 0 => Some(v as usize),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let Some((&batch, rest)) = dims.split_first() else {
            return Err(onnx_error(
                path,
                format!("input `{}` has no batch dimension", input.name),
            ));
        };
        let sample: Vec<usize> = if rest.iter().all(Option::is_some) {
            rest.iter().flatten().copied().collect()
        } else if rest.len() == sample_hint.len()
            && rest
                .iter()
                .zip(sample_hint)
                .all(|(d, h)| d.is_none_or(|d| d == *h))
        {
            sample_hint.to_vec()
        } else if sample_hint.is_empty() {
            return Err(onnx_error(
                path,
                format!(
                    "input `{}` has shape {}: its free dimensions come from the data's samples; give data",
                    input.name,
                    shape_text(&dims)
                ),
            ));
        } else {
            return Err(onnx_error(
                path,
                format!(
                    "input `{}` has shape {} and the data's samples are {sample_hint:?}",
                    input.name,
                    shape_text(&dims)
                ),
            ));
        };
        Ok(OnnxGraph {
            path: path.clone(),
            dir: path.parent().map(Path::to_owned),
            sample,
            micro: batch.unwrap_or_else(|| micro_batch(&conv_taps(graph))),
            proto: Arc::new(proto),
        })
    }

    pub fn input_shape(&self) -> &[usize] {
        &self.sample
    }

    /// Whether the graph stores a tensor named `name` (an initializer or a
    /// `Constant`): what compressed weights can be written into.
    pub fn holds(&self, name: &str) -> bool {
        self.proto.graph.as_ref().is_some_and(|g| {
            g.initializer.iter().any(|t| t.name == name)
                || g.node
                    .iter()
                    .any(|n| n.op_type == "Constant" && n.output.first().is_some_and(|o| o == name))
        })
    }

    /// The sequential network of `spec` as an ONNX graph with `source`'s weights, so
    /// that evaluation runs on tract's kernels (3× candle's on convolutions here; see
    /// `slimscope bench`). The spec must already fit the weights ([`super::shapes::infer`]
    /// checks that, naming the layer); the graph computes exactly what candle's
    /// reference ([`super::candle::Sequential`]) does.
    pub fn from_spec(
        spec: &ArchSpec,
        source: &dyn WeightSource,
        origin: &Path,
    ) -> Result<OnnxGraph> {
        let mut b = GraphBuilder::default();
        let mut x = "input".to_owned();
        let mut rank = spec.input.len();
        for (n, layer) in spec.layers.iter().enumerate() {
            let out = format!("l{n}");
            match layer {
                LayerSpec::Linear { weight, bias, .. } => {
                    let mut inputs = vec![x.clone(), b.weight(source, weight)?];
                    inputs.extend(bias.as_deref().map(|n| b.weight(source, n)).transpose()?);
                    b.node("Gemm", inputs, &out, vec![int("transB", 1)]);
                    rank = 1;
                }
                LayerSpec::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                    groups,
                    ..
                } => {
                    let mut inputs = vec![x.clone(), b.weight(source, weight)?];
                    inputs.extend(bias.as_deref().map(|n| b.weight(source, n)).transpose()?);
                    let (s, p) = (*stride as i64, *padding as i64);
                    b.node(
                        "Conv",
                        inputs,
                        &out,
                        vec![
                            ints("strides", &[s, s]),
                            ints("pads", &[p, p, p, p]),
                            int("group", *groups as i64),
                        ],
                    );
                }
                LayerSpec::Maxpool { kernel, stride } | LayerSpec::Avgpool { kernel, stride } => {
                    let (k, s) = (*kernel as i64, stride.unwrap_or(*kernel) as i64);
                    let op = if matches!(layer, LayerSpec::Maxpool { .. }) {
                        "MaxPool"
                    } else {
                        "AveragePool"
                    };
                    b.node(
                        op,
                        vec![x.clone()],
                        &out,
                        vec![ints("kernel_shape", &[k, k]), ints("strides", &[s, s])],
                    );
                }
                LayerSpec::Batchnorm {
                    weight,
                    bias,
                    mean,
                    var,
                    eps,
                } => {
                    let (scale, shift) = batchnorm_affine(source, [weight, bias, mean, var], *eps)?;
                    b.affine(&x, &out, (scale, shift), rank);
                }
                LayerSpec::Relu => b.node("Relu", vec![x.clone()], &out, vec![]),
                LayerSpec::Sigmoid => b.node("Sigmoid", vec![x.clone()], &out, vec![]),
                LayerSpec::Tanh => b.node("Tanh", vec![x.clone()], &out, vec![]),
                LayerSpec::Gelu => b.gelu(&x, &out),
                LayerSpec::Softmax => {
                    b.node("Softmax", vec![x.clone()], &out, vec![int("axis", -1)]);
                }
                LayerSpec::Flatten => {
                    b.node("Flatten", vec![x.clone()], &out, vec![int("axis", 1)]);
                    rank = 1;
                }
                LayerSpec::Dropout => continue,
            }
            x = out;
        }
        let input = batched_input("input", &spec.input);
        let output = ValueInfoProto {
            name: x,
            ..Default::default()
        };
        let graph = GraphProto {
            name: "sequential".into(),
            node: b.nodes,
            initializer: b.initializers,
            input: vec![input],
            output: vec![output],
            ..Default::default()
        };
        let micro = micro_batch(&conv_taps(&graph));
        let proto = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(graph),
            ..Default::default()
        };
        Ok(OnnxGraph {
            path: origin.to_owned(),
            dir: None,
            proto: Arc::new(proto),
            sample: spec.input.clone(),
            micro,
        })
    }

    /// The model with `applied`'s compressed tensors in place of the stored ones.
    fn bound(&self, applied: &[(usize, AppliedTensor)]) -> Result<ModelProto> {
        let err = |what: String| onnx_error(&self.path, what);
        let mut proto = (*self.proto).clone();
        let graph = proto.graph.as_mut().ok_or_else(|| err("no graph".into()))?;
        for (_, t) in applied {
            let slot = graph
                .initializer
                .iter_mut()
                .find(|i| i.name == t.name)
                .or_else(|| {
                    graph
                        .node
                        .iter_mut()
                        .filter(|n| n.op_type == "Constant" && n.output.first() == Some(&t.name))
                        .flat_map(|n| n.attribute.iter_mut())
                        .find(|a| a.name == "value")
                        .and_then(|a| a.t.as_mut())
                })
                .ok_or_else(|| err(format!("no initializer or constant named `{}`", t.name)))?;
            replace_values(slot, &t.values)
                .map_err(|e| err(format!("tensor `{}`: {e}", t.name)))?;
        }
        Ok(proto)
    }

    /// `proto` parsed and optimised by tract for batches of `micro`.
    fn plan(&self, proto: &ModelProto, micro: usize) -> Result<Arc<TypedRunnableModel>> {
        let dir = self.dir.as_deref().and_then(Path::to_str);
        let planned = (|| -> TractResult<_> {
            let mut model = tract_onnx::onnx().parse(proto, dir)?.model;
            let mut shape = vec![micro];
            shape.extend(&self.sample);
            model.set_input_fact(0, f32::fact(&shape).into())?;
            model.into_optimized()?.into_runnable()
        })();
        planned.map_err(|e| onnx_error(&self.path, format!("{e:#}")))
    }

    /// Plan the graph with `applied`'s compressed tensors in place of the stored ones.
    pub fn runner(&self, applied: &[(usize, AppliedTensor)]) -> Result<OnnxRunner> {
        self.planned(applied, None, None)
    }

    /// [`OnnxGraph::runner`] with every weighted layer's input quantized as `acts`
    /// says (see [`qdq::insert_activations`]). Dynamic quantization runs one sample
    /// per pass: its scales are per tensor, so they must not mix samples.
    pub fn quantized_runner(
        &self,
        applied: &[(usize, AppliedTensor)],
        acts: &Activations,
    ) -> Result<OnnxRunner> {
        self.planned(applied, Some(acts), None)
    }

    /// The runner of [`OnnxGraph::runner`] or, with `acts`,
    /// [`OnnxGraph::quantized_runner`], planned for `micro` samples per pass (its
    /// own choice when `None`): one, to time a single request.
    pub fn planned(
        &self,
        applied: &[(usize, AppliedTensor)],
        acts: Option<&Activations>,
        micro: Option<usize>,
    ) -> Result<OnnxRunner> {
        let mut proto = self.bound(applied)?;
        let mut own = self.micro;
        if let Some(acts) = acts {
            qdq::insert_activations(&mut proto, acts, DynamicForm::FloatOps)
                .map_err(|e| onnx_error(&self.path, e))?;
            if *acts == Activations::Dynamic {
                own = 1;
            }
        }
        self.runner_of(&proto, micro.unwrap_or(own))
    }

    /// The exported QDQ model: `applied`'s tensors in place, activations quantized as
    /// `acts` says and integer weights stored as their codes
    /// ([`qdq::store_weight_codes`]), with `metadata` in its properties. Returns the
    /// model and what stayed float, and why.
    pub fn qdq_model(
        &self,
        applied: &[(usize, AppliedTensor)],
        acts: Option<&Activations>,
        metadata: &[(&str, String)],
    ) -> Result<(ModelProto, Vec<String>)> {
        let mut proto = self.bound(applied)?;
        let err = |e: String| onnx_error(&self.path, e);
        if let Some(acts) = acts {
            qdq::insert_activations(&mut proto, acts, DynamicForm::Operator).map_err(err)?;
        }
        // A graph slimscope generated uses no operator whose meaning changes up to
        // opset 21, so it may take 4-bit and blocked codes.
        let generated = self.dir.is_none();
        let notes = qdq::store_weight_codes(&mut proto, applied, generated).map_err(err)?;
        if opset_of(&proto) < 17 && proto.ir_version < 7 {
            proto.ir_version = 7;
        }
        proto.producer_name = "slimscope".into();
        proto.producer_version = env!("CARGO_PKG_VERSION").into();
        for (key, value) in metadata {
            proto.metadata_props.retain(|p| p.key != *key);
            proto.metadata_props.push(StringStringEntryProto {
                key: (*key).to_owned(),
                value: value.clone(),
            });
        }
        Ok((proto, notes))
    }

    /// Calibrate activation quantization on the samples `xs` (row-major, each of
    /// [`OnnxGraph::input_shape`]) with the graph's own weights:
    /// the range (and, for the percentile observer, the histogram) of every weighted
    /// layer's input (see [`qdq::quantized_inputs`]). `progress(done, total)` returns
    /// false to cancel.
    pub fn calibrate(
        &self,
        xs: &[f32],
        spec: &ActivationSpec,
        mut progress: impl FnMut(usize, usize) -> bool,
    ) -> Result<Activations> {
        if spec.mode == Mode::Dynamic {
            return Ok(Activations::Dynamic);
        }
        let names = match self.proto.graph.as_ref() {
            Some(graph) => qdq::quantized_inputs(graph),
            None => return Err(onnx_error(&self.path, "no graph")),
        };
        let mut observers = vec![RangeObserver::default(); names.len()];
        let passes = if needs_histogram(spec) { 2 } else { 1 };
        let n = xs.len() / self.sample.iter().product::<usize>().max(1);
        for pass in 0..passes {
            self.capture(
                xs,
                &names,
                |done, _| progress(pass * n + done, passes * n),
                |k, _, values| {
                    if pass == 0 {
                        observers[k].observe_range(values);
                    } else {
                        observers[k].observe_histogram(values, spec);
                    }
                    Ok(())
                },
            )?;
        }
        Ok(Activations::Static(
            names
                .into_iter()
                .zip(&observers)
                .map(|(name, o)| (name, o.params(spec)))
                .collect(),
        ))
    }

    /// Run the graph with its own weights on the samples `xs` (row-major, each of
    /// [`OnnxGraph::input_shape`]), a micro-batch at a time, and hand `visit` the
    /// values of each tensor `names[k]` (an intermediate result or the input itself)
    /// for the real samples of the batch: `visit(k, shape, values)`, the shape's
    /// first dimension being the number of samples. `progress(done, total)` returns
    /// false to cancel.
    pub fn capture(
        &self,
        xs: &[f32],
        names: &[String],
        mut progress: impl FnMut(usize, usize) -> bool,
        mut visit: impl FnMut(usize, &[usize], &[f32]) -> Result<()>,
    ) -> Result<()> {
        let len: usize = self.sample.iter().product();
        if len == 0 || xs.is_empty() || !xs.len().is_multiple_of(len) {
            return Err(Error::Internal(format!(
                "calibration: {} values are not whole samples of {:?}",
                xs.len(),
                self.sample
            )));
        }
        let mut proto = (*self.proto).clone();
        let graph = proto
            .graph
            .as_mut()
            .ok_or_else(|| onnx_error(&self.path, "no graph"))?;
        let input = graph
            .input
            .iter()
            .find(|i| !graph.initializer.iter().any(|t| t.name == i.name))
            .map(|i| i.name.clone())
            .unwrap_or_default();
        // Every captured tensor but the input itself becomes an output of the plan.
        let computed: Vec<&String> = names.iter().filter(|n| **n != input).collect();
        graph.output = computed
            .iter()
            .map(|n| ValueInfoProto {
                name: (*n).clone(),
                ..Default::default()
            })
            .collect();
        let plan = if computed.is_empty() {
            None
        } else {
            Some(self.plan(&proto, self.micro)?)
        };
        let engine = |cause: String| Error::Engine {
            context: "ONNX calibration pass".into(),
            cause,
        };
        let n = xs.len() / len;
        let mut shape = vec![self.micro];
        shape.extend(&self.sample);
        for start in (0..n).step_by(self.micro) {
            if !progress(start, n) {
                return Err(Error::Cancelled);
            }
            let m = self.micro.min(n - start);
            let xs = &xs[start * len..(start + m) * len];
            let outputs = match &plan {
                Some(plan) => {
                    let mut padded = xs.to_vec();
                    padded.resize(self.micro * len, 0.0);
                    let x = tract_ndarray::ArrayD::from_shape_vec(shape.as_slice(), padded)
                        .map_err(|e| onnx_error(&self.path, e))?;
                    plan.run(tvec!(Tensor::from(x).into()))
                        .map_err(|e| engine(format!("{e:#}")))?
                }
                None => tvec![],
            };
            let mut out = outputs.iter();
            for (k, name) in names.iter().enumerate() {
                if *name == input {
                    let mut dims = vec![m];
                    dims.extend(&self.sample);
                    visit(k, &dims, xs)?;
                    continue;
                }
                let t = out.next().ok_or_else(|| {
                    Error::Internal(format!("calibration: no output for `{name}`"))
                })?;
                let view = t
                    .to_plain_array_view::<f32>()
                    .map_err(|e| engine(format!("`{name}`: {e:#}")))?;
                let mut dims = view.shape().to_vec();
                let all = view
                    .as_slice()
                    .ok_or_else(|| engine(format!("`{name}`: not contiguous")))?;
                // Only the real samples' rows (the last batch is padded).
                let per = all.len() / self.micro.max(1);
                if let Some(first) = dims.first_mut() {
                    *first = m;
                }
                visit(k, &dims, &all[..per * m])?;
            }
        }
        Ok(())
    }

    /// The ONNX model itself.
    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }

    fn runner_of(&self, proto: &ModelProto, micro: usize) -> Result<OnnxRunner> {
        let err = |what: String| onnx_error(&self.path, what);
        let plan = self.plan(proto, micro)?;
        let out = plan
            .model()
            .output_fact(0)
            .map_err(|e| err(format!("{e:#}")))?
            .clone();
        let out_shape: Vec<Option<usize>> = out.shape.iter().map(|d| d.to_usize().ok()).collect();
        let classes = match out_shape.as_slice() {
            [Some(b), Some(c)] if *b == micro && out.datum_type == f32::datum_type() => *c,
            _ => {
                return Err(err(format!(
                    "the output is {:?} {}; a classifier gives float32 scores [batch, classes]",
                    out.datum_type,
                    shape_text(&out_shape)
                )));
            }
        };
        Ok(OnnxRunner {
            plan,
            sample: self.sample.clone(),
            micro,
            classes,
        })
    }
}

fn opset_of(proto: &ModelProto) -> i64 {
    qdq::opset(proto)
}

/// Nodes and initializers of a graph being written.
#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

/// A float input named `name` of one free batch dimension `N` and then `sample`.
fn batched_input(name: &str, sample: &[usize]) -> ValueInfoProto {
    let mut dims = vec![Dimension {
        value: Some(Dim::DimParam("N".into())),
        ..Default::default()
    }];
    dims.extend(sample.iter().map(|&d| Dimension {
        value: Some(Dim::DimValue(d as i64)),
        ..Default::default()
    }));
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(TypeValue::TensorType(type_proto::Tensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl GraphBuilder {
    /// `x·scale + shift` per channel (an inference batch norm): `[C]` after a
    /// flatten, `[C, 1, 1]` on feature maps of `rank` 3.
    fn affine(&mut self, x: &str, out: &str, (scale, shift): (Vec<f32>, Vec<f32>), rank: usize) {
        let mut dims = vec![scale.len() as i64];
        dims.extend(std::iter::repeat_n(1, rank.saturating_sub(1)));
        let s = self.constant(&format!("{out}.scale"), scale, dims.clone());
        let t = self.constant(&format!("{out}.shift"), shift, dims);
        self.node(
            "Mul",
            vec![x.to_owned(), s],
            &format!("{out}.scaled"),
            vec![],
        );
        self.node("Add", vec![format!("{out}.scaled"), t], out, vec![]);
    }

    /// Exact GELU, x·(1 + erf(x/√2))/2, in opset-17 operators.
    fn gelu(&mut self, x: &str, out: &str) {
        let r = self.constant("sqrt2", vec![std::f32::consts::SQRT_2], vec![]);
        let one = self.constant("one", vec![1.0], vec![]);
        let half = self.constant("half", vec![0.5], vec![]);
        self.node("Div", vec![x.to_owned(), r], &format!("{out}.a"), vec![]);
        self.node("Erf", vec![format!("{out}.a")], &format!("{out}.b"), vec![]);
        self.node(
            "Add",
            vec![format!("{out}.b"), one],
            &format!("{out}.c"),
            vec![],
        );
        self.node(
            "Mul",
            vec![x.to_owned(), format!("{out}.c")],
            &format!("{out}.d"),
            vec![],
        );
        self.node("Mul", vec![format!("{out}.d"), half], out, vec![]);
    }

    fn node(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        output: &str,
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs,
            output: vec![output.into()],
            attribute,
            ..Default::default()
        });
    }

    /// A float initializer named `name`; returns its name.
    fn constant(&mut self, name: &str, values: Vec<f32>, dims: Vec<i64>) -> String {
        if !self.initializers.iter().any(|t| t.name == name) {
            self.initializers.push(TensorProto {
                name: name.into(),
                dims,
                data_type: DataType::Float as i32,
                raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            });
        }
        name.into()
    }

    /// The model tensor `name` as an initializer; returns its name.
    fn weight(&mut self, source: &dyn WeightSource, name: &str) -> Result<String> {
        let (values, dims) = source.weight(name)?;
        Ok(self.constant(name, values, dims.iter().map(|&d| d as i64).collect()))
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// Input channels × kernel area of each convolution whose weight is an initializer.
fn conv_taps(graph: &GraphProto) -> Vec<usize> {
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .filter_map(|n| {
            let w = graph
                .initializer
                .iter()
                .find(|t| Some(&t.name) == n.input.get(1))?;
            Some(w.dims.iter().skip(1).map(|&d| d.max(0) as usize).product())
        })
        .collect()
}

fn shape_text(dims: &[Option<usize>]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".into(), |d| d.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Store `values` in `t`, in `t`'s own float type (the graph computes in it).
fn replace_values(t: &mut TensorProto, values: &[f32]) -> std::result::Result<(), String> {
    let numel: i64 = t.dims.iter().product();
    if numel != values.len() as i64 {
        return Err(format!("{} values for shape {:?}", values.len(), t.dims));
    }
    let raw: Vec<u8> = match DataType::try_from(t.data_type) {
        Ok(DataType::Float) => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Ok(DataType::Double) => values
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect(),
        Ok(DataType::Float16) => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Ok(DataType::Bfloat16) => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => return Err(format!("element type {} is not a float type", t.data_type)),
    };
    t.raw_data = raw;
    t.float_data.clear();
    t.double_data.clear();
    t.int32_data.clear();
    t.external_data.clear();
    t.data_location = None;
    Ok(())
}

/// An ONNX graph planned for one micro-batch.
pub struct OnnxRunner {
    plan: Arc<TypedRunnableModel>,
    sample: Vec<usize>,
    micro: usize,
    classes: usize,
}

impl Runner for OnnxRunner {
    fn input_shape(&self) -> &[usize] {
        &self.sample
    }

    fn classes(&self) -> usize {
        self.classes
    }

    fn logits(&self, batch: &[f32], n: usize) -> Result<Vec<f32>> {
        let len: usize = self.sample.iter().product();
        let mut shape = vec![self.micro];
        shape.extend(&self.sample);
        let mut out = vec![0f32; n * self.classes];
        out.par_chunks_mut(self.micro * self.classes)
            .zip(batch[..n * len].par_chunks(self.micro * len))
            .try_for_each(|(scores, xs)| {
                // The last micro-batch is padded with zeros; their scores are dropped.
                let mut padded = xs.to_vec();
                padded.resize(self.micro * len, 0.0);
                let input = tract_ndarray::ArrayD::from_shape_vec(shape.as_slice(), padded)
                    .map_err(|e| e.to_string())?;
                let result = self
                    .plan
                    .run(tvec!(Tensor::from(input).into()))
                    .map_err(|e| format!("{e:#}"))?;
                let all = result[0]
                    .to_plain_array_view::<f32>()
                    .map_err(|e| format!("{e:#}"))?;
                // Logical (row-major) order, whatever the output's memory layout.
                for (s, v) in scores.iter_mut().zip(all.iter()) {
                    *s = *v;
                }
                Ok::<_, String>(())
            })
            .map_err(|cause| Error::Engine {
                context: "ONNX forward pass".into(),
                cause,
            })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::net::candle::Sequential;

    /// Every layer kind, through tract (the graph written from the spec) and candle
    /// (the sequential network): two engines, one spec, the same logits.
    #[test]
    fn a_spec_runs_the_same_on_tract_and_candle() {
        let spec = ArchSpec::parse(
            r#"version = 1
input = [4, 9, 9]
[[layer]]
op = "conv2d"
weight = "c1.w"
bias = "c1.b"
stride = 2
padding = 1
groups = 2
[[layer]]
op = "batchnorm"
weight = "bn1.g"
bias = "bn1.b"
mean = "bn1.m"
var = "bn1.v"
[[layer]]
op = "gelu"
[[layer]]
op = "avgpool"
kernel = 2
stride = 1
[[layer]]
op = "maxpool"
kernel = 2
[[layer]]
op = "dropout"
[[layer]]
op = "flatten"
[[layer]]
op = "linear"
weight = "fc1.w"
bias = "fc1.b"
[[layer]]
op = "batchnorm"
weight = "bn2.g"
bias = "bn2.b"
mean = "bn2.m"
var = "bn2.v"
eps = 0.001
[[layer]]
op = "tanh"
[[layer]]
op = "linear"
weight = "fc2.w"
[[layer]]
op = "sigmoid"
[[layer]]
op = "linear"
weight = "fc3.w"
bias = "fc3.b"
[[layer]]
op = "relu"
[[layer]]
op = "softmax"
"#,
            Path::new("all.toml"),
        )
        .expect("spec");
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut weights: HashMap<String, (Vec<f32>, Vec<usize>)> = HashMap::new();
        let mut add = |name: &str, shape: &[usize], lo: f32, hi: f32| {
            let n = shape.iter().product();
            let v = (0..n).map(|_| rng.random_range(lo..hi)).collect();
            weights.insert(name.into(), (v, shape.to_vec()));
        };
        // 9×9 → conv s2 p1 → 5×5 (6 channels) → avgpool 2/1 → 4×4 → maxpool 2 → 2×2.
        add("c1.w", &[6, 2, 3, 3], -0.5, 0.5);
        add("c1.b", &[6], -0.1, 0.1);
        for (bn, c) in [("bn1", 6), ("bn2", 12)] {
            add(&format!("{bn}.g"), &[c], 0.5, 1.5);
            add(&format!("{bn}.b"), &[c], -0.2, 0.2);
            add(&format!("{bn}.m"), &[c], -0.3, 0.3);
            add(&format!("{bn}.v"), &[c], 0.5, 2.0);
        }
        add("fc1.w", &[12, 24], -0.3, 0.3);
        add("fc1.b", &[12], -0.1, 0.1);
        add("fc2.w", &[8, 12], -0.5, 0.5);
        add("fc3.w", &[5, 8], -1.0, 1.0);
        add("fc3.b", &[5], -0.1, 0.1);
        let x: Vec<f32> = (0..70 * 324).map(|_| rng.random_range(-2.0..2.0)).collect();

        let candle = Sequential::build(&spec, &weights).expect("candle");
        let tract = OnnxGraph::from_spec(&spec, &weights, Path::new("all.toml"))
            .expect("graph")
            .runner(&[])
            .expect("tract");
        assert_eq!(tract.input_shape(), [4, 9, 9]);
        assert_eq!(tract.classes(), 5);
        let a = candle.logits(&x, 70).expect("candle logits");
        let b = tract.logits(&x, 70).expect("tract logits");
        assert_eq!(a.len(), 70 * 5);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "max |Δ| {worst}");
        // Softmax rows sum to 1 and the ReLU before it made some scores equal: the
        // outputs are not trivially the same everywhere.
        assert!(
            b.chunks(5)
                .all(|r| (r.iter().sum::<f32>() - 1.0).abs() < 1e-5)
        );
        assert!(b.iter().any(|&v| v > 0.3) && b.iter().any(|&v| v < 0.15));
    }
}
