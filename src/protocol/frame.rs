//! protocol::frame: the Kafka frame is an i32 big-endian length followed by that many bytes. The
//! connection reads the 4-byte prefix, asks [`body_len`] whether the frame is acceptable, and only
//! then reads (and allocates) the body, so a hostile length costs nothing.

/// The smallest request body: api key (2) + api version (2) + correlation id (4). Checking this
/// before decoding also guards `kafka-protocol`'s header decoder, which panics under 4 bytes.
pub const REQUEST_HEADER_BYTES_MIN: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("negative frame length {0}")]
    Negative(i32),
    #[error("frame length {len} below the minimum request header of {min} bytes")]
    TooShort { len: usize, min: usize },
    #[error("frame length {len} exceeds frame_bytes_max {max}")]
    TooLarge { len: usize, max: usize },
}

/// Checks a request frame's length prefix against the configured cap.
pub fn body_len(prefix: [u8; 4], frame_bytes_max: usize) -> Result<usize, FrameError> {
    let len = i32::from_be_bytes(prefix);
    let len = usize::try_from(len).map_err(|_| FrameError::Negative(len))?;
    if len < REQUEST_HEADER_BYTES_MIN {
        return Err(FrameError::TooShort {
            len,
            min: REQUEST_HEADER_BYTES_MIN,
        });
    }
    if len > frame_bytes_max {
        return Err(FrameError::TooLarge {
            len,
            max: frame_bytes_max,
        });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves every class of bad length prefix is refused before any body is read.
    #[test]
    fn refuses_negative_short_and_huge_lengths() {
        assert_eq!(
            body_len((-1i32).to_be_bytes(), 100),
            Err(FrameError::Negative(-1))
        );
        assert!(matches!(
            body_len(3i32.to_be_bytes(), 100),
            Err(FrameError::TooShort { .. })
        ));
        assert!(matches!(
            body_len(i32::MAX.to_be_bytes(), 100),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(body_len(100i32.to_be_bytes(), 100), Ok(100));
        assert_eq!(body_len(8i32.to_be_bytes(), 100), Ok(8));
    }
}
