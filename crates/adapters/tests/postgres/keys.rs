use books_adapters::PostgresApiKeyRepository;
use books_domain::{CreateKeyError, KeyName, KeyService, RevokeKeyError, Scope};
use books_local_postgres::testing::TestDatabase;

fn keys() -> (KeyService, TestDatabase) {
    let database = TestDatabase::new();
    (
        KeyService::new(PostgresApiKeyRepository::new(database.pool())),
        database,
    )
}

#[test]
fn a_created_key_authenticates_with_its_scope_and_only_its_digest_is_stored() {
    let (keys, database) = keys();
    let (key, secret) = keys
        .create(&KeyName::new("ci").unwrap(), Scope::Write)
        .unwrap();
    assert_eq!((key.name.as_str(), key.scope), ("ci", Scope::Write));
    let principal = keys
        .ring()
        .unwrap()
        .authenticate(secret.expose())
        .cloned()
        .unwrap();
    assert_eq!(
        (principal.name, principal.scope),
        (
            books_domain::CallerName::Key(KeyName::new("ci").unwrap()),
            Scope::Write
        )
    );
    use diesel::prelude::*;
    let mut conn = PgConnection::establish(database.url()).unwrap();
    let stored: Vec<Vec<u8>> = books_adapters_digests(&mut conn);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].len(), 32);
    assert!(
        !stored[0]
            .windows(8)
            .any(|w| secret.expose().as_bytes().windows(8).any(|s| s == w))
    );
}

fn books_adapters_digests(conn: &mut diesel::PgConnection) -> Vec<Vec<u8>> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Digest {
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        digest: Vec<u8>,
    }
    diesel::sql_query("SELECT digest FROM api_key")
        .load::<Digest>(conn)
        .unwrap()
        .into_iter()
        .map(|d| d.digest)
        .collect()
}

#[test]
fn a_revoked_key_stops_authenticating_and_frees_its_name() {
    let (keys, _database) = keys();
    let name = KeyName::new("bot").unwrap();
    let (_, old) = keys.create(&name, Scope::Read).unwrap();
    assert!(matches!(
        keys.create(&name, Scope::Read),
        Err(CreateKeyError::NameTaken(_))
    ));
    keys.revoke(&name).unwrap();
    assert!(keys.ring().unwrap().authenticate(old.expose()).is_none());
    assert!(keys.list().unwrap().is_empty());
    assert!(matches!(
        keys.revoke(&name),
        Err(RevokeKeyError::NotFound(_))
    ));
    let (_, new) = keys.create(&name, Scope::Write).unwrap();
    assert!(keys.ring().unwrap().authenticate(new.expose()).is_some());
    assert_eq!(keys.list().unwrap().len(), 1);
}
