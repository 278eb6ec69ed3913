//! List envelopes (workos-api.md §2.3, §4.1).

use serde::{Deserialize, Serialize};

use crate::tag::ListTag;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub object: ListTag,
    pub data: Vec<T>,
    pub list_metadata: ListMetadata,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMetadata {
    pub before: Option<String>,
    pub after: Option<String>,
}

impl<T> List<T> {
    pub fn new(data: Vec<T>, before: Option<String>, after: Option<String>) -> Self {
        List {
            object: ListTag,
            data,
            list_metadata: ListMetadata { before, after },
        }
    }
}

/// `/events` pages forward only, so its metadata has just `after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsList<T> {
    pub object: ListTag,
    pub data: Vec<T>,
    pub list_metadata: EventListMetadata,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventListMetadata {
    pub after: Option<String>,
}
