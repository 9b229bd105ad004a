//! Which backend `berth serve` stores into: the local disk under the root
//! (the default), or an S3-compatible bucket that several replicas share,
//! and (`[replicas]`) who those replicas are. The `[storage]` table,
//! `--storage` and the `BERTH_S3_*` variables merge here; credentials and
//! the peer secret never come from a flag, so they stay out of `ps`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_storage::s3::{S3Config, S3Storage, Secret};
use berth_storage::Storage;
use serde::Deserialize;

/// `[storage]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStorage {
    /// `fs` (the default) or `s3`.
    backend: Option<String>,
    /// `[storage.s3]`: the bucket, for `backend = "s3"`.
    s3: Option<FileS3>,
}

/// `[storage.s3]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileS3 {
    bucket: Option<String>,
    prefix: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    ca_file: Option<PathBuf>,
    access_key_id: Option<String>,
    /// Better kept out of the file: `secret_access_key_file`, or the
    /// environment (`BERTH_S3_SECRET_ACCESS_KEY`, `AWS_SECRET_ACCESS_KEY`).
    secret_access_key: Option<String>,
    secret_access_key_file: Option<PathBuf>,
    /// Bytes per multipart part, e.g. `16MiB` [8MiB; at least 5MiB].
    part_size: Option<String>,
    /// Redirect blob GETs to presigned URLs valid this long (`off`) [off].
    presign_blob_gets: Option<String>,
    /// How long another replica's tag move or delete may go unseen here
    /// [1s; whole seconds]: the in-memory memos of tags, tag lists and
    /// manifests are re-read from the bucket when older.
    memo_ttl: Option<String>,
}

/// `[cluster]`: the berth replicas sharing this bucket, for cross-replica
/// single flight (see `berth_cache::peers`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileCluster {
    /// This replica's URL as the others reach it (`BERTH_REPLICA_URL`).
    self_url: Option<String>,
    /// Every replica's URL, this one's included (`BERTH_PEERS`, commas).
    #[serde(default)]
    peers: Vec<String>,
    /// `NAME:PORT` whose addresses are the replicas, re-read every 10 s (a
    /// headless Service; `BERTH_PEERS_DNS`).
    peers_dns: Option<String>,
    /// File holding the secret all replicas share (`BERTH_PEER_SECRET`).
    secret_file: Option<PathBuf>,
}

/// The replica set after every source is merged; `None`: no replicas.
pub(super) fn replicas(
    file: Option<FileCluster>,
    storage: &StorageChoice,
) -> anyhow::Result<Option<berth_cache::peers::PeerConfig>> {
    let f = file.unwrap_or_default();
    let me = env("BERTH_REPLICA_URL").or(f.self_url);
    let peers: Vec<String> = match env("BERTH_PEERS") {
        Some(list) => list.split(',').map(|p| p.trim().to_string()).collect(),
        None => f.peers,
    };
    let dns = env("BERTH_PEERS_DNS").or(f.peers_dns);
    if me.is_none() && peers.is_empty() && dns.is_none() {
        return Ok(None);
    }
    let dns = dns
        .map(|d| {
            d.rsplit_once(':')
                .and_then(|(name, port)| Some((name.to_string(), port.parse::<u16>().ok()?)))
                .filter(|(name, _)| !name.is_empty())
                .with_context(|| format!("peers_dns {d:?}: NAME:PORT"))
        })
        .transpose()?;
    anyhow::ensure!(
        matches!(storage, StorageChoice::S3 { .. }),
        "[cluster] needs storage all replicas share (backend = \"s3\")"
    );
    let me = me.context("[cluster] needs self_url (or BERTH_REPLICA_URL)")?;
    let parse = |u: &str| {
        url::Url::parse(u)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .with_context(|| format!("replica URL {u:?}: http(s)://HOST:PORT"))
    };
    let secret = match (env("BERTH_PEER_SECRET"), f.secret_file) {
        (Some(s), _) => s,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("reading the peer secret file {}", path.display()))?
            .trim()
            .to_string(),
        (None, None) => anyhow::bail!("[cluster] needs secret_file (or BERTH_PEER_SECRET)"),
    };
    let config = berth_cache::peers::PeerConfig {
        me: parse(&me)?,
        peers: peers
            .iter()
            .map(|p| parse(p))
            .collect::<anyhow::Result<_>>()?,
        secret,
        dns,
    };
    // Checked now (secret length, self among the peers), before serving.
    berth_cache::peers::Peers::new(config.clone())?;
    Ok(Some(config))
}

/// The backend after every source is merged.
#[derive(Debug)]
pub(super) enum StorageChoice {
    Fs,
    S3 {
        config: Box<S3Config>,
        /// Bound on how stale another replica's writes may look here.
        memo_ttl: Duration,
    },
}

impl StorageChoice {
    pub(super) fn describe(&self, root: &std::path::Path) -> String {
        match self {
            StorageChoice::Fs => root.display().to_string(),
            StorageChoice::S3 { config, .. } => {
                format!("s3://{}/{}", config.bucket, config.prefix)
            }
        }
    }

    pub(super) async fn open(&self, root: &std::path::Path) -> anyhow::Result<Arc<dyn Storage>> {
        Ok(match self {
            StorageChoice::Fs => Arc::new(
                berth_storage::fs::FsStorage::open(root)
                    .await
                    .with_context(|| format!("opening storage at {}", root.display()))?,
            ),
            StorageChoice::S3 { config, .. } => Arc::new(
                S3Storage::open((**config).clone())
                    .await
                    .context("opening S3 storage")?,
            ),
        })
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// `--storage` is a directory (the fs backend under it, as `--root`) or
/// `s3://BUCKET[/PREFIX]`.
pub(super) fn resolve(
    file: Option<FileStorage>,
    flag: Option<&str>,
) -> anyhow::Result<(StorageChoice, Option<PathBuf>)> {
    let mut f = file.unwrap_or_default();
    let mut fs_root = None;
    if let Some(url) = flag {
        match url.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                f.backend = Some("s3".into());
                let s3 = f.s3.get_or_insert_with(FileS3::default);
                s3.bucket = Some(bucket.to_string());
                s3.prefix = Some(prefix.to_string());
            }
            None => {
                f.backend = Some("fs".into());
                fs_root = Some(PathBuf::from(url));
            }
        }
    }
    match f.backend.as_deref().unwrap_or("fs") {
        "fs" => {
            anyhow::ensure!(f.s3.is_none(), "[storage.s3] is for backend = \"s3\"");
            Ok((StorageChoice::Fs, fs_root))
        }
        "s3" => Ok((s3_choice(f.s3.unwrap_or_default())?, None)),
        other => anyhow::bail!("storage backend {other:?}: use \"fs\" or \"s3\""),
    }
}

fn s3_choice(f: FileS3) -> anyhow::Result<StorageChoice> {
    let bucket = env("BERTH_S3_BUCKET")
        .or(f.bucket)
        .context("S3 storage needs a bucket ([storage.s3] bucket, or --storage s3://BUCKET)")?;
    let mut c = S3Config::new(&bucket);
    c.prefix = env("BERTH_S3_PREFIX").or(f.prefix).unwrap_or_default();
    c.endpoint = env("BERTH_S3_ENDPOINT").or(f.endpoint);
    c.region = env("BERTH_S3_REGION")
        .or(f.region)
        .or_else(|| env("AWS_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    c.path_style = match env("BERTH_S3_PATH_STYLE") {
        Some(v) => matches!(v.trim(), "1" | "true" | "yes"),
        None => f.path_style.unwrap_or(false),
    };
    c.ca_file = env("BERTH_S3_CA_FILE").map(PathBuf::from).or(f.ca_file);
    c.access_key_id = env("BERTH_S3_ACCESS_KEY_ID").or(f.access_key_id);
    let secret = match (env("BERTH_S3_SECRET_ACCESS_KEY"), f.secret_access_key_file) {
        (Some(s), _) => Some(s),
        (None, Some(path)) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading secret_access_key_file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => f.secret_access_key,
    };
    c.secret_access_key = secret.map(Secret);
    if let Some(p) = env("BERTH_S3_PART_SIZE").or(f.part_size) {
        c.part_size = super::settings::parse_size(&p)
            .and_then(|n| usize::try_from(n).ok())
            .with_context(|| format!("part_size {p:?}: a size such as 16MiB"))?;
    }
    c.presign_blob_gets = match env("BERTH_S3_PRESIGN_BLOB_GETS").or(f.presign_blob_gets) {
        None => None,
        Some(v) if matches!(v.trim(), "off" | "0" | "0s") => None,
        Some(v) => Some(super::parse_duration("presign_blob_gets", &v)?),
    };
    let memo_ttl = match env("BERTH_S3_MEMO_TTL").or(f.memo_ttl) {
        None => Duration::from_secs(1),
        Some(v) => super::parse_duration("memo_ttl", &v)?,
    };
    // Settings are checked now, before logging starts or a port is bound.
    c.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(StorageChoice::S3 {
        config: Box::new(c),
        memo_ttl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_and_file() {
        let (c, root) = resolve(None, Some("/data/berth")).unwrap();
        assert!(matches!(c, StorageChoice::Fs));
        assert_eq!(root, Some(PathBuf::from("/data/berth")));
        let (c, _) = resolve(None, Some("s3://images/prod/eu")).unwrap();
        let StorageChoice::S3 { config, memo_ttl } = c else {
            panic!("not s3")
        };
        assert_eq!(
            (config.bucket.as_str(), config.prefix.as_str()),
            ("images", "prod/eu/")
        );
        assert_eq!(memo_ttl, Duration::from_secs(1));
        let file: FileStorage = toml::from_str(
            "backend = \"s3\"\n[s3]\nbucket = \"b-1\"\nendpoint = \"https://s3.local:9000\"\n\
             path_style = true\npart_size = \"16MiB\"\npresign_blob_gets = \"5m\"\nmemo_ttl = \"2s\"",
        )
        .unwrap();
        let (c, _) = resolve(Some(file), None).unwrap();
        let StorageChoice::S3 { config, memo_ttl } = c else {
            panic!("not s3")
        };
        assert_eq!(config.part_size, 16 << 20);
        assert!(config.path_style);
        assert_eq!(config.presign_blob_gets, Some(Duration::from_secs(300)));
        assert_eq!(memo_ttl, Duration::from_secs(2));
        assert!(format!("{config:?}").contains("secret_access_key: None"));
    }

    #[test]
    fn refusals() {
        for bad in [
            "backend = \"nfs\"",
            "backend = \"s3\"",
            "backend = \"s3\"\n[s3]\nbucket = \"Bad_Bucket\"",
            "backend = \"s3\"\n[s3]\nbucket = \"b-1\"\npart_size = \"1MiB\"",
            "backend = \"s3\"\n[s3]\nbucket = \"b-1\"\nendpoint = \"s3.local\"",
            "backend = \"s3\"\n[s3]\nbucket = \"b-1\"\naccess_key_id = \"only-the-id\"",
            "backend = \"s3\"\n[s3]\nbucket = \"b-1\"\nsecret = \"typo\"",
            "[s3]\nbucket = \"b-1\"",
        ] {
            let parsed = toml::from_str::<FileStorage>(bad);
            let ok = parsed
                .map(|f| resolve(Some(f), None).is_ok())
                .unwrap_or(false);
            assert!(!ok, "accepted: {bad}");
        }
    }

    #[test]
    fn cluster_settings() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{}\n", "x".repeat(40))).unwrap();
        let (s3, _) = resolve(None, Some("s3://b-1/p")).unwrap();
        let cluster = |extra: &str| -> anyhow::Result<_> {
            let f: FileCluster = toml::from_str(&format!(
                "self_url = \"http://10.0.0.5:5000\"\nsecret_file = \"{}\"\n{extra}",
                secret.display()
            ))?;
            replicas(Some(f), &s3)
        };
        let c = cluster("peers_dns = \"berth-headless.ns.svc:5000\"")
            .unwrap()
            .unwrap();
        assert_eq!(c.dns, Some(("berth-headless.ns.svc".to_string(), 5000)));
        assert_eq!(c.secret.len(), 40);
        let c = cluster("peers = [\"http://10.0.0.5:5000\", \"http://10.0.0.6:5000\"]")
            .unwrap()
            .unwrap();
        assert_eq!(c.peers.len(), 2);
        for bad in [
            "peers_dns = \"no-port\"",
            "peers = [\"http://10.0.0.6:5000\"]",
            "peers = [\"ftp://10.0.0.5:5000\"]",
        ] {
            assert!(cluster(bad).is_err(), "accepted {bad}");
        }
        let f: FileCluster = toml::from_str("peers = [\"http://a:1\"]").unwrap();
        assert!(
            replicas(Some(f), &StorageChoice::Fs).is_err(),
            "replicas on local disk"
        );
    }
}
