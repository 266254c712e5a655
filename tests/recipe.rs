//! Recipes: what they mean, and that every bad recipe is an error naming the file and
//! the line (unknown keys, bad values, patterns that match nothing).

mod common;

use std::path::Path;

use common::fixture;
use slimscope::Model;
use slimscope::compress::recipe::{PruneSpec, QuantSpec, Recipe, Scope};

const GOOD: &str = r#"version = 1

[source]
file = "handwriting_model.pth"

[[rule]]
match = "*.weight"
prune = { method = "magnitude", sparsity = 0.5, scope = "global" }
quant = { format = "int", bits = 8, granularity = "channel" }

[[rule]]
regex = '^conv_layers\.0\.'
prune = { method = "none" }

[[rule]]
match = "fc_layers.2.*"
quant = { format = "gguf", type = "Q8_0" }

[[rule]]
match = "*.bias"
prune = { method = "magnitude", sparsity = 0.1 }
"#;

fn path() -> &'static Path {
    Path::new("recipe.toml")
}

fn cnn_tensors() -> Vec<(String, usize)> {
    let model = Model::open(fixture("digit_cnn.pth")).unwrap_or_else(|e| panic!("{e}"));
    model
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.len()))
        .collect()
}

fn resolve(
    text: &str,
) -> Result<Vec<slimscope::compress::recipe::TensorPlan>, slimscope::compress::recipe::RecipeError>
{
    let recipe = Recipe::parse(text, path())?;
    let tensors = cnn_tensors();
    let view: Vec<(&str, usize)> = tensors.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    recipe.resolve(&view)
}

#[test]
fn rules_apply_in_order_and_later_rules_override() {
    let plans = resolve(GOOD).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = cnn_tensors().into_iter().map(|t| t.0).collect();
    let plan = |n: &str| &plans[names.iter().position(|x| x == n).expect("tensor")];
    // conv_layers.0.weight: the regex rule turns pruning off, the quant stays int8.
    assert_eq!(
        plan("conv_layers.0.weight").prune,
        Some((PruneSpec::None, 1))
    );
    assert!(matches!(
        plan("conv_layers.0.weight").quant,
        Some(QuantSpec::Int { .. })
    ));
    // Other weights: global magnitude 50% from rule 0.
    assert!(matches!(
        plan("fc_layers.0.weight").prune,
        Some((
            PruneSpec::Magnitude {
                scope: Scope::Global,
                ..
            },
            0
        ))
    ));
    // fc_layers.2.*: quant overridden to Q8_0 for the weight; the 1-D bias gets no
    // quant, because (as in llama.cpp) block types are for matrices only.
    assert!(matches!(
        plan("fc_layers.2.weight").quant,
        Some(QuantSpec::Gguf { .. })
    ));
    assert_eq!(plan("fc_layers.2.bias").quant, None);
    // Biases are 1-D: not pruned unless the rule asks with include_vectors.
    assert_eq!(plan("fc_layers.0.bias").prune, None);
}

#[test]
fn recipes_round_trip_through_toml() {
    let recipe = Recipe::parse(GOOD, path()).unwrap_or_else(|e| panic!("{e}"));
    let text = recipe.to_toml().unwrap_or_else(|e| panic!("{e}"));
    let again = Recipe::parse(&text, path()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(recipe.rules.len(), again.rules.len());
    for (a, b) in recipe.rules.iter().zip(&again.rules) {
        assert_eq!((&a.prune, &a.quant), (&b.prune, &b.quant));
        assert_eq!(
            a.glob.as_ref().map(|g| g.get_ref()),
            b.glob.as_ref().map(|g| g.get_ref())
        );
    }
}

/// The recipe fails with a message containing `problem`, on `line` of recipe.toml.
fn assert_bad(text: &str, line: Option<usize>, problem: &str) {
    let err = resolve(text).expect_err("bad recipe");
    let message = err.to_string();
    assert!(message.starts_with("recipe.toml"), "{message}");
    assert_eq!(err.line, line, "{message}");
    assert!(message.contains(problem), "{message}");
}

#[test]
fn bad_recipes_name_the_line() {
    let rule = |body: &str| format!("version = 1\n\n[[rule]]\n{body}\n");
    assert_bad(
        &rule("match = \"*\"\nprune = { method = \"magnitude\", sparsity = 1.5 }"),
        Some(5),
        "sparsity must be between 0 and 1, got 1.5",
    );
    assert_bad(
        &rule("match = \"*\"\nquant = { format = \"int\", bits = 0, granularity = \"tensor\" }"),
        Some(5),
        "bits must be between 2 and 8, got 0",
    );
    assert_bad(
        &rule("match = \"*\"\nfrobnicate = true"),
        Some(5),
        "unknown field `frobnicate`",
    );
    assert_bad(
        &rule("match = \"*\"\nprune = { method = \"magnitude\", sparsity = 0.5, colour = 1 }"),
        Some(5),
        "colour",
    );
    assert_bad(
        &rule("match = \"*\"\nprune = { method = \"prettiest\" }"),
        Some(5),
        "prettiest",
    );
    assert_bad(
        &rule("match = \"nothing.like.this\"\nprune = { method = \"none\" }"),
        Some(4),
        "matches no tensor",
    );
    assert_bad(
        &rule("match = \"[\"\nprune = { method = \"none\" }"),
        Some(4),
        "bad glob",
    );
    assert_bad(
        &rule("regex = \"(\"\nprune = { method = \"none\" }"),
        Some(4),
        "bad regex",
    );
    assert_bad(
        &rule("match = \"*\"\nprune = { method = \"nm\", n = 5, m = 4 }"),
        Some(4),
        "N:M",
    );
    assert_bad(
        &rule("match = \"*\"\nquant = { format = \"gguf\", type = \"IQ2_XXS\" }"),
        Some(4),
        "IQ2_XXS",
    );
    assert_bad(
        &rule("match = \"*\"\nquant = { format = \"gguf\", type = \"Q4_K\", method = \"gptq\" }"),
        Some(4),
        "GPTQ quantizes onto Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 blocks, not Q4_K",
    );
    assert_bad("version = 2\n", None, "version 2 is not supported");
    assert_bad(
        "version = 1\n[[rule]]\nprune = { method = \"none\" }\n",
        None,
        "neither",
    );
    assert_bad("version = \n", Some(1), "");
}

#[test]
fn a_missing_recipe_file_names_it() {
    let err = Recipe::load(Path::new("/nonexistent/r.toml")).expect_err("missing");
    assert!(
        err.to_string().starts_with("/nonexistent/r.toml: "),
        "{err}"
    );
}
