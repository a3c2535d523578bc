//! The connections of local mode. Every write goes to one writer thread that owns the
//! read-write connection and commits whatever has queued up since its last commit in one
//! transaction (group commit): one `fsync`-free WAL append and one lock hand-off for many
//! callers, where a transaction per call made the callers queue on a mutex. Reads go to a
//! few read-only connections on the same WAL file, so they never wait for the writer, and
//! a checkpointer thread copies the WAL back into the file, so the writer rarely waits for
//! a checkpoint's copying and `fsync`s.

use std::any::Any;
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::{ffi, Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::error::{BackendContext, Error, Result};

/// Most writes one transaction holds. Everything queued is committed together up to this
/// many, so a burst costs few commits while the first caller of a batch waits for at most
/// this many jobs before its answer.
const MAX_BATCH: usize = 256;

/// Read-only connections, each on its own thread. Two match the cores local mode is sized
/// for; reads are short, so more would mostly add idle page caches.
const READERS: usize = 2;

/// How long the checkpointer lets commits gather before copying them into the file: one
/// background checkpoint (and its `fsync`s) per interval at most.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// The WAL size after which the writer finishes a checkpoint itself so that the WAL starts
/// over. The background checkpoints keep what is left for the writer small whatever this
/// is; a larger WAL means fewer such pauses, and that much more disk.
const RESTART_WAL_BYTES: i64 = 8 << 20;

/// A background checkpoint this short had few commits to race with, so the writer's share
/// (what was committed meanwhile) is small. Longer ones are followed by another pass, up to
/// [`MAX_PASSES`]: each copies what came in during the one before, which takes less time.
const SHORT_PASS: Duration = Duration::from_millis(5);
const MAX_PASSES: usize = 4;

type Panic = Box<dyn Any + Send + 'static>;

/// What a caller gets back: its closure's result, or the panic that ended it, to be
/// resumed on the caller's side as if the closure had run there.
enum Outcome<T> {
    Done(rusqlite::Result<T>),
    Panicked(Panic),
}

/// A job's own refusal, carried through the writer as an error so that its savepoint is
/// rolled back.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Refused(Error);

#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error("the database thread has stopped")]
    Stopped,
}

/// Runs `f`, catching a panic so that it cannot take the connection's thread with it.
fn run_caught<T>(f: impl FnOnce() -> rusqlite::Result<T>) -> Outcome<T> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => Outcome::Done(result),
        Err(panic) => Outcome::Panicked(panic),
    }
}

/// The caller's side of a job: its result with `context`, or its panic resumed here.
fn settle<T>(context: &'static str, answer: Option<Outcome<T>>) -> Result<T> {
    match answer {
        Some(Outcome::Done(result)) => result.context(context),
        Some(Outcome::Panicked(panic)) => panic::resume_unwind(panic),
        // The thread went away without answering: it was stopped or died.
        None => Err(Error::backend(context, DbError::Stopped)),
    }
}

/// The same error again, for each job of a batch a commit failure reaches. SQLite's codes
/// are kept; other variants keep their message.
fn copy_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

// ---- the writer -----------------------------------------------------------------------

/// A write queued for the writer thread: run inside the batch's transaction, answered once
/// that transaction has ended.
trait WriteJob: Send {
    /// Runs the job's statements; false if they failed or panicked, so that the writer
    /// rolls back the job's savepoint.
    fn run(&mut self, conn: &Connection) -> bool;

    /// Answers the caller. `failure` is why the batch did not commit, if it did not; a job
    /// that failed on its own is answered with its own error (its work was undone anyway).
    fn answer(self: Box<Self>, failure: Option<&rusqlite::Error>);
}

struct Job<T, F> {
    work: Option<F>,
    outcome: Option<Outcome<T>>,
    reply: oneshot::Sender<Outcome<T>>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> rusqlite::Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let outcome = run_caught(|| work(conn));
        let ok = matches!(outcome, Outcome::Done(Ok(_)));
        self.outcome = Some(outcome);
        ok
    }

    fn answer(self: Box<Self>, failure: Option<&rusqlite::Error>) {
        let Job { outcome, reply, .. } = *self;
        let outcome = match (outcome, failure) {
            (Some(Outcome::Done(Ok(_))), Some(e)) | (None, Some(e)) => {
                Outcome::Done(Err(copy_error(e)))
            }
            (Some(outcome), _) => outcome,
            (None, None) => Outcome::Done(Err(rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_ERROR),
                Some("the write was never run".into()),
            ))),
        };
        // A caller that stopped waiting has nobody left to tell.
        let _ = reply.send(outcome);
    }
}

type BoxedWrite = Box<dyn WriteJob>;

/// Runs a fixed statement of the writer's transaction control.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// Ends the open transaction without keeping anything, and answers its jobs with `e`.
fn abandon(conn: &Connection, open: &mut Vec<BoxedWrite>, e: &rusqlite::Error) {
    if !conn.is_autocommit() {
        if let Err(rollback) = control(conn, "ROLLBACK") {
            tracing::error!(error = %rollback, "cannot roll back a failed write batch");
        }
    }
    for job in open.drain(..) {
        job.answer(Some(e));
    }
}

/// Runs one batch: `BEGIN IMMEDIATE`, each job inside its own savepoint (a failing job
/// undoes only its own work), one `COMMIT`, and only then the answers, so nobody hears
/// "done" about a write that is not durable.
fn run_batch(conn: &Connection, batch: &mut Vec<BoxedWrite>) {
    let mut open: Vec<BoxedWrite> = Vec::with_capacity(batch.len());
    let mut jobs = batch.drain(..);
    while let Some(mut job) = jobs.next() {
        if conn.is_autocommit() {
            if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
                // The file is locked (another process) or broken: no later job of this
                // batch would fare better.
                job.answer(Some(&e));
                jobs.by_ref().for_each(|job| job.answer(Some(&e)));
                return;
            }
        }
        if let Err(e) = control(conn, "SAVEPOINT job") {
            open.push(job);
            abandon(conn, &mut open, &e);
            continue;
        }
        let ok = job.run(conn);
        if conn.is_autocommit() {
            // SQLite ended the transaction itself (an I/O error, a full disk), taking the
            // work of every job before this one with it.
            open.push(job);
            let e = rusqlite::Error::SqliteFailure(
                ffi::Error::new(ffi::SQLITE_ABORT),
                Some("the write batch was rolled back".into()),
            );
            abandon(conn, &mut open, &e);
            continue;
        }
        let ended = if ok {
            control(conn, "RELEASE job")
        } else {
            control(conn, "ROLLBACK TO job").and_then(|()| control(conn, "RELEASE job"))
        };
        open.push(job);
        if let Err(e) = ended {
            abandon(conn, &mut open, &e);
        }
    }
    if open.is_empty() {
        return;
    }
    match control(conn, "COMMIT") {
        Ok(()) => open.drain(..).for_each(|job| job.answer(None)),
        Err(e) => abandon(conn, &mut open, &e),
    }
}

/// What the writer and the checkpointer share.
struct Checkpoints {
    /// Wakes the checkpointer after a commit; holds one wake-up at most.
    wake: mpsc::SyncSender<()>,
    /// Set by the checkpointer when the WAL is long enough to start over, cleared by the
    /// writer once it has copied the rest.
    finish: Arc<AtomicBool>,
}

impl Checkpoints {
    /// Called by the writer between batches. A checkpoint in another connection runs
    /// beside the writer, so the commits made meanwhile are always left over, and SQLite
    /// starts the WAL over only after all of it is in the file. When the WAL has grown
    /// long, the writer copies the short rest itself (retrying after later batches while a
    /// reader still needs old frames), so that its next transaction starts the WAL over;
    /// the bulk was copied and synced in the background.
    fn after_batch(&self, conn: &Connection) {
        if self.finish.load(Ordering::Relaxed) {
            let started = Instant::now();
            match checkpoint(conn) {
                Ok(done) => {
                    if done.complete() {
                        self.finish.store(false, Ordering::Relaxed);
                    }
                    tracing::debug!(
                        frames = done.frames,
                        copied = done.copied,
                        took_us = started.elapsed().as_micros() as u64,
                        "WAL checkpoint by the writer"
                    );
                }
                Err(e) => {
                    self.finish.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "WAL checkpoint failed; the next one retries");
                }
            }
        }
        // A full queue already holds a wake-up; a gone checkpointer leaves the WAL to the
        // checkpoint SQLite makes when the last connection closes.
        let _ = self.wake.try_send(());
    }
}

/// What a checkpoint reports.
#[derive(Debug, Clone, Copy)]
struct Checkpointed {
    /// Another connection was checkpointing, so this one did nothing.
    busy: bool,
    /// Frames in the WAL.
    frames: i64,
    /// Of those, frames now in the database file.
    copied: i64,
}

impl Checkpointed {
    /// Everything is in the file: the next write transaction may start the WAL over.
    fn complete(self) -> bool {
        !self.busy && self.copied >= self.frames
    }
}

/// Runs a passive checkpoint: one that copies what no reader still needs and never waits
/// for another connection (a busy checkpoint copies nothing and reports it).
fn checkpoint(conn: &Connection) -> rusqlite::Result<Checkpointed> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(Checkpointed {
            busy: row.get::<_, i64>(0)? != 0,
            frames: row.get(1)?,
            copied: row.get(2)?,
        })
    })
}

/// The writer thread: waits for a job, takes everything else already queued (up to
/// [`MAX_BATCH`]), runs it as one batch, and repeats until every sender is gone.
fn writer_loop(
    conn: Connection,
    jobs: mpsc::Receiver<BoxedWrite>,
    checkpoints: Option<Checkpoints>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, &mut batch);
        if let Some(checkpoints) = &checkpoints {
            checkpoints.after_batch(&conn);
        }
    }
}

// ---- the checkpointer -----------------------------------------------------------------

/// The checkpointer thread: once the writer reports a commit, waits out
/// [`CHECKPOINT_INTERVAL`] for more, then copies the WAL into the file.
fn checkpointer_loop(conn: Connection, commits: mpsc::Receiver<()>, finish: Arc<AtomicBool>) {
    let restart_frames =
        match conn.pragma_query_value(None, "page_size", |row| row.get::<_, i64>(0)) {
            Ok(page) => RESTART_WAL_BYTES / page.max(512),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the page size; assuming SQLite's default");
                RESTART_WAL_BYTES / 4096
            }
        };
    while commits.recv().is_ok() {
        let until = Instant::now() + CHECKPOINT_INTERVAL;
        loop {
            match commits.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(()) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                // The writer is gone; closing the connection checkpoints what is left.
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        background_checkpoint(&conn, restart_frames, &finish);
    }
}

/// Copies the WAL into the file with passive checkpoints, beside the writer and the readers
/// instead of blocking them, and asks the writer to finish the job once the WAL has passed
/// `restart_frames`.
fn background_checkpoint(conn: &Connection, restart_frames: i64, finish: &AtomicBool) {
    for _ in 0..MAX_PASSES {
        let started = Instant::now();
        let done = match checkpoint(conn) {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; the next one retries");
                return;
            }
        };
        let took = started.elapsed();
        tracing::debug!(
            frames = done.frames,
            copied = done.copied,
            took_us = took.as_micros() as u64,
            "WAL checkpoint"
        );
        if done.frames < restart_frames {
            return;
        }
        if took <= SHORT_PASS {
            break;
        }
    }
    finish.store(true, Ordering::Relaxed);
}

// ---- the readers ----------------------------------------------------------------------

type BoxedRead = Box<dyn FnOnce(&Connection) + Send>;

/// Reader threads sharing one queue: whichever is free takes the next read.
fn reader_loop(conn: Connection, jobs: Arc<Mutex<mpsc::Receiver<BoxedRead>>>) {
    loop {
        let next = {
            let jobs = jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            jobs.recv()
        };
        match next {
            Ok(job) => job(&conn),
            Err(_) => return,
        }
    }
}

/// Opens another connection on the file the writer has in WAL mode.
fn open_beside(
    path: &Path,
    access: OpenFlags,
    configure: fn(&Connection) -> Result<()>,
) -> Result<Connection> {
    let flags = access | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).context("open database connection")?;
    configure(&conn)?;
    Ok(conn)
}

/// Starts a named thread of the pool.
fn spawn(name: String, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(name)
        .spawn(body)
        .context("start database thread")
}

// ---- the handle -----------------------------------------------------------------------

/// A thread of the pool, with the sending end of its queue. Dropping the last [`Db`]
/// closes the queues and waits for the threads, so the file is closed (and its WAL
/// checkpointed) by the time the adapters are gone.
struct Threads {
    writer: Option<mpsc::Sender<BoxedWrite>>,
    readers: Option<mpsc::Sender<BoxedRead>>,
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.readers.take();
        self.writer.take();
        let me = thread::current().id();
        for handle in self.handles.drain(..) {
            if handle.thread().id() != me {
                // A thread that panicked outside a job has already answered nobody;
                // there is nothing more to do with its panic here.
                let _ = handle.join();
            }
        }
    }
}

/// The way to the database shared by the store and the queue: [`Db::write`] for
/// statements that change it, [`Db::read`] for the rest.
#[derive(Clone)]
pub(crate) struct Db {
    threads: Arc<Threads>,
    /// The data file as opened, for [`Db::probe`]; `None` in memory.
    file: Option<Arc<DataFile>>,
}

/// Which file the connections have open. A file removed or replaced under a running
/// process is still read and written through the descriptors SQLite holds, so queries
/// alone would not notice it gone: the probe compares the path's file with this one.
struct DataFile {
    path: PathBuf,
    identity: Option<(u64, u64)>,
}

/// The device and inode of a file, where the platform has them.
fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

impl Db {
    /// Starts the writer on `conn` and, when `wal_path` names the file `conn` has in WAL
    /// mode, [`READERS`] read-only connections and a checkpointer on it (each set up by
    /// `configure`). Without it (an in-memory database, which no other connection can
    /// open) the writer also reads, and checkpoints as SQLite does by default.
    pub(crate) fn start(
        conn: Connection,
        wal_path: Option<&Path>,
        configure: fn(&Connection) -> Result<()>,
    ) -> Result<Self> {
        // Joined in this order on drop: the writer before the checkpointer, which ends
        // when the writer's wake-ups stop.
        let mut handles = Vec::new();
        let mut readers = None;
        let mut checkpoints = None;
        let mut checkpointer_handle = None;
        if let Some(path) = wal_path {
            let (tx, rx) = mpsc::channel::<BoxedRead>();
            let rx = Arc::new(Mutex::new(rx));
            for n in 0..READERS {
                let conn = open_beside(path, OpenFlags::SQLITE_OPEN_READ_ONLY, configure)?;
                let rx = Arc::clone(&rx);
                handles.push(spawn(format!("hookline-db-read-{n}"), move || {
                    reader_loop(conn, rx)
                })?);
            }
            readers = Some(tx);

            let conn = open_beside(path, OpenFlags::SQLITE_OPEN_READ_WRITE, configure)?;
            let (wake, woken) = mpsc::sync_channel::<()>(1);
            let finish = Arc::new(AtomicBool::new(false));
            let asked = Arc::clone(&finish);
            checkpointer_handle = Some(spawn("hookline-db-checkpoint".into(), move || {
                checkpointer_loop(conn, woken, asked)
            })?);
            checkpoints = Some(Checkpoints { wake, finish });
        }
        if checkpoints.is_some() {
            // The checkpointer does it instead, off the writer's path.
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .context("turn off automatic checkpoints")?;
        }
        let (tx, rx) = mpsc::channel::<BoxedWrite>();
        handles.push(spawn("hookline-db-write".into(), move || {
            writer_loop(conn, rx, checkpoints)
        })?);
        handles.extend(checkpointer_handle);
        let file = wal_path.map(|path| {
            Arc::new(DataFile {
                path: path.to_path_buf(),
                identity: std::fs::metadata(path).ok().as_ref().and_then(identity),
            })
        });
        Ok(Db {
            threads: Arc::new(Threads {
                writer: Some(tx),
                readers,
                handles,
            }),
            file,
        })
    }

    /// Checks that the data file is still the one opened, and readable, and that a query
    /// on `table` answers: what a health check asks of the store and the queue.
    pub(crate) async fn probe(&self, table: &'static str) -> Result<()> {
        if let Some(file) = &self.file {
            let path = file.path.display();
            let meta = std::fs::metadata(&file.path)
                .map_err(|e| Error::backend("probe data file", io_error(format!("{path}: {e}"))))?;
            if identity(&meta) != file.identity {
                return Err(Error::backend(
                    "probe data file",
                    io_error(format!("{path} was replaced since it was opened")),
                ));
            }
            std::fs::File::open(&file.path)
                .map_err(|e| Error::backend("probe data file", io_error(format!("{path}: {e}"))))?;
        }
        let sql = match table {
            "queue" => "SELECT COUNT(*) FROM (SELECT 1 FROM queue LIMIT 1)",
            _ => "SELECT COUNT(*) FROM (SELECT 1 FROM tenants LIMIT 1)",
        };
        self.read("probe database", move |conn| {
            conn.prepare_cached(sql)?
                .query_row([], |row| row.get::<_, i64>(0))
        })
        .await?;
        Ok(())
    }

    /// Queues `f` for the writer at once (calls are run in the order they are made) and
    /// resolves once the transaction holding it has committed. `f` runs inside that
    /// transaction and its own savepoint: it must not begin or end transactions itself.
    /// An error from `f` undoes only `f`'s statements; a failed commit fails every write
    /// of the batch; a panic in `f` is resumed in the caller.
    pub(crate) fn write<T, F>(
        &self,
        context: &'static str,
        f: F,
    ) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: BoxedWrite = Box::new(Job {
            work: Some(f),
            outcome: None,
            reply,
        });
        if let Some(writer) = &self.threads.writer {
            // A send fails only once the writer is gone; the dropped reply says so below.
            let _ = writer.send(job);
        }
        async move { settle(context, answer.await.ok()) }
    }

    /// As [`Db::write`], for a job that may refuse with an [`Error`] of the domain (a
    /// conflict, a limit): its statements are undone like a failed job's, and the caller
    /// gets that error as it was made.
    pub(crate) fn write_checked<T, F>(
        &self,
        context: &'static str,
        f: F,
    ) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let written = self.write(context, move |conn| {
            f(conn).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(Refused(e))))
        });
        async move {
            written.await.map_err(|e| match e {
                Error::Backend { context, source } => match source.downcast::<rusqlite::Error>() {
                    Ok(inner) => match *inner {
                        rusqlite::Error::ToSqlConversionFailure(refused) => {
                            match refused.downcast::<Refused>() {
                                Ok(refused) => refused.0,
                                Err(other) => Error::backend(context, other),
                            }
                        }
                        other => Error::backend(context, other),
                    },
                    Err(other) => Error::Backend {
                        context,
                        source: other,
                    },
                },
                other => other,
            })
        }
    }

    /// Runs `f` on a read-only connection. It sees every write whose `write` call has
    /// resolved, since those answer only after their commit.
    pub(crate) fn read<T, F>(
        &self,
        context: &'static str,
        f: F,
    ) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let Some(readers) = &self.threads.readers else {
            return futures::future::Either::Left(self.write(context, f));
        };
        let (reply, answer) = oneshot::channel();
        let job: BoxedRead = Box::new(move |conn: &Connection| {
            let _ = reply.send(run_caught(|| f(conn)));
        });
        let _ = readers.send(job);
        futures::future::Either::Right(async move { settle(context, answer.await.ok()) })
    }
}

fn io_error(message: String) -> std::io::Error {
    std::io::Error::other(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn memory_db() -> Db {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .expect("schema");
        Db::start(conn, None, |_| Ok(())).expect("start")
    }

    /// Holds the writer inside a job until the returned sender is used or dropped, so that
    /// the writes queued meanwhile all land in the next batch.
    fn hold_writer(db: &Db) -> (mpsc::Sender<()>, impl Future<Output = Result<()>>) {
        let (release, held) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        let holding = db.write("hold", move |_| {
            let _ = started_tx.send(());
            let _ = held.recv();
            Ok(())
        });
        started_rx.recv().expect("the writer ran the holding job");
        (release, holding)
    }

    fn insert(db: &Db, n: i64) -> impl Future<Output = Result<()>> {
        db.write("insert", move |conn| {
            conn.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
            Ok(())
        })
    }

    async fn stored(db: &Db) -> Vec<i64> {
        db.read("list", |conn| {
            conn.prepare("SELECT n FROM t ORDER BY n")?
                .query_map([], |row| row.get(0))?
                .collect()
        })
        .await
        .expect("list")
    }

    #[tokio::test]
    async fn a_failing_write_undoes_only_its_own_statements() {
        let db = memory_db();
        let (release, holding) = hold_writer(&db);
        let first = insert(&db, 1);
        // Inserts 2, then fails on a duplicate of 1: its 2 must go, the neighbours stay.
        let failing = db.write("insert twice", |conn| {
            conn.execute("INSERT INTO t (n) VALUES (2)", [])?;
            conn.execute("INSERT INTO t (n) VALUES (1)", [])?;
            Ok(())
        });
        let last = insert(&db, 3);
        release.send(()).expect("release");
        holding.await.expect("hold");
        first.await.expect("first");
        assert!(failing.await.is_err());
        last.await.expect("last");
        assert_eq!(stored(&db).await, vec![1, 3]);
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_write_of_the_batch() {
        let conn = Connection::open_in_memory().expect("open");
        // A deferred foreign key is checked at COMMIT: a violation fails the commit
        // itself, after every statement of the batch has succeeded.
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE t (n INTEGER PRIMARY KEY);
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (
                 parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED
             );",
        )
        .expect("schema");
        let db = Db::start(conn, None, |_| Ok(())).expect("start");
        let (release, holding) = hold_writer(&db);
        let good = insert(&db, 1);
        let orphan = db.write("orphan", |conn| {
            conn.execute("INSERT INTO child (parent) VALUES (42)", [])?;
            Ok(())
        });
        release.send(()).expect("release");
        holding.await.expect("hold");
        let good = good.await.expect_err("the commit failed");
        assert!(good.to_string().contains("FOREIGN KEY"), "{good}");
        orphan.await.expect_err("the commit failed");
        assert!(
            stored(&db).await.is_empty(),
            "nothing of the batch was kept"
        );

        // The writer carries on with the next batch.
        insert(&db, 2).await.expect("insert after");
        assert_eq!(stored(&db).await, vec![2]);
    }

    #[tokio::test]
    async fn a_panicking_write_panics_its_caller_and_spares_its_neighbours() {
        let db = memory_db();
        let (release, holding) = hold_writer(&db);
        let first = insert(&db, 1);
        let panicking = db.write("panic", |conn| -> rusqlite::Result<()> {
            conn.execute("INSERT INTO t (n) VALUES (2)", [])?;
            panic!("a bug in a write");
        });
        let last = insert(&db, 3);
        release.send(()).expect("release");
        holding.await.expect("hold");
        let caught = AssertUnwindSafe(panicking).catch_unwind().await;
        let panic = caught.expect_err("the caller panics");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"a bug in a write"));
        first.await.expect("first");
        last.await.expect("last");
        assert_eq!(stored(&db).await, vec![1, 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_all_commit_to_a_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .expect("schema");
        let db = Db::start(conn, Some(&path), |_| Ok(())).expect("start");
        let tasks: Vec<_> = (0..500).map(|n| tokio::spawn(insert(&db, n))).collect();
        for task in tasks {
            task.await.expect("task").expect("insert");
        }
        let count: i64 = db
            .read("count", |conn| {
                conn.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            })
            .await
            .expect("count");
        assert_eq!(count, 500);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_closes_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .expect("schema");
        let db = Db::start(conn, Some(&path), |_| Ok(())).expect("start");
        insert(&db, 1).await.expect("insert");
        assert!(dir.path().join("t.db-wal").exists());
        drop(db);
        // The last connection to close checkpoints the WAL into the file and removes it.
        assert!(!dir.path().join("t.db-wal").exists());
        let conn = Connection::open(&path).expect("reopen");
        let count: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
            .expect("count");
        assert_eq!(count, 1);
    }

    #[test]
    fn the_writer_finishes_a_background_checkpoint_so_the_wal_starts_over() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).expect("open");
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (n INTEGER PRIMARY KEY, pad BLOB)",
            )
            .expect("schema");
        let add = |n: i64| {
            writer
                .execute("INSERT INTO t VALUES (?1, randomblob(2000))", [n])
                .expect("insert");
        };
        (0..50).for_each(add);
        let background = Connection::open(&path).expect("open");
        let finish = Arc::new(AtomicBool::new(false));
        background_checkpoint(&background, 10, &finish);
        assert!(finish.load(Ordering::Relaxed), "a long WAL asks the writer");

        // A commit the background pass did not see, then the writer's turn.
        add(50);
        let (wake, _woken) = mpsc::sync_channel(1);
        let checkpoints = Checkpoints {
            wake,
            finish: Arc::clone(&finish),
        };
        checkpoints.after_batch(&writer);
        assert!(
            !finish.load(Ordering::Relaxed),
            "the writer copied the rest"
        );

        add(51);
        let after = checkpoint(&background).expect("checkpoint");
        assert!(after.frames < 10, "the WAL started over: {after:?}");
    }

    #[tokio::test]
    async fn read_connections_cannot_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .expect("schema");
        let db = Db::start(conn, Some(&path), |_| Ok(())).expect("start");
        let written = db
            .read("write on a reader", |conn| {
                conn.execute("INSERT INTO t (n) VALUES (1)", [])
            })
            .await;
        assert!(written.is_err());
        insert(&db, 1).await.expect("insert");
        assert_eq!(stored(&db).await, vec![1]);
    }

    #[tokio::test]
    async fn writes_after_the_writer_stopped_fail() {
        let db = memory_db();
        // A panic outside any job would end the writer; dropping its queue does the same.
        let stopped = Db {
            threads: Arc::new(Threads {
                writer: None,
                readers: None,
                handles: Vec::new(),
            }),
            file: None,
        };
        assert!(insert(&stopped, 1).await.is_err());
        insert(&db, 1).await.expect("the real one works");
    }
}
