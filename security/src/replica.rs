//! Certificates for endpoint replicas, made on their node.
//!
//! ```text
//! cluster CA ──signs──► node CA (per node: CA, path length 0, name
//!                        constraints: the node's names; key on the node only)
//!                          └──signs──► replica leaf (one per replica task,
//!                                       key made on the node, never sent)
//! gateway: trusts the cluster CA; the replica presents leaf + node CA
//! ```
//!
//! The node daemon loads its node CA ([`ReplicaIssuer::load`], from
//! `--replica-ca-cert`/`--replica-ca-key`) and issues each replica a leaf
//! for the node's address ([`ReplicaIssuer::issue`]), which it writes into
//! the replica's own folder. A node CA can sign for its node's names only,
//! so a compromised node cannot pass for another node's replicas.
//! [`Ca::issue_node_ca`](crate::ca::Ca::issue_node_ca) makes node CAs.

use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::ca::{key_belongs, CaError, Leaf};

/// A node CA, loaded: signs replica certificates on its node.
pub struct ReplicaIssuer {
    /// The node CA's certificate, PEM: sent after each leaf.
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// The files it came from, for messages.
    cert_path: PathBuf,
}

impl std::fmt::Debug for ReplicaIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaIssuer")
            .field("cert", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl ReplicaIssuer {
    /// Reads a node CA's certificate and key (PEM); errors name the file.
    pub fn load(cert: &Path, key: &Path) -> Result<ReplicaIssuer, CaError> {
        let ca_pem = read(cert)?;
        let key_pem = read(key)?;
        let invalid = |path: &Path, why: String| CaError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let key_pair = KeyPair::from_pem(&key_pem)
            .map_err(|e| invalid(key, format!("not a PEM private key: {e}")))?;
        key_belongs(cert, &ca_pem, key, &key_pair)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key_pair)
            .map_err(|e| invalid(cert, format!("not a PEM CA certificate: {e}")))?;
        Ok(ReplicaIssuer {
            ca_pem,
            issuer,
            cert_path: cert.to_path_buf(),
        })
    }

    /// The node CA certificate's file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// A server certificate for `names` (the node's address: a DNS name or
    /// an IP address), with a key made here. The certificate file holds
    /// the leaf and then the node CA, so a client that trusts the cluster
    /// CA can build the chain.
    pub fn issue(&self, names: &[&str], replica: &str) -> Result<Leaf, CaError> {
        let key = KeyPair::generate()?;
        let mut p =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, replica);
        dn.push(DnType::OrganizationName, "gpuctl replica");
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer)?;
        let mut chain = cert.pem();
        if !chain.ends_with('\n') {
            chain.push('\n');
        }
        chain.push_str(&self.ca_pem);
        Ok(Leaf {
            cert_pem: chain,
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{self, Ca};
    use crate::tls::{Tls, TlsFiles};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A node CA signed by `cluster` for `names`, written and loaded.
    fn issuer(dir: &Path, cluster: &Ca, names: &[&str]) -> ReplicaIssuer {
        let node = cluster.issue_node_ca("n1", names).unwrap();
        let (c, k) = (dir.join("node-ca.pem"), dir.join("node-ca-key.pem"));
        ca::write_leaf(&node, &c, &k).unwrap();
        ReplicaIssuer::load(&c, &k).unwrap()
    }

    /// Serves one TLS connection with `leaf` on 127.0.0.1 and connects to
    /// it trusting `trusted`: Ok(bytes echoed) or the client's error.
    async fn handshake(dir: &Path, leaf: &Leaf, trusted: &Ca) -> Result<Vec<u8>, String> {
        let (c, k, ca) = (
            dir.join("leaf.pem"),
            dir.join("leaf-key.pem"),
            dir.join("trusted.pem"),
        );
        ca::write_leaf(leaf, &c, &k).unwrap();
        ca::write_ca_cert(trusted, &ca).unwrap();
        let server = TlsFiles {
            cert: Some(c),
            key: Some(k),
            ca: None,
        }
        .load()
        .unwrap()
        .acceptor(None)
        .unwrap();
        let client: Tls = TlsFiles {
            ca: Some(ca),
            ..TlsFiles::default()
        }
        .load()
        .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client.rustls_client().unwrap()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            if let Ok(mut s) = server.accept(s).await {
                let mut b = [0u8; 2];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(&b).await;
                    let _ = s.flush().await;
                }
            }
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let out = async {
            let mut s = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("{e:?}"))?;
            s.write_all(b"hi").await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            Ok(b.to_vec())
        }
        .await;
        serving.abort();
        out
    }

    #[tokio::test]
    async fn a_replica_certificate_chains_to_the_cluster_ca_through_its_node_ca() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Ca::new("cluster").unwrap();
        let node = issuer(dir.path(), &cluster, &["127.0.0.1", "localhost"]);
        let leaf = node.issue(&["127.0.0.1"], "lin-replica-0").unwrap();
        assert_eq!(leaf.cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert_eq!(
            handshake(dir.path(), &leaf, &cluster).await.unwrap(),
            b"hi".to_vec()
        );
        // Trusting another CA: refused as an unknown issuer.
        let other = Ca::new("other").unwrap();
        let e = handshake(dir.path(), &leaf, &other).await.unwrap_err();
        assert!(e.contains("UnknownIssuer"), "{e}");
    }

    #[tokio::test]
    async fn a_node_ca_cannot_sign_for_names_beyond_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Ca::new("cluster").unwrap();
        // This node is 10.0.0.5: a leaf it signs for 127.0.0.1 (another
        // host's name, as the client sees it) is refused.
        let node = issuer(dir.path(), &cluster, &["10.0.0.5"]);
        let leaf = node.issue(&["127.0.0.1"], "lin-replica-0").unwrap();
        let e = handshake(dir.path(), &leaf, &cluster).await.unwrap_err();
        assert!(
            e.contains("NameConstraint") || e.contains("name constraint"),
            "{e}"
        );
    }

    #[test]
    fn a_key_of_another_node_ca_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Ca::new("cluster").unwrap();
        let a = cluster.issue_node_ca("a", &["10.0.0.5"]).unwrap();
        let b = cluster.issue_node_ca("b", &["10.0.0.6"]).unwrap();
        let (c, k) = (dir.path().join("a.pem"), dir.path().join("b-key.pem"));
        std::fs::write(&c, &a.cert_pem).unwrap();
        std::fs::write(&k, &b.key_pem).unwrap();
        let e = ReplicaIssuer::load(&c, &k).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: does not belong to the certificate {}",
                k.display(),
                c.display()
            )
        );
        let missing = dir.path().join("nope.pem");
        let e = ReplicaIssuer::load(&missing, &k).unwrap_err().to_string();
        assert!(e.starts_with(&missing.display().to_string()), "{e}");
    }
}
