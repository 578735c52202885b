//! What an endpoint replica gets for TLS on this node.
//!
//! ```text
//! serving task ─► node with TLS, server speaks TLS ─► key + certificate made
//!                 here, signed by the node CA (--replica-ca-cert/-key),
//!                 written with the task's secret files (owner only):
//!                 $GPUCTL_TLS_CERT, $GPUCTL_TLS_KEY
//!              ─► `server.tls: false` ─► plain HTTP, only when the node's
//!                 address is a loopback address; refused otherwise
//!              ─► node started with --insecure ─► plain HTTP, $GPUCTL_INSECURE=true
//! ```
//!
//! The key is made on the node and never leaves it; the gateway checks the
//! certificate against the cluster CA, through the node CA.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use gpuctl_security::replica::ReplicaIssuer;

use crate::assignment::Assignment;
use crate::secrets;

/// The folder, among a task's secret files, that holds its certificate. No
/// `secretFiles` dir can take this name (names start with a letter or digit).
pub const DIR: &str = "_tls";

/// How this node serves its replicas.
#[derive(Debug, Clone, Default)]
pub struct ReplicaTls {
    /// The node runs with TLS (its replicas are reached over https).
    pub tls: bool,
    /// The node CA that signs replica certificates.
    pub issuer: Option<Arc<ReplicaIssuer>>,
    /// The node's address: the name the gateway dials, in each certificate.
    pub address: String,
}

/// Whether `address` (an IP address or a name) is this host only.
pub fn is_loopback(address: &str) -> bool {
    let a = address.trim_start_matches('[').trim_end_matches(']');
    match a.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => a.eq_ignore_ascii_case("localhost"),
    }
}

impl ReplicaTls {
    /// Writes task `a`'s secret files and, for a replica, its certificate
    /// and key (owned by `owner`) under `root`, adding the variables that
    /// name them to `env`; or the message the task fails with.
    pub fn task_files(
        &self,
        a: &Assignment,
        root: &Path,
        owner: Option<(u32, u32)>,
        env: &mut BTreeMap<String, String>,
    ) -> Result<(), String> {
        let mut files = a.secret_files.clone();
        if a.wants_port {
            self.prepare(a, root, &mut files, env)?;
        }
        if !a.secret_error.is_empty() {
            return Err(format!("cannot start the task: {}", a.secret_error));
        }
        if !files.is_empty() {
            let dir = secrets::write(root, &a.key(), &files, owner)
                .map_err(|e| format!("cannot give the task its secret files: {e}"))?;
            env.insert("GPUCTL_SECRETS_DIR".into(), dir.display().to_string());
        }
        Ok(())
    }

    /// For serving task `a`: adds its certificate and key to `files` (its
    /// secret files, written under `secrets_root`) and the variables that
    /// name them to `env`; or says why the replica cannot run here.
    pub fn prepare(
        &self,
        a: &Assignment,
        secrets_root: &Path,
        files: &mut BTreeMap<String, Vec<u8>>,
        env: &mut BTreeMap<String, String>,
    ) -> Result<(), String> {
        if !self.tls {
            env.insert("GPUCTL_INSECURE".into(), "true".into());
            return Ok(());
        }
        if a.serve_plaintext {
            if is_loopback(&self.address) {
                return Ok(());
            }
            return Err(format!(
                "cannot start the replica: its server speaks plain HTTP (server.tls: false), \
                 and this node's address {} is reachable beyond this host; plain HTTP \
                 replicas run only on nodes whose address is a loopback address: serve \
                 HTTPS with $GPUCTL_TLS_CERT and $GPUCTL_TLS_KEY instead",
                self.address
            ));
        }
        let Some(issuer) = &self.issuer else {
            return Err(
                "cannot start the replica: this node has no CA to give it a certificate: \
                 start gpu-node with --replica-ca-cert FILE --replica-ca-key FILE (or \
                 serve the endpoint with server.tls: false on a loopback node)"
                    .into(),
            );
        };
        let host = self.address.trim_start_matches('[').trim_end_matches(']');
        let leaf = issuer
            .issue(&[host], &a.job)
            .map_err(|e| format!("cannot give the replica a certificate: {e}"))?;
        files.insert(format!("{DIR}/cert.pem"), leaf.cert_pem.into_bytes());
        files.insert(format!("{DIR}/key.pem"), leaf.key_pem.into_bytes());
        let dir = secrets::task_dir(secrets_root, &a.key()).join(DIR);
        env.insert(
            "GPUCTL_TLS_CERT".into(),
            dir.join("cert.pem").display().to_string(),
        );
        env.insert(
            "GPUCTL_TLS_KEY".into(),
            dir.join("key.pem").display().to_string(),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuctl_security::ca::{self, Ca};

    fn replica() -> Assignment {
        Assignment {
            job: "lin-replica-0".into(),
            task_index: 0,
            attempt: 1,
            wants_port: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_replica_gets_a_certificate_for_the_node_address() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Ca::new("cluster").unwrap();
        let node = cluster.issue_node_ca("n1", &["10.0.0.5"]).unwrap();
        let (c, k) = (dir.path().join("n.pem"), dir.path().join("n-key.pem"));
        ca::write_leaf(&node, &c, &k).unwrap();
        let rt = ReplicaTls {
            tls: true,
            issuer: Some(Arc::new(ReplicaIssuer::load(&c, &k).unwrap())),
            address: "10.0.0.5".into(),
        };
        let (mut files, mut env) = (BTreeMap::new(), BTreeMap::new());
        let a = replica();
        rt.prepare(&a, dir.path(), &mut files, &mut env).unwrap();
        let root = secrets::task_dir(dir.path(), &a.key());
        assert_eq!(
            env["GPUCTL_TLS_CERT"],
            root.join("_tls/cert.pem").display().to_string()
        );
        assert_eq!(
            env["GPUCTL_TLS_KEY"],
            root.join("_tls/key.pem").display().to_string()
        );
        let cert = String::from_utf8(files["_tls/cert.pem"].clone()).unwrap();
        assert_eq!(
            cert.matches("BEGIN CERTIFICATE").count(),
            2,
            "leaf + node CA"
        );
        assert!(String::from_utf8_lossy(&files["_tls/key.pem"]).contains("PRIVATE KEY"));
    }

    #[test]
    fn plain_http_replicas_run_on_loopback_nodes_only() {
        let mut rt = ReplicaTls {
            tls: true,
            issuer: None,
            address: "127.0.0.1".into(),
        };
        let mut a = replica();
        a.serve_plaintext = true;
        let (mut files, mut env) = (BTreeMap::new(), BTreeMap::new());
        let root = Path::new("/nonexistent");
        rt.prepare(&a, root, &mut files, &mut env).unwrap();
        assert!(files.is_empty() && env.is_empty());
        rt.address = "10.0.0.5".into();
        let e = rt.prepare(&a, root, &mut files, &mut env).unwrap_err();
        assert!(
            e.starts_with("cannot start the replica: its server speaks plain HTTP (server.tls: false), and this node's address 10.0.0.5 is reachable beyond this host"),
            "{e}"
        );
        // TLS wanted, and no node CA: says which flags.
        a.serve_plaintext = false;
        let e = rt.prepare(&a, root, &mut files, &mut env).unwrap_err();
        assert!(
            e.contains("--replica-ca-cert FILE --replica-ca-key FILE"),
            "{e}"
        );
        // A node started with --insecure: plain HTTP, said to the server.
        rt.tls = false;
        rt.prepare(&a, root, &mut files, &mut env).unwrap();
        assert_eq!(env["GPUCTL_INSECURE"], "true");
        assert!(is_loopback("::1") && is_loopback("[::1]") && is_loopback("localhost"));
        assert!(!is_loopback("10.0.0.5") && !is_loopback("gpu-1"));
    }
}
