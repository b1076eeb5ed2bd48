//! After the recording: the file is finished (index in front), measured, and uploaded when the
//! recording has an upload; whatever was recorded is delivered, a failed recording's partial
//! file included.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::request::FileOutput;
use crate::upload::Uploader;

/// How long the faststart rewrite of a finished file may take, per started minute of recording.
const REMUX_TIMEOUT_PER_MINUTE: Duration = Duration::from_secs(10);

/// The recording's file, as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutcome {
    /// The file on this machine, when it stays here (local output, or an upload that failed).
    pub local_path: Option<PathBuf>,
    /// The file was uploaded: `location` is its URL.
    pub uploaded: bool,
    /// What the recording is known as: the object key of an upload, else the local path.
    pub name: String,
    /// Where it can be fetched: the upload's URL, else the local path.
    pub location: String,
    /// Bytes, as written (and uploaded).
    pub size: u64,
    /// From the first frame to the end of the recording.
    pub duration: Duration,
}

/// Finishes, measures and uploads `file`. `None` when nothing was written; the error is the
/// upload's, naming where the file was kept.
pub(crate) async fn deliver(
    file: &FileOutput,
    recorded: Duration,
    finished: bool,
    uploader: Option<&Uploader>,
) -> (Option<FileOutcome>, Option<String>) {
    let path = &file.local_path;
    if !finished {
        // A failed or forced recording (a full disk, say) may end in a fragment cut short.
        match trim_to_complete_fragments(path) {
            Ok(Some(cut)) => {
                tracing::warn!(path = %path.display(), bytes = cut, "cut an incomplete last fragment off the file")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "could not check the file's fragments")
            }
        }
    }
    if finished {
        let minutes = u32::try_from(recorded.as_secs() / 60 + 1).unwrap_or(u32::MAX);
        let t = Instant::now();
        match crate::pipeline::remux::faststart(path, REMUX_TIMEOUT_PER_MINUTE * minutes).await {
            Ok(()) => {
                tracing::debug!(took = ?t.elapsed(), "rewrote the file with its index in front")
            }
            Err(e) => {
                tracing::warn!(error = %e, "faststart rewrite failed; the fragmented file is kept")
            }
        }
    }
    let size = match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => m.len(),
        _ => {
            discard(file);
            return (None, None);
        }
    };
    let local = path.display().to_string();
    let mut outcome = FileOutcome {
        local_path: Some(path.clone()),
        uploaded: false,
        name: local.clone(),
        location: local,
        size,
        duration: recorded,
    };
    let (Some(uploader), Some(key)) = (uploader, &file.upload_key) else {
        return (Some(outcome), None);
    };
    outcome.name = key.clone();
    match uploader.upload(path, key).await {
        Ok(url) => {
            outcome.location = url;
            outcome.uploaded = true;
            // A work file is removed only once the upload is confirmed; a local one stays.
            if !file.keep {
                if let Err(e) = std::fs::remove_file(path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove the uploaded file");
                }
                outcome.local_path = None;
            }
            (Some(outcome), None)
        }
        Err(e) => {
            let error = format!("{e}; the recording is kept at {}", path.display());
            (Some(outcome), Some(error))
        }
    }
}

/// Removes a work file that holds nothing worth keeping (empty, or never written); a local
/// file is the user's and stays.
pub(crate) fn discard(file: &FileOutput) {
    if file.keep {
        return;
    }
    match std::fs::remove_file(&file.local_path) {
        Ok(()) => tracing::debug!(path = %file.local_path.display(), "removed an empty work file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %file.local_path.display(), error = %e, "could not remove a work file")
        }
    }
}

/// For a recording that never started: its work file goes, and so does a local file that is
/// still empty (service modes create it, never replacing one, before recording), so that the
/// same request can be sent again.
pub(crate) fn discard_unstarted(file: &FileOutput) {
    discard(file);
    if file.keep && std::fs::metadata(&file.local_path).is_ok_and(|m| m.is_file() && m.len() == 0) {
        if let Err(e) = std::fs::remove_file(&file.local_path) {
            tracing::debug!(path = %file.local_path.display(), error = %e, "could not remove an empty output file");
        }
    }
}

/// Cuts a fragmented MP4 back to its last complete fragment: a top-level box that runs past the
/// end of the file, and a `moof` left without its `mdat`, are removed. Returns the bytes cut, or
/// `None` when the file ends cleanly (or is not an MP4 this understands).
pub(crate) fn trim_to_complete_fragments(path: &Path) -> std::io::Result<Option<u64>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let len = f.metadata()?.len();
    let mut at = 0u64;
    // The end of the last box that completes something: ftyp/moov, or a moof's mdat.
    let mut good = 0u64;
    let mut last_moof_complete = true;
    while at + 8 <= len {
        let mut head = [0u8; 16];
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut head[..8])?;
        let mut size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let kind = [head[4], head[5], head[6], head[7]];
        if size == 1 {
            if at + 16 > len {
                break;
            }
            f.read_exact(&mut head[8..16])?;
            size = u64::from_be_bytes([
                head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
            ]);
        } else if size == 0 {
            size = len - at;
        }
        if size < 8 || !kind.iter().all(u8::is_ascii_graphic) {
            // Not a box: leave the file as it is.
            return Ok(None);
        }
        let end = at.saturating_add(size);
        if end > len {
            break;
        }
        match &kind {
            b"moof" => last_moof_complete = false,
            b"mdat" => {
                last_moof_complete = true;
                good = end;
            }
            _ if last_moof_complete => good = end,
            _ => {}
        }
        at = end;
    }
    if good == 0 || good == len {
        return Ok(None);
    }
    f.set_len(good)?;
    f.sync_all()?;
    Ok(Some(len - good))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_or_missing_file_delivers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = FileOutput {
            local_path: dir.path().join("none.mp4"),
            upload_key: None,
            keep: true,
        };
        assert_eq!(
            deliver(&file, Duration::ZERO, false, None).await,
            (None, None)
        );
        std::fs::write(&file.local_path, b"").unwrap();
        assert_eq!(
            deliver(&file, Duration::ZERO, false, None).await,
            (None, None)
        );
    }

    #[tokio::test]
    async fn a_local_file_is_measured_and_named_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = FileOutput {
            local_path: dir.path().join("a.mp4"),
            upload_key: None,
            keep: true,
        };
        std::fs::write(&file.local_path, vec![7u8; 1234]).unwrap();
        let (outcome, error) = deliver(&file, Duration::from_secs(3), false, None).await;
        let outcome = outcome.unwrap();
        assert!(error.is_none());
        assert_eq!(outcome.size, 1234);
        assert_eq!(outcome.duration, Duration::from_secs(3));
        assert_eq!(outcome.location, file.local_path.display().to_string());
        assert_eq!(outcome.local_path.as_ref(), Some(&file.local_path));
    }

    fn mp4_box(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut b = u32::try_from(body + 8).unwrap().to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend(std::iter::repeat_n(0u8, body));
        b
    }

    #[test]
    fn an_incomplete_last_fragment_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.mp4");
        let mut complete = mp4_box(b"ftyp", 16);
        complete.extend(mp4_box(b"moov", 100));
        complete.extend(mp4_box(b"moof", 40));
        complete.extend(mp4_box(b"mdat", 1000));
        // A clean file is left as it is.
        std::fs::write(&path, &complete).unwrap();
        assert_eq!(trim_to_complete_fragments(&path).unwrap(), None);
        // A last mdat cut short (a full disk).
        let mut cut = complete.clone();
        cut.extend(mp4_box(b"moof", 40));
        let mdat = mp4_box(b"mdat", 1000);
        cut.extend(&mdat[..300]);
        std::fs::write(&path, &cut).unwrap();
        assert_eq!(
            trim_to_complete_fragments(&path).unwrap(),
            Some((cut.len() - complete.len()) as u64)
        );
        assert_eq!(std::fs::read(&path).unwrap(), complete);
        // A moof without its mdat, and a header cut in two.
        let mut cut = complete.clone();
        cut.extend(mp4_box(b"moof", 40));
        cut.extend(&[0, 0, 1]);
        std::fs::write(&path, &cut).unwrap();
        assert!(trim_to_complete_fragments(&path).unwrap().is_some());
        assert_eq!(std::fs::read(&path).unwrap(), complete);
        // Not an MP4: untouched.
        std::fs::write(&path, b"hello, this is not an mp4 file at all").unwrap();
        assert_eq!(trim_to_complete_fragments(&path).unwrap(), None);
    }

    #[tokio::test]
    async fn an_empty_work_file_is_removed_but_a_local_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = FileOutput {
            local_path: dir.path().join("work.mp4"),
            upload_key: Some("k.mp4".into()),
            keep: false,
        };
        std::fs::write(&file.local_path, b"").unwrap();
        assert_eq!(
            deliver(&file, Duration::ZERO, false, None).await,
            (None, None)
        );
        assert!(!file.local_path.exists(), "the empty work file is gone");
        file.keep = true;
        std::fs::write(&file.local_path, b"").unwrap();
        let _ = deliver(&file, Duration::ZERO, false, None).await;
        assert!(file.local_path.exists(), "a local file is the user's");
    }
}
