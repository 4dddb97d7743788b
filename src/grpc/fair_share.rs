//! Fair shares of the concurrency slots: besides the server's limit, each calling service and each actor it
//! acts for may run only so many calls at once, so one greedy or broken caller cannot starve the others.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Which limit a shed call met; the `limit` label of `grpc_server_shed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Limit {
    /// The server's `--max-concurrent-calls`.
    Server,
    /// `--max-calls-per-caller`.
    Caller,
    /// `--max-calls-per-actor`.
    Actor,
}

impl Limit {
    pub(super) fn label(self) -> &'static str {
        match self {
            Limit::Server => "server",
            Limit::Caller => "caller",
            Limit::Actor => "actor",
        }
    }
}

/// Whose calls are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Caller(String),
    Actor {
        caller: String,
        campaign: String,
        actor: String,
    },
}

/// The calls each caller and actor runs now; entries go when their count does.
pub(super) struct Shares {
    per_caller: usize,
    per_actor: usize,
    running: Mutex<HashMap<Key, usize>>,
}

/// A refused share: which one, and its size.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Full {
    pub(super) limit: Limit,
    pub(super) size: usize,
    /// Who it is, for the message: `caller "x"` or `actor "a" of campaign "c"`.
    pub(super) whose: String,
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flag = match self.limit {
            Limit::Actor => "--max-calls-per-actor",
            _ => "--max-calls-per-caller",
        };
        write!(
            f,
            "{} already runs its share of {} concurrent calls on this replica ({flag}); let some finish, \
             then retry with backoff",
            self.whose, self.size
        )
    }
}

/// The shares one call holds; given back when dropped.
pub(super) struct Held {
    shares: Arc<Shares>,
    keys: Vec<Key>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut running = self
            .shares
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some(count) = running.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    running.remove(key);
                }
            }
        }
    }
}

impl Shares {
    pub(super) fn new(per_caller: usize, per_actor: usize) -> Arc<Self> {
        Arc::new(Self {
            per_caller,
            per_actor,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a call of `caller`, acting for `actor` (campaign, actor id) when it names one; or says which
    /// share is full, counting nothing. An actor is counted per caller, so no caller can use up another's
    /// users' shares.
    pub(super) fn take(
        self: &Arc<Self>,
        caller: &str,
        actor: Option<(&str, &str)>,
    ) -> Result<Held, Full> {
        // The actor's share first: when both are full, it is the one to name.
        let mut wanted = Vec::with_capacity(2);
        if let Some((campaign, actor)) = actor {
            wanted.push((
                Key::Actor {
                    caller: caller.to_owned(),
                    campaign: campaign.to_owned(),
                    actor: actor.to_owned(),
                },
                self.per_actor,
                Limit::Actor,
            ));
        }
        wanted.push((
            Key::Caller(caller.to_owned()),
            self.per_caller,
            Limit::Caller,
        ));
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for (key, size, limit) in &wanted {
            if running.get(key).copied().unwrap_or(0) >= *size {
                let whose = match key {
                    Key::Caller(caller) => format!("caller {caller:?}"),
                    Key::Actor {
                        campaign, actor, ..
                    } => format!("actor {actor:?} of campaign {campaign:?}"),
                };
                return Err(Full {
                    limit: *limit,
                    size: *size,
                    whose,
                });
            }
        }
        for (key, _, _) in &wanted {
            *running.entry(key.clone()).or_insert(0) += 1;
        }
        drop(running);
        Ok(Held {
            shares: self.clone(),
            keys: wanted.into_iter().map(|(key, _, _)| key).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_and_actor_gets_its_own_share_back_when_calls_end() {
        let shares = Shares::new(3, 2);
        let a1 = shares.take("a", Some(("c", "u1"))).unwrap();
        let _a2 = shares.take("a", Some(("c", "u1"))).unwrap();
        let full = shares.take("a", Some(("c", "u1"))).err().unwrap();
        assert_eq!((full.limit, full.size), (Limit::Actor, 2));
        assert!(full.to_string().contains("--max-calls-per-actor"), "{full}");
        // The same actor id in another campaign is another actor.
        let _a3 = shares.take("a", Some(("d", "u1"))).unwrap();
        let full = shares.take("a", None).err().unwrap();
        assert_eq!((full.limit, full.size), (Limit::Caller, 3));
        // Another caller is not affected, and a refusal counted nothing.
        let _b = shares.take("b", Some(("c", "u1"))).unwrap();
        drop(a1);
        let _a4 = shares.take("a", Some(("c", "u1"))).unwrap();
        drop((_a2, _a3, _a4, _b));
        assert!(shares.running.lock().unwrap().is_empty(), "nothing left");
    }
}
