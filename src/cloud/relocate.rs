//! Moving a restore's recovered files into place.
//!
//! AWS Backup cannot restore EFS items into a directory of our choosing: an item-level
//! restore into an existing file system lands in a new *recovery directory*
//! `/aws-backup-restore_<datetime>` off the file system root, keeping each item's full
//! path, and no API says which directory a job created (docs/AWS.md, "Restore"). So once
//! the restore job completed, a one-off task mounts the file system root and runs
//! `wpfleet relocate-restore` (this module), which finds the recovery directory holding
//! the restored item and renames `<recovery directory><source>` to the epoch's directory
//! (`target`). The simulated cloud models the same behaviour with the same choice of
//! recovery directory ([`pick`]).
//!
//! Which recovery directory: one whose name (or, failing that, modification) time falls
//! in the restore job's [`Window`] (its creation to its completion, with a margin), and
//! which holds the source item. A restore of an instance runs only after the previous one
//! ended, and a relocated item is no longer in its recovery directory, so at most one
//! fits; should none or several, the task refuses (its exit status says which) rather
//! than guess, and the restore fails with that reason.
//!
//! Invariants:
//! * an existing target is success and nothing is moved: a re-run after success, or a
//!   concurrent run that won, changes nothing;
//! * the move is one `rename(2)` inside the file system, atomic: a crash leaves the files
//!   either where AWS Backup put them or in place, never half-moved;
//! * nothing outside `<root>/aws-backup-restore_*` and the target's parent is touched;
//!   only directories the move emptied are removed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use crate::model::Timestamp;

/// The name AWS Backup gives a recovery directory, before its date and time.
pub const RECOVERY_PREFIX: &str = "aws-backup-restore_";

/// Slack on each side of the restore job's lifetime: AWS documents no format or clock for
/// the directory's datetime, only that the job creates the directory.
pub const WINDOW_MARGIN_MINUTES: i64 = 5;

/// When the recovery directory of one restore job can have been made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

impl Window {
    /// The window of a job created at `created` and completed at `completed`.
    pub fn around(created: Timestamp, completed: Timestamp) -> Self {
        let margin = Duration::minutes(WINDOW_MARGIN_MINUTES);
        Self {
            not_before: created - margin,
            not_after: completed.max(created) + margin,
        }
    }

    pub fn contains(&self, t: Timestamp) -> bool {
        self.not_before <= t && t <= self.not_after
    }
}

/// The time in a recovery directory's name: its first 14 digits as `YYYYMMDDhhmmss`
/// (UTC), whatever separates them (`aws-backup-restore_2024-05-01T10-20-30-123Z`).
/// `None` for another prefix or a name without such a time.
pub fn name_time(name: &str) -> Option<Timestamp> {
    let digits: String = name
        .strip_prefix(RECOVERY_PREFIX)?
        .chars()
        .filter(char::is_ascii_digit)
        .take(14)
        .collect();
    if digits.len() < 14 {
        return None;
    }
    let n = |range: std::ops::Range<usize>| digits[range].parse::<u32>().ok();
    let year = i32::try_from(n(0..4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, n(4..6)?, n(6..8)?)?;
    let at = date.and_hms_opt(n(8..10)?, n(10..12)?, n(12..14)?)?;
    Some(Utc.from_utc_datetime(&at))
}

/// A recovery directory that holds the source item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its name at the file system root (`aws-backup-restore_…`).
    pub name: String,
    /// From its name, else its modification time; `None` if neither is known.
    pub time: Option<Timestamp>,
}

/// Why nothing was moved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "no recovery directory of this restore job holds {source_path} (recovery directories \
         holding it: {found:?})"
    )]
    NothingToMove {
        source_path: String,
        found: Vec<String>,
    },
    #[error("several recovery directories of this restore job's time hold the item: {0:?}")]
    Ambiguous(Vec<String>),
}

/// The one candidate inside `window`.
pub fn pick(source: &str, candidates: &[Candidate], window: &Window) -> Result<String, Refusal> {
    let mut inside: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.time.is_some_and(|t| window.contains(t)))
        .collect();
    inside.sort_by(|a, b| a.name.cmp(&b.name));
    match inside.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(Refusal::NothingToMove {
            source_path: source.to_owned(),
            found: candidates.iter().map(|c| c.name.clone()).collect(),
        }),
        many => Err(Refusal::Ambiguous(
            many.iter().map(|c| c.name.clone()).collect(),
        )),
    }
}

/// A relocation, as the task is asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Where the file system root is mounted.
    pub root: PathBuf,
    /// The restored item, as in `ItemsToRestore` (`/tenants/t/i`).
    pub source: String,
    /// Where it belongs (`/tenants/t/i/restore-{epoch}`).
    pub target: String,
    pub window: Window,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    /// The target existed already; nothing was moved.
    AlreadyInPlace,
    /// `<root>/<from><source>` is now the target.
    Moved { from: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelocateError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("file system: {0}")]
    Io(String),
}

/// Exit statuses of `wpfleet relocate-restore` (0: moved or already in place).
pub mod exit {
    pub const BAD_REQUEST: u8 = 2;
    pub const NOTHING_TO_MOVE: u8 = 3;
    pub const AMBIGUOUS: u8 = 4;
    pub const IO: u8 = 5;
}

impl RelocateError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RelocateError::BadRequest(_) => exit::BAD_REQUEST,
            RelocateError::Refused(Refusal::NothingToMove { .. }) => exit::NOTHING_TO_MOVE,
            RelocateError::Refused(Refusal::Ambiguous(_)) => exit::AMBIGUOUS,
            RelocateError::Io(_) => exit::IO,
        }
    }
}

/// What an exit status of the relocation task means (for the restore's error message).
pub fn exit_reason(code: i32) -> &'static str {
    match u8::try_from(code) {
        Ok(0) => "moved",
        Ok(exit::BAD_REQUEST) => "the task was started with a bad request",
        Ok(exit::NOTHING_TO_MOVE) => "no recovery directory of the restore job holds the item",
        Ok(exit::AMBIGUOUS) => "several recovery directories could be the restore job's",
        Ok(exit::IO) => "a file system operation failed",
        _ => "the task failed",
    }
}

/// `/a/b` → `a/b`; refuses relative paths, `.`/`..`, empty segments and the root.
fn relative(path: &str, what: &str) -> Result<PathBuf, RelocateError> {
    let bad =
        || RelocateError::BadRequest(format!("{what} {path:?} is not a normal absolute path"));
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    let parts: Vec<&str> = rest.split('/').collect();
    if rest.is_empty()
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(bad());
    }
    Ok(parts.iter().collect())
}

fn io(what: &str, path: &Path, e: &std::io::Error) -> RelocateError {
    RelocateError::Io(format!("{what} {}: {e}", path.display()))
}

/// Moves the restored item into place (see the module docs).
pub fn relocate(req: &Request) -> Result<Outcome, RelocateError> {
    let source = relative(&req.source, "source")?;
    let target = relative(&req.target, "target")?;
    if req
        .target
        .trim_start_matches('/')
        .starts_with(RECOVERY_PREFIX)
    {
        return Err(RelocateError::BadRequest(format!(
            "target {} is inside a recovery directory",
            req.target
        )));
    }
    let target = req.root.join(target);
    if exists(&target) {
        return Ok(Outcome::AlreadyInPlace);
    }
    let candidates = candidates(&req.root, &source)?;
    let chosen = pick(&req.source, &candidates, &req.window)?;
    let from = req.root.join(&chosen).join(&source);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("creating", parent, &e))?;
    }
    match std::fs::rename(&from, &target) {
        Ok(()) => {
            remove_emptied(&req.root.join(&chosen), &source);
            Ok(Outcome::Moved { from: chosen })
        }
        // Another run of this relocation got there first.
        Err(_) if exists(&target) => Ok(Outcome::AlreadyInPlace),
        Err(e) => Err(io("moving", &from, &e)),
    }
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The recovery directories at `root` that hold `source` as a directory.
fn candidates(root: &Path, source: &Path) -> Result<Vec<Candidate>, RelocateError> {
    let entries = std::fs::read_dir(root).map_err(|e| io("listing", root, &e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io("listing", root, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(RECOVERY_PREFIX) || !entry.path().join(source).is_dir() {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .map(DateTime::<Utc>::from);
        found.push(Candidate {
            time: name_time(&name).or(modified),
            name,
        });
    }
    Ok(found)
}

/// Removes the directories between the recovery directory and the moved item that the
/// move left empty, the recovery directory included (best effort: `remove_dir` refuses
/// anything not empty).
fn remove_emptied(recovery: &Path, source: &Path) {
    let mut dir = source.parent().map(|p| recovery.join(p));
    while let Some(d) = dir {
        if !d.starts_with(recovery) || std::fs::remove_dir(&d).is_err() {
            return;
        }
        dir = (d != recovery)
            .then(|| d.parent().map(Path::to_path_buf))
            .flatten();
    }
}

/// `wpfleet relocate-restore`: what the relocation task runs, with the file system root
/// mounted (see the module docs).
#[derive(Debug, Clone, clap::Args)]
pub struct RelocateArgs {
    /// Where the EFS file system root is mounted.
    #[arg(long)]
    pub root: PathBuf,
    /// The restored item (`ItemsToRestore`), e.g. `/tenants/t1/blog`.
    #[arg(long)]
    pub source: String,
    /// Where it belongs, e.g. `/tenants/t1/blog/restore-0a1b2c3d`.
    #[arg(long)]
    pub target: String,
    /// Earliest time of the restore job's recovery directory (RFC 3339).
    #[arg(long)]
    pub not_before: DateTime<Utc>,
    /// Latest time of the restore job's recovery directory (RFC 3339).
    #[arg(long)]
    pub not_after: DateTime<Utc>,
}

/// Runs the relocation; prints one JSON line (stdout on success, stderr on failure) and
/// exits with the status of [`exit`].
pub fn run(args: RelocateArgs) -> ExitCode {
    let req = Request {
        root: args.root,
        source: args.source,
        target: args.target,
        window: Window {
            not_before: args.not_before,
            not_after: args.not_after,
        },
    };
    match relocate(&req) {
        Ok(outcome) => {
            let line = serde_json::json!({ "target": req.target, "result": outcome });
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let line = serde_json::json!({ "target": req.target, "error": e.to_string() });
            eprintln!("{line}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window() -> Window {
        Window::around(at("2024-05-01T10:00:00Z"), at("2024-05-01T10:20:00Z"))
    }

    #[test]
    fn names_carry_their_time_whatever_the_separators() {
        let want = Some(at("2024-05-01T10:20:30Z"));
        for name in [
            "aws-backup-restore_2024-05-01T10-20-30-123Z",
            "aws-backup-restore_2024-05-01T10:20:30.123Z",
            "aws-backup-restore_20240501102030",
        ] {
            assert_eq!(name_time(name), want, "{name}");
        }
        for name in [
            "aws-backup-restore_1714558830000",
            "aws-backup-restore_2024-13-01T10-20-30Z",
            "aws-backup-restore_",
            "other_2024-05-01T10-20-30Z",
        ] {
            assert_eq!(name_time(name), None, "{name}");
        }
    }

    #[test]
    fn the_window_spans_the_job_with_a_margin() {
        let w = window();
        assert!(w.contains(at("2024-05-01T09:55:00Z")));
        assert!(w.contains(at("2024-05-01T10:25:00Z")));
        assert!(!w.contains(at("2024-05-01T09:54:59Z")));
        assert!(!w.contains(at("2024-05-01T10:25:01Z")));
    }

    #[test]
    fn exactly_one_candidate_in_the_window_is_taken() {
        let c = |name: &str, time: Option<&str>| Candidate {
            name: name.into(),
            time: time.map(at),
        };
        let old = c("aws-backup-restore_a", Some("2024-04-01T10:00:00Z"));
        let mine = c("aws-backup-restore_b", Some("2024-05-01T10:01:00Z"));
        let undated = c("aws-backup-restore_c", None);
        let w = window();
        assert_eq!(
            pick("/s", &[old.clone(), mine.clone(), undated.clone()], &w),
            Ok(mine.name.clone())
        );
        assert_eq!(
            pick("/s", &[old.clone(), undated], &w),
            Err(Refusal::NothingToMove {
                source_path: "/s".into(),
                found: vec![old.name.clone(), "aws-backup-restore_c".into()],
            })
        );
        let twin = c("aws-backup-restore_a2", Some("2024-05-01T10:19:00Z"));
        assert_eq!(
            pick("/s", &[mine.clone(), twin.clone()], &w),
            Err(Refusal::Ambiguous(vec![twin.name, mine.name]))
        );
    }

    fn write(root: &Path, path: &str, content: &str) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn request(root: &Path) -> Request {
        Request {
            root: root.to_owned(),
            source: "/tenants/t1/blog".into(),
            target: "/tenants/t1/blog/restore-0a1b2c3d".into(),
            window: window(),
        }
    }

    const RECOVERED: &str = "aws-backup-restore_2024-05-01T10-01-02-345Z";

    #[test]
    fn the_restored_item_is_moved_into_place_once() {
        let fs = tempfile::tempdir().unwrap();
        let root = fs.path();
        write(root, "tenants/t1/blog/uploads/live.jpg", "live");
        write(
            root,
            &format!("{RECOVERED}/tenants/t1/blog/uploads/old.jpg"),
            "old",
        );
        write(
            root,
            "aws-backup-restore_2024-05-01T10-01-02-999Z/tenants/t2/shop/x",
            "t2",
        );
        let req = request(root);
        assert_eq!(
            relocate(&req),
            Ok(Outcome::Moved {
                from: RECOVERED.into()
            })
        );
        let target = root.join("tenants/t1/blog/restore-0a1b2c3d");
        assert_eq!(
            std::fs::read_to_string(target.join("uploads/old.jpg")).unwrap(),
            "old"
        );
        assert!(
            !root.join(RECOVERED).exists(),
            "the emptied skeleton is gone"
        );
        assert!(root.join("tenants/t1/blog/uploads/live.jpg").exists());
        assert!(
            root.join("aws-backup-restore_2024-05-01T10-01-02-999Z/tenants/t2/shop/x")
                .exists(),
            "another instance's restore is left alone"
        );
        // Again (a restarted controller, a second task): nothing to do, nothing changes.
        assert_eq!(relocate(&req), Ok(Outcome::AlreadyInPlace));
        assert_eq!(
            std::fs::read_to_string(target.join("uploads/old.jpg")).unwrap(),
            "old"
        );
    }

    #[test]
    fn a_recovery_directory_still_holding_more_is_kept() {
        let fs = tempfile::tempdir().unwrap();
        let root = fs.path();
        write(root, &format!("{RECOVERED}/tenants/t1/blog/a"), "a");
        write(root, &format!("{RECOVERED}/tenants/t1/other/b"), "b");
        assert!(matches!(
            relocate(&request(root)),
            Ok(Outcome::Moved { .. })
        ));
        assert!(root.join(RECOVERED).join("tenants/t1/other/b").exists());
        assert!(!root.join(RECOVERED).join("tenants/t1/blog").exists());
    }

    #[test]
    fn without_a_time_in_the_name_the_modification_time_decides() {
        let fs = tempfile::tempdir().unwrap();
        let root = fs.path();
        let name = "aws-backup-restore_undated";
        write(root, &format!("{name}/tenants/t1/blog/a"), "a");
        let mut req = request(root);
        // Modified "now": outside the 2024 window.
        let refused = relocate(&req).unwrap_err();
        assert_eq!(refused.exit_code(), exit::NOTHING_TO_MOVE, "{refused}");
        req.window = Window::around(Utc::now(), Utc::now());
        assert_eq!(relocate(&req), Ok(Outcome::Moved { from: name.into() }));
    }

    #[test]
    fn refusals_move_nothing_and_say_why() {
        let fs = tempfile::tempdir().unwrap();
        let root = fs.path();
        write(
            root,
            "aws-backup-restore_2024-05-01T10-01-00Z/tenants/t1/blog/a",
            "1",
        );
        write(
            root,
            "aws-backup-restore_2024-05-01T10-15-00Z/tenants/t1/blog/a",
            "2",
        );
        let err = relocate(&request(root)).unwrap_err();
        assert_eq!(err.exit_code(), exit::AMBIGUOUS, "{err}");
        assert!(!root.join("tenants/t1/blog/restore-0a1b2c3d").exists());

        let empty = tempfile::tempdir().unwrap();
        let err = relocate(&request(empty.path())).unwrap_err();
        assert_eq!(err.exit_code(), exit::NOTHING_TO_MOVE);

        for (source, target) in [
            ("tenants/t1/blog", "/tenants/t1/blog/restore-x"),
            ("/tenants/../etc", "/tenants/t1/blog/restore-x"),
            ("/tenants/t1/blog", "/"),
            ("/tenants/t1/blog", &format!("/{RECOVERED}/x") as &str),
        ] {
            let req = Request {
                source: source.into(),
                target: target.into(),
                ..request(root)
            };
            assert_eq!(
                relocate(&req).unwrap_err().exit_code(),
                exit::BAD_REQUEST,
                "{source} → {target}"
            );
        }
    }

    #[test]
    fn exit_statuses_have_reasons() {
        for code in [
            exit::BAD_REQUEST,
            exit::NOTHING_TO_MOVE,
            exit::AMBIGUOUS,
            exit::IO,
        ] {
            assert_ne!(exit_reason(i32::from(code)), exit_reason(1));
        }
    }
}
