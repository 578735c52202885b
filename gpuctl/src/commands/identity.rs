//! Identity commands: `gpuctl login`, `gpuctl whoami`, `gpuctl admin
//! create-user|create-token|revoke-token`, `gpuctl audit`, and the tables of
//! `gpuctl get users|tokens`.

use std::io::BufRead as _;
use std::path::Path;

use gpuctl_proto::v1 as pb;
use serde::Deserialize;

use crate::cli::AdminCommand;
use crate::client::{Bearer, Conn, Target};
use crate::commands::ctx::{decode, Ctx};
use crate::config::{self, Context};
use crate::error::{Error, Result};
use crate::render::format_time;
use crate::stdout::out;

/// `gpuctl login`: check `token` (or the first line of stdin) with WhoAmI,
/// then store it in the context file (mode 0600).
pub(crate) async fn cmd_login(
    cx: &mut Ctx,
    token: Option<String>,
    config_dir: Option<&Path>,
) -> Result<u8> {
    let token = match token {
        Some(t) => t,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| Error::io("cannot read the token from stdin", e))?;
            line
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err(Error::Usage(
            "no token: pass --token TOKEN or write it on stdin (gpuctl login < token-file)".into(),
        ));
    }
    let dir = config_dir.ok_or_else(|| {
        Error::Other("no config dir to store the token in: set GPUCTL_CONFIG_DIR or HOME".into())
    })?;
    let urls = cx.urls().to_vec();
    let mut conn = Conn::new(urls.clone()).with_bearer(Bearer::new(Some(&token), "login")?);
    let who = conn
        .call(|mut c| async move { c.who_am_i(pb::WhoAmIRequest {}).await })
        .await
        .map_err(|e| e.into_error(None, &urls))?
        .into_inner();
    let mut ctx = config::read_context(dir)?.unwrap_or_else(|| Context {
        server: urls.join(","),
        state_dir: None,
        gateway: None,
        token: None,
        ca: crate::client::configured_ca(),
    });
    ctx.token = Some(token);
    let path = config::write_context(dir, &ctx)?;
    out(&format!(
        "logged in as {}; token stored in {}\n",
        describe_who(&who),
        path.display()
    ))?;
    Ok(0)
}

fn describe_who(w: &pb::WhoAmIResponse) -> String {
    let mut s = match w.kind.as_str() {
        "user" | "node" => format!("{} {}", w.kind, w.name),
        other => other.to_string(),
    };
    let mut details = Vec::new();
    if !w.role.is_empty() {
        details.push(format!("role {}", w.role));
    }
    if !w.team.is_empty() {
        details.push(format!("team {}", w.team));
    }
    if !w.token_id.is_empty() {
        details.push(format!("token {}", w.token_id));
    }
    if !details.is_empty() {
        s.push_str(&format!(" ({})", details.join(", ")));
    }
    s
}

pub(crate) async fn cmd_whoami(cx: &mut Ctx) -> Result<u8> {
    let who = cx
        .call(None, |mut c| async move {
            c.who_am_i(pb::WhoAmIRequest {}).await
        })
        .await?
        .into_inner();
    out(&format!("{}\n", describe_who(&who)))?;
    Ok(0)
}

pub(crate) async fn cmd_admin(cx: &mut Ctx, command: AdminCommand) -> Result<u8> {
    match command {
        AdminCommand::CreateUser {
            name,
            team,
            role,
            team_lead,
            uid,
            allow_root,
        } => {
            let req = pb::CreateUserRequest {
                name: name.clone(),
                team,
                role,
                team_lead,
                uid,
                allow_root,
            };
            cx.call(None, |mut c| {
                let req = req.clone();
                async move { c.create_user(req).await }
            })
            .await?;
            out(&format!("user/{name} created\n"))?;
        }
        AdminCommand::CreateToken {
            user,
            ttl,
            join,
            description,
        } => {
            let req = pb::CreateTokenRequest {
                user: user.unwrap_or_default(),
                ttl_seconds: ttl.map(|t| t.duration.as_secs().max(1)).unwrap_or(0),
                kind: if join { "join" } else { "user" }.into(),
                description,
            };
            let t = cx
                .call(None, |mut c| {
                    let req = req.clone();
                    async move { c.create_token(req).await }
                })
                .await?
                .into_inner();
            out(&format!("{}\n", t.token))?;
            let expires = if t.expires_unix_ms == 0 {
                "never expires".to_string()
            } else {
                format!("expires {}", format_time(t.expires_unix_ms))
            };
            eprintln!("token id {} ({expires}); it is shown only once", t.id);
        }
        // Offline: `dispatch` runs it before any connection.
        command @ AdminCommand::NodeCa { .. } => {
            super::node_ca::cmd_node_ca(command)?;
        }
        AdminCommand::RevokeToken { id } => {
            let req = pb::RevokeTokenRequest { id: id.clone() };
            cx.call(
                Some(Target {
                    kind: "token",
                    name: &id,
                }),
                |mut c| {
                    let req = req.clone();
                    async move { c.revoke_token(req).await }
                },
            )
            .await?;
            out(&format!("token/{id} revoked\n"))?;
        }
    }
    Ok(0)
}

/// One audit log entry as the scheduler sends it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEntry {
    time_ms: u64,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    result: String,
    #[serde(default)]
    message: String,
}

/// `gpuctl audit`: the log of every replica (the addresses given and those
/// ClusterStatus names), merged by time.
pub(crate) async fn cmd_audit(cx: &mut Ctx, limit: u32, user: Option<String>) -> Result<u8> {
    let mut urls: Vec<String> = cx.urls().to_vec();
    if let Ok(st) = cx
        .call(None, |mut c| async move {
            c.cluster_status(pb::ClusterStatusRequest {}).await
        })
        .await
    {
        for a in st.into_inner().addresses.values() {
            if let Ok(u) = config::normalize_url(a) {
                if !urls.contains(&u) {
                    urls.push(u);
                }
            }
        }
    }
    let req = pb::AuditRequest {
        limit,
        subject: user.unwrap_or_default(),
    };
    let mut entries = Vec::new();
    let mut answered = 0;
    let mut failed = Vec::new();
    for u in &urls {
        let mut one = Conn::with_policy(
            vec![u.clone()],
            crate::client::RetryPolicy {
                per_address: 1,
                ..Default::default()
            },
        )
        .with_bearer(cx.conn.bearer().clone());
        match one
            .call(|mut c| {
                let req = req.clone();
                async move { c.audit(req).await }
            })
            .await
        {
            Ok(r) => {
                answered += 1;
                for j in r.into_inner().entries_json {
                    entries.push(decode::<AuditEntry>(&j, "audit entry")?);
                }
            }
            Err(e) => failed.push((u.clone(), e.into_error(None, std::slice::from_ref(u)))),
        }
    }
    if answered == 0 {
        return Err(failed
            .pop()
            .map(|(_, e)| e)
            .unwrap_or_else(|| Error::Other("no replica to ask".into())));
    }
    for (u, e) in failed {
        eprintln!("warning: {u} did not answer, its entries are missing: {e}");
    }
    entries.sort_by_key(|e| e.time_ms);
    let skip = entries.len().saturating_sub(limit as usize);
    out(&audit_table(&entries[skip..]))?;
    Ok(0)
}

fn audit_table(entries: &[AuditEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let object = match (e.kind.is_empty(), e.name.is_empty()) {
                (true, _) => "-".to_string(),
                (false, true) => e.kind.clone(),
                (false, false) => format!("{}/{}", e.kind, e.name),
            };
            vec![
                format_time(e.time_ms),
                if e.subject.is_empty() {
                    "-".into()
                } else {
                    e.subject.clone()
                },
                e.verb.clone(),
                object,
                e.result.clone(),
                e.message.clone(),
            ]
        })
        .collect();
    table(
        &["TIME", "SUBJECT", "VERB", "OBJECT", "RESULT", "MESSAGE"],
        &rows,
    )
}

/// `gpuctl get users`.
pub(crate) fn users_table(users: &[serde_json::Value]) -> String {
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                s(u, "name"),
                or_dash(s(u, "team")),
                s(u, "role"),
                yes_no(u["teamLead"].as_bool()),
                u["uid"].as_u64().map_or("-".into(), |n| n.to_string()),
                yes_no(u["allowRoot"].as_bool()),
                u["created"].as_u64().map_or("-".into(), format_time),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "TEAM",
            "ROLE",
            "TEAM-LEAD",
            "UID",
            "ROOT",
            "CREATED",
        ],
        &rows,
    )
}

/// `gpuctl get tokens` (ids only: the scheduler never has the secrets).
pub(crate) fn tokens_table(tokens: &[serde_json::Value], now_ms: u64) -> String {
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("").to_string();
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            let expires = t["expiresMs"].as_u64().unwrap_or(0);
            let state = if t["revoked"].as_bool() == Some(true) {
                "revoked"
            } else if expires != 0 && expires <= now_ms {
                "expired"
            } else {
                "active"
            };
            vec![
                s(t, "id"),
                s(t, "kind"),
                or_dash(s(t, "subject")),
                state.to_string(),
                if expires == 0 {
                    "never".into()
                } else {
                    format_time(expires)
                },
                or_dash(s(t, "description")),
            ]
        })
        .collect();
    table(
        &["ID", "KIND", "SUBJECT", "STATE", "EXPIRES", "DESCRIPTION"],
        &rows,
    )
}

fn or_dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

fn yes_no(b: Option<bool>) -> String {
    if b == Some(true) { "yes" } else { "no" }.into()
}

/// Columns padded to their widest cell, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  "));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut o = line(header.to_vec());
    for r in rows {
        o.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    o
}
