//! Serving the REST API and the agents' registry over HTTPS, with a certificate the cluster
//! CA issues this manager at each start. The certificate names `localhost`, the host name,
//! the listen address (or, listening on every address, each of the host's) and any
//! `tls_names` from the configuration.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::App;

/// How long in-flight requests may take to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// The names the manager's certificate is issued for.
fn names(app: &App, addr: SocketAddr) -> Vec<String> {
    let mut ips: Vec<IpAddr> = vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()];
    if addr.ip().is_unspecified() {
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for a in addrs {
                let Some(sa) = a.address else { continue };
                if let Some(v4) = sa.as_sockaddr_in() {
                    ips.push(v4.ip().into());
                } else if let Some(v6) = sa.as_sockaddr_in6() {
                    ips.push(v6.ip().into());
                }
            }
        }
    } else {
        ips.push(addr.ip());
    }
    let mut out = vec!["localhost".to_string()];
    if let Ok(h) = nix::unistd::gethostname() {
        out.extend(h.into_string().ok().filter(|h| !h.is_empty()));
    }
    out.extend(ips.into_iter().map(|ip| ip.to_string()));
    out.extend(app.config().tls_names.iter().cloned());
    out.sort();
    out.dedup();
    out
}

/// A rustls server configuration with a fresh certificate from the cluster CA, speaking
/// HTTP/2 (the agents' gRPC) and HTTP/1.1.
pub fn server_config(app: &App, addr: SocketAddr) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let names = names(app, addr);
    let (cert, key) = app
        .cluster_ca()
        .manager_cert(&names)
        .context("issuing the manager's certificate (check tls_names)")?;
    let chain = vec![
        CertificateDer::from_pem_slice(cert.as_bytes())?,
        CertificateDer::from_pem_slice(app.cluster_ca().cert_pem().as_bytes())?,
    ];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let mut config = rustls::ServerConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tracing::info!(names = %names.join(", "), "serving TLS");
    Ok(Arc::new(config))
}

/// Serves `router` over TLS until `shutdown` resolves, then lets requests finish for a
/// bounded time.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(DRAIN));
    });
    axum_server::from_tcp_rustls(
        listener.into_std()?,
        axum_server::tls_rustls::RustlsConfig::from_config(config),
    )?
    .handle(handle)
    .serve(router.into_make_service())
    .await
    .context("serving HTTPS")
}
