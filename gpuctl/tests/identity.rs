//! `gpuctl login`, `whoami`, `admin ...`, `get users|tokens` and `audit`:
//! the real `gpuctl` binary against an in-process scheduler with
//! authentication on (127.0.0.1:0, a bootstrap admin token).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use gpuctl_scheduler::api::auth::AuthOptions;
use gpuctl_scheduler::api::ServiceOptions;
use gpuctl_scheduler::controllers::ControllerOptions;
use gpuctl_scheduler::raft::RaftOptions;
use gpuctl_scheduler::server::{Config, Server};

const ADMIN: &str = "bootstrap-admin-secret-0123456789";

async fn start(dir: &Path) -> (Server, String) {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", grpc.local_addr().unwrap());
    let cfg = Config {
        id: 1,
        peers: Default::default(),
        data_dir: dir.to_path_buf(),
        raft: RaftOptions::default(),
        service: ServiceOptions {
            auth: AuthOptions::with_admin_token(ADMIN),
            ..Default::default()
        },
        controller: ControllerOptions::default(),
        tls: None,
    };
    let s = Server::start(cfg, grpc, metrics).await.unwrap();
    assert!(s.wait_leader(Duration::from_secs(20)).await);
    (s, addr)
}

/// `gpuctl --server URL ARGS` with the config dir `config`, `token` in
/// GPUCTL_TOKEN when given, and `stdin` as its input.
async fn gpuctl(
    server: &str,
    config: &Path,
    token: Option<&str>,
    stdin: &str,
    args: &[&str],
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpuctl"));
    cmd.arg("--server")
        .arg(server)
        .args(args)
        .env("GPUCTL_CONFIG_DIR", config)
        .env_remove("GPUCTL_SERVER")
        .env_remove("GPUCTL_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("GPUCTL_TOKEN", t);
    }
    let input = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("run gpuctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

struct Cli {
    url: String,
    config: std::path::PathBuf,
}

impl Cli {
    async fn run(&self, token: Option<&str>, stdin: &str, args: &[&str]) -> Output {
        gpuctl(&self.url, &self.config, token, stdin, args).await
    }
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "gpuctl failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_whoami_and_admin_commands() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let (server, url) = start(&dir.path().join("data")).await;
    let cli = Cli {
        url: url.clone(),
        config: config.clone(),
    };

    assert_eq!(
        err(&cli.run(None, "", &["whoami"]).await),
        "error: no token: run `gpuctl login` with a token from your admin, or set GPUCTL_TOKEN"
    );
    assert_eq!(
        ok(&cli.run(Some(ADMIN), "", &["whoami"]).await),
        "user admin (role admin)\n"
    );
    assert_eq!(
        ok(&cli
            .run(
                Some(ADMIN),
                "",
                &[
                    "admin",
                    "create-user",
                    "alice",
                    "--team",
                    "nlp",
                    "--uid",
                    "1234"
                ]
            )
            .await),
        "user/alice created\n"
    );
    let created = cli
        .run(
            Some(ADMIN),
            "",
            &["admin", "create-token", "--user", "alice", "--ttl", "24h"],
        )
        .await;
    let token = ok(&created).trim().to_string();
    let id = gpuctl_security::token::id_of(&token).unwrap().to_string();
    let note = String::from_utf8_lossy(&created.stderr).into_owned();
    assert!(
        note.starts_with(&format!("token id {id} (expires ")),
        "{note}"
    );

    // A bad token is not stored.
    assert!(err(&cli
        .run(
            None,
            "gpuctl_0123456789ab_0000000000000000000000000000000000000000\n",
            &["login"]
        )
        .await)
    .starts_with("error: token gpuctl_0123456789ab is not valid in this cluster"));
    assert!(!config.join("context.json").exists());

    let login = cli.run(None, &format!("{token}\n"), &["login"]).await;
    assert_eq!(
        ok(&login),
        format!(
            "logged in as user alice (role user, team nlp, token {id}); token stored in {}\n",
            config.join("context.json").display()
        )
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(config.join("context.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(
        ok(&cli.run(None, "", &["whoami"]).await),
        format!("user alice (role user, team nlp, token {id})\n")
    );
    // Refusals print the server's message as it is.
    assert_eq!(
        err(&cli.run(None, "", &["admin", "create-user", "bob"]).await),
        "error: user \"alice\" may not create users: CreateUser is for admins"
    );
    assert_eq!(
        err(&cli
            .run(None, "", &["admin", "create-token", "--join"])
            .await),
        "error: user \"alice\" may not create join tokens: only admins add nodes"
    );

    let users = ok(&cli.run(None, "", &["get", "users"]).await);
    let mut lines = users.lines();
    assert!(lines.next().unwrap().starts_with("NAME"), "{users}");
    let alice: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&alice[..6], ["alice", "nlp", "user", "no", "1234", "no"]);
    let tokens = ok(&cli.run(None, "", &["get", "tokens", "-o", "json"]).await);
    assert!(tokens.contains(&id) && !tokens.contains("hash"), "{tokens}");

    let audit = ok(&cli
        .run(Some(ADMIN), "", &["audit", "--user", "alice"])
        .await);
    assert!(
        audit
            .lines()
            .any(|l| l.contains(" create ") && l.contains("user/bob") && l.contains(" denied ")),
        "{audit}"
    );
    assert_eq!(
        err(&cli.run(None, "", &["audit"]).await),
        "error: user \"alice\" may not read the audit log: Audit is for admins"
    );

    // A user revokes their own token; it stops working at once.
    assert_eq!(
        ok(&cli.run(None, "", &["admin", "revoke-token", &id]).await),
        format!("token/{id} revoked\n")
    );
    assert_eq!(
        err(&cli.run(None, "", &["whoami"]).await),
        format!("error: token gpuctl_{id} was revoked; ask an admin for a new one (gpuctl admin create-token)")
    );
    server.shutdown().await;
}
