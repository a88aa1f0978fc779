//! Which of a node's events count: the sequence and fencing step of recording events, a pure
//! function of the task as stored and the session the event came in, so every case is a row
//! of a table (below). The store runs it inside the transaction that writes the result.

use super::SessionKey;
use dispatch_core::TaskState;

/// What the store holds of a task, as far as fencing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held<'a> {
    /// The node it is assigned to.
    pub node: &'a str,
    /// Its state.
    pub state: TaskState,
    /// The session epoch its current run belongs to.
    pub epoch: u64,
    /// The last event seq committed.
    pub last_seq: u64,
}

/// What becomes of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// No such task: acked (the node forgets it), nothing recorded.
    Unknown,
    /// The task runs on another node: acked, recorded as fenced.
    OtherNode,
    /// From a session the task's run no longer belongs to: neither acked nor recorded (its
    /// own session resends it).
    Superseded,
    /// Committed already: acked up to what is committed.
    Duplicate {
        /// The seq to ack.
        ack: u64,
    },
    /// Events are missing before it: the node is asked for `from..to`; acked up to what is
    /// committed.
    Gap {
        /// The first missing seq.
        from: u64,
        /// The seq that arrived.
        to: u64,
    },
    /// Its seq is committed now. `current`: a run of the task is on the node (the event's
    /// content counts, in order); otherwise it is history.
    Take {
        /// A run of the task holds a slot on the node.
        current: bool,
    },
}

/// What becomes of event `seq` of a task held as `task` (None: unknown), from `session`.
pub fn fence(task: Option<Held<'_>>, session: &SessionKey, seq: u64) -> Fence {
    let Some(t) = task else {
        return Fence::Unknown;
    };
    if t.node != session.node {
        return Fence::OtherNode;
    }
    // A run of the task is on the node now (its events count, in order, from its session
    // only); otherwise (ended, or queued again) they are history.
    let current = t.state.holds_slot();
    if current && t.epoch != session.epoch {
        return Fence::Superseded;
    }
    if seq <= t.last_seq {
        return Fence::Duplicate { ack: t.last_seq };
    }
    if current && seq != t.last_seq + 1 {
        return Fence::Gap {
            from: t.last_seq + 1,
            to: seq,
        };
    }
    Fence::Take { current }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    #[test]
    fn every_case_of_the_table() {
        let session = SessionKey {
            node: "box".into(),
            epoch: 7,
        };
        let held = |node, state, epoch, last_seq| {
            Some(Held {
                node,
                state,
                epoch,
                last_seq,
            })
        };
        #[rustfmt::skip]
        let table: &[(Option<Held>, u64, Fence)] = &[
            // unknown task
            (None,                                  1, Fence::Unknown),
            // another node's task, whatever its seq or state
            (held("gpu", Running, 7, 3),            4, Fence::OtherNode),
            (held("gpu", Completed, 7, 3),          1, Fence::OtherNode),
            // a run of this node, from an older or newer session
            (held("box", Running, 6, 3),            4, Fence::Superseded),
            (held("box", Assigned, 8, 0),           1, Fence::Superseded),
            (held("box", Waiting, 9, 3),            4, Fence::Superseded),
            // the next seq of the current run
            (held("box", Running, 7, 3),            4, Fence::Take { current: true }),
            (held("box", Assigned, 7, 0),           1, Fence::Take { current: true }),
            (held("box", Waiting, 7, 10),          11, Fence::Take { current: true }),
            // committed already (a resend)
            (held("box", Running, 7, 3),            3, Fence::Duplicate { ack: 3 }),
            (held("box", Running, 7, 3),            1, Fence::Duplicate { ack: 3 }),
            // a hole before it
            (held("box", Running, 7, 3),            6, Fence::Gap { from: 4, to: 6 }),
            (held("box", Assigned, 7, 0),           2, Fence::Gap { from: 1, to: 2 }),
            // an ended (or requeued) task: any session, history only, holes allowed
            (held("box", Completed, 3, 3),          9, Fence::Take { current: false }),
            (held("box", Cancelled, 7, 3),          4, Fence::Take { current: false }),
            (held("box", Queued, 2, 5),             6, Fence::Take { current: false }),
            (held("box", Failed, 7, 5),             5, Fence::Duplicate { ack: 5 }),
        ];
        for (i, (task, seq, want)) in table.iter().enumerate() {
            assert_eq!(
                fence(*task, &session, *seq),
                *want,
                "row {i}: {task:?} seq {seq}"
            );
        }
    }
}
