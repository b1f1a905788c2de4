//! Payload peek for blocked plain-HTTP requests ([`EngineConfig::peek`](crate::engine::EngineConfig::peek)).
//!
//! A sniffed flow whose Host is blocked has already been accepted locally (the server was never dialled). With the
//! peek on, instead of a RST it stays open a little longer: the rest of the request is read (headers and body, at
//! most [`MAX_REQUEST_LEN`] bytes kept, the rest discarded; `Expect: 100-continue` is honoured so the body comes),
//! until the request is complete, the client stops sending, or [`PEEK_TIMEOUT`] passes. Then the client gets a fast
//! `403 Forbidden` with `Connection: close`, and the block event, held back until then, is queued with the summary
//! from [`crate::inspect::peek::summarize_request`] (a client that resets or is evicted first counts as done
//! sending: it is answered, and reported, with what arrived). The request bytes are dropped as soon as they are
//! summarised.

use super::TcpState;
use crate::engine::{Engine, FlowId};
use crate::event::{Event, Protocol};
use crate::inspect::peek::{expects_continue, request_progress, summarize_request, RequestProgress, MAX_REQUEST_LEN};
use crate::verdict::Verdict;
use smoltcp::socket::tcp::Socket;
use std::time::{Duration, Instant};

/// How long a blocked client has to finish its request.
const PEEK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after the refusal the connection may take to close before it is reset.
const LINGER: Duration = Duration::from_secs(2);
/// The refusal.
const FORBIDDEN: &[u8] = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n\
Connection: close\r\n\r\nblocked by hushwall\n";
/// The interim answer to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A blocked request being read.
#[derive(Debug)]
pub(crate) struct PeekState {
    /// The block's event (if reported), queued with the summary when the request has been read.
    event: Option<Event>,
    request: Vec<u8>,
    /// Bytes beyond [`MAX_REQUEST_LEN`] were discarded.
    truncated: bool,
    /// `100 Continue` was sent.
    continued: bool,
}

impl PeekState {
    /// Nothing read yet; `event` is the block's event, if it is reported.
    pub(crate) fn new(event: Option<Event>) -> Self {
        PeekState { event, request: Vec::new(), truncated: false, continued: false }
    }
}

impl Engine {
    /// Starts reading a blocked request instead of resetting the connection; the event is held until the answer.
    pub(super) fn start_peek(&mut self, now: Instant, id: FlowId, verdict: Verdict) {
        let Some(flow) = self.tcp.get(&id) else {
            return;
        };
        let (client, server, host) = (flow.client, flow.server, flow.host.clone());
        let event = self.verdict_event(now, Protocol::Tcp, (client, server), host.as_deref(), &verdict);
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        flow.set_state(TcpState::Peeking { deadline: None, peek: Box::new(PeekState::new(event)) });
        self.set_deadline(id, now + PEEK_TIMEOUT);
        self.peek(now, id);
    }

    /// Reads what the client sent; answers once the request is complete or the client stopped sending.
    pub(super) fn peek(&mut self, now: Instant, id: FlowId) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        let mut state = match &mut flow.state {
            TcpState::Peeking { peek, .. } => Some(&mut **peek),
            _ => None,
        };
        while socket.can_recv() {
            let read = socket.recv(|data| {
                if let Some(state) = state.as_deref_mut() {
                    let room = MAX_REQUEST_LEN.saturating_sub(state.request.len());
                    let keep = data.get(..room.min(data.len())).unwrap_or_default();
                    state.request.extend_from_slice(keep);
                    state.truncated |= keep.len() < data.len();
                }
                (data.len(), data.len())
            });
            if !matches!(read, Ok(n) if n > 0) {
                break;
            }
        }
        let Some(state) = state else {
            // Answered already: the rest of the upload is discarded until the client closes.
            return;
        };
        let client_done = !socket.may_recv();
        let progress = request_progress(&state.request);
        if progress == RequestProgress::NeedMore && !client_done && !state.truncated {
            if !state.continued && expects_continue(&state.request) {
                state.continued = true;
                let _ = socket.send_slice(CONTINUE);
                self.touched.push(id);
            }
            return;
        }
        self.answer_peek(now, id, progress == RequestProgress::NeedMore);
    }

    /// Sends the refusal and reports the block with the summary of what arrived.
    fn answer_peek(&mut self, now: Instant, id: FlowId, incomplete: bool) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        if !matches!(flow.state, TcpState::Peeking { .. }) {
            return;
        }
        let TcpState::Peeking { peek: state, .. } = flow.set_state(TcpState::Answered { deadline: None }) else {
            return;
        };
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        let _ = socket.send_slice(FORBIDDEN);
        socket.close();
        self.set_deadline(id, now + LINGER);
        self.touched.push(id);
        self.report_peek(*state, incomplete);
    }

    /// Queues a peeked block's event, complete with the summary of the request. Not folded: each carries its own.
    fn report_peek(&mut self, state: PeekState, incomplete: bool) {
        if let Some(event) = state.event {
            let peek = summarize_request(&state.request, incomplete || state.truncated);
            self.push_event(Event { peek, ..event });
        }
    }

    /// The request did not complete in time (answer with what arrived), or the closing connection lingered.
    pub(super) fn on_peek_deadline(&mut self, now: Instant, id: FlowId) {
        let Some(flow) = self.tcp.get(&id) else {
            return;
        };
        if matches!(flow.state, TcpState::Answered { .. }) {
            self.stack.tcp(flow.handle).abort();
            self.touched.push(id);
        } else {
            self.answer_peek(now, id, true);
        }
    }
}
