//! Parallel and Map states in memory: the branches run together as executions of their own,
//! the join receives their typed ends, a failing branch fails the state (and is routed or
//! compensated), a Map keeps to its concurrency limit and tolerance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use fsm_core::{Context, EventKind, Executor, Fsm, Status, StepError};

/// One notification: sent, or refused by the mail service.
#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Notify {
    #[fsm(initial, on(send => Sent | Bounced), retry(max_attempts = 1, interval_ms = 1))]
    Pending { to: String, text: String },
    #[fsm(terminal)]
    Sent { to: String, id: u32 },
    #[fsm(terminal(failure))]
    Bounced { to: String },
}

/// An order whose payment was declined: release, then tell customer and support at once.
#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Declined {
    #[fsm(
        initial,
        parallel(customer = Notify, support = Notify, compensate),
        on(release => Released),
        catch(branch_failed => Unreached)
    )]
    Declined { order: u32 },
    #[fsm(terminal)]
    Released { order: u32, receipts: Vec<u32> },
    #[fsm(terminal(failure))]
    Unreached { order: u32 },
}

/// A shipment of several parcels, each labelled by a machine of its own.
#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Parcel {
    #[fsm(initial, on(label => Labelled | Lost))]
    Packed { n: u32 },
    #[fsm(terminal)]
    Labelled { n: u32 },
    #[fsm(terminal(failure))]
    Lost { n: u32 },
}

#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Shipment {
    #[fsm(initial, map(Parcel, max_concurrency = 3), on(ship => Shipped))]
    Packing { parcels: u32 },
    #[fsm(terminal)]
    Shipped { labels: Vec<u32> },
}

#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Tolerant {
    #[fsm(initial, map(Parcel, tolerated_failures = 2), on(ship => Done))]
    Packing { parcels: u32 },
    #[fsm(terminal)]
    Done { labelled: usize, lost: Vec<u32> },
}

#[derive(Default)]
struct Services {
    bounce: Vec<String>,
    lose: Vec<u32>,
    sent: Mutex<Vec<String>>,
    undone: Mutex<Vec<u32>>,
    /// Events in the histories the join received.
    branch_events: AtomicUsize,
    running: AtomicUsize,
    most: AtomicUsize,
    delay: Duration,
}

impl notify::Steps for Services {
    async fn pending(
        &self,
        n: notify::Machine<notify::Pending>,
        _: Context,
    ) -> Result<notify::PendingNext, StepError> {
        tokio::time::sleep(self.delay).await;
        if self.bounce.contains(&n.to) {
            return Ok(n.send(|p| notify::Bounced { to: p.to }).into());
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push(format!("{}: {}", n.to, n.text));
        let id = sent.len() as u32;
        Ok(n.send(|p| notify::Sent { to: p.to, id }).into())
    }
}

impl declined::Steps for Services {
    async fn declined(
        &self,
        d: &declined::Machine<declined::Declined>,
        _: Context,
    ) -> Result<(Notify, Notify), StepError> {
        let text = format!("order {} declined", d.order);
        let to = |who: &str| {
            notify::Machine::new(notify::Pending {
                to: who.into(),
                text: text.clone(),
            })
            .into()
        };
        Ok((to("customer"), to("support")))
    }

    fn join_declined(
        &self,
        d: declined::Machine<declined::Declined>,
        customer: fsm_core::Ended<Notify>,
        support: fsm_core::Ended<Notify>,
    ) -> declined::Machine<declined::Released> {
        let id = |e: &fsm_core::Ended<Notify>| match e.state() {
            Notify::Sent { id, .. } => *id,
            _ => 0,
        };
        let receipts = vec![id(&customer), id(&support)];
        let events = customer.history().len() + support.history().len();
        self.branch_events.fetch_add(events, Ordering::SeqCst);
        d.release(|d| declined::Released {
            order: d.order,
            receipts,
        })
    }

    async fn compensate_declined_customer(
        &self,
        ended: fsm_core::Ended<Notify>,
        _: Context,
    ) -> Result<(), StepError> {
        self.undone.lock().unwrap().push(ended.position());
        Ok(())
    }

    async fn compensate_declined_support(
        &self,
        ended: fsm_core::Ended<Notify>,
        _: Context,
    ) -> Result<(), StepError> {
        self.undone.lock().unwrap().push(ended.position());
        Ok(())
    }

    fn catch_declined_to_unreached(
        &self,
        failed: declined::Declined,
        _: &StepError,
    ) -> declined::Unreached {
        declined::Unreached {
            order: failed.order,
        }
    }
}

impl parcel::Steps for Services {
    async fn packed(
        &self,
        p: parcel::Machine<parcel::Packed>,
        _: Context,
    ) -> Result<parcel::PackedNext, StepError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(if self.lose.contains(&p.n) {
            p.label(|p| parcel::Lost { n: p.n }).into()
        } else {
            p.label(|p| parcel::Labelled { n: p.n }).into()
        })
    }
}

/// Parcels `0..n`, packed: a Map's items.
fn parcels(n: u32) -> Vec<Parcel> {
    (0..n)
        .map(|n| parcel::Machine::new(parcel::Packed { n }).into())
        .collect()
}

impl shipment::Steps for Services {
    async fn packing(
        &self,
        s: &shipment::Machine<shipment::Packing>,
        _: Context,
    ) -> Result<Vec<Parcel>, StepError> {
        Ok(parcels(s.parcels))
    }

    fn join_packing(
        &self,
        s: shipment::Machine<shipment::Packing>,
        items: Vec<fsm_core::Ended<Parcel>>,
    ) -> shipment::Machine<shipment::Shipped> {
        let labels = items
            .iter()
            .map(|e| match e.state() {
                Parcel::Labelled { n } => *n,
                _ => u32::MAX,
            })
            .collect();
        s.ship(|_| shipment::Shipped { labels })
    }
}

impl tolerant::Steps for Services {
    async fn packing(
        &self,
        s: &tolerant::Machine<tolerant::Packing>,
        _: Context,
    ) -> Result<Vec<Parcel>, StepError> {
        Ok(parcels(s.parcels))
    }

    fn join_packing(
        &self,
        s: tolerant::Machine<tolerant::Packing>,
        items: fsm_core::Items<Parcel>,
    ) -> tolerant::Machine<tolerant::Done> {
        let labelled = items.iter().filter(|i| i.is_ok()).count();
        let lost = items
            .iter()
            .filter_map(|i| i.as_ref().err())
            .map(|f| f.position)
            .collect();
        s.ship(|_| tolerant::Done { labelled, lost })
    }
}

fn names(history: &fsm_core::History) -> Vec<&'static str> {
    history.events().iter().map(|e| e.kind.name()).collect()
}

#[tokio::test]
async fn a_parallel_state_joins_every_branch_end() {
    let executor = Executor::<Declined, _>::new(Services::default());
    let start = declined::Machine::new(declined::Declined { order: 7 });
    let outcome = executor.run(start).await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", outcome.history);
    let Declined::Released { order: 7, receipts } = &outcome.state else {
        panic!("{:?}", outcome.state)
    };
    let mut sorted = receipts.clone();
    sorted.sort();
    assert_eq!(sorted, vec![1, 2]);
    let sent = executor.steps().sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert!(sent.contains(&"customer: order 7 declined".to_owned()));
    assert!(sent.contains(&"support: order 7 declined".to_owned()));
    let events = names(&outcome.history);
    for name in [
        "fan-out started",
        "branch started",
        "branch succeeded",
        "fan-out joined",
    ] {
        assert!(events.contains(&name), "{name} in {}", outcome.history);
    }
    // Each branch is an execution of its own, with an id of its own.
    let ids: Vec<_> = outcome
        .history
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BranchStarted { execution, .. } => Some(*execution),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1]);
    // Each branch kept a history of its own (started, step, transition, succeeded).
    assert!(executor.steps().branch_events.load(Ordering::SeqCst) >= 2 * 4);
    assert!(ids.iter().all(|id| *id != outcome.id));
}

#[tokio::test]
async fn a_failed_branch_cancels_compensates_and_routes_the_state() {
    let services = Services {
        bounce: vec!["support".into()],
        delay: Duration::from_millis(5),
        ..Default::default()
    };
    let executor = Executor::<Declined, _>::new(services);
    let outcome = executor
        .run(declined::Machine::new(declined::Declined { order: 8 }))
        .await;
    // The route of `branch_failed` took it to `Unreached`.
    assert_eq!(outcome.state, Declined::Unreached { order: 8 });
    assert_eq!(outcome.status, Status::Failed, "{}", outcome.history);
    let events = names(&outcome.history);
    assert!(events.contains(&"branch failed"), "{}", outcome.history);
    // The customer's branch had succeeded (it is first, and both take as long), or was
    // cancelled; a succeeded one was compensated.
    let compensated = events
        .iter()
        .filter(|e| **e == "branch compensated")
        .count();
    let cancelled = events.iter().filter(|e| **e == "branch cancelled").count();
    assert_eq!(compensated + cancelled, 1, "{}", outcome.history);
    assert_eq!(
        executor.steps().undone.lock().unwrap().len(),
        compensated,
        "{}",
        outcome.history
    );
}

#[tokio::test]
async fn a_map_runs_every_item_within_its_concurrency_and_keeps_their_order() {
    let services = Services {
        delay: Duration::from_millis(2),
        ..Default::default()
    };
    let executor = Executor::<Shipment, _>::new(services);
    let outcome = executor
        .run(shipment::Machine::new(shipment::Packing { parcels: 10 }))
        .await;
    assert_eq!(outcome.status, Status::Succeeded, "{}", outcome.history);
    assert_eq!(
        outcome.state,
        Shipment::Shipped {
            labels: (0..10).collect()
        }
    );
    assert_eq!(executor.steps().most.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_map_fails_past_its_tolerance_and_joins_within_it() {
    let within = Executor::<Tolerant, _>::new(Services {
        lose: vec![2, 5],
        ..Default::default()
    });
    let outcome = within
        .run(tolerant::Machine::new(tolerant::Packing { parcels: 8 }))
        .await;
    assert_eq!(
        outcome.state,
        Tolerant::Done {
            labelled: 6,
            lost: vec![2, 5]
        },
        "{}",
        outcome.history
    );
    let past = Executor::<Tolerant, _>::new(Services {
        lose: vec![1, 2, 5],
        ..Default::default()
    });
    let outcome = past
        .run(tolerant::Machine::new(tolerant::Packing { parcels: 8 }))
        .await;
    match &outcome.status {
        Status::Errored { error, .. } => {
            assert_eq!(error.kind(), StepError::BRANCH_FAILED);
            assert!(error.message().contains("3 of 8 items failed"), "{error}");
        }
        other => panic!("{other:?}: {}", outcome.history),
    }
}

#[tokio::test]
async fn the_observer_sees_the_parent_only_and_branches_keep_their_own_history() {
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let executor = Executor::<Declined, _>::builder(Services::default())
        .observer(move |id, e| log.lock().unwrap().push((id, e.kind.name())))
        .build();
    let outcome = executor
        .run(declined::Machine::new(declined::Declined { order: 9 }))
        .await;
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|(id, _)| *id == outcome.id), "{seen:?}");
    let started = seen
        .iter()
        .filter(|(_, n)| *n == "execution started")
        .count();
    assert_eq!(started, 1, "{seen:?}");
    assert!(seen.iter().any(|(_, n)| *n == "branch succeeded"));
    // The parent's history names both branch executions' ends.
    let branches = outcome
        .history
        .events()
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::BranchEnded {
                    succeeded: true,
                    ..
                }
            )
        })
        .count();
    assert_eq!(branches, 2);
}

/// A durable parent on a SQLite file: each branch is an execution of its own in the file,
/// linked to its parent, with its own history; the parent's stored history reads back with
/// every branch event.
#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Relay {
    #[fsm(initial, parallel(first = Hop, second = Hop), on(join => Relayed))]
    Sent { n: u32 },
    #[fsm(terminal)]
    Relayed { total: u32 },
}

#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Hop {
    #[fsm(initial, on(hop => Hopped))]
    Going(u32),
    #[fsm(terminal)]
    Hopped(u32),
}

struct Hops;

impl hop::Steps for Hops {
    async fn going(
        &self,
        h: hop::Machine<hop::Going>,
        _: Context,
    ) -> Result<hop::Machine<hop::Hopped>, StepError> {
        Ok(h.hop(|hop::Going(n)| hop::Hopped(n + 1)))
    }
}

impl relay::Steps for Hops {
    async fn sent(
        &self,
        s: &relay::Machine<relay::Sent>,
        _: Context,
    ) -> Result<(Hop, Hop), StepError> {
        let hop = |n| hop::Machine::new(hop::Going(n)).into();
        Ok((hop(s.n), hop(s.n * 10)))
    }

    fn join_sent(
        &self,
        s: relay::Machine<relay::Sent>,
        first: fsm_core::Ended<Hop>,
        second: fsm_core::Ended<Hop>,
    ) -> relay::Machine<relay::Relayed> {
        let n = |e: &fsm_core::Ended<Hop>| match e.state() {
            Hop::Hopped(n) | Hop::Going(n) => *n,
        };
        let total = n(&first) + n(&second);
        s.join(|_| relay::Relayed { total })
    }
}

#[tokio::test]
async fn a_durable_parent_stores_its_fan_out_history() {
    let dir = fresh_dir("fsm-fan-out");
    let store = fsm_core::SqliteStore::open(dir.join("relay.db")).unwrap();
    let ex = Executor::<Relay, _>::builder(Hops).durable(store).unwrap();
    let id = ex
        .start(relay::Machine::new(relay::Sent { n: 2 }))
        .await
        .unwrap();
    let row = ex.finished(id).await.unwrap();
    assert_eq!(row.status, fsm_core::ExecutionStatus::Succeeded);
    assert_eq!(
        ex.state(id).await.unwrap(),
        Relay::Relayed { total: 3 + 21 }
    );
    // Read back from the file: the branch events decode against the definition.
    let history = ex.history(id).await.unwrap();
    let ends: Vec<_> = history
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BranchEnded {
                branch,
                end,
                succeeded: true,
                ..
            } => Some((*branch, *end)),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 2, "{history}");
    assert!(ends.contains(&("first", "Hopped")) && ends.contains(&("second", "Hopped")));
    assert!(history.events().iter().any(|e| matches!(
        e.kind,
        EventKind::FanOutJoined {
            succeeded: 2,
            failed: 0,
            ..
        }
    )));
    // The branches, as the store lists them: the parent's two, ended, with the ids its
    // history names.
    let store = ex.store();
    let page = fsm_core::Store::list(store, fsm_core::store::ListQuery::new().parent(id))
        .await
        .unwrap();
    let mut children: Vec<_> = page
        .executions
        .iter()
        .map(|e| {
            (
                e.machine.as_str(),
                e.state_name.as_str(),
                e.status,
                e.parent,
            )
        })
        .collect();
    children.dedup();
    assert_eq!(
        children,
        [(
            "Hop",
            "Hopped",
            fsm_core::ExecutionStatus::Succeeded,
            Some(id)
        )],
        "{page:?}"
    );
    assert_eq!(page.executions.len(), 2);
    for e in &page.executions {
        assert!(history.events().iter().any(|h| matches!(
            h.kind,
            EventKind::BranchStarted { execution, .. } if execution == e.id
        )));
        let row = fsm_core::Store::get(store, e.id).await.unwrap().unwrap();
        assert_eq!(row.due_at, None, "no worker claims a branch on its own");
        let kinds: Vec<String> = fsm_core::Store::events(store, e.id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "execution started",
                "step started",
                "step succeeded",
                "transition",
                "execution succeeded"
            ]
        );
    }
    // The parent is not among another machine's, nor a branch among the parent's machine's.
    let relays = fsm_core::Store::list(store, fsm_core::store::ListQuery::new().machine("Relay"))
        .await
        .unwrap();
    assert_eq!(relays.executions.len(), 1);
    ex.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A branch that fans out itself, whose own step is retried by its machine's policy.
#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Outer {
    #[fsm(initial, map(Inner, compensate), on(done => Finished))]
    Start { n: u32 },
    #[fsm(terminal)]
    Finished { total: u32 },
}

#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Inner {
    #[fsm(initial, parallel(a = Flaky, b = Flaky), on(sum => Summed))]
    Split { n: u32 },
    #[fsm(terminal)]
    Summed { n: u32 },
}

#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Flaky {
    #[fsm(initial, on(go => Went | Broke), retry(max_attempts = 2, interval_ms = 1))]
    Try { n: u32 },
    #[fsm(terminal)]
    Went { n: u32 },
    #[fsm(terminal(failure))]
    Broke { n: u32 },
}

#[derive(Default)]
struct Nested {
    attempts: AtomicUsize,
    /// Items whose second branch breaks.
    broken: Vec<u32>,
    compensated: Mutex<Vec<u32>>,
}

impl flaky::Steps for Nested {
    async fn r#try(
        &self,
        f: flaky::Machine<flaky::Try>,
        cx: Context,
    ) -> Result<flaky::TryNext, StepError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        // Every first attempt fails: the branch machine's own retry policy applies.
        if cx.attempt == 1 {
            return Err(StepError::retryable("busy", "try again"));
        }
        Ok(if self.broken.contains(&(f.n / 100)) && f.n % 2 == 1 {
            f.go(|t| flaky::Broke { n: t.n }).into()
        } else {
            f.go(|t| flaky::Went { n: t.n }).into()
        })
    }
}

impl inner::Steps for Nested {
    async fn split(
        &self,
        s: &inner::Machine<inner::Split>,
        _: Context,
    ) -> Result<(Flaky, Flaky), StepError> {
        let f = |n| flaky::Machine::new(flaky::Try { n }).into();
        Ok((f(s.n * 100), f(s.n * 100 + 1)))
    }

    fn join_split(
        &self,
        s: inner::Machine<inner::Split>,
        a: fsm_core::Ended<Flaky>,
        b: fsm_core::Ended<Flaky>,
    ) -> inner::Machine<inner::Summed> {
        let n = |e: &fsm_core::Ended<Flaky>| match e.state() {
            Flaky::Went { n } | Flaky::Broke { n } | Flaky::Try { n } => *n,
        };
        let total = n(&a) + n(&b);
        s.sum(|_| inner::Summed { n: total })
    }
}

impl outer::Steps for Nested {
    async fn start(
        &self,
        s: &outer::Machine<outer::Start>,
        _: Context,
    ) -> Result<Vec<Inner>, StepError> {
        Ok((1..=s.n)
            .map(|n| inner::Machine::new(inner::Split { n }).into())
            .collect())
    }

    fn join_start(
        &self,
        s: outer::Machine<outer::Start>,
        items: Vec<fsm_core::Ended<Inner>>,
    ) -> outer::Machine<outer::Finished> {
        let total = items
            .iter()
            .map(|e| match e.state() {
                Inner::Summed { n } | Inner::Split { n } => *n,
            })
            .sum();
        s.done(|_| outer::Finished { total })
    }

    async fn compensate_start(
        &self,
        ended: fsm_core::Ended<Inner>,
        _: Context,
    ) -> Result<(), StepError> {
        self.compensated.lock().unwrap().push(ended.position());
        Ok(())
    }
}

#[tokio::test]
async fn branches_fan_out_themselves_and_keep_their_machines_policies() {
    let executor = Executor::<Outer, _>::new(Nested::default());
    let outcome = executor
        .run(outer::Machine::new(outer::Start { n: 3 }))
        .await;
    // Items 1..=3, each the sum of its two branches (n*100 and n*100 + 1).
    let want: u32 = (1..=3).map(|n| 2 * n * 100 + 1).sum();
    assert_eq!(
        outcome.state,
        Outer::Finished { total: want },
        "{}",
        outcome.history
    );
    // Six branches, each failing once then retried by `Flaky`'s own policy.
    assert_eq!(executor.steps().attempts.load(Ordering::SeqCst), 12);
}

#[tokio::test]
async fn a_map_that_fails_compensates_the_items_that_had_succeeded() {
    let executor = Executor::<Outer, _>::new(Nested {
        broken: vec![2],
        ..Default::default()
    });
    let outcome = executor
        .run(outer::Machine::new(outer::Start { n: 3 }))
        .await;
    match &outcome.status {
        Status::Errored { error, .. } => assert_eq!(error.kind(), StepError::BRANCH_FAILED),
        other => panic!("{other:?}: {}", outcome.history),
    }
    // The item of n = 2 (position 1) failed: its second branch broke. Items that had
    // succeeded by then were compensated, each once, and never the failed one.
    let compensated = executor.steps().compensated.lock().unwrap().clone();
    assert!(!compensated.contains(&1), "{compensated:?}");
    let recorded = outcome
        .history
        .events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::BranchCompensated { .. }))
        .count();
    assert_eq!(recorded, compensated.len(), "{}", outcome.history);
}

/// A batch whose items wait for the test's signal: cancelled by an operator while its Map
/// runs.
#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Batch {
    #[fsm(initial, map(Item), on(done => Finished))]
    Running { items: u32 },
    #[fsm(terminal)]
    Finished,
}

#[derive(Fsm, Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Item {
    #[fsm(initial, on(work => Worked))]
    Waiting(u32),
    #[fsm(terminal)]
    Worked(u32),
}

#[derive(Default)]
struct Gate(tokio::sync::Notify);

impl item::Steps for Gate {
    async fn waiting(
        &self,
        i: item::Machine<item::Waiting>,
        _: Context,
    ) -> Result<item::Machine<item::Worked>, StepError> {
        self.0.notified().await;
        Ok(i.work(|item::Waiting(n)| item::Worked(n)))
    }
}

impl batch::Steps for Gate {
    async fn running(
        &self,
        b: &batch::Machine<batch::Running>,
        _: Context,
    ) -> Result<Vec<Item>, StepError> {
        Ok((0..b.items)
            .map(|n| item::Machine::new(item::Waiting(n)).into())
            .collect())
    }

    fn join_running(
        &self,
        b: batch::Machine<batch::Running>,
        _: Vec<fsm_core::Ended<Item>>,
    ) -> batch::Machine<batch::Finished> {
        b.done(|_| batch::Finished)
    }
}

/// An operator cancels a durable parent in the middle of its Map: its branches are cancelled
/// with it, the worker's later writes of them are refused (the items finish, and nothing
/// changes), and a branch itself is not redriven or cancelled on its own.
#[tokio::test]
async fn cancelling_a_durable_parent_cancels_its_branches() {
    use fsm_core::{ExecutionStatus, Operator, OpsError};
    let dir = fresh_dir("fsm-fan-out-cancel");
    let path = dir.join("batch.db");
    let store = fsm_core::SqliteStore::open(&path).unwrap();
    let ex = Executor::<Batch, _>::builder(Gate::default())
        .durable(store)
        .unwrap();
    let id = ex
        .start(batch::Machine::new(batch::Running { items: 3 }))
        .await
        .unwrap();
    let ops = Operator::new(
        fsm_core::SqliteStore::open_client(&path).unwrap(),
        "ops:test",
    );
    let query = fsm_core::store::ListQuery::new().parent(id);
    let branches = loop {
        let page = fsm_core::Store::list(ex.store(), query.clone())
            .await
            .unwrap();
        if page.executions.len() == 3 {
            break page.executions;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let branch = branches[0].id;
    for refused in [ops.cancel(branch).await, ops.redrive(branch).await] {
        assert_eq!(
            refused,
            Err(OpsError::Branch {
                execution: branch,
                parent: id
            })
        );
    }
    ops.cancel(id).await.unwrap();
    ex.steps().0.notify_waiters();
    let row = ex.finished(id).await.unwrap();
    assert_eq!(row.status, ExecutionStatus::Cancelled);
    ex.idle().await;
    for b in &branches {
        let row = fsm_core::Store::get(ex.store(), b.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, ExecutionStatus::Cancelled, "{row:?}");
        assert_eq!(
            row.state_name, "Waiting",
            "the item's late result was refused"
        );
    }
    assert!(ex.problems().is_empty(), "{:?}", ex.problems());
    ex.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A durable parent whose branches fan out themselves: every level is stored, each branch
/// linked to the branch that ran it.
#[tokio::test]
async fn a_durable_branch_that_fans_out_stores_its_own_branches() {
    use fsm_core::store::ListQuery;
    use fsm_core::{ExecutionStatus, Store as _};
    let dir = fresh_dir("fsm-fan-out-nested");
    let store = fsm_core::SqliteStore::open(dir.join("outer.db")).unwrap();
    let ex = Executor::<Outer, _>::builder(Nested::default())
        .durable(store)
        .unwrap();
    let id = ex
        .start(outer::Machine::new(outer::Start { n: 3 }))
        .await
        .unwrap();
    assert_eq!(
        ex.finished(id).await.unwrap().status,
        ExecutionStatus::Succeeded
    );
    let want: u32 = (1..=3).map(|n| 2 * n * 100 + 1).sum();
    assert_eq!(ex.state(id).await.unwrap(), Outer::Finished { total: want });
    let items = ex.store().list(ListQuery::new().parent(id)).await.unwrap();
    assert_eq!(items.executions.len(), 3);
    for item in &items.executions {
        assert_eq!(
            (item.machine.as_str(), item.status),
            ("Inner", ExecutionStatus::Succeeded)
        );
        let branches = ex
            .store()
            .list(ListQuery::new().parent(item.id))
            .await
            .unwrap();
        let ends: Vec<_> = branches
            .executions
            .iter()
            .map(|b| (b.machine.as_str(), b.state_name.as_str(), b.status))
            .collect();
        assert_eq!(
            ends,
            [("Flaky", "Went", ExecutionStatus::Succeeded); 2],
            "the branches of item {}",
            item.id
        );
    }
    ex.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// An empty directory of this test process's own, `<name>-<pid>` in the temporary directory.
fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
