//! Background jobs: work on worker threads, events back over a crossbeam channel,
//! cooperative cancellation, and a `notify` callback so a UI can repaint when
//! something arrives. The core work stays synchronous and testable; this module only
//! runs it elsewhere.
//!
//! Two ways to run a job: [`spawn_job`] starts a thread of its own (file dialogs,
//! loading: things that must never queue behind a sweep), and a [`Pool`] runs
//! compute jobs (evaluations, sweeps) on a fixed set of workers, with latest-wins
//! replacement for slider-driven jobs and its own compute threads (see [`Pool`]).

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};

use crate::error::{Error, Result};

/// What a job reports, in order: `Started`, any number of `Progress` and `Point`,
/// then exactly one of `Finished`, `Failed` or `Cancelled`.
#[derive(Debug)]
pub enum JobEvent<T, P = ()> {
    /// A worker has picked the job up (pool jobs may wait in the queue first).
    Started,
    Progress {
        done: usize,
        total: usize,
        /// Time left at the rate so far (none before the first unit is done).
        eta: Option<Duration>,
    },
    /// One partial result (a sweep point), as soon as it exists.
    Point(P),
    Finished(T),
    /// The job's error ([`Error::Internal`] for a panic), as it happened: callers
    /// match on it and show its message.
    Failed(Error),
    Cancelled,
}

impl<T, P> JobEvent<T, P> {
    /// Whether this is the job's last event.
    pub fn is_end(&self) -> bool {
        matches!(
            self,
            JobEvent::Finished(_) | JobEvent::Failed(_) | JobEvent::Cancelled
        )
    }
}

/// Shared flag a job polls to stop early. Asking it is also where a pool's job
/// checks in between steps: while its pool is paused ([`Pool::pause`]) the question
/// waits for the pause to end (or the job to be cancelled).
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    cancelled: Arc<AtomicBool>,
    gate: Option<Arc<Gate>>,
}

impl CancelToken {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        if let Some(gate) = &self.gate {
            gate.opened.notify_all();
        }
    }
    pub fn is_cancelled(&self) -> bool {
        if let Some(gate) = &self.gate {
            gate.wait_open(&self.cancelled);
        }
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// How many pauses hold a pool's jobs, and the signal that the count fell to zero.
#[derive(Debug, Default)]
struct Gate {
    pauses: Mutex<usize>,
    opened: Condvar,
}

impl Gate {
    /// Wait while any pause holds (or until `cancelled`).
    fn wait_open(&self, cancelled: &AtomicBool) {
        let mut pauses = self.pauses.lock().unwrap_or_else(|e| e.into_inner());
        while *pauses > 0 && !cancelled.load(Ordering::Relaxed) {
            // A timeout too: a cancel that raced the wait is seen within it.
            pauses = self
                .opened
                .wait_timeout(pauses, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A pause of a pool's jobs ([`Pool::pause`]); they go on when it is dropped.
#[derive(Debug)]
pub struct Paused(Arc<Gate>);

impl Drop for Paused {
    fn drop(&mut self) {
        let mut pauses = self.0.pauses.lock().unwrap_or_else(|e| e.into_inner());
        *pauses = pauses.saturating_sub(1);
        self.0.opened.notify_all();
    }
}

/// Handed to the job's work: report progress and points, learn about cancellation.
pub struct Progress<T, P = ()> {
    tx: Sender<JobEvent<T, P>>,
    cancel: CancelToken,
    notify: Arc<dyn Fn() + Send + Sync>,
    start: Instant,
}

impl<T, P> Progress<T, P> {
    fn send(&self, event: JobEvent<T, P>) {
        // A closed channel means nobody listens any more: treat it as cancelled.
        if self.tx.send(event).is_err() {
            self.cancel.cancel();
        }
        (self.notify)();
    }

    /// Report progress; returns `false` once the job has been cancelled (stop then).
    pub fn report(&self, done: usize, total: usize) -> bool {
        let eta = (done > 0 && total >= done).then(|| {
            self.start
                .elapsed()
                .mul_f64((total - done) as f64 / done as f64)
        });
        self.send(JobEvent::Progress { done, total, eta });
        !self.cancel.is_cancelled()
    }

    /// Report one partial result; returns `false` once the job has been cancelled.
    pub fn point(&self, point: P) -> bool {
        self.send(JobEvent::Point(point));
        !self.cancel.is_cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The job's cancellation flag, for work that polls it elsewhere.
    pub fn token(&self) -> &CancelToken {
        &self.cancel
    }
}

/// A job. Dropping the handle cancels it.
pub struct JobHandle<T, P = ()> {
    pub events: Receiver<JobEvent<T, P>>,
    cancel: CancelToken,
}

impl<T, P> JobHandle<T, P> {
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The job's last event if it has arrived, skipping the others (never blocks):
    /// for callers that only want the result.
    pub fn try_end(&self) -> Option<JobEvent<T, P>> {
        self.events.try_iter().find(JobEvent::is_end)
    }
}

impl<T, P> Drop for JobHandle<T, P> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The job, its channel and its flag, ready to run on some thread.
fn prepare<T, P, F>(
    notify: impl Fn() + Send + Sync + 'static,
    work: F,
    cancel: CancelToken,
) -> (JobHandle<T, P>, impl FnOnce() + Send + 'static)
where
    T: Send + 'static,
    P: Send + 'static,
    F: FnOnce(&Progress<T, P>) -> Result<T> + Send + 'static,
{
    let (tx, events) = unbounded();
    let notify: Arc<dyn Fn() + Send + Sync> = Arc::new(notify);
    let progress = Progress {
        tx,
        cancel: cancel.clone(),
        notify,
        start: Instant::now(),
    };
    let run = move || {
        if progress.is_cancelled() {
            progress.send(JobEvent::Cancelled);
            return;
        }
        let progress = Progress {
            start: Instant::now(),
            ..progress
        };
        progress.send(JobEvent::Started);
        let outcome = catch_unwind(AssertUnwindSafe(|| work(&progress)));
        let event = match outcome {
            Ok(Ok(value)) if !progress.is_cancelled() => JobEvent::Finished(value),
            Ok(Ok(_)) | Ok(Err(Error::Cancelled)) => JobEvent::Cancelled,
            Ok(Err(e)) => JobEvent::Failed(e),
            Err(panic) => JobEvent::Failed(Error::Internal(panic_message(&panic))),
        };
        progress.send(event);
    };
    (JobHandle { events, cancel }, run)
}

/// Run `work` on a new thread named `slimscope-{name}`, at a lower priority than the
/// caller's (see [`lower_thread_priority`]): jobs are background work. Events arrive
/// on the handle's channel; `notify` is called after each one (e.g.
/// `ctx.request_repaint()`). A panic inside `work` becomes `Failed`, and
/// `Err(Error::Cancelled)` becomes `Cancelled`.
pub fn spawn_job<T, F>(
    name: &str,
    notify: impl Fn() + Send + Sync + 'static,
    work: F,
) -> JobHandle<T>
where
    T: Send + 'static,
    F: FnOnce(&Progress<T>) -> Result<T> + Send + 'static,
{
    spawn_streaming(name, notify, work)
}

/// [`spawn_job`] for work that sends partial results (`Point`s) on the way.
pub fn spawn_streaming<T, P, F>(
    name: &str,
    notify: impl Fn() + Send + Sync + 'static,
    work: F,
) -> JobHandle<T, P>
where
    T: Send + 'static,
    P: Send + 'static,
    F: FnOnce(&Progress<T, P>) -> Result<T> + Send + 'static,
{
    let notify: Arc<dyn Fn() + Send + Sync> = Arc::new(notify);
    let n = notify.clone();
    let (handle, run) = prepare(move || n(), work, CancelToken::default());
    if let Err(e) = std::thread::Builder::new()
        .name(format!("slimscope-{name}"))
        .spawn(move || {
            lower_thread_priority();
            run();
        })
    {
        // The closure (and its sender) is gone; report through a fresh channel.
        let (tx, events) = unbounded();
        let _ = tx.send(JobEvent::Failed(Error::NoWorker(format!(
            "a worker thread: {e}"
        ))));
        notify();
        return JobHandle {
            events,
            cancel: handle.cancel.clone(),
        };
    }
    handle
}

type Task = Box<dyn FnOnce() + Send>;

/// A fixed set of worker threads that run submitted jobs in order, and the rayon
/// pool their computations run on.
///
/// Parallelism lives in one place, the compute pool: a sweep evaluates its points with
/// a parallel iterator and each evaluation splits its batches with another, nested in
/// the same pool. Rayon's work stealing keeps exactly `threads` cores busy whichever
/// level has work, so nothing is oversubscribed. Measured on 12 digit-CNN points over
/// mnist_5k: 13.9 s nested, 13.9 s with points one after another (the evaluation
/// alone fills both cores); sweeps without data have no batches to split, and there
/// only the points level keeps the cores busy.
pub struct Pool {
    queue: Option<Sender<Task>>,
    workers: Vec<JoinHandle<()>>,
    compute: Arc<rayon::ThreadPool>,
    running: Arc<AtomicUsize>,
    latest: Mutex<HashMap<String, CancelToken>>,
    /// Holds the jobs at their next check-in while paused.
    gate: Arc<Gate>,
}

/// Make the calling thread yield to normal-priority threads (nice +10). On Linux the
/// nice value belongs to the thread, so an interactive front end's own thread is
/// scheduled first when the cores are busy with background work; elsewhere, and if
/// the system refuses, nothing changes.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its integer arguments; who = 0 is the caller.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

impl Pool {
    /// `workers` jobs at a time, computing on `threads` threads (0: one per core).
    pub fn new(workers: usize, threads: usize) -> Result<Pool> {
        Pool::build(workers, threads, false)
    }

    /// [`Pool::new`] whose threads run at a lower priority than the caller's, so the
    /// app's UI thread gets a core at once however busy the sweeps keep them.
    pub fn background(workers: usize, threads: usize) -> Result<Pool> {
        Pool::build(workers, threads, true)
    }

    fn build(workers: usize, threads: usize, background: bool) -> Result<Pool> {
        let compute = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("slimscope-compute-{i}"))
            .start_handler(move |_| {
                if background {
                    lower_thread_priority();
                }
            })
            .build()
            .map_err(|e| Error::NoWorker(format!("compute threads: {e}")))?;
        let compute = Arc::new(compute);
        let (queue, tasks) = unbounded::<Task>();
        let running = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let tasks = tasks.clone();
            let compute = compute.clone();
            let running = running.clone();
            let handle = std::thread::Builder::new()
                .name(format!("slimscope-worker-{i}"))
                .spawn(move || {
                    if background {
                        lower_thread_priority();
                    }
                    for task in tasks {
                        running.fetch_add(1, Ordering::SeqCst);
                        compute.install(task);
                        running.fetch_sub(1, Ordering::SeqCst);
                    }
                })
                .map_err(|e| Error::NoWorker(format!("a worker: {e}")))?;
            handles.push(handle);
        }
        Ok(Pool {
            queue: Some(queue),
            workers: handles,
            compute,
            running,
            latest: Mutex::new(HashMap::new()),
            gate: Arc::default(),
        })
    }

    /// Threads computations run on.
    pub fn threads(&self) -> usize {
        self.compute.current_num_threads()
    }

    /// Run `f` here, with its parallel work on the pool's compute threads.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.compute.install(f)
    }

    /// A cancellation token for a job of this pool (it checks in at the gate).
    fn token(&self) -> CancelToken {
        CancelToken {
            cancelled: Arc::default(),
            gate: Some(self.gate.clone()),
        }
    }

    /// Hold every job of this pool at its next check-in (each time it asks whether
    /// it is cancelled, between steps) until the returned guard is dropped: a timing
    /// taken for the user runs on a quiet machine. Queued jobs wait as well once
    /// they start.
    pub fn pause(&self) -> Paused {
        *self.gate.pauses.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Paused(self.gate.clone())
    }

    /// Jobs running now (not counting queued ones).
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Queue `work`; events arrive on the returned handle, `notify` is called after each.
    pub fn submit<T, P, F>(
        &self,
        notify: impl Fn() + Send + Sync + 'static,
        work: F,
    ) -> JobHandle<T, P>
    where
        T: Send + 'static,
        P: Send + 'static,
        F: FnOnce(&Progress<T, P>) -> Result<T> + Send + 'static,
    {
        self.submit_with(notify, work, self.token())
    }

    /// Queue `work` as the latest job of `kind`, cancelling the one before it (sliders:
    /// only the newest setting matters).
    pub fn submit_latest<T, P, F>(
        &self,
        kind: &str,
        notify: impl Fn() + Send + Sync + 'static,
        work: F,
    ) -> JobHandle<T, P>
    where
        T: Send + 'static,
        P: Send + 'static,
        F: FnOnce(&Progress<T, P>) -> Result<T> + Send + 'static,
    {
        let token = self.token();
        let older = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind.to_owned(), token.clone());
        if let Some(older) = older {
            older.cancel();
        }
        self.submit_with(notify, work, token)
    }

    fn submit_with<T, P, F>(
        &self,
        notify: impl Fn() + Send + Sync + 'static,
        work: F,
        token: CancelToken,
    ) -> JobHandle<T, P>
    where
        T: Send + 'static,
        P: Send + 'static,
        F: FnOnce(&Progress<T, P>) -> Result<T> + Send + 'static,
    {
        let (handle, run) = prepare(notify, work, token);
        if let Some(q) = &self.queue {
            // The workers hold the receiving end until the pool is dropped.
            let _ = q.send(Box::new(run));
        }
        handle
    }
}

impl Drop for Pool {
    /// Finish the queued jobs (cancelled ones end at once) and join every thread.
    fn drop(&mut self) {
        self.queue = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
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

    /// Every event of `h` up to and including its end.
    fn drain<T, P>(h: &JobHandle<T, P>) -> Vec<JobEvent<T, P>> {
        let mut out = Vec::new();
        while let Ok(e) = h.events.recv_timeout(Duration::from_secs(10)) {
            let end = e.is_end();
            out.push(e);
            if end {
                break;
            }
        }
        out
    }

    /// A paused pool's job stops at its next check-in and goes on when the pause
    /// ends; a cancel reaches it while paused.
    #[test]
    fn a_paused_pool_holds_its_jobs_between_steps() {
        let pool = Pool::new(1, 1).expect("pool");
        let steps = Arc::new(AtomicUsize::new(0));
        let counted = steps.clone();
        let h = pool.submit::<usize, (), _>(
            || {},
            move |p| {
                for _ in 0..1000 {
                    if p.is_cancelled() {
                        return Err(Error::Cancelled);
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(2));
                }
                Ok(counted.load(Ordering::SeqCst))
            },
        );
        while steps.load(Ordering::SeqCst) < 3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let paused = pool.pause();
        std::thread::sleep(Duration::from_millis(20));
        let held = steps.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            steps.load(Ordering::SeqCst) <= held + 1,
            "it went on while paused"
        );
        drop(paused);
        let resumed = Instant::now();
        while steps.load(Ordering::SeqCst) < held + 5 {
            assert!(
                resumed.elapsed() < Duration::from_secs(10),
                "it never resumed"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let _again = pool.pause();
        h.cancel();
        let events = drain(&h);
        assert!(
            matches!(
                events.last(),
                Some(JobEvent::Failed(Error::Cancelled) | JobEvent::Cancelled)
            ),
            "{events:?}"
        );
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
        assert_eq!(events.len(), 5);
        assert!(matches!(events[0], JobEvent::Started));
        assert!(matches!(events[4], JobEvent::Finished(42)));
    }

    #[test]
    fn a_panicking_job_fails_and_the_next_job_runs() {
        let h = spawn_job::<(), _>("t", || {}, |_| panic!("boom"));
        assert!(
            matches!(drain(&h).pop(), Some(JobEvent::Failed(Error::Internal(m))) if m.contains("boom"))
        );
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
        assert!(matches!(drain(&h).pop(), Some(JobEvent::Cancelled)));
    }

    #[test]
    fn a_pool_streams_points_and_survives_a_panic_and_a_failure() {
        let pool = Pool::new(1, 2).expect("pool");
        let h = pool.submit::<usize, usize, _>(
            || {},
            |p| {
                for i in 0..3 {
                    p.point(i * 10);
                    p.report(i + 1, 3);
                }
                Ok(3)
            },
        );
        let events = drain(&h);
        assert!(matches!(events[0], JobEvent::Started));
        let points: Vec<usize> = events
            .iter()
            .filter_map(|e| match e {
                JobEvent::Point(p) => Some(*p),
                _ => None,
            })
            .collect();
        assert_eq!(points, [0, 10, 20]);
        assert!(events.iter().any(|e| matches!(
            e,
            JobEvent::Progress { done: 3, total: 3, eta: Some(eta) } if eta.is_zero()
        )));
        assert!(matches!(events.last(), Some(JobEvent::Finished(3))));
        let h = pool.submit::<(), (), _>(|| {}, |_| panic!("boom"));
        assert!(
            matches!(drain(&h).pop(), Some(JobEvent::Failed(Error::Internal(m))) if m.contains("boom"))
        );
        let h =
            pool.submit::<(), (), _>(|| {}, |_| Err(Error::InvalidSetting("bad recipe".into())));
        assert!(
            matches!(drain(&h).pop(), Some(JobEvent::Failed(Error::InvalidSetting(m))) if m.contains("bad recipe"))
        );
        let h = pool.submit::<u8, (), _>(|| {}, |_| Ok(7));
        assert!(matches!(drain(&h).pop(), Some(JobEvent::Finished(7))));
    }

    #[test]
    fn a_newer_job_of_the_same_kind_cancels_the_older_and_dropping_joins_every_thread() {
        let pool = Pool::new(2, 1).expect("pool");
        let spin = |p: &Progress<u32>| {
            while p.report(0, 1) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(Error::Cancelled)
        };
        let old = pool.submit_latest("slider", || {}, spin);
        assert!(matches!(
            old.events.recv_timeout(Duration::from_secs(10)),
            Ok(JobEvent::Started)
        ));
        let start = Instant::now();
        let new = pool.submit_latest::<u32, (), _>("slider", || {}, |_| Ok(2));
        assert!(matches!(drain(&old).pop(), Some(JobEvent::Cancelled)));
        assert!(start.elapsed() < Duration::from_millis(500));
        assert!(matches!(drain(&new).pop(), Some(JobEvent::Finished(2))));
        // Another kind is not affected.
        let other = pool.submit_latest::<u32, (), _>("histogram", || {}, |_| Ok(3));
        assert!(matches!(drain(&other).pop(), Some(JobEvent::Finished(3))));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pool.running(), 0);
        drop(pool); // joins the workers; a hang here fails the test run
    }
}
