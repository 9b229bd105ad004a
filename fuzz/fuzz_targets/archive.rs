//! Tar, OCI-layout and bundle reading (berth-transfer): `oci-archive:`
//! files, air-gap bundles and `docker save` archives, as `berth copy`,
//! `inspect` and `bundle load` open them. A corrupt or hostile archive is
//! an error, never a panic.
//!
//! The first input byte picks how the rest becomes the archive:
//! - even: the rest is the tar file itself (truncated headers, bogus sizes,
//!   odd entry types, paths with `..`);
//! - odd: the rest is files separated by `\n--\n`, written as an OCI layout
//!   tar: part 0 is `index.json`, part N (N ≥ 1) is the blob
//!   `blobs/sha256/<its digest>`, and in each part `$N` and `%N` stand for
//!   part N's digest and size (later parts only, so the references stay
//!   acyclic). Digests then match, and the fuzzer reaches the manifest and
//!   completeness checks behind them.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use berth_reference::Digest;
use berth_transfer::{bundle, DockerArchiveSource, LayoutSource, Source, TarIndex};
use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
    })
}

/// One scratch file per fuzzing process, in memory when /dev/shm exists.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("berth-fuzz-archive-{}.tar", std::process::id()))
    })
}

fn substitute(text: &[u8], parts: &[(Digest, usize)], from: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if (c == b'$' || c == b'%') && i + 1 < text.len() && text[i + 1].is_ascii_digit() {
            let n = usize::from(text[i + 1] - b'0');
            if n > from {
                if let Some((d, size)) = parts.get(n) {
                    let s = if c == b'$' {
                        d.to_string()
                    } else {
                        size.to_string()
                    };
                    out.extend_from_slice(s.as_bytes());
                    i += 2;
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn layout_tar(spec: &[u8]) -> Vec<u8> {
    let mut raw: Vec<&[u8]> = Vec::new();
    let mut rest = spec;
    while let Some(i) = rest.windows(4).position(|w| w == b"\n--\n") {
        raw.push(&rest[..i]);
        rest = &rest[i + 4..];
    }
    raw.push(rest);
    raw.truncate(10);
    // Resolve from the last part back, each seeing the digests after it.
    let mut files: Vec<Vec<u8>> = vec![Vec::new(); raw.len()];
    let mut parts: Vec<(Digest, usize)> = vec![(Digest::sha256_of(b""), 0); raw.len()];
    for n in (0..raw.len()).rev() {
        let bytes = substitute(raw[n], &parts, n);
        parts[n] = (Digest::sha256_of(&bytes), bytes.len());
        files[n] = bytes;
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        let _ = b.append_data(&mut h, path, bytes);
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &files[0]);
    for (n, f) in files.iter().enumerate().skip(1) {
        add(&format!("blobs/sha256/{}", parts[n].0.hex()), f);
    }
    b.into_inner().unwrap_or_default()
}

async fn read_all(file: &Path) {
    if let Ok(index) = TarIndex::open(file).await {
        for n in index.names() {
            let _ = index.size_of(n);
        }
    }
    if let Ok(src) = LayoutSource::open_archive(file, None).await {
        if let Ok(entries) = src.entries().await {
            // Each named image, as `oci-archive:FILE:NAME` opens it.
            for name in entries.iter().filter_map(|e| e.ref_name()).take(4) {
                if let Ok(s) = LayoutSource::open_archive(file, Some(name.to_string())).await {
                    if let Ok(root) = s.root().await {
                        let _ = s.manifest(&root.descriptor()).await;
                    }
                }
            }
        }
        let _ = src.root().await;
    }
    let _ = bundle::manifests(file).await;
    let _ = DockerArchiveSource::open(file, None).await;
    let _ = DockerArchiveSource::open(file, Some("@0".to_string())).await;
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tar = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        layout_tar(rest)
    };
    let file = scratch();
    if std::fs::write(file, &tar).is_err() {
        return;
    }
    runtime().block_on(read_all(file));
    let _ = std::fs::remove_file(file);
});
