//! The ticket core against a real, migrated PostgreSQL: creates, changes, messages and the
//! events they record, with an outbox that stores events in a table of the same transaction.

use std::sync::atomic::{AtomicU64, Ordering};

use deskhook_testkit::TestDatabase;
use deskhook_tickets::{
    Actor, Helpdesk, TicketError,
    listing::{PageRequest, Sort, SortField, Start},
    message::{AuthorInput, MessageKind, NewMessage},
    outbox::{Outbox, OutboxEvent},
    ticket::{NewTicket, RequesterInput, Status, TicketFilter, TicketPatch, TicketRef},
};
use futures::future::BoxFuture;
use sqlx::PgConnection;

/// Writes events to `test_event` in the caller's transaction, like the real queue does.
#[derive(Default)]
struct TableOutbox {
    commits: AtomicU64,
}

impl Outbox for TableOutbox {
    fn record<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        workspace_id: i64,
        events: &'a [OutboxEvent],
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
        Box::pin(async move {
            for event in events {
                sqlx::query(
                    "INSERT INTO test_event (workspace_id, event_type, data) VALUES ($1, $2, $3)",
                )
                .bind(workspace_id)
                .bind(event.event_type)
                .bind(&event.data)
                .execute(&mut *conn)
                .await?;
            }
            Ok(events.len() as u64)
        })
    }

    fn committed(&self) {
        self.commits.fetch_add(1, Ordering::SeqCst);
    }
}

async fn setup() -> (sqlx::PgPool, i64) {
    let db = TestDatabase::create().await;
    let pool = db.pool().await;
    sqlx::query(
        "CREATE TABLE test_event (id bigserial, workspace_id bigint, event_type text, data text)",
    )
    .execute(&pool)
    .await
    .expect("event table");
    let workspace: i64 =
        sqlx::query_scalar("INSERT INTO workspace (name) VALUES ('t') RETURNING id")
            .fetch_one(&pool)
            .await
            .expect("workspace");
    (pool, workspace)
}

async fn event_types(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM test_event ORDER BY id")
        .fetch_all(pool)
        .await
        .expect("events")
}

fn new_ticket(subject: &str) -> NewTicket {
    NewTicket {
        subject: subject.to_owned(),
        description: Some("It broke".to_owned()),
        requester: Some(RequesterInput::ByEmail {
            email: "jane@example.com".to_owned(),
            name: Some("Jane".to_owned()),
        }),
        tags: vec!["Billing".to_owned(), "billing".to_owned(), "vip".to_owned()],
        ..NewTicket::default()
    }
}

#[tokio::test]
async fn a_ticket_lives_through_its_lifecycle_with_one_event_per_change() {
    let (pool, workspace) = setup().await;
    let outbox = TableOutbox::default();
    let desk = Helpdesk::new(&pool, &outbox, workspace);
    let actor = Actor::ApiKey(1);

    let ticket = desk
        .create_ticket(actor, new_ticket("Cannot log in"))
        .await
        .expect("create");
    assert_eq!(ticket.number, 1);
    assert_eq!(ticket.tags, vec!["Billing", "vip"]);
    assert_eq!(ticket.description.as_deref(), Some("It broke"));
    let second = desk
        .create_ticket(actor, new_ticket("Again"))
        .await
        .expect("create");
    assert_eq!(second.number, 2);
    assert_eq!(
        second.requester, ticket.requester,
        "the customer is found by email"
    );

    let by_number = desk.ticket(TicketRef::Number(1)).await.expect("by number");
    assert_eq!(by_number.id, ticket.id);

    let solved = desk
        .update_ticket(
            actor,
            TicketRef::Key(ticket.key),
            TicketPatch {
                status: Some(Status::Solved),
                ..TicketPatch::default()
            },
        )
        .await
        .expect("solve");
    assert!(solved.solved_at.is_some());
    desk.update_ticket(
        actor,
        TicketRef::Key(ticket.key),
        TicketPatch {
            status: Some(Status::Closed),
            ..TicketPatch::default()
        },
    )
    .await
    .expect("close");
    let refused = desk
        .update_ticket(
            actor,
            TicketRef::Key(ticket.key),
            TicketPatch {
                status: Some(Status::Pending),
                ..TicketPatch::default()
            },
        )
        .await
        .expect_err("closed → pending");
    assert!(matches!(refused, TicketError::Invalid(_)));

    let note = NewMessage {
        body: "internal".to_owned(),
        kind: Some(MessageKind::Note),
        internal: None,
        author: AuthorInput::Customer(None),
        send_at: None,
    };
    assert!(
        desk.add_message(actor, TicketRef::Key(ticket.key), note)
            .await
            .is_err()
    );

    let reply = NewMessage {
        body: "Still broken".to_owned(),
        kind: None,
        internal: None,
        author: AuthorInput::Customer(None),
        send_at: None,
    };
    let (_, reopened) = desk
        .add_message(actor, TicketRef::Key(ticket.key), reply)
        .await
        .expect("customer reply");
    assert_eq!(reopened.status, Status::Open);
    assert_eq!(reopened.replies_count, 1);
    assert_eq!(
        reopened.latest_message_preview.as_deref(),
        Some("Still broken")
    );

    assert_eq!(
        event_types(&pool).await,
        vec![
            "ticket.created",
            "ticket.created",
            "ticket.closed",
            "ticket.updated",
            "ticket.replied",
            "ticket.reopened"
        ]
    );

    let page = desk
        .list_tickets(
            &TicketFilter {
                search: Some("still BROKEN".to_owned()),
                ..TicketFilter::default()
            },
            &PageRequest {
                limit: 10,
                sort: Sort::desc(SortField::Priority),
                start: Start::First,
            },
        )
        .await
        .expect("search");
    assert_eq!(page.total, Some(1));
    assert_eq!(page.items[0].id, ticket.id);
}
