//! The audit log: append-only, newest first when listed.

use hearth_types::api::Event;
use sqlx::any::AnyRow;

use crate::{col, paged, to_time, Paged, Result, Store};

fn event(row: &AnyRow) -> Result<Event> {
    Ok(Event {
        id: col(row, "id")?,
        at: to_time(col(row, "at")?),
        actor: col(row, "actor")?,
        action: col(row, "action")?,
        target: col(row, "target")?,
        status: u16::try_from(col::<i64>(row, "status")?).unwrap_or(0),
        result: col(row, "result")?,
        request_id: col(row, "request_id")?,
    })
}

impl Store {
    pub async fn append_event(&self, e: &Event) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (id, at, actor, action, target, status, result, request_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&e.id)
        .bind(e.at.timestamp_millis())
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target)
        .bind(i64::from(e.status))
        .bind(&e.result)
        .bind(e.request_id.as_deref())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Events newest first; the cursor is the id of the last event of the previous page.
    pub async fn list_events(&self, cursor: Option<&str>, limit: u32) -> Result<Paged<Event>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, status, result, request_id FROM events \
             WHERE ($1 = '' OR id < $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(cursor.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let events = rows.iter().map(event).collect::<Result<Vec<_>>>()?;
        Ok(paged(events, limit, |e| &e.id))
    }
}
