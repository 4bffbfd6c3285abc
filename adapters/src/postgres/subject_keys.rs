//! The keys that seal personal data, kept beside the log (`subject_keys`), written by the
//! writer in its group transactions.

use super::*;

#[async_trait]
impl KeyStore for PostgresStore {
    async fn stream_key(&self, stream: &str) -> Result<Option<SubjectKey>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT key_id, key FROM subject_keys WHERE stream = $1")
                .bind(stream)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        row.map(|(key_id, key)| keys::decode(stream, key_id, &key))
            .transpose()
    }

    async fn create_stream_key(
        &self,
        stream: &str,
        fresh: SubjectKey,
    ) -> Result<SubjectKey, StoreError> {
        store_key(&self.pool, stream, fresh).await
    }

    async fn append_with_new_key(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        key: SubjectKey,
    ) -> Result<Option<AppendResult>, StoreError> {
        validate(stream, &events)?;
        if events.is_empty() {
            let key_id = key.key_id.clone();
            if store_key(&self.pool, stream, key).await?.key_id != key_id {
                return Ok(None);
            }
            return EventStore::append(self, stream, expected, events)
                .await
                .map(Some);
        }
        // The writer stores the key in the transaction of the events.
        self.write(stream, expected, events, Some(key)).await
    }

    async fn key_by_id(&self, key_id: &str) -> Result<Option<[u8; 32]>, StoreError> {
        let key: Option<String> =
            sqlx::query_scalar("SELECT key FROM subject_keys WHERE key_id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error)?;
        key.map(|key| keys::decode(key_id, key_id.to_owned(), &key).map(|k| k.key))
            .transpose()
    }

    async fn keys_by_id(
        &self,
        key_ids: &[String],
    ) -> Result<chatledger_core::store::FoundKeys, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT key_id, key FROM subject_keys WHERE key_id = ANY($1)")
                .bind(key_ids)
                .fetch_all(&self.pool)
                .await
                .map_err(db_error)?;
        keys::found_by_id(key_ids, rows)
    }

    async fn keyed_streams_ending(
        &self,
        suffix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query_as(keys::STREAMS_ENDING)
            .bind(suffix)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn destroy_stream_key(&self, stream: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM subject_keys WHERE stream = $1")
            .bind(stream)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn purge_destroyed_keys(&self) -> Result<(), StoreError> {
        // The deleted rows' old versions stay in the table's pages until vacuumed.
        sqlx::query("VACUUM subject_keys")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}

/// Turns `NOTIFY`s on `channel` into wake-ups for this process's followers, reconnecting
/// with backoff when the connection drops. Every (re)connection also wakes them, because
/// notifications sent while nobody listened are lost.
/// Makes `fresh` the key of `stream` unless it has one, in a transaction of its own, and
/// answers the stream's key. Two processes may make one at once: the first row stays, both
/// use it.
pub(super) async fn store_key(
    pool: &PgPool,
    stream: &str,
    fresh: SubjectKey,
) -> Result<SubjectKey, StoreError> {
    sqlx::query(
        "INSERT INTO subject_keys (stream, key_id, key, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (stream) DO NOTHING",
    )
    .bind(stream)
    .bind(&fresh.key_id)
    .bind(keys::encode(&fresh.key))
    .bind(chatledger_core::canonical::format_recorded_at(Utc::now()))
    .execute(pool)
    .await
    .map_err(db_error)?;
    // A statement of its own: its snapshot sees a key another process committed meanwhile.
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT key_id, key FROM subject_keys WHERE stream = $1")
            .bind(stream)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
    let (key_id, key) =
        row.ok_or_else(|| StoreError::Backend(format!("the key of {stream} was not kept")))?;
    keys::decode(stream, key_id, &key)
}

/// Stores the new keys of a group's appends (inside its transaction), and answers, append by
/// append, whether its stream turned out to have another key (then nothing of it is written).
pub(super) async fn store_group_keys(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    jobs: &[AppendJob],
    keys: &[Option<SubjectKey>],
) -> Result<Vec<bool>, sqlx::Error> {
    let keyed: Vec<(&str, &SubjectKey)> = jobs
        .iter()
        .zip(keys)
        .filter_map(|(job, key)| key.as_ref().map(|key| (job.stream.as_str(), key)))
        .collect();
    if keyed.is_empty() {
        return Ok(vec![false; jobs.len()]);
    }
    let streams: Vec<&str> = keyed.iter().map(|(stream, _)| *stream).collect();
    sqlx::query(
        "INSERT INTO subject_keys (stream, key_id, key, created_at)
         SELECT n.stream, n.key_id, n.key, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS n(stream, key_id, key)
         ON CONFLICT (stream) DO NOTHING",
    )
    .bind(&streams)
    .bind(keyed.iter().map(|(_, key)| key.key_id.as_str()).collect::<Vec<_>>())
    .bind(keyed.iter().map(|(_, key)| keys::encode(&key.key)).collect::<Vec<_>>())
    .bind(chatledger_core::canonical::format_recorded_at(Utc::now()))
    .execute(&mut **tx)
    .await?;
    // One index probe per stream (see LOOKUP_IDS).
    let stored: HashMap<String, String> = sqlx::query_as(
        "SELECT k.stream, k.key_id FROM UNNEST($1::text[]) AS s(stream)
         CROSS JOIN LATERAL (SELECT stream, key_id FROM subject_keys k WHERE k.stream = s.stream LIMIT 1) k",
    )
    .bind(&streams)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    Ok(jobs
        .iter()
        .zip(keys)
        .map(|(job, key)| {
            key.as_ref()
                .is_some_and(|key| stored.get(&job.stream) != Some(&key.key_id))
        })
        .collect())
}
