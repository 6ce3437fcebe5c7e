//! The Redis store: each packet is a key with native expiry (`EXAT`), beside a per-recipient
//! sorted set (score = arrival sequence) that expires with the newest message it indexes, a
//! global sorted set of live hashes (score = expiry) for sync, and a tombstone key per hash
//! that outlives the packet by the retention period. One Lua script makes the checks and all
//! writes of a `put` atomic.
//!
//! Durability is Redis's: run it with `appendonly yes` and `appendfsync always` for "durable
//! before acknowledged" (the relay warns at start-up otherwise).

use futures::FutureExt;
use futures::future::BoxFuture;
use jasper_core::MessageHash;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use super::{MessageStore, NewPacket, PutOutcome, StoreResult, StoredPacket, unix_now};
use crate::error::RelayError;

const PUT_SCRIPT: &str = r#"
local now = tonumber(ARGV[3])
local exp = tonumber(ARGV[2])
if exp <= now then return {'expired', 0} end
if redis.call('EXISTS', KEYS[2]) == 1 then
  local cur = redis.call('GET', KEYS[1])
  if not cur then return {'expired', 0} end
  local p1 = string.find(cur, '|', 1, true)
  local p2 = string.find(cur, '|', p1 + 1, true)
  if string.sub(cur, p2 + 1) == ARGV[1] then return {'duplicate', 0} end
  return {'conflict', 0}
end
local seq = redis.call('INCR', KEYS[5])
redis.call('SET', KEYS[1], seq .. '|' .. exp .. '|' .. ARGV[1], 'EXAT', exp)
redis.call('SET', KEYS[2], exp, 'EXAT', ARGV[4])
redis.call('ZADD', KEYS[3], seq, ARGV[5])
local ttl = redis.call('TTL', KEYS[3])
if ttl < 0 or now + ttl < exp then redis.call('EXPIREAT', KEYS[3], exp) end
redis.call('ZADD', KEYS[4], exp, ARGV[5])
return {'stored', seq}
"#;

/// The part of a packet stored in the value (the hash is in the key).
#[derive(Serialize, Deserialize)]
struct Body {
    recipient: String,
    message: String,
    signature: String,
}

/// Connections to Redis. With `appendfsync always` Redis fsyncs once per event-loop turn per
/// connection, so several connections let more puts share each fsync.
const CONNECTIONS: usize = 4;

pub struct RedisStore {
    conns: Vec<ConnectionManager>,
    next: std::sync::atomic::AtomicUsize,
    prefix: String,
    put_script: Script,
    retention: u64,
}

impl RedisStore {
    /// Connects to `url`; every key starts with `prefix` (several relays may share a server).
    pub async fn open(url: &str, prefix: &str, tombstone_retention_secs: u64) -> StoreResult<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| RelayError::Config(format!("--redis {url}: {e}")))?;
        // Large recipient fetches (MGET of ~3 MB) can take longer than the default 500 ms.
        let settings = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(std::time::Duration::from_secs(10)))
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)));
        let mut conns = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            conns.push(ConnectionManager::new_with_config(client.clone(), settings.clone()).await?);
        }
        let _: String = redis::cmd("PING").query_async(&mut conns[0]).await?;
        warn_if_not_durable(&mut conns[0]).await;
        Ok(Self {
            conns,
            next: std::sync::atomic::AtomicUsize::new(0),
            prefix: prefix.to_owned(),
            put_script: Script::new(PUT_SCRIPT),
            retention: tombstone_retention_secs,
        })
    }

    /// A connection, round robin.
    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    fn msg_key(&self, h: &MessageHash) -> String {
        format!("{}m:{h}", self.prefix)
    }
    fn seen_key(&self, h: &MessageHash) -> String {
        format!("{}s:{h}", self.prefix)
    }
    fn rcpt_key(&self, fp: &[u8; 32]) -> String {
        format!("{}r:{}", self.prefix, hex::encode(fp))
    }
    fn all_key(&self) -> String {
        format!("{}all", self.prefix)
    }
    fn seq_key(&self) -> String {
        format!("{}seq", self.prefix)
    }

    async fn load(&self, hashes: &[MessageHash]) -> StoreResult<Vec<Option<StoredPacket>>> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = hashes.iter().map(|h| self.msg_key(h)).collect();
        let mut conn = self.conn();
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let now = unix_now();
        hashes
            .iter()
            .zip(values)
            .map(|(h, v)| match v {
                None => Ok(None),
                Some(v) => decode(h, &v).map(|p| p.filter(|p| p.expires_at > now)),
            })
            .collect()
    }
}

fn decode(hash: &MessageHash, value: &str) -> StoreResult<Option<StoredPacket>> {
    let corrupt = || RelayError::Storage(format!("corrupt value for {hash}"));
    let mut parts = value.splitn(3, '|');
    let seq = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(corrupt)?;
    let expires_at = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(corrupt)?;
    let body: Body =
        serde_json::from_str(parts.next().ok_or_else(corrupt)?).map_err(|_| corrupt())?;
    Ok(Some(StoredPacket {
        recipient: body.recipient,
        message: body.message,
        hash: *hash,
        signature: body.signature,
        expires_at,
        seq,
    }))
}

async fn warn_if_not_durable(conn: &mut ConnectionManager) {
    let read = |name: &'static str| {
        let mut conn = conn.clone();
        async move {
            let v: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await;
            v.ok().and_then(|v| v.get(1).cloned())
        }
    };
    let aof = read("appendonly").await;
    let fsync = read("appendfsync").await;
    if aof.as_deref() != Some("yes") || fsync.as_deref() != Some("always") {
        tracing::warn!(
            appendonly = aof.as_deref().unwrap_or("?"),
            appendfsync = fsync.as_deref().unwrap_or("?"),
            "Redis is not configured to fsync every write; an acknowledged message can be lost \
             if Redis crashes (set appendonly yes, appendfsync always)"
        );
    }
}

impl MessageStore for RedisStore {
    fn put(&self, p: NewPacket) -> BoxFuture<'_, StoreResult<PutOutcome>> {
        async move {
            let body = serde_json::to_string(&Body {
                recipient: p.recipient,
                message: p.message,
                signature: p.signature,
            })
            .expect("body serialises");
            let now = unix_now();
            let mut conn = self.conn();
            let (kind, seq): (String, u64) = self
                .put_script
                .key(self.msg_key(&p.hash))
                .key(self.seen_key(&p.hash))
                .key(self.rcpt_key(&p.recipient_fp))
                .key(self.all_key())
                .key(self.seq_key())
                .arg(body)
                .arg(p.expires_at)
                .arg(now)
                .arg(p.expires_at.saturating_add(self.retention))
                .arg(p.hash.to_string())
                .invoke_async(&mut conn)
                .await?;
            Ok(match kind.as_str() {
                "stored" => PutOutcome::Stored { seq },
                "duplicate" => PutOutcome::Duplicate,
                "conflict" => PutOutcome::Conflict,
                "expired" => PutOutcome::Expired,
                other => return Err(RelayError::Storage(format!("put script answered {other}"))),
            })
        }
        .boxed()
    }

    fn get(
        &self,
        hashes: Vec<MessageHash>,
    ) -> BoxFuture<'_, StoreResult<Vec<Option<StoredPacket>>>> {
        async move { self.load(&hashes).await }.boxed()
    }

    fn by_recipient(
        &self,
        recipient_fp: [u8; 32],
        since: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredPacket>>> {
        async move {
            let key = self.rcpt_key(&recipient_fp);
            let mut conn = self.conn();
            let limit = limit.max(1);
            let members: Vec<String> = match since {
                Some(since) => {
                    redis::cmd("ZRANGEBYSCORE")
                        .arg(&key)
                        .arg(format!("({since}"))
                        .arg("+inf")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit)
                        .query_async(&mut conn)
                        .await?
                }
                None => {
                    let mut newest: Vec<String> =
                        conn.zrevrange(&key, 0, limit as isize - 1).await?;
                    newest.reverse();
                    newest
                }
            };
            let hashes: Vec<MessageHash> = members
                .iter()
                .filter_map(|m| MessageHash::parse(m, "index").ok())
                .collect();
            let loaded = self.load(&hashes).await?;
            let mut stale = Vec::new();
            let mut out = Vec::with_capacity(loaded.len());
            for (h, p) in hashes.iter().zip(loaded) {
                match p {
                    Some(p) => out.push(p),
                    None => stale.push(h.to_string()),
                }
            }
            if !stale.is_empty() {
                // Index entries of expired packets: drop them lazily.
                let _: redis::RedisResult<u64> = conn.zrem(&key, stale).await;
            }
            Ok(out)
        }
        .boxed()
    }

    fn unknown(&self, hashes: Vec<MessageHash>) -> BoxFuture<'_, StoreResult<Vec<MessageHash>>> {
        async move {
            let mut out = Vec::new();
            let mut conn = self.conn();
            for chunk in hashes.chunks(1000) {
                let mut pipe = redis::pipe();
                for h in chunk {
                    pipe.exists(self.seen_key(h));
                }
                let exists: Vec<bool> = pipe.query_async(&mut conn).await?;
                out.extend(
                    chunk
                        .iter()
                        .zip(exists)
                        .filter(|(_, e)| !e)
                        .map(|(h, _)| *h),
                );
            }
            Ok(out)
        }
        .boxed()
    }

    fn live_hashes(&self) -> BoxFuture<'_, StoreResult<Vec<MessageHash>>> {
        async move {
            let mut conn = self.conn();
            let now = unix_now();
            let members: Vec<String> = conn
                .zrangebyscore(self.all_key(), format!("({now}"), "+inf")
                .await?;
            Ok(members
                .iter()
                .filter_map(|m| MessageHash::parse(m, "index").ok())
                .collect())
        }
        .boxed()
    }

    fn count(&self) -> BoxFuture<'_, StoreResult<u64>> {
        async move {
            let mut conn = self.conn();
            let now = unix_now();
            Ok(conn
                .zcount(self.all_key(), format!("({now}"), "+inf")
                .await?)
        }
        .boxed()
    }

    fn purge_expired(&self) -> BoxFuture<'_, StoreResult<usize>> {
        async move {
            // Packets and tombstones expire natively; only the global index needs trimming.
            let mut conn = self.conn();
            let now = unix_now();
            let removed: usize = conn.zrembyscore(self.all_key(), "-inf", now).await?;
            Ok(removed)
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, StoreResult<()>> {
        async move { Ok(()) }.boxed()
    }
}
