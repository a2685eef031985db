//! Query parameters (DSP0266 7.3): `$select`, `$expand` (`.`, `*` and `~`, with `$levels`),
//! `$top` / `$skip` on collections, `only` and `excerpt`. What the service supports is exactly
//! what `ProtocolFeaturesSupported` says (`features`); any other `$`-parameter is 501, other
//! parameters are ignored, a bad value is 400.

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::messages::{RfError, QUERY_PARAMETER_UNSUPPORTED, QUERY_PARAMETER_VALUE_FORMAT_ERROR};

/// Deepest `$levels` accepted.
pub const EXPAND_LEVELS_MAX: u32 = 3;
/// Most members one page of a collection carries when `$top` does not say.
pub const PAGE_MEMBERS_MAX: usize = 1000;

/// What `$expand` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expand {
    /// `.`: subordinate (non-link) references.
    NoLinks,
    /// `*`: every reference.
    All,
    /// `~`: the references under `Links`.
    Links,
}

/// A request's query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub select: Option<Vec<String>>,
    pub expand: Option<(Expand, u32)>,
    pub top: Option<usize>,
    pub skip: Option<usize>,
    pub only: bool,
    pub excerpt: bool,
}

/// `ProtocolFeaturesSupported`, truthfully.
pub fn features() -> Value {
    json!({
        "ExpandQuery": {
            "ExpandAll": true,
            "Levels": true,
            "Links": true,
            "NoLinks": true,
            "MaxLevels": EXPAND_LEVELS_MAX,
        },
        "FilterQuery": false,
        "SelectQuery": true,
        "OnlyMemberQuery": true,
        "ExcerptQuery": false,
        "TopSkipQuery": true,
        "DeepOperations": {"DeepPATCH": false, "DeepPOST": false},
    })
}

fn bad_value(value: &str, parameter: &str) -> RfError {
    RfError::new(
        StatusCode::BAD_REQUEST,
        QUERY_PARAMETER_VALUE_FORMAT_ERROR,
        &[value, parameter],
    )
}

/// Percent-decodes a query component (`+` is a space).
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn expand(value: &str) -> Result<(Expand, u32), RfError> {
    let (kind, options) = match value.split_once('(') {
        Some((kind, rest)) => (
            kind,
            Some(
                rest.strip_suffix(')')
                    .ok_or_else(|| bad_value(value, "$expand"))?,
            ),
        ),
        None => (value, None),
    };
    let kind = match kind {
        "." => Expand::NoLinks,
        "*" => Expand::All,
        "~" => Expand::Links,
        _ => return Err(bad_value(value, "$expand")),
    };
    let levels = match options {
        None => 1,
        Some(options) => {
            let levels = options
                .strip_prefix("$levels=")
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| (1..=EXPAND_LEVELS_MAX).contains(n));
            levels.ok_or_else(|| bad_value(value, "$expand"))?
        }
    };
    Ok((kind, levels))
}

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Result<Query, RfError> {
        let mut query = Query::default();
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(query);
        };
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).ok_or_else(|| bad_value(pair, "query"))?;
            let value = decode(value).ok_or_else(|| bad_value(pair, &name))?;
            let number = |what: &str| value.parse::<usize>().map_err(|_| bad_value(&value, what));
            match name.as_str() {
                "$select" => {
                    let fields: Vec<String> = value
                        .split(',')
                        .map(|f| f.trim().to_string())
                        .filter(|f| !f.is_empty())
                        .collect();
                    if fields.is_empty() {
                        return Err(bad_value(&value, "$select"));
                    }
                    query.select = Some(fields);
                }
                "$expand" => query.expand = Some(expand(&value)?),
                "$top" => query.top = Some(number("$top")?),
                "$skip" => query.skip = Some(number("$skip")?),
                "only" if value.is_empty() => query.only = true,
                "only" => return Err(bad_value(&value, "only")),
                "excerpt" => {
                    return Err(RfError::new(
                        StatusCode::NOT_IMPLEMENTED,
                        QUERY_PARAMETER_UNSUPPORTED,
                        &["excerpt"],
                    ))
                }
                other if other.starts_with('$') => {
                    return Err(RfError::new(
                        StatusCode::NOT_IMPLEMENTED,
                        QUERY_PARAMETER_UNSUPPORTED,
                        &[other],
                    ))
                }
                // Parameters that are not Redfish's are ignored (DSP0266).
                _ => {}
            }
        }
        Ok(query)
    }

    /// `$top` / `$skip` on a collection's members: the page, and the `$skip` of the next one.
    pub fn page(&self, members: &mut Vec<Value>) -> Option<usize> {
        let skip = self.skip.unwrap_or(0).min(members.len());
        let top = self.top.unwrap_or(PAGE_MEMBERS_MAX).min(PAGE_MEMBERS_MAX);
        members.drain(..skip);
        if members.len() > top {
            members.truncate(top);
            return Some(skip + top);
        }
        None
    }
}

/// Keeps only the `$select`ed properties (dotted paths select inside objects), and the
/// `@odata.*` annotations of the resource.
pub fn select(value: &Value, fields: &[String]) -> Value {
    let Value::Object(object) = value else {
        return value.clone();
    };
    let mut out = Map::new();
    for (key, item) in object {
        if key.starts_with("@odata.") {
            out.insert(key.clone(), item.clone());
        }
    }
    for field in fields {
        let (head, tail) = match field.split_once('/').or_else(|| field.split_once('.')) {
            Some((head, tail)) => (head, Some(tail)),
            None => (field.as_str(), None),
        };
        let Some(item) = object.get(head) else {
            continue;
        };
        let chosen = match tail {
            None => item.clone(),
            Some(tail) => {
                let inner = select(item, &[tail.to_string()]);
                match (out.get(head), inner) {
                    (Some(Value::Object(seen)), Value::Object(mut more)) => {
                        for (k, v) in seen {
                            more.entry(k.clone()).or_insert(v.clone());
                        }
                        Value::Object(more)
                    }
                    (_, inner) => inner,
                }
            }
        };
        out.insert(head.to_string(), chosen);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_parameters_parse_and_others_are_refused() {
        let query = Query::parse(Some("$select=Name,Status/Health&$top=2&$skip=1")).expect("ok");
        assert_eq!(query.select.as_deref().map(<[String]>::len), Some(2));
        assert_eq!((query.top, query.skip), (Some(2), Some(1)));
        assert_eq!(
            Query::parse(Some("$expand=.($levels=2)"))
                .expect("ok")
                .expand,
            Some((Expand::NoLinks, 2))
        );
        assert!(
            Query::parse(Some("rpvunknown")).is_ok(),
            "non-$ parameters are ignored"
        );
        let unsupported = Query::parse(Some("$rpvunknown")).expect_err("501");
        assert_eq!(unsupported.status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(
            Query::parse(Some("only=foo")).expect_err("400").status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            Query::parse(Some("$top=x")).expect_err("400").status,
            StatusCode::BAD_REQUEST
        );
        assert!(Query::parse(Some("$expand=*($levels=9)")).is_err());
        assert!(Query::parse(Some("%zz")).is_err());
    }

    #[test]
    fn select_keeps_the_named_properties_and_the_annotations() {
        let value = json!({"@odata.id": "/x", "Id": "x", "Name": "n", "Status": {"State": "Enabled", "Health": "OK"}});
        let picked = select(&value, &["Name".into(), "Status/Health".into()]);
        assert_eq!(
            picked,
            json!({"@odata.id": "/x", "Name": "n", "Status": {"Health": "OK"}})
        );
    }

    #[test]
    fn a_page_says_where_the_next_one_starts() {
        let mut members: Vec<Value> = (0..10).map(|i| json!(i)).collect();
        let query = Query::parse(Some("$skip=2&$top=3")).expect("ok");
        assert_eq!(query.page(&mut members), Some(5));
        assert_eq!(members, vec![json!(2), json!(3), json!(4)]);
    }
}
