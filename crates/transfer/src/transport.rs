//! Image references as skopeo writes them: `docker://REF`, `oci:DIR[:TAG]`,
//! `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]`; a reference
//! without a transport is `docker://` with Docker's normalisation.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use berth_reference::ImageReference;

use crate::error::TransferError;

/// A parsed image reference with its transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Docker(ImageReference),
    Oci {
        dir: PathBuf,
        tag: Option<String>,
    },
    OciArchive {
        file: PathBuf,
        tag: Option<String>,
    },
    DockerArchive {
        file: PathBuf,
        reference: Option<String>,
    },
}

/// `PATH[:NAME]`, split at the first ':' as skopeo does.
fn path_and_name(s: &str) -> (PathBuf, Option<String>) {
    match s.split_once(':') {
        Some((p, n)) if !n.is_empty() => (PathBuf::from(p), Some(n.to_string())),
        Some((p, _)) => (PathBuf::from(p), None),
        None => (PathBuf::from(s), None),
    }
}

impl FromStr for ImageRef {
    type Err = TransferError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let docker = |r: &str| {
            r.parse::<ImageReference>()
                .map(ImageRef::Docker)
                .map_err(|e| TransferError::Invalid(format!("{e} (in {s:?})")))
        };
        if let Some(r) = s.strip_prefix("docker://") {
            return docker(r);
        }
        let empty = |t: &str| TransferError::Invalid(format!("{t}: needs a path, as in {t}:PATH"));
        if let Some(r) = s.strip_prefix("oci:") {
            let (dir, tag) = path_and_name(r);
            if dir.as_os_str().is_empty() {
                return Err(empty("oci"));
            }
            return Ok(ImageRef::Oci { dir, tag });
        }
        if let Some(r) = s.strip_prefix("oci-archive:") {
            let (file, tag) = path_and_name(r);
            if file.as_os_str().is_empty() {
                return Err(empty("oci-archive"));
            }
            return Ok(ImageRef::OciArchive { file, tag });
        }
        if let Some(r) = s.strip_prefix("docker-archive:") {
            let (file, reference) = path_and_name(r);
            if file.as_os_str().is_empty() {
                return Err(empty("docker-archive"));
            }
            return Ok(ImageRef::DockerArchive { file, reference });
        }
        for t in [
            "docker-daemon:",
            "containers-storage:",
            "dir:",
            "sif:",
            "ostree:",
        ] {
            if s.starts_with(t) {
                return Err(TransferError::Unsupported(format!(
                    "transport {} is not supported; use docker://, oci:, oci-archive: or docker-archive:",
                    t.trim_end_matches(':')
                )));
            }
        }
        docker(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = |f: &mut fmt::Formatter<'_>, t: &str, p: &PathBuf, n: &Option<String>| {
            write!(f, "{t}:{}", p.display())?;
            if let Some(n) = n {
                write!(f, ":{n}")?;
            }
            Ok(())
        };
        match self {
            ImageRef::Docker(r) => write!(f, "docker://{r}"),
            ImageRef::Oci { dir, tag } => named(f, "oci", dir, tag),
            ImageRef::OciArchive { file, tag } => named(f, "oci-archive", file, tag),
            ImageRef::DockerArchive { file, reference } => {
                named(f, "docker-archive", file, reference)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports() {
        assert_eq!(
            "alpine".parse::<ImageRef>().unwrap().to_string(),
            "docker://docker.io/library/alpine:latest"
        );
        assert_eq!(
            "docker://localhost:5000/a/b:1"
                .parse::<ImageRef>()
                .unwrap()
                .to_string(),
            "docker://localhost:5000/a/b:1"
        );
        assert_eq!(
            "oci:/tmp/x:v1".parse::<ImageRef>().unwrap(),
            ImageRef::Oci {
                dir: "/tmp/x".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            "oci-archive:b.tar:docker.io/library/alpine:3.20"
                .parse::<ImageRef>()
                .unwrap(),
            ImageRef::OciArchive {
                file: "b.tar".into(),
                tag: Some("docker.io/library/alpine:3.20".into())
            }
        );
        assert_eq!(
            "docker-archive:s.tar".parse::<ImageRef>().unwrap(),
            ImageRef::DockerArchive {
                file: "s.tar".into(),
                reference: None
            }
        );
        assert!("oci:".parse::<ImageRef>().is_err());
        assert!("docker-daemon:alpine".parse::<ImageRef>().is_err());
        assert!("Not A Ref".parse::<ImageRef>().is_err());
    }
}
