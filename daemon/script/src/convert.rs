//! Lua ↔ JSON conversion with bounds, and without fractional numbers.
//!
//! Why not `mlua::LuaSerdeExt::from_value`/`to_value` directly: mlua's serde walk recurses with
//! no depth limit (a flow can build `t = {t}` 100 000 times within its memory limit and overflow
//! the Rust stack, which aborts the daemon) and passes floats through. Here every walk has a
//! depth limit and a byte budget, strings are checked against `string_bytes_max`, and numbers
//! must be integers: a Lua float with an integral value within ±2^53 becomes a JSON integer,
//! anything else (`0.1`, `1e300`, NaN) is refused with the path to the offending value, because
//! money inside cardd is integer fen and fractions must travel as decimal strings. JSON arrays
//! become Lua sequences tagged with mlua's array metatable (so `[]` round-trips); `null` becomes
//! `nil`.

use mlua::{Lua, LuaSerdeExt, Table, Value};

use crate::limits::Limits;

/// Deepest nesting converted either way, in levels.
pub const JSON_DEPTH_MAX: usize = 32;

/// Largest magnitude an integral float may have to become a JSON integer (2^53).
const FLOAT_INTEGER_MAX: f64 = 9_007_199_254_740_992.0;

/// Bounds of one conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting, in levels.
    pub depth_max: usize,
    /// Approximate size of the JSON text, in bytes.
    pub bytes_max: usize,
    /// Longest single string, in bytes.
    pub string_bytes_max: usize,
}

impl JsonLimits {
    /// Depth [`JSON_DEPTH_MAX`], size `result_bytes_max`, strings `string_bytes_max`.
    pub fn from_limits(limits: &Limits) -> JsonLimits {
        JsonLimits {
            depth_max: JSON_DEPTH_MAX,
            bytes_max: limits.result_bytes_max,
            string_bytes_max: limits.string_bytes_max,
        }
    }
}

/// Why a value could not be converted, and where (`$.cards[2].amount`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConvertError {
    pub path: String,
    pub reason: String,
}

struct Walk<'a> {
    limits: &'a JsonLimits,
    budget: usize,
    path: String,
    array_mt: Option<Table>,
}

impl Walk<'_> {
    fn fail(&self, reason: impl Into<String>) -> ConvertError {
        ConvertError {
            path: if self.path.is_empty() {
                "$".to_owned()
            } else {
                format!("${}", self.path)
            },
            reason: reason.into(),
        }
    }

    fn charge(&mut self, bytes: usize) -> Result<(), ConvertError> {
        match self.budget.checked_sub(bytes) {
            Some(rest) => {
                self.budget = rest;
                Ok(())
            }
            None => Err(self.fail(format!(
                "value is larger than {} bytes as JSON",
                self.limits.bytes_max
            ))),
        }
    }

    fn string(&mut self, s: &mlua::String) -> Result<String, ConvertError> {
        let bytes = s.as_bytes();
        if bytes.len() > self.limits.string_bytes_max {
            return Err(self.fail(format!(
                "string of {} bytes is over the limit of {} bytes",
                bytes.len(),
                self.limits.string_bytes_max
            )));
        }
        self.charge(bytes.len() + 2)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.fail("string is not valid UTF-8"))
    }

    fn value(&mut self, value: &Value, depth: usize) -> Result<serde_json::Value, ConvertError> {
        match value {
            Value::Nil => {
                self.charge(4)?;
                Ok(serde_json::Value::Null)
            }
            Value::Boolean(b) => {
                self.charge(5)?;
                Ok(serde_json::Value::Bool(*b))
            }
            Value::Integer(i) => {
                self.charge(20)?;
                Ok(serde_json::Value::from(*i))
            }
            Value::Number(n) => {
                self.charge(20)?;
                if n.is_finite() && n.fract() == 0.0 && n.abs() <= FLOAT_INTEGER_MAX {
                    // Exact: integral and within ±2^53.
                    Ok(serde_json::Value::from(*n as i64))
                } else {
                    Err(self.fail(format!(
                        "non-integer number {n}: amounts are integer fen or decimal strings \
                         (\"1.00\"); pass fractions as strings"
                    )))
                }
            }
            Value::String(s) => self.string(s).map(serde_json::Value::String),
            Value::Table(t) => self.table(t, depth),
            Value::LightUserData(ud) if ud.0.is_null() => {
                // mlua's `null` sentinel.
                self.charge(4)?;
                Ok(serde_json::Value::Null)
            }
            other => Err(self.fail(format!("a {} cannot be converted", other.type_name()))),
        }
    }

    fn table(&mut self, t: &Table, depth: usize) -> Result<serde_json::Value, ConvertError> {
        if depth >= self.limits.depth_max {
            return Err(self.fail(format!(
                "nested deeper than {} levels (or the table contains itself)",
                self.limits.depth_max
            )));
        }
        self.charge(2)?;
        let mut entries: Vec<(Value, Value)> = Vec::new();
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair.map_err(|e| self.fail(e.to_string()))?;
            self.charge(2)?;
            entries.push((k, v));
        }
        let len = t.raw_len();
        let is_sequence = !entries.is_empty()
            && entries.len() == len
            && entries.iter().all(|(k, _)| {
                matches!(k, Value::Integer(i) if *i >= 1 && usize::try_from(*i).is_ok_and(|i| i <= len))
            });
        if is_sequence {
            entries.sort_by_key(|(k, _)| match k {
                Value::Integer(i) => *i,
                _ => 0,
            });
            let mut items = Vec::with_capacity(entries.len());
            for (k, v) in &entries {
                let mark = self.path.len();
                if let Value::Integer(i) = k {
                    self.path.push_str(&format!("[{i}]"));
                }
                items.push(self.value(v, depth + 1)?);
                self.path.truncate(mark);
            }
            return Ok(serde_json::Value::Array(items));
        }
        if entries.is_empty() {
            let is_array = match (&self.array_mt, t.metatable()) {
                (Some(array_mt), Some(mt)) => array_mt.to_pointer() == mt.to_pointer(),
                _ => false,
            };
            return Ok(if is_array {
                serde_json::Value::Array(Vec::new())
            } else {
                serde_json::Value::Object(serde_json::Map::new())
            });
        }
        let mut object = serde_json::Map::new();
        for (k, v) in &entries {
            let key = match k {
                Value::String(s) => self.string(s)?,
                Value::Integer(i) => {
                    self.charge(22)?;
                    i.to_string()
                }
                other => {
                    return Err(self.fail(format!(
                        "a {} key cannot be a JSON object key",
                        other.type_name()
                    )))
                }
            };
            let mark = self.path.len();
            self.path.push('.');
            self.path.push_str(&key);
            let converted = self.value(v, depth + 1)?;
            self.path.truncate(mark);
            if object.insert(key.clone(), converted).is_some() {
                return Err(self.fail(format!("key {key:?} appears twice (as number and string)")));
            }
        }
        Ok(serde_json::Value::Object(object))
    }
}

/// Converts a Lua value to JSON within `limits` (see the module doc for the rules).
pub fn lua_to_json(
    lua: &Lua,
    value: &Value,
    limits: &JsonLimits,
) -> Result<serde_json::Value, ConvertError> {
    let mut walk = Walk {
        limits,
        budget: limits.bytes_max,
        path: String::new(),
        array_mt: Some(lua.array_metatable()),
    };
    walk.value(value, 0)
}

/// Converts JSON to a Lua value within `limits` (see the module doc for the rules). Conversion
/// errors are [`ConvertError`]s wrapped in `mlua::Error::external`; allocation failures are
/// mlua memory errors.
pub fn json_to_lua(
    lua: &Lua,
    value: &serde_json::Value,
    limits: &JsonLimits,
) -> mlua::Result<Value> {
    let mut budget = limits.bytes_max;
    to_lua(lua, value, limits, &mut budget, 0, &mut String::new())
}

fn to_lua(
    lua: &Lua,
    value: &serde_json::Value,
    limits: &JsonLimits,
    budget: &mut usize,
    depth: usize,
    path: &mut String,
) -> mlua::Result<Value> {
    let fail = |path: &str, reason: String| {
        mlua::Error::external(ConvertError {
            path: format!("${path}"),
            reason,
        })
    };
    let cost = match value {
        serde_json::Value::String(s) => s.len() + 2,
        _ => 8,
    };
    *budget = budget.checked_sub(cost).ok_or_else(|| {
        fail(
            path,
            format!("value is larger than {} bytes as JSON", limits.bytes_max),
        )
    })?;
    Ok(match value {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i)
            } else {
                match n.as_f64() {
                    Some(f)
                        if f.is_finite() && f.fract() == 0.0 && f.abs() <= FLOAT_INTEGER_MAX =>
                    {
                        // Exact: integral and within ±2^53.
                        Value::Integer(f as i64)
                    }
                    _ => {
                        return Err(fail(
                            path,
                            format!("number {n} is not an integer within the Lua integer range"),
                        ))
                    }
                }
            }
        }
        serde_json::Value::String(s) => {
            if s.len() > limits.string_bytes_max {
                return Err(fail(
                    path,
                    format!(
                        "string of {} bytes is over the limit of {} bytes",
                        s.len(),
                        limits.string_bytes_max
                    ),
                ));
            }
            Value::String(lua.create_string(s)?)
        }
        serde_json::Value::Array(items) => {
            if depth >= limits.depth_max {
                return Err(fail(
                    path,
                    format!("nested deeper than {} levels", limits.depth_max),
                ));
            }
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                let mark = path.len();
                path.push_str(&format!("[{}]", i + 1));
                let v = to_lua(lua, item, limits, budget, depth + 1, path)?;
                path.truncate(mark);
                table.raw_set(i + 1, v)?;
            }
            table.set_metatable(Some(lua.array_metatable()))?;
            Value::Table(table)
        }
        serde_json::Value::Object(map) => {
            if depth >= limits.depth_max {
                return Err(fail(
                    path,
                    format!("nested deeper than {} levels", limits.depth_max),
                ));
            }
            let table = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                *budget = budget.checked_sub(k.len() + 3).ok_or_else(|| {
                    fail(
                        path,
                        format!("value is larger than {} bytes as JSON", limits.bytes_max),
                    )
                })?;
                let mark = path.len();
                path.push('.');
                path.push_str(k);
                let v = to_lua(lua, item, limits, budget, depth + 1, path)?;
                path.truncate(mark);
                table.raw_set(k.as_str(), v)?;
            }
            Value::Table(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> JsonLimits {
        JsonLimits::from_limits(&Limits::default())
    }

    #[test]
    fn round_trips_plain_data() {
        let lua = Lua::new();
        let data = json!({"a": [1, 2, {"b": "圈存"}], "empty": [], "obj": {}, "t": true});
        let v = json_to_lua(&lua, &data, &limits()).unwrap();
        assert_eq!(lua_to_json(&lua, &v, &limits()).unwrap(), data);
    }

    #[test]
    fn refuses_fractions_depth_and_size() {
        let lua = Lua::new();
        let frac: Value = lua.load("return {amount = 0.1}").eval().unwrap();
        let err = lua_to_json(&lua, &frac, &limits()).unwrap_err();
        assert_eq!(err.path, "$.amount");
        let whole: Value = lua.load("return {n = 10 / 2}").eval().unwrap();
        assert_eq!(
            lua_to_json(&lua, &whole, &limits()).unwrap(),
            json!({"n": 5})
        );
        let deep: Value = lua
            .load("local t = {} for i = 1, 100000 do t = {t} end return t")
            .eval()
            .unwrap();
        assert!(lua_to_json(&lua, &deep, &limits())
            .unwrap_err()
            .reason
            .contains("deeper"));
        let cyclic: Value = lua.load("local t = {} t.t = t return t").eval().unwrap();
        assert!(lua_to_json(&lua, &cyclic, &limits()).is_err());
        let big: Value = lua
            .load("local t = {} for i = 1, 100000 do t[i] = i end return t")
            .eval()
            .unwrap();
        assert!(lua_to_json(&lua, &big, &limits()).is_err());
        assert!(json_to_lua(&lua, &json!({"x": 0.5}), &limits()).is_err());
        let mut nested = json!(1);
        for _ in 0..40 {
            nested = json!([nested]);
        }
        assert!(json_to_lua(&lua, &nested, &limits()).is_err());
    }
}
