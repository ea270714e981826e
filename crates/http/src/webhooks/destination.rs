//! Where a webhook may be delivered: not to the service's own network unless the operator says
//! so.
//!
//! A subscription's URL could otherwise point the service at what only it can reach (a database,
//! a cloud's metadata endpoint at 169.254.169.254, an admin port on loopback): server-side
//! request forgery. The host is checked when a subscription is made or changed (422), and again
//! at every connection, by the resolver the delivering client uses ([`CheckingResolver`]), so a
//! name that resolved to a public address when the subscription was made and to a private one
//! later (DNS rebinding) is still refused.

use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use actix_tls::connect::Resolve;
use books_domain::WebhookUrl;
use futures_util::future::LocalBoxFuture;

/// True for an address the service must not deliver to without `--webhooks-allow-private`:
/// loopback, private, shared (carrier-grade NAT), link-local, unique-local, unspecified,
/// broadcast and multicast ones, and IPv6 forms of the IPv4 ones.
pub(crate) fn is_internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7, unique local.
                || first & 0xfe00 == 0xfc00
                // fe80::/10, link-local.
                || first & 0xffc0 == 0xfe80
                // ::/96, IPv4-compatible (deprecated, and routes to IPv4).
                || (v6.segments()[..6] == [0; 6] && v6 != Ipv6Addr::UNSPECIFIED)
        }
    }
}

fn is_internal_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        // 0.0.0.0/8 ("this network") and 100.64.0.0/10 (shared address space).
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

/// Why a destination is refused, in words for the subscriber.
pub(crate) type Refusal = String;

/// Checks a subscription's URL: its host must resolve, and (unless `allow_internal`) to public
/// addresses only.
pub(crate) async fn check(url: &WebhookUrl, allow_internal: bool) -> Result<(), Refusal> {
    let addresses = resolve(url.host(), url.port()).await?;
    if !allow_internal && let Some(internal) = addresses.iter().find(|a| is_internal(a.ip())) {
        return Err(format!(
            "{} is an internal address ({}); the service delivers only to public ones",
            url.host(),
            internal.ip()
        ));
    }
    Ok(())
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| format!("{host} does not resolve"))?
        .collect();
    if found.is_empty() {
        return Err(format!("{host} does not resolve"));
    }
    Ok(found)
}

/// The delivering client's resolver: a name resolves to its public addresses only (unless
/// internal ones are allowed). A host that is an IP address never reaches a resolver, so the
/// delivering side checks those itself ([`is_internal`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckingResolver {
    pub(crate) allow_internal: bool,
}

impl Resolve for CheckingResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<SocketAddr>, Box<dyn StdError>>> {
        Box::pin(async move {
            let found = resolve(host, port).await?;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|address| self.allow_internal || !is_internal(address.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to internal addresses only").into());
            }
            Ok(allowed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised_in_every_form() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in ["8.8.8.8", "93.184.216.34", "100.128.0.1", "2606:4700::1111"] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[actix_web::test]
    async fn a_url_to_loopback_is_refused_unless_allowed() {
        let url = WebhookUrl::parse("http://localhost:9/hook").unwrap();
        assert!(check(&url, false).await.is_err());
        assert!(check(&url, true).await.is_ok());
        let literal = WebhookUrl::parse("http://[::ffff:169.254.169.254]/").unwrap();
        assert!(
            check(&literal, false)
                .await
                .unwrap_err()
                .contains("internal")
        );
        let nowhere = WebhookUrl::parse("http://no-such-host.invalid/").unwrap();
        assert!(
            check(&nowhere, true)
                .await
                .unwrap_err()
                .contains("does not resolve")
        );
    }
}
