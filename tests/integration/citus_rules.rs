//! The rules a distributed PostgreSQL (Citus, every campaign-keyed table distributed by `campaign_id`) sets,
//! checked on every statement the service sends (see `docs/scaling.md`).
//!
//! A private PostgreSQL logs every statement it is sent while a workload runs every RPC, every background
//! worker and the relay, in two campaigns at once, through two replicas.
//! Each statement is then planned as PostgreSQL would plan it for any parameters (a generic plan), and each
//! scan of a distributed table must be limited to campaigns: a condition on its `campaign_id`, or a join on
//! it. Its text must hold no volatile function in an UPDATE, no NOTIFY beside a distributed table, no
//! advisory lock, no order taken from a global sequence; and no distributed table may have a trigger.
//!
//! What breaks a rule today and is still to change is listed in [`KNOWN`], each with where it comes from.
//! The test fails on anything else, and on a listed break that no longer happens (so the list stays true).

use std::collections::BTreeSet;
use std::time::Duration;

use assignment_service::embedded_pg::EmbeddedPostgres;
use assignment_service::pb;
use serde_json::Value;
use sqlx::{Connection, Row};

use crate::feed::{next_events, watch};
use crate::harness::*;
use crate::nats::NatsServer;

/// Every table keyed by campaign: distributed by `campaign_id`, co-located.
const DISTRIBUTED: &[&str] = &[
    "users",
    "conversations",
    "access_groups",
    "access_group_organizers",
    "access_group_conversations",
    "assignment_events",
    "inbox_settings",
    "auto_assign_triggers",
    "waiting_conversations",
    "feed_heads",
    "organizer_loads",
    "organizer_load_changes",
    "replies",
    "shift_schedules",
    "shift_windows",
    "relay_positions",
];

/// Functions Citus refuses in an UPDATE of a distributed table (volatile).
const VOLATILE: &[&str] = &[
    "clock_timestamp(",
    "random(",
    "gen_random_uuid(",
    "nextval(",
    "timeofday(",
];

/// A rule a statement breaks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Broken {
    rule: &'static str,
    /// The table, function or trigger at fault.
    what: String,
    /// The statement (normalized by pg_stat_statements), or the trigger's table.
    statement: String,
}

/// Breaks still to mend (issue 27), each matched by its rule, what is at fault and a fragment of the
/// statement, with the reason it happens.
const KNOWN: &[(&str, &str, &str, &str)] = &[
    // Timed work finds the campaigns that have some by scanning every campaign's rows: on Citus, a query of
    // every shard on each tick. To go: each node's own list of campaigns with work due.
    (
        UNLIMITED,
        "assignment_events assignment_events",
        "WHERE seq IS NULL",
        DISCOVERY,
    ),
    (
        UNLIMITED,
        "auto_assign_triggers auto_assign_triggers",
        "received_at < $1 LIMIT 1",
        DISCOVERY,
    ),
    (
        UNLIMITED,
        "replies replies",
        "sent_at < $1 LIMIT 1",
        DISCOVERY,
    ),
    (
        UNLIMITED,
        "inbox_settings inbox_settings",
        "WHERE has_waiting",
        DISCOVERY,
    ),
    // The agendas' full reads (`service::agenda`): rare by construction (`AGENDA_SWEEPS`).
    (
        UNLIMITED,
        "inbox_settings s",
        "reply_within_seconds IS NOT NULL AND true",
        AGENDA_SWEEP,
    ),
    (
        UNLIMITED,
        "shift_schedules shift_schedules",
        "next_change_at IS NOT NULL AND true",
        AGENDA_SWEEP,
    ),
    (
        UNLIMITED,
        "organizer_load_changes organizer_load_changes",
        "SELECT DISTINCT campaign_id",
        DISCOVERY,
    ),
    (
        UNLIMITED,
        "waiting_conversations waiting_conversations",
        "min(waiting_since)",
        DISCOVERY,
    ),
    // The relay's full claim reads every campaign's lease (`store::relay::claim`): rare by construction
    // (`RELAY_FULL_CLAIMS_AT_MOST`). Its claims of the campaigns it heard of are limited to those.
    (
        UNLIMITED,
        "relay_positions relay_positions",
        "min(holder)",
        RELAY_FULL_CLAIM,
    ),
];

const TRIGGER: &str = "trigger on a distributed table";
const MIXED: &str = "transaction of several campaigns under --single-campaign-transactions";
const SEQUENCE: &str = "order taken from a global sequence";
const VOLATILE_IN_UPDATE: &str = "volatile function in an UPDATE";
const UNLIMITED: &str = "scan not limited to campaigns";
const DISCOVERY: &str = "timed work scans every campaign to find its own";
const AGENDA_SWEEP: &str = "an agenda's full read of every campaign: at start, after the listener reconnects, once a minute";
const RELAY_FULL_CLAIM: &str = "the relay's full claim: at start, after the listener reconnects or a failed pass, every half lease";

/// The agendas' full reads, by a fragment of each, and how often each may run in the workload: at a
/// replica's start, and again once its listener has connected (it may have missed notifications before),
/// for each of the two replicas. Never on each tick of the timed workers (every 100 ms here).
const AGENDA_SWEEPS: &[&str] = &[
    "reply_within_seconds IS NOT NULL AND true",
    "next_change_at IS NOT NULL AND true",
];
const AGENDA_SWEEPS_AT_MOST: usize = 4;
/// How often the relay's full claim may run in the workload: at each replica's start, once its listener
/// connected, and after a pass that failed (the backstop, every half lease, is an hour away here). Never on
/// each tick while heads move (every 20 ms here: the workload's relay claims about 50 times, each a full
/// claim before they named their campaigns).
const RELAY_FULL_CLAIMS_AT_MOST: usize = 8;

/// Whether a statement is the relay's full claim, or its read of the replica relaying (the full claim's,
/// under --single-campaign-transactions): a read of every campaign's lease.
fn relay_full_claim(statement: &str) -> bool {
    statement.contains("min(holder)") && !statement.contains("= ANY(")
}

#[tokio::test]
async fn every_statement_the_service_sends_keeps_the_rules_of_a_distributed_postgresql() {
    let dir = std::env::temp_dir().join(format!("citus-rules-{}", uuid::Uuid::new_v4()));
    // Every statement a client sends is logged, each log record starting with a marker.
    let postgres = EmbeddedPostgres::start(
        &dir,
        &[
            ("log_statement", "all"),
            ("log_line_prefix", "@@@ %v "),
            ("log_parameter_max_length", "-1"),
            ("fsync", "off"),
            ("synchronous_commit", "off"),
        ],
    )
    .expect("a private PostgreSQL");
    let url = postgres.url("postgres");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let nats = NatsServer::start().await;
    let flags = [
        "--nats-url",
        &nats.url(),
        "--relay-interval",
        "20ms",
        // No backstop claim within the workload, however slow the machine: the full claims counted are
        // those a replica makes at start, after its listener connects and after a failure.
        "--relay-lease",
        "1h",
        "--waiting-sweep-interval",
        "100ms",
        "--reply-timer-interval",
        "100ms",
        "--shift-boundary-interval",
        "100ms",
    ];
    // SINGLE_CAMPAIGN_TRANSACTIONS (CI's second run) is read here as by the service.
    let single_campaign = config(&url, &flags).single_campaign_transactions;
    let app = TestApp::start_with(&config(&url, &flags)).await;
    let replica = TestApp::start_with(&config(&url, &flags)).await;
    workload(&app, &replica).await;
    drop((app, replica));

    let log = std::fs::read_to_string(dir.with_extension("log")).expect("the server's log");
    let records = log_records(&log);
    let statements: BTreeSet<String> = records
        .iter()
        .filter_map(|record| record.statement.clone())
        .collect();
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut broken = BTreeSet::new();
    let mut checked = 0;
    for statement in &statements {
        if !data_path(statement) {
            continue;
        }
        checked += 1;
        broken.extend(text_rules(statement));
        broken.extend(scan_rules(&mut conn, statement).await);
    }
    broken.extend(triggers(&mut conn).await);
    if single_campaign {
        broken.extend(transactions_mixing_campaigns(&records, &[CAMPAIGN, SECOND]));
    }
    assert!(
        checked > 60,
        "only {checked} statements were recorded: is the log complete?"
    );

    let sweeps: Vec<(&str, usize)> = AGENDA_SWEEPS
        .iter()
        .map(|fragment| {
            let runs = records
                .iter()
                .filter_map(|r| r.statement.as_deref())
                .filter(|statement| statement.contains(fragment))
                .count();
            (*fragment, runs)
        })
        .collect();

    let relay_claims: Vec<&str> = records
        .iter()
        .filter_map(|r| r.statement.as_deref())
        .filter(|statement| statement.contains("min(holder)"))
        .collect();
    let full_claims = relay_claims
        .iter()
        .filter(|statement| relay_full_claim(statement))
        .count();

    let unknown: Vec<&Broken> = broken.iter().filter(|b| known(b).is_none()).collect();
    let mended: Vec<_> = KNOWN
        .iter()
        .filter(|k| !broken.iter().any(|b| matches(k, b)))
        .collect();
    conn.close().await.unwrap();
    drop(postgres);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(dir.with_extension("log"));
    assert!(
        unknown.is_empty(),
        "{} statements break a rule of a distributed PostgreSQL:\n{}",
        unknown.len(),
        unknown
            .iter()
            .map(|b| format!("- {} ({}): {}", b.rule, b.what, b.statement))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for (fragment, runs) in sweeps {
        assert!(
            (1..=AGENDA_SWEEPS_AT_MOST).contains(&runs),
            "the agendas' full read {fragment:?} ran {runs} times: at start and after the listener \
             connected only (at most {AGENDA_SWEEPS_AT_MOST}), never on the workers' ticks"
        );
    }
    assert!(
        (1..=RELAY_FULL_CLAIMS_AT_MOST).contains(&full_claims),
        "the relay read every campaign's lease {full_claims} times in {} claims: at start, after the \
         listener connected or a failed pass only (at most {RELAY_FULL_CLAIMS_AT_MOST}), never on each \
         tick while heads move",
        relay_claims.len()
    );
    assert!(
        mended.is_empty(),
        "listed as breaking a rule, but no statement does any more (take them off KNOWN): {mended:?}"
    );
}

fn matches(known: &(&str, &str, &str, &str), broken: &Broken) -> bool {
    let (rule, what, fragment, _) = known;
    broken.rule == *rule && broken.what == *what && broken.statement.contains(fragment)
}

fn known(broken: &Broken) -> Option<&'static str> {
    KNOWN
        .iter()
        .find(|k| matches(k, broken))
        .map(|(.., why)| *why)
}

/// One record of the server's log: the transaction it belongs to (virtual id), and the statement it
/// says was sent (simple queries, and executions of prepared ones) or the parameters it was sent with.
struct LogRecord {
    transaction: String,
    statement: Option<String>,
    parameters: Option<String>,
}

/// The log's records, in order (`log_line_prefix` is `@@@ %v `; a record's later lines carry no prefix).
fn log_records(log: &str) -> Vec<LogRecord> {
    let mut records: Vec<LogRecord> = Vec::new();
    for line in log.lines() {
        let Some(record) = line.strip_prefix("@@@ ") else {
            // A later line of the record before.
            if let Some(text) = records.last_mut().and_then(|r| r.statement.as_mut()) {
                text.push('\n');
                text.push_str(line);
            }
            continue;
        };
        let Some((transaction, message)) = record.split_once(' ') else {
            continue;
        };
        let statement = message.strip_prefix("LOG:  ").and_then(|message| {
            if let Some(text) = message.strip_prefix("statement: ") {
                Some(text.to_owned())
            } else {
                // "execute <name>: <statement>"
                let text = message.strip_prefix("execute ")?;
                text.split_once(": ").map(|(_, text)| text.to_owned())
            }
        });
        let parameters = message
            .strip_prefix("DETAIL:  parameters: ")
            .map(str::to_owned);
        records.push(LogRecord {
            transaction: transaction.to_owned(),
            statement,
            parameters,
        });
    }
    records
}

/// Transactions whose statements name more than one of `campaigns` (in their text or their parameters).
fn transactions_mixing_campaigns(records: &[LogRecord], campaigns: &[&str]) -> Vec<Broken> {
    let mut named: std::collections::BTreeMap<&str, (BTreeSet<&str>, Vec<&str>)> =
        std::collections::BTreeMap::new();
    for record in records {
        let text = record
            .statement
            .as_deref()
            .or(record.parameters.as_deref())
            .unwrap_or_default();
        let (seen, statements) = named.entry(record.transaction.as_str()).or_default();
        seen.extend(campaigns.iter().copied().filter(|c| {
            text.contains(&format!("'{c}'"))
                || text.contains(&format!("{{{c}"))
                || text.contains(&format!(",{c}"))
        }));
        if let Some(statement) = &record.statement {
            statements.push(statement);
        }
    }
    named
        .into_values()
        .filter(|(seen, _)| seen.len() > 1)
        .map(|(seen, statements)| Broken {
            rule: MIXED,
            what: seen.into_iter().collect::<Vec<_>>().join(" and "),
            statement: statements.join(" / "),
        })
        .collect()
}

/// A statement of the service's data path: not a transaction's control, a setting, a listener, the
/// migrator's own (its table, its advisory lock, the schema's DDL), nor this test's.
fn data_path(statement: &str) -> bool {
    // Past the leading comment lines (a migration's file starts with its own).
    let code = statement
        .lines()
        .skip_while(|line| line.trim_start().starts_with("--") || line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let head = code.trim_start().to_ascii_uppercase();
    let utility = [
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SET",
        "SHOW",
        "LISTEN",
        "UNLISTEN",
        "NOTIFY",
        "CREATE",
        "ALTER",
        "DROP",
        "LOCK",
        "COMMENT",
        "DO",
        "DEALLOCATE",
        "DISCARD",
        "PREPARE",
        "EXPLAIN",
        "RESET",
    ];
    !utility.iter().any(|u| head.starts_with(u))
        && !statement.contains("_sqlx_migrations")
        && !statement.contains("pg_catalog")
        && !statement.contains("pg_advisory_lock")
        && !statement.contains("pg_advisory_unlock")
        && !statement.contains("current_database()")
}

/// The distributed tables a statement names.
fn tables_in(statement: &str) -> Vec<&'static str> {
    DISTRIBUTED
        .iter()
        .copied()
        .filter(|table| {
            statement.match_indices(table).any(|(at, _)| {
                let before = statement[..at].chars().last();
                let after = statement[at + table.len()..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
                !word(before) && !word(after)
            })
        })
        .collect()
}

/// The rules read from a statement's text.
fn text_rules(statement: &str) -> Vec<Broken> {
    let mut broken = Vec::new();
    let lower = statement.to_ascii_lowercase();
    let tables = tables_in(statement);
    let mut add = |rule: &'static str, what: &str| {
        broken.push(Broken {
            rule,
            what: what.to_owned(),
            statement: statement.to_owned(),
        })
    };
    if lower.contains("update ") {
        for function in VOLATILE {
            if lower.contains(function) {
                add(VOLATILE_IN_UPDATE, function.trim_end_matches('('));
            }
        }
    }
    if lower.contains("nextval(") {
        add(SEQUENCE, "nextval");
    }
    if lower.contains("order by event_id") || lower.contains("order by e.event_id") {
        add(SEQUENCE, "event_id");
    }
    if lower.contains("pg_notify(") && !tables.is_empty() {
        add("NOTIFY inside a data statement", "pg_notify");
    }
    if lower.contains("pg_advisory") {
        add("advisory lock", "pg_advisory");
    }
    broken
}

/// Each scan of a distributed table in the statement's generic plan is limited to campaigns: a condition
/// on its `campaign_id`, or a join above it on that column. The connection plans generically
/// (`force_generic_plan`), so the plan holds whatever the parameters.
async fn scan_rules(conn: &mut sqlx::PgConnection, statement: &str) -> Vec<Broken> {
    let parameters = (1..=100)
        .rev()
        .find(|n| statement.contains(&format!("${n}")))
        .unwrap_or(0);
    let plan = async {
        sqlx::raw_sql(&format!("PREPARE checked AS {statement}"))
            .execute(&mut *conn)
            .await?;
        let nulls = vec!["NULL"; parameters].join(", ");
        let execute = if parameters == 0 {
            "EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE checked".to_owned()
        } else {
            format!("EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE checked({nulls})")
        };
        // EXPLAIN's json column read as its text (sqlx decodes json only with a feature the service lacks).
        let plan = sqlx::query(&execute)
            .fetch_one(&mut *conn)
            .await
            .map(|row| {
                let text: String = row.try_get_unchecked(0).unwrap_or_default();
                serde_json::from_str::<Value>(&text).unwrap_or_default()
            });
        // Prepared statements outlive transactions: this one goes before the next is prepared.
        sqlx::raw_sql("DEALLOCATE checked")
            .execute(&mut *conn)
            .await?;
        plan
    };
    let plan = match plan.await {
        Ok(plan) => plan,
        Err(err) => {
            return vec![Broken {
                rule: "could not be planned for checking",
                what: err.to_string(),
                statement: statement.to_owned(),
            }];
        }
    };
    let mut broken = Vec::new();
    if let Some(root) = plan.get(0).and_then(|p| p.get("Plan")) {
        unlimited_scans(root, &[], &mut |table, alias| {
            broken.push(Broken {
                rule: UNLIMITED,
                what: format!("{table} {alias}"),
                statement: statement.to_owned(),
            })
        });
    }
    broken
}

/// The conditions a plan node places on rows, as EXPLAIN prints them.
const CONDITIONS: &[&str] = &[
    "Index Cond",
    "Recheck Cond",
    "Filter",
    "TID Cond",
    "Hash Cond",
    "Merge Cond",
    "Join Filter",
];

/// Calls `unlimited` for each scan of a distributed table under `node` with no condition on its
/// `campaign_id`, neither its own nor a join's above it (`joins`: the conditions of the joins above).
fn unlimited_scans(node: &Value, joins: &[String], unlimited: &mut impl FnMut(&str, &str)) {
    let conditions: Vec<String> = CONDITIONS
        .iter()
        .filter_map(|c| node.get(*c).and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    if let Some(table) = node.get("Relation Name").and_then(Value::as_str)
        && DISTRIBUTED.contains(&table)
        && node.get("Node Type").and_then(Value::as_str) != Some("ModifyTable")
    {
        let alias = node.get("Alias").and_then(Value::as_str).unwrap_or(table);
        let own = conditions.iter().any(|c| limits(c, "campaign_id"));
        let joined = joins
            .iter()
            .any(|c| limits(c, &format!("{alias}.campaign_id")));
        if !own && !joined {
            unlimited(table, alias);
        }
    }
    let mut below = joins.to_vec();
    below.extend(conditions);
    for child in node
        .get("Plans")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        unlimited_scans(child, &below, unlimited);
    }
}

/// Whether a condition as EXPLAIN prints it limits `column`: one of its conjuncts names the column and is
/// no disjunction (`($1 IS NULL OR campaign_id = $1)` limits nothing when `$1` is NULL).
fn limits(condition: &str, column: &str) -> bool {
    condition
        .split(" AND ")
        .any(|conjunct| conjunct.contains(column) && !conjunct.contains(" OR "))
}

/// Triggers on distributed tables (the ones PostgreSQL makes for constraints aside).
async fn triggers(conn: &mut sqlx::PgConnection) -> Vec<Broken> {
    let triggers: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, t.tgname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid \
          WHERE NOT t.tgisinternal AND c.relnamespace = 'public'::regnamespace",
    )
    .fetch_all(conn)
    .await
    .unwrap();
    triggers
        .into_iter()
        .filter(|(table, _)| DISTRIBUTED.contains(&table.as_str()))
        .map(|(table, trigger)| Broken {
            rule: TRIGGER,
            what: trigger,
            statement: table,
        })
        .collect()
}

/// Every RPC, in two campaigns at once through two replicas, with the background workers and the relay
/// running: auto-assignment (batches of both campaigns, the waiting queue, capacity, balanced routing,
/// availability, shifts), manual and bulk changes, groups, the directory, replies and their timers, reads,
/// the feed and its watchers.
/// The workload's second campaign.
const SECOND: &str = "camp-2";

async fn workload(app: &TestApp, replica: &TestApp) {
    app.team_in(CAMPAIGN, &["o1", "o2", "o3", "o4"]).await;
    replica.team_in(SECOND, &["p1", "p2"]).await;
    let settings = pb::UpdateInboxSettingsRequest {
        auto_assign_enabled: Some(true),
        default_capacity: Some(50),
        routing_mode: pb::RoutingMode::Balanced.into(),
        on_unavailable: pb::OnUnavailable::ReturnToQueue.into(),
        reply_within_seconds: Some(1),
        priority_step_seconds: Some(60),
        time_zone: Some("Europe/Paris".into()),
        ..Default::default()
    };
    app.update_settings("admin", settings).await;
    replica.enable_auto_assign_in(SECOND).await;
    let mut api = app.assignments().await;
    let mut groups = app.groups().await;
    for (n, tags) in [(1, vec!["vol"]), (2, vec![]), (3, vec!["vol"]), (4, vec![])] {
        app.conversation(&format!("c{n}"), &tags).await;
    }

    // Access groups: every call.
    let group = app
        .group("admin", "Volunteers", &["o1"], false, scope_tags(&["vol"]))
        .await;
    let id = group.access_group_id.clone();
    groups
        .get_access_group(as_actor(
            "admin",
            pb::GetAccessGroupRequest {
                access_group_id: id.clone(),
            },
        ))
        .await
        .unwrap();
    groups
        .list_access_groups(as_actor(
            "admin",
            pb::ListAccessGroupsRequest {
                page_size: 10,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    groups
        .update_access_group(as_actor(
            "admin",
            pb::UpdateAccessGroupRequest {
                access_group_id: id.clone(),
                name: Some("Volunteers, all".into()),
                permissions: None,
                scope: Some(scope_conversations(&["c2"])),
            },
        ))
        .await
        .unwrap();
    groups
        .add_organizers(as_actor(
            "admin",
            pb::AddOrganizersRequest {
                access_group_id: id.clone(),
                organizer_ids: vec!["o2".into()],
            },
        ))
        .await
        .unwrap();
    groups
        .remove_organizers(as_actor(
            "admin",
            pb::RemoveOrganizersRequest {
                access_group_id: id.clone(),
                organizer_ids: vec!["o2".into()],
            },
        ))
        .await
        .unwrap();
    groups
        .check_access(as_actor(
            "admin",
            pb::CheckAccessRequest {
                conversation_id: "c1".into(),
                user_id: "o1".into(),
            },
        ))
        .await
        .unwrap();
    groups
        .list_eligible_assignees(as_actor(
            "admin",
            pb::ListEligibleAssigneesRequest {
                conversation_ids: vec!["c1".into()],
                all_access_groups: true,
            },
        ))
        .await
        .unwrap();
    groups
        .delete_access_group(as_actor(
            "admin",
            pb::DeleteAccessGroupRequest {
                access_group_id: id,
            },
        ))
        .await
        .unwrap();

    // A watcher of the feed from its start, while everything below happens.
    let mut watcher = watch(app, Some("admin"), "").await;

    // Manual changes and reads.
    app.assign_as_admin("c1", "o1").await;
    api.reassign_conversation(as_actor(
        "admin",
        pb::ReassignConversationRequest {
            conversation_id: "c1".into(),
            assignee_id: "o2".into(),
            expected_version: None,
        },
    ))
    .await
    .unwrap();
    api.record_reply(as_actor(
        "o2",
        pb::RecordReplyRequest {
            conversation_id: "c1".into(),
            message_id: "m1".into(),
            sender_id: String::new(),
        },
    ))
    .await
    .unwrap();
    api.unassign_conversation(as_actor(
        "admin",
        pb::UnassignConversationRequest {
            conversation_id: "c1".into(),
            expected_version: None,
            return_to_queue: true,
        },
    ))
    .await
    .unwrap();
    app.assign_as_admin("c2", "o3").await;
    app.resolve_as_admin("c2").await;
    api.reopen_conversation(as_actor(
        "admin",
        pb::ReopenConversationRequest {
            conversation_id: "c2".into(),
        },
    ))
    .await
    .unwrap();
    api.get_conversation(as_actor(
        "o3",
        pb::GetConversationRequest {
            conversation_id: "c2".into(),
        },
    ))
    .await
    .unwrap();
    for request in [
        pb::ListConversationsRequest {
            assignee_id: "o3".into(),
            page_size: 10,
            ..Default::default()
        },
        pb::ListConversationsRequest {
            unassigned: true,
            page_size: 1,
            ..Default::default()
        },
        pb::ListConversationsRequest {
            held_by_unreachable: true,
            ..Default::default()
        },
        pb::ListConversationsRequest {
            status: pb::ConversationStatus::Open.into(),
            ..Default::default()
        },
    ] {
        let page = api
            .list_conversations(as_actor("admin", request))
            .await
            .unwrap()
            .into_inner();
        if !page.next_page_token.is_empty() {
            let next = pb::ListConversationsRequest {
                unassigned: true,
                page_size: 1,
                page_token: page.next_page_token,
                ..Default::default()
            };
            api.list_conversations(as_actor("admin", next))
                .await
                .unwrap();
        }
    }
    api.list_conversations(as_actor("o1", pb::ListConversationsRequest::default()))
        .await
        .unwrap();
    api.check_reply_permission(as_actor(
        "admin",
        pb::CheckReplyPermissionRequest {
            conversation_id: "c2".into(),
            user_id: "o3".into(),
        },
    ))
    .await
    .unwrap();
    api.list_assignment_history(as_actor(
        "admin",
        pb::ListAssignmentHistoryRequest {
            conversation_id: "c1".into(),
            page_size: 2,
            page_token: String::new(),
        },
    ))
    .await
    .unwrap();
    api.get_inbox_settings(as_actor("admin", pb::GetInboxSettingsRequest::default()))
        .await
        .unwrap();

    // Routing: capacity, availability, shifts, the waiting queue; triggers of both campaigns in batches.
    api.set_capacity(as_actor(
        "admin",
        pb::SetCapacityRequest {
            user_id: "o4".into(),
            capacity: Some(1),
        },
    ))
    .await
    .unwrap();
    api.set_shift_schedule(as_actor(
        "admin",
        pb::SetShiftScheduleRequest {
            user_id: "o1".into(),
            weekly: (1..=7)
                .map(|day| pb::ShiftWindow {
                    weekday: day,
                    start: "00:00".into(),
                    end: "23:59".into(),
                })
                .collect(),
            exceptions: vec![pb::ShiftException {
                date: "2031-01-01".into(),
                off: true,
                ..Default::default()
            }],
        },
    ))
    .await
    .unwrap();
    api.get_shift_schedule(as_actor(
        "admin",
        pb::GetShiftScheduleRequest {
            user_id: "o1".into(),
        },
    ))
    .await
    .unwrap();
    api.preview_auto_assign(as_actor(
        "admin",
        pb::PreviewAutoAssignRequest {
            conversation_id: "c3".into(),
        },
    ))
    .await
    .unwrap();
    let mut triggers = Vec::new();
    for n in 0..24 {
        // Both campaigns through one replica, so that its batches may hold both; a few through the other.
        let campaign = if n % 2 == 0 { CAMPAIGN } else { SECOND };
        let target = if n % 6 == 5 { replica } else { app };
        let mut client = target.assignments().await;
        triggers.push(tokio::spawn(async move {
            client
                .auto_assign_conversation(system(campaign, auto_assign_request(&format!("a{n}"))))
                .await
                .unwrap();
        }));
    }
    for trigger in triggers {
        trigger.await.unwrap();
    }
    for organizer in ["o1", "o2", "o3", "o4"] {
        app.set_availability(organizer, pb::Availability::Away)
            .await;
    }
    for n in 0..3 {
        app.auto_assign(&format!("w{n}")).await;
    }
    api.list_waiting_conversations(as_actor(
        "admin",
        pb::ListWaitingConversationsRequest {
            page_size: 2,
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    app.set_availability("o2", pb::Availability::Available)
        .await;
    api.delete_shift_schedule(as_actor(
        "admin",
        pb::DeleteShiftScheduleRequest {
            user_id: "o1".into(),
        },
    ))
    .await
    .unwrap();
    app.set_availability("o1", pb::Availability::Available)
        .await;

    // Bulk changes.
    let ids: Vec<String> = (0..24).step_by(2).map(|n| format!("a{n}")).collect();
    let batch = |ids: &[String]| pb::ConversationBatch {
        conversation_ids: ids.to_vec(),
    };
    let options = pb::BulkAssignOptions {
        assignee_ids: vec!["o2".into()],
        ..Default::default()
    };
    let mut answers = api
        .bulk_reassign(as_actor(
            "admin",
            tokio_stream::iter(vec![
                pb::BulkReassignRequest {
                    payload: Some(pb::bulk_reassign_request::Payload::Options(options.clone())),
                },
                pb::BulkReassignRequest {
                    payload: Some(pb::bulk_reassign_request::Payload::Conversations(batch(
                        &ids,
                    ))),
                },
            ]),
        ))
        .await
        .unwrap()
        .into_inner();
    while answers.message().await.unwrap().is_some() {}
    let mut answers = api
        .bulk_unassign(as_actor(
            "admin",
            tokio_stream::iter(vec![pb::BulkUnassignRequest {
                conversations: Some(batch(&ids)),
            }]),
        ))
        .await
        .unwrap()
        .into_inner();
    while answers.message().await.unwrap().is_some() {}
    let mut answers = api
        .bulk_assign(as_actor(
            "admin",
            tokio_stream::iter(vec![
                pb::BulkAssignRequest {
                    payload: Some(pb::bulk_assign_request::Payload::Options(options)),
                },
                pb::BulkAssignRequest {
                    payload: Some(pb::bulk_assign_request::Payload::Conversations(batch(&ids))),
                },
            ]),
        ))
        .await
        .unwrap()
        .into_inner();
    while answers.message().await.unwrap().is_some() {}

    // The directory: a deactivated organizer's conversations go back per on_unavailable.
    app.deactivate("o4").await;
    // Replies left unanswered lapse (reply_within_seconds 1), and the workers run meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    next_events(&mut watcher, 10).await;
    let head: i64 = sqlx::query_scalar("SELECT last_seq FROM feed_heads WHERE campaign_id = $1")
        .bind(CAMPAIGN)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    for _ in 0..200 {
        let relayed: Option<i64> =
            sqlx::query_scalar("SELECT relayed_seq FROM relay_positions WHERE campaign_id = $1")
                .bind(CAMPAIGN)
                .fetch_optional(app.store.pool())
                .await
                .unwrap();
        if relayed >= Some(head) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the relay never reached the feed's head");
}
