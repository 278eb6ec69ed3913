//! WorkOS-format CSV deliveries (workos-api.md §7): `users.csv` (required), `groups.csv` and
//! `user_groups.csv` (optional), applied as ONE full snapshot.
//!
//! A delivery is all or nothing: a first streaming pass validates every file (encoding,
//! required columns, field counts, empty required values, duplicate ids, unknown `user_id`s in
//! `user_groups.csv`) and keeps only the set of user ids and group names; only when nothing is
//! wrong is it applied, and then the directory engine reads the files again through
//! [`CsvSnapshot`] (a streaming [`SnapshotSource`]): no pass ever holds the rows in memory. A
//! rejected delivery costs the id set, and the report names file, line and reason for each
//! problem.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use idbridge_directory::{
    DirectorySettings, EngineError, GroupInput, Snapshot, SnapshotSource, UserInput, UserRecord,
};
use idbridge_model::DirectoryUserEmail;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The required file of a delivery.
pub const USERS_FILE: &str = "users.csv";
/// Optional group metadata.
pub const GROUPS_FILE: &str = "groups.csv";
/// Optional memberships.
pub const USER_GROUPS_FILE: &str = "user_groups.csv";
/// The files a delivery is made of, in processing order.
pub const DELIVERY_FILES: [&str; 3] = [USERS_FILE, GROUPS_FILE, USER_GROUPS_FILE];

const USER_REQUIRED: [&str; 4] = ["user_id", "first_name", "last_name", "email"];
/// Columns the engine's predefined custom attributes read (attributes.rs `PREDEFINED`); only
/// these and the attribute map's columns go into a user's `source`, so a big snapshot does not
/// hold every row twice.
const PREDEFINED_COLUMNS: [&str; 8] = [
    "department_name",
    "cost_center_name",
    "division_name",
    "employee_number",
    "organization",
    "employee_type",
    "employment_start_date",
    "manager_email",
];

/// One thing wrong with a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `users.csv`, `groups.csv` or `user_groups.csv`.
    pub file: String,
    /// 1-based line in the file (the header is line 1); `None` for whole-file problems.
    pub line: Option<u64>,
    /// What is wrong, for a human.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file, l, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// Why a delivery was refused: the first problems found (capped) and how many more there were.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The problems, in file then line order.
    pub problems: Vec<Problem>,
    /// Problems found beyond the cap.
    pub more: u64,
}

impl Rejection {
    /// One whole-delivery problem (e.g. the mass-deletion guard).
    pub fn single(file: &str, reason: impl Into<String>) -> Self {
        Rejection {
            problems: vec![Problem {
                file: file.to_owned(),
                line: None,
                reason: reason.into(),
            }],
            more: 0,
        }
    }

    /// The report written next to the uploader's files: one problem per line.
    pub fn report(&self) -> String {
        let mut out = String::from("delivery rejected: nothing was changed\n");
        for p in &self.problems {
            out.push_str(&p.to_string());
            out.push('\n');
        }
        if self.more > 0 {
            out.push_str(&format!("... and {} more problems\n", self.more));
        }
        out
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.first() {
            Some(p) if self.problems.len() == 1 && self.more == 0 => write!(f, "{p}"),
            Some(p) => write!(
                f,
                "{p} (and {} more)",
                self.problems.len() as u64 - 1 + self.more
            ),
            None => write!(f, "rejected"),
        }
    }
}

/// Why ingestion stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The delivery is bad; nothing may be applied.
    #[error("delivery rejected: {0}")]
    Rejected(Rejection),
    /// A file could not be read (our side, not the uploader's).
    #[error("reading {file}: {source}")]
    Io {
        /// Which file.
        file: String,
        /// The I/O error.
        source: io::Error,
    },
}

/// The files of one delivery on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFiles {
    /// `users.csv`.
    pub users: PathBuf,
    /// `groups.csv`, if delivered.
    pub groups: Option<PathBuf>,
    /// `user_groups.csv`, if delivered.
    pub user_groups: Option<PathBuf>,
}

impl DeliveryFiles {
    /// The delivery in `dir`, or `None` when it has no `users.csv` (not a delivery yet).
    pub fn in_dir(dir: &Path) -> Option<Self> {
        let present = |name: &str| {
            let p = dir.join(name);
            // symlink_metadata: a symlink is never a delivery file.
            std::fs::symlink_metadata(&p)
                .ok()
                .filter(|m| m.file_type().is_file())
                .map(|_| p)
        };
        Some(DeliveryFiles {
            users: present(USERS_FILE)?,
            groups: present(GROUPS_FILE),
            user_groups: present(USER_GROUPS_FILE),
        })
    }

    /// Total size in bytes (for progress bars).
    pub fn total_bytes(&self) -> u64 {
        [
            Some(&self.users),
            self.groups.as_ref(),
            self.user_groups.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
    }
}

/// Limits and mapping for one ingestion.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Stop collecting problems after this many (the rest are counted).
    pub max_problems: usize,
    /// A row longer than this is malformed (bounds memory for a single record).
    pub max_row_bytes: usize,
    /// Columns copied into each user's attribute `source` (lowercase). Built from the
    /// directory's settings by [`IngestOptions::for_settings`].
    pub source_columns: HashSet<String>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions::for_settings(&DirectorySettings::default())
    }
}

impl IngestOptions {
    /// Options for a directory: the predefined columns when enabled, plus the first segment of
    /// every attribute-map path (a CSV column name).
    pub fn for_settings(settings: &DirectorySettings) -> Self {
        let mut source_columns: HashSet<String> = HashSet::new();
        if settings.predefined_attributes {
            source_columns.extend(PREDEFINED_COLUMNS.iter().map(|c| (*c).to_owned()));
        }
        for path in settings.attribute_map.values() {
            // A column name may itself contain dots; keep both the whole path and its head.
            source_columns.insert(path.to_ascii_lowercase());
            if let Some(head) = path.split(['.', ':']).next() {
                source_columns.insert(head.to_ascii_lowercase());
            }
        }
        IngestOptions {
            max_problems: 100,
            max_row_bytes: 64 * 1024,
            source_columns,
        }
    }
}

/// Rows read per file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    /// Data rows of `users.csv`.
    pub users: u64,
    /// Data rows of `groups.csv`.
    pub groups: u64,
    /// Data rows of `user_groups.csv`.
    pub user_groups: u64,
}

/// A validated delivery.
#[derive(Debug)]
pub struct Ingested {
    /// The full snapshot to apply.
    pub snapshot: Snapshot,
    /// Rows per file.
    pub rows: RowCounts,
}

/// Collects problems up to the cap.
struct Problems {
    list: Vec<Problem>,
    more: u64,
    cap: usize,
}

impl Problems {
    fn push(&mut self, file: &str, line: Option<u64>, reason: impl Into<String>) {
        if self.list.len() < self.cap {
            self.list.push(Problem {
                file: file.to_owned(),
                line,
                reason: reason.into(),
            });
        } else {
            self.more += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty() && self.more == 0
    }

    fn total(&self) -> u64 {
        self.list.len() as u64 + self.more
    }
}

/// Counts bytes read, for progress reporting.
struct Counting<'p, R> {
    inner: R,
    progress: &'p mut dyn FnMut(u64),
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// The lowercase header names, or the problems with the header.
struct Header {
    names: Vec<String>,
}

impl Header {
    fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// Streams one CSV file: header checks, then `row(line, fields)` for each data row whose
/// bytes are valid UTF-8 and whose field count matches. Returns the number of data rows.
fn stream_file(
    path: &Path,
    file: &str,
    required: &[&str],
    opts: &IngestOptions,
    problems: &mut Problems,
    progress: &mut dyn FnMut(u64),
    mut row: impl FnMut(u64, &Header, &csv::StringRecord, &mut Problems),
) -> Result<u64, IngestError> {
    let io_err = |source| IngestError::Io {
        file: file.to_owned(),
        source,
    };
    let f = File::open(path).map_err(io_err)?;
    let reader = Counting {
        inner: BufReader::with_capacity(256 * 1024, f),
        progress,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(256 * 1024)
        .from_reader(reader);
    let mut rec = csv::ByteRecord::new();
    let mut header: Option<Header> = None;
    let mut rows = 0u64;
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| p.line());
                match e.kind() {
                    csv::ErrorKind::Io(_) => {
                        let reason = e.to_string();
                        return Err(io_err(io::Error::other(reason)));
                    }
                    _ => {
                        problems.push(file, line, format!("malformed CSV: {e}"));
                        // The reader cannot resync reliably after a parse error.
                        return Ok(rows);
                    }
                }
            }
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        if rec.as_slice().len() > opts.max_row_bytes {
            problems.push(
                file,
                Some(line),
                format!("row longer than {} bytes", opts.max_row_bytes),
            );
            continue;
        }
        let fields = match csv::StringRecord::from_byte_record(std::mem::take(&mut rec)) {
            Ok(f) => f,
            Err(e) => {
                let field = e.utf8_error().field() + 1;
                let at = e.utf8_error().valid_up_to();
                rec = e.into_byte_record();
                problems.push(
                    file,
                    Some(line),
                    format!("not UTF-8 (field {field}, byte {at}): files must be UTF-8 encoded"),
                );
                if header.is_none() {
                    return Ok(rows);
                }
                continue;
            }
        };
        let Some(h) = &header else {
            // The header row.
            let names: Vec<String> = fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let f = if i == 0 {
                        f.trim_start_matches('\u{feff}')
                    } else {
                        f
                    };
                    f.trim().to_ascii_lowercase()
                })
                .collect();
            let mut ok = true;
            for r in required {
                if !names.iter().any(|n| n == r) {
                    problems.push(file, Some(line), format!("missing required column {r:?}"));
                    ok = false;
                }
            }
            let mut seen = HashSet::new();
            for n in &names {
                if n.is_empty() {
                    problems.push(file, Some(line), "empty column name in header");
                    ok = false;
                } else if !seen.insert(n.as_str()) {
                    problems.push(file, Some(line), format!("column {n:?} appears twice"));
                    ok = false;
                }
            }
            if !ok {
                return Ok(rows);
            }
            header = Some(Header { names });
            rec = fields.into_byte_record();
            continue;
        };
        rows += 1;
        if fields.len() != h.names.len() {
            problems.push(
                file,
                Some(line),
                format!(
                    "expected {} fields (as in the header), found {}",
                    h.names.len(),
                    fields.len()
                ),
            );
            rec = fields.into_byte_record();
            continue;
        }
        row(line, h, &fields, problems);
        rec = fields.into_byte_record();
    }
    if header.is_none() {
        problems.push(file, None, "empty file: a header row is required");
    }
    Ok(rows)
}

fn required_value<'a>(
    file: &str,
    line: u64,
    h: &Header,
    fields: &'a csv::StringRecord,
    col: &str,
    problems: &mut Problems,
) -> Option<&'a str> {
    let v = h.index(col).and_then(|i| fields.get(i)).map(str::trim)?;
    if v.is_empty() {
        problems.push(file, Some(line), format!("{col} is empty"));
        return None;
    }
    Some(v)
}

fn plausible_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// Validates a delivery (pass one) and, when it is clean, builds its snapshot in memory. For
/// small deliveries and tests; the delivery path streams instead ([`validate_only`], then
/// [`CsvSnapshot`]). `progress` receives byte counts as the files are read (both passes).
pub fn ingest(
    files: &DeliveryFiles,
    opts: &IngestOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Ingested, IngestError> {
    let _span = tracing::info_span!("sftp.ingest", users = %files.users.display()).entered();
    let (_, rows) = validate(files, opts, progress)?;
    let src = CsvSnapshot::new(files, opts, progress);
    let collect = || -> Result<Snapshot, EngineError> {
        let mut snap = Snapshot {
            groups: src.groups()?,
            ..Snapshot::default()
        };
        src.for_each_user(&mut |u| {
            snap.users.push(u.clone());
            Ok(())
        })?;
        src.for_each_membership(&mut |g, u| {
            snap.memberships.push((g.to_owned(), u.to_owned()));
            Ok(())
        })?;
        Ok(snap)
    };
    let snapshot = collect()
        .map_err(|e| IngestError::Rejected(Rejection::single(USERS_FILE, e.to_string())))?;
    Ok(Ingested { snapshot, rows })
}

/// Pass one alone: every check, building nothing (a dry run, and the benchmark's first phase).
pub fn validate_only(
    files: &DeliveryFiles,
    opts: &IngestOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<RowCounts, IngestError> {
    validate(files, opts, progress).map(|(_, rows)| rows)
}

/// Pass one: every check, keeping only the user id set.
fn validate(
    files: &DeliveryFiles,
    opts: &IngestOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<(HashSet<Box<str>>, RowCounts), IngestError> {
    let mut problems = Problems {
        list: Vec::new(),
        more: 0,
        cap: opts.max_problems.max(1),
    };
    let mut rows = RowCounts::default();
    let mut user_ids: HashSet<Box<str>> = HashSet::new();
    let users_before = problems.total();
    // Problems of users.csv rows whose user_id was read (the rest hide a user_id).
    let mut readable_row_problems = 0u64;
    rows.users = stream_file(
        &files.users,
        USERS_FILE,
        &USER_REQUIRED,
        opts,
        &mut problems,
        progress,
        |line, h, fields, problems| {
            let f = USERS_FILE;
            let at = problems.total();
            let id = required_value(f, line, h, fields, "user_id", problems);
            required_value(f, line, h, fields, "first_name", problems);
            required_value(f, line, h, fields, "last_name", problems);
            if let Some(email) = required_value(f, line, h, fields, "email", problems) {
                if !plausible_email(email) {
                    problems.push(f, Some(line), format!("email {email:?} is not an address"));
                }
            }
            if let Some(id) = id {
                if !user_ids.insert(id.into()) {
                    problems.push(f, Some(line), format!("duplicate user_id {id:?}"));
                }
                readable_row_problems += problems.total() - at;
            }
        },
    )?;
    // Some users.csv row's user_id could not be read (an empty user_id, a row skipped for its
    // field count or encoding, a bad header): user_groups.csv rows naming an unknown user_id
    // are then most likely follow-on errors of that root cause, and are counted, not listed.
    let users_unreadable = problems.total() - users_before > readable_row_problems;
    let mut follow_on = 0u64;
    if let Some(path) = &files.groups {
        let mut names: HashSet<Box<str>> = HashSet::new();
        rows.groups = stream_file(
            path,
            GROUPS_FILE,
            &["group_name"],
            opts,
            &mut problems,
            progress,
            |line, h, fields, problems| {
                if let Some(g) =
                    required_value(GROUPS_FILE, line, h, fields, "group_name", problems)
                {
                    if !names.insert(g.into()) {
                        problems.push(
                            GROUPS_FILE,
                            Some(line),
                            format!("duplicate group_name {g:?}"),
                        );
                    }
                }
            },
        )?;
    }
    if let Some(path) = &files.user_groups {
        rows.user_groups = stream_file(
            path,
            USER_GROUPS_FILE,
            &["group_name", "user_id"],
            opts,
            &mut problems,
            progress,
            |line, h, fields, problems| {
                let f = USER_GROUPS_FILE;
                required_value(f, line, h, fields, "group_name", problems);
                if let Some(u) = required_value(f, line, h, fields, "user_id", problems) {
                    if !user_ids.contains(u) {
                        if users_unreadable {
                            follow_on += 1;
                        } else {
                            problems.push(
                                f,
                                Some(line),
                                format!("user_id {u:?} is not in {USERS_FILE}"),
                            );
                        }
                    }
                }
            },
        )?;
    }
    if follow_on > 0 {
        // After the root causes, and never crowded out by the cap.
        problems.list.push(Problem {
            file: USER_GROUPS_FILE.to_owned(),
            line: None,
            reason: format!(
                "{follow_on} row(s) name a user_id not in {USERS_FILE}: most likely follow-on \
                 errors of the {USERS_FILE} problems above (rows whose user_id could not be \
                 read); fix those and deliver again"
            ),
        });
    }
    if problems.is_empty() {
        Ok((user_ids, rows))
    } else {
        Err(IngestError::Rejected(Rejection {
            problems: problems.list,
            more: problems.more,
        }))
    }
}

/// A validated delivery as a [`SnapshotSource`]: each pass re-reads the files, so memory does
/// not grow with them. Every check already passed ([`validate_only`]); a problem found now
/// means a file changed under us, reported as [`EngineError::Source`] (the engine then stops;
/// what it committed stays, and the next delivery completes it).
pub struct CsvSnapshot<'a> {
    files: &'a DeliveryFiles,
    opts: &'a IngestOptions,
    progress: RefCell<&'a mut dyn FnMut(u64)>,
}

impl<'a> CsvSnapshot<'a> {
    /// A source over `files`; `progress` receives byte counts as passes read them.
    pub fn new(
        files: &'a DeliveryFiles,
        opts: &'a IngestOptions,
        progress: &'a mut dyn FnMut(u64),
    ) -> Self {
        CsvSnapshot {
            files,
            opts,
            progress: RefCell::new(progress),
        }
    }

    /// Streams one file's rows into `row`, stopping at the first error it returns.
    fn rows(
        &self,
        path: &Path,
        file: &str,
        required: &[&str],
        mut row: impl FnMut(&Header, &csv::StringRecord) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut problems = Problems {
            list: Vec::new(),
            more: 0,
            cap: 1,
        };
        let mut failed: Option<EngineError> = None;
        let mut progress = self.progress.borrow_mut();
        stream_file(
            path,
            file,
            required,
            self.opts,
            &mut problems,
            &mut **progress,
            |_line, h, fields, _| {
                if failed.is_none() {
                    failed = row(h, fields).err();
                }
            },
        )
        .map_err(|e| EngineError::Source(e.to_string()))?;
        if let Some(e) = failed {
            return Err(e);
        }
        match problems.list.first() {
            Some(p) => Err(EngineError::Source(format!(
                "{file} changed after it was validated: {p}"
            ))),
            None => Ok(()),
        }
    }
}

fn trimmed(h: &Header, fields: &csv::StringRecord, column: &str) -> String {
    h.index(column)
        .and_then(|i| fields.get(i))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

impl SnapshotSource for CsvSnapshot<'_> {
    fn for_each_user(
        &self,
        f: &mut dyn FnMut(&UserInput) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        self.rows(
            &self.files.users,
            USERS_FILE,
            &USER_REQUIRED,
            |h, fields| f(&user_input(h, fields, self.opts)),
        )
    }

    /// The apply pass digests each row (header names, the columns copied to `source`, the
    /// fields) and builds the user only when the engine asks: an unchanged user of a daily
    /// delivery costs a hash, not a parse into JSON.
    fn for_each_user_record(
        &self,
        f: &mut dyn FnMut(UserRecord<'_>) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut ctx: Option<(Sha256, usize)> = None;
        self.rows(
            &self.files.users,
            USERS_FILE,
            &USER_REQUIRED,
            |h, fields| {
                let (base, id_at) = ctx.get_or_insert_with(|| {
                    // What a row is read with: the header and the source columns (sorted).
                    let mut base = Sha256::new();
                    base.update(b"idbridge-csv-user-1");
                    let mut cols: Vec<&String> = self.opts.source_columns.iter().collect();
                    cols.sort();
                    for part in h.names.iter().chain([&String::new()]).chain(cols) {
                        base.update((part.len() as u64).to_le_bytes());
                        base.update(part.as_bytes());
                    }
                    (base, h.index("user_id").unwrap_or(usize::MAX))
                });
                let mut d = base.clone();
                d.update((fields.len() as u64).to_le_bytes());
                for field in fields {
                    d.update((field.len() as u64).to_le_bytes());
                    d.update(field.as_bytes());
                }
                let idp_id = fields.get(*id_at).map(str::trim).unwrap_or_default();
                f(UserRecord::Lazy {
                    idp_id,
                    digest: d.finalize().into(),
                    build: &mut || Ok(user_input(h, fields, self.opts)),
                })
            },
        )
    }

    /// The index pass reads only `user_id` (no user is built); CSV users are always active
    /// and have no unique keys, so what pass one validated is all the engine needs.
    fn for_each_user_id(
        &self,
        f: &mut dyn FnMut(&str, bool) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let mut at: Option<usize> = None;
        self.rows(
            &self.files.users,
            USERS_FILE,
            &USER_REQUIRED,
            |h, fields| {
                let i = *at.get_or_insert_with(|| h.index("user_id").unwrap_or(usize::MAX));
                f(fields.get(i).map(str::trim).unwrap_or_default(), true)
            },
        )
    }

    fn groups(&self) -> Result<Vec<GroupInput>, EngineError> {
        let mut groups = Vec::new();
        let mut names: HashSet<String> = HashSet::new();
        if let Some(path) = &self.files.groups {
            self.rows(path, GROUPS_FILE, &["group_name"], |h, fields| {
                let g = group_input(h, fields);
                names.insert(g.idp_id.clone());
                groups.push(g);
                Ok(())
            })?;
        }
        // A group named only in user_groups.csv exists with no metadata.
        if let Some(path) = &self.files.user_groups {
            self.rows(
                path,
                USER_GROUPS_FILE,
                &["group_name", "user_id"],
                |h, fields| {
                    let g = trimmed(h, fields, "group_name");
                    if !names.contains(&g) {
                        names.insert(g.clone());
                        groups.push(GroupInput {
                            idp_id: g.clone(),
                            name: g.clone(),
                            raw_attributes: Map::from_iter([(
                                "group_name".to_owned(),
                                Value::String(g),
                            )]),
                            source: Value::Null,
                            unique_keys: Vec::new(),
                        });
                    }
                    Ok(())
                },
            )?;
        }
        Ok(groups)
    }

    fn for_each_membership(
        &self,
        f: &mut dyn FnMut(&str, &str) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let Some(path) = &self.files.user_groups else {
            return Ok(());
        };
        let mut at: Option<(usize, usize)> = None;
        self.rows(
            path,
            USER_GROUPS_FILE,
            &["group_name", "user_id"],
            |h, fields| {
                let (g, u) = *at.get_or_insert_with(|| {
                    let col = |c| h.index(c).unwrap_or(usize::MAX);
                    (col("group_name"), col("user_id"))
                });
                let field = |i| fields.get(i).map(str::trim).unwrap_or_default();
                f(field(g), field(u))
            },
        )
    }
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// One `users.csv` row as a source-agnostic user: the WorkOS columns to their fields, the
/// non-empty columns as `raw_attributes`, the mapped columns as the attribute `source`.
fn user_input(h: &Header, fields: &csv::StringRecord, opts: &IngestOptions) -> UserInput {
    let mut input = UserInput {
        active: true,
        ..UserInput::default()
    };
    let mut raw = Map::new();
    let mut source = Map::new();
    for (name, value) in h.names.iter().zip(fields) {
        let Some(v) = non_empty(value) else { continue };
        match name.as_str() {
            "user_id" => input.idp_id = v.clone(),
            "email" => {
                input.emails = vec![DirectoryUserEmail {
                    primary: true,
                    email_type: Some("work".to_owned()),
                    value: Some(v.clone()),
                }];
                input.email = Some(v.clone());
            }
            "first_name" => input.first_name = Some(v.clone()),
            "last_name" => input.last_name = Some(v.clone()),
            "display_name" => input.name = Some(v.clone()),
            "username" => input.username = Some(v.clone()),
            "job_title" => input.job_title = Some(v.clone()),
            _ => {}
        }
        if opts.source_columns.contains(name.as_str()) {
            source.insert(name.clone(), Value::String(v.clone()));
        }
        raw.insert(name.clone(), Value::String(v));
    }
    input.raw_attributes = raw;
    input.source = if source.is_empty() {
        Value::Null
    } else {
        Value::Object(source)
    };
    input
}

fn group_input(h: &Header, fields: &csv::StringRecord) -> GroupInput {
    let mut raw = Map::new();
    let mut name = String::new();
    for (col, value) in h.names.iter().zip(fields) {
        let Some(v) = non_empty(value) else { continue };
        if col == "group_name" {
            name = v.clone();
        }
        raw.insert(col.clone(), Value::String(v));
    }
    GroupInput {
        idp_id: name.clone(),
        name,
        raw_attributes: raw,
        source: Value::Null,
        unique_keys: Vec::new(),
    }
}
