//! meta::store::record: the framed record every metadata store file is made of (byte table in
//! `meta/store/mod.rs`), the scan that tells a torn tail from damage, and the small-file helpers
//! (read whole, replace durably by temp file + fsync + rename + directory fsync).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use crate::io::{Storage, StorageFile};
use crate::protocol::batch::crc32c;

/// Version byte of every record this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Largest `length` field accepted (version byte + payload): bounds what one read allocates.
pub const RECORD_BYTES_MAX: u32 = 32 << 20;
/// Length and CRC fields.
pub(super) const HEADER_BYTES: usize = 8;
const CRC_AT: usize = 4;
/// Suffix of a replacement file being written.
pub(super) const TMP_SUFFIX: &str = ".tmp";

/// `value` as one framed record (header, version, postcard payload).
pub(super) fn frame<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![0u8; HEADER_BYTES];
    out.push(FORMAT_VERSION);
    let mut out = postcard::to_extend(value, out).map_err(|source| StoreError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    let length = out.len() - HEADER_BYTES;
    let length = u32::try_from(length)
        .ok()
        .filter(|l| *l <= RECORD_BYTES_MAX)
        .ok_or_else(|| StoreError::Refused {
            path: path.to_path_buf(),
            why: format!("record of {length} bytes exceeds {RECORD_BYTES_MAX}"),
        })?;
    let crc = crc32c(&out[HEADER_BYTES..]);
    out[..CRC_AT].copy_from_slice(&length.to_be_bytes());
    out[CRC_AT..HEADER_BYTES].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// What lies at one offset of a file.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Parsed<'a> {
    /// A whole, CRC-valid record of this format: its payload, and where the next one starts.
    Record { payload: &'a [u8], end: usize },
    /// A CRC-valid record of another format version (written by another build): never torn.
    Unsupported { version: u8 },
    /// No valid record here (short, length out of range, CRC mismatch); why, for messages.
    Bad(String),
}

/// Parses the record at `at` of `buf`.
pub(super) fn parse(buf: &[u8], at: usize) -> Parsed<'_> {
    let rest = buf.get(at..).unwrap_or_default();
    let Some((header, body)) = rest.split_first_chunk::<HEADER_BYTES>() else {
        return Parsed::Bad(format!("{} bytes, short of a record header", rest.len()));
    };
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    let length = u32::from_be_bytes([l0, l1, l2, l3]);
    let crc = u32::from_be_bytes([c0, c1, c2, c3]);
    if length == 0 || length > RECORD_BYTES_MAX {
        return Parsed::Bad(format!("length field {length} out of range"));
    }
    let Some(covered) = body.get(..length as usize) else {
        return Parsed::Bad(format!(
            "record of {length} bytes but {} remain",
            body.len()
        ));
    };
    if crc32c(covered) != crc {
        return Parsed::Bad("crc-32c mismatch".into());
    }
    match covered.split_first() {
        Some((&FORMAT_VERSION, payload)) => Parsed::Record {
            payload,
            end: at + HEADER_BYTES + length as usize,
        },
        Some((&version, _)) => Parsed::Unsupported { version },
        None => Parsed::Bad("empty record".into()),
    }
}

/// The first offset after `from` where a CRC-valid record (any version) starts, if any. A torn
/// tail has none (zeros, garbage, or part of the one unsynced record); damage in the middle of a
/// file is followed by the records written after it.
pub(super) fn valid_record_after(buf: &[u8], from: usize) -> Option<usize> {
    let last = buf.len().checked_sub(HEADER_BYTES + 1)?;
    (from + 1..=last).find(|&at| {
        let Some(header) = buf.get(at..at + HEADER_BYTES) else {
            return false;
        };
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let start = at + HEADER_BYTES;
        if length == 0 || length > buf.len() - start {
            return false;
        }
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        crc32c(&buf[start..start + length]) == crc
    })
}

/// Decodes a whole payload as `T` (trailing bytes are an error: the CRC matched, so they would
/// mean a writer of another shape).
pub(super) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!("{} bytes after the payload", rest.len())),
        Err(e) => Err(format!("payload does not decode: {e}")),
    }
}

/// The whole content of `file`.
pub(super) fn read_all(file: &dyn StorageFile) -> Result<Vec<u8>, StoreError> {
    let path = file.path();
    let len = file.len().map_err(|e| StoreError::io(path, e))?;
    let len = usize::try_from(len).map_err(|e| StoreError::io(path, std::io::Error::other(e)))?;
    let mut buf = vec![0u8; len];
    file.read_at(&mut buf, 0)
        .map_err(|e| StoreError::io(path, e))?;
    Ok(buf)
}

/// The content of `dir/name`, or None when it does not exist.
pub(super) fn read_file(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let path = dir.join(name);
    match storage.open(&path, false) {
        Ok(f) => read_all(&*f).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// The one record a small file holds, decoded; a damaged or unsupported one is an error naming
/// the file. `trailing_ok` accepts bytes after the record (a file overwritten in place).
pub(super) fn single<T: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    trailing_ok: bool,
) -> Result<T, StoreError> {
    single_with(path, bytes, trailing_ok, decode)
}

/// [`single`] with the payload decoded by `decode` (the image's, which reads older layouts).
pub(super) fn single_with<T>(
    path: &Path,
    bytes: &[u8],
    trailing_ok: bool,
    decode: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, StoreError> {
    match parse(bytes, 0) {
        Parsed::Record { payload, end } if trailing_ok || end == bytes.len() => {
            decode(payload).map_err(|why| StoreError::corrupt(path, 0, why))
        }
        Parsed::Record { end, .. } => Err(StoreError::corrupt(
            path,
            end as u64,
            format!("{} bytes after the record", bytes.len() - end),
        )),
        Parsed::Unsupported { version } => Err(StoreError::corrupt(
            path,
            0,
            format!("format version {version}, this build reads {FORMAT_VERSION}"),
        )),
        Parsed::Bad(why) => Err(StoreError::corrupt(path, 0, why)),
    }
}

/// Replaces `dir/name` with `bytes` durably: a power cut leaves the old or the new content.
pub(super) fn replace_durably(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| StoreError::io(&p, e)
    };
    let f = storage.open(&tmp, true).map_err(io(&tmp))?;
    f.set_len(0).map_err(io(&tmp))?;
    f.write_at(bytes, 0).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    storage.rename(&tmp, &path).map_err(io(&path))?;
    storage.sync_dir(dir).map_err(io(dir))
}

/// Removes leftover `*.tmp` files of replacements a power cut interrupted.
pub(super) fn remove_tmp_files(storage: &dyn Storage, dir: &Path) -> Result<(), StoreError> {
    let mut removed = false;
    for name in list(dir)? {
        if name.ends_with(TMP_SUFFIX) {
            let path = dir.join(&name);
            storage
                .remove_file(&path)
                .map_err(|e| StoreError::io(&path, e))?;
            removed = true;
        }
    }
    if removed {
        storage.sync_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    }
    Ok(())
}

/// File names in `dir` (listing goes through `std::fs`: see `io::Storage`).
pub(super) fn list(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// The number in `<prefix><20 digits>.bin`, if `name` has that shape.
pub(super) fn numbered(name: &str, prefix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(".bin")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}
