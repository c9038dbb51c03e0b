//! Finding jobs in memory by what people remember about them: an
//! idempotency key, a header, text in the payload, text of an error. Each
//! has an index kept as jobs enter and leave the table, so a search over a
//! million jobs does not decode or compare every job.
//!
//! - Payload text: a signature per job, [`SIGNATURE_BITS`] bits with one
//!   bit set for each three-byte sequence (trigram) of the lower-cased
//!   first [`PAYLOAD_INDEXED_BYTES_MAX`] bytes of the payload, kept in id
//!   order in one vector. A query's trigrams give a mask; the jobs whose
//!   signature holds every bit of it are the candidates, and each is then
//!   checked against its payload, so a hit really contains the query (ASCII
//!   case ignored). Adding a job costs an append; its signature is
//!   computed by the first search after it, in one pass over the jobs added
//!   since (so enqueues never pay for it, and a table nobody searches never
//!   does); a search then reads the vector from the newest job back until
//!   it has its results, 72 bytes a job. A query shorter than three
//!   bytes, or a payload so long that its signature is full, makes every
//!   job a candidate: still correct, only slower. Text past the first
//!   [`PAYLOAD_INDEXED_BYTES_MAX`] bytes is found only in such full
//!   signatures.
//! - Idempotency key and header (`name=value`, or `name` for any value):
//!   exact, in maps keyed by the text's hash; a key or header held by more
//!   than [`COMMON_JOBS_MIN`] jobs is counted, not listed, and a search for
//!   it reads the jobs newest first.
//! - Error text: the jobs that have an error form a set of their own; a
//!   search reads only them, and matches the query inside any error kept
//!   with the job.
//!
//! Also here: [`fingerprint`], the error text with its numbers and ids
//! masked, which groups dead jobs by cause.

use std::cell::{Ref, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use crate::job::{Job, JobId};

/// Bytes of a payload whose trigrams are in its signature.
pub const PAYLOAD_INDEXED_BYTES_MAX: usize = 4096;
/// Bits of a payload's signature: enough that a payload of a few hundred
/// bytes sets a small fraction of them, so a query of a few words narrows
/// a million jobs to a handful.
pub const SIGNATURE_BITS: usize = 512;
const SIGNATURE_WORDS: usize = SIGNATURE_BITS / 64;
/// Most jobs one search returns.
pub const SEARCH_RESULTS_MAX: usize = 1_000;
/// A header or key held by more jobs than this is common: the index stops
/// listing its jobs (each would cost memory and time at every enqueue) and
/// only counts them, and a search for it reads the jobs newest first,
/// checking each, which is fast because hits are dense.
pub const COMMON_JOBS_MIN: usize = 10_000;

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

/// The jobs holding one word, key or header: most such sets hold one job
/// (an order number, an idempotency key), so that case costs no
/// allocation; a set past [`COMMON_JOBS_MIN`] jobs is only counted.
#[derive(Debug)]
enum Postings {
    One(JobId),
    Many(BTreeSet<JobId>),
    /// Held by this many jobs, too many to list usefully: a search for it
    /// reads the table newest first instead, and finds hits fast because
    /// they are dense.
    Common(usize),
}

impl Postings {
    fn insert(&mut self, id: JobId) {
        match self {
            Postings::One(one) if *one == id => {}
            Postings::One(one) => *self = Postings::Many(BTreeSet::from([*one, id])),
            Postings::Many(many) if many.len() >= COMMON_JOBS_MIN => *self = Postings::Common(many.len() + 1),
            Postings::Many(many) => {
                many.insert(id);
            }
            Postings::Common(jobs) => *jobs += 1,
        }
    }

    /// Removes `id`, which was inserted; true when no job is left.
    fn remove(&mut self, id: JobId) -> bool {
        match self {
            Postings::One(one) => *one == id,
            Postings::Many(many) => {
                many.remove(&id);
                match many.len() {
                    0 => true,
                    1 => {
                        *self = Postings::One(*many.first().expect("one left"));
                        false
                    }
                    _ => false,
                }
            }
            Postings::Common(jobs) => {
                *jobs -= 1;
                *jobs == 0
            }
        }
    }

    /// The jobs newest first; `None` for a common one.
    fn newest_first(&self) -> Option<Box<dyn Iterator<Item = JobId> + '_>> {
        match self {
            Postings::One(one) => Some(Box::new(std::iter::once(*one))),
            Postings::Many(many) => Some(Box::new(many.iter().rev().copied())),
            Postings::Common(_) => None,
        }
    }
}

/// Where a search's candidates come from.
enum Candidates<'a> {
    /// These jobs, newest first.
    Listed(Box<dyn Iterator<Item = JobId> + 'a>),
    /// Every job, newest first: the query names something common.
    Every,
}

impl<'a> Candidates<'a> {
    fn none() -> Self {
        Candidates::Listed(Box::new(std::iter::empty()))
    }

    fn of(postings: Option<&'a Postings>) -> Self {
        match postings.map(Postings::newest_first) {
            None => Candidates::none(),
            Some(Some(ids)) => Candidates::Listed(ids),
            Some(None) => Candidates::Every,
        }
    }
}

/// Maps keyed by a hash computed once per text: a lookup compares one
/// `u64`, never a string, and no text is copied into the index. A
/// collision only adds a candidate, which the search then checks against
/// the job itself.
type ByHash<V> = HashMap<u64, V, BuildHasherDefault<HashedKey>>;

/// The hasher of [`ByHash`]: its keys are hashes already.
#[derive(Debug, Default)]
struct HashedKey(u64);

impl Hasher for HashedKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type Signature = [u64; SIGNATURE_WORDS];

/// ASCII lower case of every byte, as a table: no branch per byte.
static LOWER: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = (byte as u8).to_ascii_lowercase();
        byte += 1;
    }
    table
};

/// The signature of `text`: one bit for each of its trigrams (three
/// bytes in a row, lower-cased), picked by a multiplicative hash of the 24
/// bits they make. One pass with the trigram rolled in a register, about
/// ten instructions a byte: it runs at every enqueue.
fn signature(text: &[u8]) -> Signature {
    const SHIFT: u32 = 32 - SIGNATURE_BITS.trailing_zeros();
    let mut bits = [0u64; SIGNATURE_WORDS];
    let [first, second, rest @ ..] = text else {
        return bits;
    };
    let lower = |byte: u8| u32::from(LOWER[usize::from(byte)]);
    let mut rolling = lower(*first) << 8 | lower(*second);
    for &byte in rest {
        rolling = (rolling << 8 | lower(byte)) & 0x00ff_ffff;
        let bit = (rolling.wrapping_mul(0x9e37_79b1) >> SHIFT) as usize;
        bits[(bit >> 6) % SIGNATURE_WORDS] |= 1 << (bit & 63);
    }
    bits
}

/// A signature that matches every mask: an entry not signed yet.
const UNSIGNED: Signature = [u64::MAX; SIGNATURE_WORDS];
/// The signature of an entry whose job left, until the next compaction.
const GONE: Signature = [0; SIGNATURE_WORDS];

/// One signature per job in the table, by id. A job's signature is
/// computed not when it is enqueued but by the first search after, in one
/// pass over the jobs added since: enqueues pay a push, and a table that
/// is never searched never pays more.
#[derive(Debug, Default)]
struct Signatures {
    /// (job, signature) by id; from `signed` on, [`UNSIGNED`] (or
    /// [`GONE`]).
    entries: Vec<(JobId, Signature)>,
    signed: usize,
    /// Entries whose job left.
    gone: usize,
}

impl Signatures {
    fn add(&mut self, job: &Job) {
        match self.entries.last() {
            Some((last, _)) if *last >= job.id => {
                // Out of id order (not how the table grows): signed now,
                // so that every entry before `signed` stays signed.
                let at = self.entries.partition_point(|(id, _)| *id < job.id);
                let bits = if at < self.signed {
                    self.signed += 1;
                    payload_signature(job)
                } else {
                    UNSIGNED
                };
                self.entries.insert(at, (job.id, bits));
            }
            _ => self.entries.push((job.id, UNSIGNED)),
        }
    }

    fn remove(&mut self, id: JobId) {
        let at = self.entries.partition_point(|(entry, _)| *entry < id);
        if let Some((entry, bits)) = self.entries.get_mut(at)
            && *entry == id
            && *bits != GONE
        {
            *bits = GONE;
            self.gone += 1;
        }
        // Amortized: a compaction follows at least as many removals as
        // the entries it keeps.
        if self.gone > 1_024 && self.gone * 2 > self.entries.len() {
            let mut index = 0;
            let mut signed = 0;
            let was_signed = self.signed;
            self.entries.retain(|(_, bits)| {
                let keep = *bits != GONE;
                if keep && index < was_signed {
                    signed += 1;
                }
                index += 1;
                keep
            });
            self.signed = signed;
            self.gone = 0;
        }
    }

    /// Signs the entries added since the last search, walking them and the
    /// table together in id order.
    fn sign(&mut self, jobs: &std::collections::BTreeMap<JobId, Job>) {
        let Some(&(first, _)) = self.entries.get(self.signed) else {
            return;
        };
        let mut table = jobs.range(first..).peekable();
        for (id, bits) in &mut self.entries[self.signed..] {
            if *bits == GONE {
                continue;
            }
            while table.next_if(|(job, _)| *job < id).is_some() {}
            *bits = match table.next_if(|(job, _)| *job == id) {
                Some((_, job)) => payload_signature(job),
                None => GONE,
            };
        }
        self.signed = self.entries.len();
    }
}

/// The signature of a job's payload, over its first
/// [`PAYLOAD_INDEXED_BYTES_MAX`] bytes.
fn payload_signature(job: &Job) -> Signature {
    signature(&job.payload[..job.payload.len().min(PAYLOAD_INDEXED_BYTES_MAX)])
}

/// The jobs of the entries whose signature holds every bit of `mask`,
/// newest first, reading the signatures under their borrow.
struct SignatureScan<'a> {
    entries: Ref<'a, Signatures>,
    position: usize,
    mask: Signature,
}

impl Iterator for SignatureScan<'_> {
    type Item = JobId;

    fn next(&mut self) -> Option<JobId> {
        while self.position > 0 {
            self.position -= 1;
            let (id, bits) = &self.entries.entries[self.position];
            if bits
                .iter()
                .zip(&self.mask)
                .all(|(bits, mask)| bits & mask == *mask)
            {
                return Some(*id);
            }
        }
        None
    }
}

/// The indexes (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct SearchIndex {
    /// Seeded per process, so texts chosen to collide cannot slow the maps.
    hasher: RandomState,
    /// The payload signatures, signed by the first search that needs them
    /// (a cell: a search reads the table, it does not change it).
    signatures: RefCell<Signatures>,
    keys: ByHash<Postings>,
    /// By `name=value`.
    headers: ByHash<Postings>,
    /// By `name`.
    header_names: ByHash<Postings>,
    /// Jobs with at least one error.
    failed: BTreeSet<JobId>,
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

fn add_to(map: &mut ByHash<Postings>, hash: u64, id: JobId) {
    match map.get_mut(&hash) {
        Some(postings) => postings.insert(id),
        None => {
            map.insert(hash, Postings::One(id));
        }
    }
}

fn remove_from(map: &mut ByHash<Postings>, hash: u64, id: JobId) {
    if let Some(postings) = map.get_mut(&hash)
        && postings.remove(id)
    {
        map.remove(&hash);
    }
}

impl SearchIndex {
    /// The hash of the bytes of `parts` one after the other; a header's
    /// `name=value` is hashed from its two halves, without a copy.
    fn hash(&self, parts: &[&[u8]]) -> u64 {
        let mut state = self.hasher.build_hasher();
        for part in parts {
            state.write(part);
        }
        state.finish()
    }

    /// Indexes a job entering the table.
    pub(crate) fn add(&mut self, job: &Job) {
        // Ids grow with every enqueue, so this is an append; a snapshot
        // restores jobs in id order too.
        self.signatures.get_mut().add(job);
        if let Some(key) = &job.idempotency_key {
            let hash = self.hash(&[key.as_bytes()]);
            add_to(&mut self.keys, hash, job.id);
        }
        for (name, value) in &job.headers {
            let pair = self.hash(&[name.as_bytes(), b"=", value.as_bytes()]);
            let name = self.hash(&[name.as_bytes()]);
            add_to(&mut self.headers, pair, job.id);
            add_to(&mut self.header_names, name, job.id);
        }
        if !job.errors.is_empty() {
            self.failed.insert(job.id);
        }
    }

    /// Forgets a job leaving the table. Its payload, key and headers are
    /// those it was added with (they never change).
    pub(crate) fn remove(&mut self, job: &Job) {
        self.signatures.get_mut().remove(job.id);
        if let Some(key) = &job.idempotency_key {
            let hash = self.hash(&[key.as_bytes()]);
            remove_from(&mut self.keys, hash, job.id);
        }
        for (name, value) in &job.headers {
            let pair = self.hash(&[name.as_bytes(), b"=", value.as_bytes()]);
            let name = self.hash(&[name.as_bytes()]);
            remove_from(&mut self.headers, pair, job.id);
            remove_from(&mut self.header_names, name, job.id);
        }
        self.failed.remove(&job.id);
    }

    /// Notes that a job now has an error.
    pub(crate) fn failed(&mut self, id: JobId) {
        self.failed.insert(id);
    }

    /// Jobs whose payload may contain `query` (lower-case), newest first:
    /// those whose signature holds every bit of the query's; the caller
    /// checks each against the payload.
    fn payload_candidates(
        &self,
        jobs: &std::collections::BTreeMap<JobId, Job>,
        query: &str,
    ) -> Candidates<'_> {
        let mask = signature(query.as_bytes());
        if mask == GONE {
            // Shorter than a trigram: nothing narrows the search.
            return Candidates::Every;
        }
        self.signatures.borrow_mut().sign(jobs);
        let entries = self.signatures.borrow();
        let position = entries.entries.len();
        Candidates::Listed(Box::new(SignatureScan {
            entries,
            position,
            mask,
        }))
    }

    fn postings<'a>(map: &'a ByHash<Postings>, hash: u64) -> Candidates<'a> {
        Candidates::of(map.get(&hash))
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
        let mut take = |candidates: Candidates<'_>, check: &dyn Fn(&Job) -> bool| {
            let mut every;
            let mut listed;
            let candidates: &mut dyn Iterator<Item = &'a Job> = match candidates {
                Candidates::Every => {
                    every = jobs.values().rev();
                    &mut every
                }
                Candidates::Listed(ids) => {
                    listed = ids.filter_map(|id| jobs.get(&id));
                    &mut listed
                }
            };
            for job in candidates {
                let id = job.id;
                if seen.contains(&id) || !in_queue(job) || !check(job) {
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
            take(Candidates::Listed(Box::new(std::iter::once(id))), &|_| true);
        }
        if any || field == SearchField::IdempotencyKey {
            take(
                Self::postings(&self.keys, self.hash(&[text.as_bytes()])),
                &|job: &Job| job.idempotency_key.as_deref() == Some(text),
            );
        }
        if any || field == SearchField::Header {
            match text.split_once('=') {
                Some((name, value)) => take(
                    Self::postings(
                        &self.headers,
                        self.hash(&[name.as_bytes(), b"=", value.as_bytes()]),
                    ),
                    &|job: &Job| job.headers.iter().any(|(n, v)| n == name && v == value),
                ),
                None => take(
                    Self::postings(&self.header_names, self.hash(&[text.as_bytes()])),
                    &|job: &Job| job.headers.iter().any(|(n, _)| n == text),
                ),
            }
        }
        if any || field == SearchField::Payload {
            let needle = lower.as_bytes();
            take(self.payload_candidates(jobs, &lower), &|job: &Job| {
                contains_ignore_case(&job.payload, needle)
            });
        }
        if any || field == SearchField::Error {
            let needle = lower.as_bytes();
            take(
                Candidates::Listed(Box::new(self.failed.iter().rev().copied())),
                &|job: &Job| {
                    job.errors
                        .iter()
                        .any(|e| contains_ignore_case(e.error.as_bytes(), needle))
                },
            );
        }
        found.sort_unstable_by_key(|job| std::cmp::Reverse(job.id));
        SearchHits { jobs: found, more }
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
        assert_eq!(
            ids(&table, &index, "A-", payload),
            [2, 1],
            "shorter than a trigram: every job is read"
        );
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
        assert_eq!(index.signatures.borrow().gone, 1);
        assert!(ids(&table, &index, "bet", SearchField::Payload).is_empty());
    }

    #[test]
    fn signatures_compact_and_still_find_what_stays() {
        let (mut table, mut index) = table(
            (1..=3_000)
                .map(|id| job(id, &format!("word{id} shared")))
                .collect(),
        );
        for id in 1..=2_000 {
            let gone = table.remove(&id).unwrap();
            index.remove(&gone);
        }
        assert!(
            index.signatures.borrow().entries.len() < 3_000,
            "compacted: {}",
            index.signatures.borrow().entries.len()
        );
        assert_eq!(ids(&table, &index, "word2999", SearchField::Payload), [2999]);
        assert!(ids(&table, &index, "word42 ", SearchField::Payload).is_empty());
        assert_eq!(
            ids(&table, &index, "word2500 shared", SearchField::Payload),
            [2500]
        );
        // A job restored out of order keeps the vector sorted.
        let late = job(1_500, "late arrival");
        index.add(&late);
        table.insert(late.id, late);
        assert!(
            index
                .signatures
                .borrow()
                .entries
                .windows(2)
                .all(|w| w[0].0 < w[1].0)
        );
        assert_eq!(ids(&table, &index, "arrival", SearchField::Payload), [1_500]);
    }

    #[test]
    fn common_headers_are_counted_not_listed_and_still_found() {
        let count = COMMON_JOBS_MIN as u64 + 10;
        let (mut table, mut index) = table((1..=count).map(|id| job(id, "x")).collect());
        let hash = index.hash(&[b"tenant"]);
        assert!(matches!(index.header_names[&hash], Postings::Common(n) if n == count as usize));
        let query = SearchQuery {
            text: "tenant".into(),
            field: SearchField::Header,
            queue: None,
            limit: 3,
        };
        let hits = index.search(&table, &query);
        assert_eq!(
            hits.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
            [count, count - 1, count - 2]
        );
        assert!(hits.more);
        for id in 1..=count {
            let gone = table.remove(&id).unwrap();
            index.remove(&gone);
        }
        assert!(index.header_names.is_empty() && index.keys.is_empty());
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
