//! JSON-RPC envelopes that rmcp cannot read, answered with their request's id.
//!
//! rmcp reads each incoming message into its typed envelope; one that does not fit (no
//! `jsonrpc: "2.0"`, no method, `params` that is not an object, a batch) it answers with
//! "Invalid request" and no id, over stdio and HTTP alike. JSON-RPC asks for the id
//! whenever it can be read, and a client matches answers by id: without it the caller of
//! that request waits for ever. [`refusal`] answers those messages itself, id included;
//! everything else goes to rmcp unchanged. Requests whose envelope is fine but whose
//! method or parameters are not known reach [`crate::BatonMcp`]'s custom request handler.

use serde_json::{json, Value};

/// JSON-RPC's code for a message that is not a valid request.
pub(crate) const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC's code for parameters a method cannot take.
pub(crate) const INVALID_PARAMS: i64 = -32602;

/// The answer to `message` when rmcp would lose its id (or could not answer it at all),
/// `None` when rmcp should have it.
pub(crate) fn refusal(message: &Value) -> Option<Value> {
    let object = match message {
        Value::Object(object) => object,
        Value::Array(_) => {
            return Some(error(
                &Value::Null,
                INVALID_REQUEST,
                "Invalid request: JSON-RPC batches are not supported",
                "send each message on its own (a line over stdio, a POST over HTTP)",
            ))
        }
        _ => return None, // no id to keep: rmcp's own answer says the same
    };
    // Only an id rmcp would drop matters: one nobody can read is null in any answer.
    let id = match object.get("id") {
        Some(id) if id.is_string() || id.is_number() => id,
        // A request (it names a method) whose id is null, an array or an object: answered
        // with a null id, as JSON-RPC asks, where rmcp's answer would have none at all.
        Some(_) if object.contains_key("method") => {
            return Some(error(
                &Value::Null,
                INVALID_REQUEST,
                "Invalid request: an id must be a string or an integer",
                "give each request a string or integer id (a notification has no id at all)",
            ))
        }
        _ => return None,
    };
    if id.is_number() && id.as_i64().is_none() {
        return Some(error(
            id,
            INVALID_REQUEST,
            "Invalid request: a numeric id must be a whole number within 64 bits",
            "use a string or an integer id",
        ));
    }
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(error(
            id,
            INVALID_REQUEST,
            "Invalid request: \"jsonrpc\" must be \"2.0\"",
            "send JSON-RPC 2.0 messages: {\"jsonrpc\": \"2.0\", \"id\", \"method\", \"params\"}",
        ));
    }
    match object.get("method") {
        Some(Value::String(method)) => match object.get("params") {
            Some(Value::Object(params)) => params_refusal(id, method, params),
            None | Some(Value::Null) => params_refusal(id, method, &serde_json::Map::new()),
            Some(_) => Some(error(
                id,
                INVALID_PARAMS,
                &format!("Invalid params: the params of {method} must be an object"),
                "send params as a JSON object, or leave them out",
            )),
        },
        Some(_) => Some(error(
            id,
            INVALID_REQUEST,
            "Invalid request: \"method\" must be a string",
            "name the method as a string, e.g. \"tools/call\"",
        )),
        // A response to a request of the server's: rmcp's to match.
        None if object.contains_key("result") || object.contains_key("error") => None,
        None => Some(error(
            id,
            INVALID_REQUEST,
            "Invalid request: a request needs a \"method\"",
            "send {\"jsonrpc\": \"2.0\", \"id\", \"method\", \"params\"}",
        )),
    }
}

/// Params that rmcp would not read as its method's, where it would answer without the id
/// (or, for `initialize`, ask for a session): `_meta` that is not an object, an
/// `initialize` without what it needs.
fn params_refusal(
    id: &Value,
    method: &str,
    params: &serde_json::Map<String, Value>,
) -> Option<Value> {
    if params
        .get("_meta")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Some(error(
            id,
            INVALID_PARAMS,
            &format!("Invalid params of {method}: _meta must be an object"),
            "send _meta as a JSON object, or leave it out",
        ));
    }
    let fits = |field: &str, is: fn(&Value) -> bool| params.get(field).is_some_and(is);
    if method == "initialize"
        && !(fits("protocolVersion", Value::is_string)
            && fits("capabilities", Value::is_object)
            && fits("clientInfo", Value::is_object))
    {
        return Some(error(
            id,
            INVALID_PARAMS,
            "Invalid params of initialize: it needs protocolVersion (a string), capabilities \
             and clientInfo (objects)",
            "send {\"protocolVersion\": \"2025-03-26\", \"capabilities\": {}, \"clientInfo\": \
             {\"name\", \"version\"}}",
        ));
    }
    None
}

/// A JSON-RPC error answer to request `id`.
pub(crate) fn error(id: &Value, code: i64, message: &str, hint: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message, "data": {"hint": hint}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_and_id(message: Value) -> Option<(i64, Value)> {
        refusal(&message).map(|r| (r["error"]["code"].as_i64().unwrap(), r["id"].clone()))
    }

    #[test]
    fn well_formed_messages_pass() {
        for message in [
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "x"}}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": null}),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            json!({"jsonrpc": "2.0", "id": 3, "result": {}}),
            json!({"jsonrpc": "2.0", "id": 4, "error": {"code": 1, "message": "no"}}),
        ] {
            assert_eq!(refusal(&message), None, "{message}");
        }
    }

    #[test]
    fn a_request_with_an_unreadable_id_is_refused_with_a_null_one() {
        for id in [json!(null), json!([1]), json!({"a": 1}), json!(true)] {
            let message = json!({"jsonrpc": "2.0", "id": id, "method": "ping"});
            assert_eq!(
                code_and_id(message.clone()),
                Some((INVALID_REQUEST, Value::Null)),
                "{message}"
            );
        }
        // A response with a null id (a client's error) is not answered.
        let response = json!({"jsonrpc": "2.0", "id": null, "error": {"code": 1, "message": "no"}});
        assert_eq!(refusal(&response), None);
    }

    #[test]
    fn a_readable_id_is_kept_in_the_refusal() {
        let cases = [
            (
                json!({"id": 7, "method": "ping"}),
                INVALID_REQUEST,
                json!(7),
            ),
            (
                json!({"jsonrpc": "1.0", "id": "x", "method": "ping"}),
                INVALID_REQUEST,
                json!("x"),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 8}),
                INVALID_REQUEST,
                json!(8),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 9, "method": 5}),
                INVALID_REQUEST,
                json!(9),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 10, "method": "ping", "params": []}),
                INVALID_PARAMS,
                json!(10),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 11, "method": "tools/list", "params": 5}),
                INVALID_PARAMS,
                json!(11),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
                INVALID_REQUEST,
                json!(1.5),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 13, "method": "tools/list", "params": {"_meta": 5}}),
                INVALID_PARAMS,
                json!(13),
            ),
            (
                json!({"jsonrpc": "2.0", "id": 14, "method": "initialize", "params": {}}),
                INVALID_PARAMS,
                json!(14),
            ),
            (
                json!([{"jsonrpc": "2.0", "id": 12, "method": "ping"}]),
                INVALID_REQUEST,
                Value::Null,
            ),
        ];
        for (message, code, id) in cases {
            assert_eq!(code_and_id(message.clone()), Some((code, id)), "{message}");
            let answer = refusal(&message).unwrap();
            assert!(answer["error"]["data"]["hint"].is_string(), "{answer}");
        }
    }

    #[test]
    fn without_a_readable_id_rmcp_answers() {
        for message in [
            json!({"jsonrpc": "1.0", "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": null}),
            json!(5),
        ] {
            assert_eq!(refusal(&message), None, "{message}");
        }
    }
}
