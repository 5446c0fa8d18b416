//! The cluster's certificates, as `cairn cert` makes and lists them.
//!
//! One folder holds them all, named the way CockroachDB names its own:
//! `ca.crt`/`ca.key` (the cluster's CA), `node.<ID>.crt`/`.key` (a node,
//! usable as TLS server and client) and `client.<NAME>.crt`/`.key` (an
//! operator or a tool, client only). A certificate's identity is its
//! subject: organisation `Cairn`, unit `node` or `client`, common name the
//! node id or the user name. Keys are written with mode 0600, and nothing
//! is ever overwritten.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use super::{Identity, Role};
use crate::error::{Error, Result};

/// How long a CA is valid: 10 years.
pub const CA_DAYS: i64 = 3653;
/// How long a node or client certificate is valid: 5 years.
pub const LEAF_DAYS: i64 = 1826;

/// The organisation every Cairn certificate names.
pub const ORGANISATION: &str = "Cairn";

/// When a certificate is valid: from `not_before` for `days`.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    /// The first moment it is valid.
    pub not_before: OffsetDateTime,
    /// The last moment it is valid.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (for clocks slightly behind) for `days`.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }
}

/// The paths of a certificate and its key in `dir`, for a file stem such
/// as `ca`, `node.n1` or `client.root`.
pub fn paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    )
}

/// The file stem of an identity's certificate.
pub fn stem(who: &Identity) -> String {
    match who.role {
        Role::Node => format!("node.{}", who.name),
        Role::Client => format!("client.{}", who.name),
    }
}

fn cert_error(path: &Path, problem: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{}: {problem}", path.display()))
}

/// Makes the cluster's CA in `dir` (created if missing).
///
/// # Errors
/// `ca.crt` or `ca.key` already exists, or the files cannot be written.
pub fn create_ca(dir: &Path, validity: Validity) -> Result<PathBuf> {
    let (crt, key_path) = paths(dir, "ca");
    let key = KeyPair::generate().map_err(|e| cert_error(&key_path, e))?;
    let mut params = CertificateParams::default();
    // A name of its own, so that a certificate of another cluster's CA is
    // refused as of an unknown issuer rather than with a bad signature.
    let unique = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        validity.not_after.unix_timestamp_nanos(),
    );
    let ca_name = format!("Cairn cluster CA {:08x}", unique as u32);
    params.distinguished_name = name("ca", &ca_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let cert = params.self_signed(&key).map_err(|e| cert_error(&crt, e))?;
    write_pair(dir, &crt, &cert.pem(), &key_path, &key.serialize_pem())?;
    Ok(crt)
}

/// Makes a certificate signed by the CA in `dir`: for a node (server and
/// client, valid for `hosts` plus localhost) or for a client.
///
/// # Errors
/// The CA is missing or unreadable, the name is unusable, or the files
/// already exist or cannot be written.
pub fn create_leaf(
    dir: &Path,
    who: &Identity,
    hosts: &[String],
    validity: Validity,
) -> Result<PathBuf> {
    if who.name.is_empty() || who.name.contains(['/', '\\']) || who.name.starts_with('.') {
        return Err(Error::Tls(format!(
            "{:?} cannot name a certificate file (empty, a path, or starting with a dot)",
            who.name
        )));
    }
    let (ca_crt, ca_key) = paths(dir, "ca");
    let ca_pem = fs::read_to_string(&ca_crt).map_err(|e| cert_error(&ca_crt, e))?;
    let ca_key_pem = fs::read_to_string(&ca_key).map_err(|e| cert_error(&ca_key, e))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| cert_error(&ca_key, e))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| cert_error(&ca_crt, e))?;

    let (crt, key_path) = paths(dir, &stem(who));
    let sans = match who.role {
        Role::Node => {
            let mut all = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
            all.extend(hosts.iter().cloned());
            all.dedup();
            all
        }
        Role::Client => Vec::new(),
    };
    let mut params = CertificateParams::new(sans).map_err(|e| cert_error(&crt, e))?;
    params.distinguished_name = name(who.role.as_str(), &who.name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match who.role {
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let key = KeyPair::generate().map_err(|e| cert_error(&key_path, e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| cert_error(&crt, e))?;
    write_pair(dir, &crt, &cert.pem(), &key_path, &key.serialize_pem())?;
    Ok(crt)
}

fn name(unit: &str, common: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANISATION);
    dn.push(DnType::OrganizationalUnitName, unit);
    dn.push(DnType::CommonName, common);
    dn
}

/// Writes a certificate and its key, refusing to replace either; the key
/// is created with mode 0600.
fn write_pair(dir: &Path, crt: &Path, crt_pem: &str, key: &Path, key_pem: &str) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| cert_error(dir, e))?;
    for p in [crt, key] {
        if p.exists() {
            return Err(cert_error(
                p,
                "already exists; certificates are never replaced",
            ));
        }
    }
    create_new(key, key_pem.as_bytes(), 0o600)?;
    create_new(crt, crt_pem.as_bytes(), 0o644)
}

fn create_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(|e| cert_error(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| cert_error(path, e))
}

/// One certificate found in a certs folder.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Listed {
    /// The file name.
    pub file: String,
    /// `ca`, `node` or `client`.
    pub kind: String,
    /// The node id or user name (the CA's common name for the CA).
    pub name: String,
    /// When it expires, in Unix seconds.
    pub not_after_unix: i64,
    /// When it expires, as RFC 3339.
    pub expires: String,
    /// Whether it has expired.
    pub expired: bool,
    /// Whether its key file is beside it.
    pub has_key: bool,
}

/// Lists the certificates in `dir`, in file-name order.
///
/// # Errors
/// The folder cannot be read, or a `.crt` file is not a certificate.
pub fn list(dir: &Path) -> Result<Vec<Listed>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| cert_error(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    files.sort();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut out = Vec::new();
    for path in files {
        let der = super::read_certs(&path)?
            .into_iter()
            .next()
            .ok_or_else(|| cert_error(&path, "holds no certificate"))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| cert_error(&path, e))?;
        let (kind, name) = match super::identity_of(&der) {
            Some(who) => (who.role.as_str().to_string(), who.name),
            None => {
                let cn = cert
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|c| c.as_str().ok())
                    .unwrap_or("")
                    .to_string();
                ("ca".to_string(), cn)
            }
        };
        let not_after = cert.validity().not_after.timestamp();
        let expires = OffsetDateTime::from_unix_timestamp(not_after)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| not_after.to_string());
        out.push(Listed {
            file: path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind,
            name,
            not_after_unix: not_after,
            expires,
            expired: not_after < now,
            has_key: path.with_extension("key").exists(),
        });
    }
    Ok(out)
}

/// Makes whatever is missing in `dir` for a cluster of `nodes`: the CA,
/// each node's certificate (for localhost) and the operator's
/// `client.root`. Existing files are kept. For demos, benchmarks and tests.
///
/// # Errors
/// A certificate cannot be made or written.
pub fn ensure_cluster(dir: &Path, nodes: &[String]) -> Result<()> {
    if !paths(dir, "ca").0.exists() {
        create_ca(dir, Validity::days(CA_DAYS))?;
    }
    let who = nodes
        .iter()
        .map(|n| Identity::node(n))
        .chain([Identity::client("root")]);
    for w in who {
        if !paths(dir, &stem(&w)).0.exists() {
            create_leaf(dir, &w, &[], Validity::days(LEAF_DAYS))?;
        }
    }
    Ok(())
}
