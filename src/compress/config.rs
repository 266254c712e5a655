//! A compression configuration as the app's controls and the sweeps set it: one global
//! setting (pruning method and level, scope, number format) plus per-tensor overrides.
//! [`Config::to_recipe`] turns it into a typed [`Recipe`] with no text in between, and
//! [`Config::recipe_text`] into the recipe file an export writes; the two are the
//! same recipe (a test parses the text and compares), so what is shown or swept is
//! exactly what `slimscope apply` reproduces from an exported recipe.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::activations::ActivationSpec;
use super::calibration::CalibrationSpec;
use super::recipe::{
    Bits, Fraction, GgufMethod, GranularityName, IntMethod, NormName, PruneSpec, QuantSpec, Recipe,
    RecipeError, Rule, Scope, Source,
};
use crate::dtype::GgmlQuant;

/// How weights are chosen for pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// Smallest |w| first.
    Magnitude,
    /// Uniformly at random (seeded): the baseline.
    Random,
    /// 2 of every 4 consecutive weights along a row (sparse tensor cores).
    TwoFour,
    /// Whole output rows (neurons / filters) by L2 norm.
    Structured,
    /// |w|·‖x‖ per output, learnt from calibration samples (data-aware).
    Wanda,
    /// OBS pruning with the remaining weights updated (data-aware).
    SparseGpt,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Magnitude,
        Method::Random,
        Method::TwoFour,
        Method::Structured,
        Method::Wanda,
        Method::SparseGpt,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Method::Magnitude => "Magnitude",
            Method::Random => "Random",
            Method::TwoFour => "2:4 (N:M)",
            Method::Structured => "Structured rows",
            Method::Wanda => "Wanda",
            Method::SparseGpt => "SparseGPT",
        }
    }

    /// Whether the method learns from calibration samples.
    pub fn is_data_aware(self) -> bool {
        matches!(self, Method::Wanda | Method::SparseGpt)
    }
}

/// Integer scale granularity in the app's picker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntGranularity {
    Tensor,
    Channel,
    Group128,
}

impl IntGranularity {
    pub fn label(self) -> &'static str {
        match self {
            IntGranularity::Tensor => "per tensor",
            IntGranularity::Channel => "per channel",
            IntGranularity::Group128 => "groups of 128",
        }
    }
}

/// The number format weights are stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    /// Keep the stored type.
    Keep,
    Int {
        bits: u8,
        granularity: IntGranularity,
        mse_clip: bool,
    },
    F16,
    Bf16,
    Fp8E4m3,
    Fp8E5m2,
    Gguf(GgmlQuant),
}

/// The GGUF types the picker offers, most bits first.
const GGUF_CHOICES: [GgmlQuant; 10] = [
    GgmlQuant::Q8_0,
    GgmlQuant::Q6_K,
    GgmlQuant::Q5_K,
    GgmlQuant::Q5_1,
    GgmlQuant::Q5_0,
    GgmlQuant::Q4_K,
    GgmlQuant::Q4_1,
    GgmlQuant::Q4_0,
    GgmlQuant::Q3_K,
    GgmlQuant::Q2_K,
];

impl Format {
    /// Every format, in the order the app offers them (int ones with per-channel
    /// scales): as stored, int8 to int2, the floats, then GGUF types by bits.
    pub fn choices() -> Vec<Format> {
        let mut all = vec![Format::Keep];
        all.extend((2..=8).rev().map(|bits| Format::Int {
            bits,
            granularity: IntGranularity::Channel,
            mse_clip: false,
        }));
        all.extend([Format::F16, Format::Bf16, Format::Fp8E4m3, Format::Fp8E5m2]);
        all.extend(GGUF_CHOICES.map(Format::Gguf));
        all
    }

    pub fn label(self) -> String {
        match self {
            Format::Keep => "as stored".into(),
            Format::Int { bits, .. } => format!("int{bits}"),
            Format::F16 => "f16".into(),
            Format::Bf16 => "bf16".into(),
            Format::Fp8E4m3 => "fp8 e4m3".into(),
            Format::Fp8E5m2 => "fp8 e5m2".into(),
            Format::Gguf(q) => format!("GGUF {}", q.name()),
        }
    }

    /// The recipe's quant spec for this format (`origin` names the configuration in
    /// the error for an impossible bit width).
    pub fn quant_spec(self, origin: &Path) -> Result<QuantSpec, RecipeError> {
        Ok(match self {
            Format::Keep => QuantSpec::None,
            Format::Int {
                bits,
                granularity,
                mse_clip,
            } => QuantSpec::Int {
                bits: Bits::try_from(bits).map_err(|message| RecipeError {
                    path: origin.to_owned(),
                    line: None,
                    message,
                })?,
                symmetric: true,
                granularity: match granularity {
                    IntGranularity::Tensor => GranularityName::Tensor,
                    IntGranularity::Channel => GranularityName::Channel,
                    IntGranularity::Group128 => GranularityName::Group,
                },
                group_size: (granularity == IntGranularity::Group128).then_some(128),
                method: Default::default(),
                act_order: false,
                clip: if mse_clip {
                    super::quant::Clip::Mse
                } else {
                    super::quant::Clip::None
                },
            },
            Format::F16 => QuantSpec::F16,
            Format::Bf16 => QuantSpec::Bf16,
            Format::Fp8E4m3 => QuantSpec::Fp8E4m3,
            Format::Fp8E5m2 => QuantSpec::Fp8E5m2,
            Format::Gguf(q) => QuantSpec::Gguf {
                block_type: q.name().to_owned(),
                method: Default::default(),
            },
        })
    }

    /// The recipe's inline table for this format.
    pub fn recipe(self) -> String {
        match self {
            Format::Keep => "{ format = \"none\" }".into(),
            Format::Int {
                bits,
                granularity,
                mse_clip,
            } => {
                let g = match granularity {
                    IntGranularity::Tensor => "granularity = \"tensor\"",
                    IntGranularity::Channel => "granularity = \"channel\"",
                    IntGranularity::Group128 => "granularity = \"group\", group_size = 128",
                };
                let clip = if mse_clip { ", clip = \"mse\"" } else { "" };
                format!("{{ format = \"int\", bits = {bits}, {g}{clip} }}")
            }
            Format::F16 => "{ format = \"f16\" }".into(),
            Format::Bf16 => "{ format = \"bf16\" }".into(),
            Format::Fp8E4m3 => "{ format = \"fp8_e4m3\" }".into(),
            Format::Fp8E5m2 => "{ format = \"fp8_e5m2\" }".into(),
            Format::Gguf(q) => format!("{{ format = \"gguf\", type = \"{}\" }}", q.name()),
        }
    }
}

/// One tensor's own settings, replacing the global ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Override {
    /// Magnitude sparsity of this tensor alone, in percent.
    pub sparsity_pct: f64,
    pub format: Format,
}

/// The whole compression configuration the controls edit (saved with the app's
/// settings, per model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Target sparsity in percent, 0–99.
    pub sparsity_pct: f64,
    pub method: Method,
    /// One magnitude threshold across all tensors instead of one per tensor.
    pub global_scope: bool,
    pub format: Format,
    /// Per-tensor overrides, by tensor name.
    pub overrides: BTreeMap<String, Override>,
    /// Quantization of the weighted layers' inputs (none: float activations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<ActivationSpec>,
    /// Integer formats choose their codes with GPTQ from calibration samples instead
    /// of rounding to nearest (the global format and every override's).
    #[serde(default)]
    pub gptq: bool,
    /// Integer and GGUF formats quantize weights AWQ rescaled (llama GGUFs; the global
    /// format and every override's). Wins over `gptq`.
    #[serde(default)]
    pub awq: bool,
    /// What data-aware methods learn from (`[calibration] samples`); the recipe
    /// default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_samples: Option<usize>,
}

impl Config {
    /// Nothing compressed (the default).
    pub const NONE: Config = Config {
        sparsity_pct: 0.0,
        method: Method::Magnitude,
        global_scope: false,
        format: Format::Keep,
        overrides: BTreeMap::new(),
        activations: None,
        gptq: false,
        awq: false,
        calibration_samples: None,
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::NONE
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The recipe's prune spec for a method at `sparsity_pct` (what [`prune_table`] writes).
fn prune_spec(method: Method, sparsity_pct: f64, global: bool) -> PruneSpec {
    let fraction = (sparsity_pct / 100.0).clamp(0.0, 0.99);
    if method != Method::TwoFour && fraction == 0.0 {
        return PruneSpec::None;
    }
    let sparsity = Fraction::clamped(fraction);
    match method {
        Method::Magnitude => PruneSpec::Magnitude {
            sparsity,
            scope: if global { Scope::Global } else { Scope::Tensor },
            include_vectors: false,
        },
        Method::Random => PruneSpec::Random {
            sparsity,
            seed: 0,
            include_vectors: false,
        },
        Method::TwoFour => PruneSpec::Nm { n: 2, m: 4 },
        Method::Structured => PruneSpec::Structured {
            sparsity,
            axis: 0,
            norm: NormName::L2,
        },
        Method::Wanda => PruneSpec::Wanda {
            sparsity: Some(sparsity),
            n: None,
            m: None,
        },
        Method::SparseGpt => PruneSpec::SparseGpt {
            sparsity: Some(sparsity),
            n: None,
            m: None,
        },
    }
}

fn prune_table(method: Method, sparsity_pct: f64, global: bool) -> String {
    let fraction = (sparsity_pct / 100.0).clamp(0.0, 0.99);
    if method != Method::TwoFour && fraction == 0.0 {
        return "{ method = \"none\" }".into();
    }
    match method {
        Method::Magnitude => format!(
            "{{ method = \"magnitude\", sparsity = {fraction}, scope = \"{}\" }}",
            if global { "global" } else { "tensor" }
        ),
        Method::Random => format!("{{ method = \"random\", sparsity = {fraction}, seed = 0 }}"),
        Method::TwoFour => "{ method = \"nm\", n = 2, m = 4 }".into(),
        Method::Structured => {
            format!("{{ method = \"structured\", sparsity = {fraction}, axis = 0, norm = \"l2\" }}")
        }
        Method::Wanda => format!("{{ method = \"wanda\", sparsity = {fraction} }}"),
        Method::SparseGpt => format!("{{ method = \"sparsegpt\", sparsity = {fraction} }}"),
    }
}

impl Config {
    /// A few words for people: "Magnitude 85% (global) · int4 per channel · 2
    /// per-tensor overrides".
    pub fn summary(&self) -> String {
        if self.is_identity() {
            return "nothing compressed".into();
        }
        let global_prunes = self.method == Method::TwoFour || self.sparsity_pct > 0.0;
        if !global_prunes && self.format == Format::Keep && !self.overrides.is_empty() {
            // Only some tensors change: say so, not "0% · as stored".
            let mut words = format!("{} tensor(s) with their own settings", self.overrides.len());
            if let Some(a) = &self.activations {
                words.push_str(&format!(" · {}", a.describe()));
            }
            return words;
        }
        let mut words = if self.method == Method::TwoFour {
            self.method.label().to_owned()
        } else {
            format!("{} {:.0}%", self.method.label(), self.sparsity_pct)
        };
        if self.global_scope && self.method == Method::Magnitude {
            words.push_str(" (global)");
        }
        words.push_str(&format!(" · {}", self.format.label()));
        if self.awq && matches!(self.format, Format::Int { .. } | Format::Gguf(_)) {
            words.push_str(" AWQ");
        } else if self.gptq && matches!(self.format, Format::Int { .. }) {
            words.push_str(" GPTQ");
        }
        if !self.overrides.is_empty() {
            words.push_str(&format!(" · {} per-tensor overrides", self.overrides.len()));
        }
        if let Some(a) = &self.activations {
            words.push_str(&format!(" · {}", a.describe()));
        }
        words
    }

    /// Whether this configuration changes anything at all.
    pub fn is_identity(&self) -> bool {
        let prunes = self.method == Method::TwoFour || self.sparsity_pct > 0.0;
        !prunes
            && self.format == Format::Keep
            && self.activations.is_none()
            && self
                .overrides
                .values()
                .all(|o| o.sparsity_pct == 0.0 && o.format == Format::Keep)
    }

    /// The recipe this configuration stands for, checked as a parsed one is; `origin`
    /// names it in error messages (`(app settings)`, `(sweep)`).
    pub fn to_recipe(&self, origin: &Path) -> Result<Recipe, RecipeError> {
        // The recipe text of a non-finite level does not parse either.
        let levels = std::iter::once(self.sparsity_pct)
            .chain(self.overrides.values().map(|o| o.sparsity_pct));
        if let Some(v) = levels.into_iter().find(|v| !v.is_finite()) {
            return Err(RecipeError {
                path: origin.to_owned(),
                line: None,
                message: format!("sparsity must be a finite number, got {v}"),
            });
        }
        let quant = |format: Format| -> Result<QuantSpec, RecipeError> {
            let mut spec = format.quant_spec(origin)?;
            match &mut spec {
                QuantSpec::Int { method, .. } if self.awq => *method = IntMethod::Awq,
                QuantSpec::Int { method, .. } if self.gptq => *method = IntMethod::Gptq,
                QuantSpec::Gguf { method, .. } if self.awq => *method = GgufMethod::Awq,
                _ => {}
            }
            Ok(spec)
        };
        let mut rules = vec![Rule::glob(
            "*",
            prune_spec(self.method, self.sparsity_pct, self.global_scope),
            quant(self.format)?,
        )];
        for (name, o) in &self.overrides {
            rules.push(Rule::regex(
                &format!("^{}$", regex::escape(name)),
                prune_spec(Method::Magnitude, o.sparsity_pct, false),
                quant(o.format)?,
            ));
        }
        let recipe = Recipe {
            version: super::recipe::VERSION,
            source: None,
            rules,
            activations: self.activations.clone(),
            calibration: self.calibration_samples.map(|n| CalibrationSpec {
                samples: Some(n),
                dampening: None,
            }),
            origin: origin.to_owned(),
        };
        recipe.check()?;
        Ok(recipe)
    }

    /// [`Config::to_recipe`] with the `[source]` an export records: the model's file
    /// name and, when known, its sha256.
    pub fn to_recipe_from(
        &self,
        origin: &Path,
        file: &str,
        sha256: Option<&str>,
    ) -> Result<Recipe, RecipeError> {
        let mut recipe = self.to_recipe(origin)?;
        recipe.source = Some(Source {
            file: file.to_owned(),
            sha256: sha256.map(str::to_owned),
        });
        Ok(recipe)
    }

    /// The recipe file this configuration stands for. `source` is the model's file
    /// name and, for exports, its sha256.
    pub fn recipe_text(&self, source: Option<(&str, Option<&str>)>) -> String {
        let mut text = String::from(
            "# Written by slimscope: one global rule, then one rule per tensor override.\nversion = 1\n",
        );
        if let Some((file, sha)) = source {
            text += &format!("\n[source]\nfile = {}\n", toml_string(file));
            if let Some(sha) = sha {
                text += &format!("sha256 = \"{sha}\"\n");
            }
        }
        let quant = |format: Format| {
            let table = format.recipe();
            match (format, self.awq, self.gptq) {
                (Format::Int { .. } | Format::Gguf(_), true, _) => {
                    table.replacen(" }", ", method = \"awq\" }", 1)
                }
                (Format::Int { .. }, _, true) => table.replacen(" }", ", method = \"gptq\" }", 1),
                _ => table,
            }
        };
        text += &format!(
            "\n[[rule]]\nmatch = \"*\"\nprune = {}\nquant = {}\n",
            prune_table(self.method, self.sparsity_pct, self.global_scope),
            quant(self.format)
        );
        for (name, o) in &self.overrides {
            let pattern = format!("^{}$", regex::escape(name));
            text += &format!(
                "\n[[rule]]\nregex = {}\nprune = {}\nquant = {}\n",
                toml_string(&pattern),
                prune_table(Method::Magnitude, o.sparsity_pct, false),
                quant(o.format)
            );
        }
        if let Some(n) = self.calibration_samples {
            text += &format!("\n[calibration]\nsamples = {n}\n");
        }
        if let Some(a) = &self.activations {
            // A spec always serializes (plain enums and numbers).
            text += &format!(
                "\n[activations]\n{}",
                toml::to_string(a).unwrap_or_default()
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` parsed, with the lines only a parse knows cleared.
    fn parsed(text: &str, origin: &Path) -> Recipe {
        let mut r = Recipe::parse(text, origin).expect("parses");
        r.rules.iter_mut().for_each(|rule| rule.line = None);
        r
    }

    #[test]
    fn the_typed_recipe_is_the_parsed_recipe_text_for_every_choice() {
        let origin = Path::new("(test)");
        let mut configs = Vec::new();
        for format in Format::choices() {
            for method in Method::ALL {
                for (pct, global) in [(0.0, false), (37.5, true), (85.0, false), (99.5, true)] {
                    configs.push(Config {
                        sparsity_pct: pct,
                        method,
                        global_scope: global,
                        format,
                        overrides: BTreeMap::new(),
                        activations: None,
                        gptq: false,
                        awq: false,
                        calibration_samples: None,
                    });
                }
            }
        }
        for granularity in [
            IntGranularity::Tensor,
            IntGranularity::Channel,
            IntGranularity::Group128,
        ] {
            let mut c = Config {
                sparsity_pct: 12.25,
                format: Format::Int {
                    bits: 3,
                    granularity,
                    mse_clip: true,
                },
                // GPTQ on the group grid; the overrides' int formats would take it too.
                gptq: granularity == IntGranularity::Group128,
                ..Config::default()
            };
            c.overrides.insert(
                "a.b[0]*weight".into(),
                Override {
                    sparsity_pct: 60.0,
                    format: Format::Gguf(GgmlQuant::Q4_K),
                },
            );
            c.overrides.insert(
                "fc.bias".into(),
                Override {
                    sparsity_pct: 0.0,
                    format: Format::Keep,
                },
            );
            configs.push(c);
        }
        // AWQ on a GGUF type and an integer grid, learning from 24 samples.
        for format in [
            Format::Gguf(GgmlQuant::Q3_K),
            Format::Int {
                bits: 4,
                granularity: IntGranularity::Group128,
                mse_clip: false,
            },
        ] {
            configs.push(Config {
                format,
                awq: true,
                calibration_samples: Some(24),
                ..Config::default()
            });
        }
        use crate::compress::activations::{ActivationType, Mode, Observer};
        for (mode, dtype, observer, percentile, calibration) in [
            (Mode::Dynamic, None, None, None, None),
            (Mode::Static, None, None, None, None),
            (
                Mode::Static,
                Some(ActivationType::Int8),
                Some(Observer::Percentile),
                Some(99.99),
                Some(64),
            ),
            (
                Mode::Static,
                Some(ActivationType::Uint8),
                Some(Observer::Entropy),
                None,
                Some(512),
            ),
        ] {
            configs.push(Config {
                format: Format::Int {
                    bits: 8,
                    granularity: IntGranularity::Channel,
                    mse_clip: false,
                },
                activations: Some(ActivationSpec {
                    mode,
                    dtype,
                    observer,
                    percentile,
                    calibration,
                }),
                ..Config::default()
            });
        }
        for c in &configs {
            let typed = c.to_recipe(origin).expect("typed");
            assert_eq!(typed, parsed(&c.recipe_text(None), origin), "{c:?}");
            let exported = c
                .to_recipe_from(origin, "m \"q\".pth", Some("ab"))
                .expect("typed");
            let text = c.recipe_text(Some(("m \"q\".pth", Some("ab"))));
            assert_eq!(exported, parsed(&text, origin), "{c:?}");
        }
    }

    #[test]
    fn an_impossible_bit_width_is_refused_as_its_text_is() {
        let c = Config {
            format: Format::Int {
                bits: 9,
                granularity: IntGranularity::Channel,
                mse_clip: false,
            },
            ..Config::default()
        };
        let origin = Path::new("(app settings)");
        let typed = c.to_recipe(origin).expect_err("bits 9");
        assert!(
            typed.message.contains("bits must be between 2 and 8"),
            "{typed}"
        );
        let text = Recipe::parse(&c.recipe_text(None), origin).expect_err("bits 9");
        assert!(
            text.message.contains("bits must be between 2 and 8"),
            "{text}"
        );
        // A NaN level (a damaged settings file) is refused both ways too.
        let c = Config {
            sparsity_pct: f64::NAN,
            ..Config::default()
        };
        assert!(c.to_recipe(origin).is_err());
        assert!(Recipe::parse(&c.recipe_text(None), origin).is_err());
    }

    #[test]
    fn the_default_configuration_changes_nothing_and_parses() {
        let c = Config::default();
        assert!(c.is_identity());
        let text = c.recipe_text(Some(("m.pth", Some("ab"))));
        let r = Recipe::parse(&text, Path::new("x")).expect("parses");
        assert_eq!(r.rules.len(), 1);
    }

    #[test]
    fn overrides_become_anchored_regex_rules_after_the_global_one() {
        let mut c = Config {
            sparsity_pct: 50.0,
            global_scope: true,
            format: Format::Int {
                bits: 4,
                granularity: IntGranularity::Group128,
                mse_clip: true,
            },
            ..Config::default()
        };
        c.overrides.insert(
            "fc.0.weight".into(),
            Override {
                sparsity_pct: 0.0,
                format: Format::Gguf(GgmlQuant::Q8_0),
            },
        );
        let text = c.recipe_text(None);
        let r = Recipe::parse(&text, Path::new("x")).expect("parses");
        assert_eq!(r.rules.len(), 2);
        let names = [("fc.0.weight", 2), ("fc.10.weight", 2)];
        let plans = r.resolve(&names).expect("resolves");
        // The override hits its tensor only (the dot is escaped, the end anchored).
        assert!(text.contains(r"regex = '^fc\.0\.weight$'"), "{text}");
        assert!(matches!(
            plans[0].quant,
            Some(crate::compress::recipe::QuantSpec::Gguf { .. })
        ));
        assert!(matches!(
            plans[1].quant,
            Some(crate::compress::recipe::QuantSpec::Int { .. })
        ));
    }
}
