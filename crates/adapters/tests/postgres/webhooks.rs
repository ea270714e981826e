use std::time::Duration;

use books_adapters::PostgresWebhookRepository;
use books_domain::{
    EventFilter, KeyDigest, NewSubscription, Owner, WebhookRepository as _, WebhookService,
    WebhookUrl,
};
use books_local_postgres::testing::TestDatabase;

fn subscribe(service: &WebhookService, owner: &Owner) -> books_domain::WebhookSecret {
    let new = NewSubscription {
        url: WebhookUrl::parse("http://receiver.example/hook").unwrap(),
        events: EventFilter::default(),
        description: None,
        after: Some(0),
    };
    service.create(owner, &new).unwrap().1
}

fn stored_secrets(database: &TestDatabase) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Stored {
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        secret: Vec<u8>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Bytea>)]
        secret_nonce: Option<Vec<u8>>,
    }
    let mut conn = PgConnection::establish(database.url()).unwrap();
    diesel::sql_query("SELECT secret, secret_nonce FROM webhook_subscription ORDER BY id")
        .load::<Stored>(&mut conn)
        .unwrap()
        .into_iter()
        .map(|row| (row.secret, row.secret_nonce))
        .collect()
}

/// Makes the feed hold one change, so that the subscription has something to claim.
fn one_change(database: &TestDatabase) {
    use diesel::prelude::*;
    let mut conn = PgConnection::establish(database.url()).unwrap();
    diesel::sql_query("INSERT INTO book (title, author) VALUES ('T', 'A')")
        .execute(&mut conn)
        .unwrap();
    diesel::sql_query("SELECT sequence_book_changes()")
        .execute(&mut conn)
        .unwrap();
}

#[test]
fn a_sealed_secret_is_not_in_the_database_and_only_its_key_opens_it() {
    let database = TestDatabase::new();
    let sealing = PostgresWebhookRepository::new(database.pool()).sealing_with([1; 32]);
    let owner = Owner::of(&books_domain::Principal {
        key: KeyDigest([9; 32]),
        name: books_domain::CallerName::Key(books_domain::KeyName::new("owner").unwrap()),
        scope: books_domain::Scope::Read,
    });
    let secret = subscribe(&WebhookService::new(sealing.clone()), &owner);
    let stored = stored_secrets(&database);
    assert_eq!(stored.len(), 1);
    let (sealed, nonce) = &stored[0];
    assert!(nonce.as_ref().is_some_and(|nonce| nonce.len() == 12));
    assert_ne!(
        sealed.as_slice(),
        secret.as_bytes(),
        "a dump does not hold the secret"
    );
    assert!(
        !sealed
            .windows(8)
            .any(|w| secret.as_bytes().windows(8).any(|s| s == w)),
        "nor any piece of it"
    );
    one_change(&database);

    // Another key (or none) cannot open it: the worker is told why, and signs nothing.
    let other = PostgresWebhookRepository::new(database.pool()).sealing_with([2; 32]);
    let claimed = other.claim("other", Duration::from_secs(1), 10).unwrap();
    assert!(
        claimed[0]
            .secret
            .as_ref()
            .unwrap_err()
            .contains("another key")
    );
    other.release_all("other").unwrap();
    let unsealed = PostgresWebhookRepository::new(database.pool());
    let claimed = unsealed.claim("none", Duration::from_secs(1), 10).unwrap();
    assert!(
        claimed[0]
            .secret
            .as_ref()
            .unwrap_err()
            .contains("WEBHOOKS_SECRET_KEY")
    );
    unsealed.release_all("none").unwrap();
    let claimed = sealing.claim("right", Duration::from_secs(1), 10).unwrap();
    assert_eq!(claimed[0].secret.as_ref().unwrap(), &secret);
}

#[test]
fn a_lease_is_held_by_one_worker_until_it_expires_or_is_given_back() {
    let database = TestDatabase::new();
    let repository = PostgresWebhookRepository::new(database.pool());
    let owner = Owner::from_bytes(vec![3; 32]);
    subscribe(&WebhookService::new(repository.clone()), &owner);
    one_change(&database);
    assert_eq!(
        repository
            .claim("a", Duration::from_millis(300), 10)
            .unwrap()
            .len(),
        1
    );
    assert!(
        repository
            .claim("b", Duration::from_secs(1), 10)
            .unwrap()
            .is_empty(),
        "held"
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        repository
            .claim("b", Duration::from_secs(5), 10)
            .unwrap()
            .len(),
        1,
        "expired"
    );
    repository.release_all("b").unwrap();
    assert_eq!(
        repository
            .claim("c", Duration::from_secs(5), 10)
            .unwrap()
            .len(),
        1,
        "given back"
    );
}
