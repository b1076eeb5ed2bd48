//! Durable results: each `RecordingInfo` is written to the work directory before it is
//! published, and removed once Redis has taken it. A daemon that dies while Redis is away (or
//! before the publish went out) leaves the file behind, and the next daemon to start on that
//! work directory publishes it. livekit-server's nodes claim results by the hash of their bytes,
//! so the same result published twice within 5 s is still handled once.
//!
//! A file is named after the process that wrote it (pid and start time): at start, only the
//! files of writers that no longer run are taken, so daemons sharing a work directory never
//! publish each other's results twice.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use prost::Message as _;

use crate::proto::livekit::RecordingInfo;

/// The directory under `work_dir` that holds results waiting for Redis.
pub const DIR_NAME: &str = "livekit-recorder-results";
const SUFFIX: &str = ".result";

/// A result on its way to Redis, and the file that keeps it until then.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub info: RecordingInfo,
    /// `None` when it could not be written (it is published all the same).
    pub path: Option<PathBuf>,
}

/// The results directory of one work directory.
#[derive(Debug, Clone)]
pub struct ResultStore {
    dir: PathBuf,
    /// This process, as it names its files: `<pid>-<start time>`.
    me: String,
}

impl ResultStore {
    pub fn new(work_dir: &Path) -> Self {
        let pid = std::process::id();
        Self {
            dir: work_dir.join(DIR_NAME),
            me: format!("{pid}-{}", start_time(pid).unwrap_or(0)),
        }
    }

    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `info` (complete or not at all: a temporary file renamed) and returns it as
    /// pending. A failure (a full disk) is logged; the result is still published.
    pub fn store(&self, info: RecordingInfo) -> Pending {
        let path = match self.write(&info) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(id = %info.id, dir = %self.dir.display(), error = %e, "could not keep the result on disk; publishing it from memory only");
                None
            }
        };
        Pending { info, path }
    }

    fn write(&self, info: &RecordingInfo) -> std::io::Result<PathBuf> {
        crate::request::create_dir(&self.dir).map_err(|e| std::io::Error::other(e.to_string()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "{nanos:020}-{}-{}{SUFFIX}",
            self.me,
            crate::util::random_token(6)
        );
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&info.encode_to_vec())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(path)
    }

    /// Forgets a result Redis has taken.
    pub fn remove(path: &Path) {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a published result");
            }
        }
    }

    /// Results left by daemons that no longer run, oldest first. Files that cannot be read as a
    /// result are removed (they could never be published).
    pub fn orphans(&self) -> Vec<Pending> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                (name.ends_with(SUFFIX) && !name.starts_with('.')).then(|| (name, e.path()))
            })
            .filter(|(name, _)| !writer_alive(name, &self.me))
            .collect();
        found.sort();
        found
            .into_iter()
            .filter_map(|(_, path)| {
                let read = std::fs::read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| RecordingInfo::decode(b.as_slice()).map_err(|e| e.to_string()));
                match read {
                    Ok(info) => Some(Pending {
                        info,
                        path: Some(path),
                    }),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "unreadable result file removed");
                        Self::remove(&path);
                        None
                    }
                }
            })
            .collect()
    }
}

/// Whether the process that wrote `name` (`<nanos>-<pid>-<start>-<rand>.result`) still runs.
/// Our own files are never orphans.
fn writer_alive(name: &str, me: &str) -> bool {
    let mut parts = name.split('-');
    let (Some(_), Some(pid), Some(start)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    if format!("{pid}-{start}") == me {
        return true;
    }
    match (pid.parse::<u32>(), start.parse::<u64>()) {
        (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
        _ => false,
    }
}

/// A process's start time (clock ticks after boot, `/proc/<pid>/stat` field 22): with the pid,
/// it names one process for good, as pids are reused.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> RecordingInfo {
        RecordingInfo {
            id: id.into(),
            error: "max duration reached".into(),
            ..Default::default()
        }
    }

    #[test]
    fn stored_results_survive_their_writer_and_are_found_in_order() {
        let work = tempfile::tempdir().unwrap();
        let store = ResultStore::new(work.path());
        let a = store.store(info("RR_a"));
        let b = store.store(info("RR_b"));
        let (pa, pb) = (a.path.clone().unwrap(), b.path.clone().unwrap());
        assert!(pa.starts_with(work.path().join(DIR_NAME)));
        assert!(
            store.orphans().is_empty(),
            "our own results are not orphans"
        );

        // The same files as a dead process left them.
        let dead = |p: &Path| {
            let name = p.file_name().unwrap().to_str().unwrap();
            let nanos = name.split('-').next().unwrap();
            let renamed = p.with_file_name(format!("{nanos}-999999999-1-x{SUFFIX}"));
            std::fs::rename(p, &renamed).unwrap();
            renamed
        };
        let (da, db) = (dead(&pa), dead(&pb));
        std::fs::write(
            store.dir().join(format!("0-1-2-3{SUFFIX}")),
            b"\xff\xff\xff",
        )
        .unwrap();
        std::fs::write(store.dir().join(".partial.tmp"), b"").unwrap();
        let found = store.orphans();
        assert_eq!(
            found.iter().map(|p| p.info.id.as_str()).collect::<Vec<_>>(),
            ["RR_a", "RR_b"],
            "oldest first; the unreadable one is dropped"
        );
        assert_eq!(found[0].path.as_deref(), Some(da.as_path()));
        assert_eq!(found[0].info, info("RR_a"));
        ResultStore::remove(&da);
        ResultStore::remove(&db);
        assert!(store.orphans().is_empty());
        assert_eq!(
            std::fs::read_dir(store.dir()).unwrap().count(),
            1,
            "only the temporary file of a write in progress is left"
        );
    }

    #[test]
    fn a_live_writer_is_recognised_by_pid_and_start_time() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        assert!(writer_alive(&format!("1-{me}-{start}-r{SUFFIX}"), "x"));
        assert!(
            !writer_alive(&format!("1-{me}-{}-r{SUFFIX}", start + 1), "x"),
            "same pid, another process"
        );
        assert!(!writer_alive("garbage", "x"));
    }

    #[test]
    fn an_unwritable_directory_still_yields_the_result() {
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let p = ResultStore::new(&file).store(info("RR_c"));
        assert_eq!(p.path, None);
        assert_eq!(p.info.id, "RR_c");
    }
}
