//! Plain JSON values in and out of an Automerge document.
//!
//! Every value of the view's schema is stored as nested Automerge maps, lists and
//! scalars mirroring its JSON form (see `docs/ARCHITECTURE.md`). Writing
//! *reconciles*: only scalars that differ are put and only keys that went away are
//! deleted, so a status change costs a few operations, not a rewrite.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value};
use serde_json::{Map, Number, Value as Json};

/// Reads the object or scalar at `obj[key]` as JSON (`None` if absent).
pub(crate) fn read<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<Json> {
    let (value, id) = doc.get(obj, key).ok()??;
    Some(to_json(doc, value, &id))
}

fn to_json<R: ReadDoc>(doc: &R, value: Value<'_>, id: &ObjId) -> Json {
    match value {
        Value::Object(ObjType::Map) | Value::Object(ObjType::Table) => {
            let mut m = Map::new();
            for key in doc.keys(id) {
                if let Some(v) = read(doc, id, &key) {
                    m.insert(key, v);
                }
            }
            Json::Object(m)
        }
        Value::Object(ObjType::List) => {
            let len = doc.length(id);
            let items = (0..len)
                .filter_map(|i| {
                    let (v, vid) = doc.get(id, i).ok()??;
                    Some(to_json(doc, v, &vid))
                })
                .collect();
            Json::Array(items)
        }
        Value::Object(ObjType::Text) => Json::String(doc.text(id).unwrap_or_default()),
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Json::String(s.to_string()),
            ScalarValue::Uint(u) => Json::Number((*u).into()),
            ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Json::Number((*i).into()),
            ScalarValue::F64(f) => Number::from_f64(*f).map(Json::Number).unwrap_or(Json::Null),
            ScalarValue::Boolean(b) => Json::Bool(*b),
            _ => Json::Null,
        },
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
pub(crate) fn reconcile<T: Transactable + ReadDoc>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Json,
    keep: &dyn Fn(&[String]) -> bool,
) -> Result<(), automerge::AutomergeError> {
    reconcile_at(tx, obj, key, value, keep, &mut Vec::new())
}

fn reconcile_at<T: Transactable + ReadDoc>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Json,
    keep: &dyn Fn(&[String]) -> bool,
    path: &mut Vec<String>,
) -> Result<(), automerge::AutomergeError> {
    match value {
        Json::Object(m) => {
            let existing = match tx.get(obj, key)? {
                Some((Value::Object(ObjType::Map), id)) => id,
                _ => tx.put_object(obj, key, ObjType::Map)?,
            };
            let stale: Vec<String> = tx.keys(&existing).filter(|k| !m.contains_key(k)).collect();
            for k in stale {
                path.push(k.clone());
                let skip = keep(path);
                path.pop();
                if !skip {
                    tx.delete(&existing, k.as_str())?;
                }
            }
            for (k, v) in m {
                path.push(k.clone());
                if !keep(path) {
                    reconcile_at(tx, &existing, k, v, keep, path)?;
                }
                path.pop();
            }
        }
        Json::Array(items) => {
            let same = read(tx, obj, key).is_some_and(|cur| cur == *value);
            if !same {
                let list = tx.put_object(obj, key, ObjType::List)?;
                for (i, item) in items.iter().enumerate() {
                    insert(tx, &list, i, item)?;
                }
            }
        }
        v => {
            let s = scalar(v).unwrap_or(ScalarValue::Null);
            let same = match tx.get(obj, key)? {
                Some((Value::Scalar(cur), _)) => *cur == s,
                _ => false,
            };
            if !same {
                tx.put(obj, key, s)?;
            }
        }
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
