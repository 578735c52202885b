//! Setting an endpoint's canary split (see `split.rs`) from the routes.

use super::Gateway;

impl Gateway {
    /// While a canary rolls out, `Some((percent, urls))`: that share of
    /// `endpoint`'s requests goes to the replicas at `urls` (which must also
    /// be among its replicas), the rest to the others. `None`: one group.
    pub fn set_split(&self, endpoint: &str, split: Option<(u32, Vec<String>)>) {
        let mut eps = self.lock();
        let Some(ep) = eps.get_mut(endpoint) else {
            return;
        };
        ep.split = match (split, ep.split.take()) {
            (None, _) => None,
            (Some((p, urls)), Some(old)) if old.same(p, &urls) => Some(old),
            (Some((p, urls)), old) => Some(super::split::Split::new(
                p,
                urls,
                old.map_or(0, |o| o.count()),
            )),
        };
    }
}
