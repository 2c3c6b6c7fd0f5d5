//! Templates as recorded: a name and a JSON spec the manager validates and reads.

use sqlx::any::AnyRow;

use crate::{col, paged, unique, Paged, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct TemplateRecord {
    pub id: String,
    pub name: String,
    /// JSON.
    pub spec: String,
    pub created_at_ms: i64,
}

fn template(row: &AnyRow) -> Result<TemplateRecord> {
    Ok(TemplateRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        spec: col(row, "spec")?,
        created_at_ms: col(row, "created_at")?,
    })
}

impl Store {
    pub async fn insert_template(&self, t: &TemplateRecord) -> Result<()> {
        sqlx::query("INSERT INTO templates (id, name, spec, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.spec)
            .bind(t.created_at_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                unique(e, || {
                    format!(
                        "a template named {:?} already exists; pick another name",
                        t.name
                    )
                })
            })?;
        Ok(())
    }

    /// A template by id, or by name.
    pub async fn template(&self, id_or_name: &str) -> Result<TemplateRecord> {
        let row = sqlx::query(
            "SELECT id, name, spec, created_at FROM templates WHERE id = $1 OR name = $1 \
             ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(id_or_name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("template {id_or_name:?}")))?;
        template(&row)
    }

    pub async fn templates(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Paged<TemplateRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, spec, created_at FROM templates WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(template).collect::<Result<Vec<_>>>()?;
        Ok(paged(items, limit, |t| &t.id))
    }

    pub async fn delete_template(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM templates WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
