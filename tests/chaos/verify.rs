//! The plan of answers the chaos suites give, and the checks of a finished run: every
//! (message, endpoint) pair's final state against the plan, and its attempt log against
//! the receiver's log, with the answers no attempt records put down to the kills that
//! explain them. Shared by the local-mode suite and the deliver crate's suite on moto.
// Each suite that includes this file uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use serde_json::Value;

use crate::faulty::{Answer, Seen};

/// Tries in both suites' retry schedules.
pub const TRIES: u32 = 4;
/// How long a [`Scenario::LateOk`] answer takes.
pub const LATE_MS: u64 = 2_500;

// ---- the plan ----------------------------------------------------------------------------

/// What one (message, endpoint) pair gets from the receiver, request after request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// 2xx at once.
    Ok,
    /// These failures, then 200 for ever.
    FailThenOk(&'static [Answer]),
    /// These failures, then 406 for ever.
    Permanent(&'static [Answer]),
    /// These failures in turn for ever: the schedule runs out.
    Exhausted(&'static [Answer]),
    /// 200 with a body cut short: a status was received, so it is a success.
    TruncatedOk,
    /// 200 with a huge body trickled slowly.
    SlowHugeOk,
    /// 200 after a pause longer than a queue visibility timeout, shorter than the request
    /// timeout.
    LateOk,
}

pub const S500: Answer = Answer::Status(500);
pub const S400: Answer = Answer::Status(400);
pub const TOO_MANY: Answer = Answer::TooMany {
    retry_after_secs: 1,
};
pub const CUT_500: Answer = Answer::CloseMidBody { status: 500 };

/// The local suite's mix, weights out of 100.
pub const SCENARIOS: &[(u64, Scenario)] = &[
    (45, Scenario::Ok),
    (5, Scenario::FailThenOk(&[S500])),
    (4, Scenario::FailThenOk(&[Answer::Reset])),
    (4, Scenario::FailThenOk(&[Answer::Redirect])),
    (3, Scenario::FailThenOk(&[TOO_MANY])),
    (3, Scenario::FailThenOk(&[S400])),
    (2, Scenario::FailThenOk(&[Answer::Hang])),
    (4, Scenario::FailThenOk(&[S500, Answer::Reset])),
    (3, Scenario::FailThenOk(&[CUT_500, S500])),
    (3, Scenario::FailThenOk(&[Answer::Redirect, S400])),
    (4, Scenario::TruncatedOk),
    (2, Scenario::SlowHugeOk),
    (5, Scenario::Permanent(&[])),
    (2, Scenario::Permanent(&[S500])),
    (5, Scenario::Exhausted(&[S500])),
    (3, Scenario::Exhausted(&[Answer::Reset, S500, CUT_500])),
    (3, Scenario::Exhausted(&[S400, Answer::Redirect])),
];

impl Scenario {
    /// The scenario of a pair, drawn from `table` (weights adding up to 100) by a hash.
    pub fn of(table: &[(u64, Scenario)], endpoint: &str, webhook_id: &str) -> Scenario {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (endpoint, webhook_id).hash(&mut h);
        let mut pick = h.finish() % 100;
        for (weight, scenario) in table {
            if pick < *weight {
                return *scenario;
            }
            pick -= weight;
        }
        unreachable!("the weights add up to 100")
    }

    /// The answer to the `n`th request (from 1).
    pub fn answer(self, n: u32) -> Answer {
        let i = n as usize - 1;
        match self {
            Scenario::Ok => Answer::Status(200),
            Scenario::FailThenOk(f) => f.get(i).copied().unwrap_or(Answer::Status(200)),
            Scenario::Permanent(f) => f.get(i).copied().unwrap_or(Answer::Status(406)),
            Scenario::Exhausted(f) => f[i % f.len()],
            Scenario::TruncatedOk => Answer::CloseMidBody { status: 200 },
            Scenario::SlowHugeOk => Answer::SlowHuge { status: 200 },
            Scenario::LateOk => Answer::Late {
                status: 200,
                after_ms: LATE_MS,
            },
        }
    }

    pub fn succeeds(self) -> bool {
        matches!(
            self,
            Scenario::Ok
                | Scenario::FailThenOk(_)
                | Scenario::TruncatedOk
                | Scenario::SlowHugeOk
                | Scenario::LateOk
        )
    }

    /// Attempts recorded when no answer was lost to a kill.
    pub fn attempts(self) -> u32 {
        match self {
            Scenario::FailThenOk(f) | Scenario::Permanent(f) => f.len() as u32 + 1,
            Scenario::Exhausted(_) => TRIES,
            Scenario::Ok | Scenario::TruncatedOk | Scenario::SlowHugeOk | Scenario::LateOk => 1,
        }
    }
}

/// One SIGKILL: when it was sent, when the process was gone, and when its successor
/// answered.
#[derive(Debug, Clone)]
pub struct Kill {
    pub phase: &'static str,
    pub sent: Instant,
    pub died: Instant,
    pub back: Instant,
}

impl Kill {
    /// Whether this kill explains a receiver answer (arrived `at`) that no attempt
    /// records, given when the pair's next request arrived. The receiver reads a request
    /// a little after the sender wrote it, so the request may be read after the death; it
    /// must still be read before the successor was up, and the next one after the kill.
    pub fn explains(&self, at: Instant, next: Option<Instant>) -> bool {
        at <= self.back && next.is_none_or(|n| n >= self.sent)
    }
}

// ---- checking ----------------------------------------------------------------------------

/// What the checks found, beyond the failures.
#[derive(Default, Debug)]
pub struct Tally {
    pub pairs: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Receiver answers that no recorded attempt accounts for, by kill.
    pub lost_by_kill: BTreeMap<usize, usize>,
    /// Requests a pair got after the receiver had answered it 2xx, when the process died
    /// before recording that answer.
    pub after_success_kill: usize,
    /// The same, when the worker had given up waiting for that answer (a timeout).
    pub after_success_timeout: usize,
    /// Attempts recorded as timeouts although the receiver answered (late, for the client).
    pub timeouts_answered: usize,
    /// Attempts recorded as timeouts whose request never reached the receiver.
    pub timeouts_unseen: usize,
    /// Pairs whose planned outcome changed because timeouts used up their tries.
    pub outcome_changed_by_timeouts: usize,
    pub by_scenario: BTreeMap<String, usize>,
    pub gone_attempted: usize,
    pub gone_settled_unsent: usize,
    pub gone_untargeted: usize,
}

fn is_timeout(attempt: &Value) -> bool {
    attempt["status_code"].is_null() && attempt["error"] == "timeout"
}

/// Does a recorded attempt describe this receiver answer? A timeout describes any answer:
/// the worker stopped waiting, whatever the receiver did.
fn same(attempt: &Value, answer: Answer) -> bool {
    if is_timeout(attempt) {
        return true;
    }
    let status = attempt["status_code"].as_u64().map(|s| s as u16);
    if status != answer.status() {
        return false;
    }
    match answer {
        Answer::Reset => !attempt["error"].is_null(),
        _ => true,
    }
}

/// Assigns each recorded attempt the receiver answer it describes, in order (`None`: a
/// timeout whose request never arrived). An answer left without an attempt must be one a
/// kill can explain (`skippable`). Prefers the latest answers, so the last attempt takes
/// the last answer.
fn embed(attempts: &[&Value], seen: &[Seen], skippable: &[bool]) -> Option<Vec<Option<usize>>> {
    let Some((last, rest)) = attempts.split_last() else {
        return skippable.iter().all(|s| *s).then(Vec::new);
    };
    for j in (0..seen.len()).rev() {
        if same(last, seen[j].answer) {
            if let Some(mut earlier) = embed(rest, &seen[..j], &skippable[..j]) {
                earlier.push(Some(j));
                return Some(earlier);
            }
        }
        if !skippable[j] {
            break;
        }
    }
    if is_timeout(last) {
        let mut earlier = embed(rest, seen, skippable)?;
        earlier.push(None);
        return Some(earlier);
    }
    None
}

/// The kill that explains a receiver answer no attempt records, if any.
fn explaining_kill(kills: &[Kill], seen: &[Seen], k: usize) -> Option<usize> {
    let next = seen.get(k + 1).map(|n| n.at);
    kills
        .iter()
        .position(|kill| kill.back >= seen[k].at)
        .filter(|i| kills[*i].explains(seen[k].at, next))
}

/// Checks one pair against the receiver's log and, for the main endpoints, the plan.
#[allow(clippy::too_many_arguments)]
pub fn check_pair(
    failures: &mut Vec<String>,
    tally: &mut Tally,
    kills: &[Kill],
    label: &str,
    scenario: Option<Scenario>,
    delivery: &Value,
    attempts: &[&Value],
    seen: &[Seen],
) {
    let mut fail = |what: String| failures.push(format!("{label}: {what}"));
    let status = delivery["status"].as_str().unwrap_or_default();
    if delivery["attempts"].as_u64() != Some(attempts.len() as u64) {
        fail(format!(
            "delivery says {} attempts, the log has {}",
            delivery["attempts"],
            attempts.len()
        ));
    }
    for (k, a) in attempts.iter().enumerate() {
        if a["attempt"].as_u64() != Some(k as u64 + 1) {
            fail(format!("attempt numbers are not 1..n: {}", a["attempt"]));
        }
    }
    if attempts.len() as u32 > TRIES {
        fail(format!(
            "{} attempts, more than the schedule's {TRIES}",
            attempts.len()
        ));
    }
    // The final state follows from the last recorded attempt.
    if let Some(last) = attempts.last() {
        let code = last["status_code"].as_u64();
        let expected = if code.is_some_and(|c| (200..300).contains(&c)) {
            "succeeded"
        } else if matches!(code, Some(406) | Some(410)) || attempts.len() as u32 == TRIES {
            "failed"
        } else {
            "pending"
        };
        if status != expected {
            fail(format!("is {status} after {last}, expected {expected}"));
        }
    }
    // Every recorded attempt is one of the receiver's answers, in order, and every answer
    // without a recorded attempt was lost to a kill: the process died after the request
    // arrived and before the next request of the pair.
    let explained: Vec<Option<usize>> = (0..seen.len())
        .map(|k| explaining_kill(kills, seen, k))
        .collect();
    let skippable: Vec<bool> = explained.iter().map(Option::is_some).collect();
    let Some(embedding) = embed(attempts, seen, &skippable) else {
        let answers: Vec<_> = seen.iter().map(|s| s.answer).collect();
        let statuses: Vec<_> = attempts
            .iter()
            .map(|a| (a["status_code"].clone(), a["error"].clone()))
            .collect();
        let any_order = embed(attempts, seen, &vec![true; seen.len()]).is_some();
        let offsets: Vec<String> = seen
            .iter()
            .map(|s| {
                let k = kills.iter().find(|k| k.back >= s.at);
                let ms = |a: Instant, b: Instant| {
                    a.saturating_duration_since(b).as_millis() as i64
                        - b.saturating_duration_since(a).as_millis() as i64
                };
                format!("{:?}", k.map(|k| ms(s.at, k.sent)))
            })
            .collect();
        let gaps: Vec<u128> = seen
            .windows(2)
            .map(|w| w[1].at.duration_since(w[0].at).as_millis())
            .collect();
        fail(format!(
            "attempts {statuses:?} do not account for the receiver's answers {answers:?} \
             (they would, leaving answers no kill explains: {any_order}; ms from the next kill \
             {offsets:?}; ms between answers {gaps:?})"
        ));
        return;
    };
    let mut matched = vec![false; seen.len()];
    let mut answered_timeouts = 0;
    for (a, j) in attempts.iter().zip(&embedding) {
        match j {
            Some(j) => {
                matched[*j] = true;
                if is_timeout(a) && seen[*j].answer != Answer::Hang {
                    answered_timeouts += 1;
                }
            }
            None => tally.timeouts_unseen += 1,
        }
    }
    tally.timeouts_answered += answered_timeouts;
    for (k, kill) in explained.iter().enumerate() {
        if !matched[k] {
            let kill = kill.expect("only explained answers are left unmatched");
            *tally.lost_by_kill.entry(kill).or_default() += 1;
        }
    }
    // Requests after a 2xx answer: the 2xx was lost to a kill, or came too late.
    if let Some(first_ok) = seen.iter().position(|s| s.answer.is_success()) {
        let after = seen.len() - first_ok - 1;
        if matched[first_ok] && after > 0 {
            let recorded = embedding.iter().position(|j| *j == Some(first_ok));
            if recorded.is_some_and(|r| is_timeout(attempts[r])) {
                tally.after_success_timeout += after;
            } else {
                fail(format!("{after} requests after a recorded 2xx"));
            }
        } else {
            tally.after_success_kill += after;
        }
    }
    let Some(scenario) = scenario else {
        return;
    };
    tally.pairs += 1;
    *tally
        .by_scenario
        .entry(format!("{scenario:?}"))
        .or_default() += 1;
    let lost = matched.iter().filter(|m| !**m).count();
    let timeouts = attempts.iter().filter(|a| is_timeout(a)).count();
    let hangs = seen.iter().filter(|s| s.answer == Answer::Hang).count();
    let disturbed = lost > 0 || timeouts > hangs;
    let planned = if scenario.succeeds() {
        tally.succeeded += 1;
        "succeeded"
    } else {
        tally.failed += 1;
        "failed"
    };
    if status != planned {
        // Timeouts on answered requests use up tries the plan meant for other answers.
        if disturbed && answered_timeouts > 0 && attempts.len() as u32 == TRIES {
            tally.outcome_changed_by_timeouts += 1;
        } else {
            fail(format!(
                "{scenario:?} should have {planned}, is {status}: {delivery}"
            ));
        }
    }
    if status == "succeeded" && !seen.last().is_some_and(|s| s.answer.is_success()) {
        fail(format!("{scenario:?}: the receiver never answered 2xx"));
    }
    if matches!(scenario, Scenario::Permanent(_))
        && status == "failed"
        && delivery["last_status_code"].as_u64() != Some(406)
        && !disturbed
    {
        fail(format!("{scenario:?} should end on 406: {delivery}"));
    }
    let expected = scenario.attempts();
    let exact = !disturbed || matches!(scenario, Scenario::Exhausted(_));
    if exact && attempts.len() as u32 != expected {
        fail(format!(
            "{scenario:?}: {} attempts recorded, expected {expected} ({lost} answers lost)",
            attempts.len()
        ));
    }
}
