//! protocol::tests_crc: the batch CRC-32C (`batch::crc32c`, `batch::Crc32c`, the CPU's CRC
//! instructions where present) against the table-driven reference, on known vectors and on random
//! inputs of every length and alignment the instructions' 8-byte steps care about.

use super::batch::{self, Crc32c};

/// The table-driven CRC-32C (the checksum the broker computed before the hardware path).
fn reference(bytes: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(bytes)
}

fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn known_vectors() {
    // Proves the checksum is CRC-32C (Castagnoli), with RFC 3720's test patterns.
    assert_eq!(batch::crc32c(b""), 0);
    assert_eq!(batch::crc32c(b"123456789"), 0xe306_9283);
    assert_eq!(batch::crc32c(&[0u8; 32]), 0x8a91_36aa);
    assert_eq!(batch::crc32c(&[0xffu8; 32]), 0x62a8_ab43);
    let ascending: Vec<u8> = (0u8..32).collect();
    assert_eq!(batch::crc32c(&ascending), 0x46dd_794e);
    let descending: Vec<u8> = (0u8..32).rev().collect();
    assert_eq!(batch::crc32c(&descending), 0x113f_db5c);
}

#[test]
fn equals_the_table_driven_crc_on_random_inputs() {
    // Proves the hardware path (or its fallback) and the reference agree for every length up to
    // a few KiB, at every start alignment, and when fed in arbitrary pieces.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let data: Vec<u8> = (0..5000).map(|_| xorshift(&mut seed) as u8).collect();
    for len in (0..600).chain([1024, 4095, 4096, 4097, 4992]) {
        for align in 0..8 {
            let bytes = &data[align..align + len];
            assert_eq!(
                batch::crc32c(bytes),
                reference(bytes),
                "len {len} align {align}"
            );
        }
    }
    for _ in 0..200 {
        let len = (xorshift(&mut seed) % 5000) as usize;
        let bytes = &data[..len];
        let mut streamed = Crc32c::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = ((xorshift(&mut seed) % 700) as usize).min(rest.len());
            streamed.update(&rest[..take]);
            rest = &rest[take..];
        }
        assert_eq!(streamed.finish(), reference(bytes), "streamed, len {len}");
    }
}
