//! `gpuctl cluster`: the control plane's replicas. `status` is in
//! [`crate::status`]; adding and removing a voter are one call each.

use gpuctl_proto::v1::{AddPeerRequest, RemovePeerRequest};

use crate::commands::ctx::Ctx;
use crate::error::Result;
use crate::stdout::out;

/// `cluster add-peer ID ADDRESS`: a Raft configuration change that makes
/// the replica a voter.
pub(crate) async fn cmd_add_peer(cx: &mut Ctx, id: u64, address: &str) -> Result<u8> {
    let req = AddPeerRequest {
        id,
        address: address.to_string(),
    };
    let st = cx
        .call(None, |mut c| {
            let req = req.clone();
            async move { c.add_peer(req).await }
        })
        .await?;
    out(&format!(
        "replica {id} ({address}) added; voters now {:?}\n",
        sorted(&st.get_ref().voters)
    ))?;
    Ok(0)
}

/// `cluster remove-peer ID`: the replica leaves the voters.
pub(crate) async fn cmd_remove_peer(cx: &mut Ctx, id: u64) -> Result<u8> {
    let req = RemovePeerRequest { id };
    let st = cx
        .call(None, |mut c| async move { c.remove_peer(req).await })
        .await?;
    out(&format!(
        "replica {id} removed; voters now {:?}\n",
        sorted(&st.get_ref().voters)
    ))?;
    Ok(0)
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v
}
