//! `spool audit`: the server's audit trail of administrative actions,
//! newest first, filtered by principal, action and time.

use serde_json::{Value, json};
use spool_client::AuditQuery;

use crate::args::AuditArgs;
use crate::args::jobs::OutputFormat;
use crate::output::outln;
use crate::table::Table;
use crate::time::format_timestamp_ms;
use crate::{Context, Explain};

pub async fn run(context: &Context, args: AuditArgs) -> anyhow::Result<()> {
    let query = AuditQuery {
        principal: args.principal.unwrap_or_default(),
        action: args.action.unwrap_or_default(),
        since_time_ms: args.since.unwrap_or(0),
        until_time_ms: args.until.unwrap_or(0),
        limit: args.limit,
    };
    let records = context
        .client
        .read_audit(query)
        .await
        .explain(context.subject())?;
    match args.format {
        OutputFormat::Json => {
            for record in &records {
                let target: Value = serde_json::from_str(&record.target_json).unwrap_or(Value::Null);
                outln!(
                    "{}",
                    json!({
                        "offset": record.offset,
                        "time_ms": record.time_ms,
                        "action": record.action,
                        "principal": record.principal,
                        "address": record.address,
                        "via": record.via,
                        "target": target,
                        "count": record.count,
                    })
                )?;
            }
        }
        OutputFormat::Human => {
            let mut table = Table::new(&["TIME", "PRINCIPAL", "ACTION", "TARGET", "COUNT", "FROM"]);
            for record in &records {
                let principal = match record.principal.as_str() {
                    "" => "-".to_owned(),
                    name => name.to_owned(),
                };
                table.row(vec![
                    format_timestamp_ms(record.time_ms),
                    principal,
                    record.action.clone(),
                    record.target_json.clone(),
                    record.count.to_string(),
                    format!("{} ({})", record.address, record.via),
                ]);
            }
            crate::output::out!("{}", table.render())?;
        }
    }
    Ok(())
}
