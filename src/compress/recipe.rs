//! Recipes: the compression configuration, as a versioned TOML document that the CLI,
//! sweeps and the app all exchange.
//!
//! ```toml
//! version = 1
//!
//! [source]                        # optional: the model this recipe was made for
//! file = "handwriting_model.pth"
//! sha256 = "325e0773…"
//!
//! [[rule]]                        # rules apply in order; a later rule overrides the
//! match = "*.weight"              # prune and/or quant of earlier ones it matches
//! prune = { method = "magnitude", sparsity = 0.5, scope = "global" }
//! quant = { format = "int", bits = 8, granularity = "channel" }
//!
//! [[rule]]
//! regex = '^conv_layers\.0\.'     # a regex instead of a glob
//! prune = { method = "none" }
//! ```
//!
//! Prune methods: `none`; `magnitude` (`sparsity`, `scope` = `tensor`|`global`);
//! `random` (`sparsity`, `seed`); `nm` (`n`, `m`); `structured` (`sparsity`, `axis` 0|1,
//! `norm` = `l1`|`l2`); the data-aware `wanda` and `sparsegpt` (`sparsity`, or `n` and
//! `m`), which learn from calibration data. Pruning skips 1-D tensors (biases, norms)
//! unless the rule sets `include_vectors = true`. Quant formats: `none`; `int` (`bits`
//! 2–8, `symmetric`, `granularity` = `tensor`|`channel` (the default)|`group`,
//! `group_size`, `clip` = `none`|`mse`, `method` = `rtn` (the default)|`gptq` with
//! `act_order`|`awq`);
//! `f16`, `bf16`,
//! `fp8_e4m3`, `fp8_e5m2`; `gguf` (`type` = Q8_0|Q4_0|Q4_1|Q5_0|Q5_1|Q2_K|Q3_K|Q4_K|
//! Q5_K|Q6_K, `method` = `rtn`|`imatrix`|`awq`|`gptq` (Q8_0…Q5_1); like llama.cpp, only tensors of rank ≥ 2 take a block type, and a
//! K-quant on rows that are not whole 256-value super-blocks falls back as llama.cpp
//! does, see `apply::k_quant_fallback`; rows no block type fits are stored as f16,
//! llama.cpp's last resort). `nm` groups consecutive weights within each output
//! channel's flattened row and leaves tensors whose rows are not whole groups dense.
//! Integer tensors (ids, masks) are never compressed, whatever the rules match.
//! An `[activations]` section quantizes the inputs of weighted layers too (static with
//! calibration, or dynamic; see [`super::activations`]). A `[calibration]` section
//! sets what data-aware methods learn from (`samples` of the attached data, kept
//! apart from the evaluation; `dampening`; see [`super::calibration`]).
//!
//! Every error names the recipe file and the line: unknown keys, bad values
//! (sparsity 1.5, bits 0), and patterns that match no tensor of the model.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::activations::ActivationSpec;
use super::calibration::{CalibrationSpec, Need};
use super::prune::Pattern;
use super::quant::{Clip, Granularity};
use crate::dtype::GgmlQuant;

/// The recipe format version this build reads and writes.
pub const VERSION: u32 = 1;

/// A recipe error: the file, the line (when known) and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct RecipeError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// A whole recipe: parsed from a file, or built from a configuration
/// ([`super::config::Config::to_recipe`]) with no text in between.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    /// Activation quantization (weighted layers' inputs), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<ActivationSpec>,
    /// What data-aware methods learn from (see [`super::calibration`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationSpec>,
    /// Where the recipe came from (a file, or words like `(sweep)`), named in errors.
    #[serde(skip)]
    pub origin: PathBuf,
}

/// The model a recipe was made for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// One rule: which tensors, and what to do to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Glob over tensor names (`*`, `?`, `[...]`, `{a,b}`).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub glob: Option<toml::Spanned<String>>,
    /// Regular expression over tensor names (instead of `match`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<toml::Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<QuantSpec>,
    /// The line of the rule's pattern in the recipe's text, kept for error messages
    /// (`None` for rules built in code).
    #[serde(skip)]
    pub line: Option<usize>,
}

impl Rule {
    /// A rule over tensors whose names match `glob`.
    pub fn glob(glob: &str, prune: PruneSpec, quant: QuantSpec) -> Rule {
        Rule {
            glob: Some(toml::Spanned::new(0..0, glob.to_owned())),
            regex: None,
            prune: Some(prune),
            quant: Some(quant),
            line: None,
        }
    }
    /// A rule over tensors whose names match `regex`.
    pub fn regex(regex: &str, prune: PruneSpec, quant: QuantSpec) -> Rule {
        Rule {
            glob: None,
            regex: Some(toml::Spanned::new(0..0, regex.to_owned())),
            prune: Some(prune),
            quant: Some(quant),
            line: None,
        }
    }
    /// The rule's pattern as written.
    pub fn pattern(&self) -> &str {
        self.glob
            .as_ref()
            .or(self.regex.as_ref())
            .map_or("", |p| p.get_ref().as_str())
    }
}

/// A fraction in [0, 1], checked while parsing so the error carries the line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Fraction(f64);

impl Fraction {
    /// `v` clamped into [0, 1] (NaN becomes 0).
    pub fn clamped(v: f64) -> Fraction {
        Fraction(if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) })
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Fraction {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&v) {
            // -0.0 is 0.0: one cache entry and one "0%" for both.
            Ok(Fraction(v + 0.0))
        } else {
            Err(format!("sparsity must be between 0 and 1, got {v}"))
        }
    }
}

// A fraction is never NaN (it is checked to lie in [0, 1]), so equality is total;
// the hash adds 0.0 so that -0.0 and 0.0, which are equal, hash alike.
impl Eq for Fraction {}

impl std::hash::Hash for Fraction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.0 + 0.0).to_bits().hash(state);
    }
}

impl From<Fraction> for f64 {
    fn from(f: Fraction) -> f64 {
        f.0
    }
}

/// Integer bit width, 2 to 8.
#[derive(Debug, Clone, Copy, PartialEq, Hash, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Bits(u8);

impl Bits {
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Bits {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        if (2..=8).contains(&v) {
            Ok(Bits(v))
        } else {
            Err(format!("bits must be between 2 and 8, got {v}"))
        }
    }
}

impl From<Bits> for u8 {
    fn from(b: Bits) -> u8 {
        b.0
    }
}

/// Where a magnitude threshold is taken.
#[derive(Debug, Clone, Copy, PartialEq, Hash, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Tensor,
    /// One threshold across every tensor this rule prunes.
    Global,
}

/// Norm for structured pruning.
#[derive(Debug, Clone, Copy, PartialEq, Hash, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormName {
    #[default]
    L1,
    L2,
}

/// How to prune.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum PruneSpec {
    None,
    Magnitude {
        sparsity: Fraction,
        #[serde(default)]
        scope: Scope,
        #[serde(default)]
        include_vectors: bool,
    },
    Random {
        sparsity: Fraction,
        #[serde(default)]
        seed: u64,
        #[serde(default)]
        include_vectors: bool,
    },
    Nm {
        n: usize,
        m: usize,
    },
    Structured {
        sparsity: Fraction,
        #[serde(default)]
        axis: usize,
        #[serde(default)]
        norm: NormName,
    },
    /// Wanda: per output, the weights of least `|w|·‖x‖` over the calibration data
    /// (`sparsity`, or `n` and `m` for N:M); see [`super::wanda`].
    Wanda {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sparsity: Option<Fraction>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        n: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        m: Option<usize>,
    },
    /// SparseGPT: OBS pruning with the weights that stay updated to keep the
    /// layer's output on the calibration data; see [`super::sparsegpt`].
    #[serde(rename = "sparsegpt")]
    SparseGpt {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sparsity: Option<Fraction>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        n: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        m: Option<usize>,
    },
}

impl PruneSpec {
    /// What a data-aware method needs of the calibration data (none for the
    /// data-free methods).
    pub fn needs(&self) -> Option<Need> {
        match self {
            PruneSpec::Wanda { .. } => Some(Need::Diagonal),
            PruneSpec::SparseGpt { .. } => Some(Need::Gram),
            _ => None,
        }
    }

    /// A data-aware method's pattern: its `sparsity`, or `n` of every `m`.
    pub fn pattern(&self) -> Option<Result<Pattern, String>> {
        let (PruneSpec::Wanda { sparsity, n, m } | PruneSpec::SparseGpt { sparsity, n, m }) = self
        else {
            return None;
        };
        Some(match (sparsity, n, m) {
            (Some(s), None, None) => Ok(Pattern::Unstructured(s.get())),
            (None, Some(n), Some(m)) if *n > 0 && n <= m => Ok(Pattern::NOfM { n: *n, m: *m }),
            (None, Some(n), Some(m)) => Err(format!("N:M needs 0 < N <= M, got {n}:{m}")),
            _ => Err("give `sparsity`, or `n` and `m` for N:M (not both)".into()),
        })
    }
}

/// Scale granularity names in recipes.
#[derive(Debug, Clone, Copy, PartialEq, Hash, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GranularityName {
    Tensor,
    Channel,
    Group,
}

/// How to quantize.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum QuantSpec {
    None,
    Int {
        bits: Bits,
        #[serde(default = "yes")]
        symmetric: bool,
        /// Per output channel unless said otherwise (what the app starts with).
        #[serde(default = "per_channel")]
        granularity: GranularityName,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_size: Option<usize>,
        #[serde(default, skip_serializing_if = "is_default")]
        clip: Clip,
        /// How codes are chosen: round to nearest, or GPTQ from calibration data.
        #[serde(default, skip_serializing_if = "is_default")]
        method: IntMethod,
        /// GPTQ: quantize inputs in descending order of their Hessian diagonal.
        #[serde(default, skip_serializing_if = "is_default")]
        act_order: bool,
    },
    /// The values as float32: what keeps a pruned block-quantized (GGUF) tensor's
    /// zeros exact, its blocks' offsets would round them away.
    F32,
    F16,
    Bf16,
    Fp8E4m3,
    Fp8E5m2,
    Gguf {
        #[serde(rename = "type")]
        block_type: String,
        /// Round to nearest, or weighted by an importance matrix (`--imatrix`).
        #[serde(default, skip_serializing_if = "is_default")]
        method: GgufMethod,
    },
}

/// How a GGUF tensor's blocks are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GgufMethod {
    /// llama.cpp's reference quantizers (`llama-quantize` without `--imatrix`).
    #[default]
    Rtn,
    /// llama.cpp's quantizers with an importance matrix (`llama-quantize
    /// --imatrix`, see [`super::importance`]).
    Imatrix,
    /// The reference quantizers on weights AWQ rescaled per input (see
    /// [`super::awq`]).
    Awq,
    /// GPTQ onto the blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; see [`super::gptq`]).
    Gptq,
}

fn yes() -> bool {
    true
}

fn per_channel() -> GranularityName {
    GranularityName::Channel
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// How an integer grid's codes are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntMethod {
    /// Each weight to its nearest code.
    #[default]
    Rtn,
    /// GPTQ: rounding errors compensated on calibration data (see
    /// [`super::gptq`]).
    Gptq,
    /// Round to nearest on weights AWQ rescaled per input (see [`super::awq`]).
    Awq,
}

impl QuantSpec {
    /// What a data-aware quantizer needs of the calibration data.
    pub fn needs(&self) -> Option<Need> {
        match self {
            QuantSpec::Int {
                method: IntMethod::Gptq | IntMethod::Awq,
                ..
            }
            | QuantSpec::Gguf {
                method: GgufMethod::Awq | GgufMethod::Gptq,
                ..
            } => Some(Need::Gram),
            _ => None,
        }
    }

    /// Whether GPTQ chooses this spec's codes.
    pub fn is_gptq(&self) -> bool {
        matches!(
            self,
            QuantSpec::Int {
                method: IntMethod::Gptq,
                ..
            } | QuantSpec::Gguf {
                method: GgufMethod::Gptq,
                ..
            }
        )
    }

    /// Whether AWQ rescales the weights this spec quantizes.
    pub fn is_awq(&self) -> bool {
        matches!(
            self,
            QuantSpec::Int {
                method: IntMethod::Awq,
                ..
            } | QuantSpec::Gguf {
                method: GgufMethod::Awq,
                ..
            }
        )
    }

    /// The same grid rounded to nearest: what AWQ quantizes its rescaled weights with.
    pub fn rounded(&self) -> QuantSpec {
        let mut q = self.clone();
        match &mut q {
            QuantSpec::Int { method, .. } => *method = IntMethod::Rtn,
            QuantSpec::Gguf { method, .. }
                if matches!(method, GgufMethod::Awq | GgufMethod::Gptq) =>
            {
                *method = GgufMethod::Rtn;
            }
            _ => {}
        }
        q
    }

    /// The integer granularity this spec asks for (`None` for non-integer formats).
    pub fn granularity(&self) -> Option<Granularity> {
        match self {
            QuantSpec::Int {
                granularity: GranularityName::Tensor,
                ..
            } => Some(Granularity::PerTensor),
            QuantSpec::Int {
                granularity: GranularityName::Channel,
                ..
            } => Some(Granularity::PerChannel),
            QuantSpec::Int {
                granularity: GranularityName::Group,
                group_size,
                ..
            } => Some(Granularity::Group(group_size.unwrap_or(128))),
            _ => None,
        }
    }
    /// Whether this spec weighs its blocks by an importance matrix.
    pub fn uses_imatrix(&self) -> bool {
        matches!(
            self,
            QuantSpec::Gguf {
                method: GgufMethod::Imatrix,
                ..
            }
        )
    }

    /// The ggml block type of a `gguf` spec.
    pub fn gguf_type(&self) -> Option<GgmlQuant> {
        match self {
            QuantSpec::Gguf { block_type, .. } => (0..=39)
                .filter_map(GgmlQuant::from_type_id)
                .find(|q| q.name() == block_type),
            _ => None,
        }
    }
}

/// What the recipe says for one tensor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TensorPlan {
    /// The prune spec and the index of the rule that set it (global scopes group by it).
    pub prune: Option<(PruneSpec, usize)>,
    pub quant: Option<QuantSpec>,
}

/// What is wrong with a `gguf` quant spec, if anything.
fn gguf_problem(q: &QuantSpec) -> Option<String> {
    let QuantSpec::Gguf { block_type, method } = q else {
        return None;
    };
    match q.gguf_type() {
        Some(t) if super::gguf_blocks::supports(t) => {
            (*method == GgufMethod::Gptq && !super::gguf_blocks::fits_with_gptq(t)).then(|| {
                format!(
                    "GPTQ quantizes onto Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 blocks, not \
                     {block_type} (use method = \"imatrix\" or \"awq\" for K-quants)"
                )
            })
        }
        _ => Some(format!(
            "GGUF type `{block_type}` is not supported (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, \
             Q3_K, Q4_K, Q5_K, Q6_K are)"
        )),
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Recipe {
    /// Parse recipe `text` (read from `path`, named in errors) and check what can be
    /// checked without a model.
    pub fn parse(text: &str, path: &Path) -> Result<Recipe, RecipeError> {
        let mut recipe: Recipe = toml::from_str(text).map_err(|e| RecipeError {
            path: path.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim().to_owned(),
        })?;
        recipe.origin = path.to_owned();
        for rule in &mut recipe.rules {
            rule.line = rule
                .glob
                .as_ref()
                .or(rule.regex.as_ref())
                .map(|s| line_of(text, s.span().start));
        }
        recipe.check()?;
        Ok(recipe)
    }

    /// Check what can be checked without a model (a parsed recipe and one built in
    /// code pass the same checks).
    pub fn check(&self) -> Result<(), RecipeError> {
        let err = |line: Option<usize>, message: String| RecipeError {
            path: self.origin.clone(),
            line,
            message,
        };
        let recipe = self;
        if recipe.version != VERSION {
            return Err(err(
                None,
                format!(
                    "recipe version {} is not supported (this slimscope reads version {VERSION})",
                    recipe.version
                ),
            ));
        }
        if let Some(problem) = recipe
            .activations
            .as_ref()
            .and_then(ActivationSpec::problem)
        {
            return Err(err(None, problem));
        }
        if let Some(problem) = recipe
            .calibration
            .as_ref()
            .and_then(CalibrationSpec::problem)
        {
            return Err(err(None, problem));
        }
        if let (Some(w), Some(a)) = (
            recipe.calibration.as_ref().and_then(|c| c.samples),
            recipe.activations.as_ref().map(|a| a.calibration_samples()),
        ) && a > 0
            && w != a
            && recipe.statistics_needed().is_some()
        {
            return Err(err(
                None,
                format!(
                    "[calibration] samples = {w}, but static activations calibrate on {a}: one \
                     slice of the data is kept apart for both, so set [activations] \
                     calibration = {w} too"
                ),
            ));
        }
        for (i, rule) in recipe.rules.iter().enumerate() {
            let at = rule.line;
            if let Some(Err(problem)) = rule.prune.as_ref().and_then(PruneSpec::pattern) {
                return Err(err(at, format!("rule {}: {problem}", i + 1)));
            }
            match (&rule.glob, &rule.regex) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        at,
                        format!("rule {} has both `match` and `regex`; use one", i + 1),
                    ));
                }
                (None, None) => {
                    return Err(err(
                        None,
                        format!("rule {} has neither `match` nor `regex`", i + 1),
                    ));
                }
                _ => {}
            }
            rule.matcher().map_err(|m| err(at, m))?;
            if let Some(PruneSpec::Nm { n, m }) = &rule.prune
                && (*n == 0 || n > m)
            {
                return Err(err(
                    at,
                    format!("rule {}: N:M needs 0 < N <= M, got {n}:{m}", i + 1),
                ));
            }
            if let Some(problem) = rule.quant.as_ref().and_then(gguf_problem) {
                return Err(err(at, format!("rule {}: {problem}", i + 1)));
            }
            if let Some(QuantSpec::Int {
                method: IntMethod::Rtn | IntMethod::Awq,
                act_order: true,
                ..
            }) = &rule.quant
            {
                return Err(err(
                    at,
                    format!(
                        "rule {}: act_order is a GPTQ setting: add method = \"gptq\"",
                        i + 1
                    ),
                ));
            }
            if let Some(QuantSpec::Int {
                granularity: GranularityName::Group,
                group_size: Some(0),
                ..
            }) = &rule.quant
            {
                return Err(err(
                    at,
                    format!("rule {}: group_size must be positive", i + 1),
                ));
            }
        }
        Ok(())
    }

    /// The most that the recipe's data-aware methods need of the calibration data.
    /// Whether a rule weighs GGUF blocks by an importance matrix.
    pub fn uses_imatrix(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.quant.as_ref().is_some_and(QuantSpec::uses_imatrix))
    }

    pub fn statistics_needed(&self) -> Option<Need> {
        self.rules
            .iter()
            .flat_map(|r| {
                [
                    r.prune.as_ref().and_then(PruneSpec::needs),
                    r.quant.as_ref().and_then(QuantSpec::needs),
                ]
            })
            .flatten()
            .max()
    }

    /// The tensors of `model` the recipe's data-aware rules touch, and what they
    /// need: the statistics to collect (none for a data-free recipe).
    pub fn statistics_request(
        &self,
        model: &crate::model::Model,
    ) -> Result<Option<(Need, Vec<String>)>, RecipeError> {
        let Some(need) = self.statistics_needed() else {
            return Ok(None);
        };
        let names = self
            .plan(model)?
            .iter()
            .zip(&model.tensors)
            .filter(|(plan, _)| {
                plan.prune.as_ref().and_then(|(p, _)| p.needs()).is_some()
                    || plan.quant.as_ref().and_then(QuantSpec::needs).is_some()
            })
            .map(|(_, t)| t.name.clone())
            .collect();
        Ok(Some((need, names)))
    }

    /// Whether a rule quantizes with AWQ.
    pub fn uses_awq(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.quant.as_ref().is_some_and(QuantSpec::is_awq))
    }

    /// Samples of the attached data kept apart for calibration: those static
    /// activation quantization calibrates on, else those data-aware methods learn
    /// from, else none. Every figure of the run is measured on the rest.
    pub fn kept_apart(&self) -> usize {
        match self.activations.as_ref().map(|a| a.calibration_samples()) {
            Some(n @ 1..) => n,
            _ if self.statistics_needed().is_some() => self
                .calibration
                .as_ref()
                .map_or(CalibrationSpec::DEFAULT_SAMPLES, CalibrationSpec::samples),
            _ => 0,
        }
    }

    /// GPTQ's and SparseGPT's Hessian dampening.
    pub fn dampening(&self) -> f64 {
        self.calibration.as_ref().map_or(
            CalibrationSpec::DEFAULT_DAMPENING,
            CalibrationSpec::dampening,
        )
    }

    /// Read and parse a recipe file.
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let text = crate::text::read_settings(path).map_err(|e| RecipeError {
            path: path.to_owned(),
            line: None,
            message: match e {
                crate::Error::Io { cause, .. } => cause.to_string(),
                other => other.to_string(),
            },
        })?;
        Recipe::parse(&text, path)
    }

    /// The recipe as TOML text.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Check that `model` is the file this recipe was made for, when the recipe
    /// records its sha256 (a recipe tuned on one checkpoint says little about another).
    pub fn check_source(&self, model: &Path) -> crate::error::Result<()> {
        let Some(Source {
            file,
            sha256: Some(want),
        }) = &self.source
        else {
            return Ok(());
        };
        let got = crate::checksum::sha256_file(model)?;
        if !got.eq_ignore_ascii_case(want.trim()) {
            return Err(crate::error::Error::InvalidSetting(format!(
                "{}: this recipe was made for `{file}` (sha256 {want}), but {} has sha256 {got}; \
                 remove `sha256` from [source] to apply it to this model anyway",
                self.origin.display(),
                model.display()
            )));
        }
        Ok(())
    }

    /// What applies to each of `model`'s tensors, in model order.
    pub fn plan(&self, model: &crate::model::Model) -> Result<Vec<TensorPlan>, RecipeError> {
        let names: Vec<(&str, usize)> = model
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.shape.len()))
            .collect();
        self.resolve(&names)
    }

    /// What applies to each tensor (`(name, rank)` pairs, in model order). A rule
    /// that matches no tensor is an error naming the recipe and the rule's line.
    pub fn resolve(&self, tensors: &[(&str, usize)]) -> Result<Vec<TensorPlan>, RecipeError> {
        let mut plans = vec![TensorPlan::default(); tensors.len()];
        for (r, rule) in self.rules.iter().enumerate() {
            let matcher = rule.matcher().map_err(|m| RecipeError {
                path: self.origin.clone(),
                line: rule.line,
                message: m,
            })?;
            let mut matched = false;
            for ((name, rank), plan) in tensors.iter().zip(&mut plans) {
                if !matcher.is_match(name) {
                    continue;
                }
                matched = true;
                if let Some(p) = &rule.prune {
                    let vectors_ok = matches!(
                        p,
                        PruneSpec::Magnitude {
                            include_vectors: true,
                            ..
                        } | PruneSpec::Random {
                            include_vectors: true,
                            ..
                        }
                    );
                    if *rank >= 2 || vectors_ok || *p == PruneSpec::None {
                        plan.prune = Some((p.clone(), r));
                    }
                }
                // As llama.cpp: ggml block types are for matrices, never norms or biases.
                if let Some(q) = rule
                    .quant
                    .as_ref()
                    .filter(|q| *rank >= 2 || !matches!(q, QuantSpec::Gguf { .. }))
                {
                    plan.quant = Some(q.clone());
                }
            }
            if !matched {
                return Err(RecipeError {
                    path: self.origin.clone(),
                    line: rule.line,
                    message: format!(
                        "rule {} (`{}`) matches no tensor of the model",
                        r + 1,
                        rule.pattern()
                    ),
                });
            }
        }
        Ok(plans)
    }
}

/// A compiled name pattern.
pub enum Matcher {
    Glob(globset::GlobMatcher),
    Regex(regex::Regex),
}

impl Matcher {
    pub fn is_match(&self, name: &str) -> bool {
        match self {
            Matcher::Glob(g) => g.is_match(name),
            Matcher::Regex(r) => r.is_match(name),
        }
    }
}

impl Rule {
    /// The rule's pattern, compiled; the message says what is wrong with it.
    pub fn matcher(&self) -> Result<Matcher, String> {
        // globset panics on some huge patterns; no real tensor pattern is this long.
        const MAX_PATTERN_CHARS: usize = 4096;
        let pattern = self.glob.as_ref().or(self.regex.as_ref());
        if let Some(p) = pattern
            && p.get_ref().chars().count() > MAX_PATTERN_CHARS
        {
            return Err(format!(
                "the pattern is {} characters long; at most {MAX_PATTERN_CHARS} are accepted",
                p.get_ref().chars().count()
            ));
        }
        match (&self.glob, &self.regex) {
            (Some(g), _) => globset::GlobBuilder::new(g.get_ref())
                .literal_separator(false)
                .build()
                .map(|g| Matcher::Glob(g.compile_matcher()))
                .map_err(|e| format!("bad glob `{}`: {e}", g.get_ref())),
            (None, Some(r)) => regex::Regex::new(r.get_ref())
                .map(Matcher::Regex)
                .map_err(|e| format!("bad regex `{}`: {e}", r.get_ref())),
            (None, None) => Err("a rule needs `match` or `regex`".into()),
        }
    }
}
