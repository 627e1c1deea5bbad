//! The admission decision (pure): what to answer to one AdmissionReview.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::dapr::Component;
use crate::validate::{ObjectCheck, check_object};

/// Answers one AdmissionReview (the request body): the review to send back.
pub fn review(body: &[u8], now_unix: i64) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<DynamicObject> =
        match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
            .map_err(|e| e.to_string())
            .and_then(|r| r.try_into().map_err(|e| format!("{e}")))
        {
            Ok(request) => request,
            Err(e) => {
                return AdmissionResponse::invalid(format!("not an AdmissionReview: {e}"))
                    .into_review();
            }
        };
    decide(&request, now_unix).into_review()
}

/// Whether to admit one request.
///
/// Only CREATE and UPDATE of `dapr.io` Components of type `state.jetstream` are looked at;
/// anything else (other kinds, other types, DELETE) is allowed. A Component is refused when the
/// checks find a problem only a change of the manifest can fix; on UPDATE, only when the change
/// brings a problem the object did not have, so that a Component that was already broken can
/// still be relabelled, fixed one problem at a time, deleted (its finalizer removed), and carry
/// the operator's own status annotations.
pub fn decide(request: &AdmissionRequest<DynamicObject>, now_unix: i64) -> AdmissionResponse {
    let allow = AdmissionResponse::from(request);
    if !matches!(request.operation, Operation::Create | Operation::Update)
        || request.kind.group != <Component as k8s_openapi::Resource>::GROUP
        || request.kind.kind != <Component as k8s_openapi::Resource>::KIND
    {
        return allow;
    }
    let Some(object) = &request.object else {
        return allow;
    };
    if object.metadata.deletion_timestamp.is_some() {
        // Being deleted: only finalizers and metadata can change, and refusing would keep the
        // Component (and its deletion) stuck.
        return allow;
    }
    let problems = problems_of(object, now_unix);
    let old = request
        .old_object
        .as_ref()
        .map(|old| problems_of(old, now_unix))
        .unwrap_or_default();
    let new: Vec<&(String, String)> = problems.iter().filter(|p| !old.contains(p)).collect();
    if new.is_empty() {
        return allow;
    }
    let mut message = String::from(if problems.len() == 1 {
        "this state.jetstream Component has a problem the operator would report: "
    } else {
        "this state.jetstream Component has problems the operator would report: "
    });
    for (i, (reason, text)) in problems.iter().enumerate() {
        if i > 0 {
            message.push_str("; ");
        }
        message.push_str(reason);
        message.push_str(": ");
        message.push_str(text);
    }
    allow.deny(message)
}

/// The permanent problems `(reason, message)` of an object, in the reconciler's order.
fn problems_of(object: &DynamicObject, now_unix: i64) -> Vec<(String, String)> {
    let Ok(value) = serde_json::to_value(object) else {
        return Vec::new();
    };
    match check_object(&value, now_unix) {
        ObjectCheck::Checked(findings) => findings
            .permanent_problems()
            .map(|p| (p.reason.clone(), p.message.clone()))
            .collect(),
        // Allowed on purpose: the API server has already validated the object against Dapr's
        // CRD schema, so what our lenient model cannot read is a gap of the operator, not a
        // mistake of the user; the operator reports (or skips) it, and refusing it here would
        // block Dapr on the operator's own shortcoming.
        ObjectCheck::Unreadable(_) => Vec::new(),
        ObjectCheck::NotOurs => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    fn component(bucket: &str, annotations: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "statestore", "namespace": "shop", "annotations": annotations},
            "spec": {"type": "state.jetstream", "version": "v1", "metadata": [
                {"name": "natsURL", "value": "nats://nats:4222"},
                {"name": "bucket", "value": bucket},
            ]},
        })
    }

    fn request(
        operation: &str,
        object: Option<serde_json::Value>,
        old: Option<serde_json::Value>,
    ) -> Vec<u8> {
        let kind = object
            .as_ref()
            .or(old.as_ref())
            .and_then(|o| o["kind"].as_str())
            .unwrap_or("Component")
            .to_owned();
        let group = if kind == "Component" { "dapr.io" } else { "" };
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": group, "version": "v1alpha1", "kind": kind},
                "resource": {"group": group, "version": "v1alpha1", "resource": "components"},
                "name": "statestore",
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": "admin"},
                "object": object,
                "oldObject": old,
                "dryRun": false,
            }
        }))
        .expect("json")
    }

    fn answer(body: &[u8]) -> AdmissionResponse {
        let review = review(body, NOW);
        assert_eq!(review.types.api_version, "admission.k8s.io/v1");
        assert_eq!(review.types.kind, "AdmissionReview");
        review.response.expect("a response")
    }

    #[test]
    fn a_good_component_is_allowed_with_its_uid() {
        let r = answer(&request(
            "CREATE",
            Some(component("orders", serde_json::json!({}))),
            None,
        ));
        assert!(r.allowed, "{r:?}");
        assert_eq!(r.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    }

    #[test]
    fn a_bad_component_is_refused_with_the_operators_reasons_in_its_order() {
        let bad = component("a.b", serde_json::json!({"jetstreamkv.io/storage": "ssd"}));
        let r = answer(&request("CREATE", Some(bad), None));
        assert!(!r.allowed);
        let message = &r.result.message;
        let bucket = message.find("InvalidBucketName: bucket name \"a.b\"");
        let storage = message.find("InvalidAnnotation: annotation jetstreamkv.io/storage");
        assert!(
            bucket.is_some() && storage.is_some(),
            "both problems in {message}"
        );
        // The settings come before the store configuration, as in the reconciler.
        assert!(storage < bucket, "{message}");
    }

    #[test]
    fn secrets_are_never_in_the_message() {
        let mut c = component("orders", serde_json::json!({}));
        c["spec"]["metadata"][0]["value"] = "http://user:hunter2@nats:4222".into();
        let r = answer(&request("CREATE", Some(c), None));
        assert!(!r.allowed);
        assert!(r.result.message.contains("InvalidNatsURL"), "{r:?}");
        assert!(!r.result.message.contains("hunter2"), "{r:?}");
    }

    #[test]
    fn values_from_secrets_are_not_problems() {
        let mut c = component("orders", serde_json::json!({}));
        c["spec"]["metadata"][0] =
            serde_json::json!({"name": "natsURL", "secretKeyRef": {"name": "nats", "key": "url"}});
        let r = answer(&request("CREATE", Some(c), None));
        assert!(r.allowed, "{r:?}");
    }

    #[test]
    fn other_types_kinds_and_deletes_are_allowed() {
        let mut redis = component("a.b", serde_json::json!({}));
        redis["spec"]["type"] = "state.redis".into();
        assert!(answer(&request("CREATE", Some(redis), None)).allowed);
        let config_map = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"bucket": "a.b"}});
        assert!(answer(&request("CREATE", Some(config_map), None)).allowed);
        let bad = component("a.b", serde_json::json!({}));
        assert!(answer(&request("DELETE", None, Some(bad))).allowed);
    }

    #[test]
    fn an_unreadable_component_is_left_to_the_operator() {
        let mut c = component("orders", serde_json::json!({}));
        c["spec"]["metadata"] = serde_json::json!({"natsURL": "x"});
        assert!(answer(&request("CREATE", Some(c), None)).allowed);
    }

    #[test]
    fn updates_are_refused_only_for_new_problems() {
        let broken = component("a.b", serde_json::json!({}));
        let mut relabelled = broken.clone();
        relabelled["metadata"]["labels"] = serde_json::json!({"team": "shop"});
        relabelled["metadata"]["annotations"] =
            serde_json::json!({"jetstreamkv.io/ready": "false"});
        let r = answer(&request("UPDATE", Some(relabelled), Some(broken.clone())));
        assert!(
            r.allowed,
            "metadata of a broken Component can change: {r:?}"
        );

        let worse = component("a.c", serde_json::json!({}));
        let r = answer(&request("UPDATE", Some(worse), Some(broken.clone())));
        assert!(!r.allowed, "a different bad bucket is a new problem");

        let good = component("orders", serde_json::json!({}));
        let r = answer(&request("UPDATE", Some(broken.clone()), Some(good)));
        assert!(!r.allowed, "breaking a good Component is refused");

        let mut deleting = broken.clone();
        deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        let r = answer(&request("UPDATE", Some(deleting), Some(broken)));
        assert!(
            r.allowed,
            "a Component being deleted can lose its finalizer"
        );
    }

    #[test]
    fn garbage_gets_an_invalid_response() {
        let r = answer(b"{not json");
        assert!(!r.allowed);
        assert!(r.result.message.contains("not an AdmissionReview"), "{r:?}");
    }
}
