//! Content: each node's iroh-blobs store, importing a resource's files as a version's content
//! root, serving blobs only to those policy lets pull them, and exporting mirrors.

pub mod access;
pub mod imports;
pub mod layout;
pub mod migrate;
pub mod probe;
pub mod repo;
pub mod store;

pub use store::ContentStore;
