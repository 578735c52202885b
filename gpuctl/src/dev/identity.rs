//! The credentials of a `gpuctl dev` cluster, all kept in the state dir
//! (mode 0600) so that a restart reuses them: the bootstrap admin token the
//! schedulers start with, the join token the nodes trade for their own
//! credentials, the gateway's token, and a token of an admin user named
//! after the Unix user running `gpuctl dev`, which goes into the context.

use std::path::Path;

use gpuctl_proto::v1 as pb;
use tonic::Code;

use crate::client::{Bearer, CallError, Conn};
use crate::config;
use crate::dev::plan::Plan;
use crate::error::{Error, Result};

/// Read a token file; `None` when it is missing or empty.
fn read_token(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

fn write_token(path: &Path, token: &str) -> Result<()> {
    config::write_private(path, format!("{token}\n").as_bytes())
}

/// The bootstrap admin token: `STATE_DIR/admin.token`, made on first use.
pub(super) fn ensure_admin_token(plan: &Plan) -> Result<String> {
    let path = plan.admin_token_file();
    if let Some(t) = read_token(&path)? {
        return Ok(t);
    }
    let t = gpuctl_security::token::generate().token;
    write_token(&path, &t)?;
    Ok(t)
}

/// The replicas' encryption configuration for Secret values:
/// `STATE_DIR/encryption.yaml` (mode 0600), made with one random key on
/// first use and checked on every start.
pub(super) fn ensure_encryption_config(plan: &Plan) -> Result<()> {
    let path = plan.encryption_config_file();
    if !path.exists() {
        let text = gpuctl_security::sealing::new_config("dev-1");
        config::write_private(&path, text.as_bytes())?;
    }
    gpuctl_security::sealing::Keyring::read(&path).map_err(Error::Other)?;
    Ok(())
}

/// A connection to the replicas as the bootstrap admin.
pub(super) fn admin_conn(urls: &[String], admin_token: &str) -> Result<Conn> {
    Ok(Conn::new(urls.to_vec()).with_bearer(Bearer::new(Some(admin_token), "admin.token")?))
}

fn call_error(e: CallError, urls: &[String]) -> Error {
    e.into_error(None, urls)
}

/// The join token in `STATE_DIR/join.token`, made (or replaced, when the
/// cluster no longer knows it) through `admin`.
pub(super) async fn ensure_join_token(plan: &Plan, admin: &mut Conn) -> Result<()> {
    let path = plan.join_token_file();
    if let Some(t) = read_token(&path)? {
        if let Ok(id) = gpuctl_security::token::id_of(&t) {
            let req = pb::GetRequest {
                kind: "tokens".into(),
                name: id.to_string(),
                ..Default::default()
            };
            let known = admin
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.get(req).await }
                })
                .await;
            let usable = known.is_ok_and(|r| {
                r.into_inner().objects_json.iter().any(|j| {
                    serde_json::from_str::<serde_json::Value>(j).is_ok_and(|v| {
                        v["kind"] == "join"
                            && v["revoked"] != true
                            && v["expiresMs"].as_u64().unwrap_or(0) == 0
                    })
                })
            });
            if usable {
                return Ok(());
            }
        }
    }
    let t = create_token(admin, "", "join", "gpuctl dev nodes").await?;
    write_token(&path, &t)
}

/// A token of user `name` in `file`, checked with WhoAmI; when missing or
/// no longer valid, the user is created (if absent) with `user` and a new
/// token issued. Returns the token.
pub(super) async fn ensure_user_token(
    admin: &mut Conn,
    file: &Path,
    user: pb::CreateUserRequest,
    description: &str,
) -> Result<String> {
    let urls = admin.urls().to_vec();
    if let Some(t) = read_token(file)? {
        let mut conn = Conn::new(urls.clone()).with_bearer(Bearer::new(Some(&t), "a token file")?);
        let who = conn
            .call(|mut c| async move { c.who_am_i(pb::WhoAmIRequest {}).await })
            .await;
        if who.is_ok_and(|w| w.into_inner().name == user.name) {
            return Ok(t);
        }
    }
    let name = user.name.clone();
    let created = admin
        .call(|mut c| {
            let req = user.clone();
            async move { c.create_user(req).await }
        })
        .await;
    match created {
        Ok(_) => {}
        Err(CallError::Status(s)) if s.code() == Code::AlreadyExists => {}
        Err(e) => return Err(call_error(e, &urls)),
    }
    let t = create_token(admin, &name, "user", description).await?;
    write_token(file, &t)?;
    Ok(t)
}

async fn create_token(
    admin: &mut Conn,
    user: &str,
    kind: &str,
    description: &str,
) -> Result<String> {
    let urls = admin.urls().to_vec();
    let req = pb::CreateTokenRequest {
        user: user.into(),
        ttl_seconds: 0,
        kind: kind.into(),
        description: description.into(),
    };
    let r = admin
        .call(|mut c| {
            let req = req.clone();
            async move { c.create_token(req).await }
        })
        .await
        .map_err(|e| call_error(e, &urls))?;
    Ok(r.into_inner().token)
}

/// The gpuctl user for the Unix user running `gpuctl dev`: its name (made
/// a valid object name, else "dev"), uid, and root permission for root.
pub(super) fn local_user() -> pb::CreateUserRequest {
    use std::os::unix::fs::MetadataExt as _;
    // The owner of our own /proc entry is our real uid.
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let unix_name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| (uid == Some(0)).then(|| "root".to_string()))
        .unwrap_or_default();
    let name = unix_name.to_ascii_lowercase().replace(['_', '.'], "-");
    let name = if gpuctl_common::api::validate_name("name", &name).is_ok() {
        name
    } else {
        "dev".to_string()
    };
    pb::CreateUserRequest {
        name,
        team: String::new(),
        role: "admin".into(),
        team_lead: false,
        uid,
        allow_root: uid == Some(0),
    }
}

/// The gateway's service account.
pub(super) fn gateway_user() -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        name: "gateway".into(),
        team: String::new(),
        role: "gateway".into(),
        team_lead: false,
        uid: None,
        allow_root: false,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn the_admin_token_and_the_encryption_key_are_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let env = crate::config::EnvVars::default();
        let flags = crate::cli::DevFlags {
            state_dir: Some(dir.path().to_path_buf()),
            gpus: vec![],
            nodes: 1,
            scheduler_port: 0,
            example: false,
            replicas: 1,
            restart_delay: "2s".parse().unwrap(),
            gateway_port: 0,
            cold_start_timeout: "60s".parse().unwrap(),
            insecure: false,
            no_auth: false,
            task_isolation: crate::cli::TaskIsolation::On,
            runtime: crate::cli::TaskRuntime::Process,
            cordon_after_unhealthy_gpus: 0,
        };
        let plan = Plan::from_flags(flags, &env).unwrap();
        let first = ensure_admin_token(&plan).unwrap();
        assert!(gpuctl_security::token::id_of(&first).is_ok(), "{first}");
        let meta = std::fs::metadata(plan.admin_token_file()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(ensure_admin_token(&plan).unwrap(), first);

        ensure_encryption_config(&plan).unwrap();
        let path = plan.encryption_config_file();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        let keys = gpuctl_security::sealing::Keyring::read(&path).unwrap();
        assert_eq!(keys.write_key(), Some("dev-1"));
        ensure_encryption_config(&plan).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "kept across starts"
        );
        std::fs::write(&path, "kind: Nope\n").unwrap();
        let e = ensure_encryption_config(&plan).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
    }

    #[test]
    fn the_local_user_is_a_valid_admin_name() {
        let u = local_user();
        assert!(gpuctl_common::api::validate_name("name", &u.name).is_ok());
        assert_eq!(u.role, "admin");
        assert_eq!(u.allow_root, u.uid == Some(0));
    }
}
