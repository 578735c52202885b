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
            Err(e) if e.code() == tonic::Code::Unauthenticated && self.unknown_token(md) => {
                if self.proposer().read_barrier().await.is_err() {
                    return Err(e);
                }
                authenticate(&self.opts.auth, md, &self.state(), gpuctl_common::now_ms())
            }
            r => r,
        }
    }

    /// Whether the call carries a well-formed token whose id this replica
    /// has no record of (yet), or an ID token.
    fn unknown_token(&self, md: &MetadataMap) -> bool {
        let Some(t) = md
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| gpuctl_security::token::from_bearer(v).ok())
        else {
            return false;
        };
        // An ID token may name a user created a moment ago.
        if gpuctl_security::oidc::looks_like_jwt(t) {
            return self.opts.auth.oidc.is_some();
        }
        gpuctl_security::token::id_of(t)
            .ok()
            .is_some_and(|id| !self.state().tokens.contains_key(id))
    }

    /// Whether `who` may do `action` now; PERMISSION_DENIED naming the rule
    /// when not.
    pub(super) fn check(&self, who: &Principal, action: &Action) -> Result<(), Status> {
        authorize(who, action, &self.state()).map_err(|d| Status::permission_denied(d.0))
    }

    /// [`Api::check`], judged again after catching up with the leader when
    /// this replica would refuse: a rule that reads state (which node runs
    /// a task, who owns an object) must not refuse on a lagging copy, such
    /// as a replica restarted a moment ago that has not yet applied the
    /// binding a node reports on.
    async fn check_current(&self, who: &Principal, action: &Action<'_>) -> Result<(), Status> {
        match self.check(who, action) {
            Err(e) if e.code() == tonic::Code::PermissionDenied => {
                // Without a leader to catch up with, the refusal is not
                // final: the caller is told to try again.
                self.proposer().read_barrier().await?;
                self.check(who, action)
            }
            r => r,
        }
    }

    /// [`Api::caller`] then [`Api::check`] on current state.
    pub async fn allow(&self, md: &MetadataMap, action: &Action<'_>) -> Result<Principal, Status> {
        let who = self.caller(md).await?;
        self.check_current(&who, action).await?;
        Ok(who)
    }

    /// [`Api::allow`] for the node service's frequent calls: only a
    /// refusal is recorded in the audit log (`verb` on `kind/name`).
    pub(super) async fn allow_or_audit(
        &self,
        md: &MetadataMap,
        action: &Action<'_>,
        (verb, kind, name): (&str, &str, &str),
    ) -> Result<Principal, Status> {
        let who = self.caller(md).await;
        let r = match &who {
            Ok(w) => self.check_current(w, action).await.map(|()| w.clone()),
            Err(e) => Err(e.clone()),
        };
        if r.is_err() {
            self.audit(&who, verb, kind, name, &r);
        }
        r
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
