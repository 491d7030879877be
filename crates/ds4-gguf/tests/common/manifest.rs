//! JSON form of metadata values shared with the Python interop scripts
//! (tools/gen_gguf_fixtures.py, tools/check_gguf_interop.py):
//! `{"type": "u32", "value": 7}`, arrays as
//! `{"type": "array", "value": {"elem_type": "u32", "items": [...]}}` with
//! nested arrays' items in the same `{"elem_type", "items"}` form. f32 values
//! are written widened to f64 (exact), so both sides compare bit for bit.
#![allow(dead_code)]

use ds4_gguf::{MetaArray, MetaValue, StringArray, ValueType};
use serde_json::{Value, json};

pub fn value_to_json(v: &MetaValue) -> Value {
    let value = match v {
        MetaValue::U8(x) => json!(x),
        MetaValue::I8(x) => json!(x),
        MetaValue::U16(x) => json!(x),
        MetaValue::I16(x) => json!(x),
        MetaValue::U32(x) => json!(x),
        MetaValue::I32(x) => json!(x),
        MetaValue::F32(x) => json!(f64::from(*x)),
        MetaValue::Bool(x) => json!(x),
        MetaValue::String(x) => json!(x),
        MetaValue::Array(a) => array_to_json(a),
        MetaValue::U64(x) => json!(x),
        MetaValue::I64(x) => json!(x),
        MetaValue::F64(x) => json!(x),
    };
    json!({"type": v.value_type().name(), "value": value})
}

pub fn array_to_json(a: &MetaArray) -> Value {
    let items: Vec<Value> = match a {
        MetaArray::U8(v) => v.iter().map(|x| json!(x)).collect(),
        MetaArray::I8(v) => v.iter().map(|x| json!(x)).collect(),
        MetaArray::U16(v) => v.iter().map(|x| json!(x)).collect(),
        MetaArray::I16(v) => v.iter().map(|x| json!(x)).collect(),
        MetaArray::U32(v) => v.iter().map(|x| json!(x)).collect(),
        MetaArray::I32(v) => v.iter().map(|x| json!(x)).collect(),
        MetaArray::F32(v) => v.iter().map(|x| json!(f64::from(*x))).collect(),
        MetaArray::Bool(v) => v.iter().map(|x| json!(x)).collect(),
        MetaArray::String(v) => v.iter().map(|x| json!(x)).collect(),
        MetaArray::Array(v) => v.iter().map(array_to_json).collect(),
        MetaArray::U64(v) => v.iter().map(|x| json!(x)).collect(),
        MetaArray::I64(v) => v.iter().map(|x| json!(x)).collect(),
        MetaArray::F64(v) => v.iter().map(|x| json!(x)).collect(),
    };
    json!({"elem_type": a.elem_type().name(), "items": items})
}

fn int<T: TryFrom<i128>>(j: &Value) -> Result<T, String> {
    let n: i128 = if let Some(u) = j.as_u64() {
        u.into()
    } else if let Some(i) = j.as_i64() {
        i.into()
    } else {
        return Err(format!("not an integer: {j}"));
    };
    T::try_from(n).map_err(|_| format!("{n} out of range"))
}

fn float(j: &Value) -> Result<f64, String> {
    j.as_f64().ok_or_else(|| format!("not a number: {j}"))
}

fn string(j: &Value) -> Result<String, String> {
    j.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("not a string: {j}"))
}

fn boolean(j: &Value) -> Result<bool, String> {
    j.as_bool().ok_or_else(|| format!("not a bool: {j}"))
}

pub fn value_from_json(j: &Value) -> Result<MetaValue, String> {
    let ty = j["type"].as_str().ok_or("missing type")?;
    let v = &j["value"];
    Ok(
        match ValueType::from_name(ty).ok_or_else(|| format!("bad type {ty}"))? {
            ValueType::U8 => MetaValue::U8(int(v)?),
            ValueType::I8 => MetaValue::I8(int(v)?),
            ValueType::U16 => MetaValue::U16(int(v)?),
            ValueType::I16 => MetaValue::I16(int(v)?),
            ValueType::U32 => MetaValue::U32(int(v)?),
            ValueType::I32 => MetaValue::I32(int(v)?),
            ValueType::F32 => MetaValue::F32(float(v)? as f32),
            ValueType::Bool => MetaValue::Bool(boolean(v)?),
            ValueType::String => MetaValue::String(string(v)?),
            ValueType::Array => MetaValue::Array(array_from_json(v)?),
            ValueType::U64 => MetaValue::U64(int(v)?),
            ValueType::I64 => MetaValue::I64(int(v)?),
            ValueType::F64 => MetaValue::F64(float(v)?),
        },
    )
}

pub fn array_from_json(j: &Value) -> Result<MetaArray, String> {
    let ty = j["elem_type"].as_str().ok_or("missing elem_type")?;
    let items = j["items"].as_array().ok_or("missing items")?;
    fn all<T>(items: &[Value], f: impl Fn(&Value) -> Result<T, String>) -> Result<Vec<T>, String> {
        items.iter().map(f).collect()
    }
    Ok(
        match ValueType::from_name(ty).ok_or_else(|| format!("bad type {ty}"))? {
            ValueType::U8 => MetaArray::U8(all(items, int)?),
            ValueType::I8 => MetaArray::I8(all(items, int)?),
            ValueType::U16 => MetaArray::U16(all(items, int)?),
            ValueType::I16 => MetaArray::I16(all(items, int)?),
            ValueType::U32 => MetaArray::U32(all(items, int)?),
            ValueType::I32 => MetaArray::I32(all(items, int)?),
            ValueType::F32 => MetaArray::F32(all(items, |x| float(x).map(|f| f as f32))?),
            ValueType::Bool => MetaArray::Bool(all(items, boolean)?),
            ValueType::String => {
                MetaArray::String(all(items, string)?.into_iter().collect::<StringArray>())
            }
            ValueType::Array => MetaArray::Array(all(items, array_from_json)?),
            ValueType::U64 => MetaArray::U64(all(items, int)?),
            ValueType::I64 => MetaArray::I64(all(items, int)?),
            ValueType::F64 => MetaArray::F64(all(items, float)?),
        },
    )
}
