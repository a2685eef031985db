//! A minimal HTTPS client of the appliance's Redfish door for the bench's measurements: it pins
//! the certificate the bench provisioned, opens a session as `admin`, and sends the appliance's
//! requests to `POST /redfish/v1/Oem/Appliance/Requests` (`{"query":"status"}` or
//! `{"order":{"compose":{...}}}` in, `{"accepted":{...}}` or `{"status":{...}}` out). The bench
//! must not depend on `appliance`, so requests and answers are plain JSON values.

use std::time::{Duration, Instant};

use serde_json::Value;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::provision::Credentials;

/// Where the appliance's own requests go.
pub const REQUESTS_PATH: &str = "/redfish/v1/Oem/Appliance/Requests";
/// Where sessions are opened.
pub const SESSIONS_PATH: &str = "/redfish/v1/SessionService/Sessions";
/// How long one request may take (a compose waits for the hardware).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(150);
/// How long one login attempt may take before the next is tried (the guest's port is forwarded
/// before the appliance listens, and a connection QEMU accepted then is never answered).
const LOGIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer read.
const ANSWER_BYTES_MAX: u64 = 64 << 20;

/// Errors of the bench's API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the pinned certificate is not PEM: {0}")]
    Certificate(String),
    #[error("{method} {url}: {reason}")]
    Transport {
        method: &'static str,
        url: String,
        reason: String,
    },
    #[error("{method} {url} answered {status}: {body}")]
    Refused {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{method} {url}: the answer is not JSON: {reason}")]
    NotJson {
        method: &'static str,
        url: String,
        reason: String,
    },
}

/// A logged-in client of one appliance (one agent: its connection is kept alive).
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
    token: String,
    cert_pem: String,
}

fn agent(cert_pem: &str, timeout: Duration) -> Result<ureq::Agent, ApiError> {
    let cert = Certificate::from_pem(cert_pem.as_bytes())
        .map_err(|e| ApiError::Certificate(e.to_string()))?;
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&[cert]))
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent())
}

impl Api {
    /// Logs in to `base` (`https://127.0.0.1:PORT`) with `credentials`, retrying until
    /// `timeout`; a refusal (a wrong password) ends the wait at once.
    pub fn login(
        base: &str,
        credentials: &Credentials,
        timeout: Duration,
    ) -> Result<Api, ApiError> {
        let deadline = Instant::now() + timeout;
        loop {
            match Self::try_login(base, credentials) {
                Ok(api) => return Ok(api),
                Err(e @ ApiError::Refused { .. }) => return Err(e),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => tracing::debug!(error = %e, "login failed; retrying"),
            }
            // The guest gives the host no signal when its listener is up; retry shortly.
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn try_login(base: &str, credentials: &Credentials) -> Result<Api, ApiError> {
        let base = base.trim_end_matches('/').to_string();
        let url = format!("{base}{SESSIONS_PATH}");
        let body = serde_json::json!({
            "UserName": credentials.account,
            "Password": credentials.admin_password,
        });
        let attempt = agent(&credentials.cert_pem, LOGIN_ATTEMPT_TIMEOUT)?;
        let response = attempt
            .post(&url)
            .send_json(&body)
            .map_err(|e| transport("POST", &url, e))?;
        let status = response.status().as_u16();
        let token = response
            .headers()
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = read(response, "POST", &url)?;
        let Some(token) = token.filter(|_| status == 201) else {
            return Err(ApiError::Refused {
                method: "POST",
                url,
                status,
                body: text,
            });
        };
        Ok(Api {
            base,
            agent: agent(&credentials.cert_pem, REQUEST_TIMEOUT)?,
            token,
            cert_pem: credentials.cert_pem.clone(),
        })
    }

    /// A client of the same session with its own agent, so its own kept-alive connection (an
    /// agent shared between threads opens a new TLS connection for most requests).
    pub fn fork(&self) -> Result<Api, ApiError> {
        Ok(Api {
            agent: agent(&self.cert_pem, REQUEST_TIMEOUT)?,
            ..self.clone()
        })
    }

    /// Sends one appliance request; an answer other than 200 is [`ApiError::Refused`].
    pub fn call(&self, request: &Value) -> Result<Value, ApiError> {
        let url = format!("{}{REQUESTS_PATH}", self.base);
        let response = self
            .agent
            .post(&url)
            .header("X-Auth-Token", &self.token)
            .send_json(request)
            .map_err(|e| transport("POST", &url, e))?;
        json_of(response, "POST", &url)
    }

    /// GET of a Redfish resource; an answer other than 200 is [`ApiError::Refused`].
    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .agent
            .get(&url)
            .header("X-Auth-Token", &self.token)
            .call()
            .map_err(|e| transport("GET", &url, e))?;
        json_of(response, "GET", &url)
    }
}

fn transport(method: &'static str, url: &str, error: ureq::Error) -> ApiError {
    ApiError::Transport {
        method,
        url: url.to_string(),
        reason: error.to_string(),
    }
}

fn read(
    response: ureq::http::Response<ureq::Body>,
    method: &'static str,
    url: &str,
) -> Result<String, ApiError> {
    response
        .into_body()
        .with_config()
        .limit(ANSWER_BYTES_MAX)
        .read_to_string()
        .map_err(|e| transport(method, url, e))
}

fn json_of(
    response: ureq::http::Response<ureq::Body>,
    method: &'static str,
    url: &str,
) -> Result<Value, ApiError> {
    let status = response.status().as_u16();
    let text = read(response, method, url)?;
    if status != 200 {
        return Err(ApiError::Refused {
            method,
            url: url.to_string(),
            status,
            body: text,
        });
    }
    serde_json::from_str(&text).map_err(|e| ApiError::NotJson {
        method,
        url: url.to_string(),
        reason: e.to_string(),
    })
}
