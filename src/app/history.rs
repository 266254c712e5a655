//! Undo and redo of the compression configuration. A change becomes one step once it
//! settles — the pointer released, no text field being typed in — so dragging a
//! slider from 0 to 80% is one step, not eighty.

use crate::compress::config::Config;

/// Steps kept; older ones are forgotten.
const DEPTH: usize = 200;

/// The configurations before and after the current one.
#[derive(Debug, Default)]
pub struct History {
    past: Vec<Config>,
    future: Vec<Config>,
    /// The last settled configuration (what undo returns from).
    settled: Config,
}

impl History {
    /// Start over from `config` (another model was opened).
    pub fn reset(&mut self, config: &Config) {
        self.past.clear();
        self.future.clear();
        self.settled = config.clone();
    }

    /// Call once per frame after the controls ran; `busy` while a drag or an edit is
    /// in progress.
    pub fn observe(&mut self, current: &Config, busy: bool) {
        if busy || *current == self.settled {
            return;
        }
        self.past
            .push(std::mem::replace(&mut self.settled, current.clone()));
        if self.past.len() > DEPTH {
            self.past.remove(0);
        }
        self.future.clear();
    }

    pub fn can_undo(&self) -> bool {
        !self.past.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.future.is_empty()
    }

    /// Go one step back; `current` becomes the configuration before.
    pub fn undo(&mut self, current: &mut Config) -> bool {
        let Some(previous) = self.past.pop() else {
            return false;
        };
        // An unsettled change (mid-drag) is dropped, as text editors do.
        self.future
            .push(std::mem::replace(&mut self.settled, previous.clone()));
        *current = previous;
        true
    }

    /// Go one step forward again.
    pub fn redo(&mut self, current: &mut Config) -> bool {
        let Some(next) = self.future.pop() else {
            return false;
        };
        self.past
            .push(std::mem::replace(&mut self.settled, next.clone()));
        *current = next;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pct: f64) -> Config {
        Config {
            sparsity_pct: pct,
            ..Config::default()
        }
    }

    #[test]
    fn a_drag_is_one_step_and_redo_is_cleared_by_a_new_change() {
        let mut h = History::default();
        let mut c = at(0.0);
        h.reset(&c);
        for pct in [10.0, 40.0, 80.0] {
            c = at(pct);
            h.observe(&c, true); // dragging
        }
        h.observe(&c, false); // released
        c = at(90.0);
        h.observe(&c, false);
        assert!(h.undo(&mut c));
        assert_eq!(c, at(80.0));
        assert!(h.undo(&mut c));
        assert_eq!(c, at(0.0));
        assert!(!h.undo(&mut c));
        assert!(h.redo(&mut c));
        assert_eq!(c, at(80.0));
        c = at(50.0);
        h.observe(&c, false);
        assert!(!h.can_redo(), "a new change forgets what was undone");
        assert!(h.undo(&mut c));
        assert_eq!(c, at(80.0));
    }
}
