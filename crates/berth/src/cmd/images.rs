//! `berth images FILE|DIR|-...`: every image reference in Kubernetes YAML,
//! fully qualified and normalised, one per line (sorted, each once), ready
//! for `berth bundle create -` or `berth cache -f -`. Custom resources of
//! kinds it does not read that have image-like fields are warned about on
//! stderr (and listed under `unread` in JSON): their images may be missing.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use berth_k8s_images::{normalise, scan};
use clap::Args;
use serde::Serialize;

use super::imaging::{print_json, usage, OutputFormat};

/// Directory levels followed at most.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// YAML/JSON files, directories (searched for *.yaml, *.yml, *.json), or - for stdin.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Serialize)]
struct Source {
    file: String,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    field: String,
    written: String,
}

#[derive(Serialize)]
struct Entry {
    image: String,
    sources: Vec<Source>,
}

/// A resource whose images berth cannot read.
#[derive(Serialize)]
struct Unread {
    file: String,
    document: usize,
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    fields: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    images: Vec<Entry>,
    unread: Vec<Unread>,
}

fn collect(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, depth + 1, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(p);
        }
    }
    Ok(())
}

pub fn run(args: ImagesArgs) -> anyhow::Result<()> {
    let mut inputs: Vec<(String, String)> = Vec::new();
    for i in &args.inputs {
        if i == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading stdin")?;
            inputs.push(("-".into(), s));
            continue;
        }
        let p = Path::new(i);
        if p.is_dir() {
            let mut files = Vec::new();
            collect(p, 0, &mut files)?;
            for f in files {
                let s = std::fs::read_to_string(&f)
                    .with_context(|| format!("reading {}", f.display()))?;
                inputs.push((f.display().to_string(), s));
            }
        } else {
            let s = std::fs::read_to_string(p).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    anyhow::Error::new(super::imaging::Advised {
                        message: format!("{i}: no such file or directory"),
                        hint: "give YAML files, directories of them, or - for stdin".into(),
                        code: 3,
                    })
                } else {
                    anyhow::Error::new(e).context(format!("reading {i}"))
                }
            })?;
            inputs.push((i.clone(), s));
        }
    }
    let mut found: BTreeMap<String, Vec<Source>> = BTreeMap::new();
    let mut invalid = Vec::new();
    let mut unread = Vec::new();
    for (file, text) in &inputs {
        let scanned = scan(text).map_err(|e| usage(format!("{file}: {e}")))?;
        for u in scanned.unread {
            unread.push(Unread {
                file: file.clone(),
                document: u.document,
                kind: u.kind,
                name: u.name,
                fields: u.fields,
            });
        }
        for f in scanned.found {
            match normalise(&f.image) {
                Ok(n) => found.entry(n).or_default().push(Source {
                    file: file.clone(),
                    kind: f.kind,
                    name: f.name,
                    field: f.field,
                    written: f.image,
                }),
                Err(e) => invalid.push(format!(
                    "{file}: {} {}: {}: {e}",
                    f.kind,
                    f.name.unwrap_or_default(),
                    f.field
                )),
            }
        }
    }
    for u in &unread {
        eprintln!(
            "berth: warning: {} (document {}): {} {}has image-like fields berth does not read: {}",
            u.file,
            u.document,
            u.kind,
            u.name
                .as_ref()
                .map(|n| format!("{n:?} "))
                .unwrap_or_default(),
            u.fields.join(", ")
        );
    }
    match args.output {
        OutputFormat::Text => {
            for k in found.keys() {
                println!("{k}");
            }
        }
        OutputFormat::Json => {
            let images: Vec<Entry> = found
                .into_iter()
                .map(|(image, sources)| Entry { image, sources })
                .collect();
            print_json(&Report { images, unread })?;
        }
    }
    if !invalid.is_empty() {
        for i in &invalid {
            eprintln!("berth: invalid image reference in {i}");
        }
        return Err(usage(format!(
            "{} invalid image reference(s)",
            invalid.len()
        )));
    }
    Ok(())
}
