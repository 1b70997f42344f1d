//! The one line a person reads for a varlink error that is not one of berthd's own typed
//! errors: `org.varlink.service.InvalidParameter {"parameter":"unit"}` says what went wrong to
//! a program, `invalid unit name` says it to a person.

use berth_varlink::client::RemoteError;
use serde_json::Value;

const SERVICE: &str = "org.varlink.service.";

/// `remote` as a short sentence; an error berth does not know stays as it came (name and
/// parameters), so nothing is hidden.
pub fn describe(remote: &RemoteError) -> String {
    let Some(name) = remote.error.strip_prefix(SERVICE) else {
        return remote.to_string();
    };
    let parameter = |key: &str| {
        remote
            .parameters
            .as_ref()
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
    };
    match (name, parameter("parameter"), parameter("method")) {
        ("InvalidParameter", Some(p), _) => format!("invalid {}", what_parameter_names(p)),
        ("InvalidParameter", None, _) => "invalid parameter".to_string(),
        ("MethodNotFound", _, Some(m)) => format!("berthd does not know the method {m}"),
        ("MethodNotImplemented", _, Some(m)) => format!("berthd does not implement {m}"),
        ("InterfaceNotFound", _, _) => match parameter("interface") {
            Some(i) => format!("berthd does not serve the interface {i}"),
            None => "berthd does not serve that interface".to_string(),
        },
        ("PermissionDenied", _, _) => "permission denied".to_string(),
        ("ExpectedMore", _, _) => "berthd expected a call with more".to_string(),
        _ => remote.to_string(),
    }
}

/// What a parameter of io.berth.Manager holds, in words.
fn what_parameter_names(parameter: &str) -> String {
    match parameter {
        "unit" => "unit name".to_string(),
        "image" => "image name or path".to_string(),
        "profile" => "profile name".to_string(),
        "prefixes" => "unit prefix".to_string(),
        "extensions" => "extension image name or path".to_string(),
        other => format!("parameter '{other}'"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn remote(error: &str, parameters: Value) -> RemoteError {
        RemoteError {
            error: error.to_string(),
            parameters: Some(parameters),
        }
    }

    #[test]
    fn an_invalid_unit_name_reads_as_one() {
        let r = remote(
            "org.varlink.service.InvalidParameter",
            json!({ "parameter": "unit" }),
        );

        assert_eq!(describe(&r), "invalid unit name");
    }

    #[test]
    fn an_invalid_extension_reads_as_one() {
        let r = remote(
            "org.varlink.service.InvalidParameter",
            json!({ "parameter": "extensions" }),
        );

        assert_eq!(describe(&r), "invalid extension image name or path");
    }

    #[test]
    fn an_unknown_parameter_is_named() {
        let r = remote(
            "org.varlink.service.InvalidParameter",
            json!({ "parameter": "lines" }),
        );

        assert_eq!(describe(&r), "invalid parameter 'lines'");
    }

    #[test]
    fn a_missing_method_names_it() {
        let r = remote(
            "org.varlink.service.MethodNotFound",
            json!({ "method": "io.berth.Manager.Frob" }),
        );

        assert_eq!(
            describe(&r),
            "berthd does not know the method io.berth.Manager.Frob"
        );
    }

    #[test]
    fn an_error_of_another_interface_stays_whole() {
        let r = remote("com.example.Odd", json!({ "why": 1 }));

        assert_eq!(describe(&r), r#"com.example.Odd {"why":1}"#);
    }
}
