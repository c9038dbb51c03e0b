//! `spool consume` and `spool replay`.

use std::collections::BTreeMap;
use std::io::Write;

use spool_client::{CheckpointFallback, ConsumedRecord, Durability, StartPosition};

use crate::args::{ConsumeArgs, Format, ReplayArgs, StartFrom};
use crate::json::write_record_line;
use crate::output::{RecordsOut, errln};
use crate::progress::Progress;
use crate::{Context, Explain};

/// Where `consume` starts, given `--from` and `--consumer`.
fn start_position(from: Option<StartFrom>, consumer: Option<&str>) -> StartPosition {
    match (from, consumer) {
        (Some(StartFrom::Offset(offset)), _) => StartPosition::Offset(offset),
        (Some(StartFrom::Timestamp(timestamp_ms)), _) => StartPosition::Timestamp(timestamp_ms),
        (None | Some(StartFrom::Earliest), Some(_)) => StartPosition::Checkpoint {
            fallback: CheckpointFallback::Earliest,
        },
        (Some(StartFrom::Latest), Some(_)) => StartPosition::Checkpoint {
            fallback: CheckpointFallback::Latest,
        },
        (None | Some(StartFrom::Earliest), None) => StartPosition::Earliest,
        (Some(StartFrom::Latest), None) => StartPosition::Latest,
    }
}

pub async fn run(context: &Context, args: ConsumeArgs) -> anyhow::Result<()> {
    let topic = args.topic.as_str();
    let mut builder = context
        .client
        .consumer(topic)
        .start(start_position(args.from, args.consumer.as_deref()))
        .follow(args.follow);
    if let Some(partition) = args.partition {
        builder = builder.partition(partition);
    }
    if let Some(name) = &args.consumer {
        builder = builder.name(name);
    }
    let mut consumer = builder.build().await.explain(context.about(topic))?;

    let mut out = RecordsOut::new(256 * 1024);
    let mut remaining = args.count.unwrap_or(u64::MAX);
    // Next offset per partition, counting only records printed.
    let mut positions = BTreeMap::new();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let outcome: anyhow::Result<()> = async {
        while remaining > 0 {
            let chunk = tokio::select! {
                chunk = consumer.next_chunk() => chunk,
                _ = &mut interrupted => break,
            };
            let Some(chunk) = chunk else { break };
            let records = chunk.explain(context.about(topic))?;
            for record in records
                .iter()
                .take(usize::try_from(remaining).unwrap_or(usize::MAX))
            {
                out.write(|out| write_record(out, record, args.format))?;
                positions.insert(record.partition, record.offset + 1);
                remaining -= 1;
            }
            out.flush()?;
        }
        Ok(())
    }
    .await;
    out.flush()?;

    if let Some(name) = &args.consumer
        && !positions.is_empty()
    {
        let positions: Vec<(u32, u64)> = positions.into_iter().collect();
        context
            .client
            .commit_checkpoint(name, topic, &positions, Durability::Fsync)
            .await
            .explain(context.about_checkpoint(topic))?;
        let listed: Vec<String> = positions
            .iter()
            .map(|(p, offset)| format!("{p}={offset}"))
            .collect();
        errln!("stored checkpoint of '{name}' in '{topic}': {}", listed.join(" "));
    }
    outcome
}

pub async fn replay(context: &Context, args: ReplayArgs) -> anyhow::Result<()> {
    let topic = args.topic.as_str();
    let start = match args.from {
        StartFrom::Timestamp(timestamp_ms) => StartPosition::Timestamp(timestamp_ms),
        _ => StartPosition::Earliest,
    };
    let mut consumer = context
        .client
        .consumer(topic)
        .start(start)
        .follow(false)
        .build()
        .await
        .explain(context.about(topic))?;
    let mut progress = Progress::new(consumer.remaining().unwrap_or(0));

    let mut out = RecordsOut::new(1024 * 1024);
    while let Some(chunk) = consumer.next_chunk().await {
        let records = chunk.explain(context.about(topic))?;
        progress.before_output();
        let mut bytes = 0;
        for record in &records {
            out.write(|out| write_record(out, record, args.format))?;
            bytes += record.payload_bytes() as u64;
        }
        out.flush()?;
        progress.advance(records.len() as u64, bytes);
    }
    progress.finish("replayed");
    Ok(())
}

fn write_record(out: &mut impl Write, record: &ConsumedRecord, format: Format) -> std::io::Result<()> {
    match format {
        Format::Value => {
            if let Some(value) = &record.value {
                out.write_all(value)?;
            }
            out.write_all(b"\n")
        }
        Format::Json => write_record_line(out, record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_consumer_resumes_at_its_checkpoint_unless_told_otherwise() {
        assert_eq!(start_position(None, None), StartPosition::Earliest);
        assert_eq!(
            start_position(Some(StartFrom::Latest), None),
            StartPosition::Latest
        );
        assert_eq!(
            start_position(None, Some("billing")),
            StartPosition::Checkpoint {
                fallback: CheckpointFallback::Earliest
            }
        );
        assert_eq!(
            start_position(Some(StartFrom::Latest), Some("billing")),
            StartPosition::Checkpoint {
                fallback: CheckpointFallback::Latest
            }
        );
        assert_eq!(
            start_position(Some(StartFrom::Offset(7)), Some("billing")),
            StartPosition::Offset(7)
        );
        assert_eq!(
            start_position(Some(StartFrom::Timestamp(5)), None),
            StartPosition::Timestamp(5)
        );
    }
}
