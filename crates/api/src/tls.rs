//! The API over TCP, only with mutual TLS: the API gives root on the
//! machine, so a client must present a certificate signed by the CA the
//! daemon trusts (docker's `--tlsverify` model), and the daemon proves
//! itself with its own certificate.

use std::io;
use std::path::Path;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tower::ServiceExt as _;

pub use rustls::ServerConfig;

use crate::AppState;

fn bad(what: &str, path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what} {}: {e}", path.display()))
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad("reading certificates", path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("reading certificates", path, e))?;
    if certs.is_empty() {
        return Err(bad("reading certificates", path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| bad("reading the private key", path, e))
}

/// The CA roots in a PEM file.
pub fn load_roots(path: &Path) -> io::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| bad("using the CA certificate", path, e))?;
    }
    Ok(roots)
}

/// The crypto provider (ring: what the rest of the tree already builds).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config that requires client certificates signed by `ca`.
pub fn server_config(ca: &Path, cert: &Path, key: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    let roots = Arc::new(load_roots(ca)?);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| bad("building the client verifier for", ca, e))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| bad("using the certificate", cert, e))?;
    Ok(Arc::new(cfg))
}

/// Serves the API on `listener`, each connection after a TLS handshake
/// that verified the client's certificate. A failed handshake just drops
/// that connection.
pub async fn serve_tls(
    engine: AppState,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = crate::router(engine).map_request(crate::strip_version);
    loop {
        let (tcp, _peer) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}
