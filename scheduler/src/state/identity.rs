//! Users and tokens in the state machine: `CreateUser`, `CreateToken`,
//! `RevokeToken`. A token record keeps only the hash of the secret (made at
//! the API edge with `gpuctl_security::token`), so neither the log nor a
//! snapshot holds a usable credential.

use gpuctl_common::api::validate_name;
use serde::{Deserialize, Serialize};

use super::command::{Applied, ApplyError};
use super::objects::ObjKey;
use super::State;

/// What a user may do (see the API's authorization rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Submit to the queues their team may use, read everything, cancel and
    /// delete their own objects.
    #[default]
    User,
    /// Read only.
    Viewer,
    /// A gateway's service account: reads, and reports load.
    Gateway,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Viewer => "viewer",
            Role::Gateway => "gateway",
        }
    }

    /// Parse a role name; empty is `user`.
    pub fn parse(s: &str) -> Result<Role, String> {
        Ok(match s {
            "admin" => Role::Admin,
            "" | "user" => Role::User,
            "viewer" => Role::Viewer,
            "gateway" => Role::Gateway,
            other => {
                return Err(format!(
                    "role {other:?} is not one of admin, user, viewer, gateway"
                ))
            }
        })
    }
}

/// A person or service account of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub team: String,
    #[serde(default)]
    pub role: Role,
    /// May cancel and delete the objects of everyone in the same team.
    #[serde(default)]
    pub team_lead: bool,
    /// Unix uid the user's tasks run as; absent: looked up by name on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The user's tasks may run as root.
    #[serde(default)]
    pub allow_root: bool,
    /// Creation time, milliseconds since the Unix epoch (set when applied).
    #[serde(default)]
    pub created: u64,
}

/// What a token lets its bearer be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Acts as its user.
    User,
    /// Good only for `NodeService.Join`.
    Join,
    /// A node's credential: acts only as that node.
    Node,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::User => "user",
            TokenKind::Join => "join",
            TokenKind::Node => "node",
        }
    }
}

/// A token record: its public id and the hash of the whole token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    pub id: String,
    /// The user's name (user tokens), the node's (node credentials); empty
    /// for join tokens.
    pub subject: String,
    pub kind: TokenKind,
    /// SHA-256 of the whole token, hex.
    pub hash: String,
    /// Creation time, ms since the epoch (set when applied).
    #[serde(default)]
    pub created: u64,
    /// Expiry, ms since the epoch; 0: never.
    #[serde(default)]
    pub expires_ms: u64,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl Token {
    /// The token as readers see it: everything but the hash.
    pub fn view(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("hash");
        }
        v
    }

    /// Whether the token has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && now_ms >= self.expires_ms
    }
}

impl State {
    pub(super) fn create_user(&mut self, now: u64, user: &User) -> Result<Applied, ApplyError> {
        validate_name("name", &user.name).map_err(|e| ApplyError::Invalid(format!("user {e}")))?;
        if !user.team.is_empty() {
            validate_name("team", &user.team)
                .map_err(|e| ApplyError::Invalid(format!("user {:?}: {e}", user.name)))?;
        }
        if self.users.contains_key(&user.name) {
            return Err(ApplyError::AlreadyExists {
                kind: "user",
                name: user.name.clone(),
            });
        }
        let mut u = user.clone();
        u.created = now;
        self.users.insert(u.name.clone(), u.clone());
        self.dirty.insert(ObjKey::User(u.name.clone()));
        Ok(Applied::User(Box::new(u)))
    }

    pub(super) fn create_token(&mut self, now: u64, token: &Token) -> Result<Applied, ApplyError> {
        if token.id.is_empty() || !token.id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApplyError::Invalid(format!(
                "token id {:?} is not hex",
                token.id
            )));
        }
        if self.tokens.contains_key(&token.id) {
            return Err(ApplyError::AlreadyExists {
                kind: "token",
                name: token.id.clone(),
            });
        }
        match token.kind {
            TokenKind::User if !self.users.contains_key(&token.subject) => {
                return Err(ApplyError::NotFound {
                    kind: "user",
                    name: token.subject.clone(),
                });
            }
            TokenKind::Node => validate_name("node", &token.subject)
                .map_err(|e| ApplyError::Invalid(format!("node credential: {e}")))?,
            _ => {}
        }
        let mut t = token.clone();
        t.created = now;
        t.revoked = false;
        self.tokens.insert(t.id.clone(), t.clone());
        self.dirty.insert(ObjKey::Token(t.id.clone()));
        Ok(Applied::Token(Box::new(t)))
    }

    pub(super) fn revoke_token(&mut self, id: &str) -> Result<Applied, ApplyError> {
        let t = self
            .tokens
            .get_mut(id)
            .ok_or_else(|| ApplyError::NotFound {
                kind: "token",
                name: id.to_string(),
            })?;
        t.revoked = true;
        let t = t.clone();
        self.dirty.insert(ObjKey::Token(id.to_string()));
        Ok(Applied::Token(Box::new(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Command, Envelope};

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            team: "nlp".into(),
            role: Role::User,
            team_lead: false,
            uid: Some(1000),
            allow_root: false,
            created: 0,
        }
    }

    fn token(id: &str, subject: &str, kind: TokenKind) -> Token {
        Token {
            id: id.into(),
            subject: subject.into(),
            kind,
            hash: "ab".repeat(32),
            created: 0,
            expires_ms: 0,
            revoked: false,
            description: String::new(),
        }
    }

    #[test]
    fn users_and_tokens_are_created_revoked_and_survive_a_restart() {
        let mut s = State::default();
        let u = Command::CreateUser {
            user: Box::new(user("alice")),
        };
        s.apply(1, &Envelope::new(10, u.clone())).unwrap();
        assert_eq!(s.users["alice"].created, 10);
        assert!(matches!(
            s.apply(2, &Envelope::new(11, u)),
            Err(ApplyError::AlreadyExists { .. })
        ));
        let t = Command::CreateToken {
            token: Box::new(token("0123456789ab", "alice", TokenKind::User)),
        };
        s.apply(3, &Envelope::new(12, t)).unwrap();
        let orphan = Command::CreateToken {
            token: Box::new(token("0123456789ac", "nobody", TokenKind::User)),
        };
        let err = s.apply(4, &Envelope::new(13, orphan)).unwrap_err();
        assert_eq!(err.to_string(), "user \"nobody\" not found");
        let revoke = Command::RevokeToken {
            id: "0123456789ab".into(),
        };
        s.apply(5, &Envelope::new(14, revoke)).unwrap();
        assert!(s.tokens["0123456789ab"].revoked);
        assert!(s.tokens["0123456789ab"].view().get("hash").is_none());

        let back = State::from_stored(&s.stored_objects()).unwrap();
        assert_eq!(back.users, s.users);
        assert_eq!(back.tokens, s.tokens);
    }

    #[test]
    fn roles_parse_and_name_the_bad_one() {
        assert_eq!(Role::parse(""), Ok(Role::User));
        assert_eq!(Role::parse("gateway"), Ok(Role::Gateway));
        assert_eq!(
            Role::parse("root"),
            Err("role \"root\" is not one of admin, user, viewer, gateway".into())
        );
    }
}
