//! API keys: who may write.
//!
//! A key is 256 random bits, shown to its owner once. Only its SHA-256 digest is stored: the key
//! is long and random, so a fast digest is as safe as a slow password hash and lets every request
//! be checked in memory against a [`KeyRing`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::StorageError;

const KEY_PREFIX: &str = "bk_";

/// What a key allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Reading (which is open to everyone anyway; a read key gives its holder its own rate limit).
    Read,
    /// Reading and writing.
    Write,
}

impl Scope {
    /// The scope's name: `read` or `write`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    /// Reads `read` or `write`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            _ => None,
        }
    }

    /// True when this scope includes `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
}

/// The name of a key: 1 to 64 characters among letters, digits, `.`, `_` and `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyName(String);

/// The name given to [`KeyName::new`] breaks the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("a key name must be 1 to 64 characters among letters, digits, '.', '_' and '-'")]
pub struct InvalidKeyName;

impl KeyName {
    /// Checks a raw name.
    ///
    /// # Errors
    ///
    /// [`InvalidKeyName`] when it breaks the rule.
    pub fn new(raw: &str) -> Result<Self, InvalidKeyName> {
        let valid = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidKeyName)
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SHA-256 digest of a key: what storage keeps instead of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyDigest(pub [u8; 32]);

impl KeyDigest {
    /// The digest of a presented key.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    /// The digest that stands for the subject `subject` of `issuer`'s tokens. It never equals a
    /// key's: a key is `bk_` and hexadecimal digits, and what is digested here starts with a
    /// byte no key holds; and the issuer's length comes first, so no two (issuer, subject) pairs
    /// digest the same text.
    pub fn of_subject(issuer: &str, subject: &str) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"\0oidc\0");
        digest.update((issuer.len() as u64).to_be_bytes());
        digest.update(issuer.as_bytes());
        digest.update(subject.as_bytes());
        Self(digest.finalize().into())
    }
}

/// A new key's secret, to be shown once and never stored.
pub struct KeySecret(String);

impl KeySecret {
    fn generate() -> Result<Self, StorageError> {
        let mut bytes = [0_u8; 32];
        getrandom::fill(&mut bytes).map_err(|error| {
            StorageError::Unknown(anyhow::anyhow!(
                "the system has no randomness to give: {error}"
            ))
        })?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self(format!("{KEY_PREFIX}{hex}")))
    }

    /// The key, for its owner's eyes.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(…)")
    }
}

/// What is known of a stored key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Its name.
    pub name: KeyName,
    /// What it allows.
    pub scope: Scope,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// Who made a request: an API key's holder, or the subject of an OpenID Connect access token;
/// what it may do, and which caller it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The caller, by a digest that is never reused: the key's own digest, or for a token
    /// [`KeyDigest::of_subject`]. Unlike a key's name, which a new key may take once the old one
    /// is revoked, it never passes to another caller, so neither does what belongs to it (its
    /// idempotency keys, its webhook subscriptions).
    pub key: KeyDigest,
    /// How the caller is named, in messages and in rate limits.
    pub name: CallerName,
    /// What it allows.
    pub scope: Scope,
}

impl Principal {
    /// The subject `subject` of tokens issued by `issuer`, with `scope`.
    pub fn subject(issuer: &str, subject: &str, scope: Scope) -> Self {
        Self {
            key: KeyDigest::of_subject(issuer, subject),
            name: CallerName::Subject {
                issuer: issuer.to_owned(),
                subject: subject.to_owned(),
            },
            scope,
        }
    }
}

/// How a caller is named.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerName {
    /// The holder of an API key, by the key's name.
    Key(KeyName),
    /// The subject (`sub`) of an identity provider's access tokens, and the provider (`iss`): a
    /// subject is only unique within its issuer.
    Subject {
        /// The issuer.
        issuer: String,
        /// The subject.
        subject: String,
    },
}

impl fmt::Display for CallerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(name) => write!(f, "the key {name}"),
            Self::Subject { issuer, subject } => write!(f, "the subject {subject} of {issuer}"),
        }
    }
}

/// Why a key could not be created.
#[derive(Debug, Error)]
pub enum CreateKeyError {
    /// An active key already has this name.
    #[error("an active key is already named {0}")]
    NameTaken(KeyName),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a key could not be revoked.
#[derive(Debug, Error)]
pub enum RevokeKeyError {
    /// No active key has this name.
    #[error("no active key is named {0}")]
    NotFound(KeyName),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Storage of API keys.
pub trait ApiKeyRepository: Send + Sync + 'static {
    /// Stores a new active key.
    ///
    /// # Errors
    ///
    /// [`CreateKeyError::NameTaken`] when an active key has the name.
    fn insert(
        &self,
        name: &KeyName,
        scope: Scope,
        digest: &KeyDigest,
    ) -> Result<ApiKey, CreateKeyError>;

    /// The active keys, by name.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when storage fails.
    fn list(&self) -> Result<Vec<ApiKey>, StorageError>;

    /// The active keys' digests with their names and scopes.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when storage fails.
    fn active(&self) -> Result<Vec<(KeyDigest, Principal)>, StorageError>;

    /// Revokes the active key with this name: it stops working.
    ///
    /// # Errors
    ///
    /// [`RevokeKeyError::NotFound`] when there is none.
    fn revoke(&self, name: &KeyName) -> Result<(), RevokeKeyError>;
}

/// The active keys, in memory, for checking requests without a database round trip.
#[derive(Debug, Default, Clone)]
pub struct KeyRing {
    keys: Arc<HashMap<KeyDigest, Principal>>,
}

impl KeyRing {
    /// A ring of these keys.
    pub fn new(keys: impl IntoIterator<Item = (KeyDigest, Principal)>) -> Self {
        Self {
            keys: Arc::new(keys.into_iter().collect()),
        }
    }

    /// Who holds `key`, if it is an active key.
    pub fn authenticate(&self, key: &str) -> Option<&Principal> {
        if !key.starts_with(KEY_PREFIX) {
            return None;
        }
        self.keys.get(&KeyDigest::of(key))
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the ring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key use cases.
#[derive(Clone)]
pub struct KeyService {
    repository: Arc<dyn ApiKeyRepository>,
}

impl fmt::Debug for KeyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyService").finish_non_exhaustive()
    }
}

impl KeyService {
    /// A service over `repository`.
    pub fn new(repository: impl ApiKeyRepository) -> Self {
        Self {
            repository: Arc::new(repository),
        }
    }

    /// Creates a key and returns it with its secret, which exists nowhere else.
    ///
    /// ```
    /// use books_domain::{InMemoryApiKeyRepository, KeyName, KeyService, Scope};
    /// let keys = KeyService::new(InMemoryApiKeyRepository::default());
    /// let (key, secret) = keys.create(&KeyName::new("ci")?, Scope::Write)?;
    /// let ring = keys.ring()?;
    /// assert_eq!(ring.authenticate(secret.expose()).map(|p| p.scope), Some(Scope::Write));
    /// assert_eq!(ring.authenticate("bk_guess"), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`CreateKeyError::NameTaken`] when an active key has the name.
    pub fn create(
        &self,
        name: &KeyName,
        scope: Scope,
    ) -> Result<(ApiKey, KeySecret), CreateKeyError> {
        let secret = KeySecret::generate()?;
        let key = self
            .repository
            .insert(name, scope, &KeyDigest::of(secret.expose()))?;
        Ok((key, secret))
    }

    /// The active keys.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when storage fails.
    pub fn list(&self) -> Result<Vec<ApiKey>, StorageError> {
        self.repository.list()
    }

    /// Revokes a key.
    ///
    /// # Errors
    ///
    /// [`RevokeKeyError::NotFound`] when no active key has the name.
    pub fn revoke(&self, name: &KeyName) -> Result<(), RevokeKeyError> {
        self.repository.revoke(name)
    }

    /// The active keys, loaded into a ring.
    ///
    /// # Errors
    ///
    /// [`StorageError`] when storage fails.
    pub fn ring(&self) -> Result<KeyRing, StorageError> {
        Ok(KeyRing::new(self.repository.active()?))
    }
}

/// Keeps keys in memory, for tests and embedders.
#[derive(Debug, Default)]
pub struct InMemoryApiKeyRepository {
    keys: std::sync::Mutex<Vec<(KeyDigest, ApiKey)>>,
}

impl InMemoryApiKeyRepository {
    fn keys(&self) -> Result<std::sync::MutexGuard<'_, Vec<(KeyDigest, ApiKey)>>, StorageError> {
        self.keys.lock().map_err(|_| {
            StorageError::Unknown(anyhow::anyhow!("the in-memory key store was poisoned"))
        })
    }
}

impl ApiKeyRepository for InMemoryApiKeyRepository {
    fn insert(
        &self,
        name: &KeyName,
        scope: Scope,
        digest: &KeyDigest,
    ) -> Result<ApiKey, CreateKeyError> {
        let mut keys = self.keys()?;
        if keys.iter().any(|(_, key)| &key.name == name) {
            return Err(CreateKeyError::NameTaken(name.clone()));
        }
        let key = ApiKey {
            name: name.clone(),
            scope,
            created_at: Utc::now(),
        };
        keys.push((*digest, key.clone()));
        Ok(key)
    }

    fn list(&self) -> Result<Vec<ApiKey>, StorageError> {
        let mut keys: Vec<ApiKey> = self.keys()?.iter().map(|(_, key)| key.clone()).collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(keys)
    }

    fn active(&self) -> Result<Vec<(KeyDigest, Principal)>, StorageError> {
        Ok(self
            .keys()?
            .iter()
            .map(|(digest, key)| {
                (
                    *digest,
                    Principal {
                        key: *digest,
                        name: CallerName::Key(key.name.clone()),
                        scope: key.scope,
                    },
                )
            })
            .collect())
    }

    fn revoke(&self, name: &KeyName) -> Result<(), RevokeKeyError> {
        let mut keys = self.keys()?;
        let before = keys.len();
        keys.retain(|(_, key)| &key.name != name);
        if keys.len() == before {
            return Err(RevokeKeyError::NotFound(name.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_one_caller_per_issuer_and_never_an_api_key() {
        let a = KeyDigest::of_subject("https://id.example", "alice");
        assert_eq!(a, KeyDigest::of_subject("https://id.example", "alice"));
        assert_ne!(a, KeyDigest::of_subject("https://other.example", "alice"));
        // The issuer's length is digested first: moving the boundary makes another caller.
        assert_ne!(
            KeyDigest::of_subject("https://id.example/a", "lice"),
            KeyDigest::of_subject("https://id.example/", "alice")
        );
        assert_ne!(a, KeyDigest::of("https://id.examplealice"));
        let principal = Principal::subject("https://id.example", "alice", Scope::Read);
        assert_eq!(principal.key, a);
        assert_eq!(
            principal.name.to_string(),
            "the subject alice of https://id.example"
        );
    }

    fn service() -> KeyService {
        KeyService::new(InMemoryApiKeyRepository::default())
    }

    #[test]
    fn a_revoked_key_no_longer_authenticates() {
        let keys = service();
        let name = KeyName::new("ci").unwrap();
        let (_, secret) = keys.create(&name, Scope::Read).unwrap();
        assert!(keys.ring().unwrap().authenticate(secret.expose()).is_some());
        keys.revoke(&name).unwrap();
        assert!(keys.ring().unwrap().authenticate(secret.expose()).is_none());
        assert!(matches!(
            keys.revoke(&name),
            Err(RevokeKeyError::NotFound(_))
        ));
    }

    #[test]
    fn two_active_keys_cannot_share_a_name() {
        let keys = service();
        let name = KeyName::new("ci").unwrap();
        keys.create(&name, Scope::Read).unwrap();
        assert!(matches!(
            keys.create(&name, Scope::Write),
            Err(CreateKeyError::NameTaken(_))
        ));
    }

    #[test]
    fn secrets_are_random_prefixed_and_never_printed_by_debug() {
        let (a, b) = (
            KeySecret::generate().unwrap(),
            KeySecret::generate().unwrap(),
        );
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("bk_") && a.expose().len() == 67);
        assert!(!format!("{a:?}").contains(&a.expose()[3..]));
    }

    #[test]
    fn write_includes_read_but_not_the_other_way() {
        assert!(Scope::Write.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Write));
        assert_eq!(Scope::parse("write"), Some(Scope::Write));
        assert_eq!(Scope::parse("admin"), None);
    }

    #[test]
    fn key_names_are_checked() {
        assert!(KeyName::new("ci-bot_1.0").is_ok());
        for bad in ["", "has space", "ünï", &"x".repeat(65)] {
            assert!(KeyName::new(bad).is_err(), "{bad}");
        }
    }
}
