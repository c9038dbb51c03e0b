//! `spool offsets` and `spool checkpoint get|set`.

use std::collections::BTreeMap;

use spool_client::{Durability, OffsetSpec};

use crate::args::{CheckpointCommand, OffsetsArgs};
use crate::output::{errln, out, outln};
use crate::table::Table;
use crate::time::format_timestamp_ms;
use crate::units::group_thousands;
use crate::{Context, Explain};

pub async fn offsets(context: &Context, args: OffsetsArgs) -> anyhow::Result<()> {
    let topic = args.topic.as_str();
    let client = &context.client;
    let earliest = client
        .list_offsets(topic, None, OffsetSpec::Earliest)
        .await
        .explain(context.about(topic))?;
    let latest: BTreeMap<u32, u64> = client
        .list_offsets(topic, None, OffsetSpec::Latest)
        .await
        .explain(context.about(topic))?
        .into_iter()
        .map(|offset| (offset.partition, offset.offset))
        .collect();
    let mut table = Table::new(&["PARTITION>", "EARLIEST>", "LATEST>", "RECORDS>"]);
    for offset in earliest {
        let latest = latest.get(&offset.partition).copied().unwrap_or(offset.offset);
        table.row(vec![
            offset.partition.to_string(),
            offset.offset.to_string(),
            latest.to_string(),
            group_thousands(latest.saturating_sub(offset.offset)),
        ]);
    }
    out!("{}", table.render())?;
    Ok(())
}

pub async fn checkpoint(context: &Context, command: CheckpointCommand) -> anyhow::Result<()> {
    let client = &context.client;
    match command {
        CheckpointCommand::Get { consumer, topic } => {
            let stored = client
                .get_checkpoint(&consumer, &topic)
                .await
                .explain(context.about(&topic))?;
            if stored.is_empty() {
                errln!(
                    "consumer '{consumer}' has no checkpoint in '{topic}'; store one with \
                     `spool checkpoint set {consumer} {topic} 0=OFFSET`"
                );
                return Ok(());
            }
            let latest: BTreeMap<u32, u64> = client
                .list_offsets(&topic, None, OffsetSpec::Latest)
                .await
                .explain(context.about(&topic))?
                .into_iter()
                .map(|offset| (offset.partition, offset.offset))
                .collect();
            let mut table = Table::new(&["PARTITION>", "OFFSET>", "LAG>", "COMMITTED"]);
            for checkpoint in stored {
                let lag = latest.get(&checkpoint.partition).map_or_else(
                    || "-".into(),
                    |&high| group_thousands(high.saturating_sub(checkpoint.offset)),
                );
                let committed = if checkpoint.commit_time_ms > 0 {
                    format_timestamp_ms(checkpoint.commit_time_ms)
                } else {
                    "-".into()
                };
                table.row(vec![
                    checkpoint.partition.to_string(),
                    checkpoint.offset.to_string(),
                    lag,
                    committed,
                ]);
            }
            out!("{}", table.render())?;
        }
        CheckpointCommand::Set {
            consumer,
            topic,
            positions,
            durability,
        } => {
            let reached = client
                .commit_checkpoint(&consumer, &topic, &positions, durability.into())
                .await
                .explain(context.about_checkpoint(&topic))?;
            let listed: Vec<String> = positions
                .iter()
                .map(|(p, offset)| format!("{p}={offset}"))
                .collect();
            outln!(
                "stored checkpoint of '{consumer}' in '{topic}': {} ({})",
                listed.join(" "),
                if reached == Durability::Fsync {
                    "fsynced"
                } else {
                    "not fsynced"
                }
            )?;
        }
    }
    Ok(())
}
