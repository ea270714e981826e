//! Drive the catalogue's use cases in memory, with no database and no async runtime.
//!
//! `cargo run -p books-domain --example in_memory`

#![allow(
    clippy::print_stdout,
    reason = "an example shows what it does on standard output"
)]

use books_domain::{
    BookInput, BookPatch, BookService, InMemoryBookRepository, ListQuery, NewBook, PageSize, Sort,
    SortKey, VersionCheck, WriteBookError,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let catalogue = BookService::new(InMemoryBookRepository::default());

    for (title, author) in [
        ("Dune", "Frank Herbert"),
        ("Emma", "Jane Austen"),
        ("Beloved", "Toni Morrison"),
    ] {
        catalogue.create_book(&NewBook::parse(&BookInput {
            title: title.into(),
            author: author.into(),
            ..BookInput::default()
        })?)?;
    }

    // Invalid input never becomes a book: every field is checked, and all problems are reported.
    if let Err(refused) = NewBook::parse(&BookInput {
        title: "   ".into(),
        ..BookInput::default()
    }) {
        println!("refused: {refused}");
    }

    // Page through the catalogue by title, two at a time.
    let mut query = ListQuery {
        sort: Sort {
            key: SortKey::Title,
            descending: false,
        },
        limit: PageSize::new(2).ok_or("page size")?,
        ..ListQuery::default()
    };
    loop {
        let page = catalogue.list_books(&query)?;
        let titles: Vec<_> = page.items.iter().map(|b| b.title().as_str()).collect();
        println!("page: {titles:?}");
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }

    // Optimistic concurrency: a write names the version it read.
    let dune = catalogue.list_books(&ListQuery::default())?.items[0].clone();
    let patch = BookPatch::parse(&BookInput {
        genre: "Science fiction".into(),
        ..BookInput::default()
    })?;
    let read = VersionCheck::OneOf(vec![dune.version()]);
    let updated = catalogue.patch_book(dune.id(), &patch, &read)?;
    println!("{} is now version {}", updated.title(), updated.version());
    match catalogue.patch_book(dune.id(), &patch, &read) {
        Err(WriteBookError::VersionMismatch { current, .. }) => {
            println!("stale write refused; current version {current}")
        }
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
