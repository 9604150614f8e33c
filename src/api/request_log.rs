//! api::request_log: the one debug line per request (API, version, client id, correlation id,
//! request size, duration, the response's error codes) that lets an operator see what a client
//! did. `dispatch` opens a [`RequestLog`] only when debug is enabled for this module, so with
//! debug off a request pays one level check and nothing else: no clock read, no allocation.

use std::fmt;
use std::time::Instant;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

/// A request being served, remembered for its log line.
pub struct RequestLog {
    key: ApiKey,
    version: i16,
    client_id: Option<StrBytes>,
    correlation_id: i32,
    request_bytes: usize,
    started: Instant,
}

impl RequestLog {
    /// `Some` only when the line will be written (debug level for `bramble::api`).
    pub fn start(key: ApiKey, header: &RequestHeader, request_bytes: usize) -> Option<RequestLog> {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return None;
        }
        Some(RequestLog {
            key,
            version: header.request_api_version,
            client_id: header.client_id.clone(),
            correlation_id: header.correlation_id,
            request_bytes,
            started: Instant::now(),
        })
    }

    /// Writes the line for `response` (`None`: no response, Produce with acks=0).
    pub fn finish<R: ErrorCodes>(self, response: Option<&R>) {
        let mut errors = Codes::default();
        if let Some(r) = response {
            r.error_codes(&mut errors);
        }
        tracing::debug!(
            api = ?self.key,
            version = self.version,
            client_id = self.client_id.as_deref().unwrap_or("-"),
            correlation_id = self.correlation_id,
            request_bytes = self.request_bytes,
            duration_us = self.started.elapsed().as_micros() as u64,
            errors = %errors,
            answered = response.is_some(),
            "request"
        );
    }
}

/// The distinct non-zero error codes of one response, in first-seen order.
#[derive(Default)]
pub struct Codes(Vec<i16>);

impl Codes {
    pub fn push(&mut self, code: i16) {
        if code != 0 && !self.0.contains(&code) {
            self.0.push(code);
        }
    }
}

/// `none`, or the codes with Kafka's names: `3 UNKNOWN_TOPIC_OR_PARTITION,1 OFFSET_OUT_OF_RANGE`
/// (a code Kafka does not name: the bare number).
impl fmt::Display for Codes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, code) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match kafka_protocol::ResponseError::try_from_code(*code) {
                Some(kafka_protocol::ResponseError::Unknown(_)) | None => write!(f, "{code}")?,
                Some(e) => {
                    write!(f, "{code} ")?;
                    write_kafka_name(f, &format!("{e:?}"))?;
                }
            }
        }
        Ok(())
    }
}

/// `OffsetOutOfRange` as Kafka spells it: `OFFSET_OUT_OF_RANGE`.
fn write_kafka_name(f: &mut fmt::Formatter<'_>, camel: &str) -> fmt::Result {
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            f.write_str("_")?;
        }
        write!(f, "{}", c.to_ascii_uppercase())?;
    }
    Ok(())
}

/// Every error code a response carries (top level, per topic, per partition, per member).
pub trait ErrorCodes {
    fn error_codes(&self, out: &mut Codes);
}

/// `codes!(Type, r, out => body)`: implements [`ErrorCodes`] with `r` bound to the response.
macro_rules! codes {
    ($ty:ty, $r:ident, $out:ident => $body:expr) => {
        impl ErrorCodes for $ty {
            fn error_codes(&self, $out: &mut Codes) {
                let $r = self;
                $body
            }
        }
    };
}

codes!(ProduceResponse, r, o => r.responses.iter().flat_map(|t| &t.partition_responses).for_each(|p| o.push(p.error_code)));
codes!(FetchResponse, r, o => {
    o.push(r.error_code);
    r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| o.push(p.error_code));
});
codes!(ListOffsetsResponse, r, o => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| o.push(p.error_code)));
codes!(MetadataResponse, r, o => {
    o.push(r.error_code);
    for t in &r.topics {
        o.push(t.error_code);
        t.partitions.iter().for_each(|p| o.push(p.error_code));
    }
});
codes!(FindCoordinatorResponse, r, o => {
    o.push(r.error_code);
    r.coordinators.iter().for_each(|c| o.push(c.error_code));
});
codes!(ApiVersionsResponse, r, o => o.push(r.error_code));
codes!(CreateTopicsResponse, r, o => r.topics.iter().for_each(|t| o.push(t.error_code)));
codes!(DeleteTopicsResponse, r, o => r.responses.iter().for_each(|t| o.push(t.error_code)));
codes!(DescribeConfigsResponse, r, o => r.results.iter().for_each(|t| o.push(t.error_code)));
codes!(CreatePartitionsResponse, r, o => r.results.iter().for_each(|t| o.push(t.error_code)));
codes!(IncrementalAlterConfigsResponse, r, o => r.responses.iter().for_each(|t| o.push(t.error_code)));
codes!(AlterConfigsResponse, r, o => r.responses.iter().for_each(|t| o.push(t.error_code)));
codes!(DescribeClusterResponse, r, o => o.push(r.error_code));
codes!(InitProducerIdResponse, r, o => o.push(r.error_code));
codes!(OffsetCommitResponse, r, o => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| o.push(p.error_code)));
codes!(OffsetFetchResponse, r, o => {
    o.push(r.error_code);
    r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| o.push(p.error_code));
    for g in &r.groups {
        o.push(g.error_code);
        g.topics.iter().flat_map(|t| &t.partitions).for_each(|p| o.push(p.error_code));
    }
});
codes!(JoinGroupResponse, r, o => o.push(r.error_code));
codes!(HeartbeatResponse, r, o => o.push(r.error_code));
codes!(LeaveGroupResponse, r, o => {
    o.push(r.error_code);
    r.members.iter().for_each(|m| o.push(m.error_code));
});
codes!(SyncGroupResponse, r, o => o.push(r.error_code));
codes!(DescribeGroupsResponse, r, o => r.groups.iter().for_each(|g| o.push(g.error_code)));
codes!(ListGroupsResponse, r, o => o.push(r.error_code));
codes!(DeleteGroupsResponse, r, o => r.results.iter().for_each(|g| o.push(g.error_code)));
codes!(OffsetDeleteResponse, r, o => {
    o.push(r.error_code);
    r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| o.push(p.error_code));
});
codes!(DeleteRecordsResponse, r, o => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| o.push(p.error_code)));
codes!(OffsetForLeaderEpochResponse, r, o => r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| o.push(p.error_code)));
codes!(DescribeLogDirsResponse, r, o => {
    o.push(r.error_code);
    r.results.iter().for_each(|d| o.push(d.error_code));
});
codes!(AlterReplicaLogDirsResponse, r, o => r.results.iter().flat_map(|t| &t.partitions).for_each(|p| o.push(p.error_code)));
codes!(DescribeTopicPartitionsResponse, r, o => {
    for t in &r.topics {
        o.push(t.error_code);
        t.partitions.iter().for_each(|p| o.push(p.error_code));
    }
});
codes!(DescribeQuorumResponse, r, o => {
    o.push(r.error_code);
    r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| o.push(p.error_code));
});
codes!(ElectLeadersResponse, r, o => {
    o.push(r.error_code);
    r.replica_election_results.iter().flat_map(|t| &t.partition_result).for_each(|p| o.push(p.error_code));
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_non_zero_and_named() {
        let mut c = Codes::default();
        for code in [0, 3, 3, 1, 0, 9999] {
            c.push(code);
        }
        assert_eq!(
            c.to_string(),
            "3 UNKNOWN_TOPIC_OR_PARTITION,1 OFFSET_OUT_OF_RANGE,9999"
        );
        assert_eq!(Codes::default().to_string(), "none");
    }
}
