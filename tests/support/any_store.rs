//! Either durable store behind one type, so that one test body runs on both.

use std::time::Duration;

use fsm_core::store::{
    Checkpoint, ExecutionRecord, ListQuery, Millis, NewExecution, StoredDefinition, StoredEvent,
    TokenAnswer, TokenRecord,
};
use fsm_core::{ExecutionId, PgStore, SqliteStore, Store, StoreError};

/// Either store, so that one test body runs on both.
#[derive(Clone)]
pub enum AnyStore {
    /// The embedded store.
    Sqlite(SqliteStore),
    /// The shared store.
    Postgres(PgStore),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e.await,
            AnyStore::Postgres($s) => $e.await,
        }
    };
}

impl Store for AnyStore {
    async fn create(&self, new: NewExecution) -> Result<fsm_core::store::Created, StoreError> {
        delegate!(self, s => s.create(new))
    }
    async fn checkpoint(&self, cp: Checkpoint) -> Result<u64, StoreError> {
        delegate!(self, s => s.checkpoint(cp))
    }
    async fn amend(&self, cp: Checkpoint) -> Result<u64, StoreError> {
        delegate!(self, s => s.amend(cp))
    }
    async fn stats(
        &self,
        machine: Option<&str>,
        now: Millis,
        oldest: usize,
    ) -> Result<fsm_core::store::Stats, StoreError> {
        delegate!(self, s => s.stats(machine, now, oldest))
    }
    async fn overview(
        &self,
        machine: Option<&str>,
        now: Millis,
        oldest: usize,
    ) -> Result<fsm_core::store::Stats, StoreError> {
        delegate!(self, s => s.overview(machine, now, oldest))
    }
    async fn overdue(
        &self,
        machine: Option<&str>,
        which: fsm_core::store::Overdue,
        examples: usize,
    ) -> Result<fsm_core::store::Found, StoreError> {
        delegate!(self, s => s.overdue(machine, which, examples))
    }
    async fn ended_since(
        &self,
        machine: Option<&str>,
        since: Millis,
    ) -> Result<Vec<fsm_core::store::StateCount>, StoreError> {
        delegate!(self, s => s.ended_since(machine, since))
    }
    async fn register(&self, d: StoredDefinition) -> Result<(), StoreError> {
        delegate!(self, s => s.register(d))
    }
    async fn definitions(
        &self,
        machine: Option<&str>,
    ) -> Result<Vec<StoredDefinition>, StoreError> {
        delegate!(self, s => s.definitions(machine))
    }
    async fn claim(
        &self,
        machine: &str,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<Result<ExecutionRecord, StoreError>>, StoreError> {
        delegate!(self, s => s.claim(machine, owner, now, lease_until, limit))
    }
    async fn next_due(&self, machine: &str) -> Result<Option<Millis>, StoreError> {
        delegate!(self, s => s.next_due(machine))
    }
    async fn due_now(&self, machine: &str, now: Millis) -> Result<bool, StoreError> {
        delegate!(self, s => s.due_now(machine, now))
    }
    async fn get(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, StoreError> {
        delegate!(self, s => s.get(id))
    }
    async fn events(&self, id: ExecutionId) -> Result<Vec<StoredEvent>, StoreError> {
        delegate!(self, s => s.events(id))
    }
    async fn list(&self, q: ListQuery) -> Result<fsm_core::store::Page, StoreError> {
        delegate!(self, s => s.list(q))
    }
    async fn count(&self, q: ListQuery) -> Result<u64, StoreError> {
        delegate!(self, s => s.count(q))
    }
    async fn token(&self, secret: &str) -> Result<Option<TokenRecord>, StoreError> {
        delegate!(self, s => s.token(secret))
    }
    async fn answer_token(&self, a: TokenAnswer) -> Result<bool, StoreError> {
        delegate!(self, s => s.answer_token(a))
    }
    async fn wait_token(
        &self,
        id: ExecutionId,
        step: u32,
        attempt: u32,
    ) -> Result<Option<TokenRecord>, StoreError> {
        delegate!(self, s => s.wait_token(id, step, attempt))
    }
    fn lease(&self) -> Option<Duration> {
        match self {
            AnyStore::Sqlite(s) => s.lease(),
            AnyStore::Postgres(s) => s.lease(),
        }
    }
    async fn renew(
        &self,
        owner: &str,
        executions: &[ExecutionId],
        until: Millis,
    ) -> Result<u64, StoreError> {
        delegate!(self, s => s.renew(owner, executions, until))
    }
    fn work(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            AnyStore::Sqlite(s) => s.work(),
            AnyStore::Postgres(s) => s.work(),
        }
    }
    fn ended(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            AnyStore::Sqlite(s) => s.ended(),
            AnyStore::Postgres(s) => s.ended(),
        }
    }
}
