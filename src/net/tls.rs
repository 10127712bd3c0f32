//! TLS clients (rustls, ring provider): one client configuration, the public web roots plus the
//! certificates of an optional private CA file, for `https://` and `wss://` (ARI's REST and event
//! WebSocket, a bot's `wss://`); and the `ureq` connector that turns TCP keepalive on first.

use std::path::Path;
use std::sync::Arc;

use super::tcp;

/// TLS client settings: the public web roots, plus the certificates of `ca_file` (PEM) for a
/// server with a private or self-signed certificate.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in certs {
            let cert =
                cert.map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: unusable certificate: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A `ureq` agent's TLS connector: turns TCP keepalive on for the socket, then does what ureq's
/// own rustls connector does.
///
/// This is the only place ureq 2.12 lets voicebot1 touch a socket: it opens them itself
/// (`connect_host` in its `stream.rs`: resolve, `TcpStream::connect_timeout`, nodelay, timeouts),
/// its `Resolver` only returns addresses and its `Middleware` sees requests, not streams; only a
/// TLS connector is handed the stream (`ReadWrite::socket`). So `https://` connections get
/// keepalive and plain `http://` ones cannot; on those the request timeout is what bounds a
/// request sent on a pooled connection whose peer vanished.
pub struct KeepAliveTls(pub Arc<rustls::ClientConfig>);

impl ureq::TlsConnector for KeepAliveTls {
    fn connect(
        &self,
        dns_name: &str,
        io: Box<dyn ureq::ReadWrite>,
    ) -> std::result::Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        if let Some(socket) = io.socket() {
            tcp::keep_alive(socket)?;
        }
        ureq::TlsConnector::connect(&self.0, dns_name, io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn https_connections_get_tcp_keepalive_before_the_tls_handshake() {
        use std::net::{TcpListener, TcpStream};
        let tls = client_config(None).expect("the public roots make a TLS configuration");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // The server hangs up at once, so the handshake fails; what matters is the socket under it.
        drop(listener.accept().unwrap());
        let probe = stream.try_clone().unwrap();
        let result = ureq::TlsConnector::connect(&KeepAliveTls(tls), "localhost", Box::new(stream));
        assert!(
            result.is_err(),
            "a TLS handshake with a closed peer succeeded"
        );
        let sock = socket2::SockRef::from(&probe);
        assert!(
            sock.keepalive().unwrap(),
            "keepalive is off on an https connection"
        );
        assert_eq!(sock.keepalive_time().unwrap(), tcp::KEEPALIVE_IDLE);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("vb1-tls-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = client_config(Some(&path)).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(e.ends_with("holds no PEM certificate"), "{e}");
    }
}
