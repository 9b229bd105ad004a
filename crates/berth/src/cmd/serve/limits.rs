//! `[limits]` in `berth serve`'s configuration file: timeouts, connection
//! limits and the memory budget for what clients hold (see
//! `crate::listen::limits` for what each means and its default).

use serde::Deserialize;

use super::settings::{parse_duration, parse_size};
use crate::listen::limits::{connections_for, raise_fd_limit};
use crate::listen::Limits;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileLimits {
    header_timeout: Option<String>,
    idle_timeout: Option<String>,
    send_timeout: Option<String>,
    body_timeout: Option<String>,
    shutdown_grace: Option<String>,
    /// A number, or `auto` (the open-file limit less a reserve).
    max_connections: Option<toml::Value>,
    max_connections_per_client: Option<usize>,
    max_requests_per_client: Option<u32>,
    /// Bytes of blob read-ahead and upload buffers all clients share.
    memory_budget: Option<String>,
    /// Bytes of that budget each open connection holds.
    connection_memory: Option<String>,
}

/// The limits in force: the file's over the defaults, the memory budget if
/// set, and warnings to log once logging is up. Raises the open-file limit
/// first, since the connection limit is derived from it.
pub(super) fn resolve(
    file: Option<&FileLimits>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(Limits, Option<u64>)> {
    let (fd_limit, warning) = raise_fd_limit();
    warnings.extend(warning);
    let fits = connections_for(fd_limit);
    let mut l = Limits {
        max_connections: fits,
        ..Limits::default()
    };
    let Some(f) = file else {
        return Ok((l, None));
    };
    let d = |key: &str, v: &Option<String>, slot: &mut std::time::Duration| -> anyhow::Result<()> {
        if let Some(s) = v {
            let value = parse_duration(&format!("limits.{key}"), s)?;
            anyhow::ensure!(!value.is_zero(), "limits.{key}: must be above zero");
            *slot = value;
        }
        Ok(())
    };
    d("header_timeout", &f.header_timeout, &mut l.header_timeout)?;
    d("idle_timeout", &f.idle_timeout, &mut l.idle_timeout)?;
    d("send_timeout", &f.send_timeout, &mut l.send_timeout)?;
    d("body_timeout", &f.body_timeout, &mut l.body_timeout)?;
    d("shutdown_grace", &f.shutdown_grace, &mut l.shutdown_grace)?;
    match &f.max_connections {
        None => {}
        Some(toml::Value::String(s)) if s == "auto" => {}
        Some(toml::Value::Integer(n)) if *n > 0 => {
            let n = *n as usize;
            if n > fits {
                warnings.push(format!(
                    "limits.max_connections = {n} leaves too few of the {fd_limit} file \
                     descriptors for storage; using {fits}"
                ));
            }
            l.max_connections = n.min(fits);
        }
        Some(other) => {
            anyhow::bail!("limits.max_connections: {other} is not a positive number or \"auto\"")
        }
    }
    if let Some(n) = f.max_connections_per_client {
        anyhow::ensure!(
            n > 0,
            "limits.max_connections_per_client: must be above zero"
        );
        l.max_connections_per_client = Some(n);
    }
    if let Some(n) = f.max_requests_per_client {
        anyhow::ensure!(n > 0, "limits.max_requests_per_client: must be above zero");
        l.max_requests_per_client = Some(n);
    }
    if let Some(s) = &f.connection_memory {
        let n = parse_size(s).ok_or_else(|| {
            anyhow::anyhow!("limits.connection_memory: {s:?} is not a size like 32KiB")
        })?;
        anyhow::ensure!(n > 0, "limits.connection_memory: must be above zero");
        l.connection_memory = usize::try_from(n).unwrap_or(usize::MAX);
    }
    let budget = match &f.memory_budget {
        None => None,
        Some(s) => Some(parse_size(s).ok_or_else(|| {
            anyhow::anyhow!("limits.memory_budget: {s:?} is not a size like 256MiB")
        })?),
    };
    Ok((l, budget))
}
