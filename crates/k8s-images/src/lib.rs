//! Every image reference in Kubernetes YAML, found by walking each object
//! by its kind (never by pattern-matching text), so that a string that
//! merely looks like an image in an unrelated field is not reported.
//!
//! Covered: multi-document files and `List`s (`kubectl get -o yaml`, Helm
//! output); Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
//! ReplicationController, Job, CronJob, PodTemplate and any other kind with
//! a pod template at `spec.template` (Argo Rollouts, OpenKruise, ...):
//! `containers`, `initContainers`, `ephemeralContainers` and image volumes;
//! KubeVirt `VirtualMachine`, `VirtualMachineInstance`,
//! `VirtualMachineInstanceReplicaSet`, `VirtualMachinePool`
//! (`containerDisk.image`, `kernelBoot.container.image`, and their
//! `dataVolumeTemplates`); CDI `DataVolume`, `DataImportCron` and
//! `VolumeImportSource` (`registry.url: docker://...`).
#![forbid(unsafe_code)]

use berth_reference::ImageReference;
use serde::Deserialize;
use serde_norway::Value;

/// One image reference and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The reference as written (without a `docker://` prefix).
    pub image: String,
    pub kind: String,
    pub name: Option<String>,
    /// The field it came from, e.g. `spec.template.spec.containers[0].image`.
    pub field: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("YAML document {document}: {message}")]
    Yaml { document: usize, message: String },
}

/// Nesting of `List`s followed at most.
const MAX_DEPTH: usize = 16;

/// All image references in `text` (one or more YAML or JSON documents).
pub fn find_images(text: &str) -> Result<Vec<Found>, Error> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| Error::Yaml {
            document: i + 1,
            message: e.to_string(),
        })?;
        walk_object(&v, "", 0, &mut out);
    }
    Ok(out)
}

/// Docker's normalisation: `nginx` → `docker.io/library/nginx:latest`.
pub fn normalise(image: &str) -> Result<String, String> {
    image
        .parse::<ImageReference>()
        .map(|r| r.to_string())
        .map_err(|e| e.to_string())
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.as_mapping()?.get(*p)?;
    }
    Some(cur)
}

fn join(prefix: &str, rest: &str) -> String {
    if prefix.is_empty() {
        rest.to_string()
    } else {
        format!("{prefix}.{rest}")
    }
}

struct Ctx<'a> {
    kind: &'a str,
    name: Option<&'a str>,
}

impl Ctx<'_> {
    fn push(&self, out: &mut Vec<Found>, image: &Value, field: String) {
        if let Some(s) = image.as_str() {
            let s = s.trim();
            if !s.is_empty() {
                out.push(Found {
                    image: s.to_string(),
                    kind: self.kind.to_string(),
                    name: self.name.map(str::to_string),
                    field,
                });
            }
        }
    }
}

fn walk_object(v: &Value, at: &str, depth: usize, out: &mut Vec<Found>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(kind) = get(v, &["kind"]).and_then(Value::as_str) else {
        return;
    };
    let api = get(v, &["apiVersion"])
        .and_then(Value::as_str)
        .unwrap_or("");
    let ctx = Ctx {
        kind,
        name: get(v, &["metadata", "name"]).and_then(Value::as_str),
    };
    if let Some(items) = get(v, &["items"]).and_then(Value::as_sequence) {
        if kind == "List" || kind.ends_with("List") {
            for (i, item) in items.iter().enumerate() {
                walk_object(item, &join(at, &format!("items[{i}]")), depth + 1, out);
            }
            return;
        }
    }
    let kubevirt = api.starts_with("kubevirt.io/") || api.starts_with("pool.kubevirt.io/");
    let cdi = api.starts_with("cdi.kubevirt.io/");
    match kind {
        "Pod" => pod_spec(&ctx, get(v, &["spec"]), &join(at, "spec"), out),
        "CronJob" => pod_template(
            &ctx,
            get(v, &["spec", "jobTemplate", "spec", "template"]),
            &join(at, "spec.jobTemplate.spec.template"),
            out,
        ),
        "PodTemplate" => pod_template(&ctx, get(v, &["template"]), &join(at, "template"), out),
        "VirtualMachine" if kubevirt => vm_spec(&ctx, get(v, &["spec"]), &join(at, "spec"), out),
        "VirtualMachineInstance" if kubevirt => {
            vmi_spec(&ctx, get(v, &["spec"]), &join(at, "spec"), out)
        }
        "VirtualMachineInstanceReplicaSet" if kubevirt => vmi_spec(
            &ctx,
            get(v, &["spec", "template", "spec"]),
            &join(at, "spec.template.spec"),
            out,
        ),
        "VirtualMachinePool" if kubevirt => vm_spec(
            &ctx,
            get(v, &["spec", "virtualMachineTemplate", "spec"]),
            &join(at, "spec.virtualMachineTemplate.spec"),
            out,
        ),
        "DataVolume" | "VolumeImportSource" if cdi => cdi_source(
            &ctx,
            get(v, &["spec", "source"]),
            &join(at, "spec.source"),
            out,
        ),
        "DataImportCron" if cdi => cdi_source(
            &ctx,
            get(v, &["spec", "template", "spec", "source"]),
            &join(at, "spec.template.spec.source"),
            out,
        ),
        // Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController,
        // Job, and every other kind that carries a pod template there.
        _ => pod_template(
            &ctx,
            get(v, &["spec", "template"]),
            &join(at, "spec.template"),
            out,
        ),
    }
}

fn pod_template(ctx: &Ctx, t: Option<&Value>, at: &str, out: &mut Vec<Found>) {
    if let Some(t) = t {
        pod_spec(ctx, get(t, &["spec"]), &join(at, "spec"), out);
    }
}

fn pod_spec(ctx: &Ctx, spec: Option<&Value>, at: &str, out: &mut Vec<Found>) {
    let Some(spec) = spec else { return };
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        let Some(items) = get(spec, &[list]).and_then(Value::as_sequence) else {
            continue;
        };
        for (i, c) in items.iter().enumerate() {
            if let Some(img) = get(c, &["image"]) {
                ctx.push(out, img, join(at, &format!("{list}[{i}].image")));
            }
        }
    }
    if let Some(vols) = get(spec, &["volumes"]).and_then(Value::as_sequence) {
        for (i, vol) in vols.iter().enumerate() {
            if let Some(r) = get(vol, &["image", "reference"]) {
                ctx.push(out, r, join(at, &format!("volumes[{i}].image.reference")));
            }
        }
    }
}

fn vm_spec(ctx: &Ctx, spec: Option<&Value>, at: &str, out: &mut Vec<Found>) {
    let Some(spec) = spec else { return };
    vmi_spec(
        ctx,
        get(spec, &["template", "spec"]),
        &join(at, "template.spec"),
        out,
    );
    if let Some(dvts) = get(spec, &["dataVolumeTemplates"]).and_then(Value::as_sequence) {
        for (i, dvt) in dvts.iter().enumerate() {
            cdi_source(
                ctx,
                get(dvt, &["spec", "source"]),
                &join(at, &format!("dataVolumeTemplates[{i}].spec.source")),
                out,
            );
        }
    }
}

fn vmi_spec(ctx: &Ctx, spec: Option<&Value>, at: &str, out: &mut Vec<Found>) {
    let Some(spec) = spec else { return };
    if let Some(vols) = get(spec, &["volumes"]).and_then(Value::as_sequence) {
        for (i, vol) in vols.iter().enumerate() {
            if let Some(img) = get(vol, &["containerDisk", "image"]) {
                ctx.push(
                    out,
                    img,
                    join(at, &format!("volumes[{i}].containerDisk.image")),
                );
            }
        }
    }
    if let Some(img) = get(
        spec,
        &["domain", "firmware", "kernelBoot", "container", "image"],
    ) {
        ctx.push(
            out,
            img,
            join(at, "domain.firmware.kernelBoot.container.image"),
        );
    }
}

fn cdi_source(ctx: &Ctx, source: Option<&Value>, at: &str, out: &mut Vec<Found>) {
    let Some(url) = source
        .and_then(|s| get(s, &["registry", "url"]))
        .and_then(Value::as_str)
    else {
        return;
    };
    // CDI also imports from oci-archive:// URLs; only docker:// names an image.
    if let Some(image) = url.trim().strip_prefix("docker://") {
        ctx.push(
            out,
            &Value::String(image.to_string()),
            join(at, "registry.url"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(yaml: &str) -> Vec<String> {
        find_images(yaml)
            .unwrap()
            .into_iter()
            .map(|f| normalise(&f.image).unwrap())
            .collect()
    }

    #[test]
    fn workloads_lists_and_lookalikes() {
        let y = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, annotations: {image: "not/an:image"}}
spec:
  template:
    metadata: {labels: {image: evil}}
    spec:
      initContainers: [{name: i, image: busybox}]
      containers:
      - name: c
        image: nginx:1.27
        env: [{name: IMAGE, value: "redis:7"}]
---
# a comment-only document
---
apiVersion: v1
kind: List
items:
- apiVersion: batch/v1
  kind: CronJob
  metadata: {name: cj}
  spec:
    jobTemplate:
      spec:
        template:
          spec:
            containers: [{name: j, image: "quay.io/org/job@sha256:0123456789012345678901234567890123456789012345678901234567890123"}]
- apiVersion: v1
  kind: Pod
  metadata: {name: p}
  spec:
    containers: [{name: a, image: "localhost:5000/app"}]
    ephemeralContainers: [{name: dbg, image: "registry.k8s.io/debug:1"}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: cm}
  data: {image: "alpine:3"}
"#;
        assert_eq!(
            images(y),
            vec![
                "docker.io/library/busybox:latest",
                "docker.io/library/nginx:1.27",
                "quay.io/org/job@sha256:0123456789012345678901234567890123456789012345678901234567890123",
                "localhost:5000/app:latest",
                "registry.k8s.io/debug:1",
            ]
        );
    }

    #[test]
    fn kubevirt_and_cdi() {
        let y = r#"
apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {name: ubuntu-vm}
spec:
  template:
    spec:
      volumes:
      - containerDisk: {image: docker.io/exampleuser/ubuntu-vm:latest}
        name: containerdisk
  dataVolumeTemplates:
  - metadata: {name: dv}
    spec:
      source:
        registry:
          url: "docker://quay.io/containerdisks/fedora:40"
---
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: dv2}
spec:
  source:
    registry: {url: "docker://kubevirt/cirros-container-disk-demo"}
---
apiVersion: cdi.kubevirt.io/v1beta1
kind: DataVolume
metadata: {name: http}
spec:
  source:
    http: {url: "https://example.com/disk.img"}
---
apiVersion: vmoperator.vmware.com/v1alpha1
kind: VirtualMachine
metadata: {name: other}
spec: {imageName: "ubuntu:22.04"}
"#;
        assert_eq!(
            images(y),
            vec![
                "docker.io/exampleuser/ubuntu-vm:latest",
                "quay.io/containerdisks/fedora:40",
                "docker.io/kubevirt/cirros-container-disk-demo:latest",
            ]
        );
    }

    #[test]
    fn every_workload_kind() {
        let mut y = String::new();
        for kind in [
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "ReplicationController",
            "Job",
        ] {
            y.push_str(&format!(
                "---\napiVersion: apps/v1\nkind: {kind}\nmetadata: {{name: x}}\nspec:\n  template:\n    spec:\n      containers: [{{name: c, image: \"r.example/{}:1\"}}]\n",
                kind.to_lowercase()
            ));
        }
        y.push_str("---\napiVersion: v1\nkind: PodTemplate\nmetadata: {name: t}\ntemplate:\n  spec:\n    containers: [{name: c, image: r.example/podtemplate:1}]\n    volumes: [{name: v, image: {reference: r.example/artifact:1}}]\n");
        y.push_str("---\napiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: vmi}\nspec:\n  domain:\n    firmware:\n      kernelBoot:\n        container: {image: r.example/kernel:1}\n  volumes: [{name: d, containerDisk: {image: r.example/disk:1}}]\n");
        y.push_str("---\napiVersion: cdi.kubevirt.io/v1beta1\nkind: DataImportCron\nmetadata: {name: cron}\nspec:\n  template:\n    spec:\n      source:\n        registry: {url: \"docker://r.example/cron:1\"}\n");
        let found = find_images(&y).unwrap();
        let images: Vec<&str> = found.iter().map(|f| f.image.as_str()).collect();
        assert_eq!(
            images,
            [
                "r.example/statefulset:1",
                "r.example/daemonset:1",
                "r.example/replicaset:1",
                "r.example/replicationcontroller:1",
                "r.example/job:1",
                "r.example/podtemplate:1",
                "r.example/artifact:1",
                "r.example/disk:1",
                "r.example/kernel:1",
                "r.example/cron:1",
            ]
        );
        assert_eq!(found[0].kind, "StatefulSet");
        assert_eq!(found[0].name.as_deref(), Some("x"));
        assert_eq!(found[7].field, "spec.volumes[0].containerDisk.image");
    }

    #[test]
    fn bad_yaml_is_an_error() {
        assert!(find_images("kind: [unclosed").is_err());
    }
}
