//! [`FanoutSnapshot`]: the fan-out's figures, a plain value the metrics snapshot carries
//! (kept apart from the publisher, which itself counts through `metrics`).

/// What the fan-out has done, for [`MetricsSnapshot`](crate::MetricsSnapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutSnapshot {
    /// Ticks handed to the fan-out queue.
    pub enqueued: u64,
    /// Ticks dropped because Redis was slow or down (the queue was full, or shutdown came
    /// before they could be sent).
    pub dropped: u64,
    /// Ticks not published because the spool spilled their batch to disk: PostgreSQL was
    /// away long enough for the backlog to outgrow the spool's memory budget. They are
    /// written to PostgreSQL (exactly once, like every spooled batch) but not fanned out;
    /// their fan-out sequences are gaps a subscriber can see.
    pub spilled: u64,
    /// Ticks published.
    pub published: u64,
    /// Messages published (one per symbol per batch).
    pub messages: u64,
    /// Failed publish or connect attempts.
    pub errors: u64,
    /// Connections made (the first one included).
    pub connects: u64,
    /// Batches waiting in the queue now.
    pub queue_depth: u64,
    /// True while the publisher has a working connection.
    pub connected: bool,
}
