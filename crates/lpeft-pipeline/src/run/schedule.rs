//! Which stages start next: a pure decision over the plan's edges and the free capacity, so
//! its invariants (inputs first; at most `per_slot` device stages on one slot; `jobs` for the
//! others) are tested without threads or a store.

/// Where backend-sensitive stages (estimation, fine-tuning: the ones on the device) run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSlots {
    /// The backend string each slot gives the stages it runs (`tch-cuda:0`, `tch-cuda:1`): the
    /// stage's `RunContext::backend`, recorded in its manifest; never part of a key (keys carry
    /// the backend class only).
    pub names: Vec<String>,
    /// At most this many stages on one slot at once; `None`: no limit.
    pub per_slot: Option<usize>,
    /// The devices are the host's CPUs (flex, libtorch CPU), so their stages count against
    /// `jobs` as well; GPU stages count against their slot only.
    pub on_host: bool,
}

impl DeviceSlots {
    /// One slot, the plan's backend: what `execute` uses.
    pub fn single(backend: &str, per_slot: Option<usize>) -> DeviceSlots {
        DeviceSlots {
            names: vec![backend.to_string()],
            per_slot,
            on_host: true,
        }
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    /// Indices of the tasks whose outputs it reads.
    pub deps: Vec<usize>,
    /// Whether it runs on a device slot.
    pub device: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
}

#[derive(Debug)]
pub(crate) struct Scheduler {
    tasks: Vec<Task>,
    state: Vec<State>,
    /// The slot each running device task holds.
    slot_of: Vec<Option<usize>>,
    on_slot: Vec<usize>,
    /// Running tasks that count against `jobs`.
    counted: usize,
    jobs: usize,
    per_slot: usize,
    on_host: bool,
    stopped: bool,
}

impl Scheduler {
    /// `done(i)`: the task needs no run (a hit, or outside `--only`).
    pub fn new(
        tasks: Vec<Task>,
        done: impl Fn(usize) -> bool,
        jobs: usize,
        slots: &DeviceSlots,
    ) -> Scheduler {
        let state = (0..tasks.len())
            .map(|i| if done(i) { State::Done } else { State::Waiting })
            .collect();
        Scheduler {
            slot_of: vec![None; tasks.len()],
            tasks,
            state,
            on_slot: vec![0; slots.names.len().max(1)],
            counted: 0,
            jobs: jobs.max(1),
            per_slot: slots.per_slot.unwrap_or(usize::MAX).max(1),
            on_host: slots.on_host,
            stopped: false,
        }
    }

    fn ready(&self, i: usize) -> bool {
        self.state[i] == State::Waiting
            && self.tasks[i]
                .deps
                .iter()
                .all(|&d| self.state[d] == State::Done)
    }

    fn counts(&self, i: usize) -> bool {
        !self.tasks[i].device || self.on_host
    }

    /// The least busy slot with room, the first of equals.
    fn free_slot(&self) -> Option<usize> {
        (0..self.on_slot.len())
            .filter(|&s| self.on_slot[s] < self.per_slot)
            .min_by_key(|&s| self.on_slot[s])
    }

    /// Marks running, and returns, every task that can start now, in plan order, with the slot
    /// of each device task.
    pub fn start(&mut self) -> Vec<(usize, Option<usize>)> {
        let mut started = Vec::new();
        if self.stopped {
            return started;
        }
        for i in 0..self.tasks.len() {
            if !self.ready(i) || (self.counts(i) && self.counted >= self.jobs) {
                continue;
            }
            let slot = if self.tasks[i].device {
                match self.free_slot() {
                    Some(s) => Some(s),
                    None => continue,
                }
            } else {
                None
            };
            if let Some(s) = slot {
                self.on_slot[s] += 1;
            }
            self.counted += usize::from(self.counts(i));
            self.state[i] = State::Running;
            self.slot_of[i] = slot;
            started.push((i, slot));
        }
        started
    }

    /// Ready device tasks held back only because every slot is full.
    pub fn waiting_for_slot(&self) -> Vec<usize> {
        if self.stopped || self.free_slot().is_some() {
            return vec![];
        }
        (0..self.tasks.len())
            .filter(|&i| self.tasks[i].device && self.ready(i))
            .filter(|&i| !self.counts(i) || self.counted < self.jobs)
            .collect()
    }

    /// A running task finished (published, or failed: then call [`Scheduler::stop`] too).
    pub fn finish(&mut self, i: usize) {
        assert_eq!(self.state[i], State::Running, "task {i} was not running");
        self.state[i] = State::Done;
        if let Some(s) = self.slot_of[i].take() {
            self.on_slot[s] -= 1;
        }
        self.counted -= usize::from(self.counts(i));
    }

    /// Start nothing more (a stage failed); running tasks still finish.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    pub fn running(&self) -> usize {
        self.state.iter().filter(|s| **s == State::Running).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A random DAG: each task depends on some earlier ones.
    fn dag() -> impl Strategy<Value = Vec<Task>> {
        prop::collection::vec(
            (
                any::<bool>(),
                prop::collection::vec(any::<prop::sample::Index>(), 0..3),
            ),
            1..12,
        )
        .prop_map(|spec| {
            spec.iter()
                .enumerate()
                .map(|(i, (device, deps))| {
                    let mut deps: Vec<usize> = if i == 0 {
                        vec![]
                    } else {
                        deps.iter().map(|d| d.index(i)).collect()
                    };
                    deps.sort_unstable();
                    deps.dedup();
                    Task {
                        deps,
                        device: *device,
                    }
                })
                .collect()
        })
    }

    proptest! {
        /// Whatever order running stages finish in: every stage starts after its inputs, no
        /// slot holds more than `per_slot` device stages, `jobs` bounds the others (and the
        /// device stages on the host's CPUs), nothing that could start is held back, and
        /// every stage runs exactly once.
        #[test]
        fn starts_respect_edges_and_capacity(
            tasks in dag(),
            n_slots in 1usize..4,
            per_slot in 1usize..3,
            jobs in 1usize..4,
            on_host in any::<bool>(),
            finish_order in prop::collection::vec(any::<prop::sample::Index>(), 64),
        ) {
            let slots = DeviceSlots {
                names: (0..n_slots).map(|s| format!("fake:{s}")).collect(),
                per_slot: Some(per_slot),
                on_host,
            };
            let n = tasks.len();
            let mut s = Scheduler::new(tasks.clone(), |_| false, jobs, &slots);
            let mut done = vec![false; n];
            let mut started = vec![0usize; n];
            let mut running: Vec<(usize, Option<usize>)> = Vec::new();
            let mut picks = finish_order.iter().cycle();
            loop {
                for (i, slot) in s.start() {
                    prop_assert!(tasks[i].deps.iter().all(|&d| done[d]), "task {i} before its inputs");
                    prop_assert_eq!(slot.is_some(), tasks[i].device);
                    started[i] += 1;
                    running.push((i, slot));
                }
                for slot in 0..n_slots {
                    let on = running.iter().filter(|(_, s)| *s == Some(slot)).count();
                    prop_assert!(on <= per_slot, "slot {slot} runs {on} stages");
                }
                let counted = running.iter().filter(|(i, _)| !tasks[*i].device || on_host).count();
                prop_assert!(counted <= jobs, "{counted} stages against --jobs {jobs}");
                // Greedy: a ready stage waits only for a full resource.
                for i in (0..n).filter(|&i| started[i] == 0 && tasks[i].deps.iter().all(|&d| done[d])) {
                    let jobs_full = (!tasks[i].device || on_host) && counted >= jobs;
                    let slots_full = tasks[i].device
                        && (0..n_slots).all(|sl| running.iter().filter(|(_, s)| *s == Some(sl)).count() >= per_slot);
                    prop_assert!(jobs_full || slots_full, "task {i} could start but waits");
                    if slots_full && !jobs_full {
                        prop_assert!(s.waiting_for_slot().contains(&i));
                    }
                }
                prop_assert_eq!(s.running(), running.len());
                if running.is_empty() {
                    break;
                }
                let k = picks.next().unwrap().index(running.len());
                let (i, _) = running.remove(k);
                s.finish(i);
                done[i] = true;
            }
            prop_assert!(started.iter().all(|&c| c == 1), "{started:?}");
        }
    }

    #[test]
    fn a_stop_starts_nothing_more_and_hits_count_as_done() {
        let tasks = vec![
            Task {
                deps: vec![],
                device: true,
            },
            Task {
                deps: vec![0],
                device: true,
            },
            Task {
                deps: vec![],
                device: false,
            },
        ];
        let slots = DeviceSlots::single("flex", Some(1));
        let mut s = Scheduler::new(tasks.clone(), |i| i == 0, 1, &slots);
        assert_eq!(s.start(), vec![(1, Some(0))], "the hit's dependant starts");
        let mut s = Scheduler::new(tasks, |_| false, 2, &slots);
        assert_eq!(s.start(), vec![(0, Some(0)), (2, None)]);
        s.stop();
        s.finish(0);
        assert!(s.start().is_empty());
        assert_eq!(s.running(), 1);
    }
}
