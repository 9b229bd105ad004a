//! Users from an htpasswd file: bcrypt entries only (`htpasswd -B` writes
//! `$2y$`), re-read when the file's modification time or size changes, with
//! successful verifications remembered for a short while.
//!
//! bcrypt is slow on purpose (milliseconds per check): it runs on tokio's
//! blocking pool, and a client sending Basic credentials with each of its
//! hundreds of requests pays it once per [`VERIFIED_TTL`]. The memo is keyed
//! by an HMAC-SHA-256, under a key drawn at start, of user and password —
//! never the password itself, and not a plain hash one could test guesses
//! against.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::AuthError;

/// How long a successful verification is remembered.
pub const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// How often at most the file's metadata is looked at.
const STAT_INTERVAL: Duration = Duration::from_secs(1);
/// Memo entries kept at most (oldest dropped first when full).
const MEMO_MAX: usize = 10_000;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The parsed file: user → bcrypt hash.
#[derive(Debug, Clone, Default)]
pub struct Entries {
    users: HashMap<String, String>,
}

impl Entries {
    /// Parse htpasswd text; `file` names the file in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Entries, AuthError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: String| AuthError::Htpasswd {
                file: file.to_path_buf(),
                line: n,
                why,
            };
            let Some((user, hash)) = line.split_once(':') else {
                return Err(bad("not of the form user:hash".into()));
            };
            if user.is_empty() {
                return Err(bad("empty user name".into()));
            }
            let kind = if hash.starts_with("$apr1$") {
                Some("MD5 ($apr1$)")
            } else if hash.starts_with("{SHA}") {
                Some("SHA-1 ({SHA})")
            } else if hash.starts_with("$1$") {
                Some("MD5-crypt ($1$)")
            } else if hash.starts_with("$5$") || hash.starts_with("$6$") {
                Some("SHA-crypt ($5$/$6$)")
            } else if !(hash.starts_with("$2y$")
                || hash.starts_with("$2b$")
                || hash.starts_with("$2a$"))
            {
                Some("crypt or plain text")
            } else {
                None
            };
            if let Some(kind) = kind {
                return Err(bad(format!(
                    "user {user:?} has a {kind} hash; only bcrypt is supported (create entries with `htpasswd -B`)"
                )));
            }
            if users.insert(user.to_string(), hash.to_string()).is_some() {
                return Err(bad(format!("user {user:?} appears twice")));
            }
        }
        Ok(Entries { users })
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// A short fingerprint of a user's current hash: changes when the
    /// password does (refresh tokens carry it, so a new password ends them).
    pub fn fingerprint(&self, user: &str) -> Option<String> {
        self.users.get(user).map(|h| {
            let d = <Sha256 as sha2::Digest>::digest(h.as_bytes());
            hex::encode(&d[..8])
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Result<Stamp, std::io::Error> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

struct State {
    entries: Arc<Entries>,
    stamp: Stamp,
    checked: Instant,
    memo: HashMap<[u8; 32], Instant>,
}

/// An htpasswd file kept current.
pub struct Htpasswd {
    path: PathBuf,
    memo_key: [u8; 32],
    /// bcrypt of a throw-away password at `htpasswd -B`'s default cost.
    dummy: String,
    state: Mutex<State>,
}

impl Htpasswd {
    /// Load the file; any unreadable or unsupported line is an error now.
    pub fn load(path: &Path) -> Result<Htpasswd, AuthError> {
        let io =
            |e: std::io::Error| AuthError::Io(format!("reading htpasswd {}", path.display()), e);
        let st = stamp(path).map_err(io)?;
        let text = std::fs::read_to_string(path).map_err(io)?;
        let entries = Entries::parse(&text, path)?;
        Ok(Htpasswd {
            path: path.to_path_buf(),
            memo_key: crate::random_bytes()?,
            dummy: bcrypt::hash("x", 5).unwrap_or_default(),
            state: Mutex::new(State {
                entries: Arc::new(entries),
                stamp: st,
                checked: Instant::now(),
                memo: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent data behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current entries, re-reading the file when it changed. A file that
    /// became unreadable or invalid is reported and the last good entries stay.
    pub fn entries(&self) -> Arc<Entries> {
        let mut st = self.lock();
        if st.checked.elapsed() >= STAT_INTERVAL {
            st.checked = Instant::now();
            match stamp(&self.path) {
                Ok(now) if now != st.stamp => {
                    let loaded = std::fs::read_to_string(&self.path)
                        .map_err(|e| {
                            AuthError::Io(format!("reading htpasswd {}", self.path.display()), e)
                        })
                        .and_then(|t| Entries::parse(&t, &self.path));
                    match loaded {
                        Ok(e) => {
                            tracing::info!(file = %self.path.display(), users = e.users.len(), "htpasswd reloaded");
                            st.entries = Arc::new(e);
                            st.stamp = now;
                            st.memo.clear();
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "htpasswd not reloaded; keeping the previous users");
                            st.stamp = now;
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(file = %self.path.display(), error = %e, "htpasswd unreadable; keeping the previous users")
                }
            }
        }
        st.entries.clone()
    }

    fn memo_id(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let mut mac = match HmacSha256::new_from_slice(&self.memo_key) {
            Ok(m) => m,
            // HMAC takes keys of any length.
            Err(_) => return [0; 32],
        };
        mac.update(&(user.len() as u64).to_le_bytes());
        mac.update(user.as_bytes());
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    /// Whether `password` is `user`'s.
    pub async fn verify(&self, user: &str, password: &[u8]) -> bool {
        let entries = self.entries();
        let Some(hash) = entries.users.get(user).cloned() else {
            // Spend about the same time as a real check, so timing does not
            // tell which user names exist.
            let dummy = self.dummy.clone();
            let _ = tokio::task::spawn_blocking(move || bcrypt::verify(b"x", &dummy)).await;
            return false;
        };
        let id = self.memo_id(user, password);
        {
            let mut st = self.lock();
            match st.memo.get(&id) {
                Some(t) if t.elapsed() < VERIFIED_TTL => return true,
                Some(_) => {
                    st.memo.remove(&id);
                }
                None => {}
            }
        }
        let password = password.to_vec();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if ok {
            let mut st = self.lock();
            if st.memo.len() >= MEMO_MAX {
                st.memo.retain(|_, t| t.elapsed() < VERIFIED_TTL);
                if st.memo.len() >= MEMO_MAX {
                    st.memo.clear();
                }
            }
            st.memo.insert(id, Instant::now());
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("htpasswd");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn unsupported_hashes_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = bcrypt::hash("pw", 4).unwrap();
        for (line, kind) in [
            ("bob:$apr1$abc$def", "$apr1$"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "{SHA}"),
            ("bob:abJnggxhB/yWI", "crypt"),
            // glibc crypt(3) hashes (`openssl passwd -1/-5/-6`, /etc/shadow):
            // bcrypt's `$2?$` prefix check must not let them through.
            ("bob:$1$abcdefgh$IQtUouv7y7Q9dRWkQEPCc.", "MD5-crypt ($1$)"),
            (
                "bob:$5$abcdefgh$ijtOJ//yvc/9bq1g0llFn9dB688BwBDRD90DlKKSKE1",
                "SHA-crypt ($5$/$6$)",
            ),
            (
                "bob:$6$abcdefgh$KQeXafAQAaOoKTevphVU215RvJdgzyfASRasIOuh12hO8u0r1bGW92ZnTmC9IjsiQ8VPiTXBiZF49dFL1U4wX/",
                "SHA-crypt ($5$/$6$)",
            ),
        ] {
            let p = write(dir.path(), &format!("# users\nalice:{good}\n\n{line}\n"));
            let e = Htpasswd::load(&p).err().unwrap().to_string();
            assert!(e.contains(&p.display().to_string()), "{e}");
            assert!(e.contains("line 4"), "{e}");
            assert!(e.contains(kind), "{e}");
            assert!(e.contains("only bcrypt"), "{e}");
        }
        let p = write(dir.path(), "no-colon\n");
        assert!(Htpasswd::load(&p).is_err());
    }

    #[tokio::test]
    async fn verifies_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let h1 = bcrypt::hash("secret", 4).unwrap();
        let p = write(dir.path(), &format!("alice:{h1}\n"));
        let h = Htpasswd::load(&p).unwrap();
        assert!(h.verify("alice", b"secret").await);
        assert!(h.verify("alice", b"secret").await, "memoised");
        assert!(!h.verify("alice", b"Secret").await);
        assert!(!h.verify("bob", b"secret").await);
        assert!(!h.verify("alice", &[0xff, 0xfe]).await);
        // A new password: the file changes size, the old password stops working.
        let h2 = bcrypt::hash("other", 5).unwrap();
        std::fs::write(&p, format!("alice:{h2}\nbob:{h1}\n")).unwrap();
        h.lock().checked = Instant::now() - STAT_INTERVAL;
        assert!(!h.verify("alice", b"secret").await);
        assert!(h.verify("alice", b"other").await);
        assert!(h.verify("bob", b"secret").await);
        // A broken file keeps the last good users.
        std::fs::write(&p, "alice:$apr1$x$y\n").unwrap();
        h.lock().checked = Instant::now() - STAT_INTERVAL;
        assert!(h.verify("bob", b"secret").await);
    }
}
