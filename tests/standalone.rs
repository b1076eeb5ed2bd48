//! Standalone mode end to end: the real binary records a local animated page with a tone, with
//! a real X server, PulseAudio, Chromium and GStreamer. Run one at a time (`--test-threads=1`).

mod common;

use std::time::Duration;

use anyhow::Result;
use common::*;
use nix::sys::signal::Signal;

fn request(url: &str, path: &std::path::Path, options: &str) -> String {
    format!(
        r#"{{"url": "{url}", "filepath": "{}", "options": {options}}}"#,
        path.display()
    )
}

/// Starts recording the demo page served by `web` to `file` and waits until it records.
fn record_demo(
    web: &WebServer,
    config: &str,
    file: &std::path::Path,
    options: &str,
) -> Result<Recorder> {
    let req = request(&web.url("/"), file, options);
    let mut rec = Recorder::start(
        &[
            ("LIVEKIT_RECORDER_CONFIG", config),
            ("RECORDING_REQUEST", &req),
        ],
        &[],
    )?;
    rec.wait_for_log("recording", Duration::from_secs(30))?;
    Ok(rec)
}

#[test]
fn sigterm_finishes_a_playable_720p_file() -> Result<()> {
    let web = WebServer::start(&[])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("nested/dir/x.mp4");
    let rec = record_demo(
        &web,
        "file_output: {local: true}",
        &file,
        r#"{"preset": "HD_30"}"#,
    )?;
    std::thread::sleep(Duration::from_secs(10));
    rec.signal(Signal::SIGTERM);
    let tag = rec.tag.clone();
    let done = rec.wait(Duration::from_secs(30))?;
    assert_eq!(done.code, Some(0), "stderr:\n{}", done.stderr);
    assert_nothing_left(&tag);

    let result = done.result()?;
    assert_eq!(result["id"], "standalone");
    assert_eq!(result["error"], "");
    assert_eq!(result["filepath"], file.to_str().unwrap());
    let duration = result["duration"].as_i64().unwrap();
    assert!((9..=11).contains(&duration), "duration {duration}");

    let p = probe(&file)?;
    assert_eq!(
        (p.video_codec.as_str(), p.audio_codec.as_str()),
        ("h264", "aac")
    );
    assert_eq!((p.width, p.height), (1280, 720));
    assert_eq!(p.profile, "Main");
    assert!(
        (9.5..=11.5).contains(&p.video_duration),
        "video lasts {} s for a 10 s recording",
        p.video_duration
    );
    let expected = p.video_duration * 30.0;
    assert!(
        p.video_frames as f64 >= 0.95 * expected,
        "{} frames for {:.2} s at 30 fps",
        p.video_frames,
        p.video_duration
    );
    assert!(
        (p.audio_duration - p.video_duration).abs() < 0.5,
        "audio {} s vs video {} s",
        p.audio_duration,
        p.video_duration
    );
    let volume = mean_volume(&file)?;
    assert!(volume > -40.0, "audio is silent: mean volume {volume} dB");
    assert_eq!(
        decode_errors(&file)?,
        "",
        "the file does not decode cleanly"
    );
    // A clean stop leaves a regular MP4 with its index first, not the fragmented one.
    let boxes = mp4_boxes(&file)?;
    let moov = boxes.iter().position(|b| b == "moov").expect("a moov box");
    let mdat = boxes.iter().position(|b| b == "mdat").expect("an mdat box");
    assert!(moov < mdat, "index not in front: {boxes:?}");
    assert!(
        !boxes.iter().any(|b| b == "moof"),
        "still fragmented: {boxes:?}"
    );
    Ok(())
}

#[test]
fn sigkill_of_the_process_group_leaves_a_playable_file() -> Result<()> {
    let web = WebServer::start(&[])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("killed.mp4");
    let rec = record_demo(&web, LOCAL_CONFIG, &file, r#"{"preset": "HD_30"}"#)?;
    std::thread::sleep(Duration::from_secs(10));
    rec.signal_group(Signal::SIGKILL);
    let tag = rec.tag.clone();
    let done = rec.wait(Duration::from_secs(10))?;
    assert_eq!(done.code, None, "killed by a signal");
    // Its children die with it (parent-death signal), helpers follow their browser.
    assert_nothing_left(&tag);

    let p = probe(&file)?;
    assert_eq!(
        (p.video_codec.as_str(), p.audio_codec.as_str()),
        ("h264", "aac")
    );
    let frames = decodable_frames(&file)?;
    assert!(
        frames as f64 >= 4.0 * 30.0,
        "only {frames} decodable frames after a kill at 10 s"
    );
    assert!(
        p.format_duration >= 4.0,
        "only {} s playable",
        p.format_duration
    );
    Ok(())
}

#[test]
fn a_dead_part_ends_the_recording_with_an_error_and_a_finished_file() -> Result<()> {
    let web = WebServer::start(&[])?;
    for part in ["chromium", "X server", "pulseaudio"] {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("crash.mp4");
        let rec = record_demo(
            &web,
            LOCAL_CONFIG,
            &file,
            r#"{"width": 640, "height": 360}"#,
        )?;
        std::thread::sleep(Duration::from_secs(5));
        let (pid, name) = match part {
            "X server" => tagged_x_server(&rec.tag).expect("the X server"),
            "chromium" => (
                tagged_process(&rec.tag, part).expect("Chromium"),
                "Chromium",
            ),
            _ => (tagged_process(&rec.tag, part).expect(part), "PulseAudio"),
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL)?;
        let tag = rec.tag.clone();
        let done = rec.wait(Duration::from_secs(30))?;
        assert_eq!(done.code, Some(1), "{name}: stderr:\n{}", done.stderr);
        assert_nothing_left(&tag);
        let result = done.result()?;
        let error = result["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("{name} exited unexpectedly")),
            "{name}: error: {error}"
        );
        let p = probe(&file)?;
        assert!(
            p.video_duration >= 4.0,
            "{name}: {} s kept",
            p.video_duration
        );
        assert_eq!((p.width, p.height), (640, 360));
        assert!(
            decodable_frames(&file)? >= 4 * 30,
            "{name}: the file so far is not playable"
        );
        assert!(
            result["duration"].as_i64().unwrap() >= 4,
            "{name}: {result}"
        );
    }
    Ok(())
}

#[test]
fn a_second_signal_forces_a_stuck_finish() -> Result<()> {
    let web = WebServer::start(&[])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("forced.mp4");
    let mut rec = record_demo(
        &web,
        LOCAL_CONFIG,
        &file,
        r#"{"width": 640, "height": 360}"#,
    )?;
    std::thread::sleep(Duration::from_secs(4));
    // A frozen X server: the screen grab blocks, so EOS cannot get through.
    let (xvfb, _) = tagged_x_server(&rec.tag).expect("the X server");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(xvfb), Signal::SIGSTOP)?;
    std::thread::sleep(Duration::from_millis(300));
    rec.signal(Signal::SIGINT);
    std::thread::sleep(Duration::from_secs(1));
    let first_signal_done = rec.child.try_wait()?.is_some();
    rec.signal(Signal::SIGINT);
    let tag = rec.tag.clone();
    let done = rec.wait(Duration::from_secs(15))?;
    assert!(!first_signal_done, "the finish should have been stuck");
    assert_eq!(done.code, Some(1), "stderr:\n{}", done.stderr);
    assert!(
        done.took < Duration::from_secs(4 + 1 + 8 + 30),
        "took {:?}",
        done.took
    );
    // Even a stopped X server is gone afterwards.
    assert_nothing_left(&tag);
    let error = done.result()?["error"].as_str().unwrap().to_owned();
    assert!(error.contains("forced"), "error: {error}");
    // What was written before the force is playable.
    assert!(decodable_frames(&file)? >= 2 * 30);
    Ok(())
}

#[test]
fn a_non_mp4_filepath_fails_fast_and_names_mp4() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let req = format!(
        r#"{{"url": "http://127.0.0.1:9/", "filepath": "{}/x.avi", "options": {{"preset": "HD_30"}}}}"#,
        dir.path().display()
    );
    let rec = Recorder::start(
        &[
            ("LIVEKIT_RECORDER_CONFIG", "file_output: {local: true}"),
            ("RECORDING_REQUEST", &req),
        ],
        &[],
    )?;
    let tag = rec.tag.clone();
    let done = rec.wait(Duration::from_secs(10))?;
    assert_ne!(done.code, Some(0));
    assert!(done.took < Duration::from_secs(10));
    assert!(
        done.stderr
            .contains("file output must be {path/}filename.mp4"),
        "{}",
        done.stderr
    );
    assert_eq!(
        done.result()?["error"],
        "file output must be {path/}filename.mp4"
    );
    assert!(
        processes_with_tag(&tag).is_empty(),
        "nothing is started for a bad request"
    );
    Ok(())
}

#[test]
fn bad_config_and_request_are_reported_clearly() -> Result<()> {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: [Case; 5] = [
        (&[], &[], "missing config"),
        (
            &[("LIVEKIT_RECORDER_CONFIG", "file_output: {local: true}")],
            &[],
            "missing request",
        ),
        (
            &[("LIVEKIT_RECORDER_CONFIG", "defaults: {preset: ULTRA_HD}")],
            &[],
            "could not parse config: defaults.preset: unknown preset",
        ),
        (
            &[
                ("LIVEKIT_RECORDER_CONFIG", "file_output: {local: true}"),
                ("RECORDING_REQUEST", "{\"url\": 5}"),
            ],
            &[],
            "could not parse request",
        ),
        (
            &[],
            &["--config", "/nonexistent/config.yaml"],
            "could not read config file /nonexistent/config.yaml",
        ),
    ];
    for (env, args, want) in cases {
        let done = Recorder::start(env, args)?.wait(Duration::from_secs(10))?;
        assert_eq!(done.code, Some(2), "{want}: {}", done.stderr);
        assert!(
            done.stderr.contains(want),
            "want {want:?} in {:?}",
            done.stderr
        );
    }
    Ok(())
}

#[test]
fn a_page_that_does_not_load_fails_with_the_browsers_reason() -> Result<()> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let req = request(
        &format!("http://127.0.0.1:{closed}/"),
        &dir.path().join("x.mp4"),
        r#"{"width": 640, "height": 360}"#,
    );
    let rec = Recorder::start(
        &[
            ("LIVEKIT_RECORDER_CONFIG", LOCAL_CONFIG),
            ("RECORDING_REQUEST", &req),
        ],
        &[],
    )?;
    let tag = rec.tag.clone();
    let done = rec.wait(Duration::from_secs(40))?;
    assert_eq!(done.code, Some(1), "{}", done.stderr);
    let error = done.result()?["error"].as_str().unwrap().to_owned();
    assert_eq!(
        error,
        format!("could not load http://127.0.0.1:{closed}/: net::ERR_CONNECTION_REFUSED")
    );
    assert_nothing_left(&tag);
    Ok(())
}
