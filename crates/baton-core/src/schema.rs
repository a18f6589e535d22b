//! JSON Schema checks for task input and output. Remote and file `$ref`s are not resolved:
//! an agent's schema must never make the server fetch anything.

use crate::error::{Code, Error, Result};
use serde_json::Value;

/// Compiles a schema, or says why it is not one.
pub fn compile(schema: &Value) -> std::result::Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// Checks `value` against `schema`; the error lists the first few violations.
pub fn validate(field: &str, schema: &Value, value: &Value) -> Result<()> {
    let validator = compile(schema).map_err(|e| {
        Error::invalid(
            format!("the task's {field} schema is invalid: {e}"),
            "fix the schema by updating the task",
        )
    })?;
    let problems: Vec<String> = validator
        .iter_errors(value)
        .take(5)
        .map(|e| format!("{} at '{}'", e, e.instance_path()))
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        Code::SchemaViolation,
        format!(
            "{field} does not match the task's {field}_schema: {}",
            problems.join("; ")
        ),
        format!("send {field} that satisfies the schema; the schema is the task's {field}_schema"),
    )
    .with_details(serde_json::json!({ "violations": problems })))
}
