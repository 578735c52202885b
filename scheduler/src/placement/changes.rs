//! The model's record of node changes, which the memo's per-shape rank
//! index follows to re-rank exactly the nodes that changed.

/// Record of node changes: a version per node, bumped on every change, and
/// the log of changed nodes since `base`. Each model has an id of its own
/// (a clone gets a new one), so that a memo shared by clones never takes
/// one model's versions for another's.
#[derive(Debug)]
pub(crate) struct Changes {
    pub id: u64,
    /// Per node: the clock when it last changed (0: never).
    pub version: Vec<u64>,
    clock: u64,
    /// Nodes changed, oldest first; entry `k` is change number `base + k`.
    pub log: Vec<usize>,
    pub base: u64,
}

impl Changes {
    fn fresh_id() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Change number of the next change: the log holds `base..end()`.
    pub fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    pub(crate) fn touch(&mut self, i: usize) {
        self.clock += 1;
        if self.version.len() <= i {
            self.version.resize(i + 1, 0);
        }
        self.version[i] = self.clock;
        // Bounded: a reader that fell behind `base` revisits every node.
        if self.log.len() >= 4096 && self.log.len() >= 2 * self.version.len() {
            self.base += self.log.len() as u64;
            self.log.clear();
        }
        self.log.push(i);
    }
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            id: Changes::fresh_id(),
            version: Vec::new(),
            clock: 0,
            log: Vec::new(),
            base: 0,
        }
    }
}

impl Clone for Changes {
    /// Same versions, but a model of its own.
    fn clone(&self) -> Self {
        Changes {
            id: Changes::fresh_id(),
            version: self.version.clone(),
            clock: self.clock,
            log: self.log.clone(),
            base: self.base,
        }
    }
}

impl PartialEq for Changes {
    fn eq(&self, _: &Changes) -> bool {
        true
    }
}
