//! After a clean stop: the fragmented MP4 rewritten as a regular one with the index in front
//! (`faststart`), which older players and editors prefer. Streams are copied, not re-encoded, so
//! this costs disk I/O only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{init, PipelineError};

/// Rewrites `path` in place as a faststart MP4. On any failure the fragmented file is left as it
/// was (it is complete and playable) and the error says why.
pub async fn faststart(path: &Path, timeout: Duration) -> Result<(), PipelineError> {
    let src = path.to_owned();
    let tmp = temp_name(path);
    let dst = tmp.clone();
    let result = tokio::task::spawn_blocking(move || remux_blocking(&src, &dst, timeout))
        .await
        .map_err(|e| PipelineError::Runtime(format!("remux task: {e}")))?;
    match result {
        Ok(()) => std::fs::rename(&tmp, path)
            .map_err(|e| PipelineError::Runtime(format!("replacing {}: {e}", path.display()))),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.faststart.tmp"))
}

fn remux_blocking(src: &Path, dst: &Path, timeout: Duration) -> Result<(), PipelineError> {
    init()?;
    let pipeline = gst::Pipeline::with_name("remux");
    let source = gst::ElementFactory::make("filesrc")
        .property("location", src.to_string_lossy().as_ref())
        .build()?;
    let demux = gst::ElementFactory::make("qtdemux").build()?;
    let mux = gst::ElementFactory::make("mp4mux")
        .property("faststart", true)
        .build()?;
    if let Some(dir) = dst.parent() {
        // Keep mp4mux's scratch file on the same disk as the output, not in a small /tmp.
        mux.set_property(
            "faststart-file",
            dir.join(format!(
                ".{}.moov.tmp",
                dst.file_name().unwrap_or_default().to_string_lossy()
            ))
            .to_string_lossy()
            .as_ref(),
        );
    }
    let sink = gst::ElementFactory::make("filesink")
        .property("location", dst.to_string_lossy().as_ref())
        .build()?;
    pipeline.add_many([&source, &demux, &mux, &sink])?;
    source.link(&demux)?;
    mux.link(&sink)?;

    let pipeline_weak = pipeline.downgrade();
    let mux_weak = mux.downgrade();
    demux.connect_pad_added(move |_, pad| {
        let (Some(pipeline), Some(mux)) = (pipeline_weak.upgrade(), mux_weak.upgrade()) else {
            return;
        };
        let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
        let Some(name) = caps
            .as_ref()
            .and_then(|c| c.structure(0))
            .map(|s| s.name().to_string())
        else {
            return;
        };
        let (parser, template) = match name.as_str() {
            "video/x-h264" => ("h264parse", "video_%u"),
            "audio/mpeg" => ("aacparse", "audio_%u"),
            other => {
                tracing::warn!(caps = other, "remux: stream of unexpected type skipped");
                return;
            }
        };
        let link = || -> Result<(), PipelineError> {
            // One streaming thread feeds both streams: each needs a queue, or the muxer, waiting
            // for the other stream, blocks the demuxer forever.
            // Unbounded by count and time (streams may end far apart), bounded by memory.
            let queue = gst::ElementFactory::make("queue")
                .property("max-size-buffers", 0u32)
                .property("max-size-time", 0u64)
                .property("max-size-bytes", 256u32 * 1024 * 1024)
                .build()?;
            let parse = gst::ElementFactory::make(parser).build()?;
            pipeline.add_many([&queue, &parse])?;
            queue.link(&parse)?;
            parse.sync_state_with_parent()?;
            queue.sync_state_with_parent()?;
            pad.link(&queue.static_pad("sink").expect("queues have a sink pad"))?;
            let mux_pad = mux
                .request_pad_simple(template)
                .ok_or_else(|| PipelineError::Build("mp4mux gave no pad".into()))?;
            parse
                .static_pad("src")
                .expect("parsers have a src pad")
                .link(&mux_pad)?;
            Ok(())
        };
        if let Err(e) = link() {
            tracing::warn!(error = %e, "remux: could not link a stream");
        }
    });

    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| PipelineError::Runtime(format!("remux: {e}")))?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let result = match bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX)),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    ) {
        Some(msg) => match msg.view() {
            gst::MessageView::Eos(_) => Ok(()),
            gst::MessageView::Error(e) => {
                Err(PipelineError::Runtime(format!("remux: {}", e.error())))
            }
            _ => Err(PipelineError::Runtime("remux: unexpected message".into())),
        },
        None => Err(PipelineError::EosTimeout(timeout)),
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}
