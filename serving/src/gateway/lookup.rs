//! Asking the scheduler again about an endpoint the gateway has not routed
//! yet, so that one applied a moment ago is found before a 404.

use std::sync::atomic::Ordering;

use super::{Gateway, LOOKUP_TIMEOUT};

impl Gateway {
    /// Called by whoever keeps the routes from a scheduler: from now on a
    /// request for an unknown endpoint asks for a fresh look before 404.
    pub fn follow_scheduler(&self) {
        self.lookup.following.store(true, Ordering::Relaxed);
    }

    /// Resolves when a request wants the routes looked up again now.
    pub async fn lookup_wanted(&self) {
        self.lookup.wanted.notified().await
    }

    /// The lookups asked for so far; pass it to [`Gateway::looked_up`] once a
    /// look that starts now has updated the routes.
    pub fn lookups_asked(&self) -> u64 {
        self.lookup.asked.load(Ordering::SeqCst)
    }

    /// The routes now reflect a look that started after lookup `asked`.
    pub fn looked_up(&self, asked: u64) {
        self.lookup.answered.send_if_modified(|a| {
            let newer = asked > *a;
            if newer {
                *a = asked;
            }
            newer
        });
    }

    /// Whether `endpoint` is routed, after a fresh look when it is not and a
    /// scheduler is followed (bounded by [`LOOKUP_TIMEOUT`]).
    pub(super) async fn known_after_lookup(&self, endpoint: &str) -> bool {
        if !self.lookup.following.load(Ordering::Relaxed) {
            return false;
        }
        let mut answered = self.lookup.answered.subscribe();
        let n = self.lookup.asked.fetch_add(1, Ordering::SeqCst) + 1;
        self.lookup.wanted.notify_one();
        let look = answered.wait_for(|a| *a >= n || self.lock().contains_key(endpoint));
        let _ = tokio::time::timeout(LOOKUP_TIMEOUT, look).await;
        self.lock().contains_key(endpoint)
    }
}
