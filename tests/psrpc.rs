//! psrpc on a real redis-server: our servers against a hand-rolled livekit-server client, and our
//! client against hand-rolled livekit-server IOInfo servers. Both sides of each exchange are
//! checked on the wire (envelope types, channels, claims).

mod common;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use livekit_recorder::config::RedisConfig;
use livekit_recorder::psrpc::envelope::{unwrap, wrap, Envelope};
use livekit_recorder::psrpc::proto::internal::{ClaimRequest, ClaimResponse, Request, Response};
use livekit_recorder::psrpc::proto::rpc::{
    start_egress_request, ListActiveEgressResponse, StartEgressRequest,
};
use livekit_recorder::psrpc::{
    ErrorCode, Incoming, Psrpc, RpcError, CREATE_EGRESS, LIST_ACTIVE_EGRESS, START_EGRESS,
    STOP_EGRESS,
};
use prost::Message as _;
use tokio::sync::mpsc;

use common::livekit::RedisServer;

const WAIT: Duration = Duration::from_secs(5);
/// The client id of the hand-rolled livekit-server.
const LK_CLIENT: &str = "CLI_livekitsrv01";

fn cfg(redis: &RedisServer) -> RedisConfig {
    RedisConfig {
        address: redis.address(),
        ..RedisConfig::default()
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// livekit-server's end of psrpc, by hand: raw redis, our envelope types.
struct Lk {
    conn: redis::aio::MultiplexedConnection,
    messages: redis::aio::PubSubStream,
}

impl Lk {
    async fn connect(redis: &RedisServer, channels: &[String]) -> Result<Self> {
        let client = redis::Client::open(redis.url())?;
        let conn = client.get_multiplexed_async_connection().await?;
        let mut sub = client.get_async_pubsub().await?;
        for c in channels {
            sub.subscribe(c).await?;
        }
        Ok(Self {
            conn,
            messages: sub.into_on_message(),
        })
    }

    async fn publish_raw(&mut self, channel: &str, payload: &[u8]) -> Result<()> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn publish<M: Envelope>(&mut self, channel: &str, msg: &M) -> Result<()> {
        self.publish_raw(channel, &wrap(msg)).await
    }

    /// The next message on our subscriptions: (channel, payload).
    async fn next(&mut self, timeout: Duration) -> Result<(String, Vec<u8>)> {
        let msg = tokio::time::timeout(timeout, self.messages.next())
            .await
            .context("no message in time")?
            .context("subscription closed")?;
        Ok((
            msg.get_channel_name().to_owned(),
            msg.get_payload_bytes().to_vec(),
        ))
    }

    /// The next message, which must be an `M` on `channel`.
    async fn expect<M: Envelope>(&mut self, channel: &str) -> Result<M> {
        let (c, payload) = self.next(WAIT).await?;
        if c != channel {
            bail!("message on {c}, expected one on {channel}");
        }
        Ok(unwrap::<M>(&payload)?)
    }

    /// Nothing more arrives within `d`.
    async fn expect_silence(&mut self, d: Duration) -> Result<()> {
        match tokio::time::timeout(d, self.messages.next()).await {
            Err(_) => Ok(()),
            Ok(m) => bail!(
                "unexpected message on {:?}",
                m.map(|m| m.get_channel_name().to_owned())
            ),
        }
    }
}

fn request(id: &str, client_id: &str, raw: Vec<u8>, ttl: Duration) -> Request {
    let now = now_ns();
    Request {
        request_id: id.into(),
        client_id: client_id.into(),
        sent_at: now,
        expiry: now + ttl.as_nanos() as i64,
        raw_request: raw,
        ..Request::default()
    }
}

fn web_start(egress_id: &str) -> Vec<u8> {
    StartEgressRequest {
        egress_id: egress_id.into(),
        request: Some(start_egress_request::Request::Web(
            livekit_protocol::WebEgressRequest {
                url: "https://example.com".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
    .encode_to_vec()
}

async fn next_incoming(rx: &mut mpsc::Receiver<Incoming>) -> Result<Incoming> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .context("no request delivered in time")?
        .context("incoming channel closed")
}

async fn server(redis: &RedisServer) -> Result<(Psrpc, mpsc::Receiver<Incoming>)> {
    Ok(Psrpc::connect(&cfg(redis), &[]).await?)
}

#[tokio::test]
async fn affinity_claims_are_settled_by_the_clients_choice() -> Result<()> {
    let redis = RedisServer::start()?;
    let (a, mut a_rx) = server(&redis).await?;
    let (b, mut b_rx) = server(&redis).await?;
    a.serve(&START_EGRESS, "").await?;
    b.serve(&START_EGRESS, "").await?;
    a.serve(&START_EGRESS, "").await?; // idempotent
    let claims = "EgressInternal|CLI_livekitsrv01|CLAIM".to_owned();
    let responses = "EgressInternal|CLI_livekitsrv01|RES".to_owned();
    let mut lk = Lk::connect(&redis, &[claims.clone(), responses.clone()]).await?;

    let req = request("REQ_affinity0001", LK_CLIENT, web_start("EG_1"), WAIT);
    lk.publish("EgressInternal|StartEgress|REQ", &req).await?;
    let (ia, ib) = (
        next_incoming(&mut a_rx).await?,
        next_incoming(&mut b_rx).await?,
    );
    for i in [&ia, &ib] {
        assert_eq!(i.method, &START_EGRESS);
        assert_eq!(i.topic, "");
        assert_eq!(i.request_id, "REQ_affinity0001");
        assert_eq!(i.client_id, LK_CLIENT);
        assert_eq!(i.expiry_ns, req.expiry);
        assert!(!i.expired());
        let start = StartEgressRequest::decode(i.payload.as_slice())?;
        assert_eq!(start.egress_id, "EG_1");
        assert!(matches!(
            start.request,
            Some(start_egress_request::Request::Web(_))
        ));
    }
    let ta = tokio::spawn(async move { (ia.claim(0.5).await, ia) });
    let tb = tokio::spawn(async move { (ib.claim(1.0).await, ib) });

    let first: ClaimRequest = lk.expect(&claims).await?;
    let second: ClaimRequest = lk.expect(&claims).await?;
    let mut offered = [first.server_id.clone(), second.server_id.clone()];
    offered.sort();
    let mut ours = [a.server_id().to_owned(), b.server_id().to_owned()];
    ours.sort();
    assert_eq!(offered, ours);
    for c in [&first, &second] {
        assert_eq!(c.request_id, "REQ_affinity0001");
        let expected = if c.server_id == a.server_id() {
            0.5
        } else {
            1.0
        };
        assert_eq!(c.affinity, expected);
    }
    // livekit-server takes the first claim it hears.
    let choice = ClaimResponse {
        request_id: first.request_id.clone(),
        server_id: first.server_id.clone(),
    };
    lk.publish("EgressInternal|StartEgress|RCLAIM", &choice)
        .await?;
    let (ra, ia) = ta.await?;
    let (rb, ib) = tb.await?;
    let (won_a, won_b) = (ra?, rb?);
    assert!(won_a ^ won_b, "exactly one wins: a {won_a}, b {won_b}");
    let (winner, winner_id) = if won_a {
        (ia, a.server_id())
    } else {
        (ib, b.server_id())
    };
    assert_eq!(winner_id, first.server_id);

    let info = livekit_protocol::EgressInfo {
        egress_id: "EG_1".into(),
        ..Default::default()
    };
    winner.respond(Ok(info.encode_to_vec())).await?;
    let res: Response = lk.expect(&responses).await?;
    assert_eq!(res.request_id, "REQ_affinity0001");
    assert_eq!(res.server_id, winner_id);
    assert!(res.error.is_empty() && res.code.is_empty());
    assert!(res.sent_at > 0);
    assert_eq!(
        livekit_protocol::EgressInfo::decode(res.raw_response.as_slice())?.egress_id,
        "EG_1"
    );

    // A server that cannot take a request stays silent; errors go out with their code.
    let req = request("REQ_affinity0002", LK_CLIENT, web_start("EG_2"), WAIT);
    lk.publish("EgressInternal|StartEgress|REQ", &req).await?;
    let (ia, ib) = (
        next_incoming(&mut a_rx).await?,
        next_incoming(&mut b_rx).await?,
    );
    assert!(!ia.claim(-1.0).await?);
    assert!(!ia.claim(f32::NAN).await?);
    let tb = tokio::spawn(async move { (ib.claim(0.5).await, ib) });
    let only: ClaimRequest = lk.expect(&claims).await?;
    assert_eq!(only.server_id, b.server_id());
    lk.expect_silence(Duration::from_millis(300)).await?;
    lk.publish(
        "EgressInternal|StartEgress|RCLAIM",
        &ClaimResponse {
            request_id: only.request_id,
            server_id: only.server_id,
        },
    )
    .await?;
    let (won, ib) = tb.await?;
    assert!(won?);
    ib.respond(Err(RpcError::new(
        ErrorCode::AlreadyExists,
        "egress already exists",
    )))
    .await?;
    let res: Response = lk.expect(&responses).await?;
    assert_eq!(res.code, "already_exists");
    assert_eq!(res.error, "egress already exists");
    assert!(res.raw_response.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_lost_claim_gives_up_at_expiry() -> Result<()> {
    let redis = RedisServer::start()?;
    let (a, mut a_rx) = server(&redis).await?;
    a.serve(&START_EGRESS, "").await?;
    let mut lk = Lk::connect(&redis, &[]).await?;
    let ttl = Duration::from_millis(600);
    lk.publish(
        "EgressInternal|StartEgress|REQ",
        &request("REQ_nochoice0001", LK_CLIENT, web_start("EG_1"), ttl),
    )
    .await?;
    let i = next_incoming(&mut a_rx).await?;
    let started = Instant::now();
    assert!(!i.claim(1.0).await?, "no choice came");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(i.expired());
    assert!(!i.claim(1.0).await?, "an expired request is not claimed");
    Ok(())
}

#[tokio::test]
async fn queue_requests_go_to_one_server() -> Result<()> {
    let redis = RedisServer::start()?;
    let (a, mut a_rx) = server(&redis).await?;
    let (b, mut b_rx) = server(&redis).await?;
    a.serve(&STOP_EGRESS, "EG_abc123").await?;
    b.serve(&STOP_EGRESS, "EG_abc123").await?;
    let claims = "EgressHandler|CLI_livekitsrv01|CLAIM".to_owned();
    let responses = "EgressHandler|CLI_livekitsrv01|RES".to_owned();
    let mut lk = Lk::connect(&redis, &[claims.clone(), responses.clone()]).await?;

    let stop = livekit_protocol::StopEgressRequest {
        egress_id: "EG_abc123".into(),
    };
    let req = request("REQ_queue0000001", LK_CLIENT, stop.encode_to_vec(), WAIT);
    lk.publish("EgressHandler|StopEgress|EG_abc123|REQ", &req)
        .await?;
    let (ia, ib) = (
        next_incoming(&mut a_rx).await?,
        next_incoming(&mut b_rx).await?,
    );
    assert_eq!(
        livekit_protocol::StopEgressRequest::decode(ia.payload.as_slice())?,
        stop
    );
    assert_eq!(ia.topic, "EG_abc123");
    let ta = tokio::spawn(async move { (ia.claim(1.0).await, ia) });
    let tb = tokio::spawn(async move { (ib.claim(1.0).await, ib) });

    // Only the SET NX winner offers a claim.
    let claim: ClaimRequest = lk.expect(&claims).await?;
    assert_eq!(claim.affinity, 1.0);
    lk.expect_silence(Duration::from_millis(300)).await?;
    lk.publish(
        "EgressHandler|StopEgress|EG_abc123|RCLAIM",
        &ClaimResponse {
            request_id: claim.request_id.clone(),
            server_id: claim.server_id.clone(),
        },
    )
    .await?;
    let (ra, ia) = ta.await?;
    let (rb, ib) = tb.await?;
    let (won_a, won_b) = (ra?, rb?);
    assert!(won_a ^ won_b, "exactly one wins: a {won_a}, b {won_b}");
    let winner = if won_a { ia } else { ib };
    let winner_id = if won_a { a.server_id() } else { b.server_id() };
    assert_eq!(claim.server_id, winner_id);
    winner.respond(Ok(Vec::new())).await?;
    let res: Response = lk.expect(&responses).await?;
    assert_eq!(res.server_id, winner_id);

    // After unserve nothing more is delivered.
    a.unserve(&STOP_EGRESS, "EG_abc123").await?;
    b.unserve(&STOP_EGRESS, "EG_abc123").await?;
    let req = request("REQ_queue0000002", LK_CLIENT, stop.encode_to_vec(), WAIT);
    lk.publish("EgressHandler|StopEgress|EG_abc123|REQ", &req)
        .await?;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), a_rx.recv())
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn multi_requests_are_answered_by_every_server() -> Result<()> {
    let redis = RedisServer::start()?;
    let (a, mut a_rx) = server(&redis).await?;
    let (b, mut b_rx) = server(&redis).await?;
    a.serve(&LIST_ACTIVE_EGRESS, "").await?;
    b.serve(&LIST_ACTIVE_EGRESS, "").await?;
    let claims = "EgressInternal|CLI_livekitsrv01|CLAIM".to_owned();
    let responses = "EgressInternal|CLI_livekitsrv01|RES".to_owned();
    let mut lk = Lk::connect(&redis, &[claims, responses.clone()]).await?;

    let mut req = request("REQ_multi0000001", LK_CLIENT, Vec::new(), WAIT);
    req.multi = true;
    lk.publish("EgressInternal|ListActiveEgress|REQ", &req)
        .await?;
    for (rx, id) in [(&mut a_rx, "EG_a"), (&mut b_rx, "EG_b")] {
        let i = next_incoming(rx).await?;
        assert!(i.payload.is_empty());
        assert!(i.claim(1.0).await?, "multi methods need no claim");
        let list = ListActiveEgressResponse {
            egress_ids: vec![id.into()],
        };
        i.respond(Ok(list.encode_to_vec())).await?;
    }
    let mut answered = Vec::new();
    for _ in 0..2 {
        // No claims on the way: the only messages are the two responses.
        let res: Response = lk.expect(&responses).await?;
        let list = ListActiveEgressResponse::decode(res.raw_response.as_slice())?;
        answered.push((res.server_id, list.egress_ids));
    }
    answered.sort();
    let mut expected = vec![
        (a.server_id().to_owned(), vec!["EG_a".to_owned()]),
        (b.server_id().to_owned(), vec!["EG_b".to_owned()]),
    ];
    expected.sort();
    assert_eq!(answered, expected);
    Ok(())
}

/// livekit-server's IOInfo: claims every request on `IOInfo|<method>|REQ` with affinity 1 and,
/// if `answer`, responds to the chosen claim with `result`.
async fn io_info_server(
    redis: &RedisServer,
    method: &str,
    answer: Option<Result<Vec<u8>, (String, String)>>,
) -> Result<tokio::task::JoinHandle<Result<Vec<Request>>>> {
    let req_channel = format!("IOInfo|{method}|REQ");
    let rclaim_channel = format!("IOInfo|{method}|RCLAIM");
    let mut lk = Lk::connect(redis, &[req_channel.clone(), rclaim_channel.clone()]).await?;
    Ok(tokio::spawn(async move {
        let mut seen = Vec::new();
        let (c, payload) = lk.next(WAIT).await?;
        assert_eq!(c, req_channel);
        let req: Request = unwrap(&payload)?;
        seen.push(req.clone());
        let server_id = "SRV_livekitsrv01";
        lk.publish(
            &format!("IOInfo|{}|CLAIM", req.client_id),
            &ClaimRequest {
                request_id: req.request_id.clone(),
                server_id: server_id.into(),
                affinity: 1.0,
            },
        )
        .await?;
        let choice: ClaimResponse = lk.expect(&rclaim_channel).await?;
        assert_eq!(choice.request_id, req.request_id);
        assert_eq!(choice.server_id, server_id);
        if let Some(answer) = answer {
            let mut res = Response {
                request_id: req.request_id.clone(),
                server_id: server_id.into(),
                sent_at: now_ns(),
                ..Response::default()
            };
            match answer {
                Ok(raw) => res.raw_response = raw,
                Err((code, error)) => (res.code, res.error) = (code, error),
            }
            lk.publish(&format!("IOInfo|{}|RES", req.client_id), &res)
                .await?;
        }
        Ok(seen)
    }))
}

#[tokio::test]
async fn calls_to_io_info() -> Result<()> {
    let redis = RedisServer::start()?;
    let (client, _rx) = Psrpc::connect(&cfg(&redis), &["IOInfo"]).await?;
    let info = livekit_protocol::EgressInfo {
        egress_id: "EG_1".into(),
        ..Default::default()
    }
    .encode_to_vec();

    // Answered: an Empty response is an empty raw_response.
    let server = io_info_server(&redis, "CreateEgress", Some(Ok(Vec::new()))).await?;
    let sent = Instant::now();
    let res = client
        .call(&CREATE_EGRESS, "", &info, Duration::from_secs(2))
        .await;
    assert_eq!(res, Ok(Vec::new()));
    let seen = server.await??;
    let req = &seen[0];
    assert!(req.request_id.starts_with("REQ_") && req.request_id.len() == 16);
    assert_eq!(req.client_id, client.client_id());
    assert!(req.client_id.starts_with("CLI_") && req.client_id.len() == 16);
    assert_eq!(req.raw_request, info);
    assert!(!req.skip_claim && !req.multi && req.request.is_none());
    let ttl = req.expiry - req.sent_at;
    assert_eq!(ttl, 2_000_000_000, "expiry = sent_at + timeout");
    assert!(sent.elapsed() < Duration::from_secs(1));

    // An error response.
    let server = io_info_server(
        &redis,
        "CreateEgress",
        Some(Err(("not_found".into(), "egress not found".into()))),
    )
    .await?;
    let res = client
        .call(&CREATE_EGRESS, "", &info, Duration::from_secs(2))
        .await;
    assert_eq!(
        res,
        Err(RpcError::new(ErrorCode::NotFound, "egress not found"))
    );
    server.await??;

    // Claimed, never answered.
    let server = io_info_server(&redis, "CreateEgress", None).await?;
    let started = Instant::now();
    let res = client
        .call(&CREATE_EGRESS, "", &info, Duration::from_millis(700))
        .await;
    assert_eq!(res, Err(RpcError::timed_out()));
    assert_eq!(res.unwrap_err().code, ErrorCode::DeadlineExceeded);
    assert!(started.elapsed() >= Duration::from_millis(650));
    assert!(started.elapsed() < Duration::from_secs(2));
    server.await??;

    // Nobody there.
    let started = Instant::now();
    let res = client
        .call(&CREATE_EGRESS, "", &info, Duration::from_millis(500))
        .await;
    assert_eq!(res, Err(RpcError::no_response()));
    assert_eq!(
        res.unwrap_err().to_string(),
        "no response from servers (unavailable)"
    );
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert!(started.elapsed() < Duration::from_secs(2));
    Ok(())
}

#[tokio::test]
async fn expired_and_garbage_requests_are_dropped() -> Result<()> {
    let redis = RedisServer::start()?;
    let (a, mut a_rx) = server(&redis).await?;
    a.serve(&START_EGRESS, "").await?;
    let mut lk = Lk::connect(&redis, &[]).await?;
    let channel = "EgressInternal|StartEgress|REQ";

    let mut expired = request("REQ_expired00001", LK_CLIENT, web_start("EG_1"), WAIT);
    expired.expiry = now_ns() - 1_000_000_000;
    lk.publish(channel, &expired).await?;
    lk.publish_raw(channel, b"garbage \xff\xfe").await?;
    lk.publish_raw(channel, b"").await?;
    // The right envelope with the wrong type for the channel.
    lk.publish(
        channel,
        &ClaimRequest {
            request_id: "REQ_wrongtype001".into(),
            ..ClaimRequest::default()
        },
    )
    .await?;
    // A request with no client to answer.
    lk.publish(channel, &request("REQ_noclient0001", "", Vec::new(), WAIT))
        .await?;
    lk.publish(
        channel,
        &request("REQ_good00000001", LK_CLIENT, web_start("EG_2"), WAIT),
    )
    .await?;

    let i = next_incoming(&mut a_rx).await?;
    assert_eq!(i.request_id, "REQ_good00000001");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), a_rx.recv())
            .await
            .is_err()
    );
    assert!(a.ping().await.is_ok());
    Ok(())
}

#[tokio::test]
async fn requests_flow_again_after_redis_restarts() -> Result<()> {
    let mut redis = RedisServer::start()?;
    let (a, mut a_rx) = server(&redis).await?;
    a.serve(&START_EGRESS, "").await?;
    redis.restart(Duration::from_millis(300))?;

    // Publish until the resubscribed router hears one.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    let delivered = loop {
        if Instant::now() > deadline {
            bail!("no request delivered after the restart");
        }
        n += 1;
        if let Ok(mut lk) = Lk::connect(&redis, &[]).await {
            let id = format!("REQ_restart{n:05}");
            let _ = lk
                .publish(
                    "EgressInternal|StartEgress|REQ",
                    &request(&id, LK_CLIENT, web_start("EG_1"), WAIT),
                )
                .await;
        }
        if let Ok(Some(i)) = tokio::time::timeout(Duration::from_millis(250), a_rx.recv()).await {
            break i;
        }
    };
    assert!(delivered.request_id.starts_with("REQ_restart"));
    assert!(a.ping().await.is_ok());
    Ok(())
}
