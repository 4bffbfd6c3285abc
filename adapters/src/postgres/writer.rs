//! The writer task: every append queued in this process written in one transaction under the
//! append lock (a group), answered each with its own outcome; a group that fails as a whole
//! is written again one append at a time.

use super::*;

/// What the writer task needs to write.
pub(super) struct Writer {
    pub(super) pool: PgPool,
    pub(super) lock_key: i64,
    /// The `NOTIFY` channel of this schema's commits.
    pub(super) channel: String,
    pub(super) counts: Arc<Counts>,
}

enum Attempt {
    Retry,
    Failed(StoreError),
}

impl Writer {
    pub(super) async fn run(self, mut queue: mpsc::Receiver<Queued>) {
        while let Some(first) = queue.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let mut jobs = Vec::with_capacity(group.len());
            let mut keys = Vec::with_capacity(group.len());
            let mut replies = Vec::with_capacity(group.len());
            for (job, key, reply) in group {
                jobs.push(job);
                keys.push(key);
                replies.push(reply);
            }
            self.counts.add(jobs.len());
            let outcomes = match self.append_group(&jobs, &keys).await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    if jobs.len() > 1 {
                        tracing::debug!(error = %e, appends = jobs.len(), "group append failed; appending one by one");
                    }
                    let mut outcomes = Vec::with_capacity(jobs.len());
                    for (job, key) in jobs.iter().zip(keys) {
                        outcomes.push(self.append_one_keyed(job, key).await);
                    }
                    outcomes
                }
            };
            let answered = replies.len();
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that gave up waiting is no reason to stop writing for the others.
                let _ = reply.send(outcome);
            }
            crate::append::wait_for_comebacks(&queue, answered).await;
        }
    }

    /// One append on its own, its new key (if any) stored first in a transaction of its own
    /// (a key left without events is harmless: it is the stream's key when next written).
    async fn append_one_keyed(
        &self,
        job: &AppendJob,
        key: Option<SubjectKey>,
    ) -> Result<Option<AppendResult>, StoreError> {
        if let Some(key) = key {
            let key_id = key.key_id.clone();
            if store_key(&self.pool, &job.stream, key).await?.key_id != key_id {
                return Ok(None);
            }
        }
        self.append_one(job).await.map(Some)
    }

    /// One append in its own transaction, run again (a bounded number of times) when it meets
    /// a row written outside chatledger's append path.
    async fn append_one(&self, job: &AppendJob) -> Result<AppendResult, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            match self
                .try_append(&job.stream, job.expected, &job.events)
                .await
            {
                Ok(result) => return Ok(result),
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Retry) => continue,
            }
        }
        Err(StoreError::Backend(format!(
            "append to {} kept meeting rows written outside chatledger ({MAX_ATTEMPTS} attempts)",
            job.stream
        )))
    }

    /// A group of appends in one transaction under the append lock. The outer error is a
    /// failed write (the group is then written one by one); the inner ones are appends refused
    /// on their own merits.
    async fn append_group(
        &self,
        jobs: &[AppendJob],
        keys: &[Option<SubjectKey>],
    ) -> Result<Vec<Result<Option<AppendResult>, StoreError>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(self.lock_key)
            .execute(&mut *tx)
            .await?;
        // New conversations' keys, stored with their first events; an append whose stream
        // got another key meanwhile (here or in another process) writes nothing.
        let taken = store_group_keys(&mut tx, jobs, keys).await?;
        let written: Vec<&AppendJob> = jobs
            .iter()
            .zip(&taken)
            .filter(|(_, taken)| !**taken)
            .map(|(job, _)| job)
            .collect();
        let jobs = written;
        let ids: Vec<Uuid> = jobs
            .iter()
            .flat_map(|job| job.events.iter().map(|e| e.event.event_id))
            .collect();
        let mut streams: Vec<&str> = jobs.iter().map(|job| job.stream.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        // One round trip for both, read under the lock (a statement after it, so that its
        // snapshot sees every append committed before the lock was ours): which given ids are
        // stored (and where), and the head of every stream named; each by an index lookup per
        // id or stream (see LOOKUP_IDS).
        type Found = (Option<Uuid>, String, Option<i64>, Option<String>);
        let found: Vec<Found> = sqlx::query_as(
            "SELECT f.event_id, f.stream, NULL::bigint, NULL::text FROM UNNEST($1::uuid[]) AS i(id)
             CROSS JOIN LATERAL (SELECT event_id, stream FROM events e WHERE e.event_id = i.id LIMIT 1) f
             UNION ALL
             SELECT NULL::uuid, s.stream, h.version, h.hash FROM UNNEST($2::text[]) AS s(stream)
             CROSS JOIN LATERAL (SELECT version, hash FROM events e WHERE e.stream = s.stream
                                 ORDER BY version DESC LIMIT 1) h",
        )
        .bind(&ids)
        .bind(&streams)
        .fetch_all(&mut *tx)
        .await?;
        let mut stored_ids: HashMap<Uuid, String> = HashMap::new();
        let mut heads: HashMap<String, Result<StreamHead, String>> = HashMap::new();
        for (event_id, stream, version, hash) in found {
            if let Some(event_id) = event_id {
                stored_ids.insert(event_id, stream);
                continue;
            }
            let head = stream_head(version, hash);
            heads.insert(stream, head);
        }
        let recorded_at = truncate_to_micros(Utc::now());
        let plans = plan_group(&jobs, stored_ids, heads, recorded_at);
        let rows: Vec<(&str, &PlannedRow)> = jobs
            .iter()
            .zip(&plans)
            .filter_map(|(job, plan)| plan.as_ref().ok().map(|plan| (job, plan)))
            .flat_map(|(job, plan)| plan.rows.iter().map(|row| (job.stream.as_str(), row)))
            .collect();
        let mut positions: HashMap<Uuid, u64> = HashMap::with_capacity(rows.len());
        if !rows.is_empty() {
            // The insert and the notification (delivered at commit) in one statement.
            let inserted: Vec<(Uuid, i64)> = sqlx::query_as(
                "WITH inserted AS (
                    INSERT INTO events (event_id, stream, version, event_type, schema_version, data, metadata, recorded_at, hash)
                    SELECT e.event_id, e.stream, e.version, e.event_type, e.schema_version, e.data, e.metadata, $1, e.hash
                    FROM UNNEST($2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::int[], $7::text[], $8::text[], $9::text[])
                         WITH ORDINALITY AS e(event_id, stream, version, event_type, schema_version, data, metadata, hash, ord)
                    ORDER BY e.ord
                    RETURNING event_id, position
                 ), notified AS (
                    SELECT pg_notify($10, (SELECT MAX(position) FROM inserted)::text)
                 )
                 SELECT event_id, position FROM inserted, notified",
            )
            .bind(recorded_at)
            .bind(rows.iter().map(|(_, r)| r.event_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|(stream, _)| *stream).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.version as i64).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.event_type).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.schema_version as i32).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.data).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.metadata).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.hash.to_string()).collect::<Vec<_>>())
            .bind(&self.channel)
            .fetch_all(&mut *tx)
            .await?;
            positions.extend(inserted.into_iter().map(|(id, p)| (id, p as u64)));
        }
        drop(rows);
        let outcomes = results(plans, &positions)?;
        let committing = std::time::Instant::now();
        tx.commit().await?;
        crate::append::commit_took("postgres", committing);
        let mut outcomes = outcomes.into_iter();
        Ok(taken
            .into_iter()
            .map(|taken| match taken {
                true => Ok(None),
                false => outcomes
                    .next()
                    .expect("an outcome for every append written")
                    .map(Some),
            })
            .collect())
    }

    async fn try_append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[PreparedEvent],
    ) -> Result<AppendResult, Attempt> {
        let failed = |e| Attempt::Failed(db_error(e));
        let mut tx = self.pool.begin().await.map_err(failed)?;
        // Everything from here to the commit happens under the append lock: the head and the
        // duplicates read below cannot change before the insert, so an append never loses a
        // race it could not see, and `Any` never starves on a busy stream.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(self.lock_key)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        let ids: Vec<Uuid> = events.iter().map(|e| e.event.event_id).collect();
        let existing: Vec<(Uuid, String)> = sqlx::query_as(LOOKUP_IDS)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(failed)?;
        let head: Option<(i64, String)> = sqlx::query_as(
            "SELECT version, hash FROM events WHERE stream = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(stream)
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed)?;
        let head = match head {
            Some((version, hash)) => Some(StreamHead {
                version: version as u64,
                hash: hash.parse().map_err(|e| {
                    Attempt::Failed(StoreError::Corrupt(format!("head of stream {stream}: {e}")))
                })?,
            }),
            None => None,
        };
        let recorded_at = truncate_to_micros(Utc::now());
        let plan = plan_append(stream, expected, events, &existing, head, recorded_at)
            .map_err(Attempt::Failed)?;
        if plan.rows.is_empty() {
            return Ok(AppendResult {
                stored: vec![],
                duplicates: plan.duplicates,
                stream_version: plan.current,
            });
        }
        let inserted: Result<Vec<(i64, i64)>, sqlx::Error> = sqlx::query_as(
            "INSERT INTO events (event_id, stream, version, event_type, schema_version, data, metadata, recorded_at, hash) \
             SELECT e.event_id, $1, e.version, e.event_type, e.schema_version, e.data, e.metadata, $2, e.hash \
             FROM UNNEST($3::uuid[], $4::bigint[], $5::text[], $6::int[], $7::text[], $8::text[], $9::text[]) \
                  WITH ORDINALITY AS e(event_id, version, event_type, schema_version, data, metadata, hash, ord) \
             ORDER BY e.ord \
             RETURNING position, version",
        )
        .bind(stream)
        .bind(recorded_at)
        .bind(plan.rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.version as i64).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.event_type).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.schema_version as i32).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.data).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.metadata).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.hash.to_string()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await;
        let mut inserted = match inserted {
            Ok(rows) => rows,
            Err(e) => {
                // Under the lock no other chatledger append can interleave; a unique violation
                // means a row was written some other way. Run the append again against what
                // is there now: it then sees the row as a duplicate or as a conflict.
                return match violated_unique(&e) {
                    Some(_) => Err(Attempt::Retry),
                    None => Err(failed(e)),
                };
            }
        };
        inserted.sort_unstable_by_key(|(_, version)| *version);
        let last_position = inserted.last().map(|(p, _)| *p).unwrap_or_default();
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(last_position.to_string())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        let committing = std::time::Instant::now();
        tx.commit().await.map_err(failed)?;
        crate::append::commit_took("postgres", committing);
        let stored: Vec<StoredEvent> = plan
            .rows
            .iter()
            .zip(&inserted)
            .map(|(row, (position, _))| StoredEvent {
                event_id: row.event_id,
                version: row.version,
                position: *position as u64,
            })
            .collect();
        Ok(AppendResult {
            stream_version: stored.last().map(|s| s.version),
            stored,
            duplicates: plan.duplicates,
        })
    }
}
