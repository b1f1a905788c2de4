//! What the flow state machines share (TCP flows in `tcp::state`, DNS query tries in `dns::try_state`, QUIC holds
//! in `quic_hold::state`): every transition goes through one checked, logged [`StateMachine::set`].

use std::fmt::Display;

/// A state machine whose states are one enum and whose drawn edges are [`StateMachine::allows`].
pub(crate) trait StateMachine: Sized {
    /// What the machine is the state of, for logs: "tcp", "dns try", "quic".
    const KIND: &'static str;

    /// The state's name, for logs.
    fn name(&self) -> &'static str;

    /// Whether the machine has an edge from this state to `next` (see the machine's module docs).
    fn allows(&self, next: &Self) -> bool;

    /// Moves to `next`, returning the state left (with the data only it had); `of` names the flow or try in the
    /// log. A transition the machine does not allow is a bug in the engine, never the result of a packet: caught
    /// in debug builds, logged in all.
    fn set(&mut self, next: Self, of: impl Display) -> Self {
        let (kind, from, to) = (Self::KIND, self.name(), next.name());
        debug_assert!(self.allows(&next), "{kind} {of}: no transition {from} -> {to}");
        if self.allows(&next) {
            log::trace!("{kind} {of}: {from} -> {to}");
        } else {
            log::warn!("{kind} {of}: unexpected transition {from} -> {to}");
        }
        std::mem::replace(self, next)
    }
}
