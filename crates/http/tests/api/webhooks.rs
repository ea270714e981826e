//! Webhooks against real receivers on loopback: every change in order, signed, retried,
//! replayable; subscriptions that belong to their caller; and the refusals that keep the service
//! from being turned against its own network.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::Method;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use books_domain::RetryPolicy;
use books_local_postgres::testing::TestDatabase;
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};

use crate::helpers::{Reply, TestApp};

/// What a receiver answers to one delivery.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16),
    /// Waits, then answers.
    Slow(Duration, u16),
    /// A redirect elsewhere.
    Redirect(String),
}

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn seq(&self) -> u64 {
        self.id.parse().unwrap()
    }
}

#[derive(Default)]
struct Script {
    seen: Vec<Received>,
    next: VecDeque<Answer>,
    otherwise: Option<Answer>,
}

/// A webhook receiver on a loopback port: it records every request, and answers as scripted
/// (204 unless told otherwise).
struct Receiver {
    url: String,
    script: Arc<Mutex<Script>>,
    handle: ServerHandle,
}

async fn receive(
    request: HttpRequest,
    body: web::Bytes,
    script: web::Data<Arc<Mutex<Script>>>,
) -> HttpResponse {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let answer = {
        let mut script = script.lock().unwrap();
        script.seen.push(Received {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            content_type: header("content-type"),
            body: body.to_vec(),
        });
        script
            .next
            .pop_front()
            .or_else(|| script.otherwise.clone())
            .unwrap_or(Answer::Status(204))
    };
    let status = |code: u16| actix_web::http::StatusCode::from_u16(code).unwrap();
    match answer {
        Answer::Status(code) => HttpResponse::build(status(code)).finish(),
        Answer::Slow(wait, code) => {
            actix_web::rt::time::sleep(wait).await;
            HttpResponse::build(status(code)).finish()
        }
        Answer::Redirect(to) => HttpResponse::TemporaryRedirect()
            .insert_header(("location", to))
            .finish(),
    }
}

impl Receiver {
    fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let data = web::Data::new(script.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}/hooks/books"),
            script,
            handle,
        }
    }

    fn answer_next(&self, answers: &[Answer]) {
        self.script
            .lock()
            .unwrap()
            .next
            .extend(answers.iter().cloned());
    }

    fn answer_always(&self, answer: Answer) {
        self.script.lock().unwrap().otherwise = Some(answer);
    }

    fn seen(&self) -> Vec<Received> {
        self.script.lock().unwrap().seen.clone()
    }

    /// Waits until `count` deliveries have arrived (at most `patience`), and returns them all.
    async fn wait_for(&self, count: usize, patience: Duration) -> Vec<Received> {
        let started = Instant::now();
        while self.seen().len() < count && started.elapsed() < patience {
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        self.seen()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// A server whose retries are fast enough for a test: the first after 100 ms, at most 300 ms
/// apart, for 1.5 s; 1 s per attempt.
fn spawn(tune: impl FnOnce(&mut books_http::ServerSettings)) -> TestApp {
    let database = TestDatabase::new();
    TestApp::spawn_tuned(database.pool(), Some(database), None, |settings| {
        settings.webhooks.retry = RetryPolicy {
            first: Duration::from_millis(100),
            cap: Duration::from_millis(300),
            window: chrono::TimeDelta::milliseconds(1500),
            timeout: Duration::from_secs(1),
        };
        settings.webhooks.poll = Duration::from_millis(50);
        tune(settings);
    })
}

impl TestApp {
    async fn subscribe(&self, body: Value) -> Value {
        let reply = self
            .send_json(Method::POST, "/api/v1/webhooks", &body, &[])
            .await;
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()
    }

    async fn subscription(&self, id: &Value) -> Value {
        let reply = self.get(&format!("/api/v1/webhooks/{id}")).await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()
    }

    /// The subscription once `done` holds for it, or as it is after `patience`: deliveries
    /// record their outcome after the receiver has seen them.
    async fn subscription_when(
        &self,
        id: &Value,
        patience: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let subscription = self.subscription(id).await;
            if done(&subscription) || started.elapsed() > patience {
                return subscription;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the subscription's status is `status` (at most `patience`).
    async fn wait_for_status(&self, id: &Value, status: &str, patience: Duration) -> Value {
        self.subscription_when(id, patience, |subscription| {
            subscription["status"] == status
        })
        .await
    }

    /// The newest `limit` attempts of the subscription's log once `done` holds for them, or as
    /// they are after `patience`: an attempt is logged after its receiver has seen it.
    async fn deliveries_when(
        &self,
        id: &Value,
        limit: usize,
        patience: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let log = self
                .get(&format!("/api/v1/webhooks/{id}/deliveries?limit={limit}"))
                .await
                .json();
            let items = log["items"].as_array().unwrap().clone();
            if done(&items) || started.elapsed() > patience {
                return items;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn changes(&self) -> Vec<Value> {
        let page = self
            .get("/api/v1/books/changes?after=0&limit=1000")
            .await
            .json();
        page["items"].as_array().unwrap().clone()
    }
}

/// Verifies a delivery as Standard Webhooks says, with this test's own HMAC.
fn verify(secret: &str, received: &Received) {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", received.id, received.timestamp).as_bytes());
    mac.update(&received.body);
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    assert_eq!(
        received.signature, expected,
        "the signature of {}",
        received.id
    );
    let sent_at: i64 = received.timestamp.parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);
}

#[actix_web::test]
async fn a_subscriber_receives_every_change_in_order_signed_and_exactly_as_the_feed_shows_it() {
    let app = spawn(|_| {});
    let receiver = Receiver::start();
    let subscription = app
        .subscribe(json!({"url": receiver.url, "description": "copy"}))
        .await;
    let secret = subscription["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && BASE64.decode(&secret[6..]).unwrap().len() == 32);
    assert_eq!(subscription["status"], "active");
    assert_eq!(
        subscription["events"],
        json!(["created", "updated", "deleted"])
    );
    let first = app
        .create(json!({"title": "Dune", "author": "Frank Herbert"}))
        .await;
    let second = app
        .create(json!({"title": "Emma", "author": "Jane Austen"}))
        .await;
    let patched = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/books/{}", first["id"]),
            &json!({"genre": "Science fiction"}),
            &[("content-type", "application/merge-patch+json")],
        )
        .await;
    assert_eq!(patched.status, 200);
    let deleted = app
        .request(
            Method::DELETE,
            &format!("/api/v1/books/{}", second["id"]),
            &[],
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);

    let received = receiver.wait_for(4, Duration::from_secs(10)).await;
    let feed = app.changes().await;
    assert_eq!(feed.len(), 4);
    assert_eq!(received.len(), 4, "{received:?}");
    for (delivery, change) in received.iter().zip(&feed) {
        assert_eq!(delivery.content_type, "application/json");
        assert_eq!(delivery.id, change["seq"].to_string());
        assert_eq!(&delivery.json(), change, "the body is the feed's Change");
        verify(&secret, delivery);
    }
    let kinds: Vec<String> = received
        .iter()
        .map(|r| r.json()["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["created", "created", "updated", "deleted"]);

    // Progress and the log are visible to the owner (once recorded: the last answer may still be
    // on its way to storage when the receiver has seen it); the secret never again.
    let shown = app
        .subscription_when(&subscription["id"], Duration::from_secs(10), |shown| {
            shown["delivered_through"] == feed[3]["seq"]
        })
        .await;
    assert!(shown.get("secret").is_none());
    assert_eq!(shown["delivered_through"], feed[3]["seq"]);
    let log = app
        .get(&format!(
            "/api/v1/webhooks/{}/deliveries?limit=2",
            subscription["id"]
        ))
        .await
        .json();
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["seq"], feed[3]["seq"], "newest first");
    assert_eq!(items[0]["status"], 204);
    assert_eq!(items[0]["attempt"], 1);
    assert!(items[0]["error"].is_null());
    let metrics = String::from_utf8(app.get("/metrics").await.body).unwrap();
    assert!(
        metrics.contains("webhook_deliveries_total{outcome=\"delivered\"} 4"),
        "{metrics}"
    );
}

#[actix_web::test]
async fn an_instance_that_stops_gives_its_leases_back_at_once() {
    let database = TestDatabase::new();
    let url = database.url().to_owned();
    let app = TestApp::spawn_tuned(database.pool(), None, None, |settings| {
        settings.webhooks.allow_internal = true;
        settings.webhooks.poll = Duration::from_millis(50);
    });
    let receiver = Receiver::start();
    receiver.answer_next(&[Answer::Slow(Duration::from_secs(5), 204)]);
    app.subscribe(json!({"url": receiver.url})).await;
    app.create(json!({"title": "Held", "author": "A"})).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    assert!(lease_holder(&database).is_some(), "held while delivering");
    app.stop_gracefully().await;
    // Give the stop a moment to reach its last step.
    let started = Instant::now();
    while lease_holder(&database).is_some() && started.elapsed() < Duration::from_secs(3) {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lease_holder(&database), None, "given back on {url}");
}

#[actix_web::test]
async fn a_subscription_can_start_from_history_and_receive_only_the_kinds_it_asked_for() {
    let app = spawn(|_| {});
    for n in 0..3 {
        let book = app
            .create(json!({"title": format!("Book {n}"), "author": "A"}))
            .await;
        let reply = app
            .request(
                Method::DELETE,
                &format!("/api/v1/books/{}", book["id"]),
                &[],
                None,
            )
            .await;
        assert_eq!(reply.status, 204);
    }
    // Changes are numbered in the background: wait until all six are in the feed.
    let started = Instant::now();
    while app.changes().await.len() < 6 && started.elapsed() < Duration::from_secs(5) {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let receiver = Receiver::start();
    let _ = app
        .subscribe(json!({"url": receiver.url, "after": 0, "events": ["deleted"]}))
        .await;
    let received = receiver.wait_for(3, Duration::from_secs(10)).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    let received_after = receiver.seen();
    assert_eq!(received.len(), 3);
    assert_eq!(received_after.len(), 3, "nothing but the deletions");
    assert!(received.iter().all(|r| r.json()["kind"] == "deleted"));
    assert!(received.windows(2).all(|w| w[0].seq() < w[1].seq()));

    // A start past the newest change is a 409, as in the feed.
    let ahead = app
        .send_json(
            Method::POST,
            "/api/v1/webhooks",
            &json!({"url": receiver.url, "after": 1_000_000}),
            &[],
        )
        .await;
    ahead.problem(409);
}

#[actix_web::test]
async fn a_failed_delivery_is_retried_with_a_new_signature_and_holds_back_the_changes_after_it() {
    // A window no loaded machine reaches: this test is about retries, not giving up.
    let app = spawn(|settings| settings.webhooks.retry.window = chrono::TimeDelta::seconds(60));
    let receiver = Receiver::start();
    receiver.answer_next(&[Answer::Status(500), Answer::Status(503)]);
    let subscription = app.subscribe(json!({"url": receiver.url})).await;
    let secret = subscription["secret"].as_str().unwrap().to_owned();
    app.create(json!({"title": "One", "author": "A"})).await;
    app.create(json!({"title": "Two", "author": "A"})).await;

    let received = receiver.wait_for(4, Duration::from_secs(10)).await;
    let ids: Vec<u64> = received.iter().map(Received::seq).collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert_eq!(ids[0], ids[1], "the first change is retried…");
    assert_eq!(ids[1], ids[2], "…until it is acknowledged");
    assert!(ids[3] > ids[2], "only then comes the next: {ids:?}");
    for delivery in &received {
        verify(&secret, delivery);
    }
    // Each attempt is signed when it is made (verified above with its own timestamp).
    assert!(
        received
            .windows(2)
            .all(|w| w[0].timestamp <= w[1].timestamp)
    );
    // An attempt is logged once its answer is in, after the receiver has seen it: the last one
    // may still be on its way to the log.
    let statuses: Vec<Value> = app
        .deliveries_when(&subscription["id"], 20, Duration::from_secs(10), |log| {
            log.len() >= 4
        })
        .await
        .iter()
        .rev()
        .map(|item| json!([item["attempt"], item["status"]]))
        .collect();
    assert_eq!(
        statuses,
        [
            json!([1, 500]),
            json!([2, 503]),
            json!([3, 204]),
            json!([1, 204])
        ]
    );
    let shown = app.subscription(&subscription["id"]).await;
    assert!(shown["last_error"].is_null(), "cleared by the success");
}

#[actix_web::test]
async fn after_the_retry_window_a_subscription_is_failing_and_resumes_where_it_stopped() {
    let app = spawn(|_| {});
    let receiver = Receiver::start();
    receiver.answer_always(Answer::Status(500));
    let subscription = app.subscribe(json!({"url": receiver.url})).await;
    let id = &subscription["id"];
    app.create(json!({"title": "Stuck", "author": "A"})).await;
    let failing = app
        .wait_for_status(id, "failing", Duration::from_secs(15))
        .await;
    assert_eq!(failing["status"], "failing");
    assert!(
        failing["last_error"].as_str().unwrap().contains("500"),
        "{failing}"
    );
    assert!(failing["next_attempt_at"].is_null());
    let attempts = receiver.seen().len();
    assert!(attempts >= 3, "retried within the window: {attempts}");
    let metrics = String::from_utf8(app.get("/metrics").await.body).unwrap();
    assert!(
        metrics.contains(&format!("webhook_lag_seconds{{subscription=\"{id}\"}}")),
        "the stuck subscription's lag is reported: {metrics}"
    );
    assert!(metrics.contains("webhook_deliveries_total{outcome=\"failed\"} 1"));
    assert!(metrics.contains("webhook_deliveries_total{outcome=\"retried\"}"));
    app.create(json!({"title": "Later", "author": "A"})).await;
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.seen().len(),
        attempts,
        "a failing subscription waits"
    );

    receiver.answer_always(Answer::Status(200));
    let resumed = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &json!({"status": "active"}),
            &[("content-type", "application/merge-patch+json")],
        )
        .await;
    assert_eq!(resumed.status, 200);
    let received = receiver
        .wait_for(attempts + 2, Duration::from_secs(10))
        .await;
    let titles: Vec<Value> = received[attempts - 1..]
        .iter()
        .map(|r| r.json()["book"]["title"].clone())
        .collect();
    assert_eq!(titles, [json!("Stuck"), json!("Stuck"), json!("Later")]);
}

#[actix_web::test]
async fn a_receiver_that_answers_410_disables_its_subscription() {
    let app = spawn(|_| {});
    let receiver = Receiver::start();
    receiver.answer_next(&[Answer::Status(410)]);
    let subscription = app.subscribe(json!({"url": receiver.url})).await;
    app.create(json!({"title": "Gone", "author": "A"})).await;
    let disabled = app
        .wait_for_status(&subscription["id"], "disabled", Duration::from_secs(10))
        .await;
    assert_eq!(disabled["status"], "disabled");
    assert!(disabled["last_error"].as_str().unwrap().contains("410"));
    assert_eq!(receiver.seen().len(), 1);
}

#[actix_web::test]
async fn replay_delivers_again_every_change_after_a_point_and_refuses_positions_the_feed_lacks() {
    let app = spawn(|_| {});
    let receiver = Receiver::start();
    let subscription = app.subscribe(json!({"url": receiver.url})).await;
    let id = &subscription["id"];
    for n in 0..3 {
        app.create(json!({"title": format!("Book {n}"), "author": "A"}))
            .await;
    }
    let first = receiver.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 3);
    let replay = |after: u64| {
        let app = &app;
        async move {
            app.send_json(
                Method::POST,
                &format!("/api/v1/webhooks/{id}/replay"),
                &json!({"after": after}),
                &[],
            )
            .await
        }
    };
    let rewound: Reply = replay(first[0].seq()).await;
    assert_eq!(
        rewound.status,
        202,
        "{}",
        String::from_utf8_lossy(&rewound.body)
    );
    assert_eq!(rewound.json()["delivered_through"], first[0].seq());
    let all = receiver.wait_for(5, Duration::from_secs(10)).await;
    let ids: Vec<u64> = all.iter().map(Received::seq).collect();
    assert_eq!(ids[3..], [first[1].seq(), first[2].seq()], "{ids:?}");
    replay(1_000_000).await.problem(409);
    // A whole number written with a fraction of zero is an integer, as JSON Schema says.
    let float = app
        .send_json(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/replay"),
            &json!({"after": 1_000_000.0}),
            &[],
        )
        .await;
    float.problem(409);
    let invalid = app
        .send_json(
            Method::POST,
            &format!("/api/v1/webhooks/{id}/replay"),
            &json!({"after": -1}),
            &[],
        )
        .await;
    invalid.problem(422);
}

#[actix_web::test]
async fn a_subscription_whose_next_change_was_purged_is_disabled_and_replay_behind_the_retention_is_410()
 {
    let app = spawn(|settings| {
        settings.changes_retention = chrono::TimeDelta::seconds(1);
    });
    let receiver = Receiver::start();
    let subscription = app.subscribe(json!({"url": receiver.url})).await;
    let id = subscription["id"].clone();
    // Paused, so that the changes wait for it while the retention purges them.
    let paused = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &json!({"status": "paused"}),
            &[("content-type", "application/merge-patch+json")],
        )
        .await;
    assert_eq!(paused.json()["status"], "paused");
    app.create(json!({"title": "Fleeting", "author": "A"}))
        .await;
    let started = Instant::now();
    loop {
        let reply = app.get("/api/v1/books/changes?after=0").await;
        if reply.status == 410 || started.elapsed() > Duration::from_secs(15) {
            assert_eq!(reply.status, 410, "the retention purged the change");
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    app.create(json!({"title": "Next", "author": "A"})).await;
    let resumed = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &json!({"status": "active"}),
            &[("content-type", "application/merge-patch+json")],
        )
        .await;
    assert_eq!(resumed.status, 200);
    let disabled = app
        .wait_for_status(&id, "disabled", Duration::from_secs(10))
        .await;
    assert_eq!(disabled["status"], "disabled");
    assert!(
        disabled["last_error"].as_str().unwrap().contains("purged"),
        "{disabled}"
    );
    assert!(receiver.seen().is_empty(), "nothing was sent out of order");
    app.send_json(
        Method::POST,
        &format!("/api/v1/webhooks/{id}/replay"),
        &json!({"after": 0}),
        &[],
    )
    .await
    .problem(410);
}

#[actix_web::test]
async fn subscriptions_belong_to_their_caller_and_are_checked_before_they_are_stored() {
    let app = spawn(|_| {});
    let receiver = Receiver::start();
    let read_key = format!("Bearer {}", app.read_key);
    let mine = app
        .send_json(
            Method::POST,
            "/api/v1/webhooks",
            &json!({"url": receiver.url}),
            &[("authorization", &read_key)],
        )
        .await;
    assert_eq!(mine.status, 201, "a read key may subscribe");
    let id = mine.json()["id"].clone();
    // The write key's caller does not see it.
    app.get(&format!("/api/v1/webhooks/{id}"))
        .await
        .problem(404);
    assert_eq!(app.get("/api/v1/webhooks").await.json()["items"], json!([]));
    let theirs = app
        .request(
            Method::GET,
            "/api/v1/webhooks",
            &[("authorization", &read_key)],
            None,
        )
        .await
        .json();
    assert_eq!(theirs["items"].as_array().unwrap().len(), 1);
    app.request(Method::DELETE, &format!("/api/v1/webhooks/{id}"), &[], None)
        .await
        .problem(404);
    // Anonymous callers have none.
    let anonymous = app
        .request(
            Method::GET,
            "/api/v1/webhooks",
            &[("authorization", "")],
            None,
        )
        .await;
    anonymous.problem(401);

    // Every invalid member is named at once.
    let invalid = app
        .send_json(
            Method::POST,
            "/api/v1/webhooks",
            &json!({"url": "ftp://x/", "events": ["created", "created"], "colour": 1}),
            &[],
        )
        .await
        .problem(422);
    let fields: Vec<&str> = invalid["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields.len(), 3, "{invalid}");
    for url in [
        "http://no-such-host.invalid/",
        "http://user:pw@example.com/",
    ] {
        app.send_json(Method::POST, "/api/v1/webhooks", &json!({"url": url}), &[])
            .await
            .problem(422);
    }

    // At most 20 per caller.
    for _ in 0..20 {
        app.subscribe(json!({"url": receiver.url})).await;
    }
    let over = app
        .send_json(
            Method::POST,
            "/api/v1/webhooks",
            &json!({"url": receiver.url}),
            &[],
        )
        .await
        .problem(422);
    assert!(over["detail"].as_str().unwrap().contains("20"), "{over}");
}

#[actix_web::test]
async fn internal_addresses_are_refused_unless_the_service_allows_them() {
    let app = spawn(|settings| settings.webhooks.allow_internal = false);
    for url in [
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://0.0.0.0/",
    ] {
        let refused = app
            .send_json(Method::POST, "/api/v1/webhooks", &json!({"url": url}), &[])
            .await
            .problem(422);
        assert_eq!(refused["errors"][0]["field"], "url", "{url}: {refused}");
    }
    assert_eq!(app.get("/api/v1/webhooks").await.json()["items"], json!([]));
}

#[actix_web::test]
async fn redirects_are_not_followed_and_a_slow_receiver_holds_only_its_own_subscription() {
    let app = spawn(|_| {});
    let slow = Receiver::start();
    slow.answer_always(Answer::Slow(Duration::from_secs(3), 200));
    let elsewhere = Receiver::start();
    let redirecting = Receiver::start();
    redirecting.answer_always(Answer::Redirect(elsewhere.url.clone()));
    let fast = Receiver::start();
    let slow_subscription = app.subscribe(json!({"url": slow.url})).await;
    let redirected = app.subscribe(json!({"url": redirecting.url})).await;
    app.subscribe(json!({"url": fast.url})).await;
    let started = Instant::now();
    for n in 0..5 {
        app.create(json!({"title": format!("Book {n}"), "author": "A"}))
            .await;
    }
    let fast_received = fast.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!(fast_received.len(), 5);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the fast receiver did not wait for the slow one: {:?}",
        started.elapsed()
    );
    // The slow one timed out (1 s) and is being retried; the redirect counted as a failure.
    let redirect_log = app
        .wait_for_status(&redirected["id"], "failing", Duration::from_secs(10))
        .await;
    assert!(
        redirect_log["last_error"].as_str().unwrap().contains("307"),
        "{redirect_log}"
    );
    assert!(elsewhere.seen().is_empty(), "the redirect was not followed");
    let slow_after = app
        .wait_for_status(&slow_subscription["id"], "failing", Duration::from_secs(10))
        .await;
    assert!(
        slow_after["last_error"]
            .as_str()
            .unwrap()
            .contains("no answer within"),
        "{slow_after}"
    );
}

/// Who holds a subscription's lease now (`pid<N>-…`), read from the database.
fn lease_holder(database: &TestDatabase) -> Option<String> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Holder {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        lease_holder: Option<String>,
    }
    let mut conn = database.pool().get().unwrap();
    diesel::sql_query("SELECT lease_holder FROM webhook_subscription")
        .load::<Holder>(&mut conn)
        .unwrap()
        .pop()
        .and_then(|row| row.lease_holder)
}

#[actix_web::test]
async fn with_two_instances_a_kill_mid_delivery_loses_no_change_and_sends_none_out_of_order() {
    use books_adapters::PostgresApiKeyRepository;
    use books_domain::{KeyName, KeyService, Scope};

    use crate::helpers::{free_port, serve, wait_ready};

    let database = TestDatabase::new();
    let keys = KeyService::new(PostgresApiKeyRepository::new(database.pool()));
    let key = keys
        .create(&KeyName::new("crash").unwrap(), Scope::Write)
        .unwrap()
        .1
        .expose()
        .to_owned();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let mut process = serve(&[
            ("DATABASE_URL", database.url()),
            ("BIND", &bind),
            ("WEBHOOKS_ALLOW_PRIVATE", "true"),
            // A lease lasts 2 × 2 s + 5 s: the survivor takes over within 9 s of the kill.
            ("WEBHOOKS_TIMEOUT", "2s"),
            (
                "WEBHOOKS_SECRET_KEY",
                "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            ),
        ]);
        assert!(wait_ready(port, &mut process, Duration::from_secs(60)));
        instances.push((format!("http://{bind}"), process));
    }
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let bearer = format!("Bearer {key}");
    let post = |base: &str, path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .insert_header(("authorization", bearer.clone()))
            .send_json(&body)
    };
    let receiver = Receiver::start();
    // The sixth delivery is held 6 s: the instance making it is killed meanwhile.
    let mut script = vec![Answer::Status(204); 5];
    script.push(Answer::Slow(Duration::from_secs(6), 204));
    receiver.answer_next(&script);
    let (first, _) = &instances[0];
    let mut subscribed = post(first, "/api/v1/webhooks", json!({"url": receiver.url}))
        .await
        .unwrap();
    assert_eq!(subscribed.status(), 201);
    let secret = subscribed.json::<Value>().await.unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut created = Vec::new();
    for n in 0..20 {
        let mut reply = post(
            first,
            "/api/v1/books",
            json!({"title": format!("Crash {n}"), "author": "A"}),
        )
        .await
        .unwrap();
        assert_eq!(reply.status(), 201);
        created.push(reply.json::<Value>().await.unwrap()["id"].clone());
    }
    let held = receiver.wait_for(6, Duration::from_secs(30)).await;
    assert!(held.len() >= 6, "{} deliveries before the kill", held.len());
    let holder = lease_holder(&database).expect("a lease is held mid-delivery");
    let pid: u32 = holder
        .strip_prefix("pid")
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap();
    let index = instances
        .iter()
        .position(|(_, process)| process.0.id() == pid)
        .expect("the holder is one of the two instances");
    let (_, mut killed) = instances.remove(index);
    killed.0.kill().unwrap();
    killed.0.wait().unwrap();
    let in_flight = held[5].seq();

    // The survivor takes over once the lease expires, and delivers the rest.
    let started = Instant::now();
    let mut received = receiver.seen();
    while received
        .iter()
        .map(Received::seq)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        < 20
        && started.elapsed() < Duration::from_secs(60)
    {
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        received = receiver.seen();
    }
    let seqs: Vec<u64> = received.iter().map(Received::seq).collect();
    let distinct: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(distinct.len(), 20, "every change arrived: {seqs:?}");
    // In order: each delivery is of a later change than the one before, but for the one that
    // was in flight at the kill, which came again (never acknowledged, so at least once).
    let mut repeats = Vec::new();
    for pair in seqs.windows(2) {
        if pair[1] <= pair[0] {
            repeats.push(pair[1]);
        }
    }
    assert!(
        repeats.iter().all(|seq| *seq == in_flight) && repeats.len() <= 1,
        "only the change in flight at the kill came twice, and nothing came out of order: {seqs:?} (in flight: {in_flight})"
    );
    for delivery in &received {
        verify(&secret, delivery);
    }
    println!(
        "with two instances, the one delivering was killed mid-delivery: the other delivered the \
         rest after {:.1} s; {} deliveries for 20 changes",
        started.elapsed().as_secs_f64(),
        seqs.len()
    );
    drop(instances);
}

#[actix_web::test]
async fn the_deliveries_log_keeps_the_newest_hundred_attempts() {
    let app = spawn(|_| {});
    let receiver = Receiver::start();
    let subscription = app.subscribe(json!({"url": receiver.url})).await;
    let books: Vec<Value> = (0..105)
        .map(|n| json!({"title": format!("Book {n}"), "author": "A"}))
        .collect();
    let created = app
        .send_json(
            Method::POST,
            "/api/v1/books/batch",
            &json!({"books": books}),
            &[],
        )
        .await;
    assert_eq!(created.status, 201);
    let received = receiver.wait_for(105, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 105);
    let newest = received[104].seq();
    let seqs: Vec<u64> = app
        .deliveries_when(&subscription["id"], 100, Duration::from_secs(5), |log| {
            log.first().is_some_and(|item| item["seq"] == newest)
        })
        .await
        .iter()
        .map(|item| item["seq"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = received[5..].iter().rev().map(Received::seq).collect();
    assert_eq!(seqs, expected, "the newest 100, newest first");
    app.get(&format!(
        "/api/v1/webhooks/{}/deliveries?limit=101",
        subscription["id"]
    ))
    .await
    .problem(400);
}

/// An `https` receiver whose certificate (for `localhost`) a certificate authority of its own
/// issued: it answers 204 to every request and keeps each `webhook-id`.
struct TlsReceiver {
    url: String,
    authority: Vec<u8>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl TlsReceiver {
    fn start() -> Self {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

        let authority_key = rcgen::KeyPair::generate().unwrap();
        let mut authority = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        authority.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let authority = rcgen::CertifiedIssuer::self_signed(authority, authority_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &authority)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![certificate.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        actix_web::rt::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = kept.clone();
                actix_web::rt::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut stream = tokio::io::BufReader::new(stream);
                    loop {
                        let (mut length, mut id) = (0, String::new());
                        loop {
                            let mut line = String::new();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                match name.to_ascii_lowercase().as_str() {
                                    "content-length" => length = value.trim().parse().unwrap(),
                                    "webhook-id" => id = value.trim().to_owned(),
                                    _ => {}
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        stream.read_exact(&mut body).await.unwrap();
                        seen.lock().unwrap().push(id);
                        let answer = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
                        if stream.get_mut().write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            url: format!("https://localhost:{port}/hooks/books"),
            authority: authority.der().to_vec(),
            seen,
        }
    }
}

#[actix_web::test]
async fn deliveries_to_https_receivers_verify_their_certificate() {
    let trusted = TlsReceiver::start();
    let unknown = TlsReceiver::start();
    let authority = trusted.authority.clone();
    let app = spawn(move |settings| settings.webhooks.trusted_roots = vec![authority]);
    app.subscribe(json!({"url": trusted.url})).await;
    let refused = app.subscribe(json!({"url": unknown.url})).await;
    app.create(json!({"title": "Sealed", "author": "A"})).await;
    let started = Instant::now();
    while trusted.seen.lock().unwrap().is_empty() && started.elapsed() < Duration::from_secs(10) {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(trusted.seen.lock().unwrap().len(), 1, "delivered over TLS");
    let failing = app
        .wait_for_status(&refused["id"], "failing", Duration::from_secs(10))
        .await;
    assert!(
        unknown.seen.lock().unwrap().is_empty(),
        "an unknown issuer gets nothing"
    );
    assert!(
        failing["last_error"].as_str().unwrap().contains("connect"),
        "{failing}"
    );
}

#[actix_web::test]
async fn an_owner_changes_where_and_what_is_delivered_and_deletes_a_subscription() {
    let app = spawn(|_| {});
    // History the feed holds is not delivered unless asked for (`after` defaults to the newest).
    app.create(json!({"title": "Before", "author": "A"})).await;
    let started = Instant::now();
    while app.changes().await.is_empty() && started.elapsed() < Duration::from_secs(5) {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let old = Receiver::start();
    let new = Receiver::start();
    let created = app
        .send_json(
            Method::POST,
            "/api/v1/webhooks",
            &json!({"url": old.url, "description": "  copy  "}),
            &[],
        )
        .await;
    assert_eq!(created.status, 201);
    let subscription = created.json();
    let id = subscription["id"].clone();
    assert_eq!(
        created.header("location"),
        Some(format!("/api/v1/webhooks/{id}").as_str())
    );
    assert_eq!(subscription["description"], "copy");
    assert_eq!(
        created.header("cache-control"),
        Some("no-store"),
        "the secret is never kept by a cache"
    );
    let changed = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            &json!({"url": new.url, "events": ["deleted"], "description": null}),
            &[("content-type", "application/merge-patch+json")],
        )
        .await;
    assert_eq!(changed.status, 200);
    let changed = changed.json();
    assert_eq!(changed["url"], json!(new.url));
    assert_eq!(changed["events"], json!(["deleted"]));
    assert!(changed["description"].is_null());
    // A description is read as a genre is: no NUL (PostgreSQL's text cannot hold one, and the
    // fuzzer's NUL once came back a 500) nor any other control character, at most 250
    // characters once trimmed; a refused patch changes nothing, not even its valid members.
    for description in ["copy\u{0}", "\u{1b}[31mred", &"d".repeat(251)] {
        let refused = app
            .send_json(
                Method::PATCH,
                &format!("/api/v1/webhooks/{id}"),
                &json!({"status": "paused", "description": description}),
                &[("content-type", "application/merge-patch+json")],
            )
            .await;
        let problem = refused.problem(422);
        assert_eq!(problem["errors"][0]["field"], "description", "{problem}");
    }
    let kept = app.get(&format!("/api/v1/webhooks/{id}")).await.json();
    assert!(kept["description"].is_null(), "{kept}");
    assert_ne!(kept["status"], "paused", "{kept}");
    let book = app.create(json!({"title": "After", "author": "A"})).await;
    let deleted = app
        .request(
            Method::DELETE,
            &format!("/api/v1/books/{}", book["id"]),
            &[],
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    let received = new.wait_for(1, Duration::from_secs(10)).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(new.seen().len(), 1, "only the deletion: {received:?}");
    assert_eq!(received[0].json()["kind"], "deleted");
    assert!(
        old.seen().is_empty(),
        "nothing to the old URL, and no history"
    );

    let gone = app
        .request(Method::DELETE, &format!("/api/v1/webhooks/{id}"), &[], None)
        .await;
    assert_eq!(gone.status, 204);
    app.get(&format!("/api/v1/webhooks/{id}"))
        .await
        .problem(404);
    app.get(&format!("/api/v1/webhooks/{id}/deliveries"))
        .await
        .problem(404);
    app.get("/api/v1/webhooks/0").await.problem(400);
}
