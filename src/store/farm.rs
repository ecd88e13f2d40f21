//! The farm list: the rows of Kamailio's `dispatcher` table in regmirror's set
//! (`config::node_list` reads them into nodes). Read by the service and `regmirror node`;
//! written by `regmirror node add | remove` (an account with write access to the table).
use sqlx::mysql::MySqlPool;

use super::StoreError;
use crate::config::DispatcherRow;

type Row = (u32, String, i32, i32, String, String);

/// Every row of `set`, in the table's order.
pub async fn farm_rows(pool: &MySqlPool, set: i32) -> Result<Vec<DispatcherRow>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT `id`, `destination`, `flags`, `priority`, `attrs`, `description` \
         FROM `dispatcher` WHERE `setid` = ? ORDER BY `id`",
    )
    .bind(set)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, destination, flags, priority, attrs, description)| DispatcherRow {
                id,
                destination,
                flags,
                priority,
                attrs,
                description,
            },
        )
        .collect())
}

/// Adds a node's row to `set`; returns its id.
pub async fn insert_farm_row(
    pool: &MySqlPool,
    set: i32,
    destination: &str,
    attrs: &str,
    description: &str,
) -> Result<u32, StoreError> {
    let done = sqlx::query(
        "INSERT INTO `dispatcher` (`setid`, `destination`, `flags`, `priority`, `attrs`, `description`) \
         VALUES (?, ?, 0, 0, ?, ?)",
    )
    .bind(set)
    .bind(destination)
    .bind(attrs)
    .bind(description)
    .execute(pool)
    .await?;
    u32::try_from(done.last_insert_id())
        .map_err(|_| StoreError::Database("dispatcher id out of range".into()))
}

/// Deletes the row `id` of `set`; whether it was there.
pub async fn delete_farm_row(pool: &MySqlPool, set: i32, id: u32) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM `dispatcher` WHERE `setid` = ? AND `id` = ?")
        .bind(set)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Refuses (`Denied`) an account that may not add and delete rows, before anything changes.
pub async fn check_writable(pool: &MySqlPool) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM `dispatcher` WHERE 1 = 0")
        .execute(pool)
        .await?;
    sqlx::query("INSERT INTO `dispatcher` (`setid`) SELECT 0 FROM DUAL WHERE 1 = 0")
        .execute(pool)
        .await?;
    Ok(())
}
