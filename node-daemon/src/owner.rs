//! Who a task runs as: its job's owner, as the scheduler names it
//! ([`Owner`]), resolved against this node's user database into a
//! [`RunAs`] (uid, gid, supplementary groups, home), or refused with a
//! message naming the rule.
//!
//! Rules, in order ([`decide`]):
//! - a uid given by the scheduler is used as is (its passwd entry, if any,
//!   gives the groups and home); otherwise the user name must have an
//!   account on this node;
//! - uid 0 only when the owner may run tasks as root;
//! - a daemon that is not root starts tasks only as its own uid.
//!
//! A task process is started with the identity ([`command`]): uid and gid
//! directly, or through util-linux `setpriv` when the user has supplementary
//! groups (the standard library drops them all). The files the task gets
//! are made its own ([`own_dir`], [`own_file`], [`own_tree`]); the files the
//! daemon reads back as root on its behalf must be the task's own
//! ([`open_owned`]), so that a task cannot make the daemon read (and
//! report) a file its user could not read.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

/// A task's owner as the scheduler sent it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    /// The gpuctl user name.
    pub user: String,
    /// Set on the user object: used instead of looking the name up.
    pub uid: Option<u32>,
    /// The owner may run tasks as root (uid 0).
    pub allow_root: bool,
}

/// A Unix account as this node's user database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group of the account, its primary group included.
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

/// The identity a task's process gets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunAs {
    /// `USER` and `LOGNAME`: the account's name, else the gpuctl user's.
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (may include `gid`).
    pub groups: Vec<u32>,
    /// The account's home; `None` without a passwd entry.
    pub home: Option<PathBuf>,
    /// The process must change identity: `uid` is not the daemon's.
    pub switch: bool,
}

/// A failed look-up, in messages.
fn lookup_error(what: &str, e: nix::Error) -> String {
    format!("cannot look up {what} in this node's user database: {e}")
}

fn account(u: User) -> Result<Account, String> {
    let name = CString::new(u.name.clone())
        .map_err(|_| format!("user {:?} has a name with a NUL byte", u.name))?;
    let groups = nix::unistd::getgrouplist(&name, u.gid)
        .map_err(|e| lookup_error(&format!("the groups of user {:?}", u.name), e))?
        .into_iter()
        .map(Gid::as_raw)
        .collect();
    Ok(Account {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        groups,
        home: u.dir,
    })
}

/// The account named `name`, if this node has one.
pub fn lookup_name(name: &str) -> Result<Option<Account>, String> {
    match User::from_name(name) {
        Ok(Some(u)) => account(u).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(lookup_error(&format!("user {name:?}"), e)),
    }
}

/// The account of `uid`, if this node has one.
pub fn lookup_uid(uid: u32) -> Result<Option<Account>, String> {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => account(u).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(lookup_error(&format!("uid {uid}"), e)),
    }
}

/// The identity `owner`'s task of `job` gets on `node`, given the account
/// found (by uid when the owner has one, else by name) and the daemon's
/// uid; or why it may not run. Pure.
pub fn decide(
    owner: &Owner,
    account: Option<Account>,
    job: &str,
    node: &str,
    daemon_uid: u32,
) -> Result<RunAs, String> {
    let user = &owner.user;
    if user.is_empty() && owner.uid.is_none() {
        return Err(format!(
            "job {job:?} has an owner with neither a user name nor a uid"
        ));
    }
    let uid = match (owner.uid, &account) {
        (Some(uid), _) => uid,
        (None, Some(a)) => a.uid,
        (None, None) => {
            return Err(format!(
                "user {user:?} has no Unix account on node {node:?}; create one or set a uid \
                 on the user (gpuctl admin create-user --uid)"
            ))
        }
    };
    if uid == 0 && !owner.allow_root {
        return Err(format!(
            "job {job:?} would run as root; its owner {user:?} is not allowed to run tasks as root"
        ));
    }
    if daemon_uid != 0 && uid != daemon_uid {
        return Err(format!(
            "the node daemon runs as uid {daemon_uid} and cannot start tasks as uid {uid} \
             (user {user:?})"
        ));
    }
    let (gid, groups, home, name) = match account {
        Some(a) => (a.gid, a.groups, Some(a.home), a.name),
        None => (uid, Vec::new(), None, user.clone()),
    };
    Ok(RunAs {
        user: if name.is_empty() {
            format!("uid-{uid}")
        } else {
            name
        },
        uid,
        gid,
        groups,
        home,
        switch: uid != daemon_uid,
    })
}

/// [`decide`] against this node's user database and the daemon's uid;
/// also refused when the user's groups need `setpriv` and it is missing.
pub fn resolve(owner: &Owner, job: &str, node: &str) -> Result<RunAs, String> {
    let account = match owner.uid {
        Some(uid) => lookup_uid(uid)?,
        None if owner.user.is_empty() => None,
        None => lookup_name(&owner.user)?,
    };
    let run_as = decide(owner, account, job, node, nix::unistd::geteuid().as_raw())?;
    if run_as.switch && run_as.has_supplementary_groups() && find_setpriv().is_none() {
        return Err(format!(
            "user {:?} has supplementary groups, and starting a task with them needs \
             setpriv (util-linux), which node {node:?} lacks",
            run_as.user
        ));
    }
    Ok(run_as)
}

impl RunAs {
    /// Supplementary groups other than the primary one.
    pub fn has_supplementary_groups(&self) -> bool {
        self.groups.iter().any(|&g| g != self.gid)
    }

    /// `HOME`, `USER` and `LOGNAME` of the task, unless `env` (the job's)
    /// sets them; `HOME` is `fallback` for an account without a passwd entry.
    pub fn add_env(&self, env: &mut std::collections::BTreeMap<String, String>, fallback: &Path) {
        let home = self.home.as_deref().unwrap_or(fallback);
        env.entry("HOME".into())
            .or_insert_with(|| home.display().to_string());
        env.entry("USER".into())
            .or_insert_with(|| self.user.clone());
        env.entry("LOGNAME".into())
            .or_insert_with(|| self.user.clone());
    }
}

/// util-linux `setpriv`: where distributions install it, else on `PATH`.
fn find_setpriv() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    [PathBuf::from("/usr/bin"), PathBuf::from("/bin")]
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join("setpriv"))
        .find(|p| p.is_file())
}

/// `program args` to run as `run_as` (`None`, or no change of identity
/// needed: as the daemon). The caller adds the rest (process group,
/// environment, files).
pub fn command(program: &str, args: &[String], run_as: Option<&RunAs>) -> tokio::process::Command {
    match run_as.filter(|r| r.switch) {
        Some(r) if r.has_supplementary_groups() => {
            let groups: Vec<String> = r.groups.iter().map(u32::to_string).collect();
            let setpriv = find_setpriv().unwrap_or_else(|| "setpriv".into());
            let mut cmd = tokio::process::Command::new(setpriv);
            cmd.arg(format!("--reuid={}", r.uid))
                .arg(format!("--regid={}", r.gid))
                .arg(format!("--groups={}", groups.join(",")))
                .arg("--")
                .arg(program)
                .args(args);
            cmd
        }
        Some(r) => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args).uid(r.uid).gid(r.gid);
            cmd
        }
        None => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(args);
            cmd
        }
    }
}

/// Give `path` (a link itself, never what it points to) to `run_as`; a
/// task that runs as the daemon's own uid has its files already.
fn chown(path: &Path, run_as: &RunAs) -> io::Result<()> {
    if !run_as.switch {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(run_as.uid), Some(run_as.gid))
}

/// Create `dir` (and its parents) and make it `run_as`'s, mode 0700.
pub fn own_dir(dir: &Path, run_as: &RunAs) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    chown(dir, run_as)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Make an open file `run_as`'s, mode 0600.
pub fn own_file(file: &File, run_as: &RunAs) -> io::Result<()> {
    if run_as.switch {
        std::os::unix::fs::fchown(file, Some(run_as.uid), Some(run_as.gid))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

/// Make `root` and everything under it `run_as`'s (symbolic links
/// themselves, never what they point to); `root` gets mode 0700.
pub fn own_tree(root: &Path, run_as: &RunAs) -> io::Result<()> {
    own_dir(root, run_as)?;
    if !run_as.switch {
        return Ok(());
    }
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            chown(&path, run_as)?;
            if std::fs::symlink_metadata(&path)?.is_dir() {
                todo.push(path);
            }
        }
    }
    Ok(())
}

/// Open a file the daemon reads on a task's behalf (its outputs). With
/// `uid`, the file must belong to it: a task cannot have the daemon read
/// a file that is not its own.
pub fn open_owned(path: &Path, uid: Option<u32>) -> io::Result<File> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    match uid {
        Some(uid) if meta.uid() != uid => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the file belongs to uid {}, not to the task's user (uid {uid})",
                meta.uid()
            ),
        )),
        _ => Ok(file),
    }
}

/// Copy `from` (opened by the daemon) to `to` with `run_as`'s rights, its
/// folders created as needed: for places outside the folders the daemon
/// made for the task, where writing as root could follow a link the user
/// planted.
pub fn copy_as(run_as: &RunAs, from: File, to: &Path) -> Result<(), String> {
    let mut cmd = command(
        "sh",
        &[
            "-c".into(),
            "mkdir -p -- \"$(dirname -- \"$1\")\" && cat > \"$1\"".into(),
            "sh".into(),
            to.display().to_string(),
        ],
        Some(run_as),
    );
    let out = cmd
        .as_std_mut()
        .stdin(from)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start a copy as uid {}: {e}", run_as.uid))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "copying as uid {} failed: {}",
            run_as.uid,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(user: &str, uid: Option<u32>, allow_root: bool) -> Owner {
        Owner {
            user: user.into(),
            uid,
            allow_root,
        }
    }

    fn alice() -> Account {
        Account {
            name: "alice".into(),
            uid: 1001,
            gid: 1001,
            groups: vec![1001, 27],
            home: "/home/alice".into(),
        }
    }

    #[test]
    fn an_account_by_name_gives_its_groups_and_home() {
        let r = decide(&owner("alice", None, false), Some(alice()), "j", "n1", 0).unwrap();
        assert_eq!((r.uid, r.gid, r.switch), (1001, 1001, true));
        assert_eq!(r.groups, vec![1001, 27]);
        assert!(r.has_supplementary_groups());
        assert_eq!(r.home.as_deref(), Some(Path::new("/home/alice")));
        let mut env = std::collections::BTreeMap::new();
        env.insert("HOME".to_string(), "/data".to_string());
        r.add_env(&mut env, Path::new("/w/t"));
        assert_eq!(env["HOME"], "/data", "the job's own HOME wins");
        assert_eq!(
            (env["USER"].as_str(), env["LOGNAME"].as_str()),
            ("alice", "alice")
        );
    }

    #[test]
    fn a_uid_without_an_account_runs_with_its_own_group() {
        let r = decide(&owner("bob", Some(2000), false), None, "j", "n1", 0).unwrap();
        assert_eq!((r.uid, r.gid, r.user.as_str()), (2000, 2000, "bob"));
        assert!(r.groups.is_empty() && !r.has_supplementary_groups());
        let mut env = std::collections::BTreeMap::new();
        r.add_env(&mut env, Path::new("/w/t"));
        assert_eq!(env["HOME"], "/w/t");
    }

    #[test]
    fn refusals_name_their_rule() {
        let e = decide(&owner("bob", None, false), None, "x", "n1", 0).unwrap_err();
        assert_eq!(
            e,
            "user \"bob\" has no Unix account on node \"n1\"; create one or set a uid on the \
             user (gpuctl admin create-user --uid)"
        );
        let e = decide(&owner("alice", Some(0), false), None, "x", "n1", 0).unwrap_err();
        assert_eq!(
            e,
            "job \"x\" would run as root; its owner \"alice\" is not allowed to run tasks as root"
        );
        let mut root = alice();
        root.uid = 0;
        let e = decide(
            &owner("alice", None, false),
            Some(root.clone()),
            "x",
            "n1",
            0,
        );
        assert!(e.unwrap_err().contains("would run as root"));
        let r = decide(&owner("alice", None, true), Some(root), "x", "n1", 0).unwrap();
        assert_eq!((r.uid, r.switch), (0, false));
        let e = decide(&owner("bob", Some(1001), false), None, "x", "n1", 1000).unwrap_err();
        assert_eq!(
            e,
            "the node daemon runs as uid 1000 and cannot start tasks as uid 1001 (user \"bob\")"
        );
        let r = decide(&owner("me", Some(1000), false), None, "x", "n1", 1000).unwrap();
        assert!(!r.switch, "a daemon's own uid needs no change");
        let e = decide(&owner("", None, false), None, "x", "n1", 0).unwrap_err();
        assert_eq!(
            e,
            "job \"x\" has an owner with neither a user name nor a uid"
        );
    }

    #[test]
    fn commands_switch_only_when_needed() {
        let mut r = decide(&owner("alice", None, false), Some(alice()), "j", "n1", 0).unwrap();
        let cmd = command("python", &["t.py".into()], Some(&r));
        let std = cmd.as_std();
        assert!(std.get_program().to_string_lossy().ends_with("setpriv"));
        let args: Vec<String> = std
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--reuid=1001",
                "--regid=1001",
                "--groups=1001,27",
                "--",
                "python",
                "t.py"
            ]
        );
        r.groups = vec![1001];
        let cmd = command("python", &["t.py".into()], Some(&r));
        assert_eq!(cmd.as_std().get_program(), "python");
        r.switch = false;
        let cmd = command("python", &[], Some(&r));
        assert_eq!(cmd.as_std().get_program(), "python");
    }

    #[test]
    fn outputs_must_be_the_tasks_own() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out");
        std::fs::write(&p, "x").unwrap();
        let mine = std::fs::metadata(&p).unwrap().uid();
        assert!(open_owned(&p, Some(mine)).is_ok());
        assert!(open_owned(&p, None).is_ok());
        let e = open_owned(&p, Some(mine + 1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(open_owned(dir.path(), None).is_err(), "a folder is refused");
    }
}
