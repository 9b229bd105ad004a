//! Whole-archive compression of tars (bundles, `oci-archive:` files):
//! `.tar.gz` and `.tar.zst` are what people carry into an air gap, where
//! the trip (a USB disk, a slow link) is the bottleneck.
//!
//! Reading is detected by the stream's magic, whatever the file is called.
//! A compressed tar cannot be read in place (its members have no offsets),
//! so it is decompressed once into a temporary file (in `TMPDIR`, since the
//! archive's own directory may be read-only media), which is then indexed
//! and streamed like any tar and removed when the last reader is gone.
//! Writing compresses the stream as it goes to the temporary name the tar
//! is renamed from.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Result, TransferError};

/// How a tar is compressed as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TarCompression {
    #[default]
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd's default level: most of the ratio for a fraction of the time.
const ZSTD_LEVEL: i32 = 3;

impl TarCompression {
    /// What the file's name says it should be written as: `.gz`/`.tgz`
    /// gzip, `.zst`/`.zstd` zstd, anything else a plain tar.
    pub fn from_name(path: &Path) -> TarCompression {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".gz") || name.ends_with(".tgz") {
            TarCompression::Gzip
        } else if name.ends_with(".zst") || name.ends_with(".zstd") {
            TarCompression::Zstd
        } else {
            TarCompression::None
        }
    }

    /// What the first bytes of a file are.
    pub fn detect(head: &[u8]) -> TarCompression {
        if head.starts_with(&GZIP_MAGIC) {
            TarCompression::Gzip
        } else if head.starts_with(&ZSTD_MAGIC) {
            TarCompression::Zstd
        } else {
            TarCompression::None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TarCompression::None => "none",
            TarCompression::Gzip => "gzip",
            TarCompression::Zstd => "zstd",
        }
    }
}

/// Decompress `archive` (compressed as `how`) into a new temporary file.
/// Blocking.
pub(crate) fn decompress_to_temp(
    archive: &Path,
    how: TarCompression,
) -> Result<tempfile::TempPath> {
    let io = |e| TransferError::io(archive, e);
    let input =
        std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(archive).map_err(io)?);
    let mut reader: Box<dyn Read> = match how {
        TarCompression::None => Box::new(input),
        TarCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        TarCompression::Zstd => {
            Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(io)?)
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix(".berth-untar-")
        .tempfile()
        .map_err(|e| TransferError::io(std::env::temp_dir(), e))?;
    let (file, path) = tmp.into_parts();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    std::io::copy(&mut reader, &mut out).map_err(|e| {
        TransferError::Corrupt(format!(
            "{}: cannot decompress ({}) into {}: {e}",
            archive.display(),
            how.as_str(),
            path.display()
        ))
    })?;
    out.flush().map_err(|e| TransferError::io(&path, e))?;
    Ok(path)
}

/// A writer compressing into `out` as `how` says; `finish` completes the
/// stream and returns `out`.
pub(crate) enum Compressing<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressing<W> {
    pub fn new(out: W, how: TarCompression) -> std::io::Result<Self> {
        Ok(match how {
            TarCompression::None => Compressing::None(out),
            TarCompression::Gzip => Compressing::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            )),
            TarCompression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
                // Readers can check the stream end to end.
                e.include_checksum(true)?;
                Compressing::Zstd(e)
            }
        })
    }

    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Compressing::None(w) => Ok(w),
            Compressing::Gzip(e) => e.finish(),
            Compressing::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Compressing::None(w) => w.write(buf),
            Compressing::Gzip(e) => e.write(buf),
            Compressing::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Compressing::None(w) => w.flush(),
            Compressing::Gzip(e) => e.flush(),
            Compressing::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detection() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for how in [
            TarCompression::None,
            TarCompression::Gzip,
            TarCompression::Zstd,
        ] {
            let path = dir.path().join(format!("x.{}", how.as_str()));
            let mut w = Compressing::new(std::fs::File::create(&path).unwrap(), how).unwrap();
            w.write_all(&data).unwrap();
            w.finish().unwrap();
            let head = std::fs::read(&path).unwrap();
            assert_eq!(TarCompression::detect(&head), how);
            let out = decompress_to_temp(&path, how).unwrap();
            assert_eq!(std::fs::read(&out).unwrap(), data);
        }
        // Truncated input is an error, not a short file taken for whole.
        let path = dir.path().join("x.gzip");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(decompress_to_temp(&path, TarCompression::Gzip).is_err());
        assert_eq!(
            TarCompression::from_name(Path::new("a/site.tar.zst")),
            TarCompression::Zstd
        );
        assert_eq!(
            TarCompression::from_name(Path::new("site.TGZ")),
            TarCompression::Gzip
        );
        assert_eq!(
            TarCompression::from_name(Path::new("site.tar")),
            TarCompression::None
        );
    }
}
