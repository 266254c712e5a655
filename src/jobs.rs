//! Background jobs: work on named worker threads, progress and results back over a
//! crossbeam channel, cooperative cancellation, and a `notify` callback so a UI can
//! repaint when something arrives. The core work stays synchronous and testable; this
//! module only runs it elsewhere. Later the sweep pool grows from here.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::error::{Error, Result};

/// What a job reports, in order: any number of `Progress`, then exactly one of
/// `Finished`, `Failed` or `Cancelled`.
#[derive(Debug)]
pub enum JobEvent<T> {
    Progress {
        done: usize,
        total: usize,
    },
    Finished(T),
    /// The job's error (or panic), in words for the user.
    Failed(String),
    Cancelled,
}

/// Shared flag a job polls to stop early.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Handed to the job's work: report progress, learn about cancellation.
pub struct Progress<T> {
    tx: Sender<JobEvent<T>>,
    cancel: CancelToken,
    notify: Arc<dyn Fn() + Send + Sync>,
}

impl<T> Progress<T> {
    /// Report progress; returns `false` once the job has been cancelled (stop then).
    pub fn report(&self, done: usize, total: usize) -> bool {
        // A closed channel means nobody listens any more: treat it as cancelled.
        if self.tx.send(JobEvent::Progress { done, total }).is_err() {
            self.cancel.cancel();
        }
        (self.notify)();
        !self.cancel.is_cancelled()
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// A running job. Dropping the handle cancels the job.
pub struct JobHandle<T> {
    pub events: Receiver<JobEvent<T>>,
    cancel: CancelToken,
}

impl<T> JobHandle<T> {
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

impl<T> Drop for JobHandle<T> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Run `work` on a new thread named `slimscope-{name}`. Events arrive on the handle's
/// channel; `notify` is called after each one (e.g. `ctx.request_repaint()`). A panic
/// inside `work` becomes `Failed`, and `Err(Error::Cancelled)` becomes `Cancelled`.
pub fn spawn_job<T, F>(
    name: &str,
    notify: impl Fn() + Send + Sync + 'static,
    work: F,
) -> JobHandle<T>
where
    T: Send + 'static,
    F: FnOnce(&Progress<T>) -> Result<T> + Send + 'static,
{
    let (tx, events) = unbounded();
    let cancel = CancelToken::default();
    let notify: Arc<dyn Fn() + Send + Sync> = Arc::new(notify);
    let progress = Progress {
        tx: tx.clone(),
        cancel: cancel.clone(),
        notify: notify.clone(),
    };
    let spawned = std::thread::Builder::new()
        .name(format!("slimscope-{name}"))
        .spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| work(&progress)));
            let event = match outcome {
                Ok(Ok(value)) if !progress.is_cancelled() => JobEvent::Finished(value),
                Ok(Ok(_)) | Ok(Err(Error::Cancelled)) => JobEvent::Cancelled,
                Ok(Err(e)) => JobEvent::Failed(e.to_string()),
                Err(panic) => JobEvent::Failed(format!(
                    "internal error (please report): {}",
                    panic_message(&panic)
                )),
            };
            let _ = progress.tx.send(event);
            (progress.notify)();
        });
    if let Err(e) = spawned {
        let _ = tx.send(JobEvent::Failed(format!(
            "could not start a worker thread: {e}"
        )));
        notify();
    }
    JobHandle { events, cancel }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a worker thread panicked".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn drain<T>(h: &JobHandle<T>) -> Vec<JobEvent<T>> {
        let mut out = Vec::new();
        while let Ok(e) = h.events.recv_timeout(Duration::from_secs(10)) {
            let end = !matches!(e, JobEvent::Progress { .. });
            out.push(e);
            if end {
                break;
            }
        }
        out
    }

    #[test]
    fn a_job_reports_progress_then_its_result() {
        let h = spawn_job(
            "t",
            || {},
            |p| {
                for i in 1..=3 {
                    p.report(i, 3);
                }
                Ok(42)
            },
        );
        let events = drain(&h);
        assert_eq!(events.len(), 4);
        assert!(matches!(events[3], JobEvent::Finished(42)));
    }

    #[test]
    fn a_panicking_job_fails_and_the_next_job_runs() {
        let h = spawn_job::<(), _>("t", || {}, |_| panic!("boom"));
        assert!(matches!(drain(&h).pop(), Some(JobEvent::Failed(m)) if m.contains("boom")));
        let h = spawn_job("t", || {}, |_| Ok(1));
        assert!(matches!(drain(&h).pop(), Some(JobEvent::Finished(1))));
    }

    #[test]
    fn cancelling_stops_a_job_that_polls() {
        let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(1);
        let h = spawn_job::<(), _>(
            "t",
            || {},
            move |p| {
                let _ = go_rx.recv();
                while p.report(0, 1) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(Error::Cancelled)
            },
        );
        h.cancel();
        let _ = go_tx.send(());
        assert!(matches!(drain_to_end(&h), Some(JobEvent::Cancelled)));
    }

    fn drain_to_end<T>(h: &JobHandle<T>) -> Option<JobEvent<T>> {
        let mut last = None;
        while let Ok(e) = h.events.recv_timeout(Duration::from_secs(10)) {
            let end = !matches!(e, JobEvent::Progress { .. });
            last = Some(e);
            if end {
                break;
            }
        }
        last
    }
}
