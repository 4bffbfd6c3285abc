//! Who acts on which streams: ownership of the reactors' work, from the database.
//!
//! Reactors act on the world (send replies and alerts, assign chats, refresh tokens, seal).
//! With several processes on one PostgreSQL database each unit of work must have exactly one
//! owner at a time. The streams are divided into [`PARTITIONS`] partitions by a stable hash
//! of the stream name ([`partition_of`]); a process owns a partition while it holds a
//! PostgreSQL session-level advisory lock for it on a connection of its own. Nothing
//! home-made: the database is the coordinator.
//!
//! - **Membership**: each process also holds one member lock (a slot number), so every
//!   process can count the processes that are up from `pg_locks`.
//! - **Fair share**: a process takes free partitions up to `ceil(PARTITIONS / members)` and
//!   gives back what it holds above that, so a process that joins gets a share and one that
//!   leaves hands its partitions on.
//! - **Death**: a process whose session ends (exit, kill -9, a cut connection) loses its locks
//!   in PostgreSQL at once; the others take its partitions at their next round
//!   ([`ROUND`]: every second).
//! - **No work across a hand-over**: a reactor acts on a stream only while it holds that
//!   partition ([`Ownership::hold`]); a partition is given back only once no reactor holds it.
//!   A partition is taken with the log's head at that moment, and a reactor acts on it only
//!   once its own view of the log has reached that head, so it sees everything the previous
//!   owner recorded before it died.
//!
//! On SQLite (one process by construction) a process owns every partition ([`Ownership::local`]).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatledger_core::{EventStore, Position};
use tokio::sync::{watch, OwnedRwLockReadGuard, RwLock};
use tokio_postgres::{Client, NoTls};

/// The settings of the connection that holds a process's locks.
pub use tokio_postgres::Config as ConnectionConfig;

/// Partitions of the streams. Fixed: changing it moves streams between partitions, which is
/// safe only with every process stopped.
pub const PARTITIONS: u16 = 64;

/// How often a process looks at who is up and takes or gives back partitions.
pub const ROUND: Duration = Duration::from_secs(1);

/// Member slots a process may take; far more than anyone runs.
const MEMBER_SLOTS: i32 = 4_096;

/// The partition a stream's work belongs to: FNV-1a, stable across builds and platforms.
pub fn partition_of(stream: &str) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in stream.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(PARTITIONS)) as u16
}

/// The work of every reactor that is not per stream (the sealer) goes with this partition.
pub const SINGLETON: u16 = 0;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    owned: bool,
    /// The log's head when the partition was taken: act only with a view at least this far.
    ready_from: Position,
}

/// This process's ownership of the partitions. Cloning shares it.
#[derive(Clone)]
pub struct Ownership {
    slots: Arc<Vec<Arc<RwLock<Slot>>>>,
    status: Arc<Mutex<Status>>,
}

/// What readiness and the logs say about this process's share.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// `local` (owns everything), `postgres`.
    pub mode: &'static str,
    /// This process's member slot, once it has one.
    pub member: Option<i32>,
    /// Processes up, as last counted.
    pub members: usize,
    /// Partitions this process owns.
    pub owned: BTreeSet<u16>,
    /// Why this process owns nothing right now, if it cannot reach the database.
    pub problem: Option<String>,
}

/// A partition held for a piece of work: while it lives the partition is not given back.
pub struct Held {
    _guard: OwnedRwLockReadGuard<Slot>,
}

impl Ownership {
    /// Owns every partition, for good: one process on SQLite, and tests of one process.
    pub fn local() -> Self {
        let ownership = Self::none("local");
        {
            let mut status = ownership.lock_status();
            status.owned = (0..PARTITIONS).collect();
            status.members = 1;
        }
        for slot in ownership.slots.iter() {
            slot.try_write().expect("nobody holds a new slot").owned = true;
        }
        ownership
    }

    fn none(mode: &'static str) -> Self {
        Ownership {
            slots: Arc::new(
                (0..PARTITIONS)
                    .map(|_| Arc::new(RwLock::new(Slot::default())))
                    .collect(),
            ),
            status: Arc::new(Mutex::new(Status {
                mode,
                ..Status::default()
            })),
        }
    }

    /// Owns nothing until [`Ownership::run`] takes a share on PostgreSQL.
    pub fn shared() -> Self {
        Self::none("postgres")
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether ownership is shared with other processes (and so changes while running).
    pub fn is_shared(&self) -> bool {
        self.lock_status().mode != "local"
    }

    /// This process's share as it stands.
    pub fn status(&self) -> Status {
        self.lock_status().clone()
    }

    /// Holds the partition of `stream` for one piece of work, if this process owns it and a
    /// reactor whose view of the log has reached `seen` may act on it. `None`: not ours (now).
    pub async fn hold(&self, stream: &str, seen: Position) -> Option<Held> {
        self.hold_partition(partition_of(stream), seen).await
    }

    /// As [`Ownership::hold`], for a partition.
    pub async fn hold_partition(&self, partition: u16, seen: Position) -> Option<Held> {
        let guard = self.slots[usize::from(partition)]
            .clone()
            .read_owned()
            .await;
        (guard.owned && seen >= guard.ready_from).then_some(Held { _guard: guard })
    }

    /// Whether this process owns the partition of `stream` (without holding it).
    pub fn owns(&self, stream: &str) -> bool {
        self.lock_status().owned.contains(&partition_of(stream))
    }

    async fn take(&self, partition: u16, ready_from: Position) {
        *self.slots[usize::from(partition)].write().await = Slot {
            owned: true,
            ready_from,
        };
        self.lock_status().owned.insert(partition);
    }

    /// Marks `partition` no longer ours, once no work holds it.
    async fn give_back(&self, partition: u16) {
        self.slots[usize::from(partition)].write().await.owned = false;
        self.lock_status().owned.remove(&partition);
    }

    async fn give_back_all(&self, problem: String) {
        let owned: Vec<u16> = self.lock_status().owned.iter().copied().collect();
        for partition in owned {
            self.give_back(partition).await;
        }
        let mut status = self.lock_status();
        status.member = None;
        status.problem = Some(problem);
    }

    /// Keeps this process's share on PostgreSQL until `shutdown`: connects (again, after a
    /// failure), takes a member slot, and every [`ROUND`] takes or gives back partitions.
    /// `store` gives the log's head when a partition is taken.
    pub async fn run(
        self,
        config: tokio_postgres::Config,
        store: Arc<dyn EventStore>,
        round: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut keeper: Option<Keeper> = None;
        let mut pause = round;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let result = match keeper.as_mut() {
                Some(k) => k.round(&self, store.as_ref()).await,
                None => match Keeper::connect(&config).await {
                    Ok(k) => {
                        let mut status = self.lock_status();
                        status.member = Some(k.member);
                        status.problem = None;
                        drop(status);
                        tracing::info!(member = k.member, "joined the processes sharing the work");
                        keeper = Some(k);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(()) => pause = round,
                Err(e) => {
                    // Without the lock connection this process cannot know what it owns:
                    // it stops acting on anything until it has it again.
                    let problem = format!("the ownership connection failed: {e}");
                    tracing::warn!(error = %e, "lost the ownership connection; owning nothing until it is back");
                    self.give_back_all(problem).await;
                    keeper = None;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// The connection that holds this process's locks.
struct Keeper {
    client: Client,
    /// Ends (with the connection) when dropped.
    _connection: tokio::task::JoinHandle<()>,
    member: i32,
    members_key: i32,
    partitions_key: i32,
}

/// The first key of this installation's advisory locks of one kind: one per database and
/// schema, so separate installations (and parallel tests) in one database never meet.
fn lock_class(namespace: &str, kind: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in b"chatledger."
        .iter()
        .chain(kind.as_bytes())
        .chain(b":")
        .chain(namespace.as_bytes())
    {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // Non-negative, so that it reads the same as pg_locks' (unsigned) classid.
    (hash & 0x7fff_ffff) as i32
}

type KeeperError = tokio_postgres::Error;

impl Keeper {
    async fn connect(config: &tokio_postgres::Config) -> Result<Self, KeeperError> {
        let (client, connection) = config.connect(NoTls).await?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "the ownership connection ended");
            }
        });
        let row = client
            .query_one("SELECT current_database() || '.' || current_schema()", &[])
            .await?;
        let namespace: String = row.get(0);
        let members_key = lock_class(&namespace, "members");
        let partitions_key = lock_class(&namespace, "partitions");
        let mut member = None;
        for slot in 0..MEMBER_SLOTS {
            let row = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    &[&members_key, &slot],
                )
                .await?;
            if row.get::<_, bool>(0) {
                member = Some(slot);
                break;
            }
        }
        // All slots taken cannot happen short of thousands of processes; take the last.
        let member = member.unwrap_or(MEMBER_SLOTS - 1);
        Ok(Keeper {
            client,
            _connection: connection,
            member,
            members_key,
            partitions_key,
        })
    }

    /// Counts the processes up, then takes or gives back partitions towards a fair share.
    async fn round(
        &mut self,
        ownership: &Ownership,
        store: &dyn EventStore,
    ) -> Result<(), KeeperError> {
        let members = count_locks(&self.client, self.members_key).await?.max(1);
        let share = usize::from(PARTITIONS).div_ceil(members);
        let owned: Vec<u16> = ownership.lock_status().owned.iter().copied().collect();
        ownership.lock_status().members = members;
        if owned.len() > share {
            // Give back the last ones taken in our order, so a newcomer finds them free.
            for &partition in owned.iter().rev().take(owned.len() - share) {
                ownership.give_back(partition).await;
                self.client
                    .query_one(
                        "SELECT pg_advisory_unlock($1, $2)",
                        &[&self.partitions_key, &i32::from(partition)],
                    )
                    .await?;
                tracing::info!(partition, members, share, "gave up a partition");
            }
            return Ok(());
        }
        let mut missing = share - owned.len();
        if missing == 0 {
            return Ok(());
        }
        // Start looking where this member's share would be, so processes rarely race for
        // the same partition.
        let start = (self.member as usize * share) % usize::from(PARTITIONS);
        for i in 0..usize::from(PARTITIONS) {
            if missing == 0 {
                break;
            }
            let partition = ((start + i) % usize::from(PARTITIONS)) as u16;
            if owned.contains(&partition) {
                continue;
            }
            let row = self
                .client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    &[&self.partitions_key, &i32::from(partition)],
                )
                .await?;
            if !row.get::<_, bool>(0) {
                continue;
            }
            // Whatever the previous owner recorded is in the log by now: its session, and
            // with it any transaction it had open, has ended.
            let head = match store.head_position().await {
                Ok(head) => head,
                Err(e) => {
                    tracing::warn!(partition, error = %e, "cannot read the log's head; not taking the partition yet");
                    self.client
                        .query_one(
                            "SELECT pg_advisory_unlock($1, $2)",
                            &[&self.partitions_key, &i32::from(partition)],
                        )
                        .await?;
                    return Ok(());
                }
            };
            ownership.take(partition, head).await;
            tracing::info!(
                partition,
                members,
                share,
                ready_from = head,
                "took a partition"
            );
            missing -= 1;
        }
        Ok(())
    }
}

async fn count_locks(client: &Client, class: i32) -> Result<usize, KeeperError> {
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND objsubid = 2
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND classid = $1::int8::oid",
            &[&i64::from(class)],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as usize)
}

/// One process sharing the work, as `pg_locks` and `pg_stat_activity` show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub member: i32,
    /// The process's connection name (`chatledger <host> pid <pid>`).
    pub name: String,
    pub client_address: Option<String>,
    pub partitions: Vec<u16>,
}

/// Every process sharing this installation's work, and the partitions nobody owns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cluster {
    pub members: Vec<Member>,
    pub unowned: Vec<u16>,
}

/// Who owns what, read from the database (`chatledger cluster`).
pub async fn cluster(config: &tokio_postgres::Config) -> Result<Cluster, KeeperError> {
    let (client, connection) = config.connect(NoTls).await?;
    let connection = tokio::spawn(connection);
    let row = client
        .query_one("SELECT current_database() || '.' || current_schema()", &[])
        .await?;
    let namespace: String = row.get(0);
    let rows = client
        .query(
            "SELECT l.classid::int8, l.objid::int8, l.pid, coalesce(a.application_name, ''),
                    a.client_addr::text
             FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND l.classid IN ($1::int8::oid, $2::int8::oid)
             ORDER BY l.pid, l.objid",
            &[
                &i64::from(lock_class(&namespace, "members")),
                &i64::from(lock_class(&namespace, "partitions")),
            ],
        )
        .await?;
    drop(client);
    let _ = connection.await;
    let members_key = i64::from(lock_class(&namespace, "members"));
    let mut members: Vec<(i32, Member)> = Vec::new();
    for row in &rows {
        let (class, object, pid): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
        if class == members_key {
            members.push((
                pid,
                Member {
                    member: object as i32,
                    name: row.get(3),
                    client_address: row.get(4),
                    partitions: Vec::new(),
                },
            ));
        }
    }
    let mut owned = BTreeSet::new();
    for row in &rows {
        let (class, object, pid): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
        if class != members_key {
            if let Some((_, member)) = members.iter_mut().find(|(p, _)| *p == pid) {
                member.partitions.push(object as u16);
                owned.insert(object as u16);
            }
        }
    }
    let mut members: Vec<Member> = members.into_iter().map(|(_, m)| m).collect();
    members.sort_by_key(|m| m.member);
    Ok(Cluster {
        members,
        unowned: (0..PARTITIONS).filter(|p| !owned.contains(p)).collect(),
    })
}

/// The connection settings of the ownership connection: `url` with the schema, named after
/// this process so that `chatledger cluster` can say who is who.
pub fn connection_config(
    url: &str,
    schema: Option<&str>,
) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    if let Some(schema) = schema {
        config.options(format!("-c search_path={schema}"));
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    config.application_name(format!("chatledger {host} pid {}", std::process::id()));
    config.connect_timeout(Duration::from_secs(5));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Stable: these values are what every process computes, in every release.
        assert_eq!(
            partition_of("conversation-9099039188-919638100001"),
            partition_of("conversation-9099039188-919638100001")
        );
        let mut seen = BTreeSet::new();
        for n in 0..2_000 {
            seen.insert(partition_of(&format!(
                "conversation-9099039188-9196381{n:05}"
            )));
        }
        assert_eq!(
            seen.len(),
            usize::from(PARTITIONS),
            "2,000 streams reach every partition"
        );
    }

    #[tokio::test]
    async fn a_local_process_owns_everything_and_holds_at_any_position() {
        let ownership = Ownership::local();
        assert!(ownership.hold("any-stream", 0).await.is_some());
        assert_eq!(ownership.status().owned.len(), usize::from(PARTITIONS));
    }

    #[tokio::test]
    async fn a_partition_is_acted_on_only_once_the_view_reached_the_head_it_was_taken_at() {
        let ownership = Ownership::shared();
        let partition = partition_of("s");
        assert!(ownership.hold("s", 100).await.is_none(), "not taken yet");
        ownership.take(partition, 50).await;
        assert!(
            ownership.hold("s", 49).await.is_none(),
            "the view is behind the head"
        );
        assert!(ownership.hold("s", 50).await.is_some());
    }

    #[tokio::test]
    async fn a_partition_is_given_back_only_when_no_work_holds_it() {
        let ownership = Ownership::shared();
        let partition = partition_of("s");
        ownership.take(partition, 0).await;
        let held = ownership.hold("s", 0).await.unwrap();
        let giving = tokio::spawn({
            let ownership = ownership.clone();
            async move { ownership.give_back(partition).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!giving.is_finished(), "waits for the work in hand");
        drop(held);
        giving.await.unwrap();
        assert!(ownership.hold("s", 0).await.is_none());
    }
}
