//! `gpuctl cordon` and `gpuctl uncordon`: whether new tasks may be placed on
//! a node.

use gpuctl_proto::v1::CordonRequest;

use crate::client::Target;
use crate::commands::ctx::Ctx;
use crate::error::Result;
use crate::stdout::out;

pub(crate) async fn cmd_cordon(cx: &mut Ctx, node: &str, cordon: bool) -> Result<u8> {
    let req = CordonRequest {
        node: node.into(),
        cordon,
    };
    let target = Some(Target {
        kind: "node",
        name: node,
    });
    cx.call(target, |mut c| {
        let req = req.clone();
        async move { c.cordon(req).await }
    })
    .await?;
    let what = if cordon { "cordoned" } else { "uncordoned" };
    out(&format!("node/{node} {what}\n"))?;
    Ok(0)
}
