//! Putting generated files on disk safely: every write goes to a temporary
//! file in the destination directory and is renamed over the target, so a
//! runtime never reads half a file, and a file that already exists with other
//! contents is copied to a timestamped backup beside it first.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} has no file name")]
    NoFileName(PathBuf),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub path: PathBuf,
    /// Where the previous contents were saved, when there were any.
    pub backup: Option<PathBuf>,
    /// The file already had exactly these contents: nothing was touched.
    pub unchanged: bool,
}

/// A file's current text, or `None` when it does not exist.
pub fn read_existing(path: &Path) -> Result<Option<String>, WriteError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", path)(e)),
    }
}

/// Write `contents` to `path` atomically, creating parent directories and
/// backing up different existing contents first. A new file gets mode 0644;
/// a replaced file keeps its mode.
pub fn write_atomic(path: &Path, contents: &str) -> Result<Written, WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if path.file_name().is_none() {
        return Err(WriteError::NoFileName(path.to_path_buf()));
    }
    fs::create_dir_all(&dir).map_err(io("creating directory", &dir))?;

    let existing = match fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(io("inspecting", path)(e)),
    };
    let mut backup = None;
    if let Some(meta) = &existing {
        let old = fs::read(path).map_err(io("reading", path))?;
        if old == contents.as_bytes() {
            return Ok(Written {
                path: path.to_path_buf(),
                backup: None,
                unchanged: true,
            });
        }
        let target = backup_path(path)?;
        fs::write(&target, &old).map_err(io("writing backup", &target))?;
        fs::set_permissions(&target, meta.permissions())
            .map_err(io("setting permissions of", &target))?;
        backup = Some(target);
    }

    let mut tmp = tempfile::Builder::new()
        .prefix(".berth-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(io("creating a temporary file in", &dir))?;
    tmp.write_all(contents.as_bytes())
        .map_err(io("writing a temporary file in", &dir))?;
    tmp.as_file()
        .sync_all()
        .map_err(io("syncing a temporary file in", &dir))?;
    match &existing {
        Some(meta) => fs::set_permissions(tmp.path(), meta.permissions()),
        None => set_default_permissions(tmp.path()),
    }
    .map_err(io("setting permissions in", &dir))?;
    tmp.persist(path)
        .map_err(|e| io("replacing", path)(e.error))?;
    // Make the rename itself durable; failure to sync a directory is not
    // worth failing a write that has already happened.
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(Written {
        path: path.to_path_buf(),
        backup,
        unchanged: false,
    })
}

/// New files are world-readable, as runtime configuration is (the temporary
/// file starts out private).
#[cfg(unix)]
fn set_default_permissions(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn set_default_permissions(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// `NAME.berth-backup-YYYYMMDDTHHMMSSZ`, with `-N` added if taken. The
/// suffix keeps backups out of drop-in directories that load `*.conf` or
/// `hosts.toml` only.
fn backup_path(path: &Path) -> Result<PathBuf, WriteError> {
    let name = path
        .file_name()
        .ok_or_else(|| WriteError::NoFileName(path.to_path_buf()))?
        .to_string_lossy()
        .into_owned();
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stamp = utc_stamp(secs);
    let base = path.with_file_name(format!("{name}.berth-backup-{stamp}"));
    if !base.exists() {
        return Ok(base);
    }
    for n in 1..1000 {
        let candidate = path.with_file_name(format!("{name}.berth-backup-{stamp}-{n}"));
        if !candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(io("choosing a backup name for", path)(std::io::Error::new(
        ErrorKind::AlreadyExists,
        "too many backups in one second",
    )))
}

/// Seconds since the epoch as `YYYYMMDDTHHMMSSZ` (proleptic Gregorian).
fn utc_stamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Convert a day count to a civil date, counting in 400-year eras that
    // start on 1 March so that leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_795_443_628), "20261123T142028Z");
    }

    #[test]
    fn writes_new_then_backs_up_then_skips_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file.toml");
        let w = write_atomic(&path, "one\n").unwrap();
        assert_eq!(w.backup, None);
        assert!(!w.unchanged);
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o644
            );
        }

        let w = write_atomic(&path, "two\n").unwrap();
        let backup = w.backup.unwrap();
        assert_eq!(fs::read_to_string(&backup).unwrap(), "one\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "two\n");
        assert!(backup
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("file.toml.berth-backup-"));

        let w = write_atomic(&path, "two\n").unwrap();
        assert!(w.unchanged && w.backup.is_none());

        // A second change in the same second gets its own backup.
        let w = write_atomic(&path, "three\n").unwrap();
        assert_ne!(w.backup.unwrap(), backup);
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn read_existing_distinguishes_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_existing(&dir.path().join("nope")).unwrap(), None);
        fs::write(dir.path().join("yes"), "x").unwrap();
        assert_eq!(
            read_existing(&dir.path().join("yes")).unwrap().as_deref(),
            Some("x")
        );
    }
}
