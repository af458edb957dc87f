//! Fan-out and join: the branches of a Parallel state and the items of a Map state, each an
//! execution of a machine of its own, run together inside their parent's step and joined
//! by the parent's join (see `#[fsm(parallel(...))]` and `#[fsm(map(...))]`).
//!
//! A branch runs as the executor runs any execution (`executor::drive`: retries, timeouts,
//! error routes, panic isolation, history), with the parent's handlers and recording and its
//! own machine's declared policies. What the join receives proves that the branch ended:
//! [`Ended`] is made here only, from a branch that reached a success state.

use core::future::Future;
use core::pin::Pin;
use core::task::Poll;
use std::sync::Arc;

use crate::runtime::driver::Driver;
use crate::runtime::executor::{drive, Host, Outcome, Status};
use crate::runtime::policies::{declared, Policy};
use crate::runtime::recorder::Recording;
use crate::runtime::waits::Waits;
#[cfg(feature = "asl")]
use crate::views::asl;
use crate::{Dispatch, EventKind, ExecutionId, FanOut, FanOutKind, Fsm, History, StepError};

/// What a branch's machine must be besides a machine: with fsm-core's `durable` or `asl`
/// feature, `Serialize` and `Deserialize` (a durable parent stores each branch as an
/// execution of its own; an exported one hands it from Task to Task); without them, nothing
/// more. Generated code's bound, implemented for every type that qualifies, never by hand.
#[cfg(any(feature = "durable", feature = "asl"))]
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` runs as a branch, so it must implement `Serialize` and `Deserialize`",
    label = "this machine runs `{Self}` as a branch",
    note = "with fsm-core's `durable` or `asl` feature, a branch's state is serialized (a durable parent stores each branch as an execution of its own; an exported machine hands it from Task to Task): derive `serde::Serialize` and `serde::Deserialize` on `{Self}`"
)]
pub trait BranchData: Sized {
    /// The branch's state as stored (serde JSON).
    fn to_json(&self) -> Result<String, serde_json::Error>;
    /// The branch's state read back.
    fn from_json(json: &str) -> Result<Self, serde_json::Error>;
}

#[cfg(any(feature = "durable", feature = "asl"))]
impl<T: serde::Serialize + serde::de::DeserializeOwned> BranchData for T {
    fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
    fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// What a branch's machine must be besides a machine: with fsm-core's `durable` or `asl`
/// feature, `Serialize` and `Deserialize`; without them, nothing more.
#[cfg(not(any(feature = "durable", feature = "asl")))]
#[doc(hidden)]
pub trait BranchData {}

#[cfg(not(any(feature = "durable", feature = "asl")))]
impl<T> BranchData for T {}

/// Whether the step of the state `state` is in fans out: a Parallel or Map state.
#[cfg(any(feature = "durable", feature = "asl"))]
pub(crate) fn fans_out<M: Fsm>(state: &M) -> bool {
    M::DEFINITION.states[state.state_index()].fan_out.is_some()
}

/// The step adapter of a branch machine, found by name ([`Dispatch::branch_task`]): with the
/// `asl` feature, a function that runs one Task of that machine.
#[cfg(feature = "asl")]
#[doc(hidden)]
pub type BranchTask<H> = for<'a> fn(
    &'a H,
    &'a serde_json::Value,
) -> Pin<
    Box<dyn Future<Output = Result<serde_json::Value, crate::views::TaskFailure>> + Send + 'a>,
>;

/// The step adapter of a branch machine: nothing without the `asl` feature.
#[cfg(not(feature = "asl"))]
#[doc(hidden)]
pub type BranchTask<H> = core::marker::PhantomData<fn(&H)>;

/// The step adapter of branch machine `B`, for [`Dispatch::branch_task`]. Generated code's.
#[doc(hidden)]
pub fn branch_task<B, H>() -> BranchTask<H>
where
    B: Dispatch<H> + Clone + BranchData,
    H: Send + Sync + 'static,
{
    #[cfg(feature = "asl")]
    {
        fn task<'a, B, H>(
            steps: &'a H,
            input: &'a serde_json::Value,
        ) -> Pin<
            Box<
                dyn Future<Output = Result<serde_json::Value, crate::views::TaskFailure>>
                    + Send
                    + 'a,
            >,
        >
        where
            B: Dispatch<H> + Clone + BranchData,
            H: Send + Sync + 'static,
        {
            Box::pin(crate::views::asl::run_task_inner::<B, H>(steps, input))
        }
        task::<B, H>
    }
    #[cfg(not(feature = "asl"))]
    core::marker::PhantomData
}

/// A branch (or a Map's item) that ended in a success state of its machine: what a join
/// receives. Only an ended branch gives one, so a join cannot run before every branch it
/// names has ended.
#[derive(Debug, Clone)]
pub struct Ended<B> {
    id: ExecutionId,
    position: u32,
    state: B,
    history: History,
}

impl<B> Ended<B> {
    /// A branch that ended in `state` (a success state: the caller checked).
    #[cfg(feature = "asl")]
    pub(crate) fn new(id: ExecutionId, position: u32, state: B) -> Self {
        Ended {
            id,
            position,
            state,
            history: History::default(),
        }
    }

    /// The branch's execution.
    pub fn id(&self) -> ExecutionId {
        self.id
    }

    /// The branch's position among the state's branches, or the item's among its items,
    /// from 0.
    pub fn position(&self) -> u32 {
        self.position
    }

    /// The success state the branch ended in.
    pub fn state(&self) -> &B {
        &self.state
    }

    /// The success state the branch ended in, by value.
    pub fn into_state(self) -> B {
        self.state
    }

    /// The branch's own history (empty when histories are not recorded).
    pub fn history(&self) -> &History {
        &self.history
    }
}

impl<B> core::ops::Deref for Ended<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.state
    }
}

/// An item of a Map that failed, which the state tolerated (`tolerated_failures`,
/// `tolerated_percent`): what its join receives in the item's place.
#[derive(Debug, Clone)]
pub struct Failed<B> {
    /// The item's execution.
    pub id: ExecutionId,
    /// The item's position among the items, from 0.
    pub position: u32,
    /// The state it ended in: a failure state of its machine, or the state whose step
    /// failed for good.
    pub state: B,
    /// The error, when a step failed for good (`None`: it ended in a failure state).
    pub error: Option<StepError>,
    /// The item's own history.
    pub history: History,
}

/// How a fan-out failed: the error the state fails with, and the branches that had
/// succeeded (to compensate). Generated code's, not public API.
#[doc(hidden)]
pub struct FanFailure<P> {
    pub error: StepError,
    pub ended: P,
}

/// A branch's run: boxed, so that a machine's future does not contain its branches' (a
/// branch may itself fan out), and a Map's runs are a list. (A durable branch whose write
/// the store failed ends errored, and its parent is interrupted: [`Fan::interrupted`].)
type Run<'a, B> = Pin<Box<dyn Future<Output = Outcome<B>> + Send + 'a>>;

/// Why a fan-out stopped before its join.
enum Stop {
    /// A branch failed (or more items than a Map tolerates): the state fails with this.
    Failed(StepError),
    /// A durable parent's store failed a branch's write: the parent's drive stops without
    /// a checkpoint (the durable executor reads why from its children), and nothing is
    /// cancelled or compensated: the branches go on from their rows when the parent does.
    Interrupted,
}

/// The error a fan-out interrupted by its store fails its step with: never recorded, the
/// durable executor stops the parent instead.
fn interrupted() -> StepError {
    StepError::fatal("interrupted", "the store failed a branch's checkpoint")
}

/// What runs a branch: the parent's handlers and recording, the branch machine's declared
/// policies. Branches do not wait for tokens (the derive refuses a branch machine that
/// does).
struct BranchHost<'a, H> {
    steps: &'a H,
    policies: Policies,
    has_timeouts: bool,
    recording: Recording<'a>,
}

/// A branch machine's policies: its own (a Parallel branch), or shared by every item of a
/// Map (made once, not once per item).
enum Policies {
    Own(Box<[Policy]>),
    Shared(Arc<[Policy]>),
}

impl Policies {
    fn get(&self) -> &[Policy] {
        match self {
            Policies::Own(p) => p,
            Policies::Shared(p) => p,
        }
    }
}

impl<'a, H> BranchHost<'a, H> {
    /// The host of a branch of machine `B`: `shared` policies (a Map's items'), or its own.
    #[inline]
    fn new<B: Fsm>(steps: &'a H, shared: Option<Arc<[Policy]>>, recording: Recording<'a>) -> Self {
        let policies = match shared {
            Some(shared) => Policies::Shared(shared),
            None => Policies::Own(declared(B::DEFINITION).collect()),
        };
        BranchHost {
            steps,
            has_timeouts: policies.get().iter().any(|p| p.timeout.is_some()),
            policies,
            recording,
        }
    }
}

impl<M, H: Sync> Host<M, H> for BranchHost<'_, H> {
    fn steps(&self) -> &H {
        self.steps
    }
    fn policies(&self) -> &[Policy] {
        self.policies.get()
    }
    fn has_timeouts(&self) -> bool {
        self.has_timeouts
    }
    fn recording(&self) -> Recording<'_> {
        self.recording
    }
    fn jitter_seed(&self) -> u64 {
        // Branch ids are hashes of their parent's: jitter differs between branches anyway.
        0
    }
    fn waits(&self) -> Option<&Waits<M>> {
        None
    }
}

/// The fan-out under way in state `index` of the parent: what each branch's events and id
/// need.
struct Fan<'c> {
    state: &'static str,
    fan: &'static FanOut,
    parent: ExecutionId,
    step: u32,
    /// A Map's item machine's policies, made once for all its items (a Parallel state's
    /// branches, of different machines, make their own).
    policies: Option<Arc<[Policy]>>,
    /// Where a durable parent keeps its branches.
    #[cfg(feature = "durable")]
    stored: Option<Stored<'c>>,
    #[cfg(not(feature = "durable"))]
    stored: core::marker::PhantomData<&'c ()>,
}

/// A durable parent's branches: its store, the branches it holds already (of an earlier run
/// of this step), and a Map's item machine's fingerprint, made once.
#[cfg(feature = "durable")]
struct Stored<'c> {
    children: &'c dyn crate::durable::branches::Children,
    existing: std::collections::HashSet<ExecutionId>,
    fingerprint: Option<Arc<str>>,
}

/// The fan-out of a state the derive declared as one; a plain state here is a bug in the
/// generated code, answered with a fan-out of no branches' names.
fn fan_out_of(def: &'static crate::Definition, index: usize) -> (&'static str, &'static FanOut) {
    static NONE: FanOut = FanOut {
        kind: FanOutKind::Parallel,
        branches: &[],
        compensate: false,
    };
    let state = &def.states[index];
    (state.name, state.fan_out.unwrap_or(&NONE))
}

/// The name of branch `position` of `fan`: a Parallel branch's as declared, `item` for a
/// Map's items.
fn branch_name(fan: &FanOut, position: u32) -> &'static str {
    match fan.kind {
        FanOutKind::Parallel => fan
            .branches
            .get(position as usize)
            .map_or("branch", |b| b.name),
        FanOutKind::Map { .. } => "item",
    }
}

impl<'c> Fan<'c> {
    /// Begins the fan-out of state `index`: `None` when a durable parent's store could not
    /// say which branches it holds (the parent is interrupted).
    async fn begin<M: Fsm>(
        driver: &mut Driver<'c, M>,
        index: usize,
        count: usize,
    ) -> Option<Fan<'c>> {
        let (state, fan) = fan_out_of(M::DEFINITION, index);
        let branches = u32::try_from(count).unwrap_or(u32::MAX);
        driver
            .rec
            .event_now(|| EventKind::FanOutStarted { state, branches });
        #[cfg(feature = "durable")]
        let stored = match driver.cold.as_ref().and_then(|c| c.children) {
            None => None,
            Some(children) => match children.existing(driver.id).await {
                Ok(existing) => Some(Stored {
                    children,
                    existing,
                    fingerprint: None,
                }),
                Err(error) => {
                    children.interrupt(error.into());
                    return None;
                }
            },
        };
        #[cfg(not(feature = "durable"))]
        let stored = core::marker::PhantomData;
        Some(Fan {
            state,
            fan,
            parent: driver.id,
            step: driver.step,
            policies: None,
            stored,
        })
    }

    /// A Map's: its items share one copy of their machine's policies (and fingerprint).
    fn for_items<B: Fsm>(mut self) -> Self {
        self.policies = Some(declared(B::DEFINITION).collect());
        #[cfg(feature = "durable")]
        if let Some(stored) = self.stored.as_mut() {
            stored.fingerprint = Some(B::DEFINITION.fingerprint().into());
        }
        self
    }

    fn name(&self, position: u32) -> &'static str {
        branch_name(self.fan, position)
    }

    /// Whether a durable parent's store failed a branch's write (the branch ended errored
    /// for it, not for its step): the fan-out stops, the parent with it.
    fn interrupted(&self) -> bool {
        #[cfg(feature = "durable")]
        return (self.stored.as_ref()).is_some_and(|s| s.children.is_interrupted());
        #[cfg(not(feature = "durable"))]
        false
    }

    /// Starts branch `position` from `start`; a Parallel state's branches are recorded.
    fn start<'a, M: Fsm, B: Dispatch<H> + Clone + BranchData, H: Sync + 'a>(
        &self,
        driver: &mut Driver<'_, M>,
        steps: &'a H,
        position: u32,
        start: B,
    ) -> Run<'a, B>
    where
        'c: 'a,
    {
        let id = self.parent.branch(self.step, position);
        if matches!(self.fan.kind, FanOutKind::Parallel) {
            let (state, branch) = (self.state, self.name(position));
            driver.rec.event_now(|| EventKind::BranchStarted {
                state,
                branch,
                position,
                execution: id,
            });
        }
        // The branch keeps a history of its own when the parent does; the executor's
        // observer (and its metrics) sees the parent's events only, the branch's start and
        // end among them, so that a branch is never counted as an execution of the parent's
        // machine.
        let recording = Recording {
            observer: None,
            ..driver.rec.recording()
        };
        let policies = self.policies.clone();
        #[cfg(feature = "durable")]
        if let Some(stored) = &self.stored {
            return self.start_stored(stored, steps, id, (policies, recording), start);
        }
        Box::pin(async move {
            let host = BranchHost::new::<B>(steps, policies, recording);
            drive(&host, id, start).await
        })
    }

    /// [`Fan::start`] for a durable parent's branch: an execution of its own in the store.
    #[cfg(feature = "durable")]
    #[inline(never)]
    fn start_stored<'a, B: Dispatch<H> + Clone + BranchData, H: Sync + 'a>(
        &self,
        stored: &Stored<'c>,
        steps: &'a H,
        id: ExecutionId,
        (policies, recording): (Option<Arc<[Policy]>>, Recording<'a>),
        start: B,
    ) -> Run<'a, B>
    where
        'c: 'a,
    {
        let child = crate::durable::branches::Child {
            id,
            parent: self.parent,
            stored: stored.existing.contains(&id),
            fingerprint: match &stored.fingerprint {
                Some(f) => Arc::clone(f),
                None => B::DEFINITION.fingerprint().into(),
            },
        };
        let children = stored.children;
        Box::pin(async move {
            let host = BranchHost::new::<B>(steps, policies, recording);
            crate::durable::branches::run(children, &host, child, start).await
        })
    }

    /// Records how branch `position` ended (every Parallel branch; a Map's failed items).
    fn ended<M: Fsm, B: Fsm>(
        &self,
        driver: &mut Driver<'_, M>,
        position: u32,
        outcome: Outcome<B>,
    ) -> Result<Ended<B>, Failed<B>> {
        let (id, end) = (outcome.id, outcome.state.state_name());
        let (state, history) = (outcome.state, outcome.history);
        let ended = match outcome.status {
            Status::Succeeded => Ok(Ended {
                id,
                position,
                state,
                history,
            }),
            status => Err(Failed {
                id,
                position,
                state,
                error: match status {
                    Status::Errored { error, .. } => Some(error),
                    _ => None,
                },
                history,
            }),
        };
        if matches!(self.fan.kind, FanOutKind::Parallel) || ended.is_err() {
            let (state, branch) = (self.state, self.name(position));
            let error = ended.as_ref().err().and_then(|f| f.error.clone());
            let succeeded = ended.is_ok();
            driver.rec.event_now(|| EventKind::BranchEnded {
                state,
                branch,
                position,
                execution: id,
                end,
                succeeded,
                error,
            });
        }
        ended
    }

    /// Records that branch `position` was cancelled (and marks a durable branch's row).
    async fn cancelled<M: Fsm>(&self, driver: &mut Driver<'_, M>, position: u32) {
        let (state, branch) = (self.state, self.name(position));
        let execution = self.parent.branch(self.step, position);
        driver.rec.event_now(|| EventKind::BranchCancelled {
            state,
            branch,
            position,
            execution,
        });
        #[cfg(feature = "durable")]
        if let Some(stored) = &self.stored {
            crate::durable::branches::cancel(stored.children, execution, self.parent).await;
        }
    }

    fn joined<M: Fsm>(&self, driver: &mut Driver<'_, M>, succeeded: usize, failed: usize) {
        let state = self.state;
        let (succeeded, failed) = (succeeded as u32, failed as u32);
        driver.rec.event_now(|| EventKind::FanOutJoined {
            state,
            succeeded,
            failed,
        });
    }

    /// The error of the state when `failure` failed it.
    fn error<B>(&self, failure: &Failed<B>, failed: usize, total: usize) -> StepError {
        let branch = self.name(failure.position);
        let why = match &failure.error {
            Some(error) => format!("errored: {error}"),
            None => "ended in a failure state".to_owned(),
        };
        let message = match self.fan.kind {
            FanOutKind::Parallel => format!(
                "branch `{branch}` (execution {}) {why}",
                failure.id
            ),
            FanOutKind::Map { .. } => format!(
                "{failed} of {total} items failed, more than tolerated; item {} (execution {}) {why}",
                failure.position, failure.id
            ),
        };
        StepError::fatal(StepError::BRANCH_FAILED, message)
    }
}

impl<M: Fsm> Driver<'_, M> {
    /// Records the compensation of branch `position` of the fan-out in state `index` (its
    /// execution `execution`), which `result` says how it went.
    pub fn compensated(
        &mut self,
        index: usize,
        execution: ExecutionId,
        position: u32,
        result: Result<(), StepError>,
    ) {
        let (state, fan) = fan_out_of(M::DEFINITION, index);
        let branch = branch_name(fan, position);
        let error = result.err();
        self.rec.event_now(|| EventKind::BranchCompensated {
            state,
            branch,
            position,
            execution,
            error,
        });
    }
}

/// The branches of a Parallel state, as its step returns them: a tuple of the branch
/// machines' starting states, one per branch in declaration order. Implemented for tuples
/// of up to 8 machines.
#[doc(hidden)]
pub trait Branches<H>: Sized + Send {
    /// What the join receives: each branch's [`Ended`].
    type Ended;
    /// The branches that had succeeded when one failed.
    type Partial;

    /// Runs every branch to its end, together; the first that fails cancels the others.
    fn join<'a, 'd: 'a, M: Fsm + Send>(
        self,
        driver: &'a mut Driver<'d, M>,
        steps: &'a H,
        index: usize,
    ) -> impl Future<Output = Result<Self::Ended, FanFailure<Self::Partial>>> + Send + 'a;
}

macro_rules! branches {
    ($count:literal: $($B:ident $b:tt),+) => {
        impl<H: Sync, $($B: Dispatch<H> + Clone + BranchData),+> Branches<H> for ($($B,)+) {
            type Ended = ($(Ended<$B>,)+);
            type Partial = ($(Option<Ended<$B>>,)+);

            #[allow(non_snake_case)]
            fn join<'a, 'd: 'a, M: Fsm + Send>(
                self,
                driver: &'a mut Driver<'d, M>,
                steps: &'a H,
                index: usize,
            ) -> impl Future<Output = Result<Self::Ended, FanFailure<Self::Partial>>> + Send + 'a {
                async move {
                    let none = || ($(None::<Ended<$B>>,)+);
                    // The step adapter's: the branches run as Step Functions states.
                    #[cfg(feature = "asl")]
                    if let Some(mode) = asl::fan_out_mode(driver) {
                        let (id, step) = (driver.id, driver.step);
                        return match mode {
                            asl::AslFanOut::Join(ends) => (|| {
                                Ok(($(asl::branch_end::<$B>(id, step, $b, ends.get($b))?,)+))
                            })()
                            .map_err(|error| FanFailure { error, ended: none() }),
                            _ => {
                                let starts = (|| {
                                    Ok(vec![$(asl::branch_start(id, step, $b, &self.$b)?,)+])
                                })();
                                let error = asl::started(driver, starts);
                                Err(FanFailure { error, ended: none() })
                            }
                        };
                    }
                    let Some(fan) = Fan::begin(driver, index, $count).await else {
                        return Err(FanFailure { error: interrupted(), ended: none() });
                    };
                    let mut runs = ($(Some(fan.start::<M, $B, H>(driver, steps, $b, self.$b)),)+);
                    let mut ends: Self::Partial = none();
                    let stop = core::future::poll_fn(|cx| {
                        let mut pending = false;
                        $(
                            if let Some(run) = runs.$b.as_mut() {
                                match run.as_mut().poll(cx) {
                                    Poll::Ready(outcome) => {
                                        runs.$b = None;
                                        match fan.ended(driver, $b, outcome) {
                                            Ok(ended) => ends.$b = Some(ended),
                                            Err(_) if fan.interrupted() => {
                                                return Poll::Ready(Some(Stop::Interrupted));
                                            }
                                            Err(failure) => {
                                                let error = fan.error(&failure, 1, $count);
                                                return Poll::Ready(Some(Stop::Failed(error)));
                                            }
                                        }
                                    }
                                    Poll::Pending => pending = true,
                                }
                            }
                        )+
                        if pending { Poll::Pending } else { Poll::Ready(None) }
                    })
                    .await;
                    match stop {
                        None => {}
                        Some(Stop::Interrupted) => {
                            return Err(FanFailure { error: interrupted(), ended: none() });
                        }
                        Some(Stop::Failed(error)) => {
                            $(
                                if runs.$b.take().is_some() {
                                    fan.cancelled(driver, $b).await;
                                }
                            )+
                            return Err(FanFailure { error, ended: ends });
                        }
                    }
                    let ($(Some($B),)+) = ends else {
                        unreachable!("every branch ended")
                    };
                    fan.joined(driver, $count, 0);
                    Ok(($($B,)+))
                }
            }
        }
    };
}

branches!(1: A 0);
branches!(2: A 0, B 1);
branches!(3: A 0, B 1, C 2);
branches!(4: A 0, B 1, C 2, D 3);
branches!(5: A 0, B 1, C 2, D 3, E 4);
branches!(6: A 0, B 1, C 2, D 3, E 4, F 5);
branches!(7: A 0, B 1, C 2, D 3, E 4, F 5, G 6);
branches!(8: A 0, B 1, C 2, D 3, E 4, F 5, G 6, I 7);

/// Runs the branches of the Parallel state `index`. Generated code's.
#[doc(hidden)]
pub fn parallel<'a, 'd: 'a, M: Fsm + Send, H: Sync, T: Branches<H>>(
    driver: &'a mut Driver<'d, M>,
    steps: &'a H,
    index: usize,
    starts: T,
) -> impl Future<Output = Result<T::Ended, FanFailure<T::Partial>>> + Send + use<'a, 'd, M, H, T> {
    starts.join(driver, steps, index)
}

/// What a Map's join receives for each item, in order.
pub type Items<B> = Vec<Result<Ended<B>, Failed<B>>>;

/// Runs one execution of `B` per item of the Map state `index`, at most its
/// `max_concurrency` at once, until all have ended or more have failed than it tolerates
/// (the others are then cancelled). Generated code's.
#[doc(hidden)]
#[allow(clippy::manual_async_fn)]
pub fn map<'a, 'd: 'a, M: Fsm + Send, B: Dispatch<H> + Clone + BranchData, H: Sync>(
    driver: &'a mut Driver<'d, M>,
    steps: &'a H,
    index: usize,
    items: Vec<B>,
) -> impl Future<Output = Result<Items<B>, FanFailure<Vec<Ended<B>>>>> + Send + use<'a, 'd, M, B, H>
{
    async move {
        // The step adapter's: the items run as a Step Functions Map state.
        #[cfg(feature = "asl")]
        if let Some(mode) = asl::fan_out_mode(driver) {
            let (id, step) = (driver.id, driver.step);
            return match mode {
                asl::AslFanOut::Join(ends) => ends
                    .iter()
                    .enumerate()
                    .map(|(i, end)| asl::branch_end::<B>(id, step, i as u32, Some(end)).map(Ok))
                    .collect::<Result<Items<B>, StepError>>()
                    .map_err(|error| FanFailure {
                        error,
                        ended: Vec::new(),
                    }),
                _ => {
                    let starts = (items.iter().enumerate())
                        .map(|(i, item)| asl::branch_start(id, step, i as u32, item))
                        .collect();
                    let error = asl::started(driver, starts);
                    Err(FanFailure {
                        error,
                        ended: Vec::new(),
                    })
                }
            };
        }
        let total = items.len();
        let Some(fan) = Fan::begin(driver, index, total).await else {
            let ended = Vec::new();
            return Err(FanFailure {
                error: interrupted(),
                ended,
            });
        };
        let fan = fan.for_items::<B>();
        let limit = match fan.fan.kind {
            FanOutKind::Map {
                max_concurrency, ..
            } if max_concurrency > 0 => max_concurrency as usize,
            _ => usize::MAX,
        };
        let mut waiting = items.into_iter().enumerate();
        let mut running: Vec<(u32, Run<'a, B>)> = Vec::with_capacity(limit.min(total));
        let mut results: Vec<Option<Result<Ended<B>, Failed<B>>>> =
            (0..total).map(|_| None).collect();
        let mut failed = 0;
        let stop = core::future::poll_fn(|cx| loop {
            while running.len() < limit {
                let Some((position, item)) = waiting.next() else {
                    break;
                };
                let position = position as u32;
                running.push((position, fan.start(driver, steps, position, item)));
            }
            if running.is_empty() {
                return Poll::Ready(None);
            }
            let mut progressed = false;
            let mut i = 0;
            while i < running.len() {
                let outcome = match running[i].1.as_mut().poll(cx) {
                    Poll::Pending => {
                        i += 1;
                        continue;
                    }
                    Poll::Ready(outcome) => outcome,
                };
                let (position, _) = running.swap_remove(i);
                progressed = true;
                let ended = fan.ended(driver, position, outcome);
                if let Err(failure) = &ended {
                    if fan.interrupted() {
                        return Poll::Ready(Some(Stop::Interrupted));
                    }
                    failed += 1;
                    if fan.fan.kind.too_many_failures(failed, total) {
                        let error = fan.error(failure, failed, total);
                        results[position as usize] = Some(ended);
                        return Poll::Ready(Some(Stop::Failed(error)));
                    }
                }
                results[position as usize] = Some(ended);
            }
            if !progressed {
                return Poll::Pending;
            }
        })
        .await;
        if let Some(stop) = stop {
            let Stop::Failed(error) = stop else {
                let ended = Vec::new();
                return Err(FanFailure {
                    error: interrupted(),
                    ended,
                });
            };
            for (position, _) in core::mem::take(&mut running) {
                fan.cancelled(driver, position).await;
            }
            let ended = results
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .collect();
            return Err(FanFailure { error, ended });
        }
        fan.joined(driver, total - failed, failed);
        Ok(results.into_iter().flatten().collect())
    }
}

/// A Map's items for a join that tolerates no failure: every item succeeded.
#[doc(hidden)]
pub fn all_ended<B>(items: Items<B>) -> Vec<Ended<B>> {
    items.into_iter().filter_map(Result::ok).collect()
}
