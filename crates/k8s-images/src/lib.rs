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
//! `VolumeImportSource` (`registry.url: docker://...`); operators'
//! resources in [`operators`]. A resource of a kind read by none of these
//! that has image-like fields is reported in [`Scan::unread`], so that
//! images are never skipped silently.
#![forbid(unsafe_code)]

mod operators;

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

/// A resource of a kind berth does not read, with fields that look like
/// images (`image`, `*Image`): what it may be missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unread {
    /// The YAML document it is in (1-based).
    pub document: usize,
    pub kind: String,
    pub name: Option<String>,
    pub fields: Vec<String>,
}

/// What a scan found, and what it could not read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub found: Vec<Found>,
    pub unread: Vec<Unread>,
}

/// All image references in `text` (one or more YAML or JSON documents).
pub fn find_images(text: &str) -> Result<Vec<Found>, Error> {
    scan(text).map(|s| s.found)
}

/// [`find_images`], with the resources that may hold images it cannot read.
pub fn scan(text: &str) -> Result<Scan, Error> {
    let mut out = Scan::default();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| Error::Yaml {
            document: i + 1,
            message: e.to_string(),
        })?;
        let mut w = Walk {
            document: i + 1,
            out: &mut out,
        };
        walk_object(&v, "", 0, &mut w);
    }
    Ok(out)
}

/// A scan in progress through one document.
struct Walk<'a> {
    document: usize,
    out: &'a mut Scan,
}

/// Whether `apiVersion` names a custom resource's group: a dotted group
/// that is not one of Kubernetes' own (`*.k8s.io`; `v1`, `apps/v1`, ...).
fn is_custom(api: &str) -> bool {
    match api.split_once('/') {
        Some((group, _)) => group.contains('.') && !group.ends_with(".k8s.io"),
        None => false,
    }
}

/// Fields deeper than this are not searched for image-like names.
const MAX_FIELD_DEPTH: usize = 24;

/// Paths of fields named `image` or `...Image` (strings, or maps such as
/// Helm-style `{repository, tag}`), outside `metadata`.
fn image_like(v: &Value, at: &str, depth: usize, fields: &mut Vec<String>) {
    if depth > MAX_FIELD_DEPTH {
        return;
    }
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let Some(k) = k.as_str() else { continue };
                if depth == 0 && (k == "metadata" || k == "status") {
                    continue;
                }
                let path = join(at, k);
                let named = k == "image" || (k.ends_with("Image") && k.len() > 5);
                if named && (child.is_string() || child.is_mapping()) {
                    fields.push(path);
                } else {
                    image_like(child, &path, depth + 1, fields);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                image_like(child, &format!("{at}[{i}]"), depth + 1, fields);
            }
        }
        _ => {}
    }
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

fn walk_object(v: &Value, at: &str, depth: usize, w: &mut Walk) {
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
                walk_object(item, &join(at, &format!("items[{i}]")), depth + 1, w);
            }
            return;
        }
    }
    let out = &mut w.out.found;
    if operators::walk(&ctx, api, v, at, out) {
        return;
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
        _ => match get(v, &["spec", "template"]) {
            Some(t) => pod_template(&ctx, Some(t), &join(at, "spec.template"), out),
            // Kubernetes' own kinds without a pod template hold no images
            // (a ConfigMap's `data.image` is data); a custom resource may.
            None if is_custom(api) => {
                let mut fields = Vec::new();
                image_like(v, "", 0, &mut fields);
                if !fields.is_empty() {
                    w.out.unread.push(Unread {
                        document: w.document,
                        kind: kind.to_string(),
                        name: ctx.name.map(str::to_string),
                        fields: fields.iter().map(|f| join(at, f)).collect(),
                    });
                }
            }
            None => {}
        },
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

    fn fields(yaml: &str) -> Vec<(String, String)> {
        find_images(yaml)
            .unwrap()
            .into_iter()
            .map(|f| (f.field, f.image))
            .collect()
    }

    #[test]
    fn operators_resources() {
        let y = r#"
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {name: k8s}
spec:
  image: quay.io/prometheus/prometheus:v2.53.0
  containers: [{name: proxy, image: quay.io/brancz/kube-rbac-proxy:v0.18.0}]
---
apiVersion: argoproj.io/v1alpha1
kind: CronWorkflow
metadata: {name: nightly}
spec:
  workflowSpec:
    templates:
    - name: a
      container: {image: alpine:3.20}
      sidecars: [{name: s, image: nginx:1.27}]
    - name: b
      script: {image: python:3.12, source: "print(1)"}
    - name: c
      containerSet:
        containers: [{name: x, image: busybox:1.36}]
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {name: build}
spec:
  pipelineSpec:
    tasks:
    - name: t
      taskSpec:
        steps: [{name: s, image: gcr.io/kaniko-project/executor:v1.23.0}]
        stepTemplate: {image: ubuntu:24.04}
    finally:
    - name: f
      taskSpec:
        sidecars: [{name: d, image: docker:27-dind}]
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: hello}
spec:
  template:
    spec:
      containers: [{image: ghcr.io/knative/helloworld-go:latest}]
---
apiVersion: clabernetes.containerlab.dev/v1alpha1
kind: Topology
metadata: {name: private-images}
spec:
  definition:
    containerlab: |
      name: private
      topology:
        defaults: {image: ghcr.io/nokia/srlinux:24.3.1}
        kinds:
          linux: {image: alpine:3.20}
        nodes:
          srl1:
            kind: nokia_srlinux
            image: registry.example.com/nokia/srlinux:latest
          client: {kind: linux}
"#;
        let got = fields(y);
        let want = [
            ("spec.image", "quay.io/prometheus/prometheus:v2.53.0"),
            (
                "spec.containers[0].image",
                "quay.io/brancz/kube-rbac-proxy:v0.18.0",
            ),
            (
                "spec.workflowSpec.templates[0].container.image",
                "alpine:3.20",
            ),
            (
                "spec.workflowSpec.templates[0].sidecars[0].image",
                "nginx:1.27",
            ),
            ("spec.workflowSpec.templates[1].script.image", "python:3.12"),
            (
                "spec.workflowSpec.templates[2].containerSet.containers[0].image",
                "busybox:1.36",
            ),
            (
                "spec.pipelineSpec.tasks[0].taskSpec.steps[0].image",
                "gcr.io/kaniko-project/executor:v1.23.0",
            ),
            (
                "spec.pipelineSpec.tasks[0].taskSpec.stepTemplate.image",
                "ubuntu:24.04",
            ),
            (
                "spec.pipelineSpec.finally[0].taskSpec.sidecars[0].image",
                "docker:27-dind",
            ),
            (
                "spec.template.spec.containers[0].image",
                "ghcr.io/knative/helloworld-go:latest",
            ),
            (
                "spec.definition.containerlab:topology.defaults.image",
                "ghcr.io/nokia/srlinux:24.3.1",
            ),
            (
                "spec.definition.containerlab:topology.kinds.linux.image",
                "alpine:3.20",
            ),
            (
                "spec.definition.containerlab:topology.nodes.srl1.image",
                "registry.example.com/nokia/srlinux:latest",
            ),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(f, i)| (f.to_string(), i.to_string()))
            .collect();
        assert_eq!(got, want);
        assert!(scan(y).unwrap().unread.is_empty());
    }

    /// Kinds read by nothing are reported when they have image-like
    /// fields, never when they have none; a lookalike in metadata is not one.
    #[test]
    fn unread_kinds_with_image_fields_are_reported() {
        let y = r#"
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, annotations: {image: x}}
spec:
  image: {repository: example/widget, tag: "1.0"}
  helpers: [{sidecarImage: busybox:1.36}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data: {image: "not:a-field"}
---
apiVersion: v1
kind: List
items:
- {apiVersion: example.com/v1, kind: Gadget, spec: {image: a/b:1}}
"#;
        let s = scan(y).unwrap();
        assert!(s.found.is_empty());
        assert_eq!(
            s.unread,
            vec![
                Unread {
                    document: 1,
                    kind: "Widget".into(),
                    name: Some("w".into()),
                    fields: vec!["spec.image".into(), "spec.helpers[0].sidecarImage".into()],
                },
                Unread {
                    document: 3,
                    kind: "Gadget".into(),
                    name: None,
                    fields: vec!["items[0].spec.image".into()],
                },
            ]
        );
    }
}
