//! Measured speed in the app: configurations' exports (the `.onnx` or `.gguf` an
//! export writes) served alone by a fresh `slimscope bench --serve` process, beside
//! the original's, while the sweep pool is paused. The compare tab shows them.

use std::path::PathBuf;
use std::sync::Arc;

use super::background::drain;
use crate::compress::config::Config;
use crate::eval::evaluator::Evaluator;
use crate::jobs::{JobEvent, JobHandle, Paused, spawn_job};
use crate::measure::evaluation::SETTINGS_ORIGIN;
use crate::measure::speed::{SweepSpeed, Variant};
use crate::model::Model;

/// Seconds of timing per figure and artifact.
const SECONDS: f64 = 0.5;

/// What a speed measurement needs besides the configurations.
pub struct SpeedInputs {
    pub model: Arc<Model>,
    /// The attached data's evaluator (its network and data), if any.
    pub evaluator: Option<Arc<Evaluator>>,
    pub data_path: Option<PathBuf>,
    /// The program that serves each artifact.
    pub program: PathBuf,
    /// Held for the measurement: the sweeps and training wait meanwhile.
    pub paused: Option<Paused>,
}

/// A measurement running for some configurations.
struct Measuring {
    configs: Vec<Config>,
    job: JobHandle<SweepSpeed>,
    progress: (usize, usize),
}

/// The speeds measured for the open model.
#[derive(Default)]
pub struct Speeds {
    /// The runtime that served them, in words.
    pub runtime: &'static str,
    /// The original, served the same way.
    pub original: Option<Variant>,
    /// Each configuration's export, by configuration.
    pub measured: Vec<(Config, Variant)>,
    measuring: Option<Measuring>,
}

impl Speeds {
    /// What was measured for `config`'s export.
    pub fn of(&self, config: &Config) -> Option<&Variant> {
        self.measured
            .iter()
            .find(|(c, _)| c == config)
            .map(|(_, v)| v)
    }

    /// The configurations being measured, with the artifacts served so far and in all.
    pub fn measuring(&self) -> Option<(&[Config], (usize, usize))> {
        self.measuring
            .as_ref()
            .map(|m| (m.configs.as_slice(), m.progress))
    }

    /// Serve the original's and each of `configs`' exports, one after another, on a
    /// thread of their own (the pool is paused by `inputs.paused` meanwhile).
    pub fn start(
        &mut self,
        configs: Vec<Config>,
        inputs: SpeedInputs,
        notify: impl Fn() + Send + Sync + 'static,
    ) {
        if self.measuring.is_some() {
            return;
        }
        let job_configs = configs.clone();
        let job = spawn_job("speed", notify, move |progress| {
            let SpeedInputs {
                model,
                evaluator,
                data_path,
                program,
                paused,
            } = inputs;
            // The recipe text File > Export embeds, so each served file is that export.
            let file = super::file_name(&model.path);
            let sha = crate::checksum::sha256_file(&model.path)?;
            let recipes = job_configs
                .iter()
                .map(|c| {
                    let recipe = c.to_recipe(std::path::Path::new(SETTINGS_ORIGIN))?;
                    Ok((recipe, c.recipe_text(Some((&file, Some(&sha))))))
                })
                .collect::<crate::Result<Vec<_>>>()?;
            let own;
            let network = match &evaluator {
                Some(e) => Some(e.network()),
                None if crate::eval::causal_lm::is_causal_lm(&model) => None,
                None => {
                    own = crate::export::export_network(&model, None, None)?;
                    Some(&own)
                }
            };
            let serving = crate::bench::variants::Serving {
                program: &program,
                network,
                data_path: data_path.as_deref(),
                data: evaluator.as_deref().map(Evaluator::data),
                seconds: SECONDS,
            };
            let speed = crate::bench::variants::serve_variants(
                &model,
                &serving,
                &recipes,
                |done, total| {
                    progress.report(done, total);
                },
            )
            .map_err(|e| {
                // The library's own errors as they are; bench's checks are whole sentences.
                e.downcast::<crate::Error>()
                    .unwrap_or_else(|e| crate::Error::Engine {
                        context: "measuring the exports' speed".into(),
                        cause: format!("{e:#}"),
                    })
            });
            drop(paused);
            speed
        });
        self.measuring = Some(Measuring {
            configs,
            job,
            progress: (0, 0),
        });
    }

    /// Take in a finished measurement (never blocks); returns its error.
    pub fn poll(&mut self) -> Option<String> {
        let m = self.measuring.as_mut()?;
        let end = drain(&m.job, &mut m.progress)?;
        let configs = std::mem::take(&mut m.configs);
        self.measuring = None;
        match end {
            JobEvent::Finished(speed) => {
                self.runtime = speed.runtime;
                self.original = Some(speed.original);
                for (config, variant) in configs.into_iter().zip(speed.points) {
                    self.measured.retain(|(c, _)| *c != config);
                    self.measured.push((config, variant));
                }
                None
            }
            JobEvent::Failed(e) => Some(e.to_string()),
            _ => None,
        }
    }
}
