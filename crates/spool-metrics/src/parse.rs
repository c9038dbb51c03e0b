//! Reading a Prometheus text (0.0.4) or OpenMetrics page back: its sample
//! lines and the type of each family. The server's metrics history samples
//! its own `/metrics` page through this, so the history keeps exactly the
//! names and labels a scraper sees; tests read pages with it too.

use std::collections::BTreeMap;

/// A family's type, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    /// `summary`, `info`, `stateset`, `unknown` and the rest: read, but
    /// nothing Spool's history keeps.
    Other,
}

/// One sample line: `name{labels} value [# exemplar]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// The exemplar's text after ` # `, if any (OpenMetrics).
    pub exemplar: Option<String>,
}

/// A parsed page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub samples: Vec<Sample>,
    /// Family name to type, from the `# TYPE` lines.
    pub types: BTreeMap<String, Kind>,
}

/// A line that is neither a comment nor a well-formed sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the metrics page: {reason}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
    pub text: String,
}

impl Page {
    /// The family a sample belongs to and its type: the sample's name, or
    /// that name without a suffix its type adds (`_total`, `_bucket`,
    /// `_sum`, `_count`, `_created`), whichever has a `# TYPE` line.
    pub fn family_of<'a>(&self, sample_name: &'a str) -> Option<(&'a str, Kind)> {
        if let Some(&kind) = self.types.get(sample_name) {
            return Some((sample_name, kind));
        }
        ["_total", "_bucket", "_sum", "_count", "_created"]
            .iter()
            .filter_map(|suffix| sample_name.strip_suffix(suffix))
            .find_map(|family| self.types.get(family).map(|&kind| (family, kind)))
    }
}

/// Parses a page; fails on the first malformed line.
pub fn parse(text: &str) -> Result<Page, ParseError> {
    let mut page = Page::default();
    for (index, line) in text.lines().enumerate() {
        let fail = |reason| ParseError {
            line: index + 1,
            reason,
            text: line.to_owned(),
        };
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE") {
                let name = words.next().ok_or_else(|| fail("a TYPE line without a name"))?;
                let kind = match words.next() {
                    Some("counter") => Kind::Counter,
                    Some("gauge") => Kind::Gauge,
                    Some("histogram") => Kind::Histogram,
                    Some(_) => Kind::Other,
                    None => return Err(fail("a TYPE line without a type")),
                };
                page.types.insert(name.to_owned(), kind);
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        page.samples.push(parse_sample(line).map_err(fail)?);
    }
    Ok(page)
}

fn parse_sample(line: &str) -> Result<Sample, &'static str> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = closing_brace(line, open).ok_or("unclosed labels")?;
            let labels = parse_labels(&line[open + 1..close])?;
            (&line[..open], labels, &line[close + 1..])
        }
        None => {
            let space = line.find(' ').ok_or("no value")?;
            (&line[..space], BTreeMap::new(), &line[space..])
        }
    };
    if name.is_empty() {
        return Err("no metric name");
    }
    let rest = rest.strip_prefix(' ').ok_or("no value")?;
    let (value, exemplar) = match rest.split_once(" # ") {
        Some((value, exemplar)) => (value, Some(exemplar.to_owned())),
        None => (rest, None),
    };
    // A timestamp may follow the value.
    let value = value.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().map_err(|_| "a value that is not a number")?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
        exemplar,
    })
}

/// The `}` that closes the label set opened at `open`, skipping quoted
/// values (which may hold braces and escaped quotes).
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices().skip(open + 1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, &'static str> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").ok_or("a label without a quoted value")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("an escape at the end of a label value"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value"),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP spool_jobs_enqueued Jobs enqueued.\n\
        # TYPE spool_jobs_enqueued counter\n\
        spool_jobs_enqueued_total{queue=\"a \\\"b\\\" {c}\"} 3\n\
        # TYPE spool_uptime_seconds gauge\n\
        spool_uptime_seconds 1.5\n\
        # TYPE spool_x_seconds histogram\n\
        spool_x_seconds_bucket{le=\"0.1\"} 1 # {trace_id=\"ab\"} 0.05 1700000000.0\n\
        spool_x_seconds_bucket{le=\"+Inf\"} 2\n\
        spool_x_seconds_sum 0.3\n\
        spool_x_seconds_count 2\n\
        # EOF\n";

    #[test]
    fn samples_types_and_families_are_read() {
        let page = parse(PAGE).unwrap();
        assert_eq!(page.samples.len(), 6);
        let first = &page.samples[0];
        assert_eq!(first.name, "spool_jobs_enqueued_total");
        assert_eq!(first.labels["queue"], "a \"b\" {c}");
        assert_eq!(first.value, 3.0);
        assert_eq!(
            page.family_of("spool_jobs_enqueued_total"),
            Some(("spool_jobs_enqueued", Kind::Counter))
        );
        assert_eq!(
            page.family_of("spool_uptime_seconds"),
            Some(("spool_uptime_seconds", Kind::Gauge))
        );
        assert_eq!(
            page.family_of("spool_x_seconds_bucket"),
            Some(("spool_x_seconds", Kind::Histogram))
        );
        assert_eq!(page.samples[2].labels["le"], "0.1");
        assert_eq!(
            page.samples[2].exemplar.as_deref(),
            Some("{trace_id=\"ab\"} 0.05 1700000000.0")
        );
        assert_eq!(page.samples[3].labels["le"], "+Inf");
        assert_eq!(parse("x +Inf").unwrap().samples[0].value, f64::INFINITY);
        assert_eq!(page.family_of("spool_unknown"), None);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for (text, reason) in [
            ("x{a=\"1\" 2", "unclosed labels"),
            ("x 1\ny{a=1} 2", "a label without a quoted value"),
            ("x", "no value"),
            ("x{a=\"1\"} one", "a value that is not a number"),
            ("{a=\"1\"} 1", "no metric name"),
        ] {
            let error = parse(text).unwrap_err();
            assert_eq!(error.reason, reason, "{text:?}");
        }
        assert_eq!(parse("x 1\ny{a=1} 2").unwrap_err().line, 2);
    }
}
