//! `spool metrics history`: series of the server's metrics history as a
//! table (a row per point in time, a column per series) or JSON lines.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use spool_client::{History, HistoryQuery};

use crate::args::jobs::OutputFormat;
use crate::args::{MetricsCommand, MetricsHistoryArgs};
use crate::output::{out, outln};
use crate::table::Table;
use crate::time::format_timestamp_ms;
use crate::{Context, Explain};

pub async fn run(context: &Context, command: MetricsCommand) -> anyhow::Result<()> {
    match command {
        MetricsCommand::History(args) => history(context, args).await,
    }
}

async fn history(context: &Context, args: MetricsHistoryArgs) -> anyhow::Result<()> {
    let since_ms = i64::try_from(args.since.max(1)).unwrap_or(i64::MAX);
    let query = HistoryQuery {
        series: args.series,
        from_time_ms: args.from.unwrap_or(-since_ms),
        to_time_ms: args.to.unwrap_or(0),
        step_ms: args.step.unwrap_or(0),
    };
    let history = context
        .client
        .metrics_history(query)
        .await
        .explain(context.subject())?;
    match args.format {
        OutputFormat::Json => {
            for line in json_lines(&history) {
                outln!("{line}")?;
            }
        }
        OutputFormat::Human => {
            if history.results.iter().all(|result| result.series.is_empty()) {
                // In place of an empty table: why there is nothing to show.
                outln!(
                    "no points between {} and {}; the history starts at {}",
                    format_timestamp_ms(history.from_time_ms),
                    format_timestamp_ms(history.to_time_ms),
                    match history.oldest_sample_time_ms {
                        0 => "no sample yet".to_owned(),
                        oldest => format_timestamp_ms(oldest),
                    }
                )?;
                return Ok(());
            }
            out!("{}", table(&history).render())?;
        }
    }
    Ok(())
}

/// The column name of a series: its expression, and its labels when the
/// expression yielded several series.
fn column(expression: &str, labels: &[(String, String)], several: bool) -> String {
    if !several || labels.is_empty() {
        return expression.to_owned();
    }
    let labels: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    format!("{expression}{{{}}}", labels.join(","))
}

fn table(history: &History) -> Table {
    let mut columns = Vec::new();
    let mut rows: BTreeMap<i64, BTreeMap<usize, f64>> = BTreeMap::new();
    for result in &history.results {
        let several = result.series.len() > 1;
        for series in &result.series {
            let index = columns.len();
            columns.push(format!(
                "{}>",
                column(&result.expression, &series.labels, several)
            ));
            for &(time, value) in &series.points {
                rows.entry(time).or_default().insert(index, value);
            }
        }
    }
    let mut header = vec!["TIME".to_owned()];
    header.extend(columns.iter().cloned());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = Table::new(&header);
    for (time, values) in rows {
        let mut cells = vec![format_timestamp_ms(time)];
        cells.extend(
            (0..columns.len()).map(|i| values.get(&i).map_or_else(|| "-".to_owned(), |v| number(*v))),
        );
        table.row(cells);
    }
    table
}

/// A value with at most three decimals, trailing zeros dropped.
fn number(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

fn json_lines(history: &History) -> Vec<Value> {
    history
        .results
        .iter()
        .flat_map(|result| {
            result.series.iter().map(move |series| {
                let labels: serde_json::Map<String, Value> = series
                    .labels
                    .iter()
                    .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
                    .collect();
                let points: Vec<Value> = series.points.iter().map(|(t, v)| json!([t, v])).collect();
                json!({
                    "expression": result.expression,
                    "labels": labels,
                    "step_ms": history.step_ms,
                    "points": points,
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use spool_client::{HistoryResult, HistorySeries};

    use super::*;

    fn history() -> History {
        let series = |labels: &[(&str, &str)], points: &[(i64, f64)]| HistorySeries {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            points: points.to_vec(),
        };
        History {
            results: vec![
                HistoryResult {
                    expression: "rate(x_total)".into(),
                    series: vec![series(&[], &[(60_000, 2.5), (120_000, 1.0 / 3.0)])],
                },
                HistoryResult {
                    expression: "depth".into(),
                    series: vec![
                        series(&[("queue", "a")], &[(120_000, 4.0)]),
                        series(&[("queue", "b")], &[(60_000, 0.0)]),
                    ],
                },
            ],
            step_ms: 60_000,
            interval_ms: 5_000,
            oldest_sample_time_ms: 1,
            from_time_ms: 0,
            to_time_ms: 120_000,
        }
    }

    #[test]
    fn points_line_up_by_time_with_a_column_per_series() {
        let text = table(&history()).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for column in ["TIME", "rate(x_total)", "depth{queue=a}", "depth{queue=b}"] {
            assert!(lines[0].contains(column), "{text}");
        }
        assert!(lines[1].starts_with("1970-01-01T00:01:00"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cells[1..], ["2.5", "-", "0"], "{text}");
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cells[1..], ["0.333", "4", "-"], "{text}");
    }

    #[test]
    fn json_has_one_line_per_series() {
        let lines = json_lines(&history());
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["expression"], "depth");
        assert_eq!(lines[1]["labels"]["queue"], "a");
        assert_eq!(lines[1]["points"][0], json!([120_000, 4.0]));
        assert_eq!(lines[0]["step_ms"], 60_000);
    }
}
