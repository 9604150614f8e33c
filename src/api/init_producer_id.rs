//! api::init_producer_id (key 22): gives an idempotent producer its producer id and epoch before
//! its first Produce. Ids come from `broker::ProducerIds` (never reused across restarts); the
//! partitions check each producer's epochs and sequences (`log::producers`).
//!
//! Only idempotent producers are served. Transactions are not (no transaction coordinator), so a
//! request with a transactional id is refused with COORDINATOR_NOT_AVAILABLE, the same answer
//! FindCoordinator gives for transaction keys.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, RequestHeader,
};

use crate::broker::Broker;

/// Kafka's "no producer id" / "no epoch" values.
const NO_PRODUCER_ID: i64 = -1;
const NO_PRODUCER_EPOCH: i16 = -1;
/// From this epoch on, a bump hands out a new id instead (Kafka's `isEpochExhausted`): the epoch
/// is an i16 and must never wrap.
const EPOCH_BUMP_MAX: i16 = i16::MAX - 1;

pub async fn handle(
    broker: &Broker,
    _header: &RequestHeader,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let refuse = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(NO_PRODUCER_ID))
            .with_producer_epoch(NO_PRODUCER_EPOCH)
    };
    if request.transactional_id.is_some() {
        tracing::debug!(
            "InitProducerId with a transactional id refused: transactions are not served"
        );
        return refuse(ResponseError::CoordinatorNotAvailable);
    }
    let (id, epoch) = (request.producer_id.0, request.producer_epoch);
    // Kafka refuses an id without an epoch, or an epoch without an id.
    if (id == NO_PRODUCER_ID) != (epoch == NO_PRODUCER_EPOCH) {
        return refuse(ResponseError::InvalidRequest);
    }
    // KIP-360 (v3+): a producer that lost track of its sequences asks for a bump of its id and
    // epoch. Kafka hands non-transactional producers a fresh id instead; bumping the same id is
    // equally valid for clients (they adopt whatever comes back) and keeps fencing its old epoch
    // on the partitions. Only ids this node handed out are bumped, so none can collide later.
    if id >= 0
        && (0..EPOCH_BUMP_MAX).contains(&epoch)
        && broker.producer_ids.was_allocated(id).await
    {
        return InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch + 1);
    }
    match broker.producer_ids.allocate().await {
        Ok(id) => {
            tracing::debug!(producer_id = id, "allocated producer id");
            InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0)
        }
        Err(e @ crate::broker::ProducerIdError::Quorum(_)) => {
            // Retriable: the controller hands out blocks again once it is back.
            tracing::warn!(error = %e, "could not get producer ids from the controller");
            refuse(ResponseError::CoordinatorNotAvailable)
        }
        Err(e) => {
            tracing::error!(error = %e, "could not allocate a producer id");
            refuse(ResponseError::KafkaStorageError)
        }
    }
}
