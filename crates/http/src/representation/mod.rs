//! The HTTP representation of the catalogue: the bodies the API sends and receives ([`schemas`]),
//! how they are read ([`reading`]: strictly, every ambiguity is refused) and written, entity tags and conditional headers,
//! listing cursors, problem details, the rules on strings, CSV and XML, and content negotiation.

pub(crate) mod consistency;
pub(crate) mod csv;
pub(crate) mod cursor;
pub(crate) mod etag;
pub(crate) mod negotiate;
pub(crate) mod params;
pub mod problem;
pub(crate) mod reading;
pub(crate) mod rules;
pub(crate) mod schemas;
pub(crate) mod timestamp;
pub(crate) mod xml;
