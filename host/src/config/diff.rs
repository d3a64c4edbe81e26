//! What changed between two configs, as key paths: logged on reload, shown
//! in `GET /admin/config`, and printed by `switchyard check --against`.

use serde_json::Value;

/// One difference at a key path.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub key: String,
    pub kind: ChangeKind,
    /// The old value (absent when added).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// The new value (absent when removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<Value>| v.as_ref().map_or(String::new(), |v| v.to_string());
        match self.kind {
            ChangeKind::Added => write!(f, "+ {} = {}", self.key, show(&self.to)),
            ChangeKind::Removed => write!(f, "- {}", self.key),
            ChangeKind::Changed => write!(
                f,
                "~ {}: {} -> {}",
                self.key,
                show(&self.from),
                show(&self.to)
            ),
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Differences from `old` to `new`, depth first, in key order. Lists of equal
/// length are compared item by item; otherwise the whole list changed.
pub fn diff(old: &Value, new: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

fn walk(path: &str, old: &Value, new: &Value, out: &mut Vec<Change>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                match b.get(k) {
                    Some(vb) => walk(&join(path, k), va, vb, out),
                    None => out.push(Change {
                        key: join(path, k),
                        kind: ChangeKind::Removed,
                        from: Some(va.clone()),
                        to: None,
                    }),
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    out.push(Change {
                        key: join(path, k),
                        kind: ChangeKind::Added,
                        from: None,
                        to: Some(vb.clone()),
                    });
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if old != new => out.push(Change {
            key: path.to_string(),
            kind: ChangeKind::Changed,
            from: Some(old.clone()),
            to: Some(new.clone()),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reports_paths_of_changes() {
        let old = json!({"listen": {"address": "a"}, "upstreams": {"app": {"backends": [{"weight": 1}, {"weight": 1}]}}, "gone": 1});
        let new = json!({"listen": {"address": "a"}, "upstreams": {"app": {"backends": [{"weight": 1}, {"weight": 3}]}, "api": {}}});
        let lines: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "- gone",
                "~ upstreams.app.backends[1].weight: 1 -> 3",
                "+ upstreams.api = {}"
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
