//! Any JetStream stream, a KV bucket's or a pub/sub's: the few requests a plan needs
//! ([`StreamClient`]), what differs between a live stream and a wanted one ([`Change`], by
//! [`Field`]), the marks that say which Component a stream was made for ([`owner`]), the
//! limits both kinds convert alike ([`limits`]) and subject matching ([`subject`]). Both kinds
//! use this vocabulary; nothing here knows a bucket or a topic.

mod change;
mod client;
pub mod limits;
pub mod owner;
pub mod planned;
pub mod subject;

pub use change::{Change, ChangeKind, Field};
pub use client::{StreamClient, refused};
pub use owner::{META_COMPONENT, META_MANAGED_BY, identity, is_managed_by, owner_of};
