//! Redis pub/sub shared by the front-ends that talk to livekit-server: raw payloads on named
//! channels, and the `SET <key> <rand> EX 5 NX` claim every subscriber of a "queue" channel races
//! for (the recorder protocol's reservations and results, psrpc's queue methods).
//!
//! One RESP3 [`ConnectionManager`] carries commands and subscriptions; it reconnects on its own
//! and resubscribes every channel after a reconnect, so a restarted Redis costs nothing but the
//! messages published while it was down.

use std::time::Duration;

use base64::Engine;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::config::RedisConfig;

/// How long a claim lock lives (livekit's `lockExpiration`).
const LOCK_SECONDS: u64 = 5;
/// Each command's answer must come within this, or it fails (and the connection is retried).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The claim key of a message: standard base64 of the SHA-256 of its exact bytes.
pub fn claim_key(payload: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(payload))
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("unable to connect to redis at {address}: {message}")]
    Connect { address: String, message: String },
    #[error("invalid redis address {address:?}: {message}")]
    Address { address: String, message: String },
    #[error("redis: {0}")]
    Command(#[from] redis::RedisError),
}

/// A message that arrived on a subscribed channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub channel: String,
    pub payload: Vec<u8>,
}

/// What the subscription side reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Message(Message),
    /// The connection dropped; it is being re-established and channels resubscribed.
    Disconnected,
}

/// A connection to livekit-server's Redis. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct Bus {
    conn: ConnectionManager,
}

impl Bus {
    /// Connects (RESP3) and returns the bus and the stream of what arrives on its subscriptions.
    pub async fn connect(
        cfg: &RedisConfig,
    ) -> Result<(Self, mpsc::UnboundedReceiver<Event>), BusError> {
        let info = connection_info(cfg)?;
        // Where, never who: the address without credentials.
        let address = info.addr().to_string();
        let connect_error = |e: &dyn std::fmt::Display| BusError::Connect {
            address: address.clone(),
            message: e.to_string(),
        };
        let client = redis::Client::open(info).map_err(|e| connect_error(&e))?;
        let (push_tx, mut push_rx) = mpsc::unbounded_channel::<PushInfo>();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(push_tx)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| connect_error(&e))?;

        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(push) = push_rx.recv().await {
                let event = match push.kind {
                    PushKind::Message => match message(&push.data) {
                        Some(m) => Event::Message(m),
                        None => continue,
                    },
                    PushKind::Disconnection => Event::Disconnected,
                    _ => continue,
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let mut bus = Self { conn };
        bus.ping().await.map_err(|e| connect_error(&e))?;
        Ok((bus, rx))
    }

    pub async fn subscribe(&mut self, channel: &str) -> Result<(), BusError> {
        Ok(self.conn.subscribe(channel).await?)
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> Result<(), BusError> {
        Ok(self.conn.unsubscribe(channel).await?)
    }

    /// Publishes raw bytes (an encoded protobuf; empty is a valid message).
    pub async fn publish(&mut self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Races for a message published on a queue channel: true if this instance won it.
    pub async fn claim(&mut self, payload: &[u8]) -> Result<bool, BusError> {
        let token: u64 = rand::random::<u64>() >> 1;
        let won: Option<String> = redis::cmd("SET")
            .arg(claim_key(payload))
            .arg(token)
            .arg("EX")
            .arg(LOCK_SECONDS)
            .arg("NX")
            .query_async(&mut self.conn)
            .await?;
        Ok(won.is_some())
    }

    /// A round trip; also what makes a lost connection be re-established.
    pub async fn ping(&mut self) -> Result<(), BusError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn).await?;
        Ok(())
    }
}

fn message(data: &[Value]) -> Option<Message> {
    match data {
        [Value::BulkString(channel), Value::BulkString(payload)] => Some(Message {
            channel: String::from_utf8_lossy(channel).into_owned(),
            payload: payload.clone(),
        }),
        [channel, Value::BulkString(payload)] => Some(Message {
            channel: redis::from_redis_value_ref::<String>(channel).ok()?,
            payload: payload.clone(),
        }),
        _ => None,
    }
}

/// Where Redis is when `redis.address` is empty, as in the original (go-redis's default).
pub const DEFAULT_ADDRESS: &str = "localhost:6379";

/// `address` as `host:port` or a `redis://` / `rediss://` URL (empty = [`DEFAULT_ADDRESS`]);
/// username, password and db from the config win over the URL's. Always RESP3 (push messages
/// carry the subscriptions).
pub fn connection_info(cfg: &RedisConfig) -> Result<redis::ConnectionInfo, BusError> {
    let address = match cfg.address.trim() {
        "" => DEFAULT_ADDRESS,
        a => a,
    };
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("redis://{address}")
    };
    let info = url
        .as_str()
        .into_connection_info()
        .map_err(|e| BusError::Address {
            address: cfg.address.clone(),
            message: e.to_string(),
        })?;
    let mut settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    if !cfg.username.is_empty() {
        settings = settings.set_username(&cfg.username);
    }
    if !cfg.password.is_empty() {
        settings = settings.set_password(&cfg.password);
    }
    if cfg.db != 0 {
        settings = settings.set_db(cfg.db);
    }
    Ok(info.set_redis_settings(settings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_keys_are_livekits() {
        // base64(sha256("")), the key of an all-default (empty) message.
        assert_eq!(
            claim_key(b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(claim_key(b"abc").len(), 44);
    }

    #[test]
    fn addresses_and_urls_are_both_accepted() {
        let cfg = |address: &str| RedisConfig {
            address: address.into(),
            username: "u".into(),
            password: "p".into(),
            db: 2,
        };
        let a = connection_info(&cfg("10.0.0.1:6380")).unwrap();
        assert_eq!(a.addr().to_string(), "10.0.0.1:6380");
        assert_eq!(a.redis_settings().db(), 2);
        assert_eq!(a.redis_settings().username(), Some("u"));
        assert_eq!(a.redis_settings().protocol(), ProtocolVersion::RESP3);
        let b = connection_info(&cfg("redis://other:7000/5")).unwrap();
        assert_eq!(b.addr().to_string(), "other:7000");
        assert_eq!(b.redis_settings().db(), 2, "the config's db wins");
        let default = connection_info(&RedisConfig::default()).unwrap();
        assert_eq!(
            default.addr().to_string(),
            "localhost:6379",
            "empty = the original's default"
        );
        assert!(connection_info(&cfg("mysql://x")).is_err());
    }
}
