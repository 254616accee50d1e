//! Several queries in flight on one [`Searcher`]: the scheduling loop that `search_batch`
//! and the server's workers (`serve::pool`) share.
//!
//! [`Inflight::run`] keeps up to `slots` queries in progress on one searcher and repeats,
//! until its [`Jobs`] have no more and nothing is in flight:
//!
//! 1. resume every parked query whose read has completed ([`Searcher::is_ready`], which does
//!    not block), oldest first: it reranks and either finishes or parks on its next round;
//! 2. start new queries in the free slots ([`Jobs::next`]): each runs its CPU phases
//!    (prepare, route, PQ scan) and parks on its first batch of reads;
//! 3. when neither step did anything, every slot waits for the device: block on the oldest
//!    parked query's read ([`Searcher::resume`]) — a thread sleeps only when none of its
//!    queries can progress.
//!
//! With one slot this is the plain one-query-at-a-time loop. Every decision of a query depends
//! only on its own state, so answers do not depend on the interleaving.
//!
//! What a job is, where jobs come from and where answers go is the caller's ([`Jobs`]): the
//! batch takes query indexes from a counter shared by its workers; the server takes jobs from
//! its queue, runs exact queries on the spot ([`Next::Handled`]) and catches a panic in every
//! step: a step that fails ([`Jobs::step`] returns `Err`) ends its job ([`Jobs::fail`]), the
//! searcher (which may have stopped half-way through its bookkeeping) is replaced, and the
//! other queries in flight go back to the jobs to be started again ([`Jobs::restart`]).

use std::collections::VecDeque;

use super::query::QueryStep;
use super::{Index, QueryStats, SearchError, Searcher};
use crate::neighbor::Neighbor;

/// What [`Jobs::next`] gives the loop for a free slot.
pub(crate) enum Next<J> {
    /// A query to start in the slot.
    Start(J),
    /// A job was taken and dealt with without a slot (dropped, or run on the spot): progress;
    /// the loop asks again.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    Handled,
    /// Nothing to start now; the loop asks again once the queries in flight have moved.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    Later,
    /// No job now and none to come: the loop returns once nothing is in flight.
    End,
}

/// Whether a step starts a query or resumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// [`Searcher::start`].
    Start,
    /// [`Searcher::resume`].
    Resume,
}

/// The caller's side of [`Inflight::run`]: where jobs come from, how a step runs, where
/// answers go.
pub(crate) trait Jobs {
    /// One query and what its answer needs (its index, its reply channel, …).
    type Job;
    /// Why a step gave no answer (a caught panic); `Infallible` when steps cannot fail.
    type Failure;

    /// The next job for a free slot; `idle` when no query is in flight (the source may then
    /// block until a job comes).
    fn next(&mut self, idle: bool) -> Next<Self::Job>;

    /// One step of `job`'s query in `slot`: [`Searcher::start`] for [`Step::Start`],
    /// [`Searcher::resume`] for [`Step::Resume`].
    fn step(
        &mut self,
        searcher: &mut Searcher<'_>,
        slot: usize,
        job: &Self::Job,
        step: Step,
    ) -> Result<QueryStep, Self::Failure>;

    /// `job`'s query is over: its answer or its error.
    fn finish(&mut self, job: Self::Job, result: Result<(Vec<Neighbor>, QueryStats), SearchError>);

    /// A step of `job` failed; the loop replaces the searcher next.
    fn fail(&mut self, job: Self::Job, failure: Self::Failure);

    /// `job` was in flight in a searcher replaced after another job failed: start it again
    /// (from [`Jobs::next`]); its answer will be the same.
    fn restart(&mut self, job: Self::Job);
}

/// One searcher with `slots` queries in flight and the loop that drives them (module docs).
pub(crate) struct Inflight<'a, J> {
    index: &'a Index,
    slots: usize,
    searcher: Searcher<'a>,
    /// Free slots, the lowest on top.
    free: Vec<usize>,
    /// (slot, job) of the parked queries, oldest park first.
    parked: VecDeque<(usize, J)>,
}

impl<'a, J> Inflight<'a, J> {
    /// A searcher of `slots` (at least 1) slots on `index`, all free.
    pub(crate) fn new(index: &'a Index, slots: usize) -> Self {
        let slots = slots.max(1);
        Self {
            index,
            slots,
            searcher: Searcher::with_slots(index, slots),
            free: (0..slots).rev().collect(),
            parked: VecDeque::with_capacity(slots),
        }
    }

    /// Runs `jobs` until [`Jobs::next`] says [`Next::End`] with nothing in flight.
    pub(crate) fn run<S: Jobs<Job = J>>(&mut self, jobs: &mut S) {
        loop {
            let mut progressed = false;
            // 1. Resume the queries whose reads have completed.
            let mut i = 0;
            while i < self.parked.len() {
                if !self.searcher.is_ready(self.parked[i].0) {
                    i += 1;
                    continue;
                }
                progressed = true;
                if let Some((slot, job)) = self.parked.remove(i) {
                    self.step(jobs, slot, job, Step::Resume);
                }
            }
            // 2. Start new queries in the free slots.
            let mut ended = false;
            while let Some(&slot) = self.free.last() {
                match jobs.next(self.parked.is_empty()) {
                    Next::Start(job) => {
                        progressed = true;
                        self.free.pop();
                        self.step(jobs, slot, job, Step::Start);
                    }
                    Next::Handled => progressed = true,
                    Next::Later => break,
                    Next::End => {
                        ended = true;
                        break;
                    }
                }
            }
            if ended && self.parked.is_empty() {
                return;
            }
            // 3. Nothing can progress without the device: wait on the oldest read.
            if !progressed && let Some((slot, job)) = self.parked.pop_front() {
                self.step(jobs, slot, job, Step::Resume);
            }
        }
    }

    /// Starts or resumes `job`'s query in `slot`; parks it again or hands its answer over.
    fn step<S: Jobs<Job = J>>(&mut self, jobs: &mut S, slot: usize, job: J, step: Step) {
        match jobs.step(&mut self.searcher, slot, &job, step) {
            Ok(QueryStep::Parked) => self.parked.push_back((slot, job)),
            Ok(QueryStep::Done(r)) => {
                self.free.push(slot);
                jobs.finish(job, r);
            }
            Err(failure) => {
                jobs.fail(job, failure);
                // The searcher may have stopped half-way through a query's bookkeeping:
                // replace it (dropping it waits for its reads in flight) and start its other
                // queries again from the beginning.
                self.searcher = Searcher::with_slots(self.index, self.slots);
                self.free = (0..self.slots).rev().collect();
                for (_, job) in std::mem::take(&mut self.parked) {
                    jobs.restart(job);
                }
            }
        }
    }
}
