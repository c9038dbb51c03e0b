//! The one grammar of an OTLP endpoint, for `spoold`'s `otlp_endpoint`,
//! `spool-worker --otlp-endpoint` and `OTEL_EXPORTER_OTLP_ENDPOINT`.
//!
//! OTLP over gRPC to `http://HOST:PORT` (a trailing `/` is allowed, no
//! path): Spool's gRPC stack is built without TLS, so `https` is refused at
//! start rather than failing at the first export.

/// Why an endpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    #[error("{value:?} is not an OTLP gRPC endpoint like http://127.0.0.1:4317: {reason}")]
    Invalid { value: String, reason: &'static str },
}

/// Checks an endpoint and returns it without a trailing `/`.
pub fn parse_endpoint(value: &str) -> Result<String, EndpointError> {
    let invalid = |reason| EndpointError::Invalid {
        value: value.to_owned(),
        reason,
    };
    let trimmed = value.trim();
    if trimmed.starts_with("https://") {
        return Err(invalid(
            "TLS is not supported; use http:// (a local collector or agent)",
        ));
    }
    let rest = trimmed
        .strip_prefix("http://")
        .ok_or_else(|| invalid("it must start with http://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err(invalid("OTLP over gRPC takes no path"));
    }
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| invalid("it needs a port (the OTLP gRPC port is usually 4317)"))?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid("it needs a host"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(format!("http://{authority}")),
        _ => Err(invalid("the port must be a number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_host_and_port_are_taken() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:4317").unwrap(),
            "http://127.0.0.1:4317"
        );
        assert_eq!(
            parse_endpoint(" http://collector.internal:4317/ ").unwrap(),
            "http://collector.internal:4317"
        );
        assert_eq!(parse_endpoint("http://[::1]:4317").unwrap(), "http://[::1]:4317");
    }

    #[test]
    fn anything_else_is_refused_with_a_reason() {
        for (value, reason) in [
            ("127.0.0.1:4317", "http://"),
            ("https://collector:4317", "TLS"),
            ("http://collector", "port"),
            ("http://collector:0", "port"),
            ("http://collector:http", "port"),
            ("http://:4317", "host"),
            ("http://collector:4318/v1/traces", "path"),
        ] {
            let error = parse_endpoint(value).unwrap_err().to_string();
            assert!(error.contains(reason), "{value}: {error}");
        }
    }
}
