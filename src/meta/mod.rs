//! meta: the metadata quorum (KRaft's idea on openraft). Every voter holds the Raft log of
//! [`command::MetadataCommand`]s; applying it yields the [`image::MetadataImage`] every node
//! serves Metadata from. The Raft leader is the controller.
//!
//! - [`command`]: the log's commands, their responses, and controller requests.
//! - [`image`]: the state machine's state, how commands apply, placement.
//! - [`types`]: openraft's type configuration.

pub mod command;
pub mod image;
pub mod types;

use std::sync::Arc;

/// The latest applied image, swapped atomically by the state machine; readers take an `Arc`.
pub type ImageCell = tokio::sync::watch::Receiver<Arc<image::MetadataImage>>;
