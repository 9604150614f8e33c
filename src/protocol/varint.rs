//! protocol::varint: the zigzag varints of the v2 record format (record lengths, deltas, key and
//! value lengths), read from a byte slice with a bound on their length. Shared by the produce
//! checks (`batch`), the ListOffsets scan (`timestamps`) and the compaction cleaner
//! (`log::records`). No I/O.

/// Longest varint (i32) and varlong (i64) encodings, in bytes.
pub const VARINT_BYTES_MAX: usize = 5;
pub const VARLONG_BYTES_MAX: usize = 10;

/// Reads a zigzag varint of at most `bytes_max` bytes at `*pos`, advancing it; `None` if the
/// input ends first or the encoding runs longer than `bytes_max`.
pub fn read_zigzag(buf: &[u8], pos: &mut usize, bytes_max: usize) -> Option<i64> {
    let mut value: u64 = 0;
    for i in 0..bytes_max {
        let b = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the zigzag decoding of known encodings, the bound on length, and a short input.
    #[test]
    fn decodes_and_bounds() {
        let mut pos = 0;
        assert_eq!(read_zigzag(&[0x01], &mut pos, VARINT_BYTES_MAX), Some(-1));
        assert_eq!(pos, 1);
        let mut pos = 0;
        assert_eq!(
            read_zigzag(&[0xac, 0x02], &mut pos, VARINT_BYTES_MAX),
            Some(150)
        );
        let mut pos = 0;
        assert_eq!(read_zigzag(&[0x80; 6], &mut pos, VARINT_BYTES_MAX), None);
        let mut pos = 0;
        assert_eq!(read_zigzag(&[0x80], &mut pos, VARINT_BYTES_MAX), None);
    }
}
