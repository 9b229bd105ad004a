//! Layer compression for sources whose layers may be plain tars: `docker
//! save` writes uncompressed `layer.tar`s, and pushing those as they are
//! costs the registry and every node pulling them the full size (3,072 B
//! where skopeo pushed 168 B of gzip). Copies compress such layers with
//! gzip by default, as skopeo does, or zstd when asked (which needs an OCI
//! manifest: Docker's schema2 has no zstd layer type); layers already
//! compressed pass as they are. The compressed stream is written to a
//! staging file while it is hashed, so that its digest and size are known
//! before the manifest that names them.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use berth_reference::{Algorithm, Digest, DigestHasher};

use crate::error::{Result, TransferError};

/// What to do with a layer that is a plain tar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerCompression {
    /// gzip it (the default of `berth copy`, as of skopeo).
    #[default]
    Gzip,
    /// zstd it (smaller and faster to decompress; containerd 1.5+, CRI-O).
    Zstd,
    /// Keep it as it is.
    None,
}

/// What a layer is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LayerFormat {
    Tar,
    Gzip,
    Zstd,
}

/// One layer as it will be sent.
pub(crate) struct Layer {
    pub digest: Digest,
    pub size: u64,
    /// What is sent (compressed here, or already so).
    pub format: LayerFormat,
    /// The compressed copy, when this made one.
    pub staged: Option<PathBuf>,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: DigestHasher,
    written: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Read the `size` bytes at `offset` of `archive` (a tar member) and
/// describe them as sent: hashed as they are when already gzip or when
/// `compression` is `None`, else gzip-compressed into `stage`. Blocking.
pub(crate) fn layer(
    archive: &Path,
    offset: u64,
    size: u64,
    compression: LayerCompression,
    stage: &Path,
) -> Result<Layer> {
    let io = |e| TransferError::io(archive, e);
    let mut f = std::fs::File::open(archive).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut r = BufReader::with_capacity(256 << 10, f.take(size));
    let head = r.fill_buf().map_err(io)?;
    let already = if head.starts_with(&[0x1f, 0x8b]) {
        Some(LayerFormat::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(LayerFormat::Zstd)
    } else {
        None
    };
    let short = |read: u64| {
        TransferError::Corrupt(format!(
            "{}: a layer ends after {read} of its {size} bytes",
            archive.display()
        ))
    };
    if already.is_some() || compression == LayerCompression::None {
        let mut hasher = Algorithm::Sha256.hasher();
        let mut read = 0u64;
        loop {
            let buf = r.fill_buf().map_err(io)?;
            if buf.is_empty() {
                break;
            }
            hasher.update(buf);
            let n = buf.len();
            read += n as u64;
            r.consume(n);
        }
        if read != size {
            return Err(short(read));
        }
        return Ok(Layer {
            digest: hasher.finish(),
            size,
            format: already.unwrap_or(LayerFormat::Tar),
            staged: None,
        });
    }
    let out = std::fs::File::create(stage).map_err(|e| TransferError::io(stage, e))?;
    let sink = Hashing {
        inner: std::io::BufWriter::with_capacity(256 << 10, out),
        hasher: Algorithm::Sha256.hasher(),
        written: 0,
    };
    let werr = |e| TransferError::io(stage, e);
    let (mut sink, format) = if compression == LayerCompression::Zstd {
        let mut z = zstd::stream::write::Encoder::new(sink, 3).map_err(werr)?;
        let read = std::io::copy(&mut r, &mut z).map_err(io)?;
        if read != size {
            return Err(short(read));
        }
        (z.finish().map_err(werr)?, LayerFormat::Zstd)
    } else {
        let mut gz = flate2::write::GzEncoder::new(sink, flate2::Compression::default());
        let read = std::io::copy(&mut r, &mut gz).map_err(io)?;
        if read != size {
            return Err(short(read));
        }
        (gz.finish().map_err(werr)?, LayerFormat::Gzip)
    };
    sink.flush().map_err(werr)?;
    Ok(Layer {
        digest: sink.hasher.finish(),
        size: sink.written,
        format,
        staged: Some(stage.to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tars_are_gzipped_and_gzip_passes_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a");
        let plain = vec![b'x'; 10_000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"hello").unwrap();
        let gzipped = gz.finish().unwrap();
        let mut body = b"pad".to_vec();
        body.extend(&plain);
        body.extend(&gzipped);
        std::fs::write(&archive, &body).unwrap();

        let stage = dir.path().join("s");
        let l = layer(&archive, 3, 10_000, LayerCompression::Gzip, &stage).unwrap();
        assert_eq!(l.format, LayerFormat::Gzip);
        let staged = std::fs::read(l.staged.as_ref().unwrap()).unwrap();
        assert_eq!(l.size, staged.len() as u64);
        assert!(l.size < 200, "{} bytes", l.size);
        assert_eq!(l.digest, Digest::sha256_of(&staged));
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&staged[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, plain);

        let kept = layer(&archive, 3, 10_000, LayerCompression::None, &stage).unwrap();
        assert!(kept.format == LayerFormat::Tar && kept.staged.is_none());
        assert_eq!(kept.digest, Digest::sha256_of(&plain));

        let n = gzipped.len() as u64;
        let already = layer(&archive, 10_003, n, LayerCompression::Gzip, &stage).unwrap();
        assert!(already.format == LayerFormat::Gzip && already.staged.is_none());
        assert_eq!(already.digest, Digest::sha256_of(&gzipped));

        assert!(matches!(
            layer(&archive, 10_003, n + 5, LayerCompression::Gzip, &stage),
            Err(TransferError::Corrupt(_))
        ));
    }
}
