use super::*;
use crate::api::apps::DeploymentStatus;
use crate::api::apps::DESIRED_REPLICAS_ANNOTATION;
use crate::api::meta::{ConditionStatus, IntOrString};
use crate::api::Object;
use crate::controllers::testing::{self, cluster, Harness};

fn json_of(d: &Deployment) -> Value {
    Object::Deployment(d.clone()).to_json()
}

/// A Deployment of `spec` replicas, generation `g`, with this status.
fn with_status(spec: i32, g: i64, st: DeploymentStatus) -> Value {
    let mut d = testing::deployment(
        "web",
        spec,
        "web:1",
        IntOrString::Int(1),
        IntOrString::Int(0),
    );
    d.metadata.generation = g;
    d.status = st;
    json_of(&d)
}

fn st(observed: i64, replicas: i32, updated: i32, available: i32) -> DeploymentStatus {
    DeploymentStatus {
        observed_generation: observed,
        replicas,
        updated_replicas: updated,
        ready_replicas: available,
        available_replicas: available,
        ..DeploymentStatus::default()
    }
}

#[test]
fn status_says_what_kubectl_says() {
    for (v, message, done) in [
        (
            with_status(5, 2, st(1, 5, 0, 5)),
            "Waiting for deployment spec update to be observed...\n",
            false,
        ),
        (
            with_status(5, 2, st(2, 6, 2, 4)),
            "Waiting for deployment \"web\" rollout to finish: 2 out of 5 new replicas have been updated...\n",
            false,
        ),
        (
            with_status(5, 2, st(2, 6, 5, 5)),
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...\n",
            false,
        ),
        (
            with_status(5, 2, st(2, 5, 5, 2)),
            "Waiting for deployment \"web\" rollout to finish: 2 of 5 updated replicas are available...\n",
            false,
        ),
        (
            with_status(5, 2, st(2, 5, 5, 5)),
            "deployment \"web\" successfully rolled out\n",
            true,
        ),
    ] {
        let s = status(&v, None).unwrap();
        assert_eq!((s.message.as_str(), s.done), (message, done));
    }
}

#[test]
fn status_fails_past_the_deadline_and_on_another_revision() {
    let mut s = st(2, 6, 2, 4);
    crate::api::apps::set_condition(
        &mut s.conditions,
        PROGRESSING,
        ConditionStatus::False,
        TIMED_OUT,
        "ReplicaSet \"web-x\" has timed out progressing.",
        Time(1),
    );
    let v = with_status(5, 2, s);
    let e = status(&v, None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "deployment \"web\" exceeded its progress deadline"
    );
    let mut v = with_status(5, 2, st(2, 5, 5, 5));
    v["metadata"]["annotations"] = json!({REVISION_ANNOTATION: "3"});
    assert!(status(&v, Some(3)).unwrap().done);
    assert_eq!(
        status(&v, Some(2)).unwrap_err().to_string(),
        "desired revision (2) is different from the running revision (3)"
    );
}

/// A Deployment rolled web:1 (change cause "first") -> web:2 ("second"),
/// settled; its JSON and ReplicaSets as the API serves them.
fn rolled() -> (Harness, Value, Vec<ReplicaSet>) {
    let mut h = cluster(2);
    let mut d = testing::deployment("web", 2, "web:1", IntOrString::Int(1), IntOrString::Int(0));
    d.metadata
        .annotations
        .insert(CHANGE_CAUSE_ANNOTATION.into(), "first".into());
    h.create(Object::Deployment(d));
    h.settle();
    h.update_deployment("web", |d| {
        d.spec.template.spec.containers[0].image = "web:2".into();
        d.metadata
            .annotations
            .insert(CHANGE_CAUSE_ANNOTATION.into(), "second".into());
    });
    h.settle();
    let (v, rss) = read(&h);
    (h, v, rss)
}

fn read(h: &Harness) -> (Value, Vec<ReplicaSet>) {
    let v = json_of(&h.deployment("web"));
    let all: Vec<Value> = h
        .cache()
        .replicasets()
        .map(|rs| Object::ReplicaSet((**rs).clone()).to_json())
        .collect();
    let rss = owned_replicasets(&v, &all).unwrap();
    (v, rss)
}

#[test]
fn history_lists_revisions_with_their_change_cause() {
    let (_h, _v, mut rss) = rolled();
    assert_eq!(
        history("web", &rss, None).unwrap(),
        "deployment.apps/web \nREVISION  CHANGE-CAUSE\n1         first\n2         second\n\n"
    );
    rss.iter_mut()
        .find(|rs| revision(rs) == 1)
        .unwrap()
        .metadata
        .annotations
        .remove(CHANGE_CAUSE_ANNOTATION);
    let t = history("web", &rss, None).unwrap();
    assert!(t.contains("\n1         <none>\n"), "{t}");
    let one = history("web", &rss, Some(2)).unwrap();
    assert!(
        one.starts_with("deployment.apps/web with revision #2\nPod Template:\n"),
        "{one}"
    );
    assert!(one.contains("Image:") && one.contains("web:2"), "{one}");
    assert!(one.contains("kubernetes.io/change-cause: second"), "{one}");
    assert!(one.contains("pod-template-hash="), "{one}");
    assert_eq!(
        history("web", &rss, Some(7)).unwrap_err().to_string(),
        "unable to find specified revision 7 in history (`outpostctl rollout history deployment/web` lists them)"
    );
    assert_eq!(
        history("web", &[], None).unwrap(),
        "deployment.apps/web \nNo rollout history found.\n"
    );
}

#[test]
fn undo_takes_the_previous_revision_back_without_its_hash() {
    let (mut h, v, rss) = rolled();
    let Undo::Apply(out) = undo(&v, &rss, 0).unwrap() else {
        panic!("an undo to apply")
    };
    let t = &out["spec"]["template"];
    assert_eq!(t["spec"]["containers"][0]["image"], "web:1");
    assert!(t["metadata"]["labels"].get(POD_TEMPLATE_HASH).is_none());
    assert_eq!(t["metadata"]["labels"]["app"], "web");
    let a = &out["metadata"]["annotations"];
    assert_eq!(a[CHANGE_CAUSE_ANNOTATION], "first");
    assert_eq!(a[REVISION_ANNOTATION], "2", "kept from the Deployment");
    assert!(a.get(DESIRED_REPLICAS_ANNOTATION).is_none());
    assert_eq!(
        out["metadata"]["resourceVersion"],
        v["metadata"]["resourceVersion"]
    );
    assert!(out.get("status").is_none());
    assert!(out["metadata"].get("uid").is_none());
    // What the API validates: accepted without a warning.
    let valid = crate::api::validate::validate(&out).unwrap();
    assert!(valid.warnings.is_empty(), "{:?}", valid.warnings);
    // Applied, the controller takes the first ReplicaSet back (no third).
    let Object::Deployment(d) = valid.object else {
        panic!("a Deployment")
    };
    h.update_deployment("web", |cur| {
        cur.spec.template = d.spec.template.clone();
        cur.metadata.annotations = d.metadata.annotations.clone();
    });
    h.settle();
    let (v, rss) = read(&h);
    assert_eq!(rss.len(), 2);
    assert_eq!(v["metadata"]["annotations"][REVISION_ANNOTATION], "3");
    let first = rss.iter().find(|rs| revision(rs) == 3).unwrap();
    assert_eq!(first.spec.template.spec.containers[0].image, "web:1");
    assert_eq!(first.spec.replicas, 2);
    // Undoing to the current template is skipped, as kubectl does.
    assert_eq!(
        undo(&v, &rss, 3).unwrap(),
        Undo::Skipped("skipped rollback (current template already matches revision 3)".into())
    );
    // The one before 3 is 2 now.
    let Undo::Apply(back) = undo(&v, &rss, 0).unwrap() else {
        panic!("an undo to apply")
    };
    assert_eq!(
        back["spec"]["template"]["spec"]["containers"][0]["image"],
        "web:2"
    );
}

#[test]
fn undo_says_why_it_cannot() {
    let (_h, v, rss) = rolled();
    assert_eq!(
        undo(&v, &rss, 9).unwrap_err().to_string(),
        "unable to find specified revision 9 in history (`outpostctl rollout history deployment/web` lists them)"
    );
    let only_current: Vec<ReplicaSet> =
        rss.iter().filter(|rs| revision(rs) == 2).cloned().collect();
    assert_eq!(
        undo(&v, &only_current, 0).unwrap_err().to_string(),
        "no rollout history found for deployment \"web\": it has had one revision only"
    );
    let mut paused = v.clone();
    paused["spec"]["paused"] = json!(true);
    assert!(matches!(
        undo(&paused, &rss, 0),
        Err(RolloutError::UndoPaused(_))
    ));
}

#[test]
fn restart_pause_and_resume_edit_the_spec_as_kubectl_does() {
    let (_h, v, _) = rolled();
    let now = Time(1_796_000_000_000);
    let r = restart(&v, now).unwrap();
    assert_eq!(
        r["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION],
        super::super::rfc3339(now.ms())
    );
    assert_eq!(r["spec"]["template"]["metadata"]["labels"]["app"], "web");
    let p = pause(&v, true).unwrap();
    assert_eq!(p["spec"]["paused"], true);
    assert_eq!(
        pause(&p, true).unwrap_err().to_string(),
        "deployments.apps \"web\" is already paused"
    );
    assert_eq!(
        restart(&p, now).unwrap_err().to_string(),
        "deployments.apps \"web\" can't restart paused deployment (run `outpostctl rollout resume deployment/web` first)"
    );
    let resumed = pause(&p, false).unwrap();
    assert!(resumed["spec"].get("paused").is_none());
    assert_eq!(
        pause(&v, false).unwrap_err().to_string(),
        "deployments.apps \"web\" is not paused"
    );
    for out in [r, p, resumed] {
        let valid = crate::api::validate::validate(&out).unwrap();
        assert!(valid.warnings.is_empty(), "{:?}", valid.warnings);
    }
}
