//! meta::image::legacy: images as releases before issue 11 wrote them, so a data directory
//! written by one still opens. postcard is not self-describing: a field added at the end of
//! [`MetadataImage`] (`shutting_down`) is simply absent from an older image's bytes, and decoding
//! them as the current struct runs out of input. [`decode_image`] tries the current layout, then
//! the older one; the two never both fit the same bytes (the older one leaves the newer field's
//! bytes over, which decoding refuses).
//!
//! Log entries need no such care: commands only gained variants at the end of their enum.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use uuid::Uuid;

use super::{BrokerInfo, MetadataImage, TopicImage};

/// [`MetadataImage`] before `shutting_down` (issue 10's layout). Never reorder.
#[derive(Deserialize)]
struct ImageV1 {
    cluster_id: Option<String>,
    brokers: BTreeMap<i32, BrokerInfo>,
    topics: BTreeMap<String, TopicImage>,
    broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    next_producer_id: i64,
    applied_index: u64,
    deleted_topics: BTreeSet<Uuid>,
}

impl From<ImageV1> for MetadataImage {
    fn from(v: ImageV1) -> MetadataImage {
        MetadataImage {
            cluster_id: v.cluster_id,
            brokers: v.brokers,
            topics: v.topics,
            broker_configs: v.broker_configs,
            next_producer_id: v.next_producer_id,
            applied_index: v.applied_index,
            deleted_topics: v.deleted_topics,
            shutting_down: BTreeSet::new(),
        }
    }
}

/// Decodes a whole postcard payload as an image of this layout or the one before it. Trailing
/// bytes are an error either way.
pub fn decode_image(payload: &[u8]) -> Result<MetadataImage, String> {
    let current = match postcard::take_from_bytes::<MetadataImage>(payload) {
        Ok((image, [])) => return Ok(image),
        Ok((_, rest)) => format!("{} bytes after the image", rest.len()),
        Err(e) => format!("image does not decode: {e}"),
    };
    match postcard::take_from_bytes::<ImageV1>(payload) {
        Ok((old, [])) => Ok(old.into()),
        _ => Err(current),
    }
}
