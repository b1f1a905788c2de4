//! Events: what the engine reports to the user interface (every block, and optionally every allowed flow).
//!
//! An event is complete when it is queued: the engine never changes one afterwards. Its [`Outcome`] says what
//! happened and why; block, allow and error reasons are distinct types, so they cannot be mixed. The JSON form
//! (`hushwall run --events`) is flat: `"action"` and `"reason"` codes beside the other fields (see [`Event`]).

use crate::inspect::peek::RequestPeek;
use crate::verdict::{Action, AllowReason, BlockReason, ErrorReason, Reason, RuleRef, Verdict};
use serde::{Deserialize, Serialize, Serializer};
use std::net::SocketAddr;

/// The transport a verdict applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// A TCP connection.
    Tcp,
    /// A UDP flow (other than DNS).
    Udp,
    /// A DNS query (over UDP or TCP).
    Dns,
    /// An ICMP or ICMPv6 message.
    Icmp,
}

/// What happened to a flow or query: a verdict (with its rule, if a list rule decided) or a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded.
    Allow {
        /// Why.
        reason: AllowReason,
        /// The deciding list rule, if any.
        rule: Option<RuleRef>,
    },
    /// Refused.
    Block {
        /// Why.
        reason: BlockReason,
        /// The deciding list rule, if any.
        rule: Option<RuleRef>,
    },
    /// Not a verdict: an allowed flow or query failed upstream or was ended by the engine.
    Error {
        /// What kind of failure.
        reason: ErrorReason,
        /// What failed, e.g. "Connection refused (os error 111)".
        error: String,
    },
}

impl Outcome {
    /// Allow, block or error.
    pub fn action(&self) -> Action {
        self.reason().action()
    }

    /// Why, with its kind.
    pub fn reason(&self) -> Reason {
        match self {
            Outcome::Allow { reason, .. } => Reason::Allow(*reason),
            Outcome::Block { reason, .. } => Reason::Block(*reason),
            Outcome::Error { reason, .. } => Reason::Error(*reason),
        }
    }

    /// The deciding list rule, if any (never for an error).
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            Outcome::Allow { rule, .. } | Outcome::Block { rule, .. } => rule.as_ref(),
            Outcome::Error { .. } => None,
        }
    }

    /// For an error: what failed.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Error { error, .. } => Some(error),
            Outcome::Allow { .. } | Outcome::Block { .. } => None,
        }
    }
}

impl From<Verdict> for Outcome {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Allow { reason, rule } => Outcome::Allow { reason, rule },
            Verdict::Block { reason, rule } => Outcome::Block { reason, rule },
        }
    }
}

/// One decision about one flow or DNS query, as shown in the block log, or (action `error`) an upstream failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Transport.
    pub protocol: Protocol,
    /// The client (phone-side) address and port.
    pub src: SocketAddr,
    /// The destination address and port the client asked for.
    pub dst: SocketAddr,
    /// The host name involved, if known (DNS question, SNI, Host header or a name mapped from DNS answers).
    pub host: Option<String>,
    /// Allowed, blocked or failed, why, and the deciding rule or what failed.
    pub outcome: Outcome,
    /// The app (Linux/Android UID) that owns the flow, if the platform could tell.
    pub uid: Option<u32>,
    /// With the payload peek on: what a refused plain-HTTP request tried to send (bounded, redacted).
    pub peek: Option<RequestPeek>,
    /// A summary of identical blocks or errors (same action, protocol, source address, destination, host, reason and app)
    /// folded within a few seconds of the first, which was reported on its own: it stands for this many of them,
    /// and `time_ms` is the last one's. Absent on ordinary events.
    pub repeats: Option<u64>,
}

impl Event {
    /// Allow, block or error.
    pub fn action(&self) -> Action {
        self.outcome.action()
    }

    /// Why, with its kind.
    pub fn reason(&self) -> Reason {
        self.outcome.reason()
    }

    /// The deciding list rule, if any.
    pub fn rule(&self) -> Option<&RuleRef> {
        self.outcome.rule()
    }

    /// For an error: what failed.
    pub fn error(&self) -> Option<&str> {
        self.outcome.error()
    }
}

/// The JSON form of an [`Event`], field by field in this order: `action` and `reason` are codes, `rule` is null
/// when no list rule decided, `peek`, `error` and `repeats` are left out when absent.
#[derive(Serialize)]
struct EventJson<'a> {
    time_ms: u64,
    action: Action,
    protocol: Protocol,
    src: SocketAddr,
    dst: SocketAddr,
    host: Option<&'a str>,
    reason: Reason,
    rule: Option<&'a RuleRef>,
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    peek: Option<&'a RequestPeek>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repeats: Option<u64>,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        EventJson {
            time_ms: self.time_ms,
            action: self.action(),
            protocol: self.protocol,
            src: self.src,
            dst: self.dst,
            host: self.host.as_deref(),
            reason: self.reason(),
            rule: self.rule(),
            uid: self.uid,
            peek: self.peek.as_ref(),
            error: self.error(),
            repeats: self.repeats,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(outcome: Outcome) -> Event {
        Event {
            time_ms: 1_700_000_000_000,
            protocol: Protocol::Dns,
            src: "10.111.0.1:40000".parse().unwrap(),
            dst: "198.18.53.53:53".parse().unwrap(),
            host: Some("tracking.intl.miui.com".into()),
            outcome,
            uid: None,
            peek: None,
            repeats: None,
        }
    }

    #[test]
    fn a_block_serialises_flat_in_the_documented_order() {
        let rule =
            RuleRef { list: "builtin:xiaomi-telemetry.txt".into(), line: 12, rule: "||tracking.intl.miui.com^".into() };
        let block = event(Outcome::Block { reason: BlockReason::DnsQuery, rule: Some(rule) });
        assert_eq!(
            serde_json::to_string(&block).unwrap(),
            r#"{"time_ms":1700000000000,"action":"block","protocol":"dns","src":"10.111.0.1:40000","dst":"198.18.53.53:53","host":"tracking.intl.miui.com","reason":"dns_query","rule":{"list":"builtin:xiaomi-telemetry.txt","line":12,"rule":"||tracking.intl.miui.com^"},"uid":null}"#
        );
    }

    #[test]
    fn an_error_carries_its_text_and_a_null_rule() {
        let failed = Event {
            repeats: Some(3),
            ..event(Outcome::Error { reason: ErrorReason::DnsFailed, error: "no answer".into() })
        };
        let value = serde_json::to_value(&failed).unwrap();
        assert_eq!(value["action"], "error");
        assert_eq!(value["reason"], "dns_failed");
        assert_eq!(value["rule"], json!(null));
        assert_eq!(value["error"], "no answer");
        assert_eq!(value["repeats"], 3);
    }

    #[test]
    fn every_reason_reaches_json_as_its_code_with_its_action() {
        for reason in Reason::all() {
            let outcome = match reason {
                Reason::Allow(reason) => Outcome::Allow { reason, rule: None },
                Reason::Block(reason) => Outcome::Block { reason, rule: None },
                Reason::Error(reason) => Outcome::Error { reason, error: "x".into() },
            };
            let value = serde_json::to_value(event(outcome)).unwrap();
            assert_eq!(value["reason"], reason.code(), "{reason:?}");
            assert_eq!(value["action"], serde_json::to_value(reason.action()).unwrap());
        }
    }
}
