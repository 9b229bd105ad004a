//! SIGHUP: read the configuration again (the `--config` file, and the
//! flags and `BERTH_*` variables the server started with) and apply what
//! can change while serving: upstreams and their credentials, TTLs, the
//! allow lists, offline, host routing; users, groups, policies and the
//! token lifetime. Connections stay open; requests under way finish with
//! the settings they started with. A configuration that does not load is
//! logged and changes nothing. The listen address, the root, TLS flags,
//! limits and the default upstream take effect at the next start.

use std::sync::Arc;

use berth_auth::Auth;
use berth_cache::Cache;

use super::settings::Settings;
use super::ServeArgs;

/// What a reload may change.
pub(super) struct Reloadable {
    pub args: ServeArgs,
    pub cache: Cache,
    pub auth: Option<Arc<Auth>>,
}

impl Reloadable {
    /// Reload on every SIGHUP until the server stops.
    pub(super) async fn run(self) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(
                    "no SIGHUP handler ({e}): the configuration reloads only at restart"
                );
                return;
            }
        };
        while hup.recv().await.is_some() {
            match self.reload() {
                Ok(()) => tracing::info!("configuration reloaded"),
                Err(e) => {
                    tracing::error!("configuration not reloaded, the previous one stays: {e:#}")
                }
            }
        }
    }

    fn reload(&self) -> anyhow::Result<()> {
        let settings = Settings::resolve(self.args.clone())?;
        match (&self.auth, &settings.auth) {
            (Some(auth), Some(config)) => {
                for key in auth.reload(config)? {
                    tracing::warn!("[auth] {key} changed: it takes effect at the next start");
                }
            }
            (None, None) => {}
            _ => tracing::warn!(
                "access control was turned on or off: that takes effect at the next start"
            ),
        }
        // Last: nothing is half-applied when [auth] fails to load.
        self.cache.reload(settings.cache);
        Ok(())
    }
}
