//! The CLI's one Ctrl-C handler. A process may set only one, so every command shares
//! it: by default Ctrl-C ends the process at once (exit code 130) after deleting any
//! output still being written, so an interrupted export leaves nothing behind; a
//! command that stops cooperatively (a sweep keeps its points, training its best
//! epoch) polls the flag from [`cooperate`] instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static COOPERATIVE: AtomicBool = AtomicBool::new(false);

/// Install the handler (once per process).
pub fn install() -> Arc<AtomicBool> {
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        // If the handler cannot be installed, Ctrl-C keeps its default (the process
        // ends; an unfinished output keeps its recognisable `.slimscope-partial.` name).
        let _ = ctrlc::set_handler(move || {
            seen.store(true, Ordering::SeqCst);
            let removed = crate::export::remove_partial_outputs();
            if removed > 0 || !COOPERATIVE.load(Ordering::SeqCst) {
                if removed > 0 {
                    eprintln!("interrupted: the unfinished output was removed");
                } else {
                    eprintln!("interrupted");
                }
                std::process::exit(130);
            }
        });
        flag
    })
    .clone()
}

/// The flag a long command polls to stop early and keep what it has finished. From
/// this call on, Ctrl-C only sets it (unless an output is being written).
pub fn cooperate() -> Arc<AtomicBool> {
    let flag = install();
    COOPERATIVE.store(true, Ordering::SeqCst);
    flag
}
