//! The forwarding decision, as a pure function of the ingress port and the lookup result.

use super::{DropReason, PortId, PortKind};

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send out of exactly this port.
    Forward(PortId),
    /// Send out of every port in [`super::Switch::flood_targets`].
    Flood,
    /// Do not forward; counted under this reason.
    Drop(DropReason),
}

/// Decides for a frame from `ingress` (of kind `in_kind`) whose destination lookup gave `out`
/// (`None` = unknown unicast or group address; `Some((port, kind))` = learned). With
/// `split_horizon`, a frame from a tunnel never goes into another tunnel.
#[inline]
pub fn decide(
    ingress: PortId,
    in_kind: PortKind,
    out: Option<(PortId, Option<PortKind>)>,
    split_horizon: bool,
) -> Action {
    match out {
        None | Some((_, None)) => Action::Flood,
        Some((p, _)) if p == ingress => Action::Drop(DropReason::SamePort),
        Some((_, Some(k))) if split_horizon && in_kind.is_tunnel() && k.is_tunnel() => {
            Action::Drop(DropReason::SplitHorizon)
        }
        Some((p, Some(_))) => Action::Forward(p),
    }
}
