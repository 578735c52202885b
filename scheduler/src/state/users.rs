//! Users and tokens in the state machine: `CreateUser`, `CreateToken`,
//! `RevokeToken` (the records are in `identity.rs`).

use gpuctl_common::api::validate_name;

use super::command::{Applied, ApplyError};
use super::identity::{Token, TokenKind, User};
use super::objects::ObjKey;
use super::State;

/// A user's name: as an object's (lowercase letters, digits, '-'), or as an
/// identity provider spells people (`alice@example.com`, `oidc:alice`,
/// `a.b_c`): '.', '_', '@' and ':' inside too, at most 128 characters.
fn validate_user_name(name: &str) -> Result<(), String> {
    let inner = |c: char| matches!(c, '-' | '.' | '_' | '@' | ':');
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || inner(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?} is not valid: use at most 128 lowercase letters, digits and \
             '-', '.', '_', '@', ':' (as in alice, alice@example.com or oidc:alice), \
             starting and ending with a letter or digit"
        ))
    }
}

impl State {
    pub(super) fn create_user(&mut self, now: u64, user: &User) -> Result<Applied, ApplyError> {
        validate_user_name(&user.name).map_err(ApplyError::Invalid)?;
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
    use crate::state::identity::{Role, Token, TokenKind, User};
    use crate::state::{Command, Envelope};

    #[test]
    fn user_names_may_be_an_identity_provider_s_spelling() {
        for ok in ["alice", "alice@example.com", "oidc:alice", "a.b_c-d", "x"] {
            validate_user_name(ok).unwrap();
        }
        for bad in [
            "",
            "Alice",
            "@alice",
            "alice.",
            "al ice",
            "al/ice",
            &"a".repeat(129),
        ] {
            let e = validate_user_name(bad).unwrap_err();
            assert!(e.starts_with("user name"), "{e}");
        }
    }

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
}
