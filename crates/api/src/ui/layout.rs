//! The UI's page frame (header, navigation, who is signed in) and the small
//! pieces pages share: sizes, digests, times, pull commands.

use std::time::SystemTime;

use maud::{html, Markup, DOCTYPE};

use super::Viewer;

/// Which navigation entry is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Repositories,
    Cache,
}

/// A whole page: `title`, the navigation, `body`.
pub fn page(viewer: &Viewer, section: Section, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · berth" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                header.top {
                    a.brand href="/ui/" { "berth" }
                    nav {
                        a href="/ui/" aria-current=[(section == Section::Repositories).then_some("page")] { "Repositories" }
                        a href="/ui/cache" aria-current=[(section == Section::Cache).then_some("page")] { "Cache & storage" }
                    }
                    div.who {
                        @match viewer.user() {
                            Some(user) => { "Signed in as " strong #user { (user) } }
                            None if viewer.auth_on => { span #user { "anonymous" } " · " a href="/ui/login" { "Sign in" } }
                            None => { span #user { "no access control" } }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page with a heading and one sentence (errors, the login prompt).
pub fn message_page(title: &str, text: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · berth" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                header.top { a.brand href="/ui/" { "berth" } }
                main { h1 { (title) } p.message { (text) } p { a href="/ui/" { "Repositories" } } }
            }
        }
    }
}

pub use berth_lifecycle::human_bytes as bytes;

/// `sha256:0123456789ab`: the algorithm and 12 hex digits (the full digest
/// is in the element's title).
pub fn short_digest(digest: &str) -> Markup {
    let short = match digest.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", hex.get(..12).unwrap_or(hex)),
        None => digest.to_string(),
    };
    html! { code.digest title=(digest) { (short) } }
}

/// `3 min ago`.
pub fn ago(t: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86399 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

/// A percentage of `part` in `whole`, or a dash.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".to_string()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

/// How to pull `repo` at `reference` (`:tag` or `@digest`) through this
/// berth with docker, podman, containerd's ctr and crictl.
pub fn pull_commands(viewer: &Viewer, caption: &str, repo: &str, reference: &str) -> Markup {
    let image = format!("{}/{repo}{reference}", viewer.host);
    let plain = if viewer.tls { "" } else { " --plain-http" };
    let user = if viewer.auth_on {
        format!(" --user {}", viewer.user().unwrap_or("USER"))
    } else {
        String::new()
    };
    let creds = if viewer.auth_on {
        format!(" --creds {}", viewer.user().unwrap_or("USER"))
    } else {
        String::new()
    };
    let rows = [
        ("docker", format!("docker pull {image}")),
        (
            "podman",
            format!(
                "podman pull{} {image}",
                if viewer.tls {
                    ""
                } else {
                    " --tls-verify=false"
                }
            ),
        ),
        ("ctr", format!("ctr images pull{plain}{user} {image}")),
        ("crictl", format!("crictl pull{creds} {image}")),
    ];
    html! {
        table.pull {
            caption { (caption) }
            @for (tool, command) in &rows {
                tr { th scope="row" { (tool) } td { code.command { (command) } } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_digests_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
        let d = short_digest(&format!("sha256:{}", "ab".repeat(32))).into_string();
        assert!(d.contains(">sha256:abababababab<"), "{d}");
        assert_eq!(percent(1, 4), "25.0 %");
        assert_eq!(percent(1, 0), "–");
    }
}
