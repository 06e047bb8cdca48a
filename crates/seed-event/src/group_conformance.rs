//! The work-group cases of the conformance suite: every promise of
//! [`GroupBackend`](crate::GroupBackend), checked against any store that has
//! groups. A store's tests expand them with
//! [`group_conformance_tests!`](crate::group_conformance_tests) over the
//! same [`Harness`] as the event cases.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::conformance::{event, numbers, topic, Harness, DEADLINE};
use crate::{
    join_group, ConsumerName, Delivery, ErrorKind, EventStore, GroupConfig, GroupMember,
    GroupOrdering, LockRequest, Query, Start, Topic, TopicPattern,
};

/// Expands to one `#[test]` per group case; `$harness` is an expression that
/// returns a fresh [`Harness`] each time it is evaluated.
#[macro_export]
macro_rules! group_conformance_tests {
    ($harness:expr) => {
        $crate::group_conformance_tests!(@cases $harness;
            group_each_event_goes_to_one_member, group_members_racing_share_without_duplicates,
            group_acks_nacks_and_backoff, group_ack_wait_and_in_progress,
            group_dead_letters_after_max_deliveries, group_per_topic_order,
            group_member_leaving_hands_its_events_over, group_survives_a_restart,
            group_start_and_checks, group_fetch_waits_and_is_interrupted,
            group_delete_needs_every_member_gone, group_dead_letters_once_among_racing_members,
            group_a_late_ack_counts_until_the_event_is_taken_back,
            group_takes_a_new_topic_from_its_first_event,
            group_released_deliveries_go_to_others_uncounted,
            group_exclusive_has_one_active_member, group_starts_after_given_positions
        );
    };
    (@cases $harness:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let harness = $harness;
                $crate::group_conformance::$case(&harness);
            }
        )*
    };
}

/// The group `name` over `pattern`, from the beginning.
pub fn group(name: &str, pattern: &str) -> GroupConfig {
    GroupConfig::new(ConsumerName::new(name).unwrap(), TopicPattern::new(pattern).unwrap())
        .unwrap()
        .start(Start::Beginning)
}

fn join(store: &dyn EventStore, config: &GroupConfig, member: &str) -> Box<dyn GroupMember> {
    let groups = store.groups().expect("the store has work groups");
    groups.join(config, member).unwrap()
}

/// `payload.n` of the deliveries.
fn ns(got: &[Delivery]) -> Vec<u64> {
    let events: Vec<_> = got.iter().map(|d| d.event.clone()).collect();
    numbers(&events)
}

/// Fetches until `n` deliveries came or [`DEADLINE`] passed.
fn fetch_n(member: &mut dyn GroupMember, n: usize) -> Vec<Delivery> {
    let deadline = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(member.fetch(n - out.len(), Duration::from_millis(200)).unwrap());
    }
    out
}

fn append_n(store: &dyn EventStore, t: &Topic, range: std::ops::Range<u64>) {
    let events: Vec<_> = range.map(|n| event(t, n)).collect();
    store.append_batch(t, &events).unwrap();
}

/// Members each get distinct events, at most `max_in_flight` each, and an
/// acked event never comes back.
pub fn group_each_event_goes_to_one_member(h: &dyn Harness) {
    let store = h.open();
    let t = topic("jobs.one");
    append_n(store.as_ref(), &t, 0..30);
    let config = group("g1", "jobs.>").max_in_flight(10);
    let mut members: Vec<_> =
        ["a", "b", "c"].iter().map(|m| join(store.as_ref(), &config, m)).collect();
    let mut seen = BTreeSet::new();
    for m in &mut members {
        let got = m.fetch(100, Duration::ZERO).unwrap();
        assert_eq!(got.len(), 10, "a member takes up to max_in_flight: {:?}", ns(&got));
        assert!(got.iter().all(|d| d.deliveries == 1 && d.token.delivery == 1));
        for n in ns(&got) {
            assert!(seen.insert(n), "event {n} was delivered to two members");
        }
        let tokens: Vec<_> = got.iter().map(|d| d.token.clone()).collect();
        m.ack(&tokens).unwrap();
    }
    assert_eq!(seen, (0..30).collect(), "every event went to one member");
    for m in &mut members {
        assert!(
            m.fetch(100, Duration::from_millis(100)).unwrap().is_empty(),
            "acked events stay gone"
        );
    }
}

/// Four members on threads race for 2,000 events of four topics, appended
/// while they fetch: each event is handled once.
pub fn group_members_racing_share_without_duplicates(h: &dyn Harness) {
    const PER_TOPIC: u64 = 500;
    let topics: Vec<Topic> = (0..4).map(|i| topic(&format!("race.t{i}"))).collect();
    let config = group("racers", "race.*").max_in_flight(32);
    let handled = Arc::new(Mutex::new(Vec::new()));
    let barrier = Arc::new(Barrier::new(5));
    let mut threads = Vec::new();
    for i in 0..4 {
        let store = h.open();
        let config = config.clone();
        let handled = handled.clone();
        let barrier = barrier.clone();
        threads.push(thread::spawn(move || {
            let mut member = join(store.as_ref(), &config, &format!("m{i}"));
            barrier.wait();
            let deadline = Instant::now() + DEADLINE;
            let mut mine = 0;
            while handled.lock().unwrap().len() < (PER_TOPIC * 4) as usize
                && Instant::now() < deadline
            {
                let got = member.fetch(16, Duration::from_millis(50)).unwrap();
                let tokens: Vec<_> = got.iter().map(|d| d.token.clone()).collect();
                mine += got.len();
                handled
                    .lock()
                    .unwrap()
                    .extend(got.iter().map(|d| (d.token.topic.clone(), d.token.cursor)));
                member.ack(&tokens).unwrap();
            }
            mine
        }));
    }
    let store = h.open();
    barrier.wait();
    for chunk in 0..10 {
        for t in &topics {
            let per = PER_TOPIC / 10;
            append_n(store.as_ref(), t, chunk * per..(chunk + 1) * per);
        }
    }
    for t in threads {
        if let Err(panic) = t.join() {
            std::panic::resume_unwind(panic);
        }
    }
    let handled = handled.lock().unwrap();
    let distinct: BTreeSet<_> = handled.iter().collect();
    assert_eq!(distinct.len(), handled.len(), "an event was handled twice");
    assert_eq!(handled.len(), (PER_TOPIC * 4) as usize, "every event was handled");
}

/// A nack brings the event back after its delay (the given one, or the
/// group's backoff), with its delivery count; an ack from a delivery that is
/// no longer the member's is ignored.
pub fn group_acks_nacks_and_backoff(h: &dyn Harness) {
    let store = h.open();
    let t = topic("nack.t");
    append_n(store.as_ref(), &t, 0..2);
    let config = group("nacker", "nack.t").backoff(Duration::from_secs(3600));
    let mut m = join(store.as_ref(), &config, "m");
    let got = m.fetch(10, Duration::ZERO).unwrap();
    assert_eq!(ns(&got), vec![0, 1]);
    // Backoff: an hour before event 0 comes back.
    m.nack(&got[0].token, None, "boom").unwrap();
    assert!(
        m.fetch(10, Duration::from_millis(100)).unwrap().is_empty(),
        "event 0 waits out its backoff"
    );
    // No delay: event 1 comes back at once, delivered a second time.
    m.nack(&got[1].token, Some(Duration::ZERO), "again").unwrap();
    let again = fetch_n(m.as_mut(), 1);
    assert_eq!(ns(&again), vec![1]);
    assert_eq!(again[0].deliveries, 2);
    assert_eq!(again[0].token.delivery, 2);
    // The first delivery's token no longer acks it.
    m.ack(std::slice::from_ref(&got[1].token)).unwrap();
    m.nack(&again[0].token, Some(Duration::ZERO), "third").unwrap();
    let third = fetch_n(m.as_mut(), 1);
    assert_eq!((ns(&third), third[0].deliveries), (vec![1], 3), "the stale ack did nothing");
    m.ack(&[third[0].token.clone()]).unwrap();
    assert!(m.fetch(10, Duration::from_millis(100)).unwrap().is_empty());
    let info = store.groups().unwrap().list().unwrap();
    let g = info.iter().find(|g| g.name == "nacker").expect("the group is listed");
    assert_eq!((g.in_flight, g.waiting, g.redelivered, g.dead_lettered), (0, 1, 2, 0), "{g:?}");
}

/// An event whose ack wait passes goes to another member; `in_progress`
/// (and `extend`, for several) keeps it where it is.
pub fn group_ack_wait_and_in_progress(h: &dyn Harness) {
    let store = h.open();
    let t = topic("wait.t");
    append_n(store.as_ref(), &t, 0..2);
    let short = group("waiter", "wait.t").ack_wait(Duration::from_millis(300)).max_in_flight(1);
    let mut slow = join(store.as_ref(), &short, "slow");
    let mut other = join(store.as_ref(), &short, "other");
    let kept = slow.fetch(1, Duration::ZERO).unwrap();
    assert_eq!(ns(&kept), vec![0]);
    let got = other.fetch(1, Duration::ZERO).unwrap();
    assert_eq!(ns(&got), vec![1]);
    // `other` holds event 1 without acking; `slow` keeps event 0 alive.
    let until = Instant::now() + Duration::from_millis(900);
    while Instant::now() < until {
        slow.in_progress(&kept[0].token).unwrap();
        other.extend(std::slice::from_ref(&got[0].token)).unwrap();
        thread::sleep(Duration::from_millis(50));
    }
    other.ack(&[got[0].token.clone()]).unwrap();
    assert!(
        other.fetch(1, Duration::ZERO).unwrap().is_empty(),
        "an event kept in progress stays with its member"
    );
    // Now `slow` stops: its ack wait passes and `other` gets event 0.
    let moved = fetch_n(other.as_mut(), 1);
    assert_eq!((ns(&moved), moved[0].deliveries), (vec![0], 2));
    slow.ack(&[kept[0].token.clone()]).unwrap();
    other.ack(&[moved[0].token.clone()]).unwrap();
    assert!(
        other.fetch(1, Duration::from_millis(100)).unwrap().is_empty(),
        "the late ack did not matter"
    );
}

/// An ack that comes after the ack wait, before any member took the event
/// back, still counts: the handled event is neither redelivered nor, on its
/// last delivery, dead-lettered. Both ways a member acks are checked.
pub fn group_a_late_ack_counts_until_the_event_is_taken_back(h: &dyn Harness) {
    let store = h.open();
    let t = topic("late.t");
    append_n(store.as_ref(), &t, 0..2);
    let wait = Duration::from_millis(100);
    let config = group("late", "late.t").ack_wait(wait).max_deliveries(1);
    let mut member = join(store.as_ref(), &config, "m");
    let first = member.fetch(1, Duration::ZERO).unwrap();
    assert_eq!(ns(&first), vec![0]);
    let fetched = Instant::now();
    while fetched.elapsed() < wait * 2 {
        thread::sleep(wait / 4);
    }
    member.ack(&[first[0].token.clone()]).unwrap();
    let second = member.fetch(1, Duration::ZERO).unwrap();
    assert_eq!(ns(&second), vec![1], "event 0 came not back");
    let fetched = Instant::now();
    while fetched.elapsed() < wait * 2 {
        thread::sleep(wait / 4);
    }
    let after = member.ack_and_fetch(&[second[0].token.clone()], 1, Duration::ZERO).unwrap();
    assert!(after.is_empty(), "event 1 came not back either: {:?}", ns(&after));
    let dead = Topic::new("dead.late").unwrap();
    assert!(store.query(&Query::topic(&dead)).unwrap().is_empty(), "no dead letter");
}

/// After `max_deliveries` failures an event is dead-lettered once, with its
/// fields, and never delivered again; the other events go on.
pub fn group_dead_letters_after_max_deliveries(h: &dyn Harness) {
    let store = h.open();
    let t = topic("poison.t");
    append_n(store.as_ref(), &t, 0..3);
    let config = group("dl", "poison.t").max_deliveries(3);
    let mut m = join(store.as_ref(), &config, "m");
    let mut handled = Vec::new();
    let mut failures = 0;
    let deadline = Instant::now() + DEADLINE;
    while (handled.len() < 2 || failures < 3) && Instant::now() < deadline {
        for d in m.fetch(10, Duration::from_millis(100)).unwrap() {
            if ns(std::slice::from_ref(&d)) == [1] {
                failures += 1;
                m.nack(&d.token, Some(Duration::ZERO), &format!("failure {failures}")).unwrap();
            } else {
                handled.push(ns(std::slice::from_ref(&d))[0]);
                m.ack(std::slice::from_ref(&d.token)).unwrap();
            }
        }
    }
    assert!(
        m.fetch(10, Duration::from_millis(200)).unwrap().is_empty(),
        "a dead letter is not delivered again"
    );
    handled.sort();
    assert_eq!(handled, vec![0, 2]);
    assert_eq!(failures, 3, "delivered max_deliveries times");
    let letters = store.query(&Query::topic(&topic("dead.dl"))).unwrap();
    assert_eq!(letters.len(), 1, "exactly one dead letter: {letters:?}");
    let p = &letters[0].event.payload;
    let original = store.query(&Query::topic(&t)).unwrap().remove(1);
    assert_eq!(
        p["event"],
        serde_json::to_value(&original.event).unwrap(),
        "the whole original event"
    );
    assert_eq!(p["topic"], "poison.t");
    assert_eq!(p["cursor"], original.cursor.to_string());
    assert_eq!(p["deliveries"], 3);
    assert_eq!(p["error"], "failure 3");
    assert_eq!(p["group"], "dl");
    let info = store.groups().unwrap().list().unwrap();
    let g = info.iter().find(|g| g.name == "dl").unwrap();
    assert_eq!((g.dead_lettered, g.in_flight, g.waiting), (1, 0, 0), "{g:?}");
}

/// Under per-topic ordering no two events of a topic are in flight at once,
/// across four members, so each topic is handled in order, also when some
/// deliveries fail and come back.
pub fn group_per_topic_order(h: &dyn Harness) {
    const TOPICS: u64 = 6;
    const PER_TOPIC: u64 = 40;
    let store = h.open();
    for i in 0..TOPICS {
        append_n(store.as_ref(), &topic(&format!("ord.t{i}")), 0..PER_TOPIC);
    }
    let config = group("ordered", "ord.*").ordering(GroupOrdering::PerTopic);
    let in_flight = Arc::new(Mutex::new(BTreeSet::new()));
    let acked: Arc<Mutex<BTreeMap<Topic, Vec<u64>>>> = Arc::default();
    let total = Arc::new(Mutex::new(0u64));
    let mut threads = Vec::new();
    for i in 0..4 {
        let store = h.open();
        let config = config.clone();
        let (in_flight, acked, total) = (in_flight.clone(), acked.clone(), total.clone());
        threads.push(thread::spawn(move || {
            let mut member = join(store.as_ref(), &config, &format!("m{i}"));
            let deadline = Instant::now() + DEADLINE;
            let mut round = 0u64;
            while *total.lock().unwrap() < TOPICS * PER_TOPIC && Instant::now() < deadline {
                let got = member.fetch(8, Duration::from_millis(50)).unwrap();
                for d in &got {
                    let t = d.token.topic.clone();
                    assert!(
                        in_flight.lock().unwrap().insert(t.clone()),
                        "two events of {t} in flight at once"
                    );
                }
                thread::yield_now();
                for d in got {
                    let t = d.token.topic.clone();
                    round += 1;
                    in_flight.lock().unwrap().remove(&t);
                    if round % 7 == i && d.deliveries == 1 {
                        member.nack(&d.token, Some(Duration::ZERO), "once").unwrap();
                        continue;
                    }
                    // Recorded before the ack: the next event of the topic comes after it.
                    acked
                        .lock()
                        .unwrap()
                        .entry(t)
                        .or_default()
                        .push(ns(std::slice::from_ref(&d))[0]);
                    *total.lock().unwrap() += 1;
                    member.ack(&[d.token]).unwrap();
                }
            }
        }));
    }
    for t in threads {
        if let Err(panic) = t.join() {
            std::panic::resume_unwind(panic);
        }
    }
    let acked = acked.lock().unwrap();
    assert_eq!(acked.len() as u64, TOPICS);
    for (t, got) in acked.iter() {
        assert_eq!(*got, (0..PER_TOPIC).collect::<Vec<_>>(), "topic {t} in order, each once");
    }
}

/// A member that leaves (is dropped) with events in flight hands them to
/// the others at once, counted as delivered once more.
pub fn group_member_leaving_hands_its_events_over(h: &dyn Harness) {
    let store = h.open();
    let t = topic("leave.t");
    append_n(store.as_ref(), &t, 0..10);
    let config = group("leavers", "leave.t");
    let mut a = join(store.as_ref(), &config, "a");
    let mut b = join(store.as_ref(), &config, "b");
    let got = a.fetch(10, Duration::ZERO).unwrap();
    assert_eq!(got.len(), 10);
    assert!(b.fetch(10, Duration::from_millis(100)).unwrap().is_empty(), "a holds them all");
    let waiter = thread::spawn(move || {
        let got = fetch_n(b.as_mut(), 10);
        (ns(&got), got.iter().map(|d| d.deliveries).collect::<Vec<_>>())
    });
    thread::sleep(Duration::from_millis(50));
    drop(a);
    let (taken, deliveries) = waiter.join().unwrap();
    assert_eq!(taken, (0..10).collect::<Vec<_>>(), "b gets a's events");
    assert!(deliveries.iter().all(|d| *d == 2), "{deliveries:?}");
}

/// Deliveries a member hands back unstarted ([`GroupMember::release`]) go
/// to another member at once, counted as neither a delivery nor a
/// redelivery. (A store whose `release` says it cannot is not checked.)
pub fn group_released_deliveries_go_to_others_uncounted(h: &dyn Harness) {
    let store = h.open();
    let t = topic("release.t");
    append_n(store.as_ref(), &t, 0..4);
    let config = group("releasers", "release.t");
    let mut a = join(store.as_ref(), &config, "a");
    let mut b = join(store.as_ref(), &config, "b");
    let got = a.fetch(4, Duration::ZERO).unwrap();
    assert_eq!(ns(&got), vec![0, 1, 2, 3]);
    assert!(b.fetch(4, Duration::from_millis(100)).unwrap().is_empty(), "a holds them all");
    let rest: Vec<_> = got[1..].iter().map(|d| d.token.clone()).collect();
    if !a.release(&rest).unwrap() {
        return;
    }
    let taken = fetch_n(b.as_mut(), 3);
    assert_eq!(ns(&taken), vec![1, 2, 3], "b gets the released events at once");
    let counts: Vec<u32> = taken.iter().map(|d| d.deliveries).collect();
    assert_eq!(counts, vec![1, 1, 1], "a release is not a delivery");
    a.ack(&[got[0].token.clone()]).unwrap();
    b.ack(&taken.iter().map(|d| d.token.clone()).collect::<Vec<_>>()).unwrap();
    let info = store.groups().unwrap().list().unwrap();
    let info = info.iter().find(|g| g.name == "releasers").unwrap();
    assert_eq!((info.in_flight, info.waiting, info.redelivered), (0, 0, 0), "{info:?}");
}

/// Positions, pending events and counts survive the restart of every
/// member and of the store.
pub fn group_survives_a_restart(h: &dyn Harness) {
    let t = topic("restart.t");
    let config = group("restarted", "restart.t");
    {
        let store = h.open();
        append_n(store.as_ref(), &t, 0..6);
        let mut m = join(store.as_ref(), &config, "m");
        let got = m.fetch(4, Duration::ZERO).unwrap();
        assert_eq!(ns(&got), vec![0, 1, 2, 3]);
        m.ack(&[got[0].token.clone(), got[2].token.clone()]).unwrap();
        m.nack(&got[1].token, Some(Duration::ZERO), "later").unwrap();
        // Events 1 and 3 are pending, 4 and 5 not handed out yet.
    }
    let store = h.open();
    let mut m = join(store.as_ref(), &config, "m");
    let got = fetch_n(m.as_mut(), 4);
    let mut pairs: Vec<(u64, u32)> =
        ns(&got).into_iter().zip(got.iter().map(|d| d.deliveries)).collect();
    pairs.sort();
    assert_eq!(pairs, vec![(1, 2), (3, 2), (4, 1), (5, 1)]);
    m.ack(&got.iter().map(|d| d.token.clone()).collect::<Vec<_>>()).unwrap();
    append_n(store.as_ref(), &t, 6..7);
    assert_eq!(ns(&fetch_n(m.as_mut(), 1)), vec![6]);
}

/// A group starts where it is told when it is created (later joins do not
/// move it); a member with another pattern or ordering is refused; bad
/// numbers are refused; the dead-letter topic is never dispatched.
pub fn group_start_and_checks(h: &dyn Harness) {
    let store = h.open();
    let t = topic("start.t");
    append_n(store.as_ref(), &t, 0..3);
    let new = group("fresh", "start.>").start(Start::New);
    let mut m = join(store.as_ref(), &new, "m");
    assert!(
        m.fetch(10, Duration::from_millis(100)).unwrap().is_empty(),
        "start new skips stored events"
    );
    append_n(store.as_ref(), &t, 3..4);
    assert_eq!(ns(&fetch_n(m.as_mut(), 1)), vec![3]);
    let groups = store.groups().unwrap();
    for bad in [
        group("fresh", "start.t"),
        group("fresh", "start.>").ordering(GroupOrdering::PerTopic),
        group("zero", "start.>").ack_wait(Duration::ZERO),
        group("zero", "start.>").max_deliveries(0),
        group("zero", "start.>").max_in_flight(0),
    ] {
        let err = groups.join(&bad, "x").err().expect("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    // `>` with another dead-letter topic: the dead letters never come back to it.
    let all = group("all", ">").dead_letter(topic("graveyard")).max_deliveries(1);
    let mut m = join(store.as_ref(), &all, "m");
    let got = fetch_n(m.as_mut(), 4);
    assert_eq!(ns(&got), vec![0, 1, 2, 3]);
    m.nack(&got[0].token, Some(Duration::ZERO), "dead").unwrap();
    m.ack(&got[1..].iter().map(|d| d.token.clone()).collect::<Vec<_>>()).unwrap();
    assert!(
        m.fetch(10, Duration::from_millis(150)).unwrap().is_empty(),
        "the dead letter is not dispatched"
    );
    assert_eq!(store.query(&Query::topic(&topic("graveyard"))).unwrap().len(), 1);
}

/// An idle member's fetch waits for an event appended later, and its
/// interrupter ends a wait without limit.
pub fn group_fetch_waits_and_is_interrupted(h: &dyn Harness) {
    let store = h.open();
    let t = topic("idle.t");
    let config = group("idle", "idle.t");
    let mut m = join(store.as_ref(), &config, "m");
    let writer = {
        let store = h.open();
        let t = t.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            append_n(store.as_ref(), &t, 0..1);
        })
    };
    let got = m.fetch(10, Duration::MAX).unwrap();
    assert_eq!(ns(&got), vec![0], "woken by the append");
    writer.join().unwrap();
    let interrupt = m.interrupter();
    let stopper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        interrupt.interrupt();
    });
    assert!(m.fetch(10, Duration::MAX).unwrap().is_empty(), "the interrupt ends the wait");
    stopper.join().unwrap();
}

/// A group is deleted only once its members are gone; a new one of that
/// name starts afresh.
pub fn group_delete_needs_every_member_gone(h: &dyn Harness) {
    let store = h.open();
    let t = topic("del.t");
    append_n(store.as_ref(), &t, 0..3);
    let config = group("doomed", "del.t");
    let name = config.name.clone();
    let mut m = join(store.as_ref(), &config, "m");
    let got = fetch_n(m.as_mut(), 3);
    m.ack(&got[..2].iter().map(|d| d.token.clone()).collect::<Vec<_>>()).unwrap();
    let groups = store.groups().unwrap();
    let err = groups.delete(&name).expect_err("a group with a live member is not deleted");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains(m.id()), "the refusal names the live member: {err}");
    assert_eq!(groups.list().unwrap().len(), 1, "nothing was deleted");
    drop(m);
    assert!(groups.delete(&name).unwrap());
    assert!(groups.list().unwrap().is_empty());
    assert!(!groups.delete(&name).unwrap(), "deleted already");
    let mut again = join(store.as_ref(), &config, "m");
    assert_eq!(ns(&fetch_n(again.as_mut(), 3)), vec![0, 1, 2], "a new group from the beginning");
}

/// Four members on threads fail every event: each is dead-lettered exactly
/// once, also where members settle dead letters at the same time.
pub fn group_dead_letters_once_among_racing_members(h: &dyn Harness) {
    const EVENTS: u64 = 40;
    let store = h.open();
    let t = topic("doomed.t");
    append_n(store.as_ref(), &t, 0..EVENTS);
    let config = group("racing-dl", "doomed.t").max_deliveries(2).max_in_flight(4);
    let dead = topic("dead.racing-dl");
    let barrier = Arc::new(Barrier::new(4));
    let mut threads = Vec::new();
    for i in 0..4 {
        let store = h.open();
        let (config, barrier, dead) = (config.clone(), barrier.clone(), dead.clone());
        threads.push(thread::spawn(move || {
            let mut member = join(store.as_ref(), &config, &format!("m{i}"));
            barrier.wait();
            let deadline = Instant::now() + DEADLINE;
            while Instant::now() < deadline {
                let letters = store.query(&Query::topic(&dead)).unwrap();
                let ids: BTreeSet<_> =
                    letters.iter().map(|l| l.event.payload["cursor"].to_string()).collect();
                if ids.len() as u64 >= EVENTS {
                    break;
                }
                for d in member.fetch(4, Duration::from_millis(20)).unwrap() {
                    member.nack(&d.token, Some(Duration::ZERO), "always").unwrap();
                }
            }
        }));
    }
    for t in threads {
        if let Err(panic) = t.join() {
            std::panic::resume_unwind(panic);
        }
    }
    let letters = store.query(&Query::topic(&dead)).unwrap();
    let cursors: BTreeSet<_> =
        letters.iter().map(|l| l.event.payload["cursor"].to_string()).collect();
    assert_eq!(cursors.len() as u64, EVENTS, "every event dead-lettered");
    assert_eq!(letters.len() as u64, EVENTS, "each dead-lettered once");
}

/// A topic created after the group, also one started at `new`, is
/// dispatched from its first event: all its events are new to the group
/// (a store that starts following a topic only once it learns of it must
/// not skip what was appended before).
pub fn group_takes_a_new_topic_from_its_first_event(h: &dyn Harness) {
    let store = h.open();
    let old = topic("late.old");
    append_n(store.as_ref(), &old, 0..2);
    let config = group("latecomers", "late.>").start(Start::New);
    let mut m = join(store.as_ref(), &config, "m");
    assert!(
        m.fetch(10, Duration::from_millis(100)).unwrap().is_empty(),
        "start new skips the events stored before"
    );
    append_n(store.as_ref(), &topic("late.new"), 0..3);
    let got = fetch_n(m.as_mut(), 3);
    assert_eq!(ns(&got), vec![0, 1, 2], "every event of the new topic, from its first");
    m.ack(&got.iter().map(|d| d.token.clone()).collect::<Vec<_>>()).unwrap();
    append_n(store.as_ref(), &old, 2..3);
    assert_eq!(ns(&fetch_n(m.as_mut(), 1)), vec![2], "the old topic goes on");
}

fn tokens(got: &[Delivery]) -> Vec<crate::DeliveryToken> {
    got.iter().map(|d| d.token.clone()).collect()
}

/// An exclusive group has one active member: a second one stands by (its
/// join waits) and gets nothing while the first lives; once the first
/// leaves holding unacked events, the standby becomes active and gets them
/// and the rest, none lost or doubled. The group reports itself exclusive
/// with its active member; a join in the other mode is refused.
pub fn group_exclusive_has_one_active_member(h: &dyn Harness) {
    let store = h.open();
    let t = topic("solo.t");
    append_n(store.as_ref(), &t, 0..10);
    let config = group("solo", "solo.t").exclusive(true);
    let request = || LockRequest::new(Duration::from_secs(5));
    let mut a = join_group(store.as_ref(), &config, "a", &request())
        .unwrap()
        .expect("the first member is active at once");
    let got = a.fetch(4, Duration::ZERO).unwrap();
    assert_eq!(ns(&got), vec![0, 1, 2, 3]);
    a.ack(&tokens(&got[..2])).unwrap();
    let other = h.open();
    assert!(
        join_group(other.as_ref(), &config, "b", &request()).unwrap().is_none(),
        "a second member stands by while the first lives"
    );
    let info = store.groups().unwrap().list().unwrap();
    let info = info.iter().find(|g| g.name == "solo").unwrap();
    assert!(info.exclusive, "{info:?}");
    assert_eq!(info.active.as_deref(), Some(a.id()), "{info:?}");
    assert_eq!(info.members, vec![a.id().to_string()], "a standby is not a member");
    let (tx, rx) = std::sync::mpsc::channel();
    let standby = {
        let config = config.clone();
        thread::spawn(move || {
            let mut b = join_group(other.as_ref(), &config, "b", &request().wait(DEADLINE))
                .unwrap()
                .expect("the standby becomes active once the first member leaves");
            tx.send(()).unwrap();
            let got = fetch_n(b.as_mut(), 6);
            b.ack(&tokens(&got)).unwrap();
            assert!(b.fetch(10, Duration::from_millis(100)).unwrap().is_empty(), "nothing more");
            got.iter()
                .map(|d| (d.event.event.payload["n"].as_u64().unwrap(), d.deliveries))
                .collect::<Vec<_>>()
        })
    };
    // While the first member lives it goes on alone, and the standby waits.
    let more = fetch_n(a.as_mut(), 2);
    assert_eq!(ns(&more), vec![4, 5]);
    a.ack(&tokens(&more)).unwrap();
    assert!(rx.try_recv().is_err(), "the standby stays out while the first member lives");
    drop(a);
    let mut taken = standby.join().unwrap();
    taken.sort();
    assert_eq!(
        taken,
        vec![(2, 2), (3, 2), (6, 1), (7, 1), (8, 1), (9, 1)],
        "the standby gets the unacked events and the rest, each once"
    );
    // The other mode is refused, both ways.
    let groups = store.groups().unwrap();
    let err = groups.join(&group("solo", "solo.t"), "x").err().expect("a shared join is refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("exclusive"), "{err}");
    drop(join(store.as_ref(), &group("shared", "solo.t"), "m"));
    let err =
        join_group(store.as_ref(), &group("shared", "solo.t").exclusive(true), "x", &request())
            .err()
            .expect("an exclusive join of a shared group is refused");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

/// A new group starts after the positions it is given in their topics,
/// whatever its start says for the others; an existing group ignores them.
pub fn group_starts_after_given_positions(h: &dyn Harness) {
    let store = h.open();
    let (one, two) = (topic("after.one"), topic("after.two"));
    append_n(store.as_ref(), &one, 0..5);
    append_n(store.as_ref(), &two, 0..3);
    let cursor = store.query(&Query::topic(&one)).unwrap()[2].cursor;
    let positions: BTreeMap<Topic, crate::Cursor> = [(one.clone(), cursor)].into();
    let config = group("after", "after.*").start(Start::New).start_after(positions.clone());
    let mut m = join(store.as_ref(), &config, "m");
    let got = fetch_n(m.as_mut(), 2);
    assert_eq!(ns(&got), vec![3, 4], "after the given position, from 3");
    assert_eq!(got[0].token.topic, one);
    m.ack(&tokens(&got)).unwrap();
    assert!(
        m.fetch(10, Duration::from_millis(100)).unwrap().is_empty(),
        "the other topic starts new"
    );
    drop(m);
    let again = group("after", "after.*").start(Start::Beginning).start_after(BTreeMap::new());
    let mut m = join(store.as_ref(), &again, "m");
    assert!(
        m.fetch(10, Duration::from_millis(100)).unwrap().is_empty(),
        "an existing group keeps its positions"
    );
}
