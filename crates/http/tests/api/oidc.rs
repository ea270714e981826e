//! OpenID Connect access tokens beside API keys, against a real OpenID Provider on loopback:
//! panva's `oidc-provider` (OpenID Certified), installed with npm from `tests/oidc` and started
//! by each test on a port of its own, with client credentials and JWT access tokens for the
//! resource `urn:books-api` (audience `books-api`). The service runs with no leeway and a
//! refetch cooldown of 1 s, so that the expiry and rotation cases take seconds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use books_http::middleware::oidc::OidcSettings;
use books_local_postgres::testing::TestDatabase;
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp};

/// The audience the provider issues tokens for.
const AUDIENCE: &str = "books-api";

/// The provider's folder in the source tree.
fn provider_folder() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Installs oidc-provider (`npm ci`) once, unless it is there already (`.ci/run` installs it).
fn install_provider() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *installed
        || provider_folder()
            .join("node_modules/oidc-provider")
            .exists()
    {
        *installed = true;
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(provider_folder())
        .stdin(Stdio::null())
        .status()
        .expect("npm runs (install Node.js and npm: apt-get install nodejs npm)");
    assert!(status.success(), "npm ci in tests/oidc failed");
    *installed = true;
}

/// A loopback port below 32768, free now: the provider restarts on it, and above 32768 an
/// outgoing connection could take it in between.
fn low_port() -> u16 {
    for _ in 0..1000 {
        let mut bytes = [0_u8; 2];
        getrandom::fill(&mut bytes).unwrap();
        let port = 20_000 + u16::from_le_bytes(bytes) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below 32768");
}

/// The OpenID Provider, on its port, with its signing keys in a folder of its own; stopped
/// (and the folder removed) when dropped, however the test ends.
struct Provider {
    port: u16,
    folder: PathBuf,
    child: Option<Child>,
}

impl Provider {
    /// A provider on a port of its own, with new keys.
    fn start() -> Self {
        install_provider();
        let folder = std::env::temp_dir().join(format!(
            "books-api-oidc-{}-{}",
            std::process::id(),
            low_port()
        ));
        std::fs::create_dir_all(&folder).unwrap();
        let mut provider = Self {
            port: low_port(),
            folder,
            child: None,
        };
        provider.run("keys.json");
        provider
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs the provider with the keys in `keys` (made when missing), and waits until it answers.
    fn run(&mut self, keys: &str) {
        let log = std::fs::File::create(self.folder.join("log")).unwrap();
        let child = Command::new("node")
            .arg(provider_folder().join("provider.mjs"))
            .arg(self.port.to_string())
            .arg(self.folder.join(keys))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("node runs");
        self.child = Some(child);
        let started = Instant::now();
        while !std::fs::read_to_string(self.folder.join("log"))
            .unwrap_or_default()
            .contains("ready")
        {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the provider exited ({status}): {}", self.log());
            }
            // It starts in under a second when idle; the bound is wide because the suite runs
            // beside load tests on two shared cores (one CI run saw no "ready" within 30 s).
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the provider did not start in {:?} ({}): {}",
                started.elapsed(),
                self.process_state(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The provider process's scheduler state and where it waits in the kernel, for a failure
    /// message that says whether it was starved, blocked or busy.
    fn process_state(&self) -> String {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return "not running".into();
        };
        let read =
            |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
        let state = read("status")
            .lines()
            .filter(|line| line.starts_with("State:") || line.contains("ctxt_switches"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "pid {pid}, {state}, wchan {}, stat {}",
            read("wchan"),
            read("stat").trim()
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.folder.join("log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts with keys of a new file: the old keys are no longer published.
    fn rotate_keys(&mut self, keys: &str) {
        self.stop();
        self.run(keys);
    }

    /// An access token for `client`, for `resource`, with `scope` (none: no scope parameter).
    async fn token_for(&self, client: &str, resource: &str, scope: Option<&str>) -> String {
        let mut form = vec![("grant_type", "client_credentials"), ("resource", resource)];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{client}:{client}-secret"));
        let mut response = awc::Client::default()
            .post(format!("{}/token", self.issuer()))
            .insert_header(("authorization", format!("Basic {credentials}")))
            .send_form(&form)
            .await
            .expect("the provider answers");
        let body: Value = response.json().await.unwrap();
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token for {client}: {body}"))
            .to_owned()
    }

    async fn token(&self, client: &str) -> String {
        self.token_for(client, "urn:books-api", Some("books:read books:write"))
            .await
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// The service, taking tokens of `issuer` with no leeway and a 1 s refetch cooldown.
fn service_of(issuer: &str) -> TestApp {
    let database = TestDatabase::new();
    TestApp::spawn_tuned(database.pool(), Some(database), None, |settings| {
        settings.oidc = Some(OidcSettings {
            leeway: Duration::ZERO,
            refetch_after: Duration::from_secs(1),
            ..OidcSettings::new(issuer, AUDIENCE)
        });
    })
}

async fn create_as(app: &TestApp, token: &str, title: &str, headers: &[(&str, &str)]) -> Reply {
    let bearer = format!("Bearer {token}");
    let mut all = vec![("authorization", bearer.as_str())];
    all.extend_from_slice(headers);
    app.send_json(
        Method::POST,
        "/api/v1/books",
        &json!({"title": title, "author": "A"}),
        &all,
    )
    .await
}

/// Asserts a 401 for a token that is not valid, with the RFC 6750 challenge.
fn assert_invalid_token(reply: &Reply, case: &str) {
    assert_eq!(
        reply.status,
        401,
        "{case}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let challenge = reply.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""),
        "{case}: {challenge}"
    );
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn decoded(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

fn encoded(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

#[actix_web::test]
async fn a_writer_token_creates_and_a_reader_token_is_refused_a_write_with_insufficient_scope() {
    let provider = Provider::start();
    let app = service_of(&provider.issuer());

    let writer = provider.token("writer").await;
    let created = create_as(&app, &writer, "Dune", &[]).await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.header("cache-control"), Some("no-store"));

    let reader = provider
        .token_for("reader", "urn:books-api", Some("books:read"))
        .await;
    let refused = create_as(&app, &reader, "Emma", &[]).await;
    let problem = refused.problem(403);
    assert!(
        problem["detail"].as_str().unwrap().contains("books:write"),
        "{problem}"
    );
    assert!(
        refused
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\"")
    );
    // A token with no scope at all is a reader too; reads stay open to every token.
    let unscoped = provider.token_for("nobody", "urn:books-api", None).await;
    create_as(&app, &unscoped, "Emma", &[]).await.problem(403);
    let bearer = format!("Bearer {reader}");
    let read = app
        .request(
            Method::GET,
            "/api/v1/books",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(app.count().await, 1);

    // ES256 and EdDSA tokens, from the provider's other keys.
    for client in ["es256-writer", "eddsa-writer"] {
        let token = provider.token(client).await;
        let alg = decoded(&segments(&token)[0])["alg"].clone();
        let reply = create_as(&app, &token, client, &[]).await;
        assert_eq!(reply.status, 201, "{client} ({alg}): {:?}", reply.json());
    }
    // API keys keep working beside tokens.
    app.create(json!({"title": "Key", "author": "A"})).await;
    assert_eq!(app.count().await, 4);
}

#[actix_web::test]
async fn forged_expired_and_misdirected_tokens_are_refused_with_invalid_token_and_change_nothing() {
    let provider = Provider::start();
    let app = service_of(&provider.issuer());
    let writer = provider.token("writer").await;
    let parts = segments(&writer);

    // Another subject in the claims, under the writer's signature.
    let mut claims = decoded(&parts[1]);
    claims["sub"] = json!("someone-else");
    let tampered = format!("{}.{}.{}", parts[0], encoded(&claims), parts[2]);
    // A signature altered by one character.
    let mut signature = parts[2].clone().into_bytes();
    signature[10] = if signature[10] == b'A' { b'B' } else { b'A' };
    let bad_signature = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8(signature).unwrap()
    );
    // `alg: none`, with no signature.
    let none = format!(
        "{}.{}.",
        encoded(&json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    // The key-confusion attack: HS256 keyed with the RSA public key the provider publishes.
    let kid = decoded(&parts[0])["kid"].as_str().unwrap().to_owned();
    let jwks: Value = awc::Client::default()
        .get(format!("{}/jwks", provider.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rsa = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kid"] == kid.as_str())
        .unwrap();
    let header = encoded(&json!({"alg": "HS256", "typ": "JWT", "kid": kid}));
    let signing_input = format!("{header}.{}", parts[1]);
    let hs256 = |secret: &[u8]| {
        use hmac::{KeyInit as _, Mac as _};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    let confused_n = hs256(&URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap());
    let confused_jwk = hs256(rsa.to_string().as_bytes());
    // A token for another resource server.
    let other_audience = provider
        .token_for("writer", "urn:other-api", Some("books:write"))
        .await;
    // A token that lives 2 s, used after it expired (no leeway in these tests).
    let short = provider.token("short-lived").await;
    assert_eq!(
        create_as(&app, &short, "In time", &[]).await.status,
        201,
        "the short-lived token works while it lives"
    );
    let expiry = decoded(&segments(&short)[1])["exp"].as_u64().unwrap();
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        <= expiry
    {
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }

    let cases = [
        ("claims tampered with", tampered, "signature"),
        ("a signature altered", bad_signature, "signature"),
        ("alg none", none, "not a signed JWT"),
        ("HS256 keyed with the RSA modulus", confused_n, "algorithm"),
        ("HS256 keyed with the RSA JWK", confused_jwk, "algorithm"),
        ("another audience", other_audience, "aud"),
        ("expired", short, "expired"),
    ];
    for (case, token, named) in &cases {
        let reply = create_as(&app, token, case, &[]).await;
        assert_invalid_token(&reply, case);
        let problem = reply.json();
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(named), "{case}: {detail}");
        // The description is ours: no library message, no key material.
        let challenge = reply.header("www-authenticate").unwrap();
        assert!(
            challenge.contains(&format!("error_description=\"{detail}\"")),
            "{case}: {challenge}"
        );
        assert!(
            !detail.contains(&kid) && !detail.contains("Error"),
            "{case}: {detail}"
        );
    }
    // Reads with a bad token are refused too: a credential that is not valid never passes for
    // anonymity.
    let bearer = format!("Bearer {}", cases[0].1);
    let read = app
        .request(
            Method::GET,
            "/api/v1/books",
            &[("authorization", &bearer)],
            None,
        )
        .await;
    assert_invalid_token(&read, "a read with a forged token");
    assert_eq!(
        app.count().await,
        1,
        "only the token in time created a book"
    );
}

#[actix_web::test]
async fn after_the_provider_rotates_its_keys_a_new_token_works_without_restarting_the_service() {
    let mut provider = Provider::start();
    let app = service_of(&provider.issuer());
    let old = provider.token("writer").await;
    assert_eq!(create_as(&app, &old, "Before", &[]).await.status, 201);

    provider.rotate_keys("rotated.json");
    let new = provider.token("writer").await;
    assert_ne!(
        decoded(&segments(&old)[0])["kid"],
        decoded(&segments(&new)[0])["kid"]
    );
    // Past the refetch cooldown (1 s here), an unknown key id makes the keys fetched again.
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    let created = create_as(&app, &new, "After", &[]).await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    // The old key is no longer published: its tokens are refused once the cache knows it.
    let refused = create_as(&app, &old, "Old", &[]).await;
    assert_invalid_token(&refused, "a token of a retired key");
    assert_eq!(app.count().await, 2);
}

#[actix_web::test]
async fn idempotency_keys_rate_limits_and_webhooks_are_apart_per_subject() {
    let provider = Provider::start();
    let database = TestDatabase::new();
    let app = TestApp::spawn_tuned(database.pool(), Some(database), None, |settings| {
        settings.oidc = Some(OidcSettings {
            leeway: Duration::ZERO,
            refetch_after: Duration::from_secs(1),
            ..OidcSettings::new(&provider.issuer(), AUDIENCE)
        });
        settings.rate_limit = books_http::RateLimit::per_second(1);
    });
    let (writer, other) = (
        provider.token("writer").await,
        provider.token("other-writer").await,
    );

    // The same Idempotency-Key from two subjects (and from an API key) makes three books.
    let key = [("idempotency-key", "same-key-1")];
    let mine = create_as(&app, &writer, "Mine", &key).await;
    let theirs = create_as(&app, &other, "Theirs", &key).await;
    let keyed = app
        .send_json(
            Method::POST,
            "/api/v1/books",
            &json!({"title": "Keyed", "author": "A"}),
            &key,
        )
        .await;
    assert_eq!((mine.status, theirs.status, keyed.status), (201, 201, 201));
    let ids = [&mine, &theirs, &keyed].map(|reply| reply.json()["id"].as_i64().unwrap());
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    // The writer's retry is a replay of its own book.
    let replay = create_as(&app, &writer, "Mine", &key).await;
    assert_eq!(replay.json()["id"], ids[0]);

    // Each subject spends its own budget (1 a second, bursts of 2 here): the writer is out of
    // it, the other subject is not.
    let bearer = |token: &str| format!("Bearer {token}");
    let mut writer_limited = false;
    for _ in 0..5 {
        let reply = app
            .request(
                Method::GET,
                "/api/v1/books",
                &[("authorization", &bearer(&writer))],
                None,
            )
            .await;
        writer_limited |= reply.status == 429;
    }
    assert!(writer_limited, "the writer's budget ran out");
    let reply = app
        .request(
            Method::GET,
            "/api/v1/books?limit=1",
            &[("authorization", &bearer(&other))],
            None,
        )
        .await;
    assert_ne!(
        reply.status, 429,
        "the other subject has a budget of its own"
    );
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;

    // A subscription belongs to the subject that made it.
    let subscribed = app
        .send_json(
            Method::POST,
            "/api/v1/webhooks",
            &json!({"url": "http://127.0.0.1:9/hook"}),
            &[("authorization", &bearer(&writer))],
        )
        .await;
    assert_eq!(
        subscribed.status,
        201,
        "{}",
        String::from_utf8_lossy(&subscribed.body)
    );
    let path = format!("/api/v1/webhooks/{}", subscribed.json()["id"]);
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    let seen_by_other = app
        .request(
            Method::GET,
            &path,
            &[("authorization", &bearer(&other))],
            None,
        )
        .await;
    assert_eq!(seen_by_other.status, 404);
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    let seen_by_key = app.request(Method::GET, &path, &[], None).await;
    assert_eq!(seen_by_key.status, 404, "an API key is another caller too");
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    let seen_by_writer = app
        .request(
            Method::GET,
            &path,
            &[("authorization", &bearer(&writer))],
            None,
        )
        .await;
    assert_eq!(seen_by_writer.status, 200);
}

#[actix_web::test]
async fn while_the_issuer_is_unreachable_tokens_get_503_api_keys_keep_working_and_it_recovers() {
    // The service starts before the provider: nothing answers at the issuer's address yet.
    let mut provider = Provider::start();
    let issuer = provider.issuer();
    provider.stop();
    let app = service_of(&issuer);

    let ready = app.get("/readyz").await;
    assert_eq!(
        ready.status, 200,
        "an unreachable issuer never makes the service unready"
    );
    assert_eq!(ready.json()["oidc"]["issuer"], issuer.as_str());
    assert_eq!(ready.json()["oidc"]["reachable"], false);

    // A token the service cannot check yet (made by the provider before it stopped would do as
    // well; here it is any token naming a key the service has never seen).
    provider.run("keys.json");
    let token = provider.token("writer").await;
    provider.stop();
    let unavailable = create_as(&app, &token, "Waiting", &[]).await;
    unavailable.problem(503);
    assert!(unavailable.header("retry-after").is_some());
    // API keys do not depend on the issuer.
    app.create(json!({"title": "By key", "author": "A"})).await;

    // The issuer comes back: the background retries (1 s, 2 s, … at most the 1 s cooldown
    // here) fetch its keys, and the same token works.
    provider.run("keys.json");
    let started = Instant::now();
    loop {
        let reply = create_as(&app, &token, "Back", &[]).await;
        if reply.status == 201 {
            break;
        }
        assert_eq!(
            reply.status,
            503,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "tokens still refused 15 s after the issuer came back"
        );
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = app.get("/readyz").await.json();
    assert_eq!(ready["oidc"]["reachable"], true, "{ready}");
    assert_eq!(ready["oidc"]["keys"], 3, "{ready}");

    // Gone again: tokens whose key is cached keep working.
    provider.stop();
    let cached = create_as(&app, &token, "Cached key", &[]).await;
    assert_eq!(cached.status, 201);
    assert_eq!(app.count().await, 3);
}

#[actix_web::test]
async fn the_live_document_offers_openid_connect_beside_the_api_key_and_is_otherwise_the_committed_one()
 {
    let provider = Provider::start();
    let app = service_of(&provider.issuer());
    for (path, committed) in [
        ("/api-docs/openapi.json", "openapi.json"),
        ("/api-docs/openapi-3.0.json", "openapi-3.0.json"),
    ] {
        let mut live = app.get(path).await.json();
        let scheme = live["components"]["securitySchemes"]
            .as_object_mut()
            .unwrap()
            .remove("openIdConnect")
            .expect("the OpenID Connect scheme");
        assert_eq!(scheme["type"], "openIdConnect");
        assert_eq!(
            scheme["openIdConnectUrl"],
            format!("{}/.well-known/openid-configuration", provider.issuer())
        );
        let create = &live["paths"]["/api/v1/books"]["post"]["security"];
        assert_eq!(
            create,
            &json!([{"bearerAuth": ["write"]}, {"openIdConnect": ["books:write"]}])
        );
        // Without the scheme and its requirements, the committed document.
        for item in live["paths"].as_object_mut().unwrap().values_mut() {
            for operation in item.as_object_mut().unwrap().values_mut() {
                if let Some(security) = operation.get_mut("security").and_then(Value::as_array_mut)
                {
                    security.retain(|requirement| requirement.get("openIdConnect").is_none());
                }
            }
        }
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../openapi")
            .join(committed);
        let committed_document: Value =
            serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        assert!(
            live == committed_document,
            "{path} differs from {committed}"
        );
    }
}
