//! Ranked search that forgives typos: the rules, and the ranking of candidates a storage found.
//!
//! A storage adapter does the finding: it splits text into words at [`is_separator`], folds each
//! word to lower case without diacritics (PostgreSQL's `unaccent`, or [`fold`] in memory), and
//! returns every book that has a word within a query word's typo budget ([`typo_budget`],
//! counted by [`osa_distance`]) or, for the last query word, a word it begins. This module then
//! ranks those candidates ([`rank`]): the rules live once, whatever the storage.
//!
//! Ranking, each rule breaking the previous one's ties: more query words matched; fewer typos in
//! all; matched in the title before the author; whole words before prefixes; a title equal to
//! the query first (ignoring case and diacritics, and read as typed: each of its words matched
//! by the query's word at the same place, so "persuasoin" is the title "Persuasion" and "dun"
//! the title "Dune"); then the id.

use std::collections::HashMap;
use std::fmt::Write as _;

use thiserror::Error;

use crate::{Book, BookFilter, BookId, Genre, Isbn, PageSize};

/// The most characters a search may have, once trimmed.
pub const MAX_QUERY_CHARS: usize = 200;
/// The most words of a query that count; later ones are left out.
pub const MAX_QUERY_WORDS: usize = 10;
/// Results are counted up to this many; past it the total says "at least".
pub const MAX_TOTAL: u64 = 10_000;
/// The most values one facet lists.
pub const MAX_FACET_VALUES: usize = 100;
/// The furthest a search pages.
pub const MAX_OFFSET: u64 = 1_000;

/// True for a character that separates words: white space, punctuation and symbols of ASCII and
/// Latin-1, general punctuation, and CJK punctuation. Storage must split at exactly these (the
/// PostgreSQL adapter's `book_search_words` spells the same set), so that a book's words line up
/// with its text when matches are highlighted.
pub fn is_separator(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{2F}'
        | '\u{3A}'..='\u{40}'
        | '\u{5B}'..='\u{60}'
        | '\u{7B}'..='\u{BF}'
        | '\u{D7}'
        | '\u{F7}'
        | '\u{1680}'
        | '\u{2000}'..='\u{206F}'
        | '\u{3000}'..='\u{303F}'
        | '\u{FF01}'..='\u{FF0F}')
}

/// The words of `text`, as written, with where each starts and ends (byte offsets).
pub fn words(text: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (is_separator(c), start) {
            (true, Some(s)) => {
                found.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        found.push((s, text.len()));
    }
    found
}

/// A word folded as the in-memory repository compares words: lower case, diacritics removed
/// (`é` → `e`), and the letters that have no decomposition spelled as `unaccent` spells them
/// (`ß` → `ss`, `ø` → `o`). PostgreSQL folds with `unaccent`, which knows more letters.
pub fn fold(word: &str) -> String {
    let mut folded = String::with_capacity(word.len());
    for c in word.chars().flat_map(char::to_lowercase) {
        match c {
            'à'..='å' | 'ā' | 'ă' | 'ą' => folded.push('a'),
            'æ' => folded.push_str("ae"),
            'ç' | 'ć' | 'č' => folded.push('c'),
            'ď' | 'đ' | 'ð' => folded.push('d'),
            'è'..='ë' | 'ē' | 'ė' | 'ę' | 'ě' => folded.push('e'),
            'ì'..='ï' | 'ī' | 'į' | 'ı' => folded.push('i'),
            'ł' | 'ľ' | 'ĺ' => folded.push('l'),
            'ñ' | 'ń' | 'ň' => folded.push('n'),
            'ò'..='ö' | 'ø' | 'ō' | 'ő' => folded.push('o'),
            'œ' => folded.push_str("oe"),
            'ř' | 'ŕ' => folded.push('r'),
            'ß' => folded.push_str("ss"),
            'ś' | 'š' | 'ş' => folded.push('s'),
            'ť' | 'ţ' => folded.push('t'),
            'þ' => folded.push_str("th"),
            'ù'..='ü' | 'ū' | 'ů' | 'ű' => folded.push('u'),
            'ý' | 'ÿ' => folded.push('y'),
            'ź' | 'ż' | 'ž' => folded.push('z'),
            other => folded.push(other),
        }
    }
    folded
}

/// How many typos a query word forgives, by its length in characters: none for 1 to 4, one for
/// 5 to 8, two for 9 and more (Meilisearch's rule).
///
/// ```
/// use books_domain::typo_budget;
/// assert_eq!((typo_budget("dune"), typo_budget("pride"), typo_budget("prejudice")), (0, 1, 2));
/// ```
pub fn typo_budget(word: &str) -> usize {
    match word.chars().count() {
        0..=4 => 0,
        5..=8 => 1,
        _ => 2,
    }
}

/// The optimal string alignment distance between `a` and `b` (insert, delete, substitute, or
/// swap two neighbours, each one edit), when it is at most `max`.
///
/// ```
/// use books_domain::osa_distance;
/// assert_eq!(osa_distance("prejudise", "prejudice", 2), Some(1));
/// assert_eq!(osa_distance("perjudice", "prejudice", 2), Some(1));
/// assert_eq!(osa_distance("dune", "emma", 2), None);
/// ```
pub fn osa_distance(a: &str, b: &str, max: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    // Three rows of the classic table: two back (for swaps), one back, and this one.
    let width = b.len() + 1;
    let mut before: Vec<usize> = vec![0; width];
    let mut previous: Vec<usize> = (0..width).collect();
    let mut current: Vec<usize> = vec![0; width];
    for i in 1..=a.len() {
        current[0] = i;
        let mut smallest = current[0];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
            smallest = smallest.min(best);
        }
        if smallest > max {
            return None;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    let distance = previous[b.len()];
    (distance <= max).then_some(distance)
}

/// How a query word matches a word of a book: `None` when it does not.
fn word_match(query: &str, word: &str, last: bool) -> Option<(usize, bool)> {
    if query == word {
        return Some((0, false));
    }
    if let Some(typos) = osa_distance(query, word, typo_budget(query)) {
        return Some((typos, false));
    }
    // A prefix allows no typo, and is a prefix of a longer word.
    (last && word.len() > query.len() && word.starts_with(query)).then_some((0, true))
}

/// True when the query is the title as typed: as many words, each matching the title's word at
/// its place (case, diacritics, the typos its budget allows, and an unfinished last word aside),
/// so that someone who typed a whole title finds it before the titles that only contain it.
fn title_as_typed(title: &[String], query: &[String]) -> bool {
    let last = query.len().saturating_sub(1);
    title.len() == query.len()
        && title
            .iter()
            .zip(query)
            .enumerate()
            .all(|(i, (word, typed))| word_match(typed, word, i == last).is_some())
}

/// A search's text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SearchTextError {
    /// Nothing but white space and punctuation.
    #[error("must hold at least one word")]
    NoWord,
    /// Longer than [`MAX_QUERY_CHARS`] once trimmed.
    #[error("must be at most {MAX_QUERY_CHARS} characters")]
    TooLong,
    /// A control character.
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// What someone typed into a search box: trimmed, 1 to 200 characters, with at least one word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchText(String);

impl SearchText {
    /// Checks `raw`.
    ///
    /// # Errors
    ///
    /// [`SearchTextError`] when it has no word, is too long or holds a control character.
    pub fn new(raw: &str) -> Result<Self, SearchTextError> {
        let text = raw.trim();
        if text.chars().any(char::is_control) {
            return Err(SearchTextError::ControlCharacter);
        }
        if text.chars().count() > MAX_QUERY_CHARS {
            return Err(SearchTextError::TooLong);
        }
        if words(text).is_empty() {
            return Err(SearchTextError::NoWord);
        }
        Ok(Self(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ISBN the text is, if it is one (a search by ISBN finds that book first).
    pub fn isbn(&self) -> Option<Isbn> {
        Isbn::parse(&self.0).ok()
    }
}

/// Which facets a search counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facets {
    /// Count results by genre.
    pub genre: bool,
    /// Count results by author.
    pub author: bool,
}

/// A search: the text, filters, the page and the facets wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// What to look for.
    pub text: SearchText,
    /// Only books that pass this filter (a search uses its author and genre).
    pub filter: BookFilter,
    /// How many results.
    pub limit: PageSize,
    /// How many results to skip, at most [`MAX_OFFSET`].
    pub offset: u64,
    /// The facets to count.
    pub facets: Facets,
}

impl SearchQuery {
    /// A search for `text`, first page, no filter, no facet.
    pub fn new(text: SearchText) -> Self {
        Self {
            text,
            filter: BookFilter::default(),
            limit: PageSize::default(),
            offset: 0,
            facets: Facets::default(),
        }
    }

    /// True when `book` passes the query's filter.
    pub fn admits(&self, book: &Book) -> bool {
        self.filter.matches(book)
    }
}

/// A book a storage found for a search, with its title's and author's words as the storage
/// folded them, in the order they are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The book.
    pub book: Book,
    /// The title's folded words.
    pub title_words: Vec<String>,
    /// The author's folded words.
    pub author_words: Vec<String>,
}

/// The title and author with each matched word in `<em>…</em>`, HTML-escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Highlight {
    /// The title.
    pub title: String,
    /// The author.
    pub author: String,
}

/// One result.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The book.
    pub book: Book,
    /// In (0, 1]; higher is better, and never higher than the hit before.
    pub score: f64,
    /// Where the query matched.
    pub highlight: Highlight,
}

/// How many results have one value of a facet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacetValue {
    /// The value.
    pub value: String,
    /// How many results have it.
    pub count: u64,
}

/// The facets a search counted, most frequent value first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FacetCounts {
    /// By genre, when asked for.
    pub genre: Option<Vec<FacetValue>>,
    /// By author, when asked for.
    pub author: Option<Vec<FacetValue>>,
}

impl FacetCounts {
    /// Counts `facets` over `books`.
    pub fn of(books: &[&Book], facets: Facets) -> Self {
        let count = |values: &mut dyn Iterator<Item = &str>| {
            let mut counts: HashMap<&str, u64> = HashMap::new();
            for value in values {
                *counts.entry(value).or_default() += 1;
            }
            let mut counted: Vec<FacetValue> = counts
                .into_iter()
                .map(|(value, count)| FacetValue {
                    value: value.to_owned(),
                    count,
                })
                .collect();
            counted.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
            counted.truncate(MAX_FACET_VALUES);
            counted
        };
        Self {
            genre: facets
                .genre
                .then(|| count(&mut books.iter().filter_map(|b| b.genre().map(Genre::as_str)))),
            author: facets
                .author
                .then(|| count(&mut books.iter().map(|b| b.author().as_str()))),
        }
    }
}

/// What a search found: one page of hits, the total, and the facets asked for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchResults {
    /// The page.
    pub hits: Vec<SearchHit>,
    /// Every result, counted up to [`MAX_TOTAL`].
    pub total: u64,
    /// True when there are more than [`MAX_TOTAL`] results.
    pub total_capped: bool,
    /// The facets asked for.
    pub facets: Option<FacetCounts>,
}

impl SearchResults {
    /// The page `query` asks for of every result (`ranked`, in order), with the total and the
    /// facets counted over all of them: for a storage that ranked every result.
    pub fn page_of(ranked: Vec<SearchHit>, query: &SearchQuery) -> Self {
        let total = ranked.len() as u64;
        let facets = (query.facets != Facets::default()).then(|| {
            let books: Vec<&Book> = ranked
                .iter()
                .take(usize::try_from(MAX_TOTAL).unwrap_or(usize::MAX))
                .map(|hit| &hit.book)
                .collect();
            FacetCounts::of(&books, query.facets)
        });
        let hits = ranked
            .into_iter()
            .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
            .take(query.limit.get())
            .collect();
        Self {
            hits,
            total: total.min(MAX_TOTAL),
            total_capped: total > MAX_TOTAL,
            facets,
        }
    }
}

/// A candidate's place in the ranking (smaller is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    unmatched: usize,
    typos: usize,
    in_author: usize,
    prefixes: usize,
    inexact_title: bool,
    id: BookId,
}

impl Rank {
    /// The score: the share of query words matched, lowered inside its step by the later rules
    /// (never by a whole step), so that it follows the ranking's order.
    fn score(&self, words: usize) -> f64 {
        let n = words as f64;
        let matched = n - self.unmatched as f64;
        // Each rule's value as a digit of a number whose base is one more than its largest value.
        let mut within = f64::from(u8::from(self.inexact_title)) / 2.0;
        within = (self.prefixes.min(1) as f64 + within) / 2.0;
        within = (self.in_author as f64 + within) / (n + 1.0);
        within = (self.typos as f64 + within) / (2.0 * n + 1.0);
        (matched - within) / n
    }
}

/// Ranks the `candidates` of a search for `query_words` (folded as the candidates' words are),
/// leaving out those that match no query word; the book with the ISBN the query is, if any,
/// comes first. Returns every result in order, each with its score and highlight.
pub fn rank(
    query_words: &[String],
    candidates: Vec<Candidate>,
    isbn_match: Option<BookId>,
) -> Vec<SearchHit> {
    let n = query_words.len().max(1);
    let last = query_words.len().saturating_sub(1);
    // Each result with whether it is not the ISBN's book (that one sorts first) and its rank.
    let mut ranked: Vec<(bool, Rank, SearchHit)> = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let isbn_hit = Some(candidate.book.id()) == isbn_match;
        let mut rank = Rank {
            unmatched: 0,
            typos: 0,
            in_author: 0,
            prefixes: 0,
            inexact_title: !title_as_typed(&candidate.title_words, query_words),
            id: candidate.book.id(),
        };
        let mut title_hits = vec![false; candidate.title_words.len()];
        let mut author_hits = vec![false; candidate.author_words.len()];
        for (i, query) in query_words.iter().enumerate() {
            // The best match of this query word: fewest typos, then title, then whole word.
            let mut best: Option<(usize, usize, bool)> = None;
            for (field, words, hits) in [
                (0, &candidate.title_words, &mut title_hits),
                (1, &candidate.author_words, &mut author_hits),
            ] {
                for (word, hit) in words.iter().zip(hits.iter_mut()) {
                    if let Some((typos, prefix)) = word_match(query, word, i == last) {
                        *hit = true;
                        let found = (typos, field, prefix);
                        if best.is_none_or(|best| found < best) {
                            best = Some(found);
                        }
                    }
                }
            }
            match best {
                None => rank.unmatched += 1,
                Some((typos, field, prefix)) => {
                    rank.typos += typos;
                    rank.in_author += field;
                    rank.prefixes += usize::from(prefix);
                }
            }
        }
        if rank.unmatched == query_words.len() && !isbn_hit {
            continue;
        }
        let score = if isbn_hit { 1.0 } else { rank.score(n) };
        let highlight = Highlight {
            title: highlighted(candidate.book.title().as_str(), &title_hits),
            author: highlighted(candidate.book.author().as_str(), &author_hits),
        };
        ranked.push((
            !isbn_hit,
            rank,
            SearchHit {
                book: candidate.book,
                score,
                highlight,
            },
        ));
    }
    ranked.sort_by(|(a_other, a, _), (b_other, b, _)| (a_other, a).cmp(&(b_other, b)));
    ranked.into_iter().map(|(_, _, hit)| hit).collect()
}

/// `text`, HTML-escaped, with the words marked in `hits` (one flag per word of `text`, in order)
/// wrapped in `<em>`. When the flags do not line up with the text's words, nothing is wrapped.
fn highlighted(text: &str, hits: &[bool]) -> String {
    let spans = words(text);
    let mut out = String::with_capacity(text.len() + 16);
    if spans.len() != hits.len() {
        escape_into(&mut out, text);
        return out;
    }
    let mut at = 0;
    for ((start, end), hit) in spans.into_iter().zip(hits) {
        escape_into(&mut out, &text[at..start]);
        if *hit {
            out.push_str("<em>");
            escape_into(&mut out, &text[start..end]);
            out.push_str("</em>");
        } else {
            escape_into(&mut out, &text[start..end]);
        }
        at = end;
    }
    escape_into(&mut out, &text[at..]);
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => {
                let _ = out.write_char(c);
            }
        }
    }
}

/// The folded query words of `text` as the in-memory repository reads them: at most
/// [`MAX_QUERY_WORDS`], each once.
pub fn query_words(text: &SearchText, fold_word: impl Fn(&str) -> String) -> Vec<String> {
    let mut seen = Vec::new();
    for (start, end) in words(text.as_str()) {
        let word = fold_word(&text.as_str()[start..end]);
        if !seen.contains(&word) {
            seen.push(word);
        }
        if seen.len() == MAX_QUERY_WORDS {
            break;
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::{BookField, BookInput, NewBook, Version};

    fn candidate(id: i64, title: &str, author: &str) -> Candidate {
        let input = BookInput::default()
            .with(BookField::Title, title)
            .with(BookField::Author, author);
        let book = Book::new(
            BookId::new(id).unwrap(),
            NewBook::parse(&input).unwrap(),
            Version::FIRST,
            Utc::now(),
            Utc::now(),
        );
        let folded = |text: &str| -> Vec<String> {
            words(text)
                .into_iter()
                .map(|(s, e)| fold(&text[s..e]))
                .collect()
        };
        Candidate {
            title_words: folded(title),
            author_words: folded(author),
            book,
        }
    }

    fn search(query: &str, candidates: Vec<Candidate>) -> Vec<SearchHit> {
        let text = SearchText::new(query).unwrap();
        rank(&query_words(&text, fold), candidates, None)
    }

    fn ids(hits: &[SearchHit]) -> Vec<i64> {
        hits.iter().map(|h| h.book.id().get()).collect()
    }

    #[test]
    fn a_swap_of_two_neighbours_is_one_edit() {
        assert_eq!(osa_distance("ab", "ba", 1), Some(1));
        assert_eq!(osa_distance("pride", "pirde", 1), Some(1));
        assert_eq!(osa_distance("kitten", "sitting", 2), None);
        assert_eq!(osa_distance("kitten", "sitting", 3), Some(3));
        assert_eq!(osa_distance("", "abc", 3), Some(3));
    }

    #[test]
    fn typos_are_forgiven_by_word_length_and_the_last_word_matches_as_a_prefix() {
        let books = vec![
            candidate(1, "Pride and Prejudice", "Jane Austen"),
            candidate(2, "Dune", "Frank Herbert"),
        ];
        assert_eq!(ids(&search("pride and prejudise", books.clone())), [1]);
        assert_eq!(ids(&search("dun", books.clone())), [2]);
        // Four letters forgive nothing: "dume" is not "dune", and not a prefix of it.
        assert!(search("dume", books.clone()).is_empty());
        assert!(search("xyz", books).is_empty());
    }

    #[test]
    fn diacritics_and_case_are_ignored() {
        let books = vec![candidate(
            1,
            "Cien años de soledad",
            "Gabriel García Márquez",
        )];
        let hits = search("garcia marquez", books);
        assert_eq!(ids(&hits), [1]);
        assert_eq!(
            hits[0].highlight.author,
            "Gabriel <em>García</em> <em>Márquez</em>"
        );
    }

    #[test]
    fn more_words_then_fewer_typos_then_title_then_whole_words_then_exact_title_then_id() {
        let books = vec![
            candidate(1, "Emma", "Someone"),
            candidate(2, "The Emma Papers", "Jane Austen"),
            candidate(3, "Emmas", "Jane"),
            candidate(4, "Other", "Emma Austen"),
            candidate(5, "Emma", "Jane Austen"),
        ];
        let hits = search("emma austen", books);
        // 5 and 2: both words, title; 5's title is not the query either, so the id decides.
        // 4: both words but "emma" in the author. 1 and 3: one word each.
        assert_eq!(ids(&hits), [2, 5, 4, 1]);
        let scores: Vec<f64> = hits.iter().map(|h| h.score).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(scores.iter().all(|s| *s > 0.0 && *s <= 1.0), "{scores:?}");
    }

    #[test]
    fn an_exact_title_wins_a_tie_and_scores_one() {
        let books = vec![
            candidate(1, "Dune Messiah", "Frank Herbert"),
            candidate(2, "Dune", "Frank Herbert"),
        ];
        let hits = search("dune", books);
        assert_eq!(ids(&hits), [2, 1]);
        assert!((hits[0].score - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn a_highlight_escapes_html_and_wraps_each_matched_word() {
        let books = vec![candidate(1, "<Dune> & \"Dune\"", "Frank Herbert")];
        let hits = search("dune", books);
        assert_eq!(
            hits[0].highlight.title,
            "&lt;<em>Dune</em>&gt; &amp; &quot;<em>Dune</em>&quot;"
        );
        assert_eq!(hits[0].highlight.author, "Frank Herbert");
    }

    #[test]
    fn at_most_ten_distinct_words_of_a_query_count() {
        let text = SearchText::new("a b a c d e f g h i j k l").unwrap();
        let counted = query_words(&text, fold);
        assert_eq!(counted, ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]);
    }

    #[test]
    fn a_facet_lists_at_most_a_hundred_values_most_frequent_first() {
        let mut books: Vec<Candidate> = (1..=150)
            .map(|i| candidate(i, "Dune", &format!("Author {i}")))
            .collect();
        books.push(candidate(151, "Dune", "Author 7"));
        let refs: Vec<&Book> = books.iter().map(|c| &c.book).collect();
        let counts = FacetCounts::of(
            &refs,
            Facets {
                genre: false,
                author: true,
            },
        );
        let authors = counts.author.unwrap();
        assert_eq!(authors.len(), MAX_FACET_VALUES);
        assert_eq!(
            (authors[0].value.as_str(), authors[0].count),
            ("Author 7", 2)
        );
        assert!(counts.genre.is_none());
    }

    #[test]
    fn a_query_of_only_spaces_or_punctuation_is_refused() {
        assert_eq!(SearchText::new("  "), Err(SearchTextError::NoWord));
        assert_eq!(SearchText::new("?!-—…"), Err(SearchTextError::NoWord));
        assert!(SearchText::new(&"a".repeat(201)).is_err());
        assert!(SearchText::new("c3po").is_ok());
    }
}
