//! Plain JSON values in and out of an Automerge document.
//!
//! Every value of the view's schema is stored as nested Automerge maps, lists and
//! scalars mirroring its JSON form (see `docs/ARCHITECTURE.md`). Writing
//! *reconciles*: only scalars that differ are put and only keys that went away are
//! deleted, so a status change costs a few operations, not a rewrite.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value, hydrate};
use serde_json::{Number, Value as Json};

/// Reads the object or scalar at `obj[key]` as JSON (`None` if absent).
///
/// Objects are hydrated in one pass over their operations, not key by key: a
/// lookup per key costs a seek in Automerge's columnar op set each, which made
/// reading a workload record dominate every view operation.
pub(crate) fn read<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<Json> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => Some(scalar_json(&s)),
        (Value::Object(_), id) => doc.hydrate(&id, None).ok().map(|v| hydrated(&v)),
    }
}

fn hydrated(value: &hydrate::Value) -> Json {
    match value {
        hydrate::Value::Scalar(s) => scalar_json(s),
        hydrate::Value::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), hydrated(&v.value)))
                .collect(),
        ),
        hydrate::Value::List(l) => Json::Array(l.iter().map(|v| hydrated(&v.value)).collect()),
        hydrate::Value::Text(t) => Json::String(t.to_string()),
    }
}

fn scalar_json(s: &ScalarValue) -> Json {
    match s {
        ScalarValue::Str(s) => Json::String(s.to_string()),
        ScalarValue::Uint(u) => Json::Number((*u).into()),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Json::Number((*i).into()),
        ScalarValue::F64(f) => Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
        ScalarValue::Boolean(b) => Json::Bool(*b),
        _ => Json::Null,
    }
}

fn scalar(v: &Json) -> Option<ScalarValue> {
    Some(match v {
        Json::Null => ScalarValue::Null,
        Json::Bool(b) => ScalarValue::Boolean(*b),
        Json::String(s) => ScalarValue::Str(s.as_str().into()),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        Json::Array(_) | Json::Object(_) => return None,
    })
}

/// Makes `obj[key]` equal to `value`, touching only what differs. Keys for which
/// `keep(path)` is true (paths relative to `obj[key]`) are left alone in maps:
/// neither written nor deleted (another party owns them).
///
/// The current value is hydrated once and compared in memory, so the document is
/// only asked about the parts that differ.
pub(crate) fn reconcile<T: Transactable + ReadDoc>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Json,
    keep: &dyn Fn(&[String]) -> bool,
) -> Result<(), automerge::AutomergeError> {
    let current = read(tx, obj, key);
    reconcile_at(tx, obj, key, value, current.as_ref(), keep, &mut Vec::new())
}

fn reconcile_at<T: Transactable + ReadDoc>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Json,
    current: Option<&Json>,
    keep: &dyn Fn(&[String]) -> bool,
    path: &mut Vec<String>,
) -> Result<(), automerge::AutomergeError> {
    if current == Some(value) {
        return Ok(());
    }
    match value {
        Json::Object(m) => {
            let (existing, current) = match (tx.get(obj, key)?, current) {
                (Some((Value::Object(ObjType::Map), id)), Some(Json::Object(cur))) => {
                    (id, Some(cur))
                }
                _ => (tx.put_object(obj, key, ObjType::Map)?, None),
            };
            if let Some(cur) = current {
                for k in cur.keys().filter(|k| !m.contains_key(*k)) {
                    path.push(k.clone());
                    let skip = keep(path);
                    path.pop();
                    if !skip {
                        tx.delete(&existing, k.as_str())?;
                    }
                }
            }
            for (k, v) in m {
                path.push(k.clone());
                if !keep(path) {
                    let cur = current.and_then(|c| c.get(k));
                    reconcile_at(tx, &existing, k, v, cur, keep, path)?;
                }
                path.pop();
            }
        }
        Json::Array(items) => {
            let list = tx.put_object(obj, key, ObjType::List)?;
            for (i, item) in items.iter().enumerate() {
                insert(tx, &list, i, item)?;
            }
        }
        v => tx.put(obj, key, scalar(v).unwrap_or(ScalarValue::Null))?,
    }
    Ok(())
}

fn insert<T: Transactable>(
    tx: &mut T,
    list: &ObjId,
    index: usize,
    value: &Json,
) -> Result<(), automerge::AutomergeError> {
    match value {
        Json::Object(m) => {
            let id = tx.insert_object(list, index, ObjType::Map)?;
            for (k, v) in m {
                put_new(tx, &id, k, v)?;
            }
        }
        Json::Array(items) => {
            let id = tx.insert_object(list, index, ObjType::List)?;
            for (i, item) in items.iter().enumerate() {
                insert(tx, &id, i, item)?;
            }
        }
        v => tx.insert(list, index, scalar(v).unwrap_or(ScalarValue::Null))?,
    }
    Ok(())
}

fn put_new<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Json,
) -> Result<(), automerge::AutomergeError> {
    match value {
        Json::Object(m) => {
            let id = tx.put_object(obj, key, ObjType::Map)?;
            for (k, v) in m {
                put_new(tx, &id, k, v)?;
            }
        }
        Json::Array(items) => {
            let id = tx.put_object(obj, key, ObjType::List)?;
            for (i, item) in items.iter().enumerate() {
                insert(tx, &id, i, item)?;
            }
        }
        v => tx.put(obj, key, scalar(v).unwrap_or(ScalarValue::Null))?,
    }
    Ok(())
}
