//! Users and token records as the state stores them. A token record keeps
//! only the hash of the secret (made at the API edge with
//! `gpuctl_security::token`), so neither the log nor a snapshot holds a
//! usable credential. The commands that change them are in `users.rs`.

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
