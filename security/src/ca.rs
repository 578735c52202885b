//! The local CA `gpuctl dev` makes: `DIR/ca.pem` and `DIR/ca-key.pem`,
//! and one leaf, `DIR/cluster.pem` and `DIR/cluster-key.pem`, valid for
//! `localhost`, `127.0.0.1` and `::1` as both server and client, which
//! every process of a dev cluster presents, and a node CA,
//! `DIR/node-ca.pem` and `DIR/node-ca-key.pem`, with which the dev nodes
//! sign their replicas' certificates ([`crate::replica`]). Keys are written
//! 0600. [`Ca::issue`] makes other leaves (tests: a second CA, a wrong host).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints,
};

use crate::tls::TlsFiles;

/// The names the dev cluster's certificate is valid for.
pub const DEV_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Errors making or reading the CA's files.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("making a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A CA: its certificate (PEM) and signing key.
pub struct Ca {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The CA's subject; the same every time, so a reused CA key signs leaves
/// whose issuer matches the CA certificate on disk.
fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "gpuctl");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

impl Ca {
    /// A new CA whose certificate names `name` (e.g. "gpuctl dev CA").
    pub fn new(name: &str) -> Result<Ca, CaError> {
        let key = KeyPair::generate()?;
        let params = ca_params(name);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and key files (PEM), e.g. the cluster's,
    /// to sign node CAs with; errors name the file.
    pub fn load(cert: &Path, key: &Path) -> Result<Ca, CaError> {
        let cert_pem = std::fs::read_to_string(cert).map_err(io(cert))?;
        let key_pem = std::fs::read_to_string(key).map_err(io(key))?;
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Invalid {
            path: key.to_path_buf(),
            why: format!("not a PEM private key: {e}"),
        })?;
        key_belongs(cert, &cert_pem, key, &key_pair)?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key_pair).map_err(|e| CaError::Invalid {
                path: cert.to_path_buf(),
                why: format!("not a PEM CA certificate: {e}"),
            })?;
        Ok(Ca { cert_pem, issuer })
    }

    /// The CA's key as PEM (keep it private).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A leaf for `names` (DNS names or IP addresses), for both server and
    /// client authentication, signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Result<Leaf, CaError> {
        let key = KeyPair::generate()?;
        let mut p =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("gpuctl"),
        );
        dn.push(DnType::OrganizationName, "gpuctl");
        p.distinguished_name = dn;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A node CA for node `node`, signed by this CA: it may sign leaves
    /// (path length 0) for `names` only (name constraints: the DNS names
    /// and single IP addresses given; no IP address at all when none is
    /// given). What a node daemon's `--replica-ca-cert`/`--replica-ca-key`
    /// take.
    pub fn issue_node_ca(&self, node: &str, names: &[&str]) -> Result<Leaf, CaError> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("gpuctl node CA {node}"));
        dn.push(DnType::OrganizationName, "gpuctl");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let mut permitted = Vec::new();
        let (mut v4, mut v6) = (false, false);
        for n in names {
            match n.parse::<std::net::IpAddr>() {
                Ok(ip) => {
                    v4 |= ip.is_ipv4();
                    v6 |= ip.is_ipv6();
                    let bits = if ip.is_ipv4() { 32 } else { 128 };
                    permitted.push(GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(
                        ip, bits,
                    )));
                }
                Err(_) => permitted.push(GeneralSubtree::DnsName(n.to_string())),
            }
        }
        let mut excluded = Vec::new();
        if !v4 {
            excluded.push(GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])));
        }
        if !v6 {
            excluded.push(GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])));
        }
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: excluded,
        });
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Checks that `key_pair` (read from `key`) is the private key of the first
/// certificate in `cert_pem` (read from `cert`).
pub(crate) fn key_belongs(
    cert: &Path,
    cert_pem: &str,
    key: &Path,
    key_pair: &KeyPair,
) -> Result<(), CaError> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| CaError::Invalid {
            path: cert.to_path_buf(),
            why: "holds no PEM certificate".into(),
        })?;
    let public = rcgen::PublicKeyData::subject_public_key_info(key_pair);
    if public.is_empty() || !der.as_ref().windows(public.len()).any(|w| w == public) {
        return Err(CaError::Invalid {
            path: key.to_path_buf(),
            why: format!("does not belong to the certificate {}", cert.display()),
        });
    }
    Ok(())
}

/// The dev CA's files in a folder.
#[derive(Debug, Clone)]
pub struct DevFiles {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The dev nodes' CA for replica certificates, and its key.
    pub node_ca: PathBuf,
    pub node_ca_key: PathBuf,
}

impl DevFiles {
    pub fn in_dir(dir: &Path) -> DevFiles {
        DevFiles {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            cert: dir.join("cluster.pem"),
            key: dir.join("cluster-key.pem"),
            node_ca: dir.join("node-ca.pem"),
            node_ca_key: dir.join("node-ca-key.pem"),
        }
    }

    /// The cluster certificate, key and CA as every process's flags take them.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            cert: Some(self.cert.clone()),
            key: Some(self.key.clone()),
            ca: Some(self.ca.clone()),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `data` to `path`, readable by its owner only when `private`.
fn write(path: &Path, data: &str, private: bool) -> Result<(), CaError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    opts.mode(if private { 0o600 } else { 0o644 });
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    f.write_all(data.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Make the dev CA and cluster certificate in `dir`, or reuse those there.
/// A CA whose cluster certificate is missing signs a new one.
pub fn ensure_dev(dir: &Path) -> Result<DevFiles, CaError> {
    const NAME: &str = "gpuctl dev CA";
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let files = DevFiles::in_dir(dir);
    let have_ca = files.ca.exists() && files.ca_key.exists();
    let have_leaf = files.cert.exists() && files.key.exists();
    let have_node_ca = files.node_ca.exists() && files.node_ca_key.exists();
    if have_ca && have_leaf && have_node_ca {
        return Ok(files);
    }
    let ca = if have_ca {
        let key_pem = std::fs::read_to_string(&files.ca_key).map_err(io(&files.ca_key))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Invalid {
            path: files.ca_key.clone(),
            why: format!("not a PEM private key: {e}"),
        })?;
        let cert_pem = std::fs::read_to_string(&files.ca).map_err(io(&files.ca))?;
        Ca {
            cert_pem,
            issuer: Issuer::new(ca_params(NAME), key),
        }
    } else {
        let ca = Ca::new(NAME)?;
        write(&files.ca_key, &ca.key_pem(), true)?;
        write(&files.ca, &ca.cert_pem, false)?;
        ca
    };
    if !have_leaf || !have_ca {
        let leaf = ca.issue(&DEV_NAMES)?;
        write(&files.key, &leaf.key_pem, true)?;
        write(&files.cert, &leaf.cert_pem, false)?;
    }
    if !have_node_ca || !have_ca {
        let node_ca = ca.issue_node_ca("dev", &DEV_NAMES)?;
        write(&files.node_ca_key, &node_ca.key_pem, true)?;
        write(&files.node_ca, &node_ca.cert_pem, false)?;
    }
    Ok(files)
}

/// Write a leaf's two files (the key 0600).
pub fn write_leaf(leaf: &Leaf, cert: &Path, key: &Path) -> Result<(), CaError> {
    write(key, &leaf.key_pem, true)?;
    write(cert, &leaf.cert_pem, false)
}

/// Write a CA's certificate to `path`.
pub fn write_ca_cert(ca: &Ca, path: &Path) -> Result<(), CaError> {
    write(path, &ca.cert_pem, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn dev_files_are_made_once_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let f = ensure_dev(dir.path()).unwrap();
        for (p, mode) in [
            (&f.ca, 0o644),
            (&f.ca_key, 0o600),
            (&f.cert, 0o644),
            (&f.key, 0o600),
            (&f.node_ca, 0o644),
            (&f.node_ca_key, 0o600),
        ] {
            let m = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode, "{}", p.display());
        }
        let ca1 = std::fs::read(&f.ca).unwrap();
        let leaf1 = std::fs::read(&f.cert).unwrap();
        ensure_dev(dir.path()).unwrap();
        assert_eq!(std::fs::read(&f.ca).unwrap(), ca1, "the CA is reused");
        assert_eq!(std::fs::read(&f.cert).unwrap(), leaf1, "the leaf is reused");
        // A missing leaf is re-issued by the same CA, and still loads.
        std::fs::remove_file(&f.cert).unwrap();
        ensure_dev(dir.path()).unwrap();
        assert_eq!(std::fs::read(&f.ca).unwrap(), ca1);
        assert_ne!(std::fs::read(&f.cert).unwrap(), leaf1);
        f.tls_files().load().unwrap();
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = ensure_dev(dir.path()).unwrap();
        let other = Ca::new("other").unwrap().issue(&["localhost"]).unwrap();
        let wrong_key = dir.path().join("wrong-key.pem");
        std::fs::write(&wrong_key, other.key_pem).unwrap();
        let mut files = f.tls_files();
        files.key = Some(wrong_key.clone());
        let e = files.load().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "the private key {} does not belong to the certificate",
                wrong_key.display()
            )),
            "{e}"
        );
        let missing = dir.path().join("nope.pem");
        files.key = f.tls_files().key;
        files.ca = Some(missing.clone());
        let e = files.load().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "cannot read the CA certificate {}",
                missing.display()
            )),
            "{e}"
        );
        std::fs::write(&missing, "not pem").unwrap();
        let e = files.load().unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "the CA certificate {} holds no PEM certificate (BEGIN CERTIFICATE)",
                missing.display()
            )
        );
    }
}
