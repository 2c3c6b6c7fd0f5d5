//! Schedules: when each runs next, and running what is due.
//!
//! Every second each manager looks for due schedules and claims each run by moving the
//! schedule's `next_run_at` forward in the same transaction that queues the invocation
//! (`Store::claim_schedule_run`): whichever manager wins runs it, and a run claimed just
//! before a crash is still queued when a manager comes back. Missed runs are not replayed
//! one by one: a schedule that fell behind runs once, then keeps its cadence from now.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hearth_store::{now_ms, to_time, ScheduleRecord};
use hearth_types::function::{CreateSchedule, Schedule};
use hearth_types::new_id;

use super::App;
use crate::error::{ApiError, ApiResult};

const MAX_SCHEDULES_PER_FUNCTION: usize = 32;
const MIN_EVERY: Duration = Duration::from_secs(1);
const MAX_EVERY: Duration = Duration::from_secs(31 * 24 * 3600);

/// A parsed schedule expression.
#[derive(Debug)]
pub enum When {
    Every(Duration),
    Cron(Box<croner::Cron>),
}

impl When {
    pub fn parse(expr: &str) -> Result<When, String> {
        let expr = expr.trim();
        if let Some(rest) = expr.strip_prefix("@every") {
            let rest = rest.trim();
            let (num, unit) = rest.split_at(
                rest.find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len()),
            );
            let n: u64 = num.parse().map_err(|_| {
                format!(
                    "@every needs a number and a unit (s, m, h), like `@every 30s`; got {rest:?}"
                )
            })?;
            let secs = match unit {
                "s" => n,
                "m" => n * 60,
                "h" => n * 3600,
                _ => return Err(format!("@every: unknown unit {unit:?}; use s, m or h")),
            };
            let d = Duration::from_secs(secs);
            if !(MIN_EVERY..=MAX_EVERY).contains(&d) {
                return Err("@every must be between 1s and 744h".into());
            }
            return Ok(When::Every(d));
        }
        let cron = match expr {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            other if other.starts_with('@') => {
                return Err(format!("unknown schedule {other:?}: use @every 30s, @hourly, @daily, @weekly, @monthly or 5-field cron"))
            }
            other => other,
        };
        if cron.split_whitespace().count() != 5 {
            return Err(format!(
                "{expr:?} is not a schedule: use @every 30s, @hourly, @daily, or 5-field cron (minute hour day month weekday)"
            ));
        }
        croner::Cron::from_str(cron)
            .map(|c| When::Cron(Box::new(c)))
            .map_err(|e| format!("invalid cron {cron:?}: {e}"))
    }

    /// The first run strictly after `after_ms`.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            When::Every(d) => Some(after_ms + d.as_millis() as i64),
            When::Cron(c) => {
                let at: DateTime<Utc> = to_time(after_ms);
                c.find_next_occurrence(&at, false)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
        }
    }
}

fn view(s: ScheduleRecord, function: &str) -> Schedule {
    Schedule {
        event: serde_json::from_str(&s.event).unwrap_or_default(),
        id: s.id,
        function: function.to_string(),
        expr: s.expr,
        next_run_at: to_time(s.next_run_at_ms),
        last_run_at: s.last_run_at_ms.map(to_time),
        created_at: to_time(s.created_at_ms),
    }
}

impl App {
    pub async fn create_schedule(
        &self,
        function: &str,
        req: CreateSchedule,
    ) -> ApiResult<Schedule> {
        let f = self.store().function(function).await?;
        let when = When::parse(&req.expr).map_err(ApiError::BadRequest)?;
        let event = req.event.to_string();
        if event.len() > super::functions::MAX_EVENT_BYTES {
            return Err(ApiError::PayloadTooLarge("the event is over 1 MiB".into()));
        }
        if self.store().schedules(&f.id).await?.len() >= MAX_SCHEDULES_PER_FUNCTION {
            return Err(ApiError::Conflict(format!(
                "function {} already has {MAX_SCHEDULES_PER_FUNCTION} schedules; delete one first",
                f.name
            )));
        }
        let now = now_ms();
        let next = when
            .next_after(now)
            .ok_or_else(|| ApiError::bad_request(format!("{:?} never runs", req.expr)))?;
        let s = ScheduleRecord {
            id: new_id(),
            function_id: f.id.clone(),
            expr: req.expr.trim().to_string(),
            event,
            next_run_at_ms: next,
            last_run_at_ms: None,
            created_at_ms: now,
        };
        self.store().insert_schedule(&s).await?;
        Ok(view(s, &f.name))
    }

    pub async fn list_schedules(&self, function: &str) -> ApiResult<Vec<Schedule>> {
        let f = self.store().function(function).await?;
        Ok(self
            .store()
            .schedules(&f.id)
            .await?
            .into_iter()
            .map(|s| view(s, &f.name))
            .collect())
    }

    pub async fn delete_schedule(&self, function: &str, id: &str) -> ApiResult<()> {
        let f = self.store().function(function).await?;
        self.store().delete_schedule(&f.id, id).await?;
        Ok(())
    }

    /// Claims and starts the schedules that are due, and starts queued invocations no one
    /// runs (those of a manager that stopped before running them).
    pub async fn run_due(&self) {
        let now = now_ms();
        match self.store().due_schedules(now, 100).await {
            Ok(due) => {
                for s in due {
                    let next = When::parse(&s.expr)
                        .ok()
                        .and_then(|w| w.next_after(now))
                        // An expression that no longer parses (or never runs again) stops.
                        .unwrap_or(i64::MAX / 2);
                    match self.store().claim_schedule_run(&s, next, &new_id()).await {
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, schedule = %s.id, "claiming a schedule run")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing due schedules"),
        }
        match self.store().queued_invocations(100).await {
            Ok(queued) => {
                for q in queued {
                    let app = self.clone();
                    tokio::spawn(async move { app.run_queued(q).await });
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing queued invocations"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_steps_schedules() {
        let t0 = 1_700_000_000_000; // 2023-11-14T22:13:20Z
        let every = When::parse("@every 30s").unwrap();
        assert_eq!(every.next_after(t0), Some(t0 + 30_000));
        assert_eq!(
            When::parse("@every 2m").unwrap().next_after(t0),
            Some(t0 + 120_000)
        );
        let hourly = When::parse("@hourly").unwrap().next_after(t0).unwrap();
        assert_eq!(to_time(hourly).to_rfc3339(), "2023-11-14T23:00:00+00:00");
        let daily = When::parse("@daily").unwrap().next_after(t0).unwrap();
        assert_eq!(to_time(daily).to_rfc3339(), "2023-11-15T00:00:00+00:00");
        let cron = When::parse("*/15 9 * * 1-5")
            .unwrap()
            .next_after(t0)
            .unwrap();
        assert_eq!(to_time(cron).to_rfc3339(), "2023-11-15T09:00:00+00:00");
        for bad in [
            "",
            "@every",
            "@every 0s",
            "@every 5d",
            "@yearly-ish",
            "* * *",
            "61 * * * *",
        ] {
            assert!(When::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
