//! `--tls-auto`: a private CA and a server certificate kept under
//! `ROOT/tls/` (`ca.crt`, `ca.key`, `server.crt`, `server.key`, and
//! `server.meta` recording the server certificate's validity and names).
//!
//! The CA is made once and kept: nodes trust it once (`berth ca export`),
//! and every later server certificate chains to it. The server certificate
//! is issued again when a third of its lifetime is left or its names
//! changed (`--tls-san`); the running server notices the new files through
//! [`super::ReloadingCert`]. Keys are written 0600, every file through a
//! temporary name and a rename, so a reader never sees half a file.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::TlsError;

/// How long the CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a server certificate is valid (renewed with a third left).
const SERVER_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Backdating, for clocks of clients slightly behind ours.
const BACKDATE: Duration = Duration::from_secs(3600);
const CA_NAME: &str = "berth private CA";

/// Where `--tls-auto` keeps its files.
#[derive(Debug, Clone)]
pub struct AutoPaths {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    meta: PathBuf,
}

impl AutoPaths {
    pub fn under(root: &Path) -> AutoPaths {
        let dir = root.join("tls");
        AutoPaths {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            meta: dir.join("server.meta"),
            dir,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// Write `bytes` to `path` atomically with the given mode.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    // `mode` applies only to a new file: a leftover temporary keeps its own.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn to_offset(t: SystemTime) -> Result<time::OffsetDateTime, TlsError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|e| TlsError::Generate(e.to_string()))?
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .map_err(|e| TlsError::Generate(e.to_string()))
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "berth");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The CA's signing identity, creating the CA on first use.
fn ensure_ca(paths: &AutoPaths) -> Result<Issuer<'static, KeyPair>, TlsError> {
    if paths.ca_key.exists() && paths.ca_cert.exists() {
        let pem = std::fs::read_to_string(&paths.ca_key).map_err(io_err(&paths.ca_key))?;
        let key = KeyPair::from_pem(&pem).map_err(|e| TlsError::Key {
            path: paths.ca_key.clone(),
            message: e.to_string(),
        })?;
        // The issuer is the CA's name and key: both are what `ca.crt`
        // holds, so certificates signed now chain to it.
        return Ok(Issuer::new(ca_params(), key));
    }
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = ca_params();
    let now = SystemTime::now();
    params.not_before = to_offset(now - BACKDATE)?;
    params.not_after = to_offset(now + CA_LIFETIME)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    write_file(&paths.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&paths.ca_cert, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(ca = %paths.ca_cert.display(), "created a private CA for --tls-auto");
    Ok(Issuer::new(params, key))
}

/// What `server.meta` records.
#[derive(Debug, PartialEq, Eq)]
struct Meta {
    not_before: u64,
    not_after: u64,
    sans: Vec<String>,
}

impl Meta {
    fn parse(text: &str) -> Option<Meta> {
        let mut not_before = None;
        let mut not_after = None;
        let mut sans = None;
        for line in text.lines() {
            match line.split_once('=') {
                Some(("not_before", v)) => not_before = v.trim().parse().ok(),
                Some(("not_after", v)) => not_after = v.trim().parse().ok(),
                Some(("sans", v)) => {
                    sans = Some(
                        v.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect::<Vec<_>>(),
                    )
                }
                _ => {}
            }
        }
        Some(Meta {
            not_before: not_before?,
            not_after: not_after?,
            sans: sans?,
        })
    }

    fn render(&self) -> String {
        format!(
            "not_before={}\nnot_after={}\nsans={}\n",
            self.not_before,
            self.not_after,
            self.sans.join(",")
        )
    }

    /// Renew with less than a third of the lifetime left.
    fn due(&self, now: u64) -> bool {
        let lifetime = self.not_after.saturating_sub(self.not_before);
        now + lifetime / 3 >= self.not_after
    }
}

/// The names a server certificate covers: the host name, the address
/// outgoing traffic leaves from, loopback, the listen address when it is a
/// specific one, and `extra` (`--tls-san`). Sorted, without duplicates.
pub fn default_sans(listen: Option<IpAddr>, extra: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            sans.push(h.to_ascii_lowercase());
        }
    }
    // The route to a public address names this machine's main address; a
    // UDP "connect" sends nothing.
    if let Ok(s) = std::net::UdpSocket::bind("0.0.0.0:0") {
        if s.connect("192.0.2.1:9").is_ok() {
            if let Ok(a) = s.local_addr() {
                sans.push(a.ip().to_string());
            }
        }
    }
    if let Some(ip) = listen.filter(|ip| !ip.is_unspecified()) {
        sans.push(ip.to_string());
    }
    sans.extend(
        extra
            .iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty()),
    );
    sans.sort();
    sans.dedup();
    sans
}

/// Make sure `ROOT/tls/` holds a CA and a current server certificate for
/// `sans`, issuing one when missing, due or for other names. Returns the
/// paths and whether a server certificate was issued.
pub fn ensure(root: &Path, sans: &[String]) -> Result<(AutoPaths, bool), TlsError> {
    let paths = AutoPaths::under(root);
    std::fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir))?;
    std::fs::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(&paths.dir))?;
    let issuer = ensure_ca(&paths)?;
    let now = SystemTime::now();
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_err(|e| TlsError::Generate(e.to_string()))?
        .as_secs();
    let meta = std::fs::read_to_string(&paths.meta)
        .ok()
        .and_then(|t| Meta::parse(&t));
    let current = paths.server_cert.exists()
        && paths.server_key.exists()
        && meta
            .as_ref()
            .is_some_and(|m| m.sans == sans && !m.due(now_s));
    if current {
        return Ok((paths, false));
    }
    let key = KeyPair::generate().map_err(gen_err)?;
    let mut params = CertificateParams::new(sans.to_vec()).map_err(gen_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        sans.iter()
            .find(|s| s.parse::<IpAddr>().is_err())
            .cloned()
            .unwrap_or_else(|| "berth".to_string()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let not_before = now - BACKDATE;
    let not_after = now + SERVER_LIFETIME;
    params.not_before = to_offset(not_before)?;
    params.not_after = to_offset(not_after)?;
    let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
    // Certificate then key, each atomically: the reloader retries until
    // the two match.
    write_file(&paths.server_key, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&paths.server_cert, cert.pem().as_bytes(), 0o644)?;
    let meta = Meta {
        not_before: now_s.saturating_sub(BACKDATE.as_secs()),
        not_after: now_s + SERVER_LIFETIME.as_secs(),
        sans: sans.to_vec(),
    };
    write_file(&paths.meta, meta.render().as_bytes(), 0o644)?;
    tracing::info!(names = %sans.join(","), "issued a server certificate from the --tls-auto CA");
    Ok((paths, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_keeps_and_renews() {
        let dir = tempfile::tempdir().unwrap();
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (paths, issued) = ensure(dir.path(), &sans).unwrap();
        assert!(issued);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&paths.ca_key), 0o600);
        assert_eq!(mode(&paths.server_key), 0o600);
        assert_eq!(mode(&paths.dir), 0o700);
        super::super::load_certified_key(&paths.server_cert, &paths.server_key).unwrap();
        let ca = std::fs::read(&paths.ca_cert).unwrap();
        let cert = std::fs::read(&paths.server_cert).unwrap();

        // Same names, not due: kept.
        let (_, issued) = ensure(dir.path(), &sans).unwrap();
        assert!(!issued);
        assert_eq!(std::fs::read(&paths.server_cert).unwrap(), cert);

        // Other names: a new certificate from the same CA.
        let more = vec!["localhost".to_string(), "registry.lan".to_string()];
        let (_, issued) = ensure(dir.path(), &more).unwrap();
        assert!(issued);
        assert_ne!(std::fs::read(&paths.server_cert).unwrap(), cert);
        assert_eq!(std::fs::read(&paths.ca_cert).unwrap(), ca);
    }

    #[test]
    fn renewal_is_due_with_a_third_left() {
        let m = Meta {
            not_before: 0,
            not_after: 900,
            sans: vec![],
        };
        assert!(!m.due(500));
        assert!(m.due(600));
        assert!(m.due(1000));
        assert_eq!(Meta::parse(&m.render()), Some(m));
    }
}
