//! Stored rows to records, checked the same way whichever store read them: a value that is
//! not what this library writes is [`StoreError::Corrupt`], naming the execution.

use super::{
    ExecutionRecord, ExecutionStatus, ExecutionSummary, Millis, StoreError, StoredEvent,
    TokenRecord, TokenStatus, WaitingFor,
};

/// The columns of an execution's row, in the order [`record`] reads them.
pub(crate) const COLUMNS: &str = "id, machine, fingerprint, state_name, state, status, \
    waiting_for, step, attempt, due_at, error, events, created_at, updated_at, lease_owner, \
    lease_expires, version, name, claims, entered_at, parent";

/// The columns of a summary, in the order [`summary`] reads them.
pub(crate) const SUMMARY_COLUMNS: &str = "id, name, machine, state_name, status, waiting_for, \
    step, attempt, due_at, error, created_at, updated_at, entered_at, parent";
use crate::ExecutionId;

/// A stored row's columns as a store's driver reads them (`None` for NULL); an error is the
/// driver's message. The stores implement it for their rows, and [`record`] and [`token`]
/// check a row the same way whichever store read it.
pub(crate) trait Columns {
    fn text(&self, i: usize) -> Result<Option<String>, String>;
    fn int(&self, i: usize) -> Result<Option<i64>, String>;
}

/// Reads a row's columns, each checked: an error names the execution (when its id reads).
struct Reader<'r, R> {
    r: &'r R,
    id: Option<ExecutionId>,
}

impl<R: Columns> Reader<'_, R> {
    fn corrupt(&self, message: String) -> StoreError {
        StoreError::Corrupt {
            execution: self.id,
            message,
        }
    }

    fn text(&self, i: usize) -> Result<Option<String>, StoreError> {
        self.r.text(i).map_err(|m| self.corrupt(m))
    }

    fn required(&self, i: usize) -> Result<String, StoreError> {
        self.text(i)?
            .ok_or_else(|| self.corrupt(format!("column {i} is NULL")))
    }

    fn millis(&self, i: usize) -> Result<Option<Millis>, StoreError> {
        Ok(self
            .r
            .int(i)
            .map_err(|m| self.corrupt(m))?
            .map(|v| v.max(0) as u64))
    }

    fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.r
            .int(i)
            .map_err(|m| self.corrupt(m))?
            .ok_or_else(|| self.corrupt(format!("column {i} is NULL")))
    }

    fn small(&self, i: usize) -> Result<u32, StoreError> {
        let v = self.int(i)?;
        u32::try_from(v).map_err(|_| self.corrupt(format!("column {i} is {v}")))
    }

    fn id(&self, i: usize) -> Result<Option<ExecutionId>, StoreError> {
        match self.text(i)? {
            None => Ok(None),
            Some(t) => t
                .parse()
                .map(Some)
                .map_err(|_| self.corrupt(format!("column {i} is {t:?}, not an execution id"))),
        }
    }

    fn status(&self, i: usize) -> Result<ExecutionStatus, StoreError> {
        let status = self.required(i)?;
        ExecutionStatus::parse(&status).ok_or_else(|| self.corrupt(format!("status {status:?}")))
    }

    fn waiting_for(&self, i: usize) -> Result<Option<WaitingFor>, StoreError> {
        match self.text(i)? {
            None => Ok(None),
            Some(w) => WaitingFor::parse(&w)
                .map(Some)
                .ok_or_else(|| self.corrupt(format!("waiting_for {w:?}"))),
        }
    }
}

/// The reader of a row whose first column is the execution's id, and the id.
fn reader<R: Columns>(r: &R) -> Result<(Reader<'_, R>, ExecutionId), StoreError> {
    let id_text = r.text(0).ok().flatten().unwrap_or_default();
    let id = id_text.parse::<ExecutionId>().ok();
    let reader = Reader { r, id };
    match id {
        Some(id) => Ok((reader, id)),
        None => Err(reader.corrupt(format!("id {id_text:?}"))),
    }
}

/// An execution's row (columns in [`COLUMNS`] order), or what is wrong with it.
pub(crate) fn record(r: &impl Columns) -> Result<ExecutionRecord, StoreError> {
    let (c, id) = reader(r)?;
    Ok(ExecutionRecord {
        id,
        machine: c.required(1)?,
        fingerprint: c.required(2)?,
        state_name: c.required(3)?,
        state: c.required(4)?,
        status: c.status(5)?,
        waiting_for: c.waiting_for(6)?,
        step: c.small(7)?,
        attempt: c.small(8)?,
        due_at: c.millis(9)?,
        error: c.text(10)?,
        events: c.small(11)?,
        created_at: c.millis(12)?.unwrap_or(0),
        updated_at: c.millis(13)?.unwrap_or(0),
        lease_owner: c.text(14)?,
        lease_expires: c.millis(15)?,
        version: c.int(16)?.max(0) as u64,
        name: c.text(17)?,
        claims: c.small(18)?,
        entered_at: c.millis(19)?.unwrap_or(0),
        parent: c.id(20)?,
    })
}

/// An execution's summary (columns in [`SUMMARY_COLUMNS`] order), or what is wrong with it.
pub(crate) fn summary(r: &impl Columns) -> Result<ExecutionSummary, StoreError> {
    let (c, id) = reader(r)?;
    Ok(ExecutionSummary {
        id,
        name: c.text(1)?,
        machine: c.required(2)?,
        state_name: c.required(3)?,
        status: c.status(4)?,
        waiting_for: c.waiting_for(5)?,
        step: c.small(6)?,
        attempt: c.small(7)?,
        due_at: c.millis(8)?,
        error: c.text(9)?,
        created_at: c.millis(10)?.unwrap_or(0),
        updated_at: c.millis(11)?.unwrap_or(0),
        entered_at: c.millis(12)?.unwrap_or(0),
        parent: c.id(13)?,
    })
}

/// The page a query's rows make: `limit` rows at most, one more read than that tells there
/// is a next page (`limit` 0: every row, one page).
pub(crate) fn page(mut executions: Vec<ExecutionSummary>, limit: usize) -> super::Page {
    let more = limit > 0 && executions.len() > limit;
    executions.truncate(if limit > 0 { limit } else { usize::MAX });
    let next = more
        .then(|| executions.last())
        .flatten()
        .map(|e| super::Cursor {
            created_at: e.created_at,
            id: e.id,
        });
    super::Page { executions, next }
}

/// How a store's SQL says what a list query asks: its parameters (`?n` for SQLite, `$n` for
/// PostgreSQL), a name beginning with a parameter, the state's JSON text holding one, and an id
/// among a JSON array of ids.
pub(crate) struct Dialect {
    pub(crate) param: fn(usize) -> String,
    pub(crate) starts_with: fn(&str) -> String,
    pub(crate) contains: fn(&str) -> String,
    pub(crate) among: fn(&str) -> String,
}

/// The `WHERE` clause of a list query (after `WHERE`), with its parameters as text or
/// integers, numbered as `dialect` says; and the `ORDER BY ... LIMIT` that follows.
pub(crate) fn list_sql(q: &super::ListQuery, dialect: &Dialect) -> (String, Vec<ListArg>) {
    let (filter, args) = list_where(q, dialect);
    let dir = if q.newest_first { "DESC" } else { "ASC" };
    let mut sql = format!("{filter} ORDER BY created_at {dir}, id {dir}");
    if q.limit > 0 {
        sql.push_str(&format!(" LIMIT {}", q.limit.saturating_add(1)));
    }
    (sql, args)
}

/// The `WHERE` clause alone of a list query (its filters and cursor), as [`list_sql`] numbers
/// its parameters.
pub(crate) fn list_where(q: &super::ListQuery, dialect: &Dialect) -> (String, Vec<ListArg>) {
    let param = dialect.param;
    let mut clauses = vec!["1 = 1".to_owned()];
    let mut args = Vec::new();
    let mut push = |clause: &dyn Fn(&str) -> String, arg: ListArg| {
        args.push(arg);
        clauses.push(clause(&param(args.len())));
    };
    if let Some(ids) = &q.ids {
        let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let json = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
        push(&|p| (dialect.among)(p), ListArg::Text(json));
    }
    if let Some(parent) = q.parent {
        push(
            &|p| format!("parent = {p}"),
            ListArg::Text(parent.to_string()),
        );
    }
    if let Some(m) = &q.machine {
        push(&|p| format!("machine = {p}"), ListArg::Text(m.clone()));
    }
    if let Some(s) = q.status {
        push(
            &|p| format!("status = {p}"),
            ListArg::Text(s.as_str().into()),
        );
    }
    if let Some(s) = &q.state {
        push(&|p| format!("state_name = {p}"), ListArg::Text(s.clone()));
    }
    if let Some(n) = &q.name {
        push(&|p| format!("name = {p}"), ListArg::Text(n.clone()));
    }
    if let Some(n) = &q.name_prefix {
        push(&|p| (dialect.starts_with)(p), ListArg::Text(n.clone()));
    }
    if let Some(t) = q.started_after {
        push(&|p| format!("created_at >= {p}"), ListArg::Int(clamp(t)));
    }
    if let Some(t) = q.started_before {
        push(&|p| format!("created_at < {p}"), ListArg::Int(clamp(t)));
    }
    if let Some(text) = &q.data_contains {
        push(&|p| (dialect.contains)(p), ListArg::Text(text.clone()));
    }
    let cmp = if q.newest_first { "<" } else { ">" };
    if let Some(c) = q.after {
        args.push(ListArg::Int(clamp(c.created_at)));
        let at = param(args.len());
        args.push(ListArg::Text(c.id.to_string()));
        let id = param(args.len());
        clauses.push(format!("(created_at, id) {cmp} ({at}, {id})"));
    }
    (clauses.join(" AND "), args)
}

/// A list query's parameter.
pub(crate) enum ListArg {
    Text(String),
    Int(i64),
}

fn clamp(t: Millis) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// A history event's row (`seq, at, kind, state, detail`) of execution `id`, or what is wrong
/// with it.
pub(crate) fn event(r: &impl Columns, id: ExecutionId) -> Result<StoredEvent, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        execution: Some(id),
        message: format!("history: {message}"),
    };
    let int = |i: usize| {
        r.int(i)
            .map_err(corrupt)?
            .ok_or_else(|| corrupt(format!("event column {i} is NULL")))
    };
    let text = |i: usize| {
        r.text(i)
            .map_err(corrupt)?
            .ok_or_else(|| corrupt(format!("event column {i} is NULL")))
    };
    let seq = int(0)?;
    Ok(StoredEvent {
        seq: u32::try_from(seq).map_err(|_| corrupt(format!("event number {seq}")))?,
        at_micros: int(1)?.max(0) as u64,
        kind: text(2)?,
        state: text(3)?,
        detail: text(4)?,
    })
}

/// How a wait's tokens are ordered when one is asked for (`ORDER BY`): the one that decided
/// the wait first (answered, then closed), then open ones. A wait has one token per time its
/// step ran; the first answer or close through any of them decides, and the stores refuse
/// the rest.
pub(crate) const DECISIVE_FIRST: &str = "CASE status WHEN 'completed' THEN 0 WHEN 'failed' THEN 0 \
     WHEN 'open' THEN 2 ELSE 1 END";

/// A token's row (`secret_hash, execution, step, attempt, status, result`), or what is wrong with
/// it.
pub(crate) fn token(r: &impl Columns) -> Result<TokenRecord, StoreError> {
    let execution = r.text(1).ok().flatten().unwrap_or_default();
    let corrupt = |message: String| StoreError::Corrupt {
        execution: execution.parse().ok(),
        message,
    };
    let required = |i: usize| {
        r.text(i)
            .map_err(corrupt)?
            .ok_or_else(|| corrupt(format!("token column {i} is NULL")))
    };
    let small = |i: usize| -> Result<u32, StoreError> {
        let v = r
            .int(i)
            .map_err(corrupt)?
            .ok_or_else(|| corrupt(format!("token column {i} is NULL")))?;
        u32::try_from(v).map_err(|_| corrupt(format!("token column {i} is {v}")))
    };
    let status = required(4)?;
    Ok(TokenRecord {
        secret_hash: required(0)?,
        execution: execution
            .parse()
            .map_err(|_| corrupt(format!("token of execution {execution:?}")))?,
        step: small(2)?,
        attempt: small(3)?,
        status: TokenStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("token status {status:?}")))?,
        result: r.text(5).map_err(corrupt)?,
    })
}

/// The condition (with `{t}` where the rule's time goes, `{now}` for the store's now, and
/// `{m}` for the machine or NULL) and the column to order by of an [`Overdue`] question, and
/// its time. Each begins with `status IN ('running', 'waiting')`, the condition of the
/// `executions_due` partial index, so that the question reads the open executions alone.
///
/// [`Overdue`]: super::Overdue
pub(crate) fn overdue_sql(which: super::Overdue) -> (&'static str, &'static str, Millis) {
    use super::Overdue;
    match which {
        Overdue::Open(t) => (
            "status IN ('running', 'waiting') AND created_at < {t}",
            "created_at",
            t,
        ),
        Overdue::Step(t) => (
            "status IN ('running', 'waiting') \
             AND (status = 'running' OR waiting_for = 'retry') AND entered_at < {t}",
            "entered_at",
            t,
        ),
        Overdue::Wait(t) => (
            "status IN ('running', 'waiting') AND status = 'waiting' \
             AND waiting_for = 'token' AND entered_at < {t}",
            "entered_at",
            t,
        ),
        Overdue::Backlog(t) => (
            "status IN ('running', 'waiting') AND due_at < {t} \
             AND (lease_owner IS NULL OR lease_expires <= {now})",
            "due_at",
            t,
        ),
        Overdue::Lease(t) => (
            "status IN ('running', 'waiting') AND lease_owner IS NOT NULL \
             AND lease_expires < {t}",
            "lease_expires",
            t,
        ),
    }
}

/// The counts of executions that ended since `{since}`, for `{m}` (or every machine).
pub(crate) const ENDED_SINCE: &str = "SELECT machine, state_name, status, count(*) FROM {table} \
    WHERE status NOT IN ('running', 'waiting') AND updated_at >= {since} \
    AND ({m} IS NULL OR machine = {m}) GROUP BY machine, state_name, status";

/// The counts of executions by machine, state and status, for `{m}` (or every machine).
pub(crate) const STATE_COUNTS: &str = "SELECT machine, state_name, status, count(*) FROM {table} \
    WHERE {m} IS NULL OR machine = {m} GROUP BY machine, state_name, status \
    ORDER BY machine, state_name, status";

/// The counts of executions by machine and status (state empty), for `{m}` (or every
/// machine): from the status index alone.
pub(crate) const STATUS_COUNTS: &str = "SELECT machine, '' AS state_name, status, count(*) \
    FROM {table} WHERE {m} IS NULL OR machine = {m} GROUP BY status, machine \
    ORDER BY machine, status";

/// The `{n}` executions of `{m}` (or every machine) waiting for a token the longest.
pub(crate) const OLDEST_WAITS: &str = "SELECT {columns} FROM {table} WHERE status = 'waiting' \
    AND waiting_for = 'token' AND ({m} IS NULL OR machine = {m}) ORDER BY updated_at, id \
    LIMIT {n}";

/// `template` with its table and parameters filled in (`{columns}`: [`SUMMARY_COLUMNS`]).
pub(crate) fn fill(template: &str, table: &str, params: &[(&str, &str)]) -> String {
    let mut sql = template
        .replace("{table}", table)
        .replace("{columns}", SUMMARY_COLUMNS);
    for (name, value) in params {
        sql = sql.replace(name, value);
    }
    sql
}

/// A count of executions by machine, state and status, as a `GROUP BY` reads it.
pub(crate) fn state_count(
    machine: String,
    state: String,
    status: &str,
    count: i64,
) -> Result<super::StateCount, StoreError> {
    Ok(super::StateCount {
        machine,
        state,
        status: ExecutionStatus::parse(status).ok_or_else(|| StoreError::Corrupt {
            execution: None,
            message: format!("status {status:?}"),
        })?,
        count: count.max(0) as u64,
    })
}
