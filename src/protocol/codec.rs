//! protocol::codec: request header and body decoding, response encoding. Bytes in, typed out; the
//! connection does the I/O and the handlers in `api/` do the work.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use super::frame::REQUEST_HEADER_BYTES_MIN;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("request of {0} bytes is shorter than a request header")]
    TooShort(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("malformed {what}: {cause}")]
    Malformed { what: &'static str, cause: String },
    #[error("encoding {what} failed: {cause}")]
    Encode { what: &'static str, cause: String },
}

/// The fixed prefix every request starts with, readable before the API is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads api key, version and correlation id without consuming `frame`.
pub fn peek_prefix(frame: &[u8]) -> Result<RequestPrefix, CodecError> {
    if frame.len() < REQUEST_HEADER_BYTES_MIN {
        return Err(CodecError::TooShort(frame.len()));
    }
    let mut buf = &frame[..REQUEST_HEADER_BYTES_MIN];
    Ok(RequestPrefix {
        api_key: buf.get_i16(),
        api_version: buf.get_i16(),
        correlation_id: buf.get_i32(),
    })
}

/// Decodes the request header for a known API key and version, leaving `frame` at the body.
pub fn decode_header(
    frame: &mut Bytes,
    api_key: ApiKey,
    version: i16,
) -> Result<RequestHeader, CodecError> {
    if frame.len() < REQUEST_HEADER_BYTES_MIN {
        return Err(CodecError::TooShort(frame.len()));
    }
    let header_version = api_key.request_header_version(version);
    RequestHeader::decode(frame, header_version).map_err(|e| CodecError::Malformed {
        what: "request header",
        cause: e.to_string(),
    })
}

/// Decodes a request body of type `R` at `version`.
pub fn decode_body<R: Decodable>(
    body: &mut Bytes,
    version: i16,
    what: &'static str,
) -> Result<R, CodecError> {
    R::decode(body, version).map_err(|e| CodecError::Malformed {
        what,
        cause: e.to_string(),
    })
}

/// Encodes a whole response frame: length prefix, response header, body.
pub fn encode_response<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    response: &R,
    what: &'static str,
) -> Result<BytesMut, CodecError> {
    let fail = |e: anyhow::Error| CodecError::Encode {
        what,
        cause: e.to_string(),
    };
    let header_version = R::header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(fail)?
        + response.compute_size(version).map_err(fail)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version).map_err(fail)?;
    response.encode(&mut buf, version).map_err(fail)?;
    Ok(buf)
}

/// Encodes a request frame (used by the crate's own client).
pub fn encode_request<R: Encodable + HeaderVersion>(
    header: &RequestHeader,
    request: &R,
    what: &'static str,
) -> Result<BytesMut, CodecError> {
    let fail = |e: anyhow::Error| CodecError::Encode {
        what,
        cause: e.to_string(),
    };
    let version = header.request_api_version;
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version).map_err(fail)?
        + request.compute_size(version).map_err(fail)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version).map_err(fail)?;
    request.encode(&mut buf, version).map_err(fail)?;
    Ok(buf)
}

/// Decodes a response frame body (after the length prefix) for the client.
pub fn decode_response<R: Decodable + HeaderVersion>(
    frame: &mut Bytes,
    version: i16,
    what: &'static str,
) -> Result<(i32, R), CodecError> {
    let malformed = |e: anyhow::Error| CodecError::Malformed {
        what,
        cause: e.to_string(),
    };
    if frame.len() < 4 {
        return Err(CodecError::TooShort(frame.len()));
    }
    let header = ResponseHeader::decode(frame, R::header_version(version)).map_err(malformed)?;
    let body = R::decode(frame, version).map_err(malformed)?;
    Ok((header.correlation_id, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

    // Proves a request survives encode → peek → header decode → body decode unchanged.
    #[test]
    fn request_round_trip() {
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::ApiVersions as i16)
            .with_request_api_version(3)
            .with_correlation_id(42);
        let req = ApiVersionsRequest::default();
        let mut frame = encode_request(&header, &req, "api versions")
            .unwrap()
            .freeze();
        frame.advance(4);
        let prefix = peek_prefix(&frame).unwrap();
        assert_eq!(
            prefix,
            RequestPrefix {
                api_key: 18,
                api_version: 3,
                correlation_id: 42
            }
        );
        let decoded = decode_header(&mut frame, ApiKey::ApiVersions, 3).unwrap();
        assert_eq!(decoded.correlation_id, 42);
        let _body: ApiVersionsRequest = decode_body(&mut frame, 3, "api versions").unwrap();
    }

    // Proves a short or garbage header is an error value, never a panic.
    #[test]
    fn short_and_garbage_headers_are_errors() {
        assert!(peek_prefix(&[0, 1, 2]).is_err());
        let mut junk = Bytes::from_static(&[0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff, 0xff]);
        let r = decode_header(&mut junk, ApiKey::ApiVersions, 3)
            .and_then(|_| decode_body::<ApiVersionsRequest>(&mut junk, 3, "api versions"));
        assert!(r.is_err());
        let mut resp = encode_response(7, 3, &ApiVersionsResponse::default(), "x")
            .unwrap()
            .freeze();
        resp.advance(4);
        let (corr, _r): (i32, ApiVersionsResponse) = decode_response(&mut resp, 3, "x").unwrap();
        assert_eq!(corr, 7);
    }
}
