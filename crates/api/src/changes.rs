//! Wake-ups for waiters on container state (`wait?condition=`): a start
//! and a removal are announced here, so a waiter blocks on a condition
//! variable instead of polling the state files. The exit codes of removed
//! containers are kept (ids are never reused) so a `removed` waiter that
//! arrives late still answers with the container's last code.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How many removed containers' codes are kept.
const KEEP: usize = 256;

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    removed: VecDeque<(String, i32)>,
}

/// The daemon's change announcements.
#[derive(Debug, Default)]
pub struct Changes {
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl Changes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current generation (read before looking at the state).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Something changed (a container started): wakes every waiter.
    pub fn changed(&self) {
        self.lock().generation += 1;
        self.cv.notify_all();
    }

    /// Container `id` was removed; its last exit code was `code`.
    pub fn removed(&self, id: &str, code: i32) {
        let mut g = self.lock();
        g.removed.retain(|(i, _)| i != id);
        g.removed.push_back((id.to_string(), code));
        while g.removed.len() > KEEP {
            g.removed.pop_front();
        }
        g.generation += 1;
        drop(g);
        self.cv.notify_all();
    }

    /// The exit code of `id` if it was removed.
    pub fn removed_code(&self, id: &str) -> Option<i32> {
        self.lock().removed.iter().find(|(i, _)| i == id).map(|(_, c)| *c)
    }

    /// Blocks until the generation moves past `seen`, or `limit` passes.
    pub fn wait(&self, seen: u64, limit: Duration) {
        let g = self.lock();
        let _ = self.cv.wait_timeout_while(g, limit, |i| i.generation == seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_removal_wakes_a_waiter_at_once() {
        let c = Arc::new(Changes::default());
        let seen = c.generation();
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            c2.removed("abc", 3);
        });
        let start = std::time::Instant::now();
        c.wait(seen, Duration::from_secs(10));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(c.removed_code("abc"), Some(3));
        assert_eq!(c.removed_code("other"), None);
        t.join().expect("thread");
    }
}
