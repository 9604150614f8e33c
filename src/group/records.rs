//! group::records: the key/value layout of the records the coordinator writes to the compacted
//! internal topic `__consumer_offsets` (the store's only on-disk format; `group::store` appends and
//! replays them). Compaction keeps the newest value per key, so every key names exactly one thing:
//! one committed offset, or one group's metadata. A null value (tombstone) deletes it.
//!
//! All integers are big-endian. `str` is an i16 length then UTF-8 bytes; `nstr` is the same with
//! length -1 for null; `bytes` is an i32 length then the bytes.
//!
//! Key (every key starts with its type and a layout version, so a later layout can coexist):
//!
//! ```text
//! field        type  notes
//! key_type     i16   1 = committed offset, 2 = group metadata
//! key_version  i16   0
//! group        str
//! topic        str   offset keys only
//! partition    i32   offset keys only
//! ```
//!
//! Offset value (key_type 1):
//!
//! ```text
//! value_version     i16   0
//! offset            i64   the next offset to consume
//! leader_epoch      i32   -1 when the client sent none
//! commit_timestamp  i64   ms since the Unix epoch, broker clock
//! metadata          nstr  the client's opaque string
//! ```
//!
//! Group metadata value (key_type 2), written when a generation completes and when a group empties:
//!
//! ```text
//! value_version   i16   0
//! protocol_type   str   "consumer" for consumer groups
//! generation      i32
//! protocol        nstr  the selected assignor; null while no generation is complete
//! leader          nstr  member id of the leader
//! member_count    i32   then per member:
//!   member_id          str
//!   group_instance_id  nstr  static membership
//!   client_id          str
//!   client_host        str
//!   session_timeout    i32   ms
//!   rebalance_timeout  i32   ms
//!   subscription       bytes  the member's metadata for the selected protocol
//!   assignment         bytes  what the leader assigned it
//! ```
//!
//! Decoding checks every length against the bytes left and refuses unknown types and versions, so a
//! damaged or foreign record is skipped (and logged by the store), never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const KEY_TYPE_OFFSET: i16 = 1;
const KEY_TYPE_GROUP: i16 = 2;
const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;
/// Members one metadata record may carry (the decoder refuses more before allocating).
const RECORD_MEMBERS_MAX: i32 = 100_000;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    #[error("record ends early")]
    Truncated,
    #[error("unknown key type {0} or version {1}")]
    UnknownKey(i16, i16),
    #[error("unknown value version {0}")]
    UnknownValue(i16),
    #[error("string is not utf-8")]
    Utf8,
    #[error("length {0} out of range")]
    Length(i64),
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group(String),
}

impl Key {
    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group(group) => group,
        }
    }
}

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub commit_timestamp_ms: i64,
    pub metadata: Option<String>,
}

/// A member as the metadata record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's metadata as of its last completed generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberValue>,
}

fn put_str(out: &mut BytesMut, s: &str) {
    // Callers bound names (group ids, topics, member ids) far below i16::MAX bytes.
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    out.put_i16(len);
    out.put_slice(&s.as_bytes()[..len as usize]);
}

fn put_nstr(out: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.put_i16(-1),
    }
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

pub fn encode_key(key: &Key) -> Bytes {
    let mut out = BytesMut::new();
    match key {
        Key::Offset {
            group,
            topic,
            partition,
        } => {
            out.put_i16(KEY_TYPE_OFFSET);
            out.put_i16(KEY_VERSION);
            put_str(&mut out, group);
            put_str(&mut out, topic);
            out.put_i32(*partition);
        }
        Key::Group(group) => {
            out.put_i16(KEY_TYPE_GROUP);
            out.put_i16(KEY_VERSION);
            put_str(&mut out, group);
        }
    }
    out.freeze()
}

pub fn encode_offset(v: &OffsetValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(VALUE_VERSION);
    out.put_i64(v.offset);
    out.put_i32(v.leader_epoch);
    out.put_i64(v.commit_timestamp_ms);
    put_nstr(&mut out, v.metadata.as_deref());
    out.freeze()
}

pub fn encode_group(v: &GroupValue) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(VALUE_VERSION);
    put_str(&mut out, &v.protocol_type);
    out.put_i32(v.generation);
    put_nstr(&mut out, v.protocol.as_deref());
    put_nstr(&mut out, v.leader.as_deref());
    out.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut out, &m.member_id);
        put_nstr(&mut out, m.group_instance_id.as_deref());
        put_str(&mut out, &m.client_id);
        put_str(&mut out, &m.client_host);
        out.put_i32(m.session_timeout_ms);
        out.put_i32(m.rebalance_timeout_ms);
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out.freeze()
}

/// A bounds-checked reader over one key or value.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), RecordError> {
        if self.0.remaining() < n {
            return Err(RecordError::Truncated);
        }
        Ok(())
    }
    fn i16(&mut self) -> Result<i16, RecordError> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }
    fn i32(&mut self) -> Result<i32, RecordError> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    fn nstr(&mut self) -> Result<Option<String>, RecordError> {
        let len = self.i16()?;
        if len == -1 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| RecordError::Length(len.into()))?;
        self.need(len)?;
        let raw = self.0.split_to(len);
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| RecordError::Utf8)
    }
    fn str(&mut self) -> Result<String, RecordError> {
        self.nstr()?.ok_or(RecordError::Length(-1))
    }
    fn bytes(&mut self) -> Result<Bytes, RecordError> {
        let len = self.i32()?;
        let len = usize::try_from(len).map_err(|_| RecordError::Length(len.into()))?;
        self.need(len)?;
        Ok(self.0.split_to(len))
    }
    fn end(self) -> Result<(), RecordError> {
        match self.0.remaining() {
            0 => Ok(()),
            n => Err(RecordError::Trailing(n)),
        }
    }
}

pub fn decode_key(raw: Bytes) -> Result<Key, RecordError> {
    let mut r = Reader(raw);
    let (key_type, version) = (r.i16()?, r.i16()?);
    let key = match (key_type, version) {
        (KEY_TYPE_OFFSET, KEY_VERSION) => Key::Offset {
            group: r.str()?,
            topic: r.str()?,
            partition: r.i32()?,
        },
        (KEY_TYPE_GROUP, KEY_VERSION) => Key::Group(r.str()?),
        _ => return Err(RecordError::UnknownKey(key_type, version)),
    };
    r.end()?;
    Ok(key)
}

fn value_version(r: &mut Reader) -> Result<(), RecordError> {
    match r.i16()? {
        VALUE_VERSION => Ok(()),
        v => Err(RecordError::UnknownValue(v)),
    }
}

pub fn decode_offset(raw: Bytes) -> Result<OffsetValue, RecordError> {
    let mut r = Reader(raw);
    value_version(&mut r)?;
    let v = OffsetValue {
        offset: r.i64()?,
        leader_epoch: r.i32()?,
        commit_timestamp_ms: r.i64()?,
        metadata: r.nstr()?,
    };
    r.end()?;
    Ok(v)
}

pub fn decode_group(raw: Bytes) -> Result<GroupValue, RecordError> {
    let mut r = Reader(raw);
    value_version(&mut r)?;
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol = r.nstr()?;
    let leader = r.nstr()?;
    let count = r.i32()?;
    if !(0..=RECORD_MEMBERS_MAX).contains(&count) {
        return Err(RecordError::Length(count.into()));
    }
    let mut members = Vec::new();
    for _ in 0..count {
        members.push(MemberValue {
            member_id: r.str()?,
            group_instance_id: r.nstr()?,
            client_id: r.str()?,
            client_host: r.str()?,
            session_timeout_ms: r.i32()?,
            rebalance_timeout_ms: r.i32()?,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    r.end()?;
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves every key and value round-trips, and that damaged bytes are refused, not panicked on.
    #[test]
    fn keys_and_values_round_trip_and_garbage_is_refused() {
        let keys = [
            Key::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7,
            },
            Key::Group("g".into()),
        ];
        for k in &keys {
            assert_eq!(decode_key(encode_key(k)).unwrap(), *k);
        }
        let offset = OffsetValue {
            offset: 42,
            leader_epoch: -1,
            commit_timestamp_ms: 1_700_000_000_000,
            metadata: Some("meta".into()),
        };
        assert_eq!(decode_offset(encode_offset(&offset)).unwrap(), offset);
        let group = GroupValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            members: vec![MemberValue {
                member_id: "m-1".into(),
                group_instance_id: Some("i-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                session_timeout_ms: 6000,
                rebalance_timeout_ms: 30000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let encoded = encode_group(&group);
        assert_eq!(decode_group(encoded.clone()).unwrap(), group);
        // Every truncation is refused.
        for cut in 0..encoded.len() {
            assert!(decode_group(encoded.slice(..cut)).is_err(), "cut at {cut}");
        }
        assert_eq!(
            decode_key(Bytes::from_static(&[0, 9, 0, 0])),
            Err(RecordError::UnknownKey(9, 0))
        );
        assert_eq!(
            decode_offset(Bytes::from_static(&[0, 5])),
            Err(RecordError::UnknownValue(5))
        );
        let mut trailing = BytesMut::from(&encode_key(&keys[1])[..]);
        trailing.put_u8(0);
        assert_eq!(decode_key(trailing.freeze()), Err(RecordError::Trailing(1)));
    }
}
