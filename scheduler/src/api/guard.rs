//! The API edge's checks, as every handler uses them: who the caller is
//! ([`Api::caller`]), whether it may act ([`Api::check`]), and the audit
//! record of a mutating call ([`Api::audit`]).

use tonic::metadata::MetadataMap;
use tonic::Status;

use super::audit::Entry;
use super::auth::authenticate;
use super::authz::{authorize, Action, Principal};
use super::Api;

impl Api {
    /// The caller of a request. A token this replica does not know yet may
    /// have been created a moment ago on the leader: the check is repeated
    /// once after catching up.
    pub(super) async fn caller(&self, md: &MetadataMap) -> Result<Principal, Status> {
        let first = authenticate(&self.opts.auth, md, &self.state(), gpuctl_common::now_ms());
        match first {
            Err(e)
                if e.code() == tonic::Code::Unauthenticated && md.contains_key("authorization") =>
            {
                if self.proposer().read_barrier().await.is_err() {
                    return Err(e);
                }
                authenticate(&self.opts.auth, md, &self.state(), gpuctl_common::now_ms())
            }
            r => r,
        }
    }

    /// Whether `who` may do `action` now; PERMISSION_DENIED naming the rule
    /// when not.
    pub(super) fn check(&self, who: &Principal, action: &Action) -> Result<(), Status> {
        authorize(who, action, &self.state()).map_err(|d| Status::permission_denied(d.0))
    }

    /// [`Api::caller`] then [`Api::check`].
    pub(super) async fn allow(
        &self,
        md: &MetadataMap,
        action: &Action<'_>,
    ) -> Result<Principal, Status> {
        let who = self.caller(md).await?;
        self.check(&who, action)?;
        Ok(who)
    }

    /// Record a mutating call's outcome in this replica's audit log.
    pub(super) fn audit<T>(
        &self,
        who: &Result<Principal, Status>,
        verb: &str,
        kind: &str,
        name: &str,
        r: &Result<T, Status>,
    ) {
        let subject = match who {
            Ok(p) => p.subject(),
            Err(_) => "",
        };
        self.audit_log
            .record(&Entry::of(subject, verb, kind, name, r));
    }
}

/// The caller's credential on a request forwarded to another replica.
pub(super) fn forwarded<T>(md: &MetadataMap, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(v) = md.get("authorization") {
        req.metadata_mut().insert("authorization", v.clone());
    }
    req
}
