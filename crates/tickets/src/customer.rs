//! Customers (requesters): the people tickets are about. Email is unique per workspace,
//! case-insensitively, among customers that are not deleted; delete is soft so old tickets
//! keep their requester.
//!
//! Owns the `customer` table. Must never change tickets.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};

use crate::{
    Helpdesk, TicketError,
    ids::{Kind, encode},
    listing::{
        ListSpec, Page, PageRequest, SortExpression, SortField, contains_pattern, fetch_page,
    },
    validate::{self, Problems},
};

/// A customer as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Customer {
    /// Row key (not serialised; `id` is its public form).
    #[serde(skip)]
    pub key: i64,
    /// `cus_…`.
    pub id: String,
    /// Email (unique per workspace).
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Company name.
    pub company: Option<String>,
    /// Free-form fields.
    pub custom_fields: serde_json::Value,
    /// Tickets requested (not deleted).
    pub ticket_count: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct CustomerRow {
    id: i64,
    email: Option<String>,
    name: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    custom_fields: serde_json::Value,
    ticket_count: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<CustomerRow> for Customer {
    fn from(row: CustomerRow) -> Self {
        Self {
            key: row.id,
            id: encode(Kind::Customer, row.id),
            email: row.email,
            name: row.name,
            phone: row.phone,
            company: row.company,
            custom_fields: row.custom_fields,
            ticket_count: row.ticket_count,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The columns of [`CustomerRow`] over `customer c`.
macro_rules! customer_columns {
    () => {
        "c.id, c.email, c.name, c.phone, c.company, c.custom_fields, \
         (SELECT count(*) FROM ticket t WHERE t.workspace_id = c.workspace_id AND t.requester_id = c.id AND t.deleted_at IS NULL) \
         AS ticket_count, c.created_at, c.updated_at"
    };
}
const COLUMNS: &str = customer_columns!();

const LIST: ListSpec = ListSpec {
    select: concat!(customer_columns!(), " FROM customer c"),
    from: "customer c",
    key: "c.id",
    sorts: |field| match field {
        SortField::CreatedAt => Some(SortExpression {
            sql: "c.created_at",
            cast: "timestamptz",
        }),
        SortField::UpdatedAt => Some(SortExpression {
            sql: "c.updated_at",
            cast: "timestamptz",
        }),
        SortField::Name => Some(SortExpression {
            sql: "lower(coalesce(c.name, c.email, ''))",
            cast: "text",
        }),
        SortField::Priority | SortField::Status => None,
    },
};

/// A new customer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// Email (required unless `phone` is given).
    pub email: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Custom fields (an object).
    pub custom_fields: Option<serde_json::Value>,
}

/// Changes to a customer: absent fields stay, `null` clears.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    /// Email.
    #[serde(default, deserialize_with = "validate::nullable")]
    pub email: Option<Option<String>>,
    /// Name.
    #[serde(default, deserialize_with = "validate::nullable")]
    pub name: Option<Option<String>>,
    /// Phone.
    #[serde(default, deserialize_with = "validate::nullable")]
    pub phone: Option<Option<String>>,
    /// Company.
    #[serde(default, deserialize_with = "validate::nullable")]
    pub company: Option<Option<String>>,
    /// Custom fields (replaces the object).
    pub custom_fields: Option<serde_json::Value>,
}

/// Customer list filters.
#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    /// Exact email (case-insensitive).
    pub email: Option<String>,
    /// Exact phone.
    pub phone: Option<String>,
    /// Substring of name or email.
    pub search: Option<String>,
}

const EMAIL_INDEX: &str = "customer_email";

fn duplicate_email(error: sqlx::Error) -> TicketError {
    if validate::is_unique_violation(&error, EMAIL_INDEX) {
        TicketError::invalid("email", "is already used by another customer")
    } else {
        error.into()
    }
}

pub(crate) async fn fetch(
    db: impl PgExecutor<'_>,
    workspace_id: i64,
    key: i64,
) -> Result<Option<Customer>, TicketError> {
    let row: Option<CustomerRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM customer c WHERE c.workspace_id = $1 AND c.id = $2 AND c.deleted_at IS NULL"
    ))
    .bind(workspace_id)
    .bind(key)
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// Finds the live customer with `email` or creates one (named `name`); returns its key. A
/// found customer without a name gets `name`.
///
/// The common case (the customer exists) reads without locking, so concurrent tickets from
/// one customer do not queue behind each other; only a first contact inserts, and a race
/// between two first contacts is settled by the unique index.
pub(crate) async fn find_or_create_by_email(
    conn: &mut PgConnection,
    workspace_id: i64,
    email: &str,
    name: Option<&str>,
) -> Result<i64, TicketError> {
    const FIND: &str = "SELECT id, name IS NULL FROM customer \
         WHERE workspace_id = $1 AND lower(email) = lower($2) AND deleted_at IS NULL";
    let mut found: Option<(i64, bool)> = sqlx::query_as(FIND)
        .bind(workspace_id)
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO customer (workspace_id, email, name) VALUES ($1, $2, $3) \
             ON CONFLICT (workspace_id, lower(email)) WHERE email IS NOT NULL AND deleted_at IS NULL \
             DO NOTHING RETURNING id",
        )
        .bind(workspace_id)
        .bind(email)
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(key) = inserted {
            return Ok(key);
        }
        found = sqlx::query_as(FIND)
            .bind(workspace_id)
            .bind(email)
            .fetch_optional(&mut *conn)
            .await?;
    }
    let (key, nameless) = found.ok_or(TicketError::NotFound("Customer"))?;
    if nameless && let Some(name) = name {
        sqlx::query(
            "UPDATE customer SET name = $2, updated_at = now() WHERE id = $1 AND name IS NULL",
        )
        .bind(key)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    }
    Ok(key)
}

impl Helpdesk<'_> {
    /// Creates a customer.
    pub async fn create_customer(&self, input: NewCustomer) -> Result<Customer, TicketError> {
        let mut problems = Problems::default();
        let email = input
            .email
            .as_deref()
            .filter(|e| !e.trim().is_empty())
            .and_then(|e| problems.check(validate::email("email", e)));
        let name = problems
            .check(validate::optional_text("name", input.name.as_deref(), 200))
            .flatten();
        let phone = problems
            .check(validate::optional_text("phone", input.phone.as_deref(), 50))
            .flatten();
        let company = problems
            .check(validate::optional_text(
                "company",
                input.company.as_deref(),
                200,
            ))
            .flatten();
        let custom = match &input.custom_fields {
            Some(value) => problems.check(validate::custom_fields("custom_fields", value)),
            None => Some(serde_json::json!({})),
        };
        if email.is_none() && phone.is_none() && input.email.is_none() {
            problems.add("email", "is required (or give a phone number)");
        }
        problems.finish()?;
        let key: i64 = sqlx::query_scalar(
            "INSERT INTO customer (workspace_id, email, name, phone, company, custom_fields) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(self.workspace_id)
        .bind(&email)
        .bind(&name)
        .bind(&phone)
        .bind(&company)
        .bind(custom.unwrap_or_default())
        .fetch_one(self.pool)
        .await
        .map_err(duplicate_email)?;
        self.customer(key).await
    }

    /// One customer.
    pub async fn customer(&self, key: i64) -> Result<Customer, TicketError> {
        fetch(self.pool, self.workspace_id, key)
            .await?
            .ok_or(TicketError::NotFound("Customer"))
    }

    /// Changes a customer.
    pub async fn update_customer(
        &self,
        key: i64,
        patch: CustomerPatch,
    ) -> Result<Customer, TicketError> {
        let mut problems = Problems::default();
        let mut update = QueryBuilder::<Postgres>::new("UPDATE customer SET updated_at = now()");
        if let Some(email) = &patch.email {
            let email = match email.as_deref().filter(|e| !e.trim().is_empty()) {
                Some(e) => problems.check(validate::email("email", e)),
                None => None,
            };
            update.push(", email = ").push_bind(email);
        }
        for (field, value, max) in [
            ("name", &patch.name, 200),
            ("phone", &patch.phone, 50),
            ("company", &patch.company, 200),
        ] {
            if let Some(value) = value {
                let text = problems
                    .check(validate::optional_text(field, value.as_deref(), max))
                    .flatten();
                update.push(format_args!(", {field} = ")).push_bind(text);
            }
        }
        if let Some(custom) = &patch.custom_fields
            && let Some(custom) = problems.check(validate::custom_fields("custom_fields", custom))
        {
            update.push(", custom_fields = ").push_bind(custom);
        }
        problems.finish()?;
        update
            .push(" WHERE workspace_id = ")
            .push_bind(self.workspace_id)
            .push(" AND id = ")
            .push_bind(key)
            .push(" AND deleted_at IS NULL");
        let done = update
            .build()
            .execute(self.pool)
            .await
            .map_err(duplicate_email)?;
        if done.rows_affected() == 0 {
            return Err(TicketError::NotFound("Customer"));
        }
        self.customer(key).await
    }

    /// Deletes a customer (soft: their tickets keep them as requester).
    pub async fn delete_customer(&self, key: i64) -> Result<(), TicketError> {
        let done = sqlx::query(
            "UPDATE customer SET deleted_at = now(), updated_at = now() \
             WHERE workspace_id = $1 AND id = $2 AND deleted_at IS NULL",
        )
        .bind(self.workspace_id)
        .bind(key)
        .execute(self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(TicketError::NotFound("Customer"));
        }
        Ok(())
    }

    /// Lists customers.
    pub async fn list_customers(
        &self,
        filter: &CustomerFilter,
        page: &PageRequest,
    ) -> Result<Page<Customer>, TicketError> {
        let workspace_id = self.workspace_id;
        let push_where = |query: &mut QueryBuilder<'static, Postgres>| {
            query
                .push("c.workspace_id = ")
                .push_bind(workspace_id)
                .push(" AND c.deleted_at IS NULL");
            if let Some(email) = &filter.email {
                query
                    .push(" AND lower(c.email) = lower(")
                    .push_bind(email.clone())
                    .push(")");
            }
            if let Some(phone) = &filter.phone {
                query.push(" AND c.phone = ").push_bind(phone.clone());
            }
            if let Some(search) = &filter.search {
                let pattern = contains_pattern(search);
                query
                    .push(" AND (c.name ILIKE ")
                    .push_bind(pattern.clone())
                    .push(" OR c.email ILIKE ")
                    .push_bind(pattern)
                    .push(")");
            }
        };
        let page: Page<CustomerRow> = fetch_page(self.pool, &LIST, &push_where, page).await?;
        Ok(page.map(Into::into))
    }
}
