//! Drives the live service through the progenitor-generated client: create (with an ISBN and a year), get and list (with the
//! create's Consistency-Token), batch create and delete. `books-client-roundtrip BASE_URL WRITE_KEY`; exits non-zero on any surprise.

mod client {
    #![allow(clippy::all, unused, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/client.rs"));
}

use client::{Client, types};

fn check(condition: bool, what: &str) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(format!("round trip failed: {what}"))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (base, key) = (
        args.next().ok_or("BASE_URL")?,
        args.next().ok_or("WRITE_KEY")?,
    );
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse()?,
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()?;
    let client = Client::new_with_client(&base, http);

    let input = types::BookInput {
        title: "Dune (progenitor)".parse()?,
        author: "Frank Herbert".parse()?,
        genre: Some("Science fiction".parse()?),
        isbn: Some("0-618-00221-9".parse()?),
        published_year: Some(1997),
    };
    let response = client.create_book(None, &input).await?;
    // Sent back on the reads: they then see this write even through a lagging replica.
    let token = response
        .headers()
        .get("consistency-token")
        .ok_or("a write answers a Consistency-Token")?
        .to_str()?
        .to_owned();
    let created = response.into_inner();
    check(
        created.title == "Dune (progenitor)",
        "create returns the book",
    )?;
    check(created.version.get() == 1, "a new book is at version 1")?;

    let seen: types::GetBookConsistencyToken = token.parse()?;
    let fetched = client
        .get_book(created.id, Some(&seen), None)
        .await?
        .into_inner();
    check(
        fetched.id == created.id && fetched.genre.as_deref() == Some("Science fiction"),
        "get returns it",
    )?;
    check(
        fetched.isbn.as_deref().map(String::as_str) == Some("9780618002214")
            && fetched.published_year == Some(1997),
        "the isbn and year round-trip",
    )?;

    let author: types::ListBooksAuthor = "Frank Herbert".parse()?;
    let limit = std::num::NonZeroU64::new(100);
    let page = client
        .list_books(
            Some(&author),
            None,
            None,
            None,
            limit,
            None,
            None,
            Some(&token.parse::<types::ListBooksConsistencyToken>()?),
        )
        .await?
        .into_inner();
    check(
        page.items.iter().any(|book| book.id == created.id),
        "the listing holds it",
    )?;

    let batch = types::BookBatchInput {
        books: vec![
            types::BookInput {
                title: "Emma (progenitor)".parse()?,
                author: "Jane Austen".parse()?,
                genre: None,
                isbn: None,
                published_year: None,
            },
            types::BookInput {
                title: "Persuasion (progenitor)".parse()?,
                author: "Jane Austen".parse()?,
                genre: None,
                isbn: None,
                published_year: None,
            },
        ],
    };
    let made = client.create_books(None, &batch).await?.into_inner();
    check(
        made.books.len() == 2 && made.books[1].title == "Persuasion (progenitor)",
        "a batch comes back in order",
    )?;
    for book in &made.books {
        client.delete_book(book.id, None).await?;
    }

    client.delete_book(created.id, None).await?;
    match client.get_book(created.id, None, None).await {
        Err(client::Error::ErrorResponse(response)) => {
            check(response.status() == 404, "a deleted book is gone")?;
        }
        other => return Err(format!("a deleted book answered {other:?}").into()),
    }
    println!("progenitor round trip: create, get, list, batch, delete passed against {base}");
    Ok(())
}
