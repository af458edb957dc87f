//! What a fan-out costs.
//!
//! - `map_10k_in_memory`: a Map state over 10,000 items with `max_concurrency = 100`, each
//!   item a one-step machine whose step is ready at once, history off; items per second.
//!   The allocation profile (`divan::AllocProfiler`) says what a run allocates.
//! - `map_10k_durable_sqlite`: the same machine run by a durable executor on a SQLite file
//!   (each item an execution of its own in the file: created as it starts, and its end
//!   checkpointed; the parent checkpointed before and after its Map state).
//! - `parallel_two_branches` against `two_sequential_steps`: a Parallel state of two
//!   branches whose steps are ready at once, against a machine that takes the same two
//!   steps one after the other; history off, polled with a no-op waker.
//!
//! `cargo bench --bench fan_out`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context as Waker, Poll};

use fsm_core::{Context, Ended, Executor, Fsm, SqliteStore, StepError};
use serde::{Deserialize, Serialize};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

const ITEMS: u32 = 10_000;

#[derive(Fsm, Debug, Clone, Serialize, Deserialize)]
pub enum Item {
    #[fsm(initial, on(work => Done))]
    Todo(u32),
    #[fsm(terminal)]
    Done(u32),
}

#[derive(Fsm, Debug, Clone, Serialize, Deserialize)]
pub enum Batch {
    #[fsm(initial, map(Item, max_concurrency = 100), on(sum => Summed))]
    Open(u32),
    #[fsm(terminal)]
    Summed(u64),
}

#[derive(Fsm, Debug, Clone, Serialize, Deserialize)]
pub enum Pair {
    #[fsm(initial, parallel(left = Item, right = Item), on(join => Joined))]
    Start(u32),
    #[fsm(terminal)]
    Joined(u32),
}

#[derive(Fsm, Debug, Clone, Serialize, Deserialize)]
pub enum Sequence {
    #[fsm(initial, on(first => Middle))]
    Start(u32),
    #[fsm(on(second => Joined))]
    Middle(u32),
    #[fsm(terminal)]
    Joined(u32),
}

pub struct Work;

impl item::Steps for Work {
    async fn todo(
        &self,
        s: item::Machine<item::Todo>,
        _: Context,
    ) -> Result<item::Machine<item::Done>, StepError> {
        Ok(s.work(|item::Todo(n)| item::Done(n + 1)))
    }
}

impl batch::Steps for Work {
    async fn open(
        &self,
        s: &batch::Machine<batch::Open>,
        _: Context,
    ) -> Result<Vec<Item>, StepError> {
        Ok((0..s.0)
            .map(|n| item::Machine::new(item::Todo(n)).into())
            .collect())
    }

    fn join_open(
        &self,
        s: batch::Machine<batch::Open>,
        items: Vec<Ended<Item>>,
    ) -> batch::Machine<batch::Summed> {
        let sum = items
            .iter()
            .map(|e| match e.state() {
                Item::Done(n) | Item::Todo(n) => u64::from(*n),
            })
            .sum();
        s.sum(|_| batch::Summed(sum))
    }
}

impl pair::Steps for Work {
    async fn start(
        &self,
        s: &pair::Machine<pair::Start>,
        _: Context,
    ) -> Result<(Item, Item), StepError> {
        let item = |n| item::Machine::new(item::Todo(n)).into();
        Ok((item(s.0), item(s.0 + 1)))
    }

    fn join_start(
        &self,
        s: pair::Machine<pair::Start>,
        left: Ended<Item>,
        right: Ended<Item>,
    ) -> pair::Machine<pair::Joined> {
        let n = |e: &Ended<Item>| match e.state() {
            Item::Done(n) | Item::Todo(n) => *n,
        };
        let total = n(&left) + n(&right);
        s.join(|_| pair::Joined(total))
    }
}

impl sequence::Steps for Work {
    async fn start(
        &self,
        s: sequence::Machine<sequence::Start>,
        _: Context,
    ) -> Result<sequence::Machine<sequence::Middle>, StepError> {
        Ok(s.first(|sequence::Start(n)| sequence::Middle(n + 1)))
    }

    async fn middle(
        &self,
        s: sequence::Machine<sequence::Middle>,
        _: Context,
    ) -> Result<sequence::Machine<sequence::Joined>, StepError> {
        Ok(s.second(|sequence::Middle(n)| sequence::Joined(n + 1)))
    }
}

/// Polls `future` once with a no-op waker: every step here is ready at once.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Waker::from_waker(std::task::Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

#[divan::bench(sample_count = 20)]
fn map_10k_in_memory(bencher: divan::Bencher) {
    let executor = Executor::<Batch, _>::builder(Work)
        .record_history(false)
        .build();
    bencher
        .counter(divan::counter::ItemsCount::new(ITEMS))
        .bench_local(|| black_box(ready(executor.run(batch::Machine::new(batch::Open(ITEMS))))));
}

#[divan::bench(sample_count = 10, sample_size = 1)]
fn map_10k_durable_sqlite(bencher: divan::Bencher) {
    let dir = std::env::temp_dir().join(format!("fsm-bench-{}-fan-out", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = SqliteStore::open(dir.join("bench.db")).unwrap();
    let ex = {
        let _guard = rt.enter();
        Executor::<Batch, _>::builder(Work).durable(store).unwrap()
    };
    bencher
        .counter(divan::counter::ItemsCount::new(ITEMS))
        .bench_local(|| {
            rt.block_on(async {
                let id = ex
                    .start(batch::Machine::new(batch::Open(ITEMS)))
                    .await
                    .unwrap();
                ex.finished(id).await.unwrap()
            })
        });
}

#[divan::bench]
fn parallel_two_branches(bencher: divan::Bencher) {
    let executor = Executor::<Pair, _>::builder(Work)
        .record_history(false)
        .build();
    bencher
        .bench_local(|| black_box(ready(executor.run(pair::Machine::new(pair::Start(1)))).state));
}

#[divan::bench]
fn two_sequential_steps(bencher: divan::Bencher) {
    let executor = Executor::<Sequence, _>::builder(Work)
        .record_history(false)
        .build();
    bencher.bench_local(|| {
        black_box(ready(executor.run(sequence::Machine::new(sequence::Start(1)))).state)
    });
}

fn main() {
    // The Map sums what every item did: each item ran, once.
    let executor = Executor::<Batch, _>::new(Work);
    let outcome = ready(executor.run(batch::Machine::new(batch::Open(ITEMS))));
    let want: u64 = (1..=u64::from(ITEMS)).sum();
    assert!(
        matches!(outcome.state, Batch::Summed(s) if s == want),
        "{:?}",
        outcome.state
    );
    divan::main();
}
