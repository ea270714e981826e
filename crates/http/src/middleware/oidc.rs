//! OpenID Connect access tokens, beside API keys: a bearer that is a JWT is checked against the
//! keys of one issuer (`--oidc-issuer`), for one audience (`--oidc-audience`).
//!
//! - **Keys.** The issuer's discovery document (`{issuer}/.well-known/openid-configuration`)
//!   names its `jwks_uri`; the keys found there are cached as long as the answer's
//!   `Cache-Control: max-age` says ([`OidcSettings::default_max_age`] when it says nothing), and
//!   refreshed in the background. A token signed by a key id the cache does not know makes the
//!   keys fetched again, once for all the requests waiting then, and at most every
//!   [`OidcSettings::refetch_after`]: a rotation needs no restart, and made-up key ids cannot
//!   make the service hammer the issuer. While a refresh fails, the keys already cached stay in
//!   use.
//! - **Checks.** Only RS256, ES256 and EdDSA, as the token's header says *and* as the key's own
//!   type and `alg` say: never `none`, never HS256 (the key-confusion attack signs with the RSA
//!   public key as an HMAC secret), never a key of another type. Then the signature, `iss` equal
//!   to the issuer, `aud` holding the audience, `exp` and `nbf` with
//!   [`OidcSettings::leeway`], and a `sub`.
//! - **Caller.** `iss` + `sub` ([`Principal::subject`]): what belongs to a caller (idempotency
//!   keys, rate limit, webhook subscriptions) is never shared with an API key or another
//!   subject. The `scope` claim (a space-separated string, or a list) grants `books:write`, the
//!   keys' `write`; any other token is a reader (reads are open anyway).
//! - **Failure.** A token that fails a check is a 401 whose description names the check, never
//!   a key or an internal error. A token whose key is not cached while the issuer cannot be
//!   reached is a 503 with `Retry-After`: its caller may well be valid. API keys do not depend
//!   on the issuer. The issuer's going out of reach, and coming back, is logged once each.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::web;
use anyhow::{Context as _, bail};
use books_domain::{Principal, Scope};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;

use crate::representation::problem::ApiError;

/// How tokens are checked.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The issuer, exactly as its tokens' `iss` says (`https://id.example.com/realms/books`).
    pub issuer: String,
    /// What the tokens' `aud` must hold (`books-api`).
    pub audience: String,
    /// The clock skew allowed on `exp` and `nbf` (60 s).
    pub leeway: Duration,
    /// The least time between two fetches of the keys made for unknown key ids (30 s); also the
    /// longest wait between two attempts while the issuer cannot be reached.
    pub refetch_after: Duration,
    /// How long keys are cached when the issuer's answer does not say (5 minutes).
    pub default_max_age: Duration,
    /// How long one fetch (discovery, then keys) may take (5 s).
    pub timeout: Duration,
    /// Certificates (DER) trusted for an `https` issuer beside the public roots.
    pub trusted_roots: Vec<Vec<u8>>,
}

impl OidcSettings {
    /// The settings for `issuer` and `audience`, the rest as documented.
    pub fn new(issuer: &str, audience: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway: Duration::from_secs(60),
            refetch_after: Duration::from_secs(30),
            default_max_age: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
            trusted_roots: Vec::new(),
        }
    }

    /// Where the issuer describes itself.
    pub fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }
}

/// The algorithms a token may be signed with.
const ACCEPTED: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// A verification key of the issuer, and the one algorithm it verifies.
struct SigningKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

/// The issuer's keys as last fetched.
struct Keys {
    by_id: HashMap<String, SigningKey>,
    /// When they were fetched (`None`: never).
    fetched: Option<Instant>,
    /// How long they may be used before a refresh.
    max_age: Duration,
}

/// What the issuer's state reports to `/readyz`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct IssuerStatus {
    pub(crate) issuer: String,
    pub(crate) reachable: bool,
    pub(crate) keys: usize,
    pub(crate) keys_age_seconds: Option<u64>,
}

/// The issuer's keys, shared by all workers, and the checks tokens pass.
pub(crate) struct Issuer {
    settings: OidcSettings,
    validation: HashMap<Algorithm, Validation>,
    keys: RwLock<Keys>,
    /// Held by the one fetch that requests with an unknown key id wait for; it also says when
    /// the last fetch began.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    /// False while the last fetch failed.
    reachable: AtomicBool,
    /// True once a fetch has been attempted (before it, nothing is known to be out of reach).
    attempted: AtomicBool,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

/// Why a token was not accepted.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// It fails a check: a 401 saying which (words of ours, never the library's).
    Invalid(&'static str),
    /// Its key id is not among the cached keys.
    UnknownKey,
}

/// The claims read from a token (the library checks `exp`, `nbf`, `iss` and `aud` itself).
#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    #[serde(default)]
    scope: Option<Scopes>,
}

/// `scope` as a space-separated string (RFC 9068) or, as some providers write it, a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scopes {
    Text(String),
    List(Vec<String>),
}

impl Scopes {
    fn grants(&self, wanted: &str) -> bool {
        match self {
            Self::Text(text) => text.split_ascii_whitespace().any(|scope| scope == wanted),
            Self::List(list) => list.iter().any(|scope| scope == wanted),
        }
    }
}

/// The scope claim that grants writing.
pub(crate) const WRITE_SCOPE: &str = "books:write";

impl Issuer {
    /// An issuer with no keys yet: the first fetch is the background task's, or the first
    /// token's.
    pub(crate) fn new(settings: OidcSettings) -> Self {
        let validation = ACCEPTED
            .into_iter()
            .map(|algorithm| {
                let mut validation = Validation::new(algorithm);
                validation.set_issuer(&[&settings.issuer]);
                validation.set_audience(&[&settings.audience]);
                validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
                validation.validate_nbf = true;
                validation.leeway = settings.leeway.as_secs();
                (algorithm, validation)
            })
            .collect();
        Self {
            settings,
            validation,
            keys: RwLock::new(Keys {
                by_id: HashMap::new(),
                fetched: None,
                max_age: Duration::ZERO,
            }),
            fetching: tokio::sync::Mutex::new(None),
            reachable: AtomicBool::new(true),
            attempted: AtomicBool::new(false),
        }
    }

    /// The caller a token stands for, checked with the cached keys only (no I/O).
    fn check(&self, token: &str) -> Result<Principal, Refusal> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refusal::Invalid("the token is not a signed JWT"))?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(Refusal::Invalid(
                "the token is signed with an algorithm other than RS256, ES256 or EdDSA",
            ));
        }
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = match &header.kid {
            Some(id) => keys.by_id.get(id),
            // Without a key id, only an issuer with one key of the token's algorithm is
            // unambiguous.
            None => {
                let mut candidates = keys
                    .by_id
                    .values()
                    .filter(|key| key.algorithm == header.alg);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        }
        .ok_or(Refusal::UnknownKey)?;
        if key.algorithm != header.alg {
            return Err(Refusal::Invalid(
                "the token's algorithm is not the one of the key it names",
            ));
        }
        let validation = &self.validation[&header.alg];
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, validation)
            .map_err(|error| Refusal::Invalid(describe(error.kind())))?
            .claims;
        drop(keys);
        if claims.sub.is_empty() {
            return Err(Refusal::Invalid("the token has no subject"));
        }
        let scope = if claims
            .scope
            .as_ref()
            .is_some_and(|scopes| scopes.grants(WRITE_SCOPE))
        {
            Scope::Write
        } else {
            Scope::Read
        };
        Ok(Principal::subject(&claims.iss, &claims.sub, scope))
    }

    /// The caller a token stands for: checked with the cached keys, and when its key id is not
    /// among them, with the keys fetched again (at most every [`OidcSettings::refetch_after`]).
    ///
    /// # Errors
    ///
    /// 401 for a token that fails a check or whose key the issuer does not publish; 503 while
    /// its key is not cached and the issuer cannot be reached.
    pub(crate) async fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        match self.check(token) {
            Ok(principal) => return Ok(principal),
            Err(Refusal::Invalid(why)) => return Err(invalid_token(why)),
            Err(Refusal::UnknownKey) => {}
        }
        self.fetch_for_unknown_key().await;
        match self.check(token) {
            Ok(principal) => Ok(principal),
            Err(Refusal::Invalid(why)) => Err(invalid_token(why)),
            Err(Refusal::UnknownKey) if self.reachable.load(Ordering::Relaxed) => Err(
                invalid_token("the issuer does not publish the key the token is signed with"),
            ),
            Err(Refusal::UnknownKey) => Err(ApiError::Busy(
                "the token's issuer cannot be reached to fetch its keys; retry shortly (API keys keep working)"
                    .to_owned(),
            )),
        }
    }

    /// The caller a token stands for when the cached keys decide it, without waiting for a
    /// fetch: `Some(Ok)` for a valid token, `Some(Err)` for one that fails a check, `None` when
    /// its key id is not cached (then [`Issuer::verify`] fetches).
    pub(crate) fn verify_cached(&self, token: &str) -> Option<Result<Principal, ApiError>> {
        match self.check(token) {
            Ok(principal) => Some(Ok(principal)),
            Err(Refusal::Invalid(why)) => Some(Err(invalid_token(why))),
            Err(Refusal::UnknownKey) => None,
        }
    }

    /// Fetches the keys for a key id they do not hold: once for all the requests waiting then,
    /// and not again within [`OidcSettings::refetch_after`] of the last fetch.
    async fn fetch_for_unknown_key(&self) {
        let arrived = Instant::now();
        let mut last = self.fetching.lock().await;
        // A fetch that began after this request arrived already answers for it.
        if last.is_some_and(|began| began > arrived) {
            return;
        }
        if last.is_some_and(|began| began.elapsed() < self.settings.refetch_after) {
            return;
        }
        *last = Some(Instant::now());
        self.refresh().await;
    }

    /// Fetches the discovery document, then the keys, and takes them in; a failure leaves the
    /// cached keys in use. Going out of reach, and coming back, is logged once each.
    async fn refresh(&self) {
        match self.fetch().await {
            Ok((keys, max_age)) => {
                let count = keys.len();
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Keys {
                    by_id: keys,
                    fetched: Some(Instant::now()),
                    max_age,
                };
                if !self.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!(issuer = %self.settings.issuer, keys = count, "the OpenID Connect issuer can be reached again");
                } else {
                    tracing::debug!(issuer = %self.settings.issuer, keys = count, ?max_age, "fetched the OpenID Connect issuer's keys");
                }
            }
            Err(error) => {
                if self.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(issuer = %self.settings.issuer, error = format!("{error:#}"), "the OpenID Connect issuer cannot be reached: tokens signed by keys not cached get 503 until it can (API keys keep working)");
                } else {
                    tracing::debug!(
                        error = format!("{error:#}"),
                        "the OpenID Connect issuer still cannot be reached"
                    );
                }
            }
        }
        // Marked only once the outcome is in `reachable`: a status read while the first fetch
        // is under way must not report an issuer it has not reached yet.
        self.attempted.store(true, Ordering::Release);
    }

    /// The issuer's keys, and how long they may be cached.
    async fn fetch(&self) -> anyhow::Result<(HashMap<String, SigningKey>, Duration)> {
        let client = self.client();
        let discovery_url = self.settings.discovery_url();
        let (discovery, _) = get_json::<Discovery>(&client, &discovery_url)
            .await
            .with_context(|| format!("reading {discovery_url}"))?;
        // OpenID Connect Discovery 1.0, 4.3: the document must name the issuer it was asked of.
        if discovery.issuer != self.settings.issuer {
            bail!(
                "{discovery_url} names the issuer {:?}, not {:?}: set --oidc-issuer to exactly what the tokens' iss says",
                discovery.issuer,
                self.settings.issuer
            );
        }
        let (set, cache_control) = get_json::<KeySet>(&client, &discovery.jwks_uri)
            .await
            .with_context(|| format!("reading {}", discovery.jwks_uri))?;
        let keys: HashMap<String, SigningKey> = set
            .keys
            .into_iter()
            .filter_map(|raw| {
                // A key of a type this service does not use (an encryption key, say) is left out,
                // not a reason to refuse the others.
                let jwk: Jwk = serde_json::from_value(raw).ok()?;
                let id = jwk.common.key_id.clone()?;
                Some((id, signing_key(&jwk)?))
            })
            .collect();
        let max_age = cache_control
            .as_deref()
            .and_then(max_age)
            .unwrap_or(self.settings.default_max_age)
            .clamp(self.settings.refetch_after, Duration::from_secs(86_400));
        Ok((keys, max_age))
    }

    fn client(&self) -> awc::Client {
        let connector = awc::Connector::new()
            .rustls_0_23(crate::tls::client_config(
                &self.settings.trusted_roots,
                "OIDC_CA_FILE",
            ))
            .timeout(self.settings.timeout);
        awc::Client::builder()
            .connector(connector)
            .timeout(self.settings.timeout)
            .add_default_header(("user-agent", "books-api"))
            .finish()
    }

    /// Keeps the keys fresh: refreshes them when they are older than their cache age, and while
    /// the issuer cannot be reached, tries again after 1 s, 2 s, 4 s… up to
    /// [`OidcSettings::refetch_after`]. The first fetch is at start.
    pub(crate) async fn refresh_periodically(issuer: web::Data<Self>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            {
                let mut last = issuer.fetching.lock().await;
                *last = Some(Instant::now());
                issuer.refresh().await;
            }
            let wait = if issuer.reachable.load(Ordering::Relaxed) {
                backoff = Duration::from_secs(1);
                let keys = issuer
                    .keys
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                keys.fetched.map_or(Duration::ZERO, |at| {
                    keys.max_age.saturating_sub(at.elapsed())
                })
            } else {
                let wait = backoff;
                backoff = (backoff * 2).min(issuer.settings.refetch_after);
                wait
            };
            actix_web::rt::time::sleep(wait.max(Duration::from_millis(100))).await;
        }
    }

    /// The issuer, whether it could be reached last time, and its keys.
    pub(crate) fn status(&self) -> IssuerStatus {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        IssuerStatus {
            issuer: self.settings.issuer.clone(),
            reachable: self.attempted.load(Ordering::Acquire)
                && self.reachable.load(Ordering::Relaxed),
            keys: keys.by_id.len(),
            keys_age_seconds: keys.fetched.map(|at| at.elapsed().as_secs()),
        }
    }
}

/// A bearer that looks like a JWT (three dot-separated parts); API keys never do.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

fn invalid_token(why: &'static str) -> ApiError {
    ApiError::Unauthorized {
        detail: why.to_owned(),
        invalid_token: true,
    }
}

/// Words of ours for each reason a token fails: the library's own messages may say more than a
/// client should read.
fn describe(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidAudience => "the token is not meant for this service (aud)",
        ErrorKind::InvalidIssuer => "the token is not from the configured issuer (iss)",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::MissingRequiredClaim(_) => {
            "the token lacks a required claim (exp, iss, aud or sub)"
        }
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token's algorithm is not accepted"
        }
        _ => "the token is not valid",
    }
}

/// The key a JWK stands for, with the one algorithm it verifies: an RSA key RS256, a P-256 key
/// ES256, an Ed25519 key EdDSA. A key whose own `alg` names another algorithm, whose `use` is
/// not `sig`, or of any other type or curve, is none.
fn signing_key(jwk: &Jwk) -> Option<SigningKey> {
    if matches!(&jwk.common.public_key_use, Some(usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let stated = jwk.common.key_algorithm.map(|stated| match stated {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    });
    if stated.is_some_and(|stated| stated != Some(algorithm)) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(SigningKey { key, algorithm })
}

/// `max-age` of a `Cache-Control` value; zero for `no-store` and `no-cache`.
fn max_age(cache_control: &str) -> Option<Duration> {
    let mut age = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            age = seconds
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

/// The most a discovery document or a key set may weigh.
const MOST_BYTES: usize = 256 * 1024;

/// GETs `url` as JSON, with its `Cache-Control`.
async fn get_json<T: serde::de::DeserializeOwned>(
    client: &awc::Client,
    url: &str,
) -> anyhow::Result<(T, Option<String>)> {
    let mut response = client
        .get(url)
        .insert_header(("accept", "application/json"))
        .send()
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    if !response.status().is_success() {
        bail!("answered {}", response.status());
    }
    let cache_control = response
        .headers()
        .get("cache-control")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response
        .body()
        .limit(MOST_BYTES)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok((serde_json::from_slice(&body)?, cache_control))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_control_max_age_is_read_and_no_cache_means_none() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-cache"), Some(Duration::ZERO));
        assert_eq!(max_age("max-age=60, no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }

    #[test]
    fn only_three_part_bearers_are_taken_for_tokens() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt(
            "bk_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        ));
        assert!(!looks_like_jwt("a.b"));
    }

    #[test]
    fn a_key_is_used_only_for_the_algorithm_of_its_type() {
        let rsa: Jwk = serde_json::from_value(serde_json::json!({
            "kty": "RSA", "kid": "r", "e": "AQAB",
            "n": "16duuj6Sw1AE2S18pmPnXcVdkyJI2kLgMRYImEZ5eEQSrOJyNzVsxdvKPT0qPVpVLO-V_RkuJ91i56n6bkujbZltBa-Cgsw2RKmcaS4OPZIarCTt8QDOVacsjVrMSPOpXZ1UWlaLy1UR_4PHr9Pzvl0VEUr7VAaT9bHswWSrZ7bsJPBMmCi2v_JabVzPqb9Z8hONQF3QpWL9eWoZkS3FrqJ7tJ6PvB-lNc3cmwLyD_BOYA14aZ1LWZ31UZxNGrbTYxBTCe9HtGouF6zElDtVX_2S6iq4R5QJSpJy4zMT_eUddS9rREE1P69JxjZVoMYZ_fE4qOl43BDClErcg3htuw"
        }))
        .unwrap();
        assert_eq!(signing_key(&rsa).unwrap().algorithm, Algorithm::RS256);
        let mut stated_otherwise = rsa.clone();
        stated_otherwise.common.key_algorithm = Some(KeyAlgorithm::PS256);
        assert!(signing_key(&stated_otherwise).is_none());
        let mut for_encryption = rsa;
        for_encryption.common.public_key_use = Some(PublicKeyUse::Encryption);
        assert!(signing_key(&for_encryption).is_none());
        let secret: Jwk =
            serde_json::from_value(serde_json::json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"}))
                .unwrap();
        assert!(
            signing_key(&secret).is_none(),
            "a shared secret is never a key here"
        );
    }

    /// The events of INFO and above this module logged on this thread, as (level, message).
    #[derive(Clone, Default)]
    struct Logged(std::sync::Arc<std::sync::Mutex<Vec<(tracing::Level, String)>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Logged {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(
                    &mut self,
                    field: &tracing::field::Field,
                    value: &dyn std::fmt::Debug,
                ) {
                    if field.name() == "message" {
                        self.0 = format!("{value:?}");
                    }
                }
            }
            let level = *event.metadata().level();
            if level <= tracing::Level::INFO
                && event.metadata().target() == "books_http::middleware::oidc"
            {
                let mut message = Message(String::new());
                event.record(&mut message);
                self.0.lock().unwrap().push((level, message.0));
            }
        }
    }

    impl Logged {
        fn take(&self) -> Vec<(tracing::Level, String)> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }

    /// An issuer on `port` that publishes an empty key set, until its handle stops it.
    fn serve_issuer(port: u16) -> actix_web::dev::ServerHandle {
        use actix_web::{App, HttpResponse, HttpServer};
        let issuer = format!("http://127.0.0.1:{port}");
        let server = HttpServer::new(move || {
            let discovery = serde_json::json!({
                "issuer": issuer,
                "jwks_uri": format!("{issuer}/jwks"),
            });
            App::new()
                .route(
                    "/.well-known/openid-configuration",
                    web::get().to(move || {
                        let discovery = discovery.clone();
                        async move { HttpResponse::Ok().json(discovery) }
                    }),
                )
                .route(
                    "/jwks",
                    web::get()
                        .to(|| async { HttpResponse::Ok().json(serde_json::json!({"keys": []})) }),
                )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", port))
        .expect("the issuer's port is free")
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        handle
    }

    #[actix_web::test]
    async fn going_out_of_reach_and_coming_back_are_logged_once_each() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let logged = Logged::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(logged.clone()));
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .unwrap()
            .port();
        let issuer = Issuer::new(OidcSettings {
            timeout: Duration::from_secs(2),
            ..OidcSettings::new(&format!("http://127.0.0.1:{port}"), "books-api")
        });
        let reachable = |issuer: &Issuer| issuer.status().reachable;

        let server = serve_issuer(port);
        issuer.refresh().await;
        assert!(reachable(&issuer));
        assert_eq!(logged.take(), [], "a fetch that works is not news");

        server.stop(true).await;
        for _ in 0..3 {
            issuer.refresh().await;
            assert!(!reachable(&issuer));
        }
        let gone = logged.take();
        assert_eq!(gone.len(), 1, "{gone:?}");
        assert_eq!(gone[0].0, tracing::Level::WARN);
        assert!(gone[0].1.contains("cannot be reached"), "{gone:?}");

        let server = serve_issuer(port);
        for _ in 0..3 {
            issuer.refresh().await;
            assert!(reachable(&issuer));
        }
        let back = logged.take();
        assert_eq!(back.len(), 1, "{back:?}");
        assert_eq!(back[0].0, tracing::Level::INFO);
        assert!(back[0].1.contains("can be reached again"), "{back:?}");

        server.stop(true).await;
        issuer.refresh().await;
        issuer.refresh().await;
        assert_eq!(logged.take().len(), 1, "each change is logged, once");
    }
}
