//! A small blocking connection pool: at most `size` connections, each with its own cache of
//! prepared statements. A connection that broke (server restarted, network) is dropped, not
//! returned, so the next caller connects afresh.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use crate::error::{Result, StoreError};

/// How long a caller waits for a free connection before giving up with a clear error.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(60);

/// One connection and its prepared statements.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: HashMap<String, Statement>,
    /// Set when an error left the connection unusable; it is dropped instead of returned.
    pub(crate) broken: bool,
}

impl Conn {
    fn statement(&mut self, sql: &str) -> std::result::Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        if self.statements.len() > 512 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    /// Runs a query (prepared once per connection).
    pub(crate) fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<Vec<Row>, postgres::Error> {
        let st = self.statement(sql)?;
        let out = self.client.query(&st, params);
        self.note(out)
    }

    /// Runs a statement; the number of rows it touched.
    pub(crate) fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> std::result::Result<u64, postgres::Error> {
        let st = self.statement(sql)?;
        let out = self.client.execute(&st, params);
        self.note(out)
    }

    /// Runs statements without parameters (BEGIN, COMMIT, DDL).
    pub(crate) fn batch(&mut self, sql: &str) -> std::result::Result<(), postgres::Error> {
        let out = self.client.batch_execute(sql);
        self.note(out)
    }

    /// Marks the connection broken on errors that are not the server's answer to a statement.
    fn note<T>(
        &mut self,
        out: std::result::Result<T, postgres::Error>,
    ) -> std::result::Result<T, postgres::Error> {
        if let Err(e) = &out {
            if e.as_db_error().is_none() || e.is_closed() {
                self.broken = true;
            }
        }
        out
    }

    /// Ends a failed transaction; a connection that cannot roll back is not reused.
    pub(crate) fn rollback(&mut self) {
        if self.batch("ROLLBACK").is_err() {
            self.broken = true;
        }
    }
}

/// Runs blocking client code where it may block: the sync `postgres` client drives each
/// call with its own small runtime (`block_on`), which panics on a tokio worker thread. On a
/// multi-thread runtime's worker: `block_in_place`; on a current-thread runtime: a scoped
/// thread; outside any runtime: here.
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        Ok(_) => std::thread::scope(|s| match s.spawn(f).join() {
            Ok(out) => out,
            Err(panicked) => std::panic::resume_unwind(panicked),
        }),
        Err(_) => f(),
    }
}

struct State {
    idle: Vec<Conn>,
    open: usize,
}

/// The pool.
pub(crate) struct Pool {
    config: postgres::Config,
    size: usize,
    state: Mutex<State>,
    freed: Condvar,
}

impl Pool {
    pub(crate) fn new(config: postgres::Config, size: usize) -> Self {
        Pool {
            config,
            size: size.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// Opens a new connection (outside the pool: migrations at open, tests).
    pub(crate) fn connect(&self) -> Result<Conn> {
        let mut client = self.config.connect(NoTls).map_err(|e| {
            StoreError::backend(
                "connecting to PostgreSQL (check [store] url and that the server is running)",
                e,
            )
        })?;
        // The durability contract: COMMIT returns after the commit record is flushed.
        client
            .batch_execute("SET synchronous_commit = on; SET TIME ZONE 'UTC'")
            .map_err(|e| StoreError::backend("configuring a PostgreSQL session", e))?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
            broken: false,
        })
    }

    /// Runs `f` on a connection of the pool (waiting for a free one when all `size` are in
    /// use); the connection goes back afterwards unless it broke. Safe to call from async
    /// code (see [`off_runtime`]).
    pub(crate) fn with<T: Send>(&self, f: impl FnOnce(&mut Conn) -> Result<T> + Send) -> Result<T> {
        off_runtime(|| self.with_here(f))
    }

    /// [`Pool::with`] for a closure that cannot move to another thread (export's sink): on a
    /// current-thread runtime's own thread it would panic, so only the CLI and blocking
    /// threads call it.
    pub(crate) fn with_local<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.with_here(f))
            }
            _ => self.with_here(f),
        }
    }

    fn with_here<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let mut conn = self.checkout()?;
        let out = f(&mut conn);
        self.release(Some(conn));
        out
    }

    fn checkout(&self) -> Result<Conn> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = std::time::Instant::now() + CHECKOUT_TIMEOUT;
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(conn);
            }
            if state.open < self.size {
                state.open += 1;
                drop(state);
                return self.connect().inspect_err(|_| self.release(None));
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(StoreError::Backend(format!(
                    "no PostgreSQL connection free within {} s (all {} in use): raise \
                     [store] pool_size",
                    CHECKOUT_TIMEOUT.as_secs(),
                    self.size
                )));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn release(&self, conn: Option<Conn>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match conn {
            Some(c) if !c.broken && !c.client.is_closed() => state.idle.push(c),
            _ => state.open = state.open.saturating_sub(1),
        }
        drop(state);
        self.freed.notify_one();
    }

    /// Connections open now (idle or in use).
    pub(crate) fn open_connections(&self) -> usize {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).open
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing a client blocks on its runtime: not on an async worker thread.
        let idle =
            std::mem::take(&mut self.state.get_mut().unwrap_or_else(|p| p.into_inner()).idle);
        if !idle.is_empty() {
            off_runtime(move || drop(idle));
        }
    }
}
