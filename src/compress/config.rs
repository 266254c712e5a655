//! A compression configuration as the app's controls and the sweeps set it: one global
//! setting (pruning method and level, scope, number format) plus per-tensor overrides,
//! always turned into recipe *text*, so that what is shown or swept is exactly what
//! `slimscope apply` reproduces from an exported recipe.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::Magnitude,
        Method::Random,
        Method::TwoFour,
        Method::Structured,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Method::Magnitude => "Magnitude",
            Method::Random => "Random",
            Method::TwoFour => "2:4 (N:M)",
            Method::Structured => "Structured rows",
        }
    }
    pub fn tip(self) -> &'static str {
        match self {
            Method::Magnitude => "Zero the weights of smallest |w| (torch's l1_unstructured)",
            Method::Random => {
                "Zero weights at random (seed 0): the baseline methods are compared to"
            }
            Method::TwoFour => {
                "Keep the 2 largest of every 4 consecutive weights along a row: 50%, what sparse tensor cores run fast"
            }
            Method::Structured => {
                "Remove whole output rows (neurons, conv filters) of smallest L2 norm: the layer physically shrinks"
            }
        }
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
    /// Every choice the picker offers (int ones with the default granularity).
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

    /// Whether two formats are the same choice in the picker (int granularity aside).
    pub fn same_choice(self, other: Format) -> bool {
        match (self, other) {
            (Format::Int { bits: a, .. }, Format::Int { bits: b, .. }) => a == b,
            (a, b) => a == b,
        }
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sparsity_pct: 0.0,
            method: Method::Magnitude,
            global_scope: false,
            format: Format::Keep,
            overrides: BTreeMap::new(),
        }
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
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
    }
}

impl Config {
    /// A few words for people: "Magnitude 85% (global) · int4 per channel · 2
    /// per-tensor overrides".
    pub fn summary(&self) -> String {
        if self.is_identity() {
            return "nothing compressed".into();
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
        if !self.overrides.is_empty() {
            words.push_str(&format!(" · {} per-tensor overrides", self.overrides.len()));
        }
        words
    }

    /// Whether this configuration changes anything at all.
    pub fn is_identity(&self) -> bool {
        let prunes = self.method == Method::TwoFour || self.sparsity_pct > 0.0;
        !prunes
            && self.format == Format::Keep
            && self
                .overrides
                .values()
                .all(|o| o.sparsity_pct == 0.0 && o.format == Format::Keep)
    }

    /// The recipe this configuration stands for. `source` is the model's file name
    /// and, for exports, its sha256.
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
        text += &format!(
            "\n[[rule]]\nmatch = \"*\"\nprune = {}\nquant = {}\n",
            prune_table(self.method, self.sparsity_pct, self.global_scope),
            self.format.recipe()
        );
        for (name, o) in &self.overrides {
            let pattern = format!("^{}$", regex::escape(name));
            text += &format!(
                "\n[[rule]]\nregex = {}\nprune = {}\nquant = {}\n",
                toml_string(&pattern),
                prune_table(Method::Magnitude, o.sparsity_pct, false),
                o.format.recipe()
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::compress::recipe::Recipe;

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
        let plans = r.resolve(&names, &text, Path::new("x")).expect("resolves");
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
