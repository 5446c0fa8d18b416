//! Who may talk to a node: TLS 1.3 with certificates from the cluster's CA
//! on peer links and on the admin API, and the identity each certificate
//! carries.
//!
//! A node presents `node.<ID>.crt` as server and as client. It accepts a
//! peer link only from a node certificate whose id is the hello's node,
//! and it dials a peer only if the answering certificate is that peer's
//! node certificate. Host names are not what a node checks: the identity
//! in the certificate is. Operators and tools present `client.<NAME>.crt`
//! (or a bearer token; see the README, "Members only").

pub mod certs;
pub(crate) mod listener;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A cluster member: peer links, `/internal/*`, and reads.
    Node,
    /// An operator or a tool: the admin API.
    Client,
}

impl Role {
    /// `node` or `client`, as in the file names and the subject.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Client => "client",
        }
    }
}

/// Who a certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Node or client.
    pub role: Role,
    /// The node id or the user name.
    pub name: String,
}

impl Identity {
    /// A node's identity.
    pub fn node(id: &str) -> Self {
        Identity {
            role: Role::Node,
            name: id.to_string(),
        }
    }

    /// An operator's or tool's identity.
    pub fn client(name: &str) -> Self {
        Identity {
            role: Role::Client,
            name: name.to_string(),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.role.as_str(), self.name)
    }
}

/// The identity in a Cairn leaf certificate (organisation `Cairn`, unit
/// `node` or `client`, common name the id); `None` for anything else,
/// a CA included.
pub fn identity_of(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let one = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    if one(&mut subject.iter_organization())? != certs::ORGANISATION {
        return None;
    }
    let role = match one(&mut subject.iter_organizational_unit())?.as_str() {
        "node" => Role::Node,
        "client" => Role::Client,
        _ => return None,
    };
    let name = one(&mut subject.iter_common_name())?;
    Some(Identity { role, name })
}

/// The identity in the certificate the other end of a TLS connection
/// presented, if it presented a Cairn one.
fn peer_identity(conn: &rustls::CommonState) -> Option<Identity> {
    identity_of(conn.peer_certificates()?.first()?)
}

/// Reads every certificate in a PEM file.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bad = |e: &dyn std::fmt::Display| Error::Tls(format!("{}: {e}", path.display()));
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"holds no certificate"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))
}

/// Anything a connection can be: plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A boxed connection, whichever it is.
pub type BoxIo = Box<dyn Io>;

/// The reading half of a connection, whichever it is.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection, whichever it is.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Splits a connection into halves: a plain TCP stream without a lock
/// between them (its halves are independent), TLS through tokio's split.
pub(crate) fn split_tcp(tcp: crate::net::Stream) -> (BoxRead, BoxWrite) {
    tcp.into_split()
}

/// As [`split_tcp`], for a TLS stream (whose halves share one state).
pub(crate) fn split_tls<S: Io + 'static>(tls: S) -> (BoxRead, BoxWrite) {
    let (r, w) = tokio::io::split(tls);
    (Box::new(r), Box::new(w))
}

/// The TLS set-up of one process: what it presents and whom it trusts.
#[derive(Clone)]
pub struct Security {
    /// The identity this process presents.
    pub me: Option<Identity>,
    /// The folder the certificates came from.
    pub certs_dir: PathBuf,
    server: Option<Arc<ServerConfig>>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("me", &self.me)
            .field("certs_dir", &self.certs_dir)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{what}: {e}"))
}

impl Security {
    /// Loads the CA from `certs_dir`, and the certificate of `me` when
    /// given (a node always has one; a client may use a token instead).
    ///
    /// # Errors
    /// A file is missing or unreadable, or the certificate does not name
    /// `me`.
    pub fn load(certs_dir: &Path, me: Option<&Identity>) -> Result<Self> {
        let provider = provider();
        let (ca_path, _) = certs::paths(certs_dir, "ca");
        let mut roots = RootCertStore::empty();
        for c in read_certs(&ca_path)? {
            roots
                .add(c)
                .map_err(|e| tls_error(&ca_path.display().to_string(), e))?;
        }
        let roots = Arc::new(roots);
        let mine = match me {
            Some(who) => {
                let (crt, key) = certs::paths(certs_dir, &certs::stem(who));
                let chain = read_certs(&crt)?;
                let named = identity_of(&chain[0]);
                if named.as_ref() != Some(who) {
                    return Err(Error::Tls(format!(
                        "{}: names {}, not {who}",
                        crt.display(),
                        named.map_or("no Cairn identity".into(), |n| n.to_string())
                    )));
                }
                Some((chain, read_key(&key)?))
            }
            None => None,
        };
        let verifier = Arc::new(NodeServerVerifier {
            roots: roots.clone(),
            algs: provider.signature_verification_algorithms,
        });
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error("client", e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let client = match &mine {
            Some((chain, key)) => client
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| tls_error("client certificate", e))?,
            None => client.with_no_client_auth(),
        };
        let server = match (&mine, me.map(|m| m.role)) {
            (Some((chain, key)), Some(Role::Node)) => {
                // A client certificate is optional at the handshake: the
                // admin API also takes tokens, and a peer link without one
                // is refused by name once it is up.
                let verify = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| tls_error("client verifier", e))?;
                let cfg = ServerConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(|e| tls_error("server", e))?
                    .with_client_cert_verifier(verify)
                    .with_single_cert(chain.clone(), key.clone_key())
                    .map_err(|e| tls_error("server certificate", e))?;
                Some(Arc::new(cfg))
            }
            _ => None,
        };
        Ok(Security {
            me: me.cloned(),
            certs_dir: certs_dir.to_path_buf(),
            server,
            client: Arc::new(client),
        })
    }

    /// The client side: presents this process's certificate, trusts any
    /// node certificate of the cluster's CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// Wraps an accepted connection in TLS and says who is on the other
    /// end (`None`: no client certificate).
    pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> Result<(tokio_rustls::server::TlsStream<S>, Option<Identity>)> {
        let server = self
            .server
            .clone()
            .ok_or_else(|| Error::Tls("only a node serves TLS".into()))?;
        let tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(stream)
            .await
            .map_err(|e| Error::Tls(format!("handshake: {e}")))?;
        let who = peer_identity(tls.get_ref().1);
        Ok((tls, who))
    }

    /// Dials TLS over `stream` and checks that the server is the node
    /// `expected` (any node when `None`).
    pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        expected: Option<&str>,
    ) -> Result<tokio_rustls::client::TlsStream<S>> {
        let name = ServerName::try_from("cairn.node").expect("a valid DNS name");
        let tls = tokio_rustls::TlsConnector::from(self.client.clone())
            .connect(name, stream)
            .await
            .map_err(|e| Error::Tls(format!("handshake: {e}")))?;
        if let Some(want) = expected {
            let who = peer_identity(tls.get_ref().1);
            if who.as_ref() != Some(&Identity::node(want)) {
                return Err(Error::Tls(format!(
                    "expected node {want}'s certificate, the server presented {}",
                    who.map_or("no Cairn identity".into(), |w| w.to_string())
                )));
            }
        }
        Ok(tls)
    }
}

/// Trusts a server certificate that chains to the cluster's CA and names
/// a node; host names play no part (the node's identity does).
#[derive(Debug)]
struct NodeServerVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        match identity_of(end_entity) {
            Some(Identity {
                role: Role::Node, ..
            }) => Ok(ServerCertVerified::assertion()),
            other => Err(rustls::Error::General(format!(
                "the server's certificate is not a node's ({})",
                other.map_or("no Cairn identity".into(), |w| w.to_string())
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
