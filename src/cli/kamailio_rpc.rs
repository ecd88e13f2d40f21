//! Kamailio's JSON-RPC over HTTP (`kamailio.rpc`; jsonrpcs + xhttp, see kamailio.cfg): what
//! `regmirror node` asks of every proxy after a change of the farm list.

use std::time::Duration;

use serde_json::{json, Value};

use super::status::{http_request, HttpError};

const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("Kamailio RPC {0}: {1}")]
    Http(String, HttpError),
    #[error("Kamailio RPC {0}: {1}")]
    Refused(String, String),
}

/// Calls `method` with `params` at `url` (`http://host:port/RPC`); its `result`.
pub async fn call(url: &str, method: &str, params: Value) -> Result<Value, RpcError> {
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).to_string();
    let url_owned = url.to_string();
    let answer =
        tokio::task::spawn_blocking(move || http_request(&url_owned, "", Some(&body), TIMEOUT))
            .await
            .map_err(|e| RpcError::Refused(url.into(), e.to_string()))?
            .map_err(|e| RpcError::Http(url.into(), e))?;
    let (code, text) = answer;
    let v: Value = serde_json::from_str(&text)
        .map_err(|_| RpcError::Refused(url.into(), format!("HTTP {code}: {}", text.trim())))?;
    if let Some(e) = v.get("error") {
        return Err(RpcError::Refused(url.into(), format!("{method}: {e}")));
    }
    Ok(v.get("result").cloned().unwrap_or(Value::Null))
}

/// `dispatcher.list`: each destination URI with its flags (`AP` active, `IP` inactive, `DX`
/// disabled, ...), wherever they sit in the answer.
pub fn dispatcher_flags(list: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![list];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                if let (Some(Value::String(uri)), Some(Value::String(flags))) =
                    (o.get("URI"), o.get("FLAGS"))
                {
                    out.push((uri.clone(), flags.clone()));
                }
                stack.extend(o.values());
            }
            Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_found_in_kamailios_dispatcher_list() {
        // Kamailio 5.6's answer, shortened.
        let answer: Value = serde_json::from_str(
            r#"{"NRSETS":1,"RECORDS":[{"SET":{"ID":1,"TARGETS":[
                {"DEST":{"URI":"sip:10.77.0.31:5060","FLAGS":"AP","PRIORITY":0,"ATTRS":{"BODY":"name=ast1"}}},
                {"DEST":{"URI":"sip:10.77.0.32:5060","FLAGS":"IP","PRIORITY":0}}]}}]}"#,
        )
        .unwrap();
        let mut flags = dispatcher_flags(&answer);
        flags.sort();
        assert_eq!(
            flags,
            [
                ("sip:10.77.0.31:5060".to_string(), "AP".to_string()),
                ("sip:10.77.0.32:5060".to_string(), "IP".to_string())
            ]
        );
    }
}
