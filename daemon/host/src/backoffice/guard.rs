//! The back office's HTTP guard, the site console's discipline (`cardd::transport::guard`) on
//! the host: checked on every request before a byte of its body is read.
//!
//! * `Host` must be the back office's own (`127.0.0.1:P`, `localhost:P`, `[::1]:P` for the
//!   listen port `P`): a foreign name re-pointed at loopback (DNS rebinding) is refused.
//! * An `Origin`, when sent, must be one of the back office's own (`http://` + an allowed
//!   host); `null` and every other origin are refused. There is no CORS: preflights are
//!   refused, so no page elsewhere can send the session header or a JSON body.
//! * Calls are `POST /rpc` with `Content-Type: application/json` (which a cross-origin page
//!   cannot send without the preflight that is refused).
//! * Every answer carries a strict Content-Security-Policy (everything from the back office
//!   only, no inline code, `connect-src 'self'`), `X-Frame-Options: DENY`, `nosniff` and no
//!   referrer.

use std::net::SocketAddr;

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::Method;

/// The policy of every answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Offending header values are cut to this many characters in the log.
const OFFENDING_CHARS_MAX: usize = 100;

/// Why the guard refused a request (the status it answers and a zh-CN message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No or a foreign `Host`.
    Host(String),
    /// A foreign `Origin`.
    Origin(String),
    /// A method other than `GET`/`HEAD` for pages and `POST` for calls (preflights included).
    Method,
    /// A call without `Content-Type: application/json`.
    ContentType,
}

impl Refusal {
    /// The HTTP status of the answer.
    pub fn status(&self) -> hyper::StatusCode {
        match self {
            Refusal::Host(_) | Refusal::Origin(_) => hyper::StatusCode::FORBIDDEN,
            Refusal::Method => hyper::StatusCode::METHOD_NOT_ALLOWED,
            Refusal::ContentType => hyper::StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    /// What the answer says.
    pub fn message(&self) -> String {
        match self {
            Refusal::Host(h) => format!(
                "后台拒绝了请求：地址 {h} 不是后台的地址；请用 http://127.0.0.1:端口/ 打开后台"
            ),
            Refusal::Origin(o) => {
                format!("后台拒绝了来自 {o} 的请求：只接受后台自己页面的请求")
            }
            Refusal::Method => "后台不接受这种请求方式".into(),
            Refusal::ContentType => "后台只接受 JSON 请求（application/json）".into(),
        }
    }
}

/// What the guard lets through: the back office's own hosts and origins.
#[derive(Debug, Clone)]
pub struct Guard {
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl Guard {
    /// The guard of a back office listening on `listen`.
    pub fn for_listen(listen: SocketAddr) -> Guard {
        let port = listen.port();
        let mut hosts = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        let own = listen.to_string();
        if !hosts.contains(&own) {
            hosts.push(own);
        }
        let origins = hosts.iter().map(|h| format!("http://{h}")).collect();
        Guard { hosts, origins }
    }

    /// Checks a request's method, `Host`, `Origin` and (for calls) content type.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(Refusal::Host(cut(host)));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                return Err(Refusal::Origin(cut(origin)));
            }
        }
        let is_call = path == RPC_PATH;
        match (method, is_call) {
            (&Method::POST, true) => {
                let json = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
                if !json {
                    return Err(Refusal::ContentType);
                }
                Ok(())
            }
            (&Method::GET | &Method::HEAD, false) => Ok(()),
            _ => Err(Refusal::Method),
        }
    }
}

/// Where calls are posted.
pub const RPC_PATH: &str = "/rpc";

fn cut(value: &str) -> String {
    value.chars().take(OFFENDING_CHARS_MAX).collect()
}

/// The headers every answer carries.
pub fn secure(headers: &mut HeaderMap) {
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn guard() -> Guard {
        Guard::for_listen("127.0.0.1:7480".parse().unwrap())
    }

    #[test]
    fn own_hosts_pass_and_foreign_ones_are_refused() {
        let g = guard();
        for host in [
            "127.0.0.1:7480",
            "localhost:7480",
            "LOCALHOST:7480",
            "[::1]:7480",
        ] {
            assert_eq!(
                g.check(&Method::GET, "/", &headers(&[("host", host)])),
                Ok(())
            );
        }
        for host in ["evil.example:7480", "127.0.0.1:7481", "127.0.0.1", ""] {
            assert!(matches!(
                g.check(&Method::GET, "/", &headers(&[("host", host)])),
                Err(Refusal::Host(_))
            ));
        }
        assert!(matches!(
            g.check(&Method::GET, "/", &HeaderMap::new()),
            Err(Refusal::Host(_))
        ));
    }

    #[test]
    fn only_the_back_office_s_own_origin_may_call() {
        let g = guard();
        let call = |origin: &str| {
            g.check(
                &Method::POST,
                RPC_PATH,
                &headers(&[
                    ("host", "127.0.0.1:7480"),
                    ("origin", origin),
                    ("content-type", "application/json"),
                ]),
            )
        };
        assert_eq!(call("http://127.0.0.1:7480"), Ok(()));
        assert_eq!(call("http://localhost:7480"), Ok(()));
        for foreign in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:7420",
            "https://127.0.0.1:7480",
        ] {
            assert!(
                matches!(call(foreign), Err(Refusal::Origin(_))),
                "{foreign}"
            );
        }
        // No Origin: not a browser page (curl, a test): allowed, still needs a session.
        assert_eq!(
            g.check(
                &Method::POST,
                RPC_PATH,
                &headers(&[
                    ("host", "127.0.0.1:7480"),
                    ("content-type", "application/json")
                ])
            ),
            Ok(())
        );
    }

    #[test]
    fn calls_are_json_posts_and_preflights_are_refused() {
        let g = guard();
        let h = headers(&[("host", "127.0.0.1:7480"), ("content-type", "text/plain")]);
        assert_eq!(
            g.check(&Method::POST, RPC_PATH, &h),
            Err(Refusal::ContentType)
        );
        let h = headers(&[("host", "127.0.0.1:7480")]);
        assert_eq!(
            g.check(&Method::OPTIONS, RPC_PATH, &h),
            Err(Refusal::Method)
        );
        assert_eq!(g.check(&Method::POST, "/", &h), Err(Refusal::Method));
        assert_eq!(g.check(&Method::GET, RPC_PATH, &h), Err(Refusal::Method));
        assert_eq!(g.check(&Method::DELETE, "/", &h), Err(Refusal::Method));
    }

    #[test]
    fn every_answer_carries_the_policy() {
        let mut h = HeaderMap::new();
        secure(&mut h);
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"));
        assert!(csp.contains("connect-src 'self'"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe"));
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    }
}
