//! Payload peek: a bounded, redacted summary of a plain-HTTP request that was refused.
//!
//! When the user turns the peek on, a blocked plain-HTTP request is read to its end locally (the real server is
//! never contacted) and summarised here for the block log: method, path, query parameters and form fields
//! (`application/x-www-form-urlencoded`, and the top level of JSON bodies), with values that are base64 of
//! printable text or JSON (possibly gzip-compressed) decoded. Sensors Analytics uploads — `data_list` (or `data`)
//! holding base64 of gzip of a JSON array of events, with `gzip=1` — come out as their JSON events.
//!
//! # Bounds
//! The request is read up to [`MAX_REQUEST_LEN`] bytes; a gzip stream is inflated to at most [`MAX_INFLATED_LEN`];
//! a shown value is cut at [`MAX_VALUE_CHARS`] characters; at most [`MAX_FIELDS`] fields per section; a decoded
//! JSON document keeps at most [`MAX_JSON_NODES`] values (the rest become `"…"`), [`MAX_ARRAY_ITEMS`] elements per
//! array and [`MAX_JSON_DEPTH`] levels.
//!
//! Decoding work is bounded per request as well: at most [`MAX_DECODES_PER_REQUEST`] values are decoded and
//! [`MAX_INFLATED_PER_REQUEST`] bytes inflated over all of them; values past that show [`NOT_DECODED`] and the
//! summary is marked `truncated`.
//!
//! # Redaction
//! A value that decodes is never shown in its encoded form (which would repeat what the decoded form redacts):
//! only `[encoded: N chars]` and the decoded form. Keys are compared case-insensitively, both whole (punctuation
//! removed) and word by word (split on punctuation and camelCase: `wifiMac` → `wifi`, `mac`), in query and form
//! fields and at every level of decoded JSON:
//! - **Credentials** are replaced by `"[redacted]"`: keys containing `password`, `passwd`, `passcode`, `secret`,
//!   `token`, `cookie`, `session`, `auth`, `apikey`, `accesskey`, `privatekey`, `credential`, `ticket`, or with a
//!   word `pwd`, `pin`, `otp`, `sid`, `sign`, `signature`, `captcha`. Authorization and Cookie headers are never
//!   read into the summary at all.
//! - **Identifiers** (of the device or the person, and locations) are masked but their presence and shape kept,
//!   because "this app sends my IMEI" is exactly what the user wants to see, while the log may be shared: all but
//!   the first two and last two characters become `*` (values of 6 characters or fewer are masked whole). Keys
//!   containing `imei`, `meid`, `imsi`, `iccid`, `androidid`, `oaid`, `gaid`, `vaid`, `idfa`, `idfv`,
//!   `advertisingid`, `deviceid`, `distinctid`, `anonymousid`, `loginid`, `userid`, `serial`, `macaddress`,
//!   `wifimac`, `phone`, `mobile`, `msisdn`, `email`, `latitude`, `longitude`, or with a word `uid`, `did`, `udid`,
//!   `uuid`, `guid`, `cuid`, `mac`, `adid`, `aaid`, `lat`, `lng`, `lon`, `gps`, `ssid`, `bssid`, `ip`, `tel`.
//!   (Sensors Analytics' `distinct_id` is the device or user id: masked.)
//! - **By shape**, whatever the key, values and path segments that look like identifiers are masked the same way:
//!   numbers of 9 digits or more (IMEIs, phone numbers), MAC addresses, e-mail addresses, UUIDs and hex strings of
//!   16 digits or more, base64-like tokens of 20 characters or more with letters and digits, JWTs.
//!
//! The summary lives only in the block event; nothing here stores or sends it anywhere.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Read;

/// Most request bytes (headers and body) read for a peek.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;
/// Most bytes a gzip stream is inflated to.
pub const MAX_INFLATED_LEN: usize = 256 * 1024;
/// Longest value (or path) shown, in characters.
pub const MAX_VALUE_CHARS: usize = 256;
/// Most fields kept per section (query, form).
pub const MAX_FIELDS: usize = 64;
/// Most values kept in one decoded JSON document.
pub const MAX_JSON_NODES: usize = 2000;
/// Most elements kept per JSON array (the rest are counted in a `"… N more"` element).
pub const MAX_ARRAY_ITEMS: usize = 100;
/// Deepest nesting kept in a decoded JSON document.
pub const MAX_JSON_DEPTH: usize = 12;
/// Most request headers parsed.
const MAX_HEADERS: usize = 64;
/// Shortest value tried as base64 (shorter ones are mostly plain words).
const MIN_BASE64_LEN: usize = 8;
/// Most bytes inflated from gzip over all the fields of one request: a request of many small gzip fields, each
/// inflating to [`MAX_INFLATED_LEN`], must not hold the engine thread (128 such fields took 104 ms before).
pub const MAX_INFLATED_PER_REQUEST: usize = 256 * 1024;
/// Most values decoded (base64, gzip, JSON) per request; later ones are shown as [`NOT_DECODED`].
pub const MAX_DECODES_PER_REQUEST: usize = 32;
/// The value shown for an encoded value left undecoded because the request's decoding budget was spent.
pub const NOT_DECODED: &str = "[not decoded: peek budget spent]";

/// The summary of one refused request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestPeek {
    /// Request method (`GET`, `POST`, …).
    pub method: String,
    /// Path without the query, cut at [`MAX_VALUE_CHARS`].
    pub path: String,
    /// Query parameters, decoded and redacted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<Field>,
    /// The Content-Type header, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The User-Agent header, if any (it often names the app and SDK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Body bytes received.
    pub body_len: usize,
    /// Form fields (urlencoded bodies; top-level entries of JSON object bodies whose values decode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub form: Vec<Field>,
    /// A JSON body, redacted and bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    /// A recognised upload format: `sensors_analytics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The request was longer than what was read, or did not finish in time.
    pub truncated: bool,
}

/// One query parameter or form field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The field name.
    pub name: String,
    /// The value as sent (percent-decoded), redacted and cut.
    pub value: String,
    /// What the value decodes to, if it is base64 (or gzip) of printable text or JSON, or JSON itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded: Option<Decoded>,
}

/// A decoded field value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decoded {
    /// Printable text (redacted and cut like values).
    Text(String),
    /// A JSON document (redacted and bounded).
    Json(Value),
}

/// How much of a request has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestProgress {
    /// Headers or body still incomplete.
    NeedMore,
    /// The whole request (or [`MAX_REQUEST_LEN`] of it) is here.
    Complete,
    /// Not an HTTP/1.x request.
    Invalid,
}

/// Says whether `raw` holds a whole request: headers, then a body of Content-Length bytes or a chunked body up to
/// its last chunk. Everything counts as complete once [`MAX_REQUEST_LEN`] bytes are here.
pub fn request_progress(raw: &[u8]) -> RequestProgress {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if raw.len() >= MAX_REQUEST_LEN => return RequestProgress::Complete,
        Ok(httparse::Status::Partial) => return RequestProgress::NeedMore,
        Err(_) => return RequestProgress::Invalid,
    };
    if raw.len() >= MAX_REQUEST_LEN {
        return RequestProgress::Complete;
    }
    let body = raw.get(head_len..).unwrap_or_default();
    match body_framing(req.headers) {
        Framing::Length(n) if body.len() < n => RequestProgress::NeedMore,
        Framing::Chunked if dechunk(body).is_none() => RequestProgress::NeedMore,
        _ => RequestProgress::Complete,
    }
}

/// True if the request's headers ask for `100 Continue` before the body is sent.
pub fn expects_continue(raw: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    matches!(req.parse(raw), Ok(httparse::Status::Complete(_)))
        && header(req.headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

enum Framing {
    None,
    Length(usize),
    Chunked,
}

fn body_framing(headers: &[httparse::Header<'_>]) -> Framing {
    if header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        Framing::Chunked
    } else if let Some(n) = header(headers, "content-length").and_then(|v| v.trim().parse().ok()) {
        Framing::Length(n)
    } else {
        Framing::None
    }
}

fn header<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h str> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
}

/// The data of a complete chunked body; `None` until the last chunk has arrived (or if malformed).
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(body.get(..line_end)?).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = body.get(line_end + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Summarises a request (as much as arrived; `truncated` says it is not all). `None` if it is not HTTP/1.x or its
/// headers are incomplete.
pub fn summarize_request(raw: &[u8], truncated: bool) -> Option<RequestPeek> {
    let raw = raw.get(..raw.len().min(MAX_REQUEST_LEN))?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let target = req.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let raw_body = raw.get(head_len..).unwrap_or_default();
    let (body, body_complete) = match body_framing(req.headers) {
        Framing::Chunked => match dechunk(raw_body) {
            Some(b) => (b, true),
            None => (raw_body.to_vec(), false),
        },
        Framing::Length(n) => (raw_body.get(..n.min(raw_body.len())).unwrap_or_default().to_vec(), raw_body.len() >= n),
        Framing::None => (raw_body.to_vec(), true),
    };
    let content_type = header(req.headers, "content-type").map(|v| cut(v.trim()));
    let mut budget = Budget::new();
    let mut peek = RequestPeek {
        method: cut(req.method.unwrap_or("")),
        path: cut(&redact_path(&percent_decode(path, false))),
        query: parse_urlencoded(query, &mut budget),
        content_type: content_type.clone(),
        user_agent: header(req.headers, "user-agent").map(|v| cut(v.trim())),
        body_len: body.len(),
        form: Vec::new(),
        json: None,
        kind: None,
        truncated: truncated || !body_complete || raw.len() >= MAX_REQUEST_LEN,
    };
    let ct = content_type.unwrap_or_default().to_ascii_lowercase();
    let body_text = std::str::from_utf8(&body).ok();
    let trimmed = body_text.map(str::trim_start).unwrap_or_default();
    if ct.contains("json") || trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(value) = serde_json::from_slice::<Value>(&body) {
            if let Value::Object(map) = &value {
                for (name, v) in map.iter().take(MAX_FIELDS) {
                    if let Value::String(s) = v {
                        let field = make_field(name, s, &mut budget);
                        if field.decoded.is_some() {
                            peek.form.push(field);
                        }
                    }
                }
            }
            peek.json = Some(bounded_json(value));
        }
    } else if ct.contains("x-www-form-urlencoded") || (ct.is_empty() && body_text.is_some_and(|t| t.contains('='))) {
        peek.form = parse_urlencoded(body_text.unwrap_or_default(), &mut budget);
    }
    peek.truncated |= budget.spent;
    let has = |fields: &[Field], name: &str| fields.iter().any(|f| f.name == name);
    for fields in [&peek.query, &peek.form] {
        if has(fields, "data_list") || (has(fields, "data") && (has(fields, "gzip") || has(fields, "crc"))) {
            peek.kind = Some("sensors_analytics".into());
        }
    }
    Some(peek)
}

/// Fields of an `application/x-www-form-urlencoded` string, at most [`MAX_FIELDS`].
fn parse_urlencoded(text: &str, budget: &mut Budget) -> Vec<Field> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .take(MAX_FIELDS)
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            make_field(&percent_decode(name, true), &percent_decode(value, true), budget)
        })
        .collect()
}

/// The decoding work one request's summary may still do.
struct Budget {
    inflate_left: usize,
    decodes_left: usize,
    /// Some value was left undecoded for lack of budget.
    spent: bool,
}

impl Budget {
    fn new() -> Self {
        Budget { inflate_left: MAX_INFLATED_PER_REQUEST, decodes_left: MAX_DECODES_PER_REQUEST, spent: false }
    }
}

/// A field with its value redacted by name and shape and decoded if it can be. A value that decodes is never
/// shown in its encoded form (which would repeat what the decoded form redacts), only its length.
fn make_field(name: &str, value: &str, budget: &mut Budget) -> Field {
    let class = classify_key(name);
    let decoded = match class {
        KeyClass::Secret => Ok(None),
        _ => decode_value(value, budget),
    };
    let (shown, decoded) = match decoded {
        Ok(Some(Decoded::Text(t))) => (encoded_marker(value), Some(Decoded::Text(redact_string(class, &t)))),
        Ok(Some(Decoded::Json(v))) => (encoded_marker(value), Some(Decoded::Json(v))),
        Ok(None) => (redact_string(class, value), None),
        Err(BudgetSpent) => (NOT_DECODED.to_owned(), None),
    };
    Field { name: cut(name), value: shown, decoded }
}

/// What is shown in place of an encoded value that decoded.
fn encoded_marker(value: &str) -> String {
    format!("[encoded: {} chars]", value.chars().count())
}

/// The request's decoding budget ran out before this value could be tried.
#[derive(Debug, PartialEq, Eq)]
struct BudgetSpent;

/// Decodes a value that is JSON, or base64 (standard or URL-safe, padded or not) of printable text or of JSON,
/// possibly gzip-compressed. `Err` if it might decode but the request's budget is spent.
fn decode_value(value: &str, budget: &mut Budget) -> Result<Option<Decoded>, BudgetSpent> {
    let trimmed = value.trim();
    let json_like = trimmed.starts_with('{') || trimmed.starts_with('[');
    let base64_like = trimmed.len() >= MIN_BASE64_LEN
        && trimmed.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'='));
    if !json_like && !base64_like {
        return Ok(None);
    }
    if budget.decodes_left == 0 {
        budget.spent = true;
        return Err(BudgetSpent);
    }
    budget.decodes_left -= 1;
    if json_like {
        if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
            return Ok(Some(Decoded::Json(bounded_json(v))));
        }
    }
    if !base64_like {
        return Ok(None);
    }
    let Some(bytes) =
        [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD].iter().find_map(|e| e.decode(trimmed).ok())
    else {
        return Ok(None);
    };
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let limit = MAX_INFLATED_LEN.min(budget.inflate_left);
        match gunzip(&bytes, limit) {
            Some(inflated) => {
                budget.inflate_left -= inflated.len();
                inflated
            }
            None if limit < MAX_INFLATED_LEN => {
                budget.spent = true;
                return Err(BudgetSpent);
            }
            None => return Ok(None),
        }
    } else {
        bytes
    };
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        if v.is_object() || v.is_array() {
            return Ok(Some(Decoded::Json(bounded_json(v))));
        }
    }
    let Ok(text) = String::from_utf8(bytes) else {
        return Ok(None);
    };
    let printable = !text.is_empty() && text.chars().all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'));
    Ok(printable.then(|| Decoded::Text(cut(&text))))
}

/// Inflates a gzip stream, at most `limit` bytes; `None` if it is corrupt or larger.
fn gunzip(bytes: &[u8], limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let take = u64::try_from(limit).ok()? + 1;
    flate2::read::GzDecoder::new(bytes).take(take).read_to_end(&mut out).ok()?;
    (out.len() <= limit).then_some(out)
}

/// Percent-decoding of a URL component (`+` is a space in form encoding); invalid escapes stay as they are.
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|&c| char::from(c).to_digit(16));
        match b {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How a key's value is redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyClass {
    Plain,
    Secret,
    Identifier,
}

/// Key substrings (of the key lowercased with punctuation removed) that mark a credential.
const SECRET_PARTS: [&str; 13] = [
    "password",
    "passwd",
    "passcode",
    "secret",
    "token",
    "cookie",
    "session",
    "auth",
    "apikey",
    "accesskey",
    "privatekey",
    "credential",
    "ticket",
];
/// Key words (split on punctuation and camelCase) that mark a credential.
const SECRET_WORDS: [&str; 7] = ["pwd", "pin", "otp", "sid", "sign", "signature", "captcha"];
/// Key substrings that mark an identifier of the device or the person.
const ID_PARTS: [&str; 25] = [
    "imei",
    "meid",
    "imsi",
    "iccid",
    "androidid",
    "oaid",
    "gaid",
    "vaid",
    "idfa",
    "idfv",
    "advertisingid",
    "deviceid",
    "distinctid",
    "anonymousid",
    "loginid",
    "userid",
    "serial",
    "macaddress",
    "phone",
    "mobile",
    "msisdn",
    "email",
    "latitude",
    "longitude",
    "wifimac",
];
/// Key words that mark an identifier (or a location) of the device or the person.
const ID_WORDS: [&str; 17] = [
    "uid", "did", "udid", "uuid", "guid", "cuid", "mac", "adid", "aaid", "lat", "lng", "lon", "gps", "ssid", "bssid",
    "ip", "tel",
];

/// The words of a key: split on punctuation and at lowercase-to-uppercase steps, lowercased
/// (`wifiMac` → `wifi`, `mac`; `device_did` → `device`, `did`).
fn key_words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        let boundary = !c.is_ascii_alphanumeric() || (prev_lower && c.is_ascii_uppercase());
        if boundary && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        if c.is_ascii_alphanumeric() {
            word.push(c.to_ascii_lowercase());
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn classify_key(key: &str) -> KeyClass {
    let norm: String = key.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    let words = key_words(key);
    let has_word = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str())) || list.contains(&norm.as_str());
    if has_word(&SECRET_WORDS) || SECRET_PARTS.iter().any(|p| norm.contains(p)) {
        KeyClass::Secret
    } else if has_word(&ID_WORDS) || ID_PARTS.iter().any(|p| norm.contains(p)) {
        KeyClass::Identifier
    } else {
        KeyClass::Plain
    }
}

/// Whether a value looks like an identifier whatever its key: an IMEI, phone number or other long number, a MAC
/// address, an e-mail address, a UUID or long hex string, a long base64 token.
fn looks_like_identifier(value: &str) -> bool {
    let v = value.trim();
    let digits = v.bytes().filter(u8::is_ascii_digit).count();
    let number_like = v.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'+' | b' ' | b'-' | b'(' | b')' | b'.'));
    if number_like && digits >= 9 {
        return true;
    }
    let mac = v.len() == 17
        && v.split([':', '-']).count() == 6
        && v.split([':', '-']).all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if mac {
        return true;
    }
    if let Some((local, domain)) = v.split_once('@') {
        if !local.is_empty() && domain.contains('.') && !v.contains(char::is_whitespace) {
            return true;
        }
    }
    let hex_digits = v.bytes().filter(u8::is_ascii_hexdigit).count();
    if hex_digits >= 16 && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return true;
    }
    let token = |t: &str, min: usize| {
        t.len() >= min
            && t.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'='))
            && t.bytes().any(|b| b.is_ascii_digit())
            && t.bytes().any(|b| b.is_ascii_alphabetic())
    };
    // A long token, or a JWT (three base64url parts).
    token(v, 20) || (v.split('.').count() == 3 && v.split('.').all(|part| token(part, 8)))
}

/// A path with the segments that look like identifiers masked.
fn redact_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if looks_like_identifier(segment) {
                redact_string(KeyClass::Identifier, segment)
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A value as shown for a key of this class, cut at [`MAX_VALUE_CHARS`].
fn redact_string(class: KeyClass, value: &str) -> String {
    match class {
        KeyClass::Plain if looks_like_identifier(value) => redact_string(KeyClass::Identifier, value),
        KeyClass::Plain => cut(value),
        KeyClass::Secret => "[redacted]".into(),
        KeyClass::Identifier => {
            let chars: Vec<char> = value.chars().take(MAX_VALUE_CHARS).collect();
            let n = chars.len();
            chars.iter().enumerate().map(|(i, &c)| if n > 6 && (i < 2 || i + 2 >= n) { c } else { '*' }).collect()
        }
    }
}

/// Cuts text at [`MAX_VALUE_CHARS`] characters, marking the cut.
fn cut(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(MAX_VALUE_CHARS).collect();
    let rest = chars.count();
    if rest == 0 {
        head
    } else {
        format!("{head}…(+{rest})")
    }
}

/// A JSON document redacted by key and bounded in size and depth.
fn bounded_json(value: Value) -> Value {
    let mut budget = MAX_JSON_NODES;
    redact_json(value, KeyClass::Plain, 0, &mut budget)
}

fn redact_json(value: Value, class: KeyClass, depth: usize, budget: &mut usize) -> Value {
    if *budget == 0 || depth > MAX_JSON_DEPTH {
        return Value::String("…".into());
    }
    *budget -= 1;
    match value {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let child_class = match classify_key(&k) {
                    KeyClass::Plain => class,
                    c => c,
                };
                let v = redact_json(v, child_class, depth + 1, budget);
                out.insert(k, v);
                if *budget == 0 {
                    out.insert("…".into(), Value::String("cut".into()));
                    break;
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            let total = items.len();
            for v in items {
                if *budget == 0 || out.len() >= MAX_ARRAY_ITEMS {
                    out.push(Value::String(format!("… {} more", total - out.len())));
                    break;
                }
                out.push(redact_json(v, class, depth + 1, budget));
            }
            Value::Array(out)
        }
        // A string holding JSON is shown as that JSON, redacted, never as the text that would repeat it.
        Value::String(s) if class != KeyClass::Secret && s.trim_start().starts_with(['{', '[']) => {
            match serde_json::from_str::<Value>(&s) {
                Ok(inner @ (Value::Object(_) | Value::Array(_))) => redact_json(inner, class, depth + 1, budget),
                _ => Value::String(redact_string(class, &s)),
            }
        }
        Value::String(s) => Value::String(redact_string(class, &s)),
        Value::Number(_) | Value::Bool(_) if class == KeyClass::Secret => Value::String("[redacted]".into()),
        Value::Number(n) if class == KeyClass::Identifier => Value::String(redact_string(class, &n.to_string())),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use flate2::write::GzEncoder;
    use proptest::prelude::*;
    use serde_json::json;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn urlencode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// A Sensors Analytics Android SDK batch: two events with the device properties such SDKs collect.
    fn sensors_events() -> Value {
        json!([
            {
                "_track_id": 1_204_512_991,
                "time": 1_700_000_000_123u64,
                "type": "track",
                "distinct_id": "a1b2c3d4e5f60718",
                "anonymous_id": "a1b2c3d4e5f60718",
                "identities": {"$identity_android_id": "a1b2c3d4e5f60718"},
                "lib": {"$lib": "Android", "$lib_version": "6.6.9", "$app_version": "3.2.1"},
                "event": "$AppStart",
                "properties": {
                    "$os": "Android", "$os_version": "11", "$model": "Redmi Note 8", "$manufacturer": "Xiaomi",
                    "$screen_width": 1080, "$screen_height": 2340, "$wifi": true, "$network_type": "WIFI",
                    "$carrier": "China Mobile", "$is_first_day": false, "$device_id": "a1b2c3d4e5f60718",
                    "imei": "861234567890123", "$resume_from_background": false
                }
            },
            {
                "time": 1_700_000_004_000u64,
                "type": "track",
                "distinct_id": "a1b2c3d4e5f60718",
                "event": "$AppViewScreen",
                "properties": {"$screen_name": "com.example.MainActivity", "$title": "Home", "user_token": "s3cr3t"}
            }
        ])
    }

    fn sensors_post(gzip_it: bool) -> Vec<u8> {
        let events = serde_json::to_vec(&sensors_events()).unwrap();
        let (field, flag) = if gzip_it { (gzip(&events), "1") } else { (events, "0") };
        let body = format!("crc=-1234567&gzip={flag}&data_list={}", urlencode(&STANDARD.encode(field)));
        let mut req = format!(
            "POST /sa?project=production HTTP/1.1\r\nHost: sa.api.intl.miui.com\r\nUser-Agent: okhttp/4.9.0\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body.as_bytes());
        req
    }

    fn field<'a>(fields: &'a [Field], name: &str) -> &'a Field {
        fields.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no field {name} in {fields:?}"))
    }

    #[test]
    fn sensors_analytics_gzip_upload_decodes_to_its_events() {
        let req = sensors_post(true);
        assert_eq!(request_progress(&req), RequestProgress::Complete);
        let peek = summarize_request(&req, false).unwrap();
        assert_eq!((peek.method.as_str(), peek.path.as_str()), ("POST", "/sa"));
        assert_eq!(field(&peek.query, "project").value, "production");
        assert_eq!(peek.kind.as_deref(), Some("sensors_analytics"));
        assert_eq!(peek.user_agent.as_deref(), Some("okhttp/4.9.0"));
        assert!(!peek.truncated);
        assert_eq!(field(&peek.form, "gzip").value, "1");
        let Some(Decoded::Json(events)) = &field(&peek.form, "data_list").decoded else {
            panic!("data_list not decoded: {peek:?}");
        };
        assert_eq!(events[0]["event"], "$AppStart");
        assert_eq!(events[0]["properties"]["$model"], "Redmi Note 8");
        assert_eq!(events[0]["properties"]["$screen_width"], 1080);
        assert_eq!(events[1]["properties"]["$screen_name"], "com.example.MainActivity");
        // Identifiers masked, shape kept; credentials redacted.
        assert_eq!(events[0]["distinct_id"], "a1************18");
        assert_eq!(events[0]["identities"]["$identity_android_id"], "a1************18");
        assert_eq!(events[0]["properties"]["imei"], "86***********23");
        assert_eq!(events[0]["properties"]["$device_id"], "a1************18");
        assert_eq!(events[1]["properties"]["user_token"], "[redacted]");
        let text = serde_json::to_string(&peek).unwrap();
        assert!(!text.contains("861234567890123") && !text.contains("s3cr3t") && !text.contains("a1b2c3d4e5f60718"));
    }

    #[test]
    fn plain_base64_json_data_field_decodes() {
        let events = serde_json::to_vec(&sensors_events()).unwrap();
        let target = format!("/sa.gif?project=default&data={}&ext=crc%3D1", urlencode(&STANDARD.encode(&events)));
        let req = format!("GET {target} HTTP/1.1\r\nHost: sa.example\r\n\r\n").into_bytes();
        assert_eq!(request_progress(&req), RequestProgress::Complete);
        let peek = summarize_request(&req, false).unwrap();
        let Some(Decoded::Json(v)) = &field(&peek.query, "data").decoded else { panic!("{peek:?}") };
        assert_eq!(v[1]["event"], "$AppViewScreen");
        assert_eq!(field(&peek.query, "ext").value, "crc=1");
        // Uncompressed data_list is decoded the same way.
        let peek = summarize_request(&sensors_post(false), false).unwrap();
        assert!(matches!(field(&peek.form, "data_list").decoded, Some(Decoded::Json(_))));
    }

    #[test]
    fn form_and_query_fields_are_decoded_and_redacted() {
        let body = format!(
            "user=alice&password=hunter2&note={}&imei=861234567890123&android_id=1234&msg=hello+world%21",
            urlencode(&STANDARD.encode("device rooted: no"))
        );
        let req = format!(
            "POST /login?access_token=abc.def&v=2 HTTP/1.1\r\nHost: h\r\nCookie: c=1\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let peek = summarize_request(req.as_bytes(), false).unwrap();
        assert_eq!(field(&peek.query, "access_token").value, "[redacted]");
        assert_eq!(field(&peek.query, "v").value, "2");
        assert_eq!(field(&peek.form, "user").value, "alice");
        assert_eq!(field(&peek.form, "password").value, "[redacted]");
        assert_eq!(field(&peek.form, "password").decoded, None);
        assert_eq!(field(&peek.form, "note").decoded, Some(Decoded::Text("device rooted: no".into())));
        assert_eq!(field(&peek.form, "imei").value, "86***********23");
        assert_eq!(field(&peek.form, "android_id").value, "****");
        assert_eq!(field(&peek.form, "msg").value, "hello world!");
        assert!(!serde_json::to_string(&peek).unwrap().contains("c=1"), "cookies are never read");
    }

    #[test]
    fn json_bodies_are_kept_redacted_and_bounded() {
        let inner = STANDARD.encode(br#"{"k":"v"}"#);
        let body = json!({"event": "open", "token": "t0k", "payload": inner, "n": 3,
            "list": (0..5000).collect::<Vec<u32>>()})
        .to_string();
        let req = format!(
            "POST /collect HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let peek = summarize_request(req.as_bytes(), false).unwrap();
        let json = peek.json.as_ref().unwrap();
        assert_eq!(json["event"], "open");
        assert_eq!(json["token"], "[redacted]");
        let list = json["list"].as_array().unwrap();
        assert_eq!(list.len(), MAX_ARRAY_ITEMS + 1, "bounded");
        assert_eq!(list[MAX_ARRAY_ITEMS], "… 4900 more");
        assert!(list.last().unwrap().as_str().unwrap().contains("more"));
        assert_eq!(field(&peek.form, "payload").decoded, Some(Decoded::Json(json!({"k": "v"}))));
    }

    #[test]
    fn progress_follows_framing() {
        assert_eq!(request_progress(b"GET / HTTP/1.1\r\nHost: h\r\n"), RequestProgress::NeedMore);
        assert_eq!(request_progress(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"), RequestProgress::Complete);
        let head = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(request_progress(head), RequestProgress::NeedMore);
        assert_eq!(request_progress(&[&head[..], b"0123456789"].concat()), RequestProgress::Complete);
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\na=b&c\r\n";
        assert_eq!(request_progress(chunked), RequestProgress::NeedMore);
        let done = [&chunked[..], b"0\r\n\r\n"].concat();
        assert_eq!(request_progress(&done), RequestProgress::Complete);
        assert_eq!(summarize_request(&done, false).unwrap().form[0].name, "a");
        assert_eq!(request_progress(b"\x16\x03\x01"), RequestProgress::Invalid);
        // A huge announced body counts as complete at the bound, and the summary says truncated.
        let mut big = b"POST / HTTP/1.1\r\nContent-Length: 999999\r\n\r\n".to_vec();
        big.resize(MAX_REQUEST_LEN, b'a');
        assert_eq!(request_progress(&big), RequestProgress::Complete);
        assert!(summarize_request(&big, false).unwrap().truncated);
        assert!(expects_continue(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"));
    }

    #[test]
    fn gzip_bombs_and_binary_are_not_decoded() {
        let decode = |v: &str| decode_value(v, &mut Budget::new());
        let bomb = STANDARD.encode(gzip(&vec![b'a'; MAX_INFLATED_LEN + 10]));
        assert_eq!(decode(&bomb), Ok(None));
        assert_eq!(decode(&STANDARD.encode([0u8, 1, 2, 3, 250, 251, 252, 253])), Ok(None));
        assert_eq!(decode("short"), Ok(None));
        assert_eq!(decode("not base64 at all!"), Ok(None));
        let long = "x".repeat(1000);
        assert!(cut(&long).ends_with("…(+744)"));
    }

    /// Before: `p={"password":"hunter2"}` was shown verbatim beside its redacted decoded form.
    #[test]
    fn encoded_values_are_never_shown_in_their_encoded_form() {
        let json = urlencode(r#"{"password":"hunter2","imei":"861234567890123"}"#);
        let b64 = urlencode(&STANDARD.encode(r#"{"password":"hunter2"}"#));
        let req = format!("GET /c?p={json}&q={b64} HTTP/1.1\r\nHost: h\r\n\r\n");
        let peek = summarize_request(req.as_bytes(), false).unwrap();
        assert_eq!(field(&peek.query, "p").value, "[encoded: 47 chars]");
        assert_eq!(
            field(&peek.query, "p").decoded,
            Some(Decoded::Json(json!({"password": "[redacted]",
            "imei": "86***********23"})))
        );
        assert!(field(&peek.query, "q").value.starts_with("[encoded"));
        // A JSON body whose string values hold JSON shows them decoded and redacted.
        let body = json!({"e": r#"{"password":"hunter2"}"#}).to_string();
        let req = format!(
            "POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let peek = summarize_request(req.as_bytes(), false).unwrap();
        let text = serde_json::to_string(&peek).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
    }

    /// Before: `did`, `udid`, `uuid`, `pin`, `otp`, `wifi_mac`, `lat`/`lng`, `access_key` were shown as sent.
    #[test]
    fn keys_are_redacted_by_their_words() {
        for key in ["pin", "otp", "access_key", "accessKey", "sms_otp", "userPin", "secret_key", "passcode"] {
            assert_eq!(classify_key(key), KeyClass::Secret, "{key}");
        }
        for key in [
            "did",
            "udid",
            "uuid",
            "wifi_mac",
            "wifiMac",
            "lat",
            "lng",
            "lon",
            "latitude",
            "longitude",
            "device_did",
            "client_ip",
            "bssid",
        ] {
            assert_eq!(classify_key(key), KeyClass::Identifier, "{key}");
        }
        for key in ["event", "platform", "model", "latency", "display", "version", "pinned_tab"] {
            assert_eq!(classify_key(key), KeyClass::Plain, "{key}");
        }
    }

    /// Before: identifiers under innocent keys (and in the path) were shown as sent.
    #[test]
    fn values_and_path_segments_are_redacted_by_their_shape() {
        for value in [
            "861234567890123",
            "+86 138 0013 8000",
            "a4:5e:60:e8:12:34",
            "someone@example.com",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "a1b2c3d4e5f60718",
            "dGhpcyBpcyBhIHRva2VuMTIz",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlMTIz",
        ] {
            assert!(looks_like_identifier(value), "{value}");
            assert_ne!(redact_string(KeyClass::Plain, value), value, "{value}");
        }
        for value in ["Redmi Note 8", "com.example.MainActivity", "6.6.9", "-1234567", "hello world!", "WIFI"] {
            assert!(!looks_like_identifier(value), "{value}");
        }
        // Six characters or fewer are masked whole; longer ones keep two at each end.
        assert_eq!(redact_string(KeyClass::Identifier, "abcdef"), "******");
        assert_eq!(redact_string(KeyClass::Identifier, "abcdefg"), "ab***fg");
        // Near misses: 17 characters but not a MAC, six parts but not hex, no domain, an empty or spaced
        // address, hex with other characters.
        for value in [
            "com.example.MainA",
            "a4:5e:60:e8:12:zz",
            "a4:5e:60:e8:1234",
            "user@localhost",
            "@example.com",
            "my name@example.com",
            "0f8fad5b d9cb 469f a165",
        ] {
            assert!(!looks_like_identifier(value), "{value}");
        }
        let req = "GET /v1/device/861234567890123/a1b2c3d4e5f60718/report HTTP/1.1\r\nHost: h\r\n\r\n";
        let peek = summarize_request(req.as_bytes(), false).unwrap();
        assert_eq!(peek.path, "/v1/device/86***********23/a1************18/report");
    }

    /// JSON is redacted by key: under a secret's key numbers and booleans are hidden and a string holding JSON is
    /// not opened; under an identifier's key numbers are masked; other strings holding JSON are opened and
    /// redacted in turn.
    #[test]
    fn json_is_redacted_by_key() {
        let out = bounded_json(json!({
            "pin": 1234,
            "sid": true,
            "password": "{\"a\":1}",
            "imei": 861234567890123u64,
            "count": 5,
            "nested": "{\"imei\": 861234567890123}",
        }));
        assert_eq!(
            (&out["pin"], &out["sid"], &out["password"]),
            (&json!("[redacted]"), &json!("[redacted]"), &json!("[redacted]"))
        );
        assert_eq!((&out["imei"], &out["count"]), (&json!("86***********23"), &json!(5)));
        assert_eq!(out["nested"]["imei"], json!("86***********23"));
    }

    /// Twelve levels of nesting are kept, the thirteenth is cut, also inside strings holding JSON and arrays.
    #[test]
    fn json_is_cut_past_twelve_levels() {
        let nest = |levels: usize, inner: Value| (0..levels).fold(inner, |v, _| json!({ "a": v }));
        let depth_of = |mut v: &Value| {
            let mut depth = 0;
            while let Some(inner) = v.get("a") {
                v = inner;
                depth += 1;
            }
            (depth, v.clone())
        };
        assert_eq!(depth_of(&bounded_json(nest(12, json!(1)))), (12, json!(1)));
        assert_eq!(depth_of(&bounded_json(nest(13, json!(1)))), (13, json!("…")));
        let in_arrays = bounded_json((0..12).fold(json!(1), |v, _| json!([v])));
        assert_eq!(in_arrays.to_string(), format!("{}1{}", "[".repeat(12), "]".repeat(12)));
        let in_arrays = bounded_json((0..13).fold(json!(1), |v, _| json!([v])));
        assert_eq!(in_arrays.to_string(), format!("{}\"…\"{}", "[".repeat(13), "]".repeat(13)));
    }

    /// JSON inside a string counts as a level deeper than the string: seven objects each in a string of the one
    /// before are 14 levels, and cut.
    #[test]
    fn json_inside_strings_counts_toward_the_depth() {
        let top = bounded_json(json!("{\"a\":1}"));
        assert_eq!(top, json!({"a": 1}), "a string of JSON at the top is opened");
        let nested = (0..7).fold(json!(1), |v, _| json!({ "a": v.to_string() }));
        assert!(bounded_json(nested).to_string().contains('…'));
    }

    /// A secret's value is never decoded, even when it is base64 of JSON (what it holds is not shown).
    #[test]
    fn secrets_are_not_decoded() {
        let encoded = STANDARD.encode(br#"{"user":"alice","pin":"1234"}"#);
        let body = format!("password={}&other={}", urlencode(&encoded), urlencode(&encoded));
        let req = format!(
            "POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let peek = summarize_request(req.as_bytes(), false).unwrap();
        assert_eq!(peek.form[0].name, "password");
        assert!(peek.form[0].decoded.is_none() && !peek.form[0].value.contains(&encoded), "{:?}", peek.form[0]);
        assert!(peek.form[1].decoded.is_some(), "the same value under a plain name decodes");
    }

    /// A gzip field inflating to about 100 KB (within the 256 KiB a field may take) is decoded.
    #[test]
    fn a_large_gzip_field_is_decoded() {
        let json = format!("[{}]", vec![r#"{"e":1}"#; 12_000].join(","));
        let body = format!("data={}", urlencode(&STANDARD.encode(gzip(json.as_bytes()))));
        let req = format!(
            "POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let peek = summarize_request(req.as_bytes(), false).unwrap();
        assert!(matches!(peek.form[0].decoded, Some(Decoded::Json(_))), "{:?}", peek.form[0].value);
    }

    /// A head still unfinished at the request cap counts as complete: the peek answers rather than wait.
    #[test]
    fn an_endless_head_is_complete_at_the_cap() {
        let mut raw = b"POST / HTTP/1.1\r\nX: ".to_vec();
        raw.resize(MAX_REQUEST_LEN, b'a');
        assert_eq!(request_progress(&raw), RequestProgress::Complete);
        assert_eq!(request_progress(&raw[..MAX_REQUEST_LEN - 1]), RequestProgress::NeedMore);
    }

    /// Before: 128 base64-gzip fields in a 50 KB request each inflated to 256 KiB (104 ms on the engine thread).
    /// Now the request's inflate budget (256 KiB) goes to the first field and the rest are left undecoded. The
    /// work is counted, not timed (a timed unit test fails on a loaded machine and proves little).
    /// A POST of `body` with `content_type` (none if empty), whose Content-Length says `length`.
    fn post(content_type: &str, body: &str, length: usize) -> Vec<u8> {
        let ct = if content_type.is_empty() { String::new() } else { format!("Content-Type: {content_type}\r\n") };
        format!("POST /p HTTP/1.1\r\nHost: h\r\n{ct}Content-Length: {length}\r\n\r\n{body}").into_bytes()
    }

    #[test]
    fn a_body_cut_short_is_marked_truncated_and_a_whole_one_is_not() {
        assert!(!summarize_request(&post("", "a=b", 3), false).unwrap().truncated, "whole");
        assert!(summarize_request(&post("", "a=b", 100), false).unwrap().truncated, "3 of 100 bytes");
        assert!(summarize_request(&post("", "a=b", 3), true).unwrap().truncated, "cut by the caller");
    }

    #[test]
    fn json_is_known_by_its_type_or_first_character_and_forms_by_type_or_shape() {
        let json = |ct: &str, body: &str| summarize_request(&post(ct, body, body.len()), false).unwrap().json;
        assert_eq!(json("", r#"{"k":"v"}"#), Some(json!({"k": "v"})), "an object without a type");
        assert_eq!(json("", "[1,2]"), Some(json!([1, 2])), "an array without a type");
        assert_eq!(json("application/json", " 7"), Some(json!(7)), "by its type");
        assert_eq!(json("text/plain", "a=b"), None);
        let form = |ct: &str| summarize_request(&post(ct, "a=b", 3), false).unwrap().form.len();
        assert_eq!((form(""), form("application/x-www-form-urlencoded"), form("text/plain")), (1, 1, 0));
    }

    #[test]
    fn sensors_analytics_uploads_are_known_by_their_fields() {
        let kind = |body: &str| summarize_request(&post("", body, body.len()), false).unwrap().kind;
        let sa = Some("sensors_analytics".to_owned());
        assert_eq!(kind("data_list=x"), sa);
        assert_eq!(kind("data=x&gzip=1"), sa);
        assert_eq!(kind("data=x&crc=1"), sa);
        assert_eq!(kind("data=x"), None, "data alone");
        assert_eq!(kind("foo=bar&gzip=1"), None);
    }

    #[test]
    fn a_plus_in_the_path_stays_a_plus() {
        let peek = summarize_request(b"GET /a+b%21 HTTP/1.1\r\nHost: h\r\n\r\n", false).unwrap();
        assert_eq!(peek.path, "/a+b!");
        let peek = summarize_request(b"GET /?q=a+b HTTP/1.1\r\nHost: h\r\n\r\n", false).unwrap();
        assert_eq!(peek.query[0].value, "a b", "a space in form encoding");
    }

    #[test]
    fn text_with_control_characters_is_not_shown_decoded() {
        let value = urlencode(&STANDARD.encode("\u{1}\u{2}looks like text"));
        let body = format!("v={value}");
        let peek = summarize_request(&post("", &body, body.len()), false).unwrap();
        assert_eq!(peek.form[0].decoded, None);
    }

    #[test]
    fn the_decode_budget_counts_only_values_that_may_decode() {
        let hello = urlencode(&STANDARD.encode("hello world"));
        // Long values that cannot be base64 (spaces) or JSON are not tries: the last field still decodes.
        let plain: String = (0..40).map(|i| format!("p{i}=plain+text+value&")).collect();
        let body = format!("{plain}last={hello}");
        let peek = summarize_request(&post("", &body, body.len()), false).unwrap();
        assert_eq!(peek.form[40].decoded, Some(Decoded::Text("hello world".into())));
        assert!(!peek.truncated);
        // Values that may decode: the first MAX_DECODES_PER_REQUEST are tried, the rest are not.
        let body: String = (0..40).map(|i| format!("b{i}={hello}&")).collect();
        let peek = summarize_request(&post("", &body, body.len()), false).unwrap();
        let decoded = peek.form.iter().filter(|f| f.decoded.is_some()).count();
        let skipped = peek.form.iter().filter(|f| f.value == NOT_DECODED).count();
        assert_eq!((decoded, skipped), (MAX_DECODES_PER_REQUEST, 40 - MAX_DECODES_PER_REQUEST));
        assert!(peek.truncated);
    }

    #[test]
    fn the_inflate_budget_is_shared_by_a_requests_fields() {
        let big = urlencode(&STANDARD.encode(gzip(&vec![b'a'; 100 * 1024])));
        let body: String = (0..3).map(|i| format!("g{i}={big}&")).collect();
        let peek = summarize_request(&post("", &body, body.len()), false).unwrap();
        let shown: Vec<bool> = peek.form.iter().map(|f| f.decoded.is_some()).collect();
        assert_eq!(shown, [true, true, false], "200 of 256 KiB inflated; the third would pass the budget");
        assert_eq!(peek.form[2].value, NOT_DECODED);
    }

    #[test]
    fn a_json_body_is_cut_at_its_node_budget() {
        let arrays: Vec<String> = (0..30).map(|i| format!(r#""a{i}":[{}]"#, vec!["1"; 99].join(","))).collect();
        let body = format!("{{{}}}", arrays.join(","));
        let peek = summarize_request(&post("application/json", &body, body.len()), false).unwrap();
        let json = peek.json.expect("json");
        let object = json.as_object().expect("an object");
        assert!(object.len() < 30, "cut after {MAX_JSON_NODES} nodes: {} keys kept", object.len());
        assert_eq!(object.get("…"), Some(&json!("cut")));
    }

    #[test]
    fn decoding_work_per_request_is_bounded() {
        let bomb = urlencode(&STANDARD.encode(gzip(&vec![b'{'; MAX_INFLATED_LEN])));
        let body: String = (0..128).map(|i| format!("f{i}={bomb}&")).collect();
        assert!(body.len() <= MAX_REQUEST_LEN - 200, "{}", body.len());
        let req = format!(
            "POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let peek = summarize_request(req.as_bytes(), false).unwrap();
        assert!(peek.truncated, "marked as cut");
        assert_eq!(peek.form.len(), 64, "the fields kept");
        assert_eq!(peek.form.iter().filter(|f| f.value == NOT_DECODED).count(), 63, "only the first is inflated");
    }

    proptest! {
        #[test]
        fn arbitrary_requests_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = request_progress(&bytes);
            let _ = summarize_request(&bytes, false);
            let mut req = b"POST /x?a=%zz&b=%4 HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n".to_vec();
            req.extend_from_slice(&bytes);
            let _ = summarize_request(&req, true);
        }

        #[test]
        fn arbitrary_values_never_panic(value in ".{0,300}") {
            let _ = make_field("data_list", &value, &mut Budget::new());
            let _ = percent_decode(&value, true);
        }
    }
}
