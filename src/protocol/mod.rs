//! protocol: bytes in, typed messages out. Framing, request/response header codecs and the v2
//! record batch header. Nothing here does I/O.

pub mod batch;
pub mod codec;
pub mod compression;
pub mod frame;
pub mod records;
#[cfg(test)]
mod tests_crc;
pub mod timestamps;
pub mod varint;
