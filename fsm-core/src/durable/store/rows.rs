//! Stored rows to records, checked the same way whichever store read them: a value that is
//! not what this library writes is [`StoreError::Corrupt`], naming the execution.

use super::{
    ExecutionRecord, ExecutionStatus, Millis, StoreError, StoredEvent, TokenRecord, TokenStatus,
    WaitingFor,
};
use crate::ExecutionId;

/// A stored row's columns as a store's driver reads them (`None` for NULL); an error is the
/// driver's message. The stores implement it for their rows, and [`record`] and [`token`]
/// check a row the same way whichever store read it.
pub(crate) trait Columns {
    fn text(&self, i: usize) -> Result<Option<String>, String>;
    fn int(&self, i: usize) -> Result<Option<i64>, String>;
}

/// An execution's row (columns in the stores' `COLUMNS` order), or what is wrong with it.
pub(crate) fn record(r: &impl Columns) -> Result<ExecutionRecord, StoreError> {
    let id_text = r.text(0).ok().flatten().unwrap_or_default();
    let id = id_text.parse::<ExecutionId>().ok();
    let corrupt = |message: String| StoreError::Corrupt {
        execution: id,
        message,
    };
    let text = |i: usize| r.text(i).map_err(corrupt);
    let required = |i: usize| text(i)?.ok_or_else(|| corrupt(format!("column {i} is NULL")));
    let millis = |i: usize| -> Result<Option<Millis>, StoreError> {
        Ok(r.int(i).map_err(corrupt)?.map(|v| v.max(0) as u64))
    };
    let int = |i: usize| {
        r.int(i)
            .map_err(corrupt)?
            .ok_or_else(|| corrupt(format!("column {i} is NULL")))
    };
    let small = |i: usize| -> Result<u32, StoreError> {
        let v = int(i)?;
        u32::try_from(v).map_err(|_| corrupt(format!("column {i} is {v}")))
    };
    let status = required(5)?;
    Ok(ExecutionRecord {
        id: id.ok_or_else(|| corrupt(format!("id {id_text:?}")))?,
        machine: required(1)?,
        fingerprint: required(2)?,
        state_name: required(3)?,
        state: required(4)?,
        status: ExecutionStatus::parse(&status)
            .ok_or_else(|| corrupt(format!("status {status:?}")))?,
        waiting_for: match text(6)? {
            None => None,
            Some(w) => {
                Some(WaitingFor::parse(&w).ok_or_else(|| corrupt(format!("waiting_for {w:?}")))?)
            }
        },
        step: small(7)?,
        attempt: small(8)?,
        due_at: millis(9)?,
        error: text(10)?,
        events: small(11)?,
        created_at: millis(12)?.unwrap_or(0),
        updated_at: millis(13)?.unwrap_or(0),
        lease_owner: text(14)?,
        lease_expires: millis(15)?,
        version: int(16)?.max(0) as u64,
    })
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
        at: int(1)?.max(0) as u64,
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
