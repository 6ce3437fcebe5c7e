//! The Redis store: each packet is a key with native expiry (`EXAT`), beside a per-recipient
//! sorted set (score = arrival sequence) that expires with the newest message it indexes, a
//! global sorted set of live hashes (score = expiry) for sync, a global sorted set of live
//! hashes by arrival (score = seq) for `/sync/recent`, and a tombstone key per hash that
//! outlives the packet by the retention period. One Lua script makes the checks and all writes
//! of a `put` atomic; purge drops expired hashes from both global sets together.
//!
//! Quotas ([`super::Quotas`]) are checked in the same script: per recipient (`q:<fp>`) and for
//! the store (`qall`), a sorted set of `bytes:hash` by expiry beside a byte counter (`qb:<fp>`,
//! `qbytes`); the script drops what expired from them (and its bytes from the counter) before
//! it counts.
//!
//! The arrival set (`arrivals`) is newer than the others: when its marker key
//! (`arrivals_built`) is absent, [`RedisStore::open`] builds it from `all` (every live hash),
//! reading each packet's seq from the start of its value, and sets the marker only once done,
//! so an interrupted build is redone. Puts add to it whether built or not.
//!
//! Durability is Redis's: run it with `appendonly yes` and `appendfsync always` for "durable
//! before acknowledged" (the relay warns at start-up otherwise).
//!
//! **Redis Cluster and Valkey cluster** ([`RedisStore::open_cluster`], `--redis-cluster`): the
//! put script's checks and writes must stay one atomic step, and a script may only touch keys
//! of one hash slot, so every key of a store carries one hash tag (the prefix `jasper:` becomes
//! `{jasper}:`): a recipient's keys, its packets and the global indexes share a slot. So one
//! relay's store lives on one shard of the cluster (the cluster gives it failover and the
//! operator one system to run, not a store larger than a node); several relays (prefixes)
//! spread over the shards. Splitting a store over slots (per-recipient tags with the global
//! indexes apart) would make a put two writes that a crash can separate; not done.

use async_trait::async_trait;
use jasper_core::MessageHash;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Cmd, Pipeline, RedisFuture, Script, Value};
use serde::{Deserialize, Serialize};

use std::time::Duration;

use super::{
    FeedEntry, FeedPage, FeedPosition, MessageStore, NewPacket, PutOutcome, Quotas, RecentHashes,
    StoreResult, StoredPacket, unix_now,
};
use crate::error::RelayError;

const PUT_SCRIPT: &str = r#"
local now = tonumber(ARGV[3])
-- What a quota set (members 'bytes:hash', score = expiry) and its byte counter hold, live;
-- what expired is dropped first (a bounded number per call: the rest is counted until a later
-- put drops it, so the count errs on the side of full).
local function held(set, counter)
  local old = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 1000)
  if #old > 0 then
    local freed = 0
    for i = 1, #old do freed = freed + tonumber(string.match(old[i], '^(%d+):')) end
    redis.call('ZREM', set, unpack(old))
    redis.call('DECRBY', counter, freed)
  end
  return redis.call('ZCARD', set), tonumber(redis.call('GET', counter) or '0')
end
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
local len = tonumber(ARGV[12])
local rp, rb = held(KEYS[8], KEYS[9])
local sp, sb = held(KEYS[10], KEYS[11])
if sp >= tonumber(ARGV[10]) or sb + len > tonumber(ARGV[11]) then return {'store_full', 0} end
if rp >= tonumber(ARGV[8]) or rb + len > tonumber(ARGV[9]) then return {'recipient_full', 0} end
local seq = redis.call('INCR', KEYS[5])
redis.call('SET', KEYS[1], seq .. '|' .. exp .. '|' .. ARGV[1], 'EXAT', exp)
local sized = len .. ':' .. ARGV[5]
redis.call('ZADD', KEYS[8], exp, sized)
redis.call('INCRBY', KEYS[9], len)
local qttl = redis.call('TTL', KEYS[8])
if qttl < 0 or now + qttl < exp then
  redis.call('EXPIREAT', KEYS[8], exp)
  redis.call('EXPIREAT', KEYS[9], exp)
end
redis.call('ZADD', KEYS[10], exp, sized)
redis.call('INCRBY', KEYS[11], len)
redis.call('SET', KEYS[2], exp, 'EXAT', ARGV[4])
redis.call('ZADD', KEYS[3], seq, ARGV[5])
local ttl = redis.call('TTL', KEYS[3])
if ttl < 0 or now + ttl < exp then redis.call('EXPIREAT', KEYS[3], exp) end
redis.call('ZADD', KEYS[4], exp, ARGV[5])
redis.call('ZADD', KEYS[6], seq, ARGV[5])
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[7], '*', 's', seq, 'h', ARGV[5], 'e', exp, 'r', ARGV[6])
return {'stored', seq}
"#;

/// Entries kept in the feed stream by default (about 200 bytes each, 40 MB): a process that
/// falls further behind than this catches its sketch up from the store.
pub const FEED_LEN: u64 = 200_000;
/// Most feed entries read at once.
const FEED_PAGE: usize = 4096;

/// `/sync/recent`: KEYS = arrivals, all, seq; ARGV = since ('' for a bootstrap), limit, now.
/// Pages through `arrivals` by score after `since`, keeping hashes whose expiry (their score
/// in `all`) is after `now`, until `limit` are kept and one more is seen. Atomic, so the
/// latest seq read here is consistent with the hashes.
const RECENT_SCRIPT: &str = r#"
local latest = redis.call('GET', KEYS[3]) or '0'
local out = {}
local more = 0
if ARGV[1] ~= '' then
  local limit = tonumber(ARGV[2])
  local now = tonumber(ARGV[3])
  local from = '(' .. ARGV[1]
  while more == 0 do
    local page = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1000)
    for i = 1, #page, 2 do
      local exp = redis.call('ZSCORE', KEYS[2], page[i])
      if exp and tonumber(exp) > now then
        if #out >= limit * 2 then
          more = 1
          break
        end
        out[#out + 1] = page[i + 1]
        out[#out + 1] = page[i]
      end
    end
    if #page < 2000 then break end
    from = '(' .. page[#page]
  end
end
return {latest, more, out}
"#;

/// Drops up to ARGV[2] hashes expired by ARGV[1] from `all` (KEYS[1]) and `arrivals`
/// (KEYS[2]); returns how many.
const PURGE_SCRIPT: &str = r#"
local hs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #hs > 0 then
  redis.call('ZREM', KEYS[2], unpack(hs))
  redis.call('ZREM', KEYS[1], unpack(hs))
end
return #hs
"#;

/// Hashes per purge script call (and per step of building the arrival set).
const PURGE_BATCH: usize = 1000;

/// The part of a packet stored in the value (the hash is in the key).
#[derive(Serialize, Deserialize)]
struct Body {
    recipient: String,
    message: String,
    signature: String,
}

/// Response timeout of the feed's connection: above the longest blocking read.
const FEED_TIMEOUT: Duration = Duration::from_secs(30);

/// A field of a stream entry.
fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Connections to Redis. With `appendfsync always` Redis fsyncs once per event-loop turn per
/// connection, so several connections let more puts share each fsync.
const CONNECTIONS: usize = 4;

pub struct RedisStore {
    conns: Vec<Conn>,
    /// For the feed's blocking reads only.
    feed_conn: Conn,
    next: std::sync::atomic::AtomicUsize,
    prefix: String,
    put_script: Script,
    recent_script: Script,
    purge_script: Script,
    retention: u64,
    feed_len: u64,
    quotas: Quotas,
}

/// A connection to one Redis server or to a cluster; every command goes through it the same
/// way (a cluster connection routes each by its first key's slot).
#[derive(Clone)]
enum Conn {
    Managed(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Multiplexed(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Multiplexed(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The prefix of a store in a cluster: its name as one hash tag, so that all its keys share a
/// slot (`jasper:` -> `{jasper}:`; a prefix with a tag of its own is kept).
pub fn cluster_prefix(prefix: &str) -> String {
    if prefix.contains('{') && prefix.contains('}') {
        return prefix.to_owned();
    }
    format!("{{{}}}:", prefix.trim_end_matches(':'))
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
            conns.push(Conn::Managed(
                ConnectionManager::new_with_config(client.clone(), settings.clone()).await?,
            ));
        }
        let feed_conn = client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(FEED_TIMEOUT))
                    .set_connection_timeout(Some(std::time::Duration::from_secs(5))),
            )
            .await?;
        Self::with_conns(
            conns,
            Conn::Multiplexed(feed_conn),
            prefix,
            tombstone_retention_secs,
        )
        .await
    }

    /// Connects to the cluster that `seeds` (node URLs) belong to; the store's keys all carry
    /// the hash tag of [`cluster_prefix`] (see the module comment).
    pub async fn open_cluster(
        seeds: &[String],
        prefix: &str,
        tombstone_retention_secs: u64,
    ) -> StoreResult<Self> {
        let client = |timeout: Duration| {
            redis::cluster::ClusterClient::builder(seeds.iter().map(String::as_str))
                .response_timeout(timeout)
                .connection_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| RelayError::Config(format!("--redis {}: {e}", seeds.join(","))))
        };
        let main = client(Duration::from_secs(10))?;
        let mut conns = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            conns.push(Conn::Cluster(main.get_async_connection().await?));
        }
        let feed_conn = Conn::Cluster(client(FEED_TIMEOUT)?.get_async_connection().await?);
        Self::with_conns(
            conns,
            feed_conn,
            &cluster_prefix(prefix),
            tombstone_retention_secs,
        )
        .await
    }

    async fn with_conns(
        mut conns: Vec<Conn>,
        feed_conn: Conn,
        prefix: &str,
        tombstone_retention_secs: u64,
    ) -> StoreResult<Self> {
        let _: String = redis::cmd("PING").query_async(&mut conns[0]).await?;
        warn_if_not_durable(&mut conns[0]).await;
        let store = Self {
            conns,
            feed_conn,
            next: std::sync::atomic::AtomicUsize::new(0),
            prefix: prefix.to_owned(),
            put_script: Script::new(PUT_SCRIPT),
            recent_script: Script::new(RECENT_SCRIPT),
            purge_script: Script::new(PURGE_SCRIPT),
            retention: tombstone_retention_secs,
            feed_len: FEED_LEN,
            quotas: Quotas::UNLIMITED,
        };
        store.build_arrivals().await?;
        Ok(store)
    }

    /// Keeps about `entries` in the feed stream instead of [`FEED_LEN`] (Redis trims whole
    /// stream nodes, so a few hundred more may stay).
    /// What one recipient and the store may hold, checked inside the put script. Packets
    /// stored before quotas existed (before the `q:` sets) are not counted; they expire
    /// within one TTL.
    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = quotas;
        self
    }

    pub fn with_feed_len(mut self, entries: u64) -> Self {
        self.feed_len = entries;
        self
    }

    /// Builds the arrival set of a store written before it existed (see the module comment).
    /// `ZSCAN` returns every member present from start to end of the scan; members added
    /// meanwhile are added by their put, members removed meanwhile expired.
    async fn build_arrivals(&self) -> StoreResult<()> {
        let mut conn = self.conn();
        let marker = format!("{}arrivals_built", self.prefix);
        let built: bool = conn.exists(&marker).await?;
        if built {
            return Ok(());
        }
        let mut cursor = 0u64;
        let mut indexed = 0usize;
        loop {
            let (next, page): (u64, Vec<String>) = redis::cmd("ZSCAN")
                .arg(self.all_key())
                .arg(cursor)
                .arg("COUNT")
                .arg(PURGE_BATCH)
                .query_async(&mut conn)
                .await?;
            let hashes: Vec<MessageHash> = page
                .iter()
                .step_by(2)
                .filter_map(|m| MessageHash::parse(m, "index").ok())
                .collect();
            if !hashes.is_empty() {
                let mut pipe = redis::pipe();
                for h in &hashes {
                    // "seq|expires_at|body": the seq is within the first 21 bytes.
                    pipe.getrange(self.msg_key(h), 0, 24);
                }
                let heads: Vec<String> = pipe.query_async(&mut conn).await?;
                let mut add = redis::pipe();
                let mut added = 0usize;
                for (h, head) in hashes.iter().zip(heads) {
                    // Empty: expired meanwhile.
                    if let Some(seq) = head.split('|').next().and_then(|s| s.parse::<u64>().ok()) {
                        add.zadd(self.arrivals_key(), h.to_string(), seq).ignore();
                        added += 1;
                    }
                }
                if added > 0 {
                    let () = add.query_async(&mut conn).await?;
                    indexed += added;
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let () = conn.set(&marker, 1).await?;
        if indexed > 0 {
            tracing::info!(
                indexed,
                "built the arrival-order index of an older Redis store"
            );
        }
        Ok(())
    }

    /// A connection, round robin.
    fn conn(&self) -> Conn {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    fn feed_key(&self) -> String {
        format!("{}feed", self.prefix)
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
    fn arrivals_key(&self) -> String {
        format!("{}arrivals", self.prefix)
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

/// A sorted-set score as Redis prints it ("17", or "1.5e+16" past 10^15 or so).
fn parse_score(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as u64)
    })
}

async fn warn_if_not_durable(conn: &mut Conn) {
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

#[async_trait]
impl MessageStore for RedisStore {
    async fn put(&self, p: NewPacket) -> StoreResult<PutOutcome> {
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
            .key(self.arrivals_key())
            .key(self.feed_key())
            .key(format!("{}q:{}", self.prefix, hex::encode(p.recipient_fp)))
            .key(format!("{}qb:{}", self.prefix, hex::encode(p.recipient_fp)))
            .key(format!("{}qall", self.prefix))
            .key(format!("{}qbytes", self.prefix))
            .arg(&body)
            .arg(p.expires_at)
            .arg(now)
            .arg(p.expires_at.saturating_add(self.retention))
            .arg(p.hash.to_string())
            .arg(hex::encode(p.recipient_fp))
            .arg(self.feed_len)
            .arg(self.quotas.recipient_packets)
            .arg(self.quotas.recipient_bytes)
            .arg(self.quotas.stored_packets)
            .arg(self.quotas.stored_bytes)
            .arg(body.len())
            .invoke_async(&mut conn)
            .await?;
        Ok(match kind.as_str() {
            "stored" => PutOutcome::Stored { seq },
            "duplicate" => PutOutcome::Duplicate,
            "conflict" => PutOutcome::Conflict,
            "expired" => PutOutcome::Expired,
            "recipient_full" => PutOutcome::RecipientFull,
            "store_full" => PutOutcome::StoreFull,
            other => return Err(RelayError::Storage(format!("put script answered {other}"))),
        })
    }

    async fn get(&self, hashes: Vec<MessageHash>) -> StoreResult<Vec<Option<StoredPacket>>> {
        self.load(&hashes).await
    }

    async fn by_recipient(
        &self,
        recipient_fp: [u8; 32],
        since: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredPacket>> {
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
                let mut newest: Vec<String> = conn.zrevrange(&key, 0, limit as isize - 1).await?;
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

    async fn recent(&self, since: Option<u64>, limit: usize) -> StoreResult<RecentHashes> {
        let mut conn = self.conn();
        let (latest, more, flat): (String, i64, Vec<String>) = self
            .recent_script
            .key(self.arrivals_key())
            .key(self.all_key())
            .key(self.seq_key())
            .arg(since.map(|s| s.to_string()).unwrap_or_default())
            .arg(limit)
            .arg(unix_now())
            .invoke_async(&mut conn)
            .await?;
        let corrupt = || RelayError::Storage("corrupt arrival index entry".into());
        let latest_seq = latest.parse().map_err(|_| corrupt())?;
        let hashes = flat
            .chunks(2)
            .map(|pair| match pair {
                [seq, h] => Ok((
                    parse_score(seq).ok_or_else(corrupt)?,
                    MessageHash::parse(h, "index").map_err(|_| corrupt())?,
                )),
                _ => Err(corrupt()),
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(RecentHashes {
            hashes,
            latest_seq,
            more: more != 0,
        })
    }

    async fn unknown(&self, hashes: Vec<MessageHash>) -> StoreResult<Vec<MessageHash>> {
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

    async fn live_range(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> StoreResult<Vec<(MessageHash, u64)>> {
        let mut conn = self.conn();
        let from = from.max(unix_now() + 1);
        if from >= to {
            return Ok(Vec::new());
        }
        let to = if to == u64::MAX {
            "+inf".to_string()
        } else {
            format!("({to}")
        };
        let limit = isize::try_from(limit).unwrap_or(isize::MAX);
        let members: Vec<(String, u64)> = conn
            .zrangebyscore_limit_withscores(self.all_key(), from, to, 0, limit)
            .await?;
        Ok(members
            .iter()
            .filter_map(|(m, at)| Some((MessageHash::parse(m, "index").ok()?, *at)))
            .collect())
    }

    fn shared(&self) -> bool {
        true
    }

    async fn instance(&self) -> StoreResult<Option<String>> {
        let mut conn = self.conn();
        let key = format!("{}instance", self.prefix);
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(crate::random_instance_id())
            .arg("NX")
            .query_async(&mut conn)
            .await?;
        Ok(conn.get(&key).await?)
    }

    async fn feed_end(&self) -> StoreResult<FeedPosition> {
        let mut conn = self.conn();
        let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(self.feed_key())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        Ok(match last.first() {
            Some((id, fields)) => FeedPosition {
                id: id.clone(),
                seq: field(fields, "s").and_then(|s| s.parse().ok()).unwrap_or(0),
            },
            None => FeedPosition {
                id: "0-0".into(),
                seq: 0,
            },
        })
    }

    async fn feed_after(&self, after: &FeedPosition, wait: Duration) -> StoreResult<FeedPage> {
        // A blocking read holds its connection: one of its own, not one the puts share.
        let mut conn = self.feed_conn.clone();
        let answer: Option<Vec<(String, Vec<(String, Vec<(String, String)>)>)>> =
            redis::cmd("XREAD")
                .arg("COUNT")
                .arg(FEED_PAGE)
                .arg("BLOCK")
                .arg(wait.as_millis() as u64)
                .arg("STREAMS")
                .arg(self.feed_key())
                .arg(&after.id)
                .query_async(&mut conn)
                .await?;
        let entries = answer
            .and_then(|streams| streams.into_iter().next())
            .map(|(_, entries)| entries)
            .unwrap_or_default();
        let mut page = FeedPage {
            entries: Vec::with_capacity(entries.len()),
            end: after.clone(),
            gap: false,
        };
        for (id, fields) in entries {
            let seq: u64 = field(&fields, "s")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            // Sequence numbers are consecutive in the stream (one INCR and one XADD per stored
            // packet, in one script); a jump means entries were trimmed before we read them.
            if page.end.seq != 0 && seq != page.end.seq + 1 {
                page.gap = true;
            }
            let entry = (|| {
                Some(FeedEntry {
                    hash: MessageHash::parse(field(&fields, "h")?, "feed").ok()?,
                    expires_at: field(&fields, "e")?.parse().ok()?,
                    recipient_fp: hex::decode(field(&fields, "r")?).ok()?.try_into().ok()?,
                })
            })();
            match entry {
                Some(e) => page.entries.push(e),
                None => page.gap = true,
            }
            page.end = FeedPosition { id, seq };
        }
        Ok(page)
    }

    async fn count(&self) -> StoreResult<u64> {
        let mut conn = self.conn();
        let now = unix_now();
        Ok(conn
            .zcount(self.all_key(), format!("({now}"), "+inf")
            .await?)
    }

    async fn live_bytes(&self) -> StoreResult<Option<u64>> {
        // The quota counter: what expired is taken off at the next put, so between puts it
        // may still hold packets that just expired.
        let n: Option<u64> = self.conn().get(format!("{}qbytes", self.prefix)).await?;
        Ok(Some(n.unwrap_or(0)))
    }

    async fn purge_expired(&self) -> StoreResult<usize> {
        // Packets and tombstones expire natively; only the global indexes need trimming,
        // in bounded steps so Redis is never blocked for long.
        let mut conn = self.conn();
        let now = unix_now();
        let mut removed = 0usize;
        loop {
            let n: usize = self
                .purge_script
                .key(self.all_key())
                .key(self.arrivals_key())
                .arg(now)
                .arg(PURGE_BATCH)
                .invoke_async(&mut conn)
                .await?;
            removed += n;
            if n < PURGE_BATCH {
                break;
            }
        }
        Ok(removed)
    }

    async fn close(&self) -> StoreResult<()> {
        Ok(())
    }
}
