//! The JSON patch (RFC 6902) that turns the pod the API server sent into the injected pod.
//!
//! Object members are compared one by one. An array that only gained elements (the injector
//! puts its containers, init containers and volumes in front of or among the user's) becomes
//! `add` operations at the new elements' indices, so the patch names what the injector added
//! instead of rewriting every container of the pod; arrays of the same length are compared
//! element by element; any other change to an array replaces it whole.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

/// The operations that, applied to `before`, give `after`; none when they are equal.
pub fn diff(before: &Value, after: &Value) -> Patch {
    let mut operations = Vec::new();
    diff_at(before, after, &mut PointerBuf::new(), &mut operations);
    Patch(operations)
}

fn diff_at(before: &Value, after: &Value, path: &mut PointerBuf, ops: &mut Vec<PatchOperation>) {
    match (before, after) {
        (Value::Object(before), Value::Object(after)) => diff_objects(before, after, path, ops),
        (Value::Array(before), Value::Array(after)) => diff_arrays(before, after, path, ops),
        _ if before == after => {}
        _ => ops.push(replace(path, after)),
    }
}

fn diff_objects(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    path: &mut PointerBuf,
    ops: &mut Vec<PatchOperation>,
) {
    for (key, new) in after {
        path.push_back(key.as_str());
        match before.get(key) {
            Some(old) => diff_at(old, new, path, ops),
            None => ops.push(add(path, new)),
        }
        path.pop_back();
    }
    for key in before.keys().filter(|key| !after.contains_key(*key)) {
        path.push_back(key.as_str());
        ops.push(PatchOperation::Remove(RemoveOperation {
            path: path.clone(),
        }));
        path.pop_back();
    }
}

fn diff_arrays(
    before: &[Value],
    after: &[Value],
    path: &mut PointerBuf,
    ops: &mut Vec<PatchOperation>,
) {
    if before.len() == after.len() {
        for (index, (old, new)) in before.iter().zip(after).enumerate() {
            path.push_back(index);
            diff_at(old, new, path, ops);
            path.pop_back();
        }
    } else if is_subsequence(before, after) {
        // Walking `after` in order: once index `i` is handled, the patched array starts with
        // after[..=i] followed by the elements of `before` not yet matched, so an element that
        // is new goes in at its own index.
        let mut kept = before.iter().peekable();
        for (index, new) in after.iter().enumerate() {
            if kept.peek() == Some(&new) {
                kept.next();
            } else {
                path.push_back(index);
                ops.push(add(path, new));
                path.pop_back();
            }
        }
    } else {
        ops.push(replace(path, &Value::Array(after.to_vec())));
    }
}

/// Whether `short` is `long` with some elements left out (order kept).
fn is_subsequence(short: &[Value], long: &[Value]) -> bool {
    let mut remaining = long.iter();
    short
        .iter()
        .all(|wanted| remaining.any(|candidate| candidate == wanted))
}

fn add(path: &PointerBuf, value: &Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: path.clone(),
        value: value.clone(),
    })
}

fn replace(path: &PointerBuf, value: &Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path: path.clone(),
        value: value.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The patch applied to `before` must give `after` exactly.
    fn check(before: Value, after: Value) -> Value {
        let patch = diff(&before, &after);
        let mut patched = before.clone();
        json_patch::patch(&mut patched, &patch.0)
            .unwrap_or_else(|e| panic!("{patch:?} does not apply to {before}: {e}"));
        assert_eq!(patched, after, "patch {patch:?}");
        serde_json::to_value(&patch).expect("a patch serializes")
    }

    #[test]
    fn equal_documents_give_no_operations() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app"}]}});
        assert_eq!(check(pod.clone(), pod), json!([]));
    }

    #[test]
    fn containers_added_in_front_and_between_are_adds_at_their_index() {
        let before = json!({"spec": {"containers": [{"name": "app"}, {"name": "log"}]}});
        let after = json!({"spec": {"containers": [
            {"name": "weft-proxy"}, {"name": "app"}, {"name": "extra"}, {"name": "log"}, {"name": "tail"}
        ]}});
        assert_eq!(
            check(before, after),
            json!([
                {"op": "add", "path": "/spec/containers/0", "value": {"name": "weft-proxy"}},
                {"op": "add", "path": "/spec/containers/2", "value": {"name": "extra"}},
                {"op": "add", "path": "/spec/containers/4", "value": {"name": "tail"}},
            ])
        );
    }

    #[test]
    fn members_added_changed_and_removed() {
        let before =
            json!({"metadata": {"annotations": {"a": "1", "gone": "x"}, "labels": {"app": "web"}}});
        let after = json!({"metadata": {"annotations": {"a": "2", "weft.io/injected": "0.1.0"}, "labels": {"app": "web"}}});
        assert_eq!(
            check(before, after),
            json!([
                {"op": "replace", "path": "/metadata/annotations/a", "value": "2"},
                {"op": "add", "path": "/metadata/annotations/weft.io~1injected", "value": "0.1.0"},
                {"op": "remove", "path": "/metadata/annotations/gone"},
            ])
        );
    }

    #[test]
    fn same_length_arrays_are_compared_element_by_element() {
        let before = json!({"containers": [{"name": "app", "image": "a:1"}]});
        let after = json!({"containers": [{"name": "app", "image": "a:2"}]});
        assert_eq!(
            check(before, after),
            json!([{"op": "replace", "path": "/containers/0/image", "value": "a:2"}])
        );
    }

    #[test]
    fn an_array_that_lost_or_reordered_elements_is_replaced() {
        let before = json!({"list": [1, 2, 3]});
        assert_eq!(
            check(before.clone(), json!({"list": [3, 1]})),
            json!([{"op": "replace", "path": "/list", "value": [3, 1]}])
        );
        check(before.clone(), json!({"list": [0, 2, 3, 4]}));
        check(before, json!({"list": []}));
    }

    #[test]
    fn repeated_elements_and_type_changes() {
        check(json!([1, 1]), json!([1, 0, 1, 1]));
        check(json!({"a": [1]}), json!({"a": {"b": 1}}));
        check(json!({"a": null}), json!({"a": [null]}));
        check(json!("x"), json!({"y": 1}));
    }
}
