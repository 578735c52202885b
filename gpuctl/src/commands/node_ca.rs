//! `gpuctl admin node-ca`: a node's CA for its replicas' certificates,
//! signed by the cluster CA, made offline from the CA's files.

use std::path::Path;

use gpuctl_security::ca::{self, Ca};

use crate::cli::AdminCommand;
use crate::error::{Error, Result};

/// Write `OUT/NODE-ca.pem` and `OUT/NODE-ca-key.pem` and say which
/// `gpu-node` flags take them.
pub(crate) fn cmd_node_ca(command: AdminCommand) -> Result<u8> {
    let AdminCommand::NodeCa {
        node,
        addresses,
        cluster_ca,
        cluster_ca_key,
        out,
    } = command
    else {
        return Err(Error::Usage("not `admin node-ca`".into()));
    };
    gpuctl_common::api::validate_name("node", &node).map_err(|e| Error::Usage(e.to_string()))?;
    let (cert, key) = make(&node, &addresses, &cluster_ca, &cluster_ca_key, &out)?;
    println!("node CA for {node}: {}", cert.display());
    println!(
        "start the node with: gpu-node --name {node} --replica-ca-cert {} --replica-ca-key {}",
        cert.display(),
        key.display()
    );
    Ok(0)
}

fn make(
    node: &str,
    addresses: &[String],
    cluster_ca: &Path,
    cluster_ca_key: &Path,
    out: &Path,
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let err = |e: ca::CaError| Error::Other(e.to_string());
    let ca = Ca::load(cluster_ca, cluster_ca_key).map_err(err)?;
    let names: Vec<&str> = addresses.iter().map(String::as_str).collect();
    let leaf = ca.issue_node_ca(node, &names).map_err(err)?;
    std::fs::create_dir_all(out)
        .map_err(|e| Error::io(format!("cannot create {}", out.display()), e))?;
    let (cert, key) = (
        out.join(format!("{node}-ca.pem")),
        out.join(format!("{node}-ca-key.pem")),
    );
    ca::write_leaf(&leaf, &cert, &key).map_err(err)?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuctl_security::replica::ReplicaIssuer;

    #[test]
    fn a_node_ca_is_made_from_the_cluster_ca_files_and_loads_on_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let files = ca::ensure_dev(&dir.path().join("tls")).unwrap();
        let (cert, key) = make(
            "gpu-1",
            &["10.0.0.5".into()],
            &files.ca,
            &files.ca_key,
            dir.path(),
        )
        .unwrap();
        assert_eq!(cert, dir.path().join("gpu-1-ca.pem"));
        let issuer = ReplicaIssuer::load(&cert, &key).unwrap();
        issuer.issue(&["10.0.0.5"], "r").unwrap();
        // The cluster CA's key must match its certificate.
        let e = make("gpu-1", &["10.0.0.5".into()], &files.ca, &key, dir.path())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "{}: does not belong to the certificate {}",
                key.display(),
                files.ca.display()
            )
        );
    }
}
