//! Rate limiting: the vocabulary (the limit, whose budget a request spends, and what was decided),
//! shared by the instance's own limiter ([`local`]) and the budgets shared through Redis
//! ([`shared`]).

pub mod local;
pub mod shared;

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use actix_web::HttpMessage as _;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use books_domain::{CallerName, Principal};

use crate::representation::problem::ApiError;

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests that may come at once after a quiet spell.
    pub burst: u32,
}

impl RateLimit {
    /// `per_second` sustained with bursts of twice that; `None` for 0 (no limiting).
    pub fn per_second(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| Self {
            per_second,
            burst: per_second.saturating_mul(2),
        })
    }

    /// The time between two requests at the sustained rate.
    pub(crate) fn interval(self) -> Duration {
        Duration::from_secs(1) / self.per_second.max(1)
    }

    /// Whole seconds, rounded up, for the headers.
    pub(crate) fn seconds(duration: Duration) -> u64 {
        duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
    }
}

/// Whose budget a request spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Caller {
    /// The holder of a valid API key, by the key's name.
    Key(String),
    /// The subject of a valid access token, by its digest of issuer and subject
    /// (`KeyDigest::of_subject`, in hexadecimal).
    Subject(String),
    /// Anyone else, by client address.
    Address(Option<IpAddr>),
}

impl Caller {
    /// The caller behind a request: the key's holder when it sent a valid key, else its address
    /// as `keying` groups them.
    pub(crate) fn of(
        principal: Option<&Principal>,
        peer: Option<IpAddr>,
        keying: AddressKeying,
    ) -> Self {
        match principal {
            Some(principal) => match &principal.name {
                CallerName::Key(name) => Self::Key(name.as_str().to_owned()),
                CallerName::Subject { .. } => {
                    Self::Subject(principal.key.0.iter().map(|b| format!("{b:02x}")).collect())
                }
            },
            None => Self::Address(peer.map(|address| keying.group(address))),
        }
    }

    /// The caller behind a request that has been admitted (see `auth::admit`).
    pub(crate) fn of_request(request: &actix_web::HttpRequest) -> Self {
        let keying = request
            .app_data::<actix_web::web::Data<AddressKeying>>()
            .map_or_else(AddressKeying::default, |keying| *keying.get_ref());
        Self::of(
            request.extensions().get::<Principal>(),
            request.peer_addr().map(|address| address.ip()),
            keying,
        )
    }
}

/// How callers without a key are told apart: by address, and IPv6 ones by their network prefix,
/// a /64 by default. A site is usually given a whole /64, and could otherwise take a fresh budget
/// (and a fresh entry in the limiter's memory) with every address it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AddressKeying {
    ipv6_prefix: u8,
}

impl Default for AddressKeying {
    fn default() -> Self {
        Self { ipv6_prefix: 64 }
    }
}

impl AddressKeying {
    /// IPv6 callers grouped by their first `ipv6_prefix` bits (at most 128).
    pub(crate) fn new(ipv6_prefix: u8) -> Self {
        Self {
            ipv6_prefix: ipv6_prefix.min(128),
        }
    }

    /// The address standing for `address`'s group: an IPv4 address itself (an IPv4-mapped IPv6
    /// address as the IPv4 one), an IPv6 one with the bits past the prefix cleared.
    pub(crate) fn group(self, address: IpAddr) -> IpAddr {
        match address {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u128::from(v6);
                    let mask = u128::MAX
                        .checked_shl(128 - u32::from(self.ipv6_prefix))
                        .unwrap_or(0);
                    IpAddr::V6(Ipv6Addr::from(bits & mask))
                }
            },
        }
    }
}

/// The outcome of one request's check.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    limit: u64,
    /// The seconds in which `limit` requests are allowed at the sustained rate.
    window: u64,
    remaining: u64,
    /// Seconds until a request is allowed (when refused) or the budget is full (when allowed).
    reset: u64,
}

impl Decision {
    pub(crate) fn new(allowed: bool, limit: RateLimit, remaining: u64, reset: u64) -> Self {
        Self {
            allowed,
            limit: u64::from(limit.burst),
            window: RateLimit::seconds(limit.interval() * limit.burst).max(1),
            remaining,
            reset,
        }
    }

    /// Seconds until a request is allowed (refused) or the budget is full (allowed).
    #[cfg(test)]
    pub(crate) fn reset(&self) -> u64 {
        self.reset
    }

    /// The 429 for a request that was not allowed.
    pub(crate) fn refusal(&self) -> ApiError {
        ApiError::TooManyRequests {
            detail: format!("too many requests; retry in {} s", self.reset),
            retry_after: self.reset,
        }
    }

    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and `RateLimit-Policy`, for
    /// every answer, as the IETF draft on RateLimit header fields (draft-06) has them. The budget
    /// is a bucket of `limit` requests (the burst) refilled at the sustained rate, which is the
    /// same as `limit` requests per window of `limit / rate` seconds: `RateLimit-Limit: 200` with
    /// `RateLimit-Policy: 200;w=2` for 100 per second with bursts of 200. `Remaining` is what the
    /// bucket holds now, `Reset` the seconds until it is full again (or, refused, until the next
    /// request is allowed).
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("ratelimit-limit", self.limit),
            ("ratelimit-remaining", self.remaining),
            ("ratelimit-reset", self.reset),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
        if let Ok(policy) = HeaderValue::from_str(&format!("{};w={}", self.limit, self.window)) {
            headers.insert(HeaderName::from_static("ratelimit-policy"), policy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_callers_are_grouped_by_their_prefix_and_ipv4_ones_by_address() {
        let keying = AddressKeying::default();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        // Two addresses of one /64: one caller; of two /64s: two.
        assert_eq!(
            keying.group(ip("2001:db8:1:2:aaaa::1")),
            keying.group(ip("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_eq!(keying.group(ip("2001:db8:1:2::9")), ip("2001:db8:1:2::"));
        assert_ne!(
            keying.group(ip("2001:db8:1:2::1")),
            keying.group(ip("2001:db8:1:3::1"))
        );
        // IPv4, and IPv4 mapped into IPv6, by the whole address.
        assert_eq!(keying.group(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(keying.group(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(keying.group(ip("192.0.2.7")), keying.group(ip("192.0.2.8")));
        // The prefix is a setting: /128 is one caller per address, /48 one per site.
        assert_ne!(
            AddressKeying::new(128).group(ip("2001:db8::1")),
            AddressKeying::new(128).group(ip("2001:db8::2"))
        );
        assert_eq!(
            AddressKeying::new(48).group(ip("2001:db8:1:2::1")),
            ip("2001:db8:1::")
        );
        assert_eq!(AddressKeying::new(0).group(ip("2001:db8::1")), ip("::"));
    }
}
