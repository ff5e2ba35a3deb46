//! The Argo CD health checks shipped with the chart, run by a real Lua 5.1 interpreter (Argo CD
//! runs them in gopher-lua, a Lua 5.1) against sample objects.

use std::{path::Path, process::Command};

use serde_json::{Value, json};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/atrium/files/argocd");

/// `v` as a Lua table constructor (what Argo CD hands the script as `obj`).
fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_literal).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => {
            format!(
                "{{{}}}",
                m.iter().map(|(k, v)| format!("[{k:?}] = {}", lua_literal(v))).collect::<Vec<_>>().join(", ")
            )
        }
    }
}

/// Runs `script` with `obj` and returns (status, message).
fn health(script: &str, obj: Value) -> (String, String) {
    let lua = ["lua5.1", "lua"]
        .into_iter()
        .find(|b| Command::new(b).arg("-v").output().is_ok())
        .expect("a Lua 5.1 interpreter (make test installs lua5.1)");
    let path = Path::new(DIR).join(script);
    let program = format!(
        "obj = {}\nlocal hs = dofile({:?})\nio.write(hs.status, \"\\n\", hs.message or \"\")",
        lua_literal(&obj),
        path.to_str().unwrap()
    );
    let out = Command::new(lua).arg("-e").arg(program).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

fn with_ready(status: &str, reason: &str, generation: i64, observed: i64) -> Value {
    json!({
        "metadata": { "name": "x", "generation": generation },
        "status": {
            "observedGeneration": observed,
            "conditions": [
                { "type": "NamespaceReady", "status": "True", "reason": "Created", "message": "" },
                { "type": "Ready", "status": status, "reason": reason, "message": "details" }
            ]
        }
    })
}

#[test]
fn ready_kinds() {
    let cases = [
        (json!({ "metadata": { "name": "x", "generation": 1 } }), "Progressing"),
        (with_ready("True", "Ready", 2, 2), "Healthy"),
        (with_ready("True", "Ready", 3, 2), "Progressing"),
        (with_ready("False", "NameConflict", 1, 1), "Degraded"),
        (with_ready("False", "ModelNotFound", 1, 1), "Degraded"),
        (with_ready("False", "WaitingForReplicas", 1, 1), "Progressing"),
        (with_ready("False", "StoragePending", 1, 1), "Progressing"),
        (with_ready("Unknown", "Reconciling", 1, 1), "Progressing"),
    ];
    for (obj, want) in cases {
        let (got, message) = health("ready.lua", obj.clone());
        assert_eq!(got, want, "{obj}: {message}");
    }
    let (_, message) = health("ready.lua", with_ready("False", "NameConflict", 1, 1));
    assert_eq!(message, "NameConflict: details");
}

/// The reasons the controllers really report: the waiting ones are Progressing, those that need a
/// person Degraded.
#[test]
fn the_operators_reasons() {
    for reason in atrium::controller::WAITING_REASONS {
        let (got, message) = health("ready.lua", with_ready("False", reason, 1, 1));
        assert_eq!(got, "Progressing", "{reason} is a waiting reason of the operator: {message}");
    }
    let needs_a_person = [
        atrium::api::workspace::REASON_NAME_CONFLICT,
        atrium::api::workspace::REASON_NAMESPACE_CONFLICT,
        atrium::api::instance_type::REASON_UNSCHEDULABLE,
        atrium::api::model::REASON_DUPLICATE_VERSION,
        atrium::controller::model::resolve::REASON_MODEL_NOT_FOUND,
        atrium::controller::model::status::REASON_WORKSPACE_NOT_FOUND,
        atrium::controller::model_deployment::status::REASON_INSTANCE_TYPE_NOT_FOUND,
        atrium::controller::model_deployment::status::REASON_INVALID_SPEC,
        atrium::controller::model_deployment::status::REASON_INVALID_TRAFFIC,
        atrium::controller::model_deployment::status::REASON_NO_LIVE_TRAFFIC,
        atrium::controller::compute_cluster::status::REASON_INSTANCE_TYPE_NOT_FOUND,
        atrium::controller::compute_cluster::status::REASON_STANDBY_REFUSED,
        "CrashLoopBackOff",
        "ImagePullBackOff",
    ];
    for reason in needs_a_person {
        let (got, message) = health("ready.lua", with_ready("False", reason, 1, 1));
        assert_eq!(got, "Degraded", "{reason}: {message}");
    }
}

#[test]
fn training_runs() {
    let run = |status: Value| json!({ "metadata": { "name": "r", "generation": 1 }, "status": status });
    let cases = [
        (run(json!({ "phase": "Queued" })), "Suspended"),
        (run(json!({ "phase": "Starting" })), "Progressing"),
        (run(json!({ "phase": "Running" })), "Progressing"),
        (run(json!({ "phase": "Succeeded", "registeredModel": "iris:3" })), "Healthy"),
        (
            run(json!({ "phase": "Failed", "failure": { "reason": "Error", "message": "exit", "exitCode": 3 } })),
            "Degraded",
        ),
        (run(json!({ "phase": "Canceled" })), "Suspended"),
        (json!({ "metadata": { "name": "r" } }), "Progressing"),
    ];
    for (obj, want) in cases {
        let (got, message) = health("trainingrun.lua", obj.clone());
        assert_eq!(got, want, "{obj}: {message}");
    }
    let (_, m) = health(
        "trainingrun.lua",
        run(
            json!({ "phase": "Failed", "failure": { "reason": "OOMKilled", "message": "out of memory", "exitCode": 137 } }),
        ),
    );
    assert_eq!(m, "OOMKilled: out of memory (exit code 137)");
    let (_, m) = health("trainingrun.lua", run(json!({ "phase": "Succeeded", "registeredModel": "iris:3" })));
    assert_eq!(m, "Succeeded; registered model iris:3");
}
