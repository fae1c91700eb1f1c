//! Redis fan-out against real Redis servers: a single node, a node killed mid-stream, a
//! 3-node cluster, and a Sentinel failover.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use christmas_core::fanout::{
    FanoutConfig, FanoutSnapshot, PayloadFormat, PublishPoint, TickMessage, TickSubscription,
};
use christmas_core::{Ingestor, Symbol, Trade};
use christmas_tests::{RedisCluster, RedisServer};

use crate::support::{count, fresh_core_db, symbols, trade};

/// Receives messages until `ticks` ticks have arrived (or `within` passes).
async fn receive(sub: &mut TickSubscription, ticks: usize, within: Duration) -> Vec<TickMessage> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut n = 0;
    while n < ticks {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(d)) => {
                let m = d.expect("a decodable message").message;
                n += m.len();
                got.push(m);
            }
            Ok(None) => panic!("subscription ended after {n} of {ticks} ticks"),
            Err(_) => panic!("only {n} of {ticks} ticks arrived within {within:?}"),
        }
    }
    got
}

/// Per symbol: the `exchange_seq`s received in arrival order, after checking sequences
/// are gap-free from 1.
fn per_symbol(messages: &[TickMessage]) -> HashMap<String, Vec<i64>> {
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for m in messages {
        let last = last_seq.entry(m.symbol.clone()).or_insert(0);
        assert_eq!(m.first_seq, *last + 1, "gap or repeat in {}", m.symbol);
        *last = m.last_seq();
        out.entry(m.symbol.clone())
            .or_default()
            .extend(m.trades.iter().map(|t| t.exchange_seq));
    }
    out
}

/// Pushes `n` trades round-robin over `syms` (trade k has exchange_seq k); returns what
/// each symbol got, in push order.
fn push_round_robin(
    ingestor: &Ingestor<Trade>,
    syms: &[Symbol],
    range: std::ops::Range<u64>,
) -> HashMap<String, Vec<i64>> {
    let mut pushed: HashMap<String, Vec<i64>> = HashMap::new();
    for k in range {
        let s = syms[(k % syms.len() as u64) as usize];
        ingestor.push(trade(s, k)).unwrap();
        pushed
            .entry(s.as_str().to_string())
            .or_default()
            .push(k as i64);
    }
    pushed
}

async fn every_tick_in_order(format: PayloadFormat, publish: PublishPoint) {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let syms = symbols(20);
    let mut sub = TickSubscription::live(&redis.url(), format, &syms)
        .await
        .unwrap();
    let config = FanoutConfig {
        format,
        publish,
        ..FanoutConfig::new(redis.url())
    };
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .fanout(config)
        .start()
        .await
        .unwrap();
    let pushed = tokio::task::block_in_place(|| push_round_robin(&ingestor, &syms, 0..200_000));
    let snap = ingestor.shutdown().await.unwrap();
    let messages = receive(&mut sub, 200_000, Duration::from_secs(120)).await;
    assert_eq!(per_symbol(&messages), pushed);
    let fanout: FanoutSnapshot = snap.fanout.unwrap();
    assert_eq!(
        (fanout.enqueued, fanout.published, fanout.dropped),
        (200_000, 200_000, 0)
    );
    assert_eq!(count(&client, "market_data").await, 200_000);

    // The latest hash holds each symbol's last trade and its sequence.
    let s0 = syms[0].as_str();
    let last = pushed[s0].last().unwrap().to_string();
    let n = pushed[s0].len().to_string();
    let latest = redis
        .cli(&[
            "HMGET",
            &format!("md:{{{s0}}}:latest"),
            "trade_exchange_seq",
            "trade_seq",
        ])
        .unwrap();
    assert_eq!(
        latest.split_whitespace().collect::<Vec<_>>(),
        vec![last.as_str(), n.as_str()]
    );

    // The stream replays the symbol's ticks, ending at its last one.
    let mut replay = TickSubscription::replay(&redis.url(), format, syms[0], "0")
        .await
        .unwrap();
    let replayed = receive(&mut replay, pushed[s0].len(), Duration::from_secs(30)).await;
    assert_eq!(per_symbol(&replayed)[s0], pushed[s0]);
    assert!(replayed.last().unwrap().trades.len() <= pushed[s0].len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_receives_every_tick_in_push_order_json() {
    every_tick_in_order(PayloadFormat::Json, PublishPoint::Committed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_receives_every_tick_in_push_order_rkyv() {
    every_tick_in_order(PayloadFormat::Rkyv, PublishPoint::Sealed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_loses_nothing_in_postgres_and_fanout_resumes() {
    let mut redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let syms = symbols(10);
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .fanout(FanoutConfig {
            queue_batches: 8,
            ..FanoutConfig::new(redis.url())
        })
        .start()
        .await
        .unwrap();
    push_round_robin(&ingestor, &syms, 0..20_000);
    ingestor.flush().await.unwrap();
    tokio::task::block_in_place(|| redis.kill()).unwrap();
    // Redis is down: PostgreSQL keeps taking everything.
    for chunk in 0..20u64 {
        push_round_robin(
            &ingestor,
            &syms,
            20_000 + chunk * 2_000..22_000 + chunk * 2_000,
        );
        ingestor.flush().await.unwrap();
    }
    let down = ingestor.metrics().fanout.unwrap();
    assert!(!down.connected);
    assert!(down.dropped > 0, "{down:?}");
    tokio::task::block_in_place(|| redis.start_again()).unwrap();

    // Back: a new subscriber gets what is pushed now, without restarting anything.
    let mut sub = TickSubscription::live(&redis.url(), PayloadFormat::Json, &syms[..1])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut k = 60_000;
    let received = loop {
        push_round_robin(&ingestor, &syms, k..k + 1_000);
        ingestor.flush().await.unwrap();
        k += 1_000;
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            break d.unwrap().message;
        }
        assert!(Instant::now() < deadline, "fan-out did not resume");
    };
    assert_eq!(received.symbol, syms[0].as_str());
    let snap = ingestor.shutdown().await.unwrap();
    assert_eq!(count(&client, "market_data").await, k as i64);
    let f = snap.fanout.unwrap();
    // Every tick is either published or counted as dropped.
    assert_eq!(f.enqueued, k);
    assert_eq!(f.published + f.dropped, f.enqueued, "{f:?}");
    assert!(f.errors > 0 && f.connects >= 2, "{f:?}");
}

/// While Redis is away the queue keeps at most `queue_ticks` ticks however small the
/// batches: 30 batches of 1,000 into a bound of 5,000 ticks (and 4,096 batches) leave 5
/// queued; the rest are dropped and counted, but for those the publisher took out before
/// it found Redis away. Each batch is sealed by a flush, so the sizes are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fanout_queue_is_bounded_in_ticks_while_redis_is_away() {
    const BATCH: u64 = 1_000;
    const BATCHES: u64 = 30;
    let away = format!("redis://127.0.0.1:{}", christmas_tests::free_port());
    let syms = symbols(10);
    let ingestor = Ingestor::<Trade>::builder()
        .discard()
        .shards(1)
        .fanout(FanoutConfig {
            queue_ticks: 5_000,
            drain_timeout: Duration::from_millis(100),
            ..FanoutConfig::new(away)
        })
        .start()
        .await
        .unwrap();
    for b in 0..BATCHES {
        push_round_robin(&ingestor, &syms, b * BATCH..(b + 1) * BATCH);
        ingestor.flush().await.unwrap();
    }
    let f = ingestor.metrics().fanout.unwrap();
    assert!(!f.connected, "{f:?}");
    assert_eq!(f.enqueued, BATCH * BATCHES, "{f:?}");
    assert_eq!(f.queue_depth, 5, "{f:?}");
    // What is neither queued nor dropped the publisher holds: the batches it had taken out
    // and merged when it found Redis away.
    let held = f.enqueued - f.dropped - f.queue_depth * BATCH;
    assert!(f.dropped > 0 && held < f.enqueued / 2, "{f:?}");
    let f = ingestor.shutdown().await.unwrap().fanout.unwrap();
    assert_eq!((f.published, f.dropped), (0, BATCH * BATCHES), "{f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_shards_channels_and_keys() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(3)).unwrap();
    let (url, _client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let syms = symbols(30);
    // The subscriber enters through the third node, the publisher through the first.
    let mut sub = TickSubscription::live(&cluster.url_via(2), PayloadFormat::Json, &syms)
        .await
        .unwrap();
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .fanout(FanoutConfig::new(cluster.url_via(0)))
        .start()
        .await
        .unwrap();
    let pushed = push_round_robin(&ingestor, &syms, 0..30_000);
    ingestor.shutdown().await.unwrap();
    let messages = receive(&mut sub, 30_000, Duration::from_secs(60)).await;
    assert_eq!(per_symbol(&messages), pushed);

    // Each symbol's keys live on the node owning its hash tag, and all three nodes hold some.
    let mut nodes_with_keys = 0;
    for node in &cluster.nodes {
        let keys = node.cli(&["DBSIZE"]).unwrap();
        if keys.trim().parse::<u64>().unwrap() > 0 {
            nodes_with_keys += 1;
        }
    }
    assert_eq!(nodes_with_keys, 3);
    for s in &syms {
        let sym = s.as_str();
        let key = format!("md:{{{sym}}}:latest");
        let slot = cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", &key]).unwrap();
        let stream_slot = cluster.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", &format!("md:{{{sym}}}:ticks")])
            .unwrap();
        assert_eq!(slot, stream_slot);
        let owner = cluster
            .nodes
            .iter()
            .find(|n| n.cli(&["EXISTS", &key]).is_ok_and(|r| r.trim() == "1"))
            .unwrap_or_else(|| panic!("no node has {key}"));
        let seq = owner.cli(&["HGET", &key, "trade_seq"]).unwrap();
        assert_eq!(seq.trim(), pushed[sym].len().to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_continues_on_the_replica_sentinel_promotes() {
    let (mut master, replica, sentinel) = tokio::task::block_in_place(|| {
        let master = RedisServer::start()?;
        let replica =
            RedisServer::start_with(&["--replicaof", "127.0.0.1", &master.port().to_string()])?;
        let sentinel = RedisServer::start_sentinel("md", master.port())?;
        anyhow::Ok((master, replica, sentinel))
    })
    .unwrap();
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let redis_url = format!("redis+sentinel://127.0.0.1:{}/md", sentinel.port());
    let syms = symbols(5);
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .fanout(FanoutConfig::new(&redis_url))
        .start()
        .await
        .unwrap();
    push_round_robin(&ingestor, &syms, 0..5_000);
    ingestor.flush().await.unwrap();
    let key = format!("md:{{{}}}:latest", syms[0].as_str());
    let wait_seq = |server: &RedisServer, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = server.cli(&["HGET", &key, "trade_seq"]).unwrap_or_default();
            if got.trim() == want {
                return;
            }
            assert!(Instant::now() < deadline, "trade_seq {got:?}, want {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    tokio::task::block_in_place(|| wait_seq(&master, "1000"));

    tokio::task::block_in_place(|| master.kill()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let addr = sentinel
            .cli(&["SENTINEL", "get-master-addr-by-name", "md"])
            .unwrap();
        if addr.contains(&replica.port().to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "no failover: {addr}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Ticks pushed after the failover reach the promoted replica.
    push_round_robin(&ingestor, &syms, 5_000..10_000);
    ingestor.flush().await.unwrap();
    tokio::task::block_in_place(|| wait_seq(&replica, "2000"));
    let snap = ingestor.shutdown().await.unwrap();
    let f = snap.fanout.unwrap();
    assert!(f.connects >= 2, "{f:?}");
    assert_eq!(f.published + f.dropped, f.enqueued, "{f:?}");
    assert_eq!(count(&client, "market_data").await, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_the_database_rejects_are_not_published_after_commit() {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    client
        .batch_execute("ALTER TABLE market_data ADD CONSTRAINT positive_price CHECK (price >= 0)")
        .await
        .unwrap();
    let syms = symbols(4);
    let mut sub = TickSubscription::live(&redis.url(), PayloadFormat::Json, &syms)
        .await
        .unwrap();
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .fanout(FanoutConfig::new(redis.url()))
        .start()
        .await
        .unwrap();
    let bad_at = [5u64, 6, 400, 999];
    let rows: Vec<Trade> = (0..1_000u64)
        .map(|k| {
            let mut t = trade(syms[k as usize % 4], k);
            if bad_at.contains(&k) {
                t.price = -1.0;
            }
            t
        })
        .collect();
    ingestor.push_batch(&rows).unwrap();
    ingestor.shutdown().await.unwrap();
    let messages = receive(&mut sub, 1_000 - bad_at.len(), Duration::from_secs(30)).await;
    let published: Vec<i64> = {
        let mut v: Vec<i64> = messages
            .iter()
            .flat_map(|m| m.trades.iter().map(|t| t.exchange_seq))
            .collect();
        v.sort();
        v
    };
    let stored: Vec<i64> = client
        .query("SELECT exchange_seq FROM market_data ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(published, stored);
    assert!(published.iter().all(|k| !bad_at.contains(&(*k as u64))));
    // Nothing else arrives: the rejected ticks are gone, their sequences are gaps.
    assert!(tokio::time::timeout(Duration::from_millis(500), sub.next())
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_keep_only_their_age_window() {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, _client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let syms = symbols(1);
    let format = PayloadFormat::Json;
    let mut sub = TickSubscription::live(&redis.url(), format, &syms)
        .await
        .unwrap();
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .fanout(FanoutConfig {
            stream_max_age: Duration::from_secs(1),
            ..FanoutConfig::new(redis.url())
        })
        .start()
        .await
        .unwrap();
    // The first 100 are published, then age past the window before the next 100 come.
    tokio::task::block_in_place(|| push_round_robin(&ingestor, &syms, 0..100));
    receive(&mut sub, 100, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let pushed = tokio::task::block_in_place(|| push_round_robin(&ingestor, &syms, 100..200));
    receive(&mut sub, 100, Duration::from_secs(30)).await;
    ingestor.shutdown().await.unwrap();

    // The stream replays only the second 100: the first left with the next publish.
    let s0 = syms[0].as_str();
    let mut replay = TickSubscription::replay(&redis.url(), format, syms[0], "0")
        .await
        .unwrap();
    let replayed = receive(&mut replay, 100, Duration::from_secs(30)).await;
    assert_eq!(replayed[0].first_seq, 101);
    let seqs: Vec<i64> = replayed
        .iter()
        .flat_map(|m| m.trades.iter().map(|t| t.exchange_seq))
        .collect();
    assert_eq!(seqs, pushed[s0]);
}

/// A Redis of its own, a fresh database, a live subscription to `n` symbols, and an
/// ingestor fanning out to that Redis with `config`.
struct Rig {
    _redis: RedisServer,
    client: tokio_postgres::Client,
    syms: Vec<Symbol>,
    sub: TickSubscription,
    ingestor: Ingestor<Trade>,
}

async fn rig(n: usize, config: impl FnOnce(FanoutConfig) -> FanoutConfig) -> Rig {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    let syms = symbols(n);
    let sub = TickSubscription::live(&redis.url(), PayloadFormat::Json, &syms)
        .await
        .unwrap();
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .fanout(config(FanoutConfig::new(redis.url())))
        .start()
        .await
        .unwrap();
    Rig {
        _redis: redis,
        client,
        syms,
        sub,
        ingestor,
    }
}

/// `commits` commits of `per_commit` trades round-robin over the rig's symbols (trade k
/// has exchange_seq k), each flushed, then `pause`, before the next; returns what each
/// symbol got.
async fn push_in_commits(
    rig: &Rig,
    commits: u64,
    per_commit: u64,
    pause: Duration,
) -> HashMap<String, Vec<i64>> {
    let mut pushed: HashMap<String, Vec<i64>> = HashMap::new();
    for c in 0..commits {
        if c > 0 {
            tokio::time::sleep(pause).await;
        }
        let range = c * per_commit..(c + 1) * per_commit;
        let got = tokio::task::block_in_place(|| push_round_robin(&rig.ingestor, &rig.syms, range));
        for (s, seqs) in got {
            pushed.entry(s).or_default().extend(seqs);
        }
        rig.ingestor.flush().await.unwrap();
    }
    pushed
}

/// With a round interval, the commits that come within one go out together: one message
/// per symbol for many commits, every tick still in order, and none later than the
/// interval after its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_within_a_round_interval_share_a_message_per_symbol() {
    const COMMITS: u64 = 10;
    const PER_COMMIT: u64 = 30;
    let interval = Duration::from_millis(1_000);
    let mut rig = rig(3, |c| FanoutConfig {
        round_interval: interval,
        ..c
    })
    .await;
    let started = Instant::now();
    let pushed = push_in_commits(&rig, COMMITS, PER_COMMIT, Duration::ZERO).await;
    let committing = started.elapsed();
    let all = (COMMITS * PER_COMMIT) as usize;
    let messages = receive(&mut rig.sub, all, interval * 5).await;
    let delivered = started.elapsed();
    assert_eq!(per_symbol(&messages), pushed);
    assert_eq!(count(&rig.client, "market_data").await, all as i64);
    let snap = rig.ingestor.shutdown().await.unwrap();
    assert!(snap.batches_committed() >= COMMITS, "{snap:?}");
    // Rounds start at most once per interval: the first at the first commit, then one per
    // interval the commits took; each sends one message per symbol.
    let rounds = 1 + committing.as_millis().div_ceil(interval.as_millis()) as usize;
    assert!(
        messages.len() <= rounds * rig.syms.len(),
        "{} messages for {COMMITS} commits in {committing:?}",
        messages.len()
    );
    assert_eq!(snap.fanout.unwrap().messages, messages.len() as u64);
    assert!(
        delivered < committing + interval * 2,
        "the last round came {delivered:?} after the first push"
    );
}

/// A round interval never costs ticks: with a queue of 4 batches and a 1 s interval, the
/// publisher goes early whenever the queue is half full, so 40 commits 40 ms apart (25 in
/// the interval: waiting it out would overflow the queue) all arrive. The pause leaves the
/// publisher two commits' time to start its round on a loaded machine; back to back,
/// commits came every few milliseconds and a publisher held off the cores for 15 ms lost
/// ticks without waiting at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_interval_goes_early_rather_than_drop() {
    const COMMITS: u64 = 40;
    let mut rig = rig(1, |c| FanoutConfig {
        round_interval: Duration::from_secs(1),
        queue_batches: 4,
        ..c
    })
    .await;
    let pushed = push_in_commits(&rig, COMMITS, 10, Duration::from_millis(40)).await;
    let s0 = rig.syms[0].as_str().to_string();
    let messages = receive(&mut rig.sub, pushed[&s0].len(), Duration::from_secs(30)).await;
    assert_eq!(per_symbol(&messages)[&s0], pushed[&s0]);
    let fanout = rig.ingestor.shutdown().await.unwrap().fanout.unwrap();
    assert_eq!(
        (fanout.dropped, fanout.published),
        (0, pushed[&s0].len() as u64)
    );
    assert!(
        messages.len() < COMMITS as usize,
        "{} messages: the waits merged nothing",
        messages.len()
    );
}

/// `used_memory` from `INFO memory`, bytes.
fn used_memory(redis: &RedisServer) -> i64 {
    let info = redis.cli(&["INFO", "memory"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

fn dbsize(redis: &RedisServer) -> i64 {
    redis.cli(&["DBSIZE"]).unwrap().trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_symbols_keys_expire_so_cardinality_does_not_fill_redis() {
    let redis = tokio::task::block_in_place(RedisServer::start).unwrap();
    let (url, client) = fresh_core_db(&christmas_tests::shared_pg_url()).await;
    // 10,000 symbols with one trade each, as one request with that many symbols sends.
    let syms: Vec<Symbol> = (0..10_000)
        .map(|i| Symbol::new(&format!("C{i:05}")).unwrap())
        .collect();
    let before = used_memory(&redis);
    let ingestor = Ingestor::<Trade>::builder()
        .database_url(&url)
        .fanout(FanoutConfig {
            key_ttl: Duration::from_secs(3),
            ..FanoutConfig::new(redis.url())
        })
        .start()
        .await
        .unwrap();
    tokio::task::block_in_place(|| push_round_robin(&ingestor, &syms, 0..10_000));
    ingestor.shutdown().await.unwrap();
    assert_eq!(count(&client, "market_data").await, 10_000);
    // Two keys a symbol (stream and latest hash), each with an expiry.
    assert_eq!(dbsize(&redis), 20_000);
    let per_symbol = (used_memory(&redis) - before) / 10_000;
    eprintln!("Redis memory per symbol with one message (JSON): {per_symbol} bytes");
    // Measured 4,675 (the stream's first listpack node is most of it).
    assert!(per_symbol < 8_192, "{per_symbol} bytes per symbol");
    for key in ["md:{C00042}:ticks", "md:{C00042}:latest"] {
        let ttl: i64 = redis.cli(&["PTTL", key]).unwrap().trim().parse().unwrap();
        assert!((1..=3_000).contains(&ttl), "{key}: PTTL {ttl}");
    }
    // Past the expiry every key is gone, and the memory with them.
    let deadline = Instant::now() + Duration::from_secs(15);
    while dbsize(&redis) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(dbsize(&redis), 0);
    let left = used_memory(&redis) - before;
    assert!(left < 1 << 20, "{left} bytes left after the expiry");
}
