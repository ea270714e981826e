//! TLS for the service's own outbound calls (webhook deliveries, the OpenID Connect issuer's
//! keys): rustls with ring, the public roots of webpki-roots and the operator's own, HTTP/1.1.

use std::sync::Arc;

/// A client configuration trusting the public roots and `trusted_roots` (DER certificates, from
/// the file that `setting` names: a certificate there that is no usable root is left out, and
/// logged).
pub(crate) fn client_config(trusted_roots: &[Vec<u8>], setting: &str) -> Arc<rustls::ClientConfig> {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in trusted_roots {
        if let Err(error) = roots.add(rustls::pki_types::CertificateDer::from(der.clone())) {
            tracing::warn!(error = %error, "a certificate of {setting} is not a usable root; it is left out");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        Err(error) => {
            // Only a provider without the default versions fails here; ring has them.
            tracing::error!(error = %error, "outbound calls cannot use TLS");
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
