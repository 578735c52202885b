//! Identity calls: create users, issue and revoke tokens (the secret made
//! here, only its hash proposed), WhoAmI, a node's Join, and reads of this
//! replica's audit log.

use gpuctl_proto::v1 as pb;
use gpuctl_security::token;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::authz::{Action, Principal};
use super::Api;
use crate::state::identity::{Role, Token, TokenKind, User};
use crate::state::Command;

/// Entries `Audit` answers when the request names no limit.
const DEFAULT_AUDIT_LIMIT: usize = 100;
/// Longest accepted token description.
const MAX_DESCRIPTION: usize = 256;

impl Api {
    pub(super) async fn create_user_call(
        &self,
        md: &MetadataMap,
        r: pb::CreateUserRequest,
    ) -> Result<pb::UserResponse, Status> {
        let who = self.caller(md).await;
        let result = async {
            let who = who.as_ref().map_err(Clone::clone)?;
            self.check(who, &Action::CreateUser)?;
            let role = Role::parse(&r.role)
                .map_err(|e| Status::invalid_argument(format!("CreateUser: {e}")))?;
            let user = User {
                name: r.name.clone(),
                team: r.team,
                role,
                team_lead: r.team_lead,
                uid: r.uid,
                allow_root: r.allow_root,
                created: 0,
            };
            let object_json = self
                .proposer()
                .propose(Command::CreateUser {
                    user: Box::new(user),
                })
                .await?;
            Ok(pb::UserResponse { object_json })
        }
        .await;
        self.audit(&who, "create", "user", &r.name, &result);
        result
    }

    pub(super) async fn create_token_call(
        &self,
        md: &MetadataMap,
        r: pb::CreateTokenRequest,
    ) -> Result<pb::CreateTokenResponse, Status> {
        let who = self.caller(md).await;
        let join = match r.kind.as_str() {
            "" | "user" => Ok(false),
            "join" => Ok(true),
            other => Err(Status::invalid_argument(format!(
                "CreateToken: kind {other:?} is not \"user\" or \"join\""
            ))),
        };
        let mut name = r.user.clone();
        let result = async {
            let who = who.as_ref().map_err(Clone::clone)?;
            let join = join?;
            self.check(
                who,
                &Action::CreateToken {
                    user: &r.user,
                    join,
                },
            )?;
            if r.description.len() > MAX_DESCRIPTION {
                return Err(Status::invalid_argument(format!(
                    "CreateToken: description is {} bytes; at most {MAX_DESCRIPTION}",
                    r.description.len()
                )));
            }
            let (kind, subject) = if join {
                (TokenKind::Join, String::new())
            } else if r.user.is_empty() {
                match who {
                    Principal::User { name, .. } => (TokenKind::User, name.clone()),
                    _ => {
                        return Err(Status::invalid_argument(
                            "CreateToken: name the user (--user): this caller is no user",
                        ))
                    }
                }
            } else {
                (TokenKind::User, r.user.clone())
            };
            self.issue(kind, &subject, r.ttl_seconds, &r.description)
                .await
        }
        .await;
        if let Ok(t) = &result {
            name = t.id.clone();
        }
        self.audit(&who, "create", "token", &name, &result);
        result
    }

    /// Make a token, store its hash, and answer with the secret.
    async fn issue(
        &self,
        kind: TokenKind,
        subject: &str,
        ttl_seconds: u64,
        description: &str,
    ) -> Result<pb::CreateTokenResponse, Status> {
        let t = token::generate();
        let expires_ms = if ttl_seconds == 0 {
            0
        } else {
            gpuctl_common::now_ms().saturating_add(ttl_seconds.saturating_mul(1000))
        };
        let record = Token {
            id: t.id.clone(),
            subject: subject.to_string(),
            kind,
            hash: t.hash.clone(),
            created: 0,
            expires_ms,
            revoked: false,
            description: description.to_string(),
        };
        self.proposer()
            .propose(Command::CreateToken {
                token: Box::new(record),
            })
            .await?;
        Ok(pb::CreateTokenResponse {
            token: t.token,
            id: t.id,
            expires_unix_ms: expires_ms,
        })
    }

    pub(super) async fn revoke_token_call(
        &self,
        md: &MetadataMap,
        r: pb::RevokeTokenRequest,
    ) -> Result<pb::RevokeTokenResponse, Status> {
        let who = self.caller(md).await;
        // Accept the whole token's id part too (`gpuctl_<id>`).
        let id = r.id.trim().trim_start_matches(token::PREFIX).to_string();
        let result = async {
            let who = who.as_ref().map_err(Clone::clone)?;
            // Whose token it is, on current state.
            let checked = || {
                self.check(who, &Action::RevokeToken { id: &id })?;
                Ok(Command::RevokeToken { id: id.clone() })
            };
            self.proposer().checked_write(None, checked).await?;
            Ok(pb::RevokeTokenResponse {})
        }
        .await;
        self.audit(&who, "revoke", "token", &id, &result);
        result
    }

    pub(super) async fn who_am_i_call(
        &self,
        md: &MetadataMap,
    ) -> Result<pb::WhoAmIResponse, Status> {
        let who = self.allow(md, &Action::WhoAmI).await?;
        Ok(match who {
            Principal::Anonymous => pb::WhoAmIResponse {
                kind: "anonymous".into(),
                name: "anonymous".into(),
                role: Role::Admin.as_str().into(),
                team: String::new(),
                token_id: String::new(),
            },
            Principal::User {
                name,
                role,
                team,
                token_id,
                ..
            } => pb::WhoAmIResponse {
                kind: "user".into(),
                name,
                role: role.as_str().into(),
                team,
                token_id,
            },
            Principal::Node { name, token_id } => pb::WhoAmIResponse {
                kind: "node".into(),
                name,
                role: String::new(),
                team: String::new(),
                token_id,
            },
            Principal::Join { token_id } => pb::WhoAmIResponse {
                kind: "join".into(),
                name: String::new(),
                role: String::new(),
                team: String::new(),
                token_id,
            },
        })
    }

    pub(super) async fn audit_call(
        &self,
        md: &MetadataMap,
        r: pb::AuditRequest,
    ) -> Result<pb::AuditResponse, Status> {
        self.allow(md, &Action::Audit).await?;
        let limit = if r.limit == 0 {
            DEFAULT_AUDIT_LIMIT
        } else {
            r.limit as usize
        };
        let log = self.audit_log.clone();
        let entries = tokio::task::spawn_blocking(move || log.tail(limit, &r.subject))
            .await
            .map_err(|e| Status::internal(format!("reading the audit log: {e}")))?
            .map_err(|e| Status::internal(format!("reading the audit log: {e}")))?;
        let entries_json = entries
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect();
        Ok(pb::AuditResponse { entries_json })
    }

    /// `NodeService.Join`: a join token traded for the node's credential.
    pub(super) async fn join_call(
        &self,
        md: &MetadataMap,
        r: pb::JoinRequest,
    ) -> Result<pb::JoinResponse, Status> {
        let who = self.caller(md).await;
        let result = async {
            let who = who.as_ref().map_err(Clone::clone)?;
            self.check(who, &Action::Join)?;
            gpuctl_common::api::validate_name("node", &r.node)
                .map_err(|e| Status::invalid_argument(format!("Join: {e}")))?;
            let t = self
                .issue(TokenKind::Node, &r.node, 0, "node credential (join)")
                .await?;
            Ok(pb::JoinResponse { token: t.token })
        }
        .await;
        self.audit(&who, "join", "node", &r.node, &result);
        result
    }
}
