//! Where the CLI finds the scheduler: `--server`, then `GPUCTL_SERVER`, then
//! the context file `gpuctl dev` wrote, then `http://127.0.0.1:7000`.
//!
//! Everything here takes its inputs as values ([`EnvVars`], a config dir) so
//! that tests never touch the process environment.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Used when nothing else names a server.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7000";
/// Name of the context file inside the config dir.
pub const CONTEXT_FILE: &str = "context.json";

/// The environment variables the CLI reads, captured once.
#[derive(Debug, Clone, Default)]
pub struct EnvVars {
    pub gpuctl_server: Option<String>,
    /// `GPUCTL_TOKEN`: the bearer token, over the context's.
    pub gpuctl_token: Option<String>,
    pub gpuctl_config_dir: Option<String>,
    pub xdg_config_home: Option<String>,
    pub xdg_data_home: Option<String>,
    pub home: Option<String>,
}

impl EnvVars {
    pub fn from_process() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        EnvVars {
            gpuctl_server: get("GPUCTL_SERVER"),
            gpuctl_token: get("GPUCTL_TOKEN"),
            gpuctl_config_dir: get("GPUCTL_CONFIG_DIR"),
            xdg_config_home: get("XDG_CONFIG_HOME"),
            xdg_data_home: get("XDG_DATA_HOME"),
            home: get("HOME"),
        }
    }

    /// `$GPUCTL_CONFIG_DIR`, or `$XDG_CONFIG_HOME/gpuctl`, or `$HOME/.config/gpuctl`.
    pub fn config_dir(&self) -> Option<PathBuf> {
        if let Some(d) = &self.gpuctl_config_dir {
            return Some(PathBuf::from(d));
        }
        if let Some(d) = &self.xdg_config_home {
            return Some(Path::new(d).join("gpuctl"));
        }
        self.home
            .as_ref()
            .map(|h| Path::new(h).join(".config").join("gpuctl"))
    }

    /// `$XDG_DATA_HOME/gpuctl/dev`, or `$HOME/.local/share/gpuctl/dev`.
    pub fn dev_state_dir(&self) -> Option<PathBuf> {
        if let Some(d) = &self.xdg_data_home {
            return Some(Path::new(d).join("gpuctl").join("dev"));
        }
        self.home
            .as_ref()
            .map(|h| Path::new(h).join(".local/share/gpuctl/dev"))
    }
}

/// What `gpuctl dev` leaves for the next command: `context.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    /// Scheduler URL(s), comma-separated like `--server`.
    pub server: String,
    /// The `gpuctl dev` state dir that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// The inference gateway's URL (`gpuctl get endpoints` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The bearer token sent on every call (`gpuctl login` stores it; the
    /// file is then readable by its owner only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The CA certificate (PEM) that `https://` servers are checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// Read `DIR/context.json`; `Ok(None)` when there is none.
pub fn read_context(config_dir: &Path) -> Result<Option<Context>> {
    let path = config_dir.join(CONTEXT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::Other(format!(
            "{} is not a gpuctl context file ({e}); delete it or run \"gpuctl dev\" again",
            path.display()
        ))
    })
}

/// Write `DIR/context.json` atomically (temp file + rename), readable by
/// its owner only (it may hold a token).
pub fn write_context(config_dir: &Path, ctx: &Context) -> Result<PathBuf> {
    let path = config_dir.join(CONTEXT_FILE);
    let json = serde_json::to_string_pretty(ctx).expect("context serialises");
    write_private(&path, json.as_bytes())?;
    Ok(path)
}

/// [`write_atomic`] with mode 0600 from the start: the content is a secret.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("cannot write {}", path.display()), e)
    })
}

/// The token for calls: `flag` (`--token`) > `env` (`GPUCTL_TOKEN`) > the
/// context's; with where it came from, for messages.
pub fn resolve_token(
    flag: Option<&str>,
    env: Option<&str>,
    config_dir: Option<&Path>,
) -> Result<Option<(String, &'static str)>> {
    let nonempty = |s: Option<&str>| s.map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    if let Some(t) = nonempty(flag) {
        return Ok(Some((t, "--token")));
    }
    if let Some(t) = nonempty(env) {
        return Ok(Some((t, "GPUCTL_TOKEN")));
    }
    let ctx = match config_dir {
        Some(d) => read_context(d)?,
        None => None,
    };
    Ok(ctx
        .and_then(|c| nonempty(c.token.as_deref()))
        .map(|t| (t, "the context file")))
}

/// Write a file so that readers see either the old or the new content.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    std::fs::write(&tmp, data)
        .map_err(|e| Error::io(format!("cannot write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("cannot write {}", path.display()), e)
    })
}

/// Where the server list came from (shown in verbose errors and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerSource {
    Flag,
    Env,
    Context(PathBuf),
    Default,
}

/// The scheduler URLs to try, in order, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Servers {
    pub urls: Vec<String>,
    pub source: ServerSource,
}

/// Resolve the server list: `flag` > `env` (`GPUCTL_SERVER`) > the context
/// file in `config_dir` > [`DEFAULT_SERVER`].
pub fn resolve_servers(
    flag: Option<&str>,
    env: Option<&str>,
    config_dir: Option<&Path>,
) -> Result<Servers> {
    if let Some(f) = nonempty(flag) {
        return Ok(Servers {
            urls: parse_server_list(f)?,
            source: ServerSource::Flag,
        });
    }
    if let Some(e) = nonempty(env) {
        return Ok(Servers {
            urls: parse_server_list(e)?,
            source: ServerSource::Env,
        });
    }
    if let Some(dir) = config_dir {
        if let Some(ctx) = read_context(dir)? {
            return Ok(Servers {
                urls: parse_server_list(&ctx.server)?,
                source: ServerSource::Context(dir.join(CONTEXT_FILE)),
            });
        }
    }
    Ok(Servers {
        urls: vec![DEFAULT_SERVER.to_string()],
        source: ServerSource::Default,
    })
}

fn nonempty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

/// Split a comma-separated list of addresses and normalise each.
pub fn parse_server_list(list: &str) -> Result<Vec<String>> {
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(normalize_url)
        .collect::<Result<_>>()?;
    if urls.is_empty() {
        return Err(Error::Usage(format!(
            "no server address in {list:?} (expected e.g. 127.0.0.1:7000)"
        )));
    }
    Ok(urls)
}

/// `127.0.0.1:7000` → `http://127.0.0.1:7000`; `http(s)://…` kept, trailing
/// `/` dropped.
pub fn normalize_url(addr: &str) -> Result<String> {
    let a = addr.trim();
    let (scheme, rest) = if let Some(r) = a.strip_prefix("http://") {
        ("http://", r)
    } else if let Some(r) = a.strip_prefix("https://") {
        ("https://", r)
    } else if a.contains("://") {
        return Err(Error::Usage(format!(
            "unsupported server address {a:?}: use host:port or http://host:port"
        )));
    } else {
        ("http://", a)
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
        return Err(Error::Usage(format!(
            "invalid server address {a:?}: use host:port or http://host:port"
        )));
    }
    Ok(format!("{scheme}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_flag_then_the_env_then_a_private_context() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve_token(None, None, Some(dir.path())).unwrap(), None);
        let ctx = Context {
            server: "http://127.0.0.1:4000".into(),
            state_dir: None,
            gateway: None,
            token: Some("ctx-token".into()),
            ca: None,
        };
        let path = write_context(dir.path(), &ctx).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let t = |f, e| resolve_token(f, e, Some(dir.path())).unwrap().unwrap();
        assert_eq!(t(None, None), ("ctx-token".into(), "the context file"));
        assert_eq!(t(None, Some("env")), ("env".into(), "GPUCTL_TOKEN"));
        assert_eq!(t(Some("flag"), Some("env")), ("flag".into(), "--token"));
        assert_eq!(t(Some(" "), Some("env")), ("env".into(), "GPUCTL_TOKEN"));
    }

    #[test]
    fn urls_are_normalised() {
        assert_eq!(
            normalize_url("127.0.0.1:7000").unwrap(),
            "http://127.0.0.1:7000"
        );
        assert_eq!(
            normalize_url(" http://127.0.0.1:7000/ ").unwrap(),
            "http://127.0.0.1:7000"
        );
        assert_eq!(
            normalize_url("https://sched.example:443").unwrap(),
            "https://sched.example:443"
        );
        assert!(normalize_url("grpc://x:1").is_err());
        assert!(normalize_url("http://").is_err());
        assert!(normalize_url("a:1/path").is_err());
        assert_eq!(
            parse_server_list("a:1, http://b:2,,").unwrap(),
            vec!["http://a:1", "http://b:2"]
        );
        assert!(parse_server_list(" , ").is_err());
    }

    #[test]
    fn flag_beats_env_beats_context_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            server: "http://127.0.0.1:4000".into(),
            state_dir: Some("/tmp/x".into()),
            gateway: Some("http://127.0.0.1:8080".into()),
            token: None,
            ca: Some("/tmp/x/tls/ca.pem".into()),
        };
        write_context(dir.path(), &ctx).unwrap();
        assert_eq!(read_context(dir.path()).unwrap(), Some(ctx));

        let s = resolve_servers(Some("f:1"), Some("e:2"), Some(dir.path())).unwrap();
        assert_eq!(s.urls, vec!["http://f:1"]);
        assert_eq!(s.source, ServerSource::Flag);

        let s = resolve_servers(None, Some("e:2,e:3"), Some(dir.path())).unwrap();
        assert_eq!(s.urls, vec!["http://e:2", "http://e:3"]);
        assert_eq!(s.source, ServerSource::Env);

        let s = resolve_servers(Some(""), Some("  "), Some(dir.path())).unwrap();
        assert_eq!(s.urls, vec!["http://127.0.0.1:4000"]);
        assert_eq!(
            s.source,
            ServerSource::Context(dir.path().join(CONTEXT_FILE))
        );

        let empty = tempfile::tempdir().unwrap();
        let s = resolve_servers(None, None, Some(empty.path())).unwrap();
        assert_eq!(s.urls, vec![DEFAULT_SERVER]);
        assert_eq!(s.source, ServerSource::Default);
        assert_eq!(
            resolve_servers(None, None, None).unwrap().urls,
            vec![DEFAULT_SERVER]
        );
    }

    #[test]
    fn broken_context_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONTEXT_FILE), "{nope").unwrap();
        let e = resolve_servers(None, None, Some(dir.path())).unwrap_err();
        assert!(e.to_string().contains("context.json"), "{e}");
    }

    #[test]
    fn config_and_state_dirs() {
        let env = EnvVars {
            home: Some("/home/u".into()),
            ..Default::default()
        };
        assert_eq!(
            env.config_dir().unwrap(),
            Path::new("/home/u/.config/gpuctl")
        );
        assert_eq!(
            env.dev_state_dir().unwrap(),
            Path::new("/home/u/.local/share/gpuctl/dev")
        );
        let env = EnvVars {
            home: Some("/home/u".into()),
            xdg_config_home: Some("/xdg/c".into()),
            xdg_data_home: Some("/xdg/d".into()),
            ..Default::default()
        };
        assert_eq!(env.config_dir().unwrap(), Path::new("/xdg/c/gpuctl"));
        assert_eq!(env.dev_state_dir().unwrap(), Path::new("/xdg/d/gpuctl/dev"));
        let env = EnvVars {
            gpuctl_config_dir: Some("/cfg".into()),
            ..env
        };
        assert_eq!(env.config_dir().unwrap(), Path::new("/cfg"));
    }
}
