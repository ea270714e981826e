//! Long-lived answers (live change streams, exports) are bounded per caller and in total, so that
//! one caller can never take them all, and all of them together can never take the capacity that
//! short requests and the health endpoints need (the totals stay well below the connections a
//! worker accepts).
//!
//! A caller is a key's holder, or an address (IPv6 by prefix: see `AddressKeying`). Past the
//! caller's bound the answer is 429 with `Retry-After`; past the total, 503 with `Retry-After`.
//! A slot is held by a [`Slot`] for as long as the answer lives, and given back when it is
//! dropped, however the answer ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use books_application::ExportLimits;

use crate::middleware::rate_limit::Caller;
use crate::representation::problem::ApiError;

/// The slots of one kind of long-lived answer.
#[derive(Debug)]
pub(crate) struct LongLived {
    /// What the answers are, for messages ("live streams", "exports").
    kind: &'static str,
    per_caller: usize,
    total: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    by_caller: HashMap<Caller, usize>,
    total: usize,
}

/// One answer's slot; given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    owner: Arc<LongLived>,
    caller: Caller,
}

/// How long a refused caller is told to wait before trying again, in seconds.
const RETRY_AFTER: u64 = 5;

impl LongLived {
    /// At most `per_caller` answers of `kind` per caller, and `total` in all (each at least 1).
    pub(crate) fn new(kind: &'static str, per_caller: usize, total: usize) -> Arc<Self> {
        Arc::new(Self {
            kind,
            per_caller: per_caller.max(1),
            total: total.max(1),
            held: Mutex::new(Held::default()),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // A poisoned lock still holds consistent counts: nothing here panics midway.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for `caller`.
    ///
    /// # Errors
    ///
    /// 429 when `caller` holds its share already, 503 when every slot is taken.
    pub(crate) fn open(self: &Arc<Self>, caller: Caller) -> Result<Slot, ApiError> {
        let mut held = self.held();
        let mine = held.by_caller.get(&caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(ApiError::TooManyRequests {
                detail: format!(
                    "at most {} {} at once per caller: close one first",
                    self.per_caller, self.kind
                ),
                retry_after: RETRY_AFTER,
            });
        }
        if held.total >= self.total {
            return Err(ApiError::Busy(format!(
                "the service has as many {} open as it allows ({}); retry shortly",
                self.kind, self.total
            )));
        }
        held.total += 1;
        *held.by_caller.entry(caller.clone()).or_default() += 1;
        Ok(Slot {
            owner: Arc::clone(self),
            caller,
        })
    }

    /// How many are open.
    pub(crate) fn open_now(&self) -> usize {
        self.held().total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.owner.held();
        held.total = held.total.saturating_sub(1);
        if let Some(mine) = held.by_caller.get_mut(&self.caller) {
            *mine -= 1;
            if *mine == 0 {
                // Forgotten at once: the map holds the callers with answers open, no others.
                held.by_caller.remove(&self.caller);
            }
        }
    }
}

/// The exports this instance runs at once, each holding one database connection, one blocking
/// thread and a snapshot for as long as its client reads: bounded in all and per caller, and each
/// in duration and in how long its client may stall.
#[derive(Debug)]
pub(crate) struct ExportSlots {
    pub(crate) slots: Arc<LongLived>,
    pub(crate) limits: ExportLimits,
}

/// The live streams this instance holds open: bounded in all and per caller, and each in
/// lifetime.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    pub(crate) slots: Arc<LongLived>,
    /// How long a stream lives before it ends cleanly (the client reconnects with
    /// `Last-Event-ID`).
    pub(crate) lifetime: Duration,
    /// How often a stream sends a comment line, so that proxies keep an idle one open.
    pub(crate) keep_alive: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_gets_its_share_and_no_more_and_slots_come_back_when_dropped() {
        let streams = LongLived::new("live streams", 2, 3);
        let (a, b) = (Caller::Key("a".into()), Caller::Key("b".into()));
        let first = streams.open(a.clone()).unwrap();
        let _second = streams.open(a.clone()).unwrap();
        assert!(matches!(
            streams.open(a.clone()),
            Err(ApiError::TooManyRequests { .. })
        ));
        let _third = streams.open(b.clone()).unwrap();
        // Every slot taken: another caller waits too, with a 503.
        assert!(matches!(
            streams.open(Caller::Address(None)),
            Err(ApiError::Busy(_))
        ));
        drop(first);
        assert_eq!(streams.open_now(), 2);
        let _again = streams.open(a).unwrap();
        assert!(matches!(streams.open(b), Err(ApiError::Busy(_))));
    }

    #[test]
    fn a_caller_with_nothing_open_is_forgotten() {
        let exports = LongLived::new("exports", 1, 10);
        for n in 0..100 {
            drop(exports.open(Caller::Key(format!("k{n}"))).unwrap());
        }
        assert!(exports.held().by_caller.is_empty());
        assert_eq!(exports.open_now(), 0);
    }
}
