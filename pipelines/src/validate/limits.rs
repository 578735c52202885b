//! The limits validation enforces. They bound what one workflow can ask
//! of the cluster and catch unit mistakes; the run state machine relies on
//! the same numbers when it expands a workflow.

/// Most retries one step may have.
pub const MAX_RETRY_LIMIT: i64 = 100;
/// Longest deadline (30 days); more is surely a unit mistake.
pub const MAX_DEADLINE_SECONDS: i64 = 30 * 24 * 3600;
/// Deepest nesting of DAGs in a run (bounds recursion that has a base case).
pub const MAX_DAG_DEPTH: usize = 50;
/// Most tasks in one DAG template.
pub const MAX_TASKS_PER_DAG: usize = 1000;
/// Most items one `withItems` / `withParam` may expand to.
pub const MAX_FAN_OUT: usize = 10_000;
