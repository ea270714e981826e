//! The books catalogue, independent of any web framework, database or async runtime.
//!
//! This crate is the middle of a hexagonal design: it holds the [`Book`] and the validated values
//! it is made of, the [`BookRepository`] port that storage adapters implement, and the
//! [`BookService`] with the use cases (create, get, list, patch, delete, and the
//! whole-catalogue ones: batch create and export), and the webhook subscriptions that push the
//! change feed to other services ([`WebhookService`]).
//!
//! The one decision to know: **a value that exists is valid**. [`Title`], [`Author`] and [`Genre`]
//! can only be built through constructors that trim and check their input, so a [`Book`] never
//! needs checking again downstream, whether it came from a request, a database row or an embedder.
//!
//! ```
//! use books_domain::{BookInput, BookService, InMemoryBookRepository, NewBook};
//!
//! let service = BookService::new(InMemoryBookRepository::default());
//! let draft = NewBook::parse(&BookInput { title: "  Dune ".into(), author: "Frank Herbert".into(), ..BookInput::default() })?;
//! let book = service.create_book(&draft)?;
//! assert_eq!(book.title().as_str(), "Dune");
//! assert_eq!(book.version().get(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crate is synchronous on purpose: storage adapters such as diesel are synchronous, and an
//! async caller runs the use cases on a blocking thread pool of its choosing.
#![deny(missing_docs)]

mod batch;
mod book;
mod consistency;
pub mod contract;
mod errors;
mod feed;
mod fields;
mod health;
mod idempotency;
mod identity;
mod keys;
mod listing;
mod memory;
mod ports;
mod search;
mod service;
mod webhooks;

pub use batch::{
    CreatedBooks, EXPORT_SLICE, ExportQuery, ExportSink, InvalidBatch, MAX_BATCH, NewBooks,
};
pub use book::{Author, Book, BookId, Genre, MAX_TEXT_CHARS, TextError, Title, Version};
pub use consistency::ConsistencyToken;
pub use errors::{
    CreateBookError, GetBookError, IsbnTaken, ListBooksError, StorageError, WriteBookError,
};
pub use feed::{
    CHANGES_RETENTION, Change, ChangeKind, ChangeLimit, ChangePage, ChangeSignal, ChangesError,
};
pub use fields::{
    BookField, BookInput, BookPatch, FieldError, FieldKind, FieldProblem, FieldValue, InvalidBook,
    NewBook, PatchValue, Raw, RequestDigest,
};
pub use health::{PoolStatus, ReplicaStatus, StorageHealth};
pub use idempotency::{Created, IDEMPOTENCY_KEY_RETENTION, IdempotencyKey, InvalidIdempotencyKey};
pub use identity::{EARLIEST_YEAR, Isbn, IsbnError, LATEST_YEAR, PublishedYear, YearOutOfRange};
pub use keys::{
    ApiKey, ApiKeyRepository, CallerName, CreateKeyError, InMemoryApiKeyRepository, InvalidKeyName,
    KeyDigest, KeyName, KeyRing, KeySecret, KeyService, Principal, RevokeKeyError, Scope,
};
pub use listing::{
    BookFilter, CursorConflict, ListQuery, Page, PageSize, Position, SearchTerm, Sort, SortKey,
    SortValue,
};
pub use memory::InMemoryBookRepository;
pub use ports::{
    BookReader, BookRepository, BookSearch, BookWriter, ChangeFeed, IdempotencyRecords,
    TargetedPatch, VersionCheck,
};
pub use search::{
    Candidate, FacetCounts, FacetValue, Facets, Highlight, MAX_FACET_VALUES, MAX_OFFSET,
    MAX_QUERY_CHARS, MAX_QUERY_WORDS, MAX_TOTAL, SearchHit, SearchQuery, SearchResults, SearchText,
    SearchTextError, fold, is_separator, osa_distance, query_words, rank, typo_budget, words,
};
pub use service::BookService;
pub use webhooks::{
    Assignment, DELIVERY_LOG, Delivery, EventFilter, InvalidEvents, InvalidUrl,
    MAX_DESCRIPTION_CHARS, MAX_SUBSCRIPTIONS, MAX_URL_CHARS, NewSubscription, NextStep, Owner,
    Progress, Resume, RetryPolicy, Subscription, SubscriptionId, SubscriptionPatch,
    SubscriptionStatus, WebhookError, WebhookRepository, WebhookSecret, WebhookService, WebhookUrl,
    subscription_description,
};
