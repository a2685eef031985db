//! An HTTPS client of the Redfish door (the CLI, the QEMU bench, the tests), and the agent the
//! door itself uses to push events to subscribers. Built on ureq; this module only chooses
//! whom to trust and keeps the session's token.

use std::time::Duration;

use serde_json::Value;
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::api::control::{decode_answer, encode_request};
use crate::api::{Reply, Request};

/// Where the appliance's own requests (the CLI's vocabulary) go over HTTPS.
pub const REQUESTS_PATH: &str = "/redfish/v1/Oem/Appliance/Requests";

/// Whose certificates a client accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The public web's roots (Mozilla's, via webpki-roots).
    PublicRoots,
    /// Exactly this certificate (PEM): the appliance's own, pinned.
    Pinned(String),
    /// Anything (`--insecure`): for a first look at a fresh appliance only.
    Insecure,
}

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the pinned certificate is not PEM: {0}")]
    Certificate(String),
    #[error("{method} {url}: {source}")]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{method} {url}: the answer is not JSON: {reason}")]
    NotJson {
        method: &'static str,
        url: String,
        reason: String,
    },
}

/// An agent that answers every status (4xx and 5xx are answers here, not errors).
pub fn agent(trust: &Trust, timeout: Duration) -> Result<ureq::Agent, ClientError> {
    let tls = match trust {
        Trust::PublicRoots => TlsConfig::builder().root_certs(RootCerts::WebPki).build(),
        Trust::Insecure => TlsConfig::builder().disable_verification(true).build(),
        Trust::Pinned(pem) => {
            let cert = Certificate::from_pem(pem.as_bytes())
                .map_err(|e| ClientError::Certificate(e.to_string()))?;
            TlsConfig::builder()
                .root_certs(RootCerts::new_with_certs(&[cert]))
                .build()
        }
    };
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent())
}

/// One answer of the door.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// Header name (lower case) and value, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The first MessageId of a Redfish error body, if it is one.
    pub fn message_id(&self) -> Option<String> {
        let body = self.json();
        body["error"]["@Message.ExtendedInfo"][0]["MessageId"]
            .as_str()
            .map(str::to_string)
    }
}

/// The whole answer: status, headers, and a body of at most `limit` bytes.
fn read_answer(
    response: ureq::http::Response<ureq::Body>,
    limit: u64,
) -> Result<Answer, ureq::Error> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = response
        .into_body()
        .with_config()
        .limit(limit)
        .read_to_vec()?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A client of one appliance: its base URL, and the session token once logged in.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
    basic: Option<String>,
}

/// The body of a stream, read line by line.
pub type LineReader = Box<dyn std::io::BufRead + Send>;

impl Client {
    /// `base` is `https://host:port` (no trailing slash needed).
    pub fn new(base: &str, trust: &Trust, timeout: Duration) -> Result<Client, ClientError> {
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            agent: agent(trust, timeout)?,
            token: None,
            basic: None,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Uses a session token already held (`X-Auth-Token`).
    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_string());
        self
    }

    /// Sends HTTP Basic credentials with every request (no session).
    pub fn with_basic(mut self, account: &str, password: &str) -> Client {
        use base64::Engine;
        let pair = format!("{account}:{password}");
        self.basic = Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ));
        self
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Opens a session (`POST /redfish/v1/SessionService/Sessions`); keeps its token. `code`
    /// is the one-time code of an account with TOTP.
    pub fn login(
        &mut self,
        account: &str,
        password: &str,
        code: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let mut body = serde_json::json!({"UserName": account, "Password": password});
        if let Some(code) = code {
            body["Token"] = Value::String(code.to_string());
        }
        let answer = self.send(
            "POST",
            "/redfish/v1/SessionService/Sessions",
            Some(&body),
            &[],
        )?;
        if answer.status == 201 {
            self.token = answer.header("x-auth-token").map(str::to_string);
        }
        Ok(answer)
    }

    pub fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.send("GET", path, None, &[])
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Answer, ClientError> {
        self.send("POST", path, Some(body), &[])
    }

    pub fn patch(
        &self,
        path: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let headers: Vec<(&str, &str)> =
            if_match.map(|tag| ("If-Match", tag)).into_iter().collect();
        self.send("PATCH", path, Some(body), &headers)
    }

    pub fn delete(&self, path: &str) -> Result<Answer, ClientError> {
        self.send("DELETE", path, None, &[])
    }

    /// A request to `url` with the client's credentials and `headers`.
    fn builder(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> ureq::http::request::Builder {
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        if let Some(token) = &self.token {
            request = request.header("X-Auth-Token", token);
        } else if let Some(basic) = &self.basic {
            request = request.header("Authorization", basic);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    }

    /// One request; `path` starts with `/`.
    pub fn send(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.builder(method, &url, headers);
        let bytes = match body {
            Some(value) => {
                request = request.header("Content-Type", "application/json");
                serde_json::to_vec(value).unwrap_or_default()
            }
            None => Vec::new(),
        };
        let transport = |source: ureq::Error| ClientError::Transport {
            method,
            url: url.clone(),
            source: Box::new(source),
        };
        let request = request
            .body(bytes)
            .map_err(|e| transport(ureq::Error::Http(e)))?;
        let response = self.agent.run(request).map_err(transport)?;
        read_answer(response, 64 << 20).map_err(transport)
    }

    /// GET of a stream (SSE): its status and a line reader of its body, or the whole answer
    /// when it is not 200. The stream has no overall timeout.
    pub fn stream(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Result<LineReader, Answer>), ClientError> {
        let url = format!("{}{}", self.base, path);
        let request = self
            .builder("GET", &url, headers)
            .header("Accept", "text/event-stream");
        let transport = |source: ureq::Error| ClientError::Transport {
            method: "GET",
            url: url.clone(),
            source: Box::new(source),
        };
        let request = request
            .body(())
            .map_err(|e| transport(ureq::Error::Http(e)))?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(None)
            .build();
        let response = self.agent.run(request).map_err(transport)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Ok((
                status,
                Err(read_answer(response, 1 << 20).map_err(transport)?),
            ));
        }
        let reader = response
            .into_body()
            .into_with_config()
            .limit(u64::MAX)
            .reader();
        Ok((status, Ok(Box::new(std::io::BufReader::new(reader)))))
    }

    /// Sends one of the appliance's requests to `POST REQUESTS_PATH`: its reply, or the error
    /// answer (any status but 200, a Redfish error body naming the MessageId).
    pub fn request(&self, request: &Request) -> Result<Result<Reply, Answer>, ClientError> {
        let body: Value = serde_json::from_str(&encode_request(request)).unwrap_or_default();
        let answer = self.post(REQUESTS_PATH, &body)?;
        if answer.status != 200 {
            return Ok(Err(answer));
        }
        let not_a_reply = |reason: String| ClientError::NotJson {
            method: "POST",
            url: format!("{}{REQUESTS_PATH}", self.base),
            reason,
        };
        match decode_answer(&String::from_utf8_lossy(&answer.body)) {
            Ok(Ok(reply)) => Ok(Ok(reply)),
            Ok(Err(error)) => Err(not_a_reply(format!("an error with status 200: {error:?}"))),
            Err(e) => Err(not_a_reply(e.to_string())),
        }
    }

    /// GET, expecting 200 and JSON.
    pub fn get_json(&self, path: &str) -> Result<(u16, Value), ClientError> {
        let answer = self.get(path)?;
        if answer.body.is_empty() {
            return Ok((answer.status, Value::Null));
        }
        let value = serde_json::from_slice(&answer.body).map_err(|e| ClientError::NotJson {
            method: "GET",
            url: format!("{}{}", self.base, path),
            reason: e.to_string(),
        })?;
        Ok((answer.status, value))
    }
}
