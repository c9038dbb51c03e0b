//! Finding jobs in memory by what people remember about them: an
//! idempotency key, a header, text in the payload, text of an error. Each
//! has an index kept as jobs enter and leave the table, so a search over a
//! million jobs reads postings, not every job.
//!
//! - Payload text: the payload's words (runs of ASCII letters, digits and
//!   `_`, lower-cased, 1 to [`TOKEN_BYTES_MAX`] bytes, the first
//!   [`TOKENS_PER_JOB_MAX`] distinct ones within the first
//!   [`PAYLOAD_INDEXED_BYTES_MAX`] bytes) point to the jobs holding them. A
//!   query is cut into words the same way; its inner words must be whole
//!   words of the payload, its first may end one and its last may begin
//!   one (one word alone may sit anywhere inside a word). The candidates
//!   those words give are then checked against the payload itself, so a
//!   hit really contains the query (ASCII case ignored). Text beyond the
//!   first [`PAYLOAD_INDEXED_BYTES_MAX`] bytes of a payload, or a query
//!   without a letter or digit, is not found.
//! - Idempotency key and header (`name=value`, or `name` for any value):
//!   exact, from sorted sets.
//! - Error text: the jobs that have an error form a set of their own; a
//!   search reads only them, and matches the query inside any error kept
//!   with the job.
//!
//! Also here: [`fingerprint`], the error text with its numbers and ids
//! masked, which groups dead jobs by cause.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound::{Included, Unbounded};

use crate::job::{Job, JobId};

/// Bytes of a payload that are cut into words for the index.
pub const PAYLOAD_INDEXED_BYTES_MAX: usize = 4096;
/// Distinct words indexed per payload.
pub const TOKENS_PER_JOB_MAX: usize = 64;
/// Longest word indexed; longer runs are left out.
pub const TOKEN_BYTES_MAX: usize = 64;
/// Most jobs one search returns.
pub const SEARCH_RESULTS_MAX: usize = 1_000;

/// What a search looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SearchField {
    /// The id, the idempotency key, a header, the payload and the errors.
    Any,
    Id,
    IdempotencyKey,
    Payload,
    /// `name=value`, or `name` alone for any value.
    Header,
    Error,
}

/// A search of the jobs in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub text: String,
    pub field: SearchField,
    /// Only jobs of this queue, when given.
    pub queue: Option<String>,
    /// Most jobs to return; 0 means 50, larger than [`SEARCH_RESULTS_MAX`]
    /// is capped.
    pub limit: usize,
}

/// The jobs a search found, newest first, and whether more matched.
#[derive(Debug)]
pub struct SearchHits<'a> {
    pub jobs: Vec<&'a Job>,
    pub more: bool,
}

/// The indexes (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct SearchIndex {
    /// Word -> its number and how many jobs hold it.
    words: HashMap<Box<str>, (u32, u32)>,
    /// Numbers of words no job holds any more, for reuse.
    free_numbers: Vec<u32>,
    next_number: u32,
    /// (word number, job) for every indexed word of every job.
    postings: BTreeSet<(u32, JobId)>,
    keys: BTreeSet<(Box<str>, JobId)>,
    /// `name=value` of every header.
    headers: BTreeSet<(Box<str>, JobId)>,
    /// Jobs with at least one error.
    failed: BTreeSet<JobId>,
}

/// The distinct words of `text` for the index, or of a query.
fn words(text: &[u8], max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for run in text.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_')) {
        if run.is_empty() || run.len() > TOKEN_BYTES_MAX {
            continue;
        }
        let word = String::from_utf8_lossy(run).to_ascii_lowercase();
        if !out.contains(&word) {
            out.push(word);
            if out.len() >= max {
                break;
            }
        }
    }
    out
}

fn payload_words(job: &Job) -> Vec<String> {
    let indexed = &job.payload[..job.payload.len().min(PAYLOAD_INDEXED_BYTES_MAX)];
    words(indexed, TOKENS_PER_JOB_MAX)
}

fn header_entry(name: &str, value: &str) -> Box<str> {
    format!("{name}={value}").into_boxed_str()
}

/// True when `needle` occurs in `haystack`, ASCII case ignored. `needle`
/// is lower-case already.
fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

impl SearchIndex {
    /// Indexes a job entering the table.
    pub(crate) fn add(&mut self, job: &Job) {
        for word in payload_words(job) {
            let number = match self.words.get_mut(word.as_str()) {
                Some((number, jobs)) => {
                    *jobs += 1;
                    *number
                }
                None => {
                    let number = self.free_numbers.pop().unwrap_or_else(|| {
                        self.next_number += 1;
                        self.next_number - 1
                    });
                    self.words.insert(word.into_boxed_str(), (number, 1));
                    number
                }
            };
            self.postings.insert((number, job.id));
        }
        if let Some(key) = &job.idempotency_key {
            self.keys.insert((key.as_str().into(), job.id));
        }
        for (name, value) in &job.headers {
            self.headers.insert((header_entry(name, value), job.id));
        }
        if !job.errors.is_empty() {
            self.failed.insert(job.id);
        }
    }

    /// Forgets a job leaving the table. Its payload, key and headers are
    /// those it was added with (they never change).
    pub(crate) fn remove(&mut self, job: &Job) {
        for word in payload_words(job) {
            let Some((number, jobs)) = self.words.get_mut(word.as_str()) else {
                continue;
            };
            let number = *number;
            self.postings.remove(&(number, job.id));
            *jobs -= 1;
            if *jobs == 0 {
                self.words.remove(word.as_str());
                self.free_numbers.push(number);
            }
        }
        if let Some(key) = &job.idempotency_key {
            self.keys.remove(&(key.as_str().into(), job.id));
        }
        for (name, value) in &job.headers {
            self.headers.remove(&(header_entry(name, value), job.id));
        }
        self.failed.remove(&job.id);
    }

    /// Notes that a job now has an error.
    pub(crate) fn failed(&mut self, id: JobId) {
        self.failed.insert(id);
    }

    /// Job ids whose payload may contain `query` (lower-case), newest
    /// first; the caller checks each against the payload.
    fn payload_candidates(&self, query: &str) -> Vec<JobId> {
        let parts = words(query.as_bytes(), usize::MAX);
        // Query words in order, with repeats, to tell inner from outer.
        let ordered: Vec<&str> = query
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        if parts.is_empty() {
            return Vec::new();
        }
        let matching_words: Vec<u32> = if ordered.len() > 2 {
            // An inner word is a whole word of the payload: one lookup.
            let inner = ordered[1..ordered.len() - 1]
                .iter()
                .filter_map(|w| self.words.get(*w))
                .min_by_key(|(_, jobs)| *jobs);
            match inner {
                Some((number, _)) => vec![*number],
                None => return Vec::new(),
            }
        } else if ordered.len() == 2 {
            // The first word ends a payload word, the last begins one:
            // take the side that names fewer jobs.
            let ends: Vec<(u32, u32)> = self
                .words
                .iter()
                .filter(|(w, _)| w.ends_with(ordered[0]))
                .map(|(_, e)| *e)
                .collect();
            let begins: Vec<(u32, u32)> = self
                .words
                .iter()
                .filter(|(w, _)| w.starts_with(ordered[1]))
                .map(|(_, e)| *e)
                .collect();
            let count = |side: &[(u32, u32)]| side.iter().map(|(_, jobs)| u64::from(*jobs)).sum::<u64>();
            let side = if count(&ends) <= count(&begins) {
                ends
            } else {
                begins
            };
            side.into_iter().map(|(number, _)| number).collect()
        } else {
            self.words
                .iter()
                .filter(|(w, _)| w.contains(ordered[0]))
                .map(|(_, (number, _))| *number)
                .collect()
        };
        let mut ids: Vec<JobId> = Vec::new();
        for number in matching_words {
            ids.extend(
                self.postings
                    .range((Included((number, 0)), Included((number, JobId::MAX))))
                    .map(|(_, id)| *id),
            );
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        ids
    }

    fn exact(set: &BTreeSet<(Box<str>, JobId)>, text: &str) -> Vec<JobId> {
        let from: Box<str> = text.into();
        let mut ids: Vec<JobId> = set
            .range((Included((from, 0)), Unbounded))
            .take_while(|(entry, _)| &**entry == text)
            .map(|(_, id)| *id)
            .collect();
        ids.reverse();
        ids
    }

    /// Headers named `name`, any value.
    fn header_named(&self, name: &str) -> Vec<JobId> {
        let prefix = format!("{name}=");
        let from: Box<str> = prefix.as_str().into();
        let mut ids: Vec<JobId> = self
            .headers
            .range((Included((from, 0)), Unbounded))
            .take_while(|(entry, _)| entry.starts_with(&prefix))
            .map(|(_, id)| *id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    }

    /// Runs `query` over `jobs`, the table this index follows.
    pub(crate) fn search<'a>(
        &self,
        jobs: &'a std::collections::BTreeMap<JobId, Job>,
        query: &SearchQuery,
    ) -> SearchHits<'a> {
        let limit = match query.limit {
            0 => 50,
            n => n.min(SEARCH_RESULTS_MAX),
        };
        let text = query.text.trim();
        let lower = text.to_ascii_lowercase();
        let in_queue = |job: &Job| query.queue.as_deref().is_none_or(|q| &*job.queue == q);
        let mut found: Vec<&'a Job> = Vec::new();
        let mut seen: BTreeSet<JobId> = BTreeSet::new();
        let mut more = false;
        // Adds candidates (newest first) that pass `check`, up to the limit.
        let mut take = |ids: &mut dyn Iterator<Item = JobId>, check: &dyn Fn(&Job) -> bool| {
            for id in ids {
                if seen.contains(&id) {
                    continue;
                }
                let Some(job) = jobs.get(&id) else { continue };
                if !in_queue(job) || !check(job) {
                    continue;
                }
                if found.len() == limit {
                    more = true;
                    return;
                }
                seen.insert(id);
                found.push(job);
            }
        };
        if text.is_empty() {
            return SearchHits {
                jobs: Vec::new(),
                more: false,
            };
        }
        let field = query.field;
        let any = field == SearchField::Any;
        if (any || field == SearchField::Id)
            && let Ok(id) = text.parse::<JobId>()
        {
            take(&mut std::iter::once(id), &|_| true);
        }
        if any || field == SearchField::IdempotencyKey {
            take(&mut Self::exact(&self.keys, text).into_iter(), &|_| true);
        }
        if any || field == SearchField::Header {
            let ids = if text.contains('=') {
                Self::exact(&self.headers, text)
            } else {
                self.header_named(text)
            };
            take(&mut ids.into_iter(), &|_| true);
        }
        if any || field == SearchField::Payload {
            let needle = lower.as_bytes();
            take(&mut self.payload_candidates(&lower).into_iter(), &|job: &Job| {
                contains_ignore_case(&job.payload, needle)
            });
        }
        if any || field == SearchField::Error {
            let needle = lower.as_bytes();
            take(&mut self.failed.iter().rev().copied(), &|job: &Job| {
                job.errors
                    .iter()
                    .any(|e| contains_ignore_case(e.error.as_bytes(), needle))
            });
        }
        found.sort_unstable_by(|a, b| b.id.cmp(&a.id));
        SearchHits { jobs: found, more }
    }

    /// Words in the index, for tests and memory accounting.
    #[cfg(test)]
    fn word_count(&self) -> usize {
        self.words.len()
    }
}

/// The error text with what varies from one job to the next masked: every
/// word (a run of letters, digits and `_ - . : @ /`, so an address, a
/// path or a URL is one word) that holds a digit becomes `#`, so `timeout after 5000 ms on 10.0.0.7:80` and
/// `timeout after 300 ms on 10.0.0.9:80` share `timeout after # ms on #`.
/// Dead jobs are grouped by it. Runs of whitespace become one space, and
/// the result is at most 200 characters.
pub fn fingerprint(error: &str) -> String {
    let mut out = String::with_capacity(error.len().min(200));
    let is_word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '/');
    let mut chars = error.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if is_word(c) {
            let mut end = start + c.len_utf8();
            while let Some(&(at, next)) = chars.peek() {
                if !is_word(next) {
                    break;
                }
                end = at + next.len_utf8();
                chars.next();
            }
            let word = &error[start..end];
            if word.chars().any(|c| c.is_ascii_digit()) {
                // Keep a trailing sentence mark or colon outside the mask.
                let kept = word.trim_end_matches(['.', ':']);
                out.push('#');
                out.push_str(&word[kept.len()..]);
            } else {
                out.push_str(word);
            }
        } else if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
        if out.chars().count() >= 200 {
            break;
        }
    }
    out.trim().chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::job::{AttemptError, Attempts, JobState};

    fn job(id: JobId, payload: &str) -> Job {
        Job {
            id,
            queue: Arc::from("q"),
            state: JobState::Available,
            payload: Bytes::from(payload.to_owned()),
            content_type: String::new(),
            headers: vec![("tenant".into(), format!("t{}", id % 3))],
            priority: 0,
            attempt: 0,
            attempts_max: 1,
            attempts_forgiven: 0,
            timeout_ms: 0,
            idempotency_key: Some(format!("key-{id}")),
            created_ms: 0,
            run_at_ms: 0,
            started_ms: None,
            finished_ms: None,
            errors: Vec::new(),
            attempts: Attempts::default(),
            result: None,
            progress: None,
            cancel_requested: false,
            lease: None,
            completed_token: None,
        }
    }

    fn table(jobs: Vec<Job>) -> (BTreeMap<JobId, Job>, SearchIndex) {
        let mut index = SearchIndex::default();
        let mut table = BTreeMap::new();
        for job in jobs {
            index.add(&job);
            table.insert(job.id, job);
        }
        (table, index)
    }

    fn ids(table: &BTreeMap<JobId, Job>, index: &SearchIndex, text: &str, field: SearchField) -> Vec<JobId> {
        let query = SearchQuery {
            text: text.into(),
            field,
            queue: None,
            limit: 0,
        };
        index.search(table, &query).jobs.iter().map(|j| j.id).collect()
    }

    #[test]
    fn payload_text_is_found_inside_words_and_across_them() {
        let (table, index) = table(vec![
            job(1, r#"{"order":"A-1001","customer":"Ada Lovelace"}"#),
            job(2, r#"{"order":"A-1002","customer":"Alan Turing"}"#),
            job(3, "plain text: refund for order 1001"),
        ]);
        let payload = SearchField::Payload;
        assert_eq!(ids(&table, &index, "1001", payload), [3, 1]);
        assert_eq!(ids(&table, &index, "lovel", payload), [1]);
        assert_eq!(ids(&table, &index, "LOVELACE", payload), [1]);
        assert_eq!(ids(&table, &index, "ada lovelace", payload), [1]);
        assert_eq!(ids(&table, &index, "da Love", payload), [1]);
        assert_eq!(ids(&table, &index, "\"customer\":\"Alan", payload), [2]);
        assert_eq!(ids(&table, &index, "refund for order", payload), [3]);
        // Every word is there, but not in this order: checked against the
        // payload itself.
        assert!(ids(&table, &index, "order for refund", payload).is_empty());
        assert!(ids(&table, &index, "grace hopper", payload).is_empty());
        assert!(ids(&table, &index, "{}", payload).is_empty());
    }

    #[test]
    fn keys_headers_ids_and_errors_are_found() {
        let mut failing = job(5, "x");
        failing.errors.push(AttemptError {
            attempt: 1,
            error: "SMTP 550: mailbox unavailable".into(),
            failed_at_ms: 0,
        });
        let (table, mut index) = table(vec![job(3, "a"), job(4, "b"), failing]);
        index.failed(5);
        assert_eq!(ids(&table, &index, "key-4", SearchField::IdempotencyKey), [4]);
        assert_eq!(ids(&table, &index, "tenant=t1", SearchField::Header), [4]);
        assert_eq!(ids(&table, &index, "tenant", SearchField::Header), [5, 4, 3]);
        assert_eq!(ids(&table, &index, "3", SearchField::Id), [3]);
        assert_eq!(ids(&table, &index, "mailbox", SearchField::Error), [5]);
        assert_eq!(ids(&table, &index, "key-4", SearchField::Any), [4]);
        assert_eq!(ids(&table, &index, "550", SearchField::Any), [5]);
    }

    #[test]
    fn removed_jobs_leave_every_index() {
        let (mut table, mut index) = table(vec![job(1, "alpha beta"), job(2, "alpha gamma")]);
        let gone = table.remove(&1).unwrap();
        index.remove(&gone);
        assert_eq!(ids(&table, &index, "alpha", SearchField::Payload), [2]);
        assert!(ids(&table, &index, "beta", SearchField::Payload).is_empty());
        assert!(ids(&table, &index, "key-1", SearchField::IdempotencyKey).is_empty());
        assert_eq!(index.word_count(), 2, "beta's entry is freed");
        assert_eq!(index.postings.len(), 2);
    }

    #[test]
    fn the_limit_is_kept_and_more_is_told() {
        let (table, index) = table((1..=10).map(|id| job(id, "same words")).collect());
        let query = SearchQuery {
            text: "same".into(),
            field: SearchField::Payload,
            queue: None,
            limit: 3,
        };
        let hits = index.search(&table, &query);
        assert_eq!(hits.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [10, 9, 8]);
        assert!(hits.more);
    }

    #[test]
    fn fingerprints_mask_numbers_and_ids() {
        assert_eq!(
            fingerprint("timeout after 5000 ms on 10.0.0.7:80"),
            "timeout after # ms on #"
        );
        assert_eq!(
            fingerprint("timeout after 300 ms on 10.0.0.9:80"),
            "timeout after # ms on #"
        );
        assert_eq!(
            fingerprint("user u-123 not found (order 9f8e7d6c-aaaa)."),
            "user # not found (order #)."
        );
        assert_eq!(
            fingerprint("SMTP 550: mailbox user7@example.com unavailable"),
            "SMTP #: mailbox # unavailable"
        );
        assert_eq!(
            fingerprint("GET http://10.0.0.1/v1/jobs/77 failed"),
            "GET # failed"
        );
        assert_eq!(fingerprint("  boom \n\t again "), "boom again");
        assert_eq!(fingerprint(&"x ".repeat(500)).chars().count(), 199);
    }
}
