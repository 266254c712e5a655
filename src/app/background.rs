//! The app's own background tasks, beside those of the open document (evaluation,
//! statistics, attaching: `document.rs`), the curves and training: opening a model,
//! the file dialog, an export, a file being saved and the screenshot awaited. One
//! [`Background::poll`] takes in whatever ended, without blocking, as [`Ended`]
//! values the app acts on.

use std::path::PathBuf;
use std::sync::Arc;

use super::snapshot::PngRequest;
use super::{Command, LoadedModel};
use crate::jobs::{JobEvent, JobHandle};

/// A model being opened.
pub(super) struct Loading {
    pub path: PathBuf,
    pub job: JobHandle<LoadedModel>,
    pub progress: (usize, usize),
}

/// The window's screenshot, asked for to save the plots out of it.
pub(super) struct Screenshot {
    pub request: PngRequest,
    pub image: crossbeam_channel::Receiver<Arc<egui::ColorImage>>,
    /// The scale the screenshot is taken at.
    pub pixels_per_point: f32,
}

/// The app's background tasks: at most one of each.
#[derive(Default)]
pub(super) struct Background {
    pub loading: Option<Loading>,
    /// The file dialog on screen; its answer becomes a command.
    pub dialog: Option<JobHandle<Option<Command>>>,
    /// The export being written.
    pub export: Option<JobHandle<String>>,
    /// A training result, results file or image being written.
    pub saving: Option<JobHandle<String>>,
    /// Text being made for the clipboard (a recipe with the model's sha256).
    pub copying: Option<JobHandle<String>>,
    pub screenshot: Option<Screenshot>,
}

/// What a background task ended with.
pub(super) enum Ended {
    Loaded(PathBuf, LoadedModel),
    /// A file was written; the message says which.
    Written(String),
    Failed(String),
    /// The screenshot arrived, with its request and scale.
    Screenshot(PngRequest, Arc<egui::ColorImage>, f32),
    /// Text for the clipboard.
    Copied(String),
    /// The file dialog's answer (last: it is for the model shown after a load).
    Answer(Command),
}

impl Background {
    /// What ended since the last call, emptying those slots (never blocks).
    pub fn poll(&mut self) -> Vec<Ended> {
        let mut ended = Vec::new();
        if let Some(shot) = &self.screenshot
            && let Ok(image) = shot.image.try_recv()
            && let Some(shot) = self.screenshot.take()
        {
            ended.push(Ended::Screenshot(
                shot.request,
                image,
                shot.pixels_per_point,
            ));
        }
        for slot in [&mut self.saving, &mut self.export] {
            match take_end(slot, |j| j) {
                Some(JobEvent::Finished(message)) => ended.push(Ended::Written(message)),
                Some(JobEvent::Failed(e)) => ended.push(Ended::Failed(e.to_string())),
                _ => {}
            }
        }
        match take_end(&mut self.copying, |j| j) {
            Some(JobEvent::Finished(text)) => ended.push(Ended::Copied(text)),
            Some(JobEvent::Failed(e)) => ended.push(Ended::Failed(e.to_string())),
            _ => {}
        }
        if let Some(loading) = &mut self.loading
            && let Some(end) = drain(&loading.job, &mut loading.progress)
            && let Some(loading) = self.loading.take()
        {
            match end {
                JobEvent::Finished(loaded) => ended.push(Ended::Loaded(loading.path, loaded)),
                JobEvent::Failed(e) => ended.push(Ended::Failed(e.to_string())),
                _ => {}
            }
        }
        if let Some(JobEvent::Finished(Some(command))) = take_end(&mut self.dialog, |d| d) {
            ended.push(Ended::Answer(command));
        }
        ended
    }
}

/// The end of the job in `slot` (reached through `job`), emptying the slot when it
/// has ended.
pub(super) fn take_end<S, T, P>(
    slot: &mut Option<S>,
    job: impl Fn(&S) -> &JobHandle<T, P>,
) -> Option<JobEvent<T, P>> {
    let event = job(slot.as_ref()?).try_end()?;
    *slot = None;
    Some(event)
}

/// The job's end, if it has ended, after recording its latest progress.
pub(super) fn drain<T>(job: &JobHandle<T>, progress: &mut (usize, usize)) -> Option<JobEvent<T>> {
    let mut end = None;
    while let Ok(event) = job.events.try_recv() {
        match event {
            JobEvent::Progress { done, total, .. } => *progress = (done, total),
            other if other.is_end() => end = Some(other),
            _ => {}
        }
    }
    end
}
