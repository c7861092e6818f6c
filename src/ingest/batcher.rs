//! Group commit for ingest: concurrent requests share one enqueue statement and one commit.
//!
//! Requests queue on a channel. A few committers each take whatever is waiting (up to a cap),
//! enqueue it per workspace in one transaction, commit, and answer every request. Nothing
//! waits on a timer: at low load a request is committed alone at once; under load, requests
//! that arrive while a commit is in flight ride the next one. Each request is answered only
//! after the commit that holds its events, so a 202 always means "durably stored".

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::queue::{self, NewEvent, Stored, Wakeup};

/// Requests per commit at most.
const MAX_REQUESTS: usize = 256;
/// Events per commit at most.
const MAX_EVENTS: usize = 2_000;
/// Concurrent commits. One: requests that arrive during a commit all ride the next one, so
/// batches grow with load. Measured with `deskhook bench --scenario steady`: three committers
/// split the batches three ways and cost twice the CPU per delivery (1.56 ms vs 0.74 ms) for
/// less throughput (1,146/s vs 1,815/s).
const COMMITTERS: usize = 1;

struct Job {
    workspace_id: i64,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Stored>, sqlx::Error>>,
}

/// The shared ingest queue of one instance.
#[derive(Clone)]
pub struct IngestBatcher {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for IngestBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestBatcher").finish_non_exhaustive()
    }
}

impl IngestBatcher {
    /// Starts the committers on `pool`; they wake `wakeup` after each commit.
    pub fn start(pool: &PgPool, wakeup: &Wakeup) -> Self {
        let (jobs, receiver) = mpsc::channel(4 * MAX_REQUESTS);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..COMMITTERS {
            tokio::spawn(commit_loop(pool.clone(), receiver.clone(), wakeup.clone()));
        }
        Self { jobs }
    }

    /// Stores `events` of `workspace_id`; returns once they are committed.
    pub async fn submit(
        &self,
        workspace_id: i64,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Stored>, sqlx::Error> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                workspace_id,
                events,
                reply,
            })
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn commit_loop(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Job>>>, wakeup: Wakeup) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut events = first.events.len();
            let mut batch = vec![first];
            while batch.len() < MAX_REQUESTS && events < MAX_EVENTS {
                match receiver.try_recv() {
                    Ok(job) => {
                        events += job.events.len();
                        batch.push(job);
                    }
                    Err(_) => break,
                }
            }
            batch
        };
        match commit(&pool, &batch).await {
            Ok(results) => {
                wakeup.notify_local();
                for (job, result) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(result));
                }
            }
            // One request's failure must not fail the others: commit them one by one.
            Err(_) if batch.len() > 1 => {
                for job in batch {
                    let result = commit(&pool, std::slice::from_ref(&job))
                        .await
                        .map(|mut r| r.pop().unwrap_or_default());
                    if result.is_ok() {
                        wakeup.notify_local();
                    }
                    let _ = job.reply.send(result);
                }
            }
            Err(error) => {
                if let Some(job) = batch.into_iter().next() {
                    let _ = job.reply.send(Err(error));
                }
            }
        }
    }
}

/// Enqueues every job of the batch in one transaction: one statement per workspace.
///
/// A batch of one workspace is one statement, atomic on its own: it runs outside an explicit
/// transaction, one round trip instead of three (`BEGIN`, the statement, `COMMIT`). At low load
/// nearly every batch is a single request, and per round trip is where PostgreSQL's CPU goes
/// there (docs/performance.md, `latency`).
async fn commit(pool: &PgPool, batch: &[Job]) -> Result<Vec<Vec<Stored>>, sqlx::Error> {
    let mut workspaces: Vec<i64> = batch.iter().map(|job| job.workspace_id).collect();
    workspaces.sort_unstable();
    workspaces.dedup();
    let mut results: Vec<Vec<Stored>> = vec![Vec::new(); batch.len()];
    if let [workspace_id] = workspaces[..] {
        let mut conn = pool.acquire().await?;
        enqueue_workspace(&mut conn, batch, workspace_id, &mut results).await?;
        return Ok(results);
    }
    let mut tx = pool.begin().await?;
    for workspace_id in workspaces {
        enqueue_workspace(&mut tx, batch, workspace_id, &mut results).await?;
    }
    tx.commit().await?;
    Ok(results)
}

/// Enqueues the events of the batch's jobs of `workspace_id` in one statement, and puts each
/// job's share of the answer in its slot of `results`.
async fn enqueue_workspace(
    conn: &mut sqlx::PgConnection,
    batch: &[Job],
    workspace_id: i64,
    results: &mut [Vec<Stored>],
) -> Result<(), sqlx::Error> {
    let members: Vec<usize> = (0..batch.len())
        .filter(|&i| batch[i].workspace_id == workspace_id)
        .collect();
    let events: Vec<NewEvent> = members
        .iter()
        .flat_map(|&i| batch[i].events.iter().cloned())
        .collect();
    let mut stored = queue::enqueue(conn, workspace_id, &events)
        .await?
        .into_iter();
    for &i in &members {
        results[i] = stored.by_ref().take(batch[i].events.len()).collect();
    }
    Ok(())
}
