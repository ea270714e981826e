//! Ranked search: `GET /api/v1/books/search`, for people typing in a search box and programs
//! that must find the book a piece of text is about (the rules: `books_domain::search`).

use actix_web::{HttpRequest, HttpResponse, web};
use books_domain::{
    Author, FacetCounts, FacetValue, Facets, Genre, MAX_OFFSET, PageSize, SearchHit, SearchQuery,
    SearchResults, SearchText,
};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::blocking::blocking;
use crate::representation::consistency::ConsistencyTokenHeader;
use crate::representation::params::Params;
use crate::representation::problem::ApiError;
use crate::representation::schemas::BookResponse;
use crate::routes::books::given;
use crate::state::State;

/// The parameters of a search.
//
// The document's description only: the query string is read by `read_search`, which refuses a
// repeated parameter, as every route does.
#[derive(Debug, IntoParams)]
#[expect(
    dead_code,
    reason = "the document's parameters: the query string is read by read_search"
)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// What to look for: 1 to 200 characters once trimmed, with at least one word (a `q` of only
    /// spaces or punctuation is a 400). Words are matched in titles and authors ignoring case and
    /// diacritics, with 1 typo forgiven in words of 5 to 8 characters and 2 from 9; the last word
    /// also matches the words it begins. A `q` that is an ISBN finds that book first.
    #[param(required = true)]
    q: String,
    /// Results per page, 1 to 100.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, default = 20)]
    limit: Option<String>,
    /// Results to skip, 0 to 1 000.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 1000, default = 0)]
    offset: Option<String>,
    /// Only books by this author (exact match, case-insensitive).
    #[param(max_length = 250)]
    author: Option<String>,
    /// Only books of this genre (exact match, case-insensitive).
    #[param(max_length = 250)]
    genre: Option<String>,
    /// Count the results by `genre`, by `author`, or both (`genre,author`).
    #[param(pattern = "^(genre|author)(,(genre|author))?$")]
    facets: Option<String>,
}

/// A search's results: one page, ranked, with the total and the facets asked for.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "items": [{"book": {"id": 42, "title": "Pride and Prejudice", "author": "Jane Austen",
        "genre": "Classic", "isbn": "9780141439518", "published_year": 1813, "version": 1,
        "created_at": "2026-11-24T06:26:29.123456Z", "updated_at": "2026-11-24T06:26:29.123456Z"},
        "score": 0.97,
        "highlight": {"title": "<em>Pride</em> <em>and</em> <em>Prejudice</em>", "author": "Jane Austen"}}],
    "total": 1, "total_capped": false,
    "facets": {"genre": [{"value": "Classic", "count": 1}]}
}))]
pub(crate) struct SearchPage {
    /// The results of this page, best first.
    items: Vec<SearchItem>,
    /// Every result, counted up to 10 000.
    #[schema(minimum = 0, maximum = 10000, format = Int64)]
    total: i64,
    /// True when there are more than 10 000 results (`total` is then 10 000).
    total_capped: bool,
    /// The counts asked for with `facets`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    facets: Option<SearchFacets>,
}

/// One result.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchItem {
    /// The book.
    book: BookResponse,
    /// Relevance in (0, 1], higher is better; never higher than the result before.
    #[schema(exclusive_minimum = 0, maximum = 1)]
    score: f64,
    /// Where the query matched.
    highlight: SearchHighlight,
}

/// The title and author, HTML-escaped, with each matched word wrapped in `<em>…</em>`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchHighlight {
    /// The title.
    title: String,
    /// The author.
    author: String,
}

/// Counts over every result, at most 100 values per facet, most frequent first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchFacets {
    /// By genre (books without one are not counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    genre: Option<Vec<FacetCount>>,
    /// By author.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    author: Option<Vec<FacetCount>>,
}

/// How many results have a value.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FacetCount {
    /// The value.
    value: String,
    /// How many results have it.
    #[schema(minimum = 1, format = Int64)]
    count: i64,
}

fn counts(values: Vec<FacetValue>) -> Vec<FacetCount> {
    values
        .into_iter()
        .map(|v| FacetCount {
            value: v.value,
            count: i64::try_from(v.count).unwrap_or(i64::MAX),
        })
        .collect()
}

impl From<SearchResults> for SearchPage {
    fn from(results: SearchResults) -> Self {
        Self {
            items: results
                .hits
                .into_iter()
                .map(
                    |SearchHit {
                         book,
                         score,
                         highlight,
                     }| SearchItem {
                        book: BookResponse::from(&book),
                        score,
                        highlight: SearchHighlight {
                            title: highlight.title,
                            author: highlight.author,
                        },
                    },
                )
                .collect(),
            total: i64::try_from(results.total).unwrap_or(i64::MAX),
            total_capped: results.total_capped,
            facets: results
                .facets
                .map(|FacetCounts { genre, author }| SearchFacets {
                    genre: genre.map(counts),
                    author: author.map(counts),
                }),
        }
    }
}

/// A whole number in `min..=max`, or a 400 naming the parameter.
fn bounded(name: &str, raw: Option<&str>, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
    raw.map(|text| {
        text.parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{name} must be a whole number from {min} to {max}"))
            })
    })
    .transpose()
}

/// Reads a search's query string; other parameters are ignored, a repeated one is a 400.
fn read_search(request: &HttpRequest) -> Result<SearchQuery, ApiError> {
    let params = Params::parse(request.query_string().as_bytes(), "query string")?;
    let text = params
        .get("q")
        .ok_or_else(|| ApiError::BadRequest("q is required".to_owned()))?;
    let text = SearchText::new(text).map_err(|error| ApiError::BadRequest(format!("q {error}")))?;
    let mut query = SearchQuery::new(text);
    if let Some(limit) = bounded("limit", params.get("limit"), 1, 100)? {
        query.limit = PageSize::new(limit).unwrap_or_default();
    }
    query.offset = bounded("offset", params.get("offset"), 0, MAX_OFFSET)?.unwrap_or(0);
    let text_filter = |name: &str| params.get(name).map(str::to_owned);
    query.filter.author = given(text_filter("author").as_ref())
        .map(Author::new)
        .transpose()
        .map_err(|error| ApiError::BadRequest(format!("author {error}")))?;
    query.filter.genre = given(text_filter("genre").as_ref())
        .map(Genre::new)
        .transpose()
        .map_err(|error| ApiError::BadRequest(format!("genre {error}")))?;
    if let Some(facets) = params.get("facets") {
        let mut wanted = Facets::default();
        for name in facets.split(',') {
            match name {
                "genre" => wanted.genre = true,
                "author" => wanted.author = true,
                _ => {
                    return Err(ApiError::BadRequest(
                        "facets must be genre, author, or genre,author".to_owned(),
                    ));
                }
            }
        }
        query.facets = wanted;
    }
    Ok(query)
}

/// Search books
///
/// The catalogue ranked by relevance: more query words matched first, then fewer typos, then
/// matches in the title before the author, whole words before prefixes, a title equal to the
/// query first, then by id. `total` counts every result up to 10 000.
#[utoipa::path(
    get,
    path = "/api/v1/books/search",
    operation_id = "searchBooks",
    tag = "books",
    params(SearchParams, ConsistencyTokenHeader),
    responses(
        (status = 200, description = "One page of results, best first", body = SearchPage),
    )
)]
pub(crate) async fn search_books(
    state: web::Data<State>,
    ConsistencyTokenHeader { token }: ConsistencyTokenHeader,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let query = read_search(&request)?;
    let results = blocking(&state.service, move |s| s.search_books(&query, token)).await?;
    Ok(HttpResponse::Ok().json(SearchPage::from(results)))
}
