//! `--tls-auto`: a private CA and a server certificate kept under
//! `ROOT/tls/` (`ca.crt`, `ca.key`, `server.crt`, `server.key`).
//!
//! The CA is made once and kept: nodes trust it once (`berth ca export`),
//! and every later server certificate chains to it. The server certificate
//! is issued again when a third of its lifetime is left, its names changed
//! (`--tls-san`), or the CA was made anew; what is decided is read from
//! `server.crt` itself (its validity and subject alternative names), so a
//! certificate put there by hand is judged like one berth issued. The
//! running server asks again when the certificate is due
//! ([`Ensured::renew_at`]) and notices the new files through
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
}

impl AutoPaths {
    pub fn under(root: &Path) -> AutoPaths {
        let dir = root.join("tls");
        AutoPaths {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
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

/// The CA's signing identity, creating the CA on first use (then `true`).
fn ensure_ca(paths: &AutoPaths) -> Result<(Issuer<'static, KeyPair>, bool), TlsError> {
    if paths.ca_key.exists() && paths.ca_cert.exists() {
        let pem = std::fs::read_to_string(&paths.ca_key).map_err(io_err(&paths.ca_key))?;
        let key = KeyPair::from_pem(&pem).map_err(|e| TlsError::Key {
            path: paths.ca_key.clone(),
            message: e.to_string(),
        })?;
        // The issuer is the CA's name and key: both are what `ca.crt`
        // holds, so certificates signed now chain to it.
        return Ok((Issuer::new(ca_params(), key), false));
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
    Ok((Issuer::new(params, key), true))
}

/// The subject name (DER) of the certificate in PEM `pem`.
fn subject_of(pem: &[u8]) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.subject().as_raw().to_vec())
}

/// What decides a server certificate's renewal, read from the certificate.
#[derive(Debug, PartialEq, Eq)]
struct Served {
    /// Validity, in seconds since the epoch.
    not_before: i64,
    not_after: i64,
    /// Subject alternative names as [`default_sans`] writes them: DNS names
    /// lowercase, addresses in their usual text form; sorted.
    sans: Vec<String>,
    /// The issuer's name, DER: it must be the current CA's.
    issuer: Vec<u8>,
}

impl Served {
    /// The certificate in PEM `pem`; `None` when it does not parse.
    fn read(pem: &[u8]) -> Option<Served> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
        let cert = pem.parse_x509().ok()?;
        let validity = cert.validity();
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                use x509_parser::extensions::GeneralName;
                match name {
                    GeneralName::DNSName(d) => sans.push(d.to_ascii_lowercase()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => sans.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                        16 => sans.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                        _ => return None,
                    },
                    _ => {}
                }
            }
        }
        sans.sort();
        sans.dedup();
        Some(Served {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            sans,
            issuer: cert.issuer().as_raw().to_vec(),
        })
    }

    /// When to issue again: with a third of the lifetime left.
    fn renew_at(&self) -> i64 {
        let lifetime = self.not_after.saturating_sub(self.not_before).max(0);
        self.not_after - lifetime / 3
    }
}

/// What [`ensure`] found or did.
#[derive(Debug, Clone)]
pub struct Ensured {
    pub paths: AutoPaths,
    /// A server certificate was issued just now.
    pub issued: bool,
    /// When the server certificate is due for renewal.
    pub renew_at: SystemTime,
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
    // An address in its usual text form, as it reads back from the
    // certificate (`0:0::1` is `::1`).
    sans.extend(
        extra
            .iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<IpAddr>().map_or(s, |ip| ip.to_string())),
    );
    sans.sort();
    sans.dedup();
    sans
}

/// Make sure `ROOT/tls/` holds a CA and a current server certificate for
/// `sans` (sorted, as [`default_sans`] gives them), issuing one when
/// missing, unreadable, due, for other names, or from a CA made just now.
pub fn ensure(root: &Path, sans: &[String]) -> Result<Ensured, TlsError> {
    let paths = AutoPaths::under(root);
    std::fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir))?;
    std::fs::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(&paths.dir))?;
    let (issuer, new_ca) = ensure_ca(&paths)?;
    let now = SystemTime::now();
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_err(|e| TlsError::Generate(e.to_string()))?
        .as_secs() as i64;
    let served = std::fs::read(&paths.server_cert)
        .ok()
        .and_then(|pem| Served::read(&pem));
    let ca_subject = std::fs::read(&paths.ca_cert)
        .ok()
        .and_then(|pem| subject_of(&pem));
    // Kept only if it is current, for these names, from this CA, and the
    // key beside it is its own (a write cut short, or a key replaced by
    // hand, is healed by issuing again).
    if let Some(served) = served.filter(|s| {
        !new_ca
            && s.sans == sans
            && now_s < s.renew_at()
            && ca_subject.as_deref() == Some(s.issuer.as_slice())
            && super::load_certified_key(&paths.server_cert, &paths.server_key).is_ok()
    }) {
        return Ok(Ensured {
            paths,
            issued: false,
            renew_at: UNIX_EPOCH + Duration::from_secs(served.renew_at().max(0) as u64),
        });
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
    // Key then certificate, each atomically: the reloader retries until
    // the two match, and a pair cut short between the two is issued again
    // at the next look (the key check above).
    write_file(&paths.server_key, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&paths.server_cert, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(names = %sans.join(","), "issued a server certificate from the --tls-auto CA");
    let lifetime = SERVER_LIFETIME + BACKDATE;
    Ok(Ensured {
        paths,
        issued: true,
        renew_at: not_after - lifetime / 3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_keeps_and_renews() {
        let dir = tempfile::tempdir().unwrap();
        let sans = vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ];
        let first = ensure(dir.path(), &sans).unwrap();
        assert!(first.issued);
        let paths = first.paths;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&paths.ca_key), 0o600);
        assert_eq!(mode(&paths.server_key), 0o600);
        assert_eq!(mode(&paths.dir), 0o700);
        super::super::load_certified_key(&paths.server_cert, &paths.server_key).unwrap();
        let ca = std::fs::read(&paths.ca_cert).unwrap();
        let cert = std::fs::read(&paths.server_cert).unwrap();
        // What was issued reads back as issued: the names, and due in
        // about 60 days.
        let served = Served::read(&cert).unwrap();
        assert_eq!(served.sans, sans);
        let in_days = first
            .renew_at
            .duration_since(SystemTime::now())
            .unwrap()
            .as_secs()
            / 86400;
        assert!((59..=60).contains(&in_days), "{in_days}");

        // Same names, not due: kept, with the same due time.
        let again = ensure(dir.path(), &sans).unwrap();
        assert!(!again.issued);
        assert_eq!(std::fs::read(&paths.server_cert).unwrap(), cert);
        let drift = again
            .renew_at
            .duration_since(first.renew_at)
            .unwrap_or_else(|e| e.duration());
        assert!(drift <= Duration::from_secs(1), "{drift:?}");

        // Other names: a new certificate from the same CA.
        let more = vec!["localhost".to_string(), "registry.lan".to_string()];
        assert!(ensure(dir.path(), &more).unwrap().issued);
        assert_ne!(std::fs::read(&paths.server_cert).unwrap(), cert);
        assert_eq!(std::fs::read(&paths.ca_cert).unwrap(), ca);

        // A key that is not the certificate's: issued again.
        let cert_now = std::fs::read(&paths.server_cert).unwrap();
        let other = KeyPair::generate().unwrap();
        std::fs::write(&paths.server_key, other.serialize_pem()).unwrap();
        assert!(ensure(dir.path(), &more).unwrap().issued);
        assert_ne!(std::fs::read(&paths.server_cert).unwrap(), cert_now);
        super::super::load_certified_key(&paths.server_cert, &paths.server_key).unwrap();

        // A garbled certificate, or a CA made anew: issued again.
        std::fs::write(&paths.server_cert, b"not a certificate").unwrap();
        assert!(ensure(dir.path(), &more).unwrap().issued);
        std::fs::remove_file(&paths.ca_key).unwrap();
        assert!(ensure(dir.path(), &more).unwrap().issued);
        assert_ne!(std::fs::read(&paths.ca_cert).unwrap(), ca);
    }

    /// The names must read back from the certificate exactly as computed
    /// (lowercase, addresses in their usual form, sorted, once each), or
    /// `ensure` would see "other names" at every start and issue again.
    #[test]
    fn default_sans_cover_loopback_host_listen_address_and_extras() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim()
            .to_ascii_lowercase();
        assert!(!host.is_empty(), "this machine has no host name");
        let extra: Vec<String> = [
            "0:0:0:0:0:0:0:1",
            "Registry.LAN",
            " 10.0.0.5 ",
            "",
            "LOCALHOST",
            "registry.lan",
            "2001:DB8:0::0:1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let listen: IpAddr = "10.9.8.7".parse().unwrap();
        let sans = default_sans(Some(listen), &extra);
        for want in [
            "localhost",
            "127.0.0.1",
            "::1",
            host.as_str(),
            "10.9.8.7",
            "registry.lan",
            "10.0.0.5",
            "2001:db8::1",
        ] {
            assert_eq!(
                sans.iter().filter(|s| s.as_str() == want).count(),
                1,
                "{want} not there exactly once: {sans:?}"
            );
        }
        for s in &sans {
            assert!(!s.is_empty(), "{sans:?}");
            assert_eq!(s, &s.to_ascii_lowercase(), "{sans:?}");
            assert_eq!(s, s.trim(), "{sans:?}");
            if let Ok(ip) = s.parse::<IpAddr>() {
                assert_eq!(s, &ip.to_string(), "not in the usual form: {sans:?}");
            }
        }
        assert!(!sans.iter().any(|s| s == "0:0:0:0:0:0:0:1"), "{sans:?}");
        let mut sorted = sans.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sans, sorted);

        // A wildcard listen address is no name; without extras the
        // defaults are still all there.
        let plain = default_sans(Some("0.0.0.0".parse().unwrap()), &[]);
        assert!(!plain.iter().any(|s| s == "0.0.0.0"), "{plain:?}");
        for want in ["localhost", "127.0.0.1", "::1", host.as_str()] {
            assert!(plain.iter().any(|s| s == want), "{want}: {plain:?}");
        }
        assert!(default_sans(Some("::".parse().unwrap()), &[])
            .iter()
            .all(|s| s != "::"));
    }

    #[test]
    fn renewal_is_due_with_a_third_left() {
        let m = Served {
            not_before: 0,
            not_after: 900,
            sans: vec![],
            issuer: vec![],
        };
        assert_eq!(m.renew_at(), 600);
    }
}
