//! Circuit breakers: one per provider endpoint (a channel's sending API) and one per Genesys
//! tenant. After `failures` failures in a row the circuit opens: nothing is sent there for
//! `cooldown`, and what waits to be sent waits (it is not counted as a try, so it does not
//! fail). Then one probe goes (half-open): a success closes the circuit and the queue drains;
//! a failure opens it for another cool-down. Each change of state is logged and kept as the
//! gauge `chatledger_circuit_state` (0 closed, 1 half-open, 2 open) and the counter
//! `chatledger_circuit_transitions_total`.
//!
//! The state is this process's: each process learns a provider is down from its own calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When a circuit opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures in a row that open the circuit (`BREAKER_FAILURES`).
    pub failures: u32,
    /// How long it stays open before a probe (`BREAKER_COOLDOWN_SECONDS`, or `_MS`).
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe went at `since`; no other call until it is answered (or a cool-down passes
    /// without an answer, when another probe may go).
    HalfOpen {
        since: Instant,
    },
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half-open",
        }
    }

    fn gauge(&self) -> f64 {
        match self {
            State::Closed { .. } => 0.0,
            State::HalfOpen { .. } => 1.0,
            State::Open { .. } => 2.0,
        }
    }
}

/// What a circuit lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: calls go as usual.
    Go,
    /// Half-open: this call is the probe. A transient failure of it opens the circuit again
    /// and must not count against the message (its try is not its fault); a probe not made
    /// after all is handed back with [`Circuits::abandon`].
    Probe,
}

/// Every circuit of this process, by name (`channel:NAME`, `genesys:TENANT`). Cloning shares
/// them.
#[derive(Debug, Clone, Default)]
pub struct Circuits {
    settings: BreakerSettings,
    states: Arc<Mutex<HashMap<String, State>>>,
}

impl Circuits {
    pub fn new(settings: BreakerSettings) -> Self {
        Circuits {
            settings,
            states: Arc::default(),
        }
    }

    /// Whether a call to `circuit` may go now, and whether it is the probe; `Err(at)`: not
    /// before `at`.
    pub fn permit(&self, circuit: &str) -> Result<Permit, Instant> {
        self.permit_at(circuit, Instant::now())
    }

    fn permit_at(&self, circuit: &str, now: Instant) -> Result<Permit, Instant> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let Some(state) = states.get_mut(circuit) else {
            return Ok(Permit::Go);
        };
        match *state {
            State::Closed { .. } => Ok(Permit::Go),
            State::Open { until } if now < until => Err(until),
            State::HalfOpen { since } if now < since + self.settings.cooldown => {
                // The probe's answer decides; ask again in a moment.
                Err(now + (self.settings.cooldown / 10).max(Duration::from_millis(10)))
            }
            State::Open { .. } | State::HalfOpen { .. } => {
                self.change(circuit, state, State::HalfOpen { since: now });
                Ok(Permit::Probe)
            }
        }
    }

    /// A probe permitted but not made (its try could not be recorded): the next call may
    /// probe at once instead of waiting out a cool-down for an answer that will not come.
    pub fn abandon(&self, circuit: &str) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = states.get_mut(circuit) {
            if matches!(state, State::HalfOpen { .. }) {
                *state = State::Open {
                    until: Instant::now(),
                };
            }
        }
    }

    /// A call to `circuit` was answered: the endpoint works (a refusal of one message, such
    /// as a 400, counts as an answer).
    pub fn succeeded(&self, circuit: &str) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = states.get_mut(circuit) {
            if *state != (State::Closed { failures: 0 }) {
                self.change(circuit, state, State::Closed { failures: 0 });
            }
        }
    }

    /// A call to `circuit` failed the way a down endpoint fails (5xx, 429, a timeout, no
    /// connection).
    pub fn failed(&self, circuit: &str) {
        self.failed_at(circuit, Instant::now());
    }

    fn failed_at(&self, circuit: &str, now: Instant) {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let state = states
            .entry(circuit.to_owned())
            .or_insert(State::Closed { failures: 0 });
        let open = State::Open {
            until: now + self.settings.cooldown,
        };
        match *state {
            State::Closed { failures } if failures + 1 >= self.settings.failures => {
                self.change(circuit, state, open);
            }
            State::Closed { failures } => {
                *state = State::Closed {
                    failures: failures + 1,
                }
            }
            State::HalfOpen { .. } => self.change(circuit, state, open),
            // A call that went before the circuit opened, answered after.
            State::Open { .. } => {}
        }
    }

    /// Each circuit that is not closed, and its state (`open`, `half-open`).
    pub fn not_closed(&self) -> Vec<(String, &'static str)> {
        let states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, &'static str)> = states
            .iter()
            .filter(|(_, s)| !matches!(s, State::Closed { .. }))
            .map(|(name, s)| (name.clone(), s.name()))
            .collect();
        out.sort();
        out
    }

    fn change(&self, circuit: &str, state: &mut State, to: State) {
        let from = *state;
        *state = to;
        if from.name() == to.name() {
            return;
        }
        match to {
            State::Open { .. } => tracing::warn!(
                circuit,
                from = from.name(),
                cooldown_ms = self.settings.cooldown.as_millis() as u64,
                "circuit opened: calls there stop for the cool-down; what waits stays queued"
            ),
            State::HalfOpen { .. } => {
                tracing::info!(circuit, "circuit half-open: one probe goes")
            }
            State::Closed { .. } => tracing::info!(circuit, "circuit closed: calls resume"),
        }
        metrics::gauge!("chatledger_circuit_state", "circuit" => circuit.to_owned())
            .set(to.gauge());
        metrics::counter!("chatledger_circuit_transitions_total",
            "circuit" => circuit.to_owned(), "to" => to.name())
        .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_then_one_probe_decides() {
        let circuits = Circuits::new(BreakerSettings {
            failures: 3,
            cooldown: Duration::from_secs(10),
        });
        let t0 = Instant::now();
        let c = "channel:pinbot";
        circuits.failed_at(c, t0);
        circuits.failed_at(c, t0);
        circuits.succeeded(c);
        circuits.failed_at(c, t0);
        circuits.failed_at(c, t0);
        assert_eq!(
            circuits.permit_at(c, t0),
            Ok(Permit::Go),
            "a success started the count again"
        );
        circuits.failed_at(c, t0);
        assert_eq!(circuits.permit_at(c, t0), Err(t0 + Duration::from_secs(10)));
        assert_eq!(circuits.not_closed(), vec![(c.to_owned(), "open")]);
        assert_eq!(
            circuits.permit_at("channel:other", t0),
            Ok(Permit::Go),
            "one per endpoint"
        );
        // After the cool-down one probe goes; the next call waits for its answer.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(circuits.permit_at(c, t1), Ok(Permit::Probe));
        assert!(circuits.permit_at(c, t1).is_err());
        // The probe failed: open again.
        circuits.failed_at(c, t1);
        assert_eq!(
            circuits.permit_at(c, t1 + Duration::from_secs(5)),
            Err(t1 + Duration::from_secs(10))
        );
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(circuits.permit_at(c, t2), Ok(Permit::Probe));
        circuits.succeeded(c);
        assert_eq!(circuits.permit_at(c, t2), Ok(Permit::Go));
        assert!(circuits.not_closed().is_empty());
    }

    #[test]
    fn a_probe_never_answered_does_not_hold_the_circuit_for_ever() {
        let circuits = Circuits::new(BreakerSettings {
            failures: 1,
            cooldown: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        circuits.failed_at("genesys:t", t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(circuits.permit_at("genesys:t", t1), Ok(Permit::Probe));
        assert!(circuits
            .permit_at("genesys:t", t1 + Duration::from_millis(500))
            .is_err());
        assert_eq!(
            circuits.permit_at("genesys:t", t1 + Duration::from_secs(1)),
            Ok(Permit::Probe)
        );
        // A probe given back lets the next call probe at once.
        circuits.abandon("genesys:t");
        assert_eq!(circuits.permit("genesys:t"), Ok(Permit::Probe));
    }
}
