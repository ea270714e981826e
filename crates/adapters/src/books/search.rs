//! Search on PostgreSQL: the candidates of a query, found through the dictionary of words and
//! the GIN index on each book's words (see `migrations/…_search_books/up.sql`), ranked by the
//! domain ([`books_domain::rank`]).
//!
//! One read, in one snapshot:
//! 1. the query's words, folded by `book_search_words` exactly as the books' words were;
//! 2. each word's expansions: the dictionary's words within its typo budget (trigram index and
//!    a Levenshtein prefilter in SQL, the swap-aware distance confirmed here) and, for the last
//!    word, up to [`PREFIXES`] words it begins;
//! 3. the candidates: the books with every query word, and for each query word on its own the
//!    books with it, each set bounded ([`ALL_WORDS`], [`EACH_WORD`]) so that a word in half the
//!    catalogue costs no more than a rare one: a book that matches several words is found
//!    through the rarer ones;
//! 4. when a bound was reached, the total (up to [`MAX_TOTAL`]) and the facets are counted by
//!    SQL over every result; otherwise from the candidates, which are then every result.

use books_domain::{
    BookSearch, Candidate, ConsistencyToken, FacetCounts, FacetValue, Facets, ListBooksError,
    MAX_FACET_VALUES, MAX_QUERY_WORDS, MAX_TOTAL, SearchQuery, SearchResults, osa_distance, rank,
    typo_budget,
};
use diesel::connection::SimpleConnection as _;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::result::Error as DieselError;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text};

use super::PostgresBookRepository;
use super::rows::{BookRow, RETURNED};

/// A statement being built, with its parameters bound one at a time (its text depends on the
/// query's words, so it is not kept prepared).
type Statement<'a> = diesel::query_builder::BoxedSqlQuery<'a, Pg, diesel::query_builder::SqlQuery>;

/// The most books taken that have every query word.
const ALL_WORDS: i64 = 1_000;
/// The most books taken for each query word on its own.
const EACH_WORD: i64 = 200;
/// The most words the last query word expands to as a prefix.
const PREFIXES: i64 = 200;

#[derive(QueryableByName)]
struct Folded {
    #[diesel(sql_type = Array<Text>)]
    words: Vec<String>,
}

#[derive(QueryableByName)]
struct Expansion {
    #[diesel(sql_type = Integer)]
    query: i32,
    #[diesel(sql_type = Text)]
    word: String,
}

#[derive(QueryableByName)]
struct CandidateRow {
    #[diesel(embed)]
    book: BookRow,
    #[diesel(sql_type = Array<Text>)]
    title_words: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    author_words: Vec<String>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName)]
struct FacetRow {
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// What one snapshot gave: the folded query words, the candidates, and (when a bound was
/// reached) the total and facets counted by SQL.
struct Found {
    words: Vec<String>,
    candidates: Vec<CandidateRow>,
    counted: Option<(u64, Option<FacetCounts>)>,
}

/// `LIKE` text that matches itself only.
fn literal(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Each query word's expansions, confirmed: the word itself, the dictionary's words within its
/// budget, and for the last one the words it begins.
fn expansions(conn: &mut PgConnection, words: &[String]) -> Result<Vec<Vec<String>>, DieselError> {
    let budgets: Vec<i32> = words
        .iter()
        .map(|w| i32::try_from(typo_budget(w)).unwrap_or(0))
        .collect();
    // The trigram index answers `%` above this similarity: low enough for every word within
    // two edits of a long word (a swap changes up to four of its trigrams).
    conn.batch_execute("SET LOCAL pg_trgm.similarity_threshold = 0.1")?;
    let typos: Vec<Expansion> = diesel::sql_query(
        "SELECT q.i::int AS query, d.word \
         FROM unnest($1::text[], $2::int[]) WITH ORDINALITY AS q (w, budget, i) \
         CROSS JOIN LATERAL (SELECT word FROM search_word \
             WHERE q.budget > 0 AND word % q.w AND word <> q.w \
             AND levenshtein_less_equal(word, q.w, q.budget + 1) <= q.budget + 1) AS d",
    )
    .bind::<Array<Text>, _>(words)
    .bind::<Array<Integer>, _>(&budgets)
    .load(conn)?;
    let mut expanded: Vec<Vec<String>> = words.iter().map(|w| vec![w.clone()]).collect();
    for Expansion { query, word } in typos {
        let Some(i) = usize::try_from(query).ok().and_then(|q| q.checked_sub(1)) else {
            continue;
        };
        let Some(query) = words.get(i) else { continue };
        // Levenshtein counts a swap as two edits; the budget counts it as one.
        if osa_distance(query, &word, typo_budget(query)).is_some() {
            expanded[i].push(word);
        }
    }
    if let Some(last) = words.last() {
        let prefixed: Vec<Expansion> = diesel::sql_query(
            "SELECT 0 AS query, word FROM search_word WHERE word LIKE $1 AND word <> $2 \
             ORDER BY word LIMIT $3",
        )
        .bind::<Text, _>(format!("{}%", literal(last)))
        .bind::<Text, _>(last)
        .bind::<BigInt, _>(PREFIXES)
        .load(conn)?;
        if let Some(words) = expanded.last_mut() {
            words.extend(prefixed.into_iter().map(|e| e.word));
        }
    }
    Ok(expanded)
}

/// The filters of a search, as SQL after `AND`, with the parameters they start at.
fn filters(query: &SearchQuery, first: usize) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut values = Vec::new();
    if let Some(author) = &query.filter.author {
        values.push(author.as_str().to_owned());
        sql.push_str(&format!(
            " AND lower(author) = lower(${})",
            first + values.len() - 1
        ));
    }
    if let Some(genre) = &query.filter.genre {
        values.push(genre.as_str().to_owned());
        sql.push_str(&format!(
            " AND lower(genre) = lower(${})",
            first + values.len() - 1
        ));
    }
    (sql, values)
}

const WORDS: &str = "(title_words || author_words)";

/// The candidates: books with every word, and books with each word, each set bounded; and the
/// book with the ISBN the query is.
fn candidates(
    conn: &mut PgConnection,
    query: &SearchQuery,
    expanded: &[Vec<String>],
) -> Result<Vec<CandidateRow>, DieselError> {
    let n = expanded.len();
    let (filter, filter_values) = filters(query, n + 1);
    let isbn_param = n + filter_values.len() + 1;
    // Each set reads its rows itself (a book in several sets comes once per set, and is kept
    // once below): reading ids first and the rows after would visit each row twice.
    let columns = format!("{}, title_words, author_words", *RETURNED);
    let mut sets = Vec::new();
    if n > 1 {
        let every: Vec<String> = (1..=n).map(|i| format!("{WORDS} && ${i}")).collect();
        sets.push(format!(
            "(SELECT {columns} FROM book WHERE {}{filter} LIMIT {ALL_WORDS})",
            every.join(" AND ")
        ));
    }
    for i in 1..=n {
        sets.push(format!(
            "(SELECT {columns} FROM book WHERE {WORDS} && ${i}{filter} LIMIT {EACH_WORD})"
        ));
    }
    let isbn = query.text.isbn();
    if isbn.is_some() {
        sets.push(format!(
            "(SELECT {columns} FROM book WHERE isbn = ${isbn_param}{filter})"
        ));
    }
    let sql = sets.join(" UNION ALL ");
    let mut statement: Statement<'_> = diesel::sql_query(sql).into_boxed::<Pg>();
    for words in expanded {
        statement = statement.bind::<Array<Text>, _>(words.clone());
    }
    for value in filter_values {
        statement = statement.bind::<Text, _>(value);
    }
    if let Some(isbn) = isbn {
        statement = statement.bind::<Text, _>(isbn.as_str().to_owned());
    }
    let mut rows: Vec<CandidateRow> = statement.load(conn)?;
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    rows.retain(|row| seen.insert(row.book.id));
    Ok(rows)
}

/// The total (up to [`MAX_TOTAL`], and whether there are more) and the facets, counted over
/// every book that has any of the words.
fn count(
    conn: &mut PgConnection,
    query: &SearchQuery,
    expanded: &[Vec<String>],
) -> Result<(u64, Option<FacetCounts>), DieselError> {
    let all: Vec<String> = expanded.iter().flatten().cloned().collect();
    let (filter, values) = filters(query, 2);
    // One more than the cap, to tell "exactly 10 000" from "more"; the facets count the
    // 10 000 results the total counts.
    let results =
        format!("SELECT author, genre FROM book WHERE {WORDS} && $1{filter} LIMIT {MAX_TOTAL}");
    let bound = |sql: String| {
        let mut statement: Statement<'_> = diesel::sql_query(sql)
            .into_boxed::<Pg>()
            .bind::<Array<Text>, _>(all.clone());
        for value in &values {
            statement = statement.bind::<Text, _>(value.clone());
        }
        statement
    };
    // Through the words index, always. For a common word the planner expects the first 10,001
    // matching rows early in the table and scans it instead, computing every row's words on the
    // way: 45 ms at a million books for `king history` (1 book in 10 matches), against 20 ms
    // for the index (docs/performance.md, eighth round). The candidates' queries above keep
    // the planner's choice: their 200 rows are found early in the table indeed.
    conn.batch_execute("SET LOCAL enable_seqscan = off")?;
    // Counted without reading a column of the rows: only what visibility needs is read.
    let total: Count = bound(format!(
        "SELECT count(*) AS count FROM (SELECT FROM book WHERE {WORDS} && $1{filter} LIMIT {}) AS r",
        MAX_TOTAL + 1
    ))
    .get_result(conn)?;
    let facet = |conn: &mut PgConnection, column: &str| -> Result<Vec<FacetValue>, DieselError> {
        let rows: Vec<FacetRow> = bound(format!(
            "SELECT {column} AS value, count(*) AS count \
             FROM ({}) AS r WHERE {column} IS NOT NULL \
             GROUP BY {column} ORDER BY count(*) DESC, {column} LIMIT {MAX_FACET_VALUES}",
            results
        ))
        .load(conn)?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(FacetValue {
                    value: row.value?,
                    count: u64::try_from(row.count).unwrap_or(0),
                })
            })
            .collect())
    };
    let facets = if query.facets == Facets::default() {
        None
    } else {
        Some(FacetCounts {
            genre: query
                .facets
                .genre
                .then(|| facet(conn, "genre"))
                .transpose()?,
            author: query
                .facets
                .author
                .then(|| facet(conn, "author"))
                .transpose()?,
        })
    };
    Ok((u64::try_from(total.count).unwrap_or(0), facets))
}

fn find(conn: &mut PgConnection, query: &SearchQuery) -> Result<Found, DieselError> {
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(|conn| {
            let folded: Folded = diesel::sql_query("SELECT book_search_words($1) AS words")
                .bind::<Text, _>(query.text.as_str())
                .get_result(conn)?;
            let mut words: Vec<String> = Vec::new();
            for word in folded.words {
                if !words.contains(&word) && words.len() < MAX_QUERY_WORDS {
                    words.push(word);
                }
            }
            if words.is_empty() {
                return Ok(Found {
                    words,
                    candidates: Vec::new(),
                    counted: None,
                });
            }
            let expanded = expansions(conn, &words)?;
            let candidates = candidates(conn, query, &expanded)?;
            // Under every bound, the candidates are every result; otherwise SQL counts them.
            let bounded = usize::try_from(EACH_WORD).unwrap_or(usize::MAX);
            let counted = if candidates.len() >= bounded {
                Some(count(conn, query, &expanded)?)
            } else {
                None
            };
            Ok(Found {
                words,
                candidates,
                counted,
            })
        })
}

impl BookSearch for PostgresBookRepository {
    fn search(
        &self,
        query: &SearchQuery,
        seen: Option<ConsistencyToken>,
    ) -> Result<SearchResults, ListBooksError> {
        let found = self.read(seen, |conn| find(conn, query))?;
        let isbn = query.text.isbn();
        let mut candidates = Vec::with_capacity(found.candidates.len());
        for row in found.candidates {
            candidates.push(Candidate {
                book: row.book.try_into()?,
                title_words: row.title_words,
                author_words: row.author_words,
            });
        }
        let isbn_match = isbn.and_then(|isbn| {
            candidates
                .iter()
                .find(|c| c.book.fields().isbn == Some(isbn))
                .map(|c| c.book.id())
        });
        let ranked = rank(&found.words, candidates, isbn_match);
        let mut results = SearchResults::page_of(ranked, query);
        if let Some((total, facets)) = found.counted {
            results.total = total.min(MAX_TOTAL);
            results.total_capped = total > MAX_TOTAL;
            results.facets = facets;
        }
        Ok(results)
    }
}
