//! The one interface between the cluster code and the switch: peers come and go.

use std::sync::mpsc::Sender;

use crate::view::Peer;

/// What the switch does when etcd's view of a network changes; the equivalent of
/// `dnetctl peer add/del`.
///
/// Called on the agent's thread, in order. Implementations must return quickly (hand the
/// change to the switch's control path): lease keepalives share that thread.
pub trait Membership: Send + 'static {
    /// `peer` joined `network` (or changed: a [`Membership::peer_down`] of its old record came
    /// first): make a tunnel to `peer.underlay`.
    fn peer_up(&mut self, network: &str, peer: &Peer);
    /// `peer` left `network` (its lease ended, or it was removed): remove its tunnel and the
    /// MAC addresses learned through it. Never called because etcd is unreachable.
    fn peer_down(&mut self, network: &str, peer: &Peer);
}

/// A membership change as a value, for [`Membership`] over a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// See [`Membership::peer_up`].
    Up {
        /// Network name.
        network: String,
        /// The peer.
        peer: Peer,
    },
    /// See [`Membership::peer_down`].
    Down {
        /// Network name.
        network: String,
        /// The peer.
        peer: Peer,
    },
}

/// Sends each change down a channel; a closed channel drops them (the switch is stopping).
impl Membership for Sender<MembershipEvent> {
    fn peer_up(&mut self, network: &str, peer: &Peer) {
        let _ = self.send(MembershipEvent::Up {
            network: network.into(),
            peer: peer.clone(),
        });
    }

    fn peer_down(&mut self, network: &str, peer: &Peer) {
        let _ = self.send(MembershipEvent::Down {
            network: network.into(),
            peer: peer.clone(),
        });
    }
}
