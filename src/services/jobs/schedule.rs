//! Which queued job runs next: the earliest due, taken user by user, with at most `cap` of one user's jobs
//! running at once. A user with a thousand jobs waiting holds `cap` workers; everyone else's jobs go to the
//! others as soon as they are due, so a big batch never starves a small one.

use std::collections::{BTreeSet, HashMap, HashSet};

use uuid::Uuid;

use crate::domain::credit_book::UnixMillis;
use crate::domain::user::UserId;

/// With due jobs all turned down, look again after this long at the latest.
const TURNED_DOWN_LOOK: UnixMillis = 250;

/// What [`Schedule::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Run(UserId, Uuid),
    /// Nothing is due; the earliest job (of a user under the cap) is due then.
    WaitUntil(Option<UnixMillis>),
}

#[derive(Default)]
pub struct Schedule {
    /// Each user's queued jobs by due time.
    queued: HashMap<UserId, BTreeSet<(UnixMillis, Uuid)>>,
    /// Where a queued job sits, to take it out again (cancelled).
    due: HashMap<Uuid, (UserId, UnixMillis)>,
    /// Users under the cap who have queued jobs, by their earliest due time.
    turns: BTreeSet<(UnixMillis, UserId)>,
    running: HashMap<UserId, usize>,
    running_jobs: HashSet<Uuid>,
    /// Jobs queued again while a worker still held them (a retry racing the worker's finish): due once it is done.
    after_done: HashMap<Uuid, UnixMillis>,
    cap: usize,
}

impl Schedule {
    pub fn new(cap: usize) -> Schedule {
        Schedule { cap: cap.max(1), ..Schedule::default() }
    }

    /// Queues `job`, due at `at` (a job already queued moves to the new time; a running one is queued when its
    /// worker is done with it).
    pub fn push(&mut self, user: UserId, job: Uuid, at: UnixMillis) {
        if self.running_jobs.contains(&job) {
            self.after_done.insert(job, at);
            return;
        }
        self.remove(job);
        self.without_turn(user, |jobs| {
            jobs.insert((at, job));
        });
        self.due.insert(job, (user, at));
    }

    /// Takes a queued job out (cancelled, or run elsewhere). Whether it was queued.
    pub fn remove(&mut self, job: Uuid) -> bool {
        let Some((user, at)) = self.due.remove(&job) else { return false };
        self.without_turn(user, |jobs| {
            jobs.remove(&(at, job));
        });
        true
    }

    /// The next due job at `now`, marked running, or when to look again.
    pub fn pop(&mut self, now: UnixMillis) -> Next {
        self.pop_admitted(now, |_, _| true)
    }

    /// [`Schedule::pop`], passing over users whose earliest due job `admit` turns down for now (it is
    /// asked again at the next pop).
    pub fn pop_admitted(&mut self, now: UnixMillis, admit: impl Fn(UserId, Uuid) -> bool) -> Next {
        let due = self.turns.iter().take_while(|(at, _)| *at <= now);
        let chosen = due.map(|(_, user)| *user).find(|user| {
            let head = self.queued.get(user).and_then(BTreeSet::first);
            head.is_some_and(|(_, job)| admit(*user, *job))
        });
        let Some(user) = chosen else {
            let next = self.turns.iter().map(|(at, _)| *at).find(|at| *at > now);
            // Due jobs all turned down: look again once something changes, or shortly.
            let turned_down = self.turns.first().is_some_and(|(at, _)| *at <= now);
            return Next::WaitUntil(if turned_down {
                Some(next.map_or(now + TURNED_DOWN_LOOK, |at| at.min(now + TURNED_DOWN_LOOK)))
            } else {
                next
            });
        };
        self.take_turn(user);
        let jobs = self.queued.get_mut(&user).expect("a user with a turn has queued jobs");
        let (_, job) = jobs.pop_first().expect("a user with a turn has a queued job");
        if jobs.is_empty() {
            self.queued.remove(&user);
        }
        self.due.remove(&job);
        *self.running.entry(user).or_default() += 1;
        self.running_jobs.insert(job);
        self.give_turn(user);
        Next::Run(user, job)
    }

    /// A job [`Schedule::pop`] handed out is no longer running (finished, requeued or dropped).
    pub fn done(&mut self, user: UserId, job: Uuid) {
        if !self.running_jobs.remove(&job) {
            return;
        }
        if let Some(at) = self.after_done.remove(&job) {
            self.push(user, job, at);
        }
        self.take_turn(user);
        if let Some(running) = self.running.get_mut(&user) {
            *running -= 1;
            if *running == 0 {
                self.running.remove(&user);
            }
        }
        self.give_turn(user);
    }

    pub fn is_running(&self, job: Uuid) -> bool {
        self.running_jobs.contains(&job)
    }

    pub fn running(&self) -> impl Iterator<Item = &Uuid> {
        self.running_jobs.iter()
    }

    pub fn is_queued(&self, job: Uuid) -> bool {
        self.due.contains_key(&job) || self.after_done.contains_key(&job)
    }

    pub fn queued_len(&self) -> usize {
        self.due.len()
    }

    pub fn running_len(&self) -> usize {
        self.running_jobs.len()
    }

    /// Changes `user`'s queued jobs with their turn taken out, then gives the turn back as it now stands.
    fn without_turn(&mut self, user: UserId, change: impl FnOnce(&mut BTreeSet<(UnixMillis, Uuid)>)) {
        self.take_turn(user);
        let jobs = self.queued.entry(user).or_default();
        change(jobs);
        if jobs.is_empty() {
            self.queued.remove(&user);
        }
        self.give_turn(user);
    }

    fn take_turn(&mut self, user: UserId) {
        if let Some(&(at, _)) = self.queued.get(&user).and_then(BTreeSet::first) {
            self.turns.remove(&(at, user));
        }
    }

    fn give_turn(&mut self, user: UserId) {
        let under_cap = self.running.get(&user).copied().unwrap_or(0) < self.cap;
        if let Some(&(at, _)) = self.queued.get(&user).and_then(BTreeSet::first)
            && under_cap
        {
            self.turns.insert((at, user));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u8) -> UserId {
        UserId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02}")).unwrap()
    }

    fn job(n: u32) -> Uuid {
        Uuid::from_u128(u128::from(n))
    }

    #[test]
    fn runs_the_earliest_due_job_and_says_when_the_next_is_due() {
        let mut schedule = Schedule::new(4);
        schedule.push(user(1), job(1), 200);
        schedule.push(user(1), job(2), 100);
        assert_eq!(schedule.pop(50), Next::WaitUntil(Some(100)));
        assert_eq!(schedule.pop(150), Next::Run(user(1), job(2)));
        assert_eq!(schedule.pop(150), Next::WaitUntil(Some(200)));
        assert!(schedule.is_running(job(2)));
        assert_eq!(schedule.pop(250), Next::Run(user(1), job(1)));
        assert_eq!(schedule.pop(250), Next::WaitUntil(None));
    }

    #[test]
    fn a_user_at_the_cap_waits_while_others_run() {
        let mut schedule = Schedule::new(2);
        for n in 0..1_000 {
            schedule.push(user(1), job(n), i64::from(n));
        }
        schedule.push(user(2), job(5_000), 5_000);
        assert_eq!(schedule.pop(10_000), Next::Run(user(1), job(0)));
        assert_eq!(schedule.pop(10_000), Next::Run(user(1), job(1)));
        assert_eq!(schedule.pop(10_000), Next::Run(user(2), job(5_000)), "user 1 is at the cap");
        assert_eq!(schedule.pop(10_000), Next::WaitUntil(None));
        schedule.done(user(1), job(0));
        assert_eq!(schedule.pop(10_000), Next::Run(user(1), job(2)));
        assert_eq!((schedule.queued_len(), schedule.running_len()), (997, 3));
    }

    #[test]
    fn cancelled_and_requeued_jobs_move_and_done_is_idempotent() {
        let mut schedule = Schedule::new(1);
        schedule.push(user(1), job(1), 100);
        schedule.push(user(1), job(2), 150);
        assert!(schedule.remove(job(1)));
        assert!(!schedule.remove(job(1)));
        schedule.push(user(1), job(2), 300);
        assert_eq!(schedule.pop(200), Next::WaitUntil(Some(300)));
        assert_eq!(schedule.pop(300), Next::Run(user(1), job(2)));
        schedule.push(user(1), job(3), 0);
        assert_eq!(schedule.pop(300), Next::WaitUntil(None), "cap of one");
        schedule.done(user(1), job(2));
        schedule.done(user(1), job(2));
        assert_eq!(schedule.pop(300), Next::Run(user(1), job(3)));
        assert_eq!(schedule.running_len(), 1);
    }

    #[test]
    fn a_job_queued_again_while_it_runs_is_due_once_its_worker_is_done() {
        let mut schedule = Schedule::new(4);
        schedule.push(user(1), job(1), 100);
        assert_eq!(schedule.pop(100), Next::Run(user(1), job(1)));
        schedule.push(user(1), job(1), 150);
        assert_eq!(schedule.pop(200), Next::WaitUntil(None), "not twice at once");
        schedule.done(user(1), job(1));
        assert_eq!(schedule.pop(200), Next::Run(user(1), job(1)));
    }

    #[test]
    fn a_user_whose_next_job_is_turned_down_waits_while_the_others_go() {
        let mut schedule = Schedule::new(4);
        schedule.push(user(1), job(1), 100);
        schedule.push(user(1), job(2), 110);
        schedule.push(user(2), job(3), 200);
        let busy_host = |_: UserId, job: Uuid| job != Uuid::from_u128(1);
        assert_eq!(schedule.pop_admitted(300, busy_host), Next::Run(user(2), job(3)));
        assert_eq!(schedule.pop_admitted(300, busy_host), Next::WaitUntil(Some(300 + TURNED_DOWN_LOOK)));
        assert_eq!(schedule.pop_admitted(300, |_, _| true), Next::Run(user(1), job(1)));
    }
}
