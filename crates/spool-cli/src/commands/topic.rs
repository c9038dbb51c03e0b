//! `spool topic create|list|describe|delete`.

use std::time::Duration;

use spool_client::{NewTopic, TopicConfig};

use crate::args::TopicCommand;
use crate::output::{errln, out, outln};
use crate::table::Table;
use crate::units::{format_bytes, format_bytes_approx, format_duration_ms, group_thousands};
use crate::{Context, Explain};

pub async fn run(context: &Context, command: TopicCommand) -> anyhow::Result<()> {
    let client = &context.client;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            retention,
            retention_bytes,
            segment_bytes,
            replication_factor,
        } => {
            let topic = NewTopic {
                name: name.clone(),
                partitions: partitions.unwrap_or(0),
                retention_ms: retention.unwrap_or(0),
                retention_bytes: retention_bytes.unwrap_or(0),
                segment_bytes: segment_bytes.unwrap_or(0),
                replication_factor: replication_factor.unwrap_or(0),
            };
            let config = client.create_topic(topic).await.explain(context.about(&name))?;
            outln!(
                "created topic '{}': {} partition{}, retention {}, retention bytes {}, segment bytes {}",
                config.name,
                config.partitions,
                if config.partitions == 1 { "" } else { "s" },
                retention_text(config.retention),
                retention_bytes_text(config.retention_bytes),
                format_bytes(config.segment_bytes),
            )?;
        }
        TopicCommand::List { internal } => {
            let topics = client.list_topics(internal).await.explain(context.subject())?;
            if topics.is_empty() {
                errln!("no topics; create one with `spool topic create NAME --partitions N`");
                return Ok(());
            }
            out!("{}", topics_table(&topics).render())?;
        }
        TopicCommand::Describe { name } => {
            let description = client.describe_topic(&name).await.explain(context.about(&name))?;
            let config = &description.config;
            outln!("topic            {}", config.name)?;
            outln!("partitions       {}", config.partitions)?;
            outln!("retention        {}", retention_text(config.retention))?;
            outln!(
                "retention bytes  {} per partition",
                retention_bytes_text(config.retention_bytes)
            )?;
            outln!("segment bytes    {}", format_bytes(config.segment_bytes))?;
            if config.internal {
                outln!("internal         yes")?;
            }
            outln!()?;
            let mut table = Table::new(&[
                "PARTITION>",
                "START>",
                "HIGH WATERMARK>",
                "RECORDS>",
                "SIZE>",
                "SEGMENTS>",
            ]);
            for partition in &description.partitions {
                table.row(vec![
                    partition.partition.to_string(),
                    partition.log_start_offset.to_string(),
                    partition.high_watermark.to_string(),
                    group_thousands(
                        partition
                            .high_watermark
                            .saturating_sub(partition.log_start_offset),
                    ),
                    format_bytes_approx(partition.size_bytes),
                    partition.segment_count.to_string(),
                ]);
            }
            out!("{}", table.render())?;
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await.explain(context.about(&name))?;
            outln!("deleted topic '{name}'")?;
        }
    }
    Ok(())
}

fn topics_table(topics: &[TopicConfig]) -> Table {
    let mut table = Table::new(&[
        "NAME",
        "PARTITIONS>",
        "RETENTION>",
        "RETENTION BYTES>",
        "SEGMENT BYTES>",
    ]);
    for topic in topics {
        let name = if topic.internal {
            format!("{} (internal)", topic.name)
        } else {
            topic.name.clone()
        };
        table.row(vec![
            name,
            topic.partitions.to_string(),
            retention_text(topic.retention),
            retention_bytes_text(topic.retention_bytes),
            format_bytes(topic.segment_bytes),
        ]);
    }
    table
}

fn retention_text(retention: Option<Duration>) -> String {
    retention.map_or_else(
        || "forever".into(),
        |retention| format_duration_ms(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX)),
    )
}

fn retention_bytes_text(retention_bytes: Option<u64>) -> String {
    retention_bytes.map_or_else(|| "unlimited".into(), format_bytes)
}
