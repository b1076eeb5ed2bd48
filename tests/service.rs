//! Service mode end to end: the real binary with SERVICE_MODE=1 against a real redis-server, driven
//! by a test double of livekit-server that follows protocol.md §1.4-1.6. Run one at a time.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::livekit::{
    self, free_port, health, now_ms, url_request, wait_health, Daemon, RedisServer, Server,
};
use common::*;
use livekit_recorder::proto::livekit::{
    start_recording_request, RecordingOptions, StartRecordingRequest,
};
use nix::sys::signal::Signal;

/// A service-mode recorder whose request files go under the temp dir.
fn start_daemon(redis: &RedisServer, extra: &str) -> Result<Daemon> {
    livekit::start_daemon(redis, &format!("{}{extra}", livekit::local_files_in_temp()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_recording_through_start_and_end() -> Result<()> {
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[])?;
    let d = start_daemon(&redis, "")?;
    let mut lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rec/room.mp4");

    let id = lk
        .reserve()
        .await?
        .expect("a recorder acks the reservation");
    assert!(id.starts_with("RR_"));
    assert_eq!(health(d.health_port)?, "reserved");
    lk.start(&id, url_request(&web.url("/"), &file))
        .await?
        .expect("start succeeds");
    assert_eq!(health(d.health_port)?, "recording");

    // A busy recorder never acks a reservation.
    assert_eq!(
        lk.reserve().await?,
        Err("no recorders available".to_string())
    );
    // RPCs in the wrong state say so, in the original's words.
    assert_eq!(
        lk.start(&id, url_request(&web.url("/"), &file)).await?,
        Err("tried calling start with state recording".to_string())
    );
    // A file recording has no RTMP outputs to add or remove.
    assert_eq!(
        lk.add_output(&id, "rtmp://127.0.0.1/live/x").await?,
        Err("cannot add rtmp output to file recording".to_string())
    );
    assert_eq!(
        lk.remove_output(&id, "rtmp://127.0.0.1/live/x").await?,
        Err("cannot remove rtmp output from file recording".to_string())
    );

    tokio::time::sleep(Duration::from_secs(5)).await;
    lk.end(&id).await?.expect("end succeeds");
    let info = results.next(Duration::from_secs(30)).await?;
    assert_eq!(info.id, id);
    assert_eq!(info.error, "");
    assert_eq!(info.room_name, "");
    assert!(!info.active);
    let f = info.file.expect("a file result");
    assert_eq!(f.download_url, "", "local files have no download url");
    let p = probe(&file)?;
    assert!(
        (f.duration as f64 - p.video_duration).abs() <= 1.5,
        "result says {} s, the file has {} s",
        f.duration,
        p.video_duration
    );
    assert!((5..=9).contains(&f.duration), "duration {}", f.duration);
    assert_eq!((p.width, p.height), (640, 360));
    assert_eq!(decode_errors(&file)?, "");

    wait_health(d.health_port, "available", Duration::from_secs(10))?;
    // And it takes the next reservation.
    let next = lk.reserve().await?.expect("available again");
    assert_ne!(next, id);

    d.rec.signal(Signal::SIGTERM);
    let tag = d.rec.tag.clone();
    let done = d.rec.wait(Duration::from_secs(20))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_nothing_left(&tag);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_answered_or_ignored_and_nothing_breaks() -> Result<()> {
    let redis = RedisServer::start()?;
    let d = start_daemon(&redis, "")?;
    let mut lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;

    // Stale and malformed reservations are ignored.
    let stale = lk.reserve_with("RR_staleStaleSt", now_ms() - 3000).await?;
    assert_eq!(stale, Err("no recorders available".to_string()));
    lk.publish("RESERVE_RECORDER", b"\xff\xff\xff\x01garbage")
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(health(d.health_port)?, "available");

    let id = lk.reserve().await?.expect("acked");
    // A malformed request on the recording's channel is ignored.
    lk.publish(&format!("RECORDING_REQUEST_{id}"), b"\x12\xff\xff")
        .await?;
    for (result, want) in [
        (lk.end(&id).await?, "tried calling End with status reserved"),
        (
            lk.add_output(&id, "rtmp://a/b").await?,
            "tried calling AddOutput with status reserved",
        ),
        (
            lk.remove_output(&id, "rtmp://a/b").await?,
            "tried calling RemoveOutput with status reserved",
        ),
    ] {
        assert_eq!(result, Err(want.to_string()));
    }
    // An invalid Start: the error in the reply and in a result, then available again.
    let dir = tempfile::tempdir()?;
    let bad = url_request("http://127.0.0.1:9/", &dir.path().join("x.avi"));
    assert_eq!(
        lk.start(&id, bad).await?,
        Err("file output must be {path/}filename.mp4".to_string())
    );
    let info = results.next(Duration::from_secs(5)).await?;
    assert_eq!(info.id, id);
    assert_eq!(info.error, "file output must be {path/}filename.mp4");
    assert!(info.file.is_none());
    wait_health(d.health_port, "available", Duration::from_secs(5))?;

    // Requests to an id nobody holds time out, as livekit-server would report.
    assert_eq!(lk.end(&id).await?, Err("request timeout".to_string()));

    // Still serving.
    let again = lk.reserve().await?.expect("acked after all that");
    assert_ne!(again, id);
    assert!(
        processes_with_tag(&d.rec.tag).len() == 1,
        "only the daemon runs"
    );
    d.rec.signal(Signal::SIGTERM);
    let done = d.rec.wait(Duration::from_secs(15))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reservation_without_start_expires() -> Result<()> {
    let redis = RedisServer::start()?;
    let d = start_daemon(&redis, "reservation_timeout: 1")?;
    let mut lk = Server::connect(&redis.url()).await?;
    let id = lk.reserve().await?.expect("acked");
    assert_eq!(health(d.health_port)?, "reserved");
    wait_health(d.health_port, "available", Duration::from_secs(3))?;
    let next = lk
        .reserve()
        .await?
        .expect("available again after the timeout");
    assert_ne!(next, id);
    // A Start for the expired reservation reaches nobody.
    let dir = tempfile::tempdir()?;
    assert_eq!(
        lk.start(
            &id,
            url_request("http://127.0.0.1:9/", &dir.path().join("x.mp4"))
        )
        .await?,
        Err("request timeout".to_string())
    );
    d.rec.signal(Signal::SIGTERM);
    assert_eq!(d.rec.wait(Duration::from_secs(15))?.code, Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_ack_each_reservation_exactly_once() -> Result<()> {
    use futures::StreamExt;
    use prost::Message;
    let redis = RedisServer::start()?;
    let a = start_daemon(&redis, "reservation_timeout: 1")?;
    let b = start_daemon(&redis, "reservation_timeout: 1")?;
    let mut lk = Server::connect(&redis.url()).await?;
    let client = redis::Client::open(redis.url())?;
    for i in 0..8 {
        let id = livekit_recorder::util::new_guid("RR_");
        let mut sub = client.get_async_pubsub().await?;
        sub.subscribe(format!("RECORDING_RESPONSE_{id}")).await?;
        let reservation = livekit_recorder::proto::livekit::RecordingReservation {
            id: id.clone(),
            submitted_at: now_ms(),
        };
        lk.publish("RESERVE_RECORDER", &reservation.encode_to_vec())
            .await?;
        let mut acks = 0;
        let mut stream = sub.on_message();
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(700), stream.next()).await
        {
            acks += 1;
        }
        assert_eq!(acks, 1, "reservation {i} acked {acks} times");
        drop(stream);
        // Both back to available before the next one.
        wait_health(a.health_port, "available", Duration::from_secs(3))?;
        wait_health(b.health_port, "available", Duration::from_secs(3))?;
    }
    for d in [a, b] {
        d.rec.signal(Signal::SIGTERM);
        assert_eq!(d.rec.wait(Duration::from_secs(15))?.code, Some(0));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_loses_nothing() -> Result<()> {
    let mut redis = RedisServer::start()?;
    let web = WebServer::start(&[])?;
    let d = start_daemon(&redis, "")?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("restart.mp4");
    let id = {
        let mut lk = Server::connect(&redis.url()).await?;
        let id = lk.reserve().await?.expect("acked");
        lk.start(&id, url_request(&web.url("/"), &file))
            .await?
            .expect("started");
        id
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Redis goes away mid-recording and comes back empty.
    redis.restart(Duration::from_secs(2))?;
    assert_eq!(health(d.health_port)?, "recording", "the recording goes on");
    // The daemon resubscribes by itself; give it a moment, then End reaches it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    lk.end(&id)
        .await?
        .expect("end reaches the recorder after the restart");
    let info = results.next(Duration::from_secs(30)).await?;
    assert_eq!(info.id, id);
    assert_eq!(info.error, "");
    // Start returns before the browser is up: about 5 of the 7 s are recorded.
    let secs = info.file.unwrap().duration;
    assert!(secs >= 3, "{secs} s");
    assert!((probe(&file)?.video_duration - secs as f64).abs() <= 1.5);
    assert_eq!(decode_errors(&file)?, "");

    // Redis away while a recording ends: the result waits and is published once it is back.
    let file2 = dir.path().join("restart2.mp4");
    wait_health(d.health_port, "available", Duration::from_secs(10))?;
    let id2 = lk.reserve().await?.expect("acked");
    lk.start(&id2, url_request(&web.url("/"), &file2))
        .await?
        .expect("started");
    tokio::time::sleep(Duration::from_secs(3)).await;
    lk.end(&id2).await?.expect("ended");
    redis.stop();
    wait_health(d.health_port, "available", Duration::from_secs(15))?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart(Duration::ZERO)?;
    let lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    let info = results.next(Duration::from_secs(20)).await?;
    assert_eq!(info.id, id2);
    assert_eq!(info.error, "");
    assert!(file2.exists());

    d.rec.signal(Signal::SIGTERM);
    let tag = d.rec.tag.clone();
    assert_eq!(d.rec.wait(Duration::from_secs(15))?.code, Some(0));
    assert_nothing_left(&tag);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_the_recording_finish_and_sigint_ends_it() -> Result<()> {
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[])?;
    let dir = tempfile::tempdir()?;

    // SIGTERM: no new work, the recording goes on until End, its result is published, exit 0.
    let d = start_daemon(&redis, "")?;
    let mut lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    let id = lk.reserve().await?.expect("acked");
    lk.start(
        &id,
        url_request(&web.url("/"), &dir.path().join("term.mp4")),
    )
    .await?
    .expect("started");
    tokio::time::sleep(Duration::from_secs(2)).await;
    d.rec.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        health(d.health_port)?,
        "recording",
        "SIGTERM lets it record on"
    );
    lk.end(&id).await?.expect("ended");
    let info = results.next(Duration::from_secs(30)).await?;
    assert_eq!((info.id.as_str(), info.error.as_str()), (id.as_str(), ""));
    assert!(info.file.unwrap().duration >= 1);
    let tag = d.rec.tag.clone();
    let done = d.rec.wait(Duration::from_secs(20))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_nothing_left(&tag);

    // SIGINT: the recording ends now, with a clean result, and the daemon exits 0.
    let d = start_daemon(&redis, "")?;
    let id = lk.reserve().await?.expect("acked");
    let file = dir.path().join("int.mp4");
    lk.start(&id, url_request(&web.url("/"), &file))
        .await?
        .expect("started");
    wait_health(d.health_port, "recording", Duration::from_secs(5))?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    d.rec.signal(Signal::SIGINT);
    let info = results.next(Duration::from_secs(30)).await?;
    assert_eq!((info.id.as_str(), info.error.as_str()), (id.as_str(), ""));
    let secs = info.file.unwrap().duration;
    assert!(secs >= 2, "{secs} s");
    assert!((probe(&file)?.video_duration - secs as f64).abs() <= 1.5);
    let tag = d.rec.tag.clone();
    let done = d.rec.wait(Duration::from_secs(20))?;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_nothing_left(&tag);
    assert_eq!(decode_errors(&file)?, "");
    Ok(())
}

#[test]
fn an_unreachable_redis_is_a_clear_error() -> Result<()> {
    let port = free_port();
    let config = format!("redis: {{address: \"127.0.0.1:{port}\"}}");
    let done = Recorder::start(
        &[("SERVICE_MODE", "1"), ("LIVEKIT_RECORDER_CONFIG", &config)],
        &[],
    )?
    .wait(Duration::from_secs(30))?;
    assert_eq!(done.code, Some(1));
    assert!(
        done.stderr
            .contains(&format!("unable to connect to redis at 127.0.0.1:{port}")),
        "{}",
        done.stderr
    );
    // No address means localhost:6379, as in the original (checked only where nothing listens
    // there, so the recorder cannot reach a Redis that is not the test's).
    if std::net::TcpStream::connect(("127.0.0.1", 6379)).is_err() {
        let done = Recorder::start(
            &[
                ("SERVICE_MODE", "1"),
                ("LIVEKIT_RECORDER_CONFIG", "log_level: info"),
            ],
            &[],
        )?
        .wait(Duration::from_secs(30))?;
        assert_eq!(done.code, Some(1));
        assert!(
            done.stderr
                .contains("unable to connect to redis at localhost:6379"),
            "{}",
            done.stderr
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_template_recording_ends_on_end_recording_and_names_its_room() -> Result<()> {
    let page = "<!doctype html><body style=\"background:#234\"><script>
        setTimeout(() => console.log('START_RECORDING'), 500);
        setTimeout(() => console.log('END_RECORDING'), 4500);
        </script></body>";
    let web = WebServer::start(&[("/tpl/", page)])?;
    let redis = RedisServer::start()?;
    let extra = format!(
        "api_key: k\napi_secret: secret-secret-secret-secret\nws_url: ws://127.0.0.1:7880\ntemplate_address: {}",
        web.url("/tpl/#")
    );
    let d = start_daemon(&redis, &extra)?;
    let mut lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("room.mp4");
    let id = lk.reserve().await?.expect("acked");
    let req = StartRecordingRequest {
        input: Some(start_recording_request::Input::Template(
            livekit_recorder::proto::livekit::RecordingTemplate {
                layout: "grid-dark".into(),
                room_name: "room-42".into(),
                base_url: String::new(),
            },
        )),
        output: Some(start_recording_request::Output::Filepath(
            file.to_str().unwrap().to_owned(),
        )),
        options: Some(RecordingOptions {
            width: 640,
            height: 360,
            ..Default::default()
        }),
    };
    lk.start(&id, req).await?.expect("started");
    // No End RPC: the page's END_RECORDING ends it.
    let info = results.next(Duration::from_secs(40)).await?;
    assert_eq!(info.id, id);
    assert_eq!(info.error, "");
    assert_eq!(info.room_name, "room-42");
    let secs = info.file.expect("file").duration;
    assert!((3..=5).contains(&secs), "{secs} s for a 4 s span");
    let p = probe(&file)?;
    assert!(
        (3.0..=5.5).contains(&p.video_duration),
        "{} s",
        p.video_duration
    );
    wait_health(d.health_port, "available", Duration::from_secs(10))?;
    d.rec.signal(Signal::SIGTERM);
    assert_eq!(d.rec.wait(Duration::from_secs(15))?.code, Some(0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rtmp_outputs_are_added_and_removed_while_recording() -> Result<()> {
    let nginx = common::rtmp::NginxRtmp::start()?;
    let redis = RedisServer::start()?;
    let web = WebServer::start(&[])?;
    let d = start_daemon(&redis, "")?;
    let mut lk = Server::connect(&redis.url()).await?;
    let mut results = lk.results().await?;
    let id = lk.reserve().await?.expect("acked");
    let (a, b) = (nginx.url("a"), nginx.url("b"));
    let req = StartRecordingRequest {
        input: Some(start_recording_request::Input::Url(web.url("/"))),
        output: Some(start_recording_request::Output::Rtmp(
            livekit_recorder::proto::livekit::RtmpOutput {
                urls: vec![a.clone()],
            },
        )),
        options: Some(RecordingOptions {
            width: 640,
            height: 360,
            ..Default::default()
        }),
    };
    // Before the pipeline exists, outputs cannot change.
    lk.start(&id, req).await?.expect("started");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        lk.add_output(&id, &a).await?,
        Err("output already exists".to_string())
    );
    lk.add_output(&id, &b).await?.expect("b added");
    tokio::time::sleep(Duration::from_secs(4)).await;
    lk.remove_output(&id, &a).await?.expect("a removed");
    assert_eq!(
        lk.remove_output(&id, &a).await?,
        Err("output not found".to_string())
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    lk.end(&id).await?.expect("ended");
    let info = results.next(Duration::from_secs(30)).await?;
    assert_eq!(info.error, "");
    let got: Vec<(&str, i64)> = info
        .rtmp
        .iter()
        .map(|r| (r.stream_url.as_str(), r.duration))
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    // Both on one server, so both read the same without their stream keys; the removed one
    // (a, the shorter) is reported first.
    let redacted = format!("rtmp://127.0.0.1:{}/live/{{stream_key}}", nginx.port);
    assert_eq!((got[0].0, got[1].0), (redacted.as_str(), redacted.as_str()));
    assert!((5..=9).contains(&got[0].1), "{got:?}");
    assert!((7..=9).contains(&got[1].1), "{got:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (stream, min) in [("a", 4.0), ("b", 6.0)] {
        let p = probe(&nginx.recording(stream))?;
        assert_eq!(
            (p.video_codec.as_str(), p.audio_codec.as_str()),
            ("h264", "aac")
        );
        assert!(
            p.format_duration >= min,
            "{stream}: {} s",
            p.format_duration
        );
    }
    d.rec.signal(Signal::SIGTERM);
    let tag = d.rec.tag.clone();
    assert_eq!(d.rec.wait(Duration::from_secs(15))?.code, Some(0));
    assert_nothing_left(&tag);
    Ok(())
}
