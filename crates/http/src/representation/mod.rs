//! The HTTP representation of the catalogue: the bodies the API sends and receives, how they are
//! read (strictly: every ambiguity is refused) and written, entity tags and conditional headers,
//! listing cursors, problem details, and the rules on strings.

pub(crate) mod bodies;
pub(crate) mod body;
pub(crate) mod cursor;
pub(crate) mod etag;
pub(crate) mod params;
pub mod problem;
pub(crate) mod rules;
