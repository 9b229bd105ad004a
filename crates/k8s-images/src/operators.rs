//! Images in common operators' custom resources, each read by its own
//! schema: Prometheus Operator (`spec.image`, and its pod-like container
//! lists), Argo Workflows (templates' `container`, `script`,
//! `containerSet`, init containers and sidecars), Tekton (steps, sidecars,
//! step templates, inline task and pipeline specs), Knative `Revision`
//! (Services and Configurations carry `spec.template` and are read as
//! workloads), and Clabernetes `Topology`, whose containerlab topology is a
//! YAML document inside a string.

use serde::Deserialize;
use serde_norway::Value;

use crate::{get, join, pod_spec, Ctx, Found};

/// Read `v` if its group and kind are an operator's this module knows.
/// `false` when they are not (the caller then treats it as a workload).
pub(crate) fn walk(ctx: &Ctx, api: &str, v: &Value, at: &str, out: &mut Vec<Found>) -> bool {
    let group = api.split('/').next().unwrap_or("");
    let spec = get(v, &["spec"]);
    let spec_at = join(at, "spec");
    match (group, ctx.kind) {
        (
            "monitoring.coreos.com",
            "Prometheus" | "PrometheusAgent" | "Alertmanager" | "ThanosRuler",
        ) => {
            if let Some(spec) = spec {
                if let Some(img) = get(spec, &["image"]) {
                    ctx.push(out, img, join(&spec_at, "image"));
                }
                // Extra containers merge into the operator's pod spec.
                pod_spec(ctx, Some(spec), &spec_at, out);
            }
        }
        ("argoproj.io", "Workflow" | "WorkflowTemplate" | "ClusterWorkflowTemplate") => {
            argo_spec(ctx, spec, &spec_at, out);
        }
        ("argoproj.io", "CronWorkflow") => argo_spec(
            ctx,
            spec.and_then(|s| get(s, &["workflowSpec"])),
            &join(&spec_at, "workflowSpec"),
            out,
        ),
        ("tekton.dev", "Task" | "ClusterTask") => task_spec(ctx, spec, &spec_at, out),
        ("tekton.dev", "TaskRun") => task_spec(
            ctx,
            spec.and_then(|s| get(s, &["taskSpec"])),
            &join(&spec_at, "taskSpec"),
            out,
        ),
        ("tekton.dev", "Pipeline") => pipeline_spec(ctx, spec, &spec_at, out),
        ("tekton.dev", "PipelineRun") => pipeline_spec(
            ctx,
            spec.and_then(|s| get(s, &["pipelineSpec"])),
            &join(&spec_at, "pipelineSpec"),
            out,
        ),
        ("serving.knative.dev", "Revision") => pod_spec(ctx, spec, &spec_at, out),
        ("clabernetes.containerlab.dev", "Topology") => topology(ctx, spec, &spec_at, out),
        _ => return false,
    }
    true
}

/// Each item of the sequence at `key` of `v`, with its field path.
fn each<'a>(v: &'a Value, key: &str, at: &str) -> Vec<(&'a Value, String)> {
    get(v, &[key])
        .and_then(Value::as_sequence)
        .map(|items| {
            items
                .iter()
                .enumerate()
                .map(|(i, item)| (item, join(at, &format!("{key}[{i}]"))))
                .collect()
        })
        .unwrap_or_default()
}

fn image_of(ctx: &Ctx, v: &Value, at: &str, out: &mut Vec<Found>) {
    if let Some(img) = get(v, &["image"]) {
        ctx.push(out, img, join(at, "image"));
    }
}

fn argo_spec(ctx: &Ctx, spec: Option<&Value>, at: &str, out: &mut Vec<Found>) {
    let Some(spec) = spec else { return };
    for (t, t_at) in each(spec, "templates", at) {
        for key in ["container", "script"] {
            if let Some(c) = get(t, &[key]) {
                image_of(ctx, c, &join(&t_at, key), out);
            }
        }
        if let Some(set) = get(t, &["containerSet"]) {
            for (c, c_at) in each(set, "containers", &join(&t_at, "containerSet")) {
                image_of(ctx, c, &c_at, out);
            }
        }
        for key in ["initContainers", "sidecars"] {
            for (c, c_at) in each(t, key, &t_at) {
                image_of(ctx, c, &c_at, out);
            }
        }
    }
}

fn task_spec(ctx: &Ctx, spec: Option<&Value>, at: &str, out: &mut Vec<Found>) {
    let Some(spec) = spec else { return };
    for key in ["steps", "sidecars"] {
        for (c, c_at) in each(spec, key, at) {
            image_of(ctx, c, &c_at, out);
        }
    }
    if let Some(t) = get(spec, &["stepTemplate"]) {
        image_of(ctx, t, &join(at, "stepTemplate"), out);
    }
}

fn pipeline_spec(ctx: &Ctx, spec: Option<&Value>, at: &str, out: &mut Vec<Found>) {
    let Some(spec) = spec else { return };
    for key in ["tasks", "finally"] {
        for (t, t_at) in each(spec, key, at) {
            task_spec(ctx, get(t, &["taskSpec"]), &join(&t_at, "taskSpec"), out);
        }
    }
}

/// The parts of a containerlab topology that name images.
#[derive(Deserialize)]
struct Clab {
    topology: Option<ClabTopology>,
}

#[derive(Deserialize)]
struct ClabTopology {
    defaults: Option<Value>,
    kinds: Option<serde_norway::Mapping>,
    nodes: Option<serde_norway::Mapping>,
}

fn topology(ctx: &Ctx, spec: Option<&Value>, at: &str, out: &mut Vec<Found>) {
    let Some(text) = spec
        .and_then(|s| get(s, &["definition", "containerlab"]))
        .and_then(Value::as_str)
    else {
        return;
    };
    let at = join(at, "definition.containerlab");
    // A document that does not parse has nothing to report; the caller's
    // warning for unread image fields does not apply to a string.
    let Ok(clab) = serde_norway::from_str::<Clab>(text) else {
        return;
    };
    let Some(t) = clab.topology else { return };
    if let Some(d) = &t.defaults {
        image_of(ctx, d, &format!("{at}:topology.defaults"), out);
    }
    for (section, map) in [("kinds", &t.kinds), ("nodes", &t.nodes)] {
        for (name, v) in map.iter().flatten() {
            let name = name.as_str().unwrap_or("?");
            image_of(ctx, v, &format!("{at}:topology.{section}.{name}"), out);
        }
    }
}
