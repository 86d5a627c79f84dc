//! The behaviour every `Store` implementation must show. Each check takes `&dyn Store`
//! and lives in the module of its area (`actions`, `machines`, `identity`, `audit`,
//! `access`, `maintenance`, and `tenancy` for isolation between tenants).
//!
//! A backend joins the suite with a constructor `async fn() -> Option<Backend>` (`None`:
//! the backend is not available here; it says why) and one line,
//! `conformance!(my_backend, crate::my_backend_constructor);`, which instantiates every
//! check as `my_backend::<area>::<check>`.

use casefile_proto::action::{ActionStatus, ActionType, MachineAction};
use casefile_store::*;
use chrono::{Duration, Utc};
use uuid::Uuid;

/// A tenant id the tests name literally.
fn tid(raw: &str) -> TenantId {
    TenantId::parse(raw).unwrap()
}

async fn sqlite() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("test.db")).await.unwrap();
    (dir, store)
}

/// A fresh, empty store of one backend, and what keeps it alive (a temporary directory,
/// a database to drop) until the check ends.
pub struct Backend {
    pub store: std::sync::Arc<dyn Store>,
    pub _keep: Box<dyn std::any::Any + Send>,
}

/// The SQLite backend: a new database file in a temporary directory.
pub async fn sqlite_backend() -> Option<Backend> {
    let (dir, store) = sqlite().await;
    Some(Backend { store: std::sync::Arc::new(store), _keep: Box::new(dir) })
}

/// Instantiates every check against the backend `$make` builds, one `#[tokio::test]`
/// each, in `mod $backend { mod <area> { ... } }`.
macro_rules! conformance {
    ($backend:ident, $make:path) => {
        mod $backend {
            conformance!(@area $make, actions [
                transitions_never_go_backwards,
                one_live_collection_per_machine,
                claims_are_oldest_first_per_machine_and_tenants_are_separate,
                lists_filter_order_count_and_page_in_the_store,
                cancellation_is_immediate_when_pending_and_confirmed_when_running,
                unaccepted_claims_are_offered_again_after_their_lease,
                a_restart_spares_the_actions_whose_results_the_agent_holds,
                actions_keep_their_external_id_and_title,
                actions_keep_their_profile_and_only_a_running_one_its_agents_progress,
            ]);
            conformance!(@area $make, machines [
                reenrollment_keeps_first_seen_and_replaces_the_credential,
                enrollment_tokens_never_rekey_a_machine_without_proof,
                identity_reset_voids_the_key_and_allows_one_fresh_enrollment,
                shared_names_are_ambiguous_and_ids_win,
            ]);
            conformance!(@area $make, identity [
                applications_are_per_tenant_with_unique_names,
                applications_change_roles_state_and_secret,
                signing_keys_retire_once,
                enrollment_tokens_are_counted_expire_and_revoke,
            ]);
            conformance!(@area $make, audit [
                the_audit_trail_keeps_entries_in_order_and_filters_them,
                changes_and_their_audit_entries_commit_together,
            ]);
            conformance!(@area $make, access [
                roles_and_groups_are_per_tenant,
            ]);
            conformance!(@area $make, users [
                users_are_per_tenant_with_names_unique_in_any_case,
                disabling_or_a_new_password_ends_the_users_sessions,
                sessions_end_when_idle_or_past_their_end,
            ]);
            conformance!(@area $make, maintenance [
                silent_machines_time_out_and_restarts_fail,
                pending_actions_expire_and_packages_retire,
            ]);
            conformance!(@area $make, tenancy [
                writes_by_id_do_not_cross_tenants,
                views_bind_their_tenant_and_machine,
            ]);
        }
    };
    (@area $make:path, $area:ident [$($check:ident),* $(,)?]) => {
        mod $area {
            $(
                #[tokio::test]
                async fn $check() {
                    let Some(backend) = $make().await else { return };
                    crate::$area::$check(&*backend.store).await;
                }
            )*
        }
    };
}

conformance!(sqlite_suite, crate::sqlite_backend);

async fn machine(store: &dyn Store, tenant: &str, id: &str) -> MachineRecord {
    store
        .enroll_machine(&MachineEnrollment {
            id: id.to_owned(),
            tenant_id: tid(tenant),
            facts: HostFacts {
                computer_dns_name: format!("{id}-host"),
                os_platform: "Linux".into(),
                ..Default::default()
            },
            credential_hash: format!("hash-{id}"),
            agent_public_key: None,
            last_ip_address: None,
            at: Utc::now(),
        })
        .await
        .unwrap()
}

/// Claims the machine's next action as an agent that does not confirm receipt.
async fn claim(store: &dyn Store, machine_id: &str, at: chrono::DateTime<Utc>) -> Option<MachineAction> {
    store.claim_leased(machine_id, at, None, None).await.unwrap().map(|c| c.action)
}

fn pending(machine_id: &str, created: chrono::DateTime<Utc>) -> MachineAction {
    MachineAction::new_pending(ActionType::CollectInvestigationPackage, machine_id, None, "tester", "c".into(), created)
}

fn package(action: Uuid, tenant: &str) -> PackageRecord {
    PackageRecord {
        action_id: action,
        tenant_id: tid(tenant),
        blob_key: format!("{tenant}/{action}.zip"),
        size: 3,
        sha256: "ab".repeat(32),
        stored_at: Utc::now(),
        deleted_at: None,
    }
}

fn application(tenant: &str, name: &str) -> ApplicationRecord {
    ApplicationRecord {
        client_id: Uuid::new_v4(),
        tenant_id: tid(tenant),
        name: name.into(),
        secret_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles: vec!["Machine.Read.All".into()],
        created_at: Utc::now(),
        secret_rotated_at: None,
        disabled_at: None,
    }
}

fn audit_entry(event: &str, target: &str) -> AuditEntry {
    AuditEntry {
        at: Utc::now(),
        tenant_id: Some("t".into()),
        actor_kind: "application".into(),
        actor: "SOAR".into(),
        event: event.into(),
        target: Some(target.into()),
        outcome: "ok".into(),
        http_status: Some(201),
        source_ip: None,
        correlation_id: None,
        detail: None,
    }
}

async fn entries_for(store: &dyn Store, target: &str) -> usize {
    let filter = AuditFilter { target: Some(target.into()), limit: 100, ..Default::default() };
    store.audit(&filter).await.unwrap().len()
}

fn token(tenant: &str, hash: &str, uses_allowed: u32, expires_in: Duration) -> EnrollmentTokenRecord {
    EnrollmentTokenRecord {
        id: Uuid::new_v4(),
        tenant_id: tid(tenant),
        token_hash: hash.into(),
        created_at: Utc::now(),
        expires_at: Utc::now() + expires_in,
        revoked_at: None,
        uses_allowed,
        uses: 0,
        last_used_at: None,
    }
}

fn by_token(hash: &str, id: &str, key: Option<&str>, proof: Option<KeyProof>) -> TokenEnrollment {
    TokenEnrollment {
        token_hash: hash.into(),
        machine: MachineEnrollment {
            id: id.into(),
            tenant_id: tid("t"),
            facts: HostFacts {
                computer_dns_name: format!("{id}-host"),
                os_platform: "Linux".into(),
                ..Default::default()
            },
            credential_hash: format!("cred-{}", Uuid::new_v4()),
            agent_public_key: key.map(str::to_owned),
            last_ip_address: None,
            at: Utc::now(),
        },
        proof,
        audit: Some(audit_entry("agent.enroll", id)),
    }
}

async fn uses(store: &dyn Store, hash: &str) -> u32 {
    store.enrollment_token_by_hash(hash).await.unwrap().unwrap().uses
}

fn rekeyed_first_seen(outcome: &EnrollOutcome) -> chrono::DateTime<Utc> {
    match outcome {
        EnrollOutcome::Rekeyed(m) | EnrollOutcome::Created(m) | EnrollOutcome::Recreated(m) => m.first_seen,
        other => panic!("not enrolled: {other:?}"),
    }
}

fn challenge(machine: &str, nonce: &str) -> EnrollChallengeRecord {
    EnrollChallengeRecord {
        machine_id: machine.into(),
        nonce: nonce.into(),
        expires_at: Utc::now() + Duration::minutes(5),
    }
}

mod sqlite {
    use super::*;

    /// Issue 9 item 8: sustained writes beside readers keep the WAL bounded (checkpoints
    /// happen), while the database itself grows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_sustained_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let store = std::sync::Arc::new(SqliteStore::open(&path).await.unwrap());
        machine(&*store, "t", "m1").await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut readers = Vec::new();
        for _ in 0..4 {
            let (store, stop) = (store.clone(), stop.clone());
            readers.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    store.machine(&tid("t"), "m1").await.unwrap().unwrap();
                    store.audit(&AuditFilter { limit: 5, ..Default::default() }).await.unwrap();
                }
            }));
        }
        let pad = "y".repeat(8 * 1024);
        let wal = dir.path().join("test.db-wal");
        let mut largest = 0;
        for i in 0..4_000 {
            let mut entry = audit_entry("access.refused", &format!("r{i}"));
            entry.detail = Some(serde_json::json!({ "pad": pad }));
            store.append_audit(&entry).await.unwrap();
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.await.unwrap();
        }
        let database = std::fs::metadata(&path).unwrap().len();
        assert!(largest <= 16 << 20, "the WAL grew to {largest} bytes");
        assert!(database >= 24 << 20, "the entries were checkpointed into the database ({database} bytes)");
    }

    /// The database itself refuses to change or remove audit rows, whatever code runs.
    #[tokio::test]
    async fn audit_rows_cannot_be_changed_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        let store = SqliteStore::open(&path).await.unwrap();
        crate::audit::the_audit_trail_keeps_entries_in_order_and_filters_them(&store).await;
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        for sql in ["UPDATE audit_log SET outcome = 'forged'", "DELETE FROM audit_log"] {
            let error = sqlx::query(sql).execute(&pool).await.unwrap_err();
            assert!(error.to_string().contains("append-only"), "{sql}: {error}");
        }
    }
}

mod actions {
    use super::*;

    pub async fn transitions_never_go_backwards(store: &dyn Store) {
        machine(store, "t", "m1").await;
        let action = pending("m1", Utc::now());
        store.create_action(&tid("t"), &action, None).await.unwrap();

        // Pending cannot jump to Succeeded, with or without a package.
        assert!(
            store
                .transition(action.id, "m1", &Transition::to(ActionStatus::Succeeded, Utc::now()), None)
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.complete_with_package("m1", &package(action.id, "t"), Utc::now(), None).await.unwrap().is_none());
        assert!(store.package(&tid("t"), action.id).await.unwrap().is_none(), "no package without Succeeded");

        let claimed = claim(store, "m1", Utc::now()).await.unwrap();
        assert_eq!((claimed.id, claimed.status), (action.id, ActionStatus::InProgress));
        // Another machine cannot complete it.
        assert!(store.complete_with_package("m2", &package(action.id, "t"), Utc::now(), None).await.unwrap().is_none());
        let done =
            store.complete_with_package("m1", &package(action.id, "t"), Utc::now(), None).await.unwrap().unwrap();
        assert_eq!(done.status, ActionStatus::Succeeded);
        assert!(store.package(&tid("t"), action.id).await.unwrap().is_some());

        // Final is final.
        for to in [ActionStatus::Failed, ActionStatus::Cancelled, ActionStatus::TimeOut, ActionStatus::InProgress] {
            assert!(
                store.transition(action.id, "m1", &Transition::to(to, Utc::now()), None).await.unwrap().is_none(),
                "{to}"
            );
        }
        assert_eq!(store.action(&tid("t"), action.id).await.unwrap().unwrap().status, ActionStatus::Succeeded);
    }

    pub async fn one_live_collection_per_machine(store: &dyn Store) {
        machine(store, "t", "m1").await;
        let first = pending("m1", Utc::now());
        store.create_action(&tid("t"), &first, None).await.unwrap();
        let second = pending("m1", Utc::now());
        assert!(matches!(store.create_action(&tid("t"), &second, None).await, Err(StoreError::ActiveRequestExists)));
        claim(store, "m1", Utc::now()).await.unwrap();
        assert!(matches!(store.create_action(&tid("t"), &second, None).await, Err(StoreError::ActiveRequestExists)));

        let failed = Transition::failure(ActionStatus::Failed, Utc::now(), 1, "broken");
        let after = store.transition(first.id, "m1", &failed, None).await.unwrap().unwrap();
        assert_eq!((after.error_h_result, after.troubleshoot_info.as_deref()), (1, Some("broken")));
        store.create_action(&tid("t"), &second, None).await.unwrap();
    }

    pub async fn claims_are_oldest_first_per_machine_and_tenants_are_separate(store: &dyn Store) {
        machine(store, "a", "m1").await;
        machine(store, "b", "m2").await;
        let now = Utc::now();
        let older = pending("m1", now - Duration::seconds(10));
        let mut other_type = pending("m1", now);
        other_type.action_type = ActionType::Isolate;
        store.create_action(&tid("a"), &older, None).await.unwrap();
        store.create_action(&tid("a"), &other_type, None).await.unwrap();
        assert!(claim(store, "m2", now).await.is_none());
        assert_eq!(claim(store, "m1", now).await.unwrap().id, older.id);

        assert!(store.action(&tid("b"), older.id).await.unwrap().is_none());
        assert!(store.machine(&tid("b"), "m1").await.unwrap().is_none());
        assert!(store.machine(&tid("a"), "M1-HOST").await.unwrap().is_some(), "names match case-insensitively");
        assert_eq!(store.actions(&tid("b"), &ListQuery::first(10)).await.unwrap().items.len(), 0);
        let listed = store.actions(&tid("a"), &ListQuery::first(10)).await.unwrap();
        assert_eq!(
            listed.items.iter().map(|a| a.id).collect::<Vec<_>>(),
            vec![other_type.id, older.id],
            "newest first"
        );
    }

    pub async fn lists_filter_order_count_and_page_in_the_store(store: &dyn Store) {
        use casefile_store::query::{CmpOp, Expr, OrderBy, Value};
        machine(store, "t", "m1").await;
        machine(store, "t", "m2").await;
        let base = Utc::now() - Duration::hours(1);
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut action = pending(if i % 2 == 0 { "m1" } else { "m2" }, base + Duration::seconds(i));
            action.status = if i == 4 { ActionStatus::Pending } else { ActionStatus::Failed };
            store.create_action(&tid("t"), &action, None).await.unwrap();
            ids.push(action.id);
        }
        let on_m1 = Expr::Compare { property: "machineId", op: CmpOp::Eq, value: Value::String("m1".into()) };
        let query = ListQuery { filter: Some(on_m1.clone()), count: true, ..ListQuery::first(2) };
        let page = store.actions(&tid("t"), &query).await.unwrap();
        assert_eq!(page.items.iter().map(|a| a.id).collect::<Vec<_>>(), vec![ids[4], ids[2]]);
        assert_eq!((page.total, page.more), (Some(3), true));
        let last = store.actions(&tid("t"), &ListQuery { skip: 2, ..query.clone() }).await.unwrap();
        assert_eq!((last.items.len(), last.more), (1, false));

        let not_failed = Expr::Not(Box::new(Expr::Compare {
            property: "status",
            op: CmpOp::Eq,
            value: Value::String("Failed".into()),
        }));
        let found =
            store.actions(&tid("t"), &ListQuery { filter: Some(not_failed), ..ListQuery::first(10) }).await.unwrap();
        assert_eq!(found.items.iter().map(|a| a.id).collect::<Vec<_>>(), vec![ids[4]]);
        let oldest_first = ListQuery {
            order_by: vec![OrderBy { property: "creationDateTimeUtc", descending: false }],
            ..ListQuery::first(1)
        };
        assert_eq!(store.actions(&tid("t"), &oldest_first).await.unwrap().items[0].id, ids[0]);
        let never = ListQuery { filter: Some(Expr::Const(false)), count: true, ..ListQuery::first(10) };
        let none = store.actions(&tid("t"), &never).await.unwrap();
        assert_eq!((none.items.len(), none.total), (0, Some(0)));
        // An unknown property is a caller bug, reported as such.
        let bogus = Expr::Compare { property: "colour", op: CmpOp::Eq, value: Value::Null };
        let error =
            store.actions(&tid("t"), &ListQuery { filter: Some(bogus), ..ListQuery::first(1) }).await.unwrap_err();
        assert!(matches!(error, StoreError::Query(_)), "{error}");
        let machines = store.machines(&tid("t"), &ListQuery { count: true, ..ListQuery::first(1) }).await.unwrap();
        assert_eq!((machines.items.len(), machines.total, machines.more), (1, Some(2), true));
    }

    pub async fn cancellation_is_immediate_when_pending_and_confirmed_when_running(store: &dyn Store) {
        machine(store, "t", "m1").await;
        let request = CancelRequest { requestor: "analyst".into(), comment: Some("stop".into()), at: Utc::now() };
        let waiting = pending("m1", Utc::now());
        store.create_action(&tid("t"), &waiting, None).await.unwrap();
        assert!(
            store.request_cancel(&tid("other"), waiting.id, &request, None).await.unwrap().is_none(),
            "tenants are separate"
        );
        let Some(CancelOutcome::Cancelled(done)) =
            store.request_cancel(&tid("t"), waiting.id, &request, None).await.unwrap()
        else {
            panic!("a pending action is cancelled at once");
        };
        assert_eq!(done.status, ActionStatus::Cancelled);
        assert_eq!(
            (done.cancellation_requestor.as_deref(), done.cancellation_comment.as_deref()),
            (Some("analyst"), Some("stop"))
        );
        assert!(matches!(
            store.request_cancel(&tid("t"), waiting.id, &request, None).await.unwrap(),
            Some(CancelOutcome::AlreadyFinal(_))
        ));

        let running = pending("m1", Utc::now());
        store.create_action(&tid("t"), &running, None).await.unwrap();
        claim(store, "m1", Utc::now()).await.unwrap();
        assert!(
            store.confirm_cancel("m1", running.id, Utc::now(), None).await.unwrap().is_none(),
            "nothing to confirm yet"
        );
        let Some(CancelOutcome::Requested(asked)) =
            store.request_cancel(&tid("t"), running.id, &request, None).await.unwrap()
        else {
            panic!("a running action waits for its agent");
        };
        assert_eq!(asked.status, ActionStatus::InProgress);
        assert_eq!(store.cancel_requests("m1").await.unwrap(), vec![running.id]);
        // A package arriving now is refused; the agent's confirmation ends the action.
        assert!(
            store.complete_with_package("m1", &package(running.id, "t"), Utc::now(), None).await.unwrap().is_none()
        );
        assert!(
            store.confirm_cancel("m2", running.id, Utc::now(), None).await.unwrap().is_none(),
            "only its own machine"
        );
        let confirmed = store.confirm_cancel("m1", running.id, Utc::now(), None).await.unwrap().unwrap();
        assert_eq!(confirmed.status, ActionStatus::Cancelled);
        assert_eq!(confirmed.cancellation_requestor.as_deref(), Some("analyst"));
        assert!(confirmed.cancellation_date_time_utc.is_some());
        assert!(store.cancel_requests("m1").await.unwrap().is_empty());
    }

    /// Issue 9 item 11: a claim whose answer never reached the agent is offered again once
    /// its lease ends; an accepted one never is.
    pub async fn unaccepted_claims_are_offered_again_after_their_lease(store: &dyn Store) {
        machine(store, "t", "m1").await;
        let t0 = Utc::now();
        let action = pending("m1", t0);
        store.create_action(&tid("t"), &action, None).await.unwrap();
        let lease = Duration::seconds(30);

        assert_eq!(store.next_lease_end("m1").await.unwrap(), None);
        let first = store.claim_leased("m1", t0, Some(t0 + lease), None).await.unwrap().unwrap();
        assert_eq!((first.action.id, first.action.status, first.offers), (action.id, ActionStatus::InProgress, 1));
        let end = store.next_lease_end("m1").await.unwrap().unwrap();
        assert_eq!(end.timestamp_micros(), (t0 + lease).timestamp_micros());
        // Within the lease nothing is handed out again.
        assert!(
            store.claim_leased("m1", t0 + Duration::seconds(29), Some(t0 + lease * 2), None).await.unwrap().is_none()
        );
        // Past it, the same action comes again, still InProgress, counted.
        let t1 = t0 + Duration::seconds(31);
        let again = store.claim_leased("m1", t1, Some(t1 + lease), None).await.unwrap().unwrap();
        assert_eq!((again.action.id, again.action.status, again.offers), (action.id, ActionStatus::InProgress, 2));
        assert_eq!(again.action.last_update_date_time_utc, first.action.last_update_date_time_utc, "started once");

        // Accepted: never offered again, whatever the time; other machines cannot accept it.
        assert!(!store.accept_action("m2", action.id, t1, None).await.unwrap());
        assert!(store.accept_action("m1", action.id, t1, None).await.unwrap());
        assert_eq!(store.next_lease_end("m1").await.unwrap(), None, "nothing left to offer again");
        assert!(
            store
                .claim_leased("m1", t1 + Duration::days(1), Some(t1 + Duration::days(2)), None)
                .await
                .unwrap()
                .is_none()
        );

        // A cancellation awaiting the agent is not handed out as work.
        machine(store, "t", "m2").await;
        let other = pending("m2", t0);
        store.create_action(&tid("t"), &other, None).await.unwrap();
        store.claim_leased("m2", t0, Some(t0 + lease), None).await.unwrap().unwrap();
        let cancel = CancelRequest { requestor: "r".into(), comment: None, at: t0 };
        store.request_cancel(&tid("t"), other.id, &cancel, None).await.unwrap().unwrap();
        assert!(store.claim_leased("m2", t1, Some(t1 + lease), None).await.unwrap().is_none());

        // Final actions cannot be accepted.
        let done = Transition::failure(ActionStatus::Failed, t1, 3, "x");
        store.transition(action.id, "m1", &done, None).await.unwrap().unwrap();
        assert!(!store.accept_action("m1", action.id, t1, None).await.unwrap());

        // A claim without a lease (an agent that does not confirm) counts as accepted.
        let unleased = pending("m1", t1);
        store.create_action(&tid("t"), &unleased, None).await.unwrap();
        assert_eq!(store.claim_leased("m1", t1, None, None).await.unwrap().unwrap().action.id, unleased.id);
        assert_eq!(store.next_lease_end("m1").await.unwrap(), None);
        assert!(store.claim_leased("m1", t1 + Duration::days(1), None, None).await.unwrap().is_none());
    }

    /// Issue 9 item 10: a restarted agent that still holds a result keeps that action running.
    pub async fn a_restart_spares_the_actions_whose_results_the_agent_holds(store: &dyn Store) {
        machine(store, "t", "m1").await;
        let held = pending("m1", Utc::now());
        store.create_action(&tid("t"), &held, None).await.unwrap();
        store.claim_leased("m1", Utc::now(), Some(Utc::now()), None).await.unwrap().unwrap();
        let restart = Transition::failure(ActionStatus::Failed, Utc::now(), 3, "restarted");
        assert!(store.fail_in_progress_except("m1", &[held.id], &restart).await.unwrap().is_empty());
        assert_eq!(store.action(&tid("t"), held.id).await.unwrap().unwrap().status, ActionStatus::InProgress);
        assert_eq!(store.fail_in_progress_except("m1", &[Uuid::new_v4()], &restart).await.unwrap(), vec![held.id]);
        assert_eq!(store.action(&tid("t"), held.id).await.unwrap().unwrap().status, ActionStatus::Failed);
    }

    /// Issue 10: the caller's `externalId` and `title` are stored, returned and filterable,
    /// per tenant, with every string operator the filter language has.
    pub async fn actions_keep_their_profile_and_only_a_running_one_its_agents_progress(store: &dyn Store) {
        use casefile_proto::action::{Progress, ProgressPhase};
        use casefile_store::query::{CmpOp, Expr, Value};
        machine(store, "t", "m1").await;
        machine(store, "t", "m2").await;
        let mut triage = pending("m1", Utc::now() - Duration::minutes(1));
        triage.profile = "triage".to_owned();
        store.create_action(&tid("t"), &triage, None).await.unwrap();
        let standard = pending("m2", Utc::now() - Duration::minutes(1));
        store.create_action(&tid("t"), &standard, None).await.unwrap();
        let stored = store.action(&tid("t"), triage.id).await.unwrap().unwrap();
        assert_eq!((stored.profile.as_str(), stored.progress.as_ref()), ("triage", None));
        let filter =
            Expr::Compare { property: "casefileProfile", op: CmpOp::Eq, value: Value::String("triage".into()) };
        let listed =
            store.actions(&tid("t"), &ListQuery { filter: Some(filter), ..ListQuery::first(10) }).await.unwrap();
        assert_eq!(listed.items.iter().map(|a| a.id).collect::<Vec<_>>(), vec![triage.id]);

        let progress = Progress {
            phase: ProgressPhase::Collecting,
            collectors_done: 3,
            collectors_total: 17,
            collector: Some("timeline".to_owned()),
            package_bytes: 1 << 33,
            uploaded_bytes: 0,
            updated_date_time_utc: Some(Utc::now()),
        };
        assert!(!store.set_progress("m1", triage.id, &progress).await.unwrap(), "pending: not running yet");
        let claimed = claim(store, "m1", Utc::now()).await.unwrap();
        assert!(!store.set_progress("m2", triage.id, &progress).await.unwrap(), "another machine's action");
        assert!(store.set_progress("m1", triage.id, &progress).await.unwrap());
        let stored = store.action(&tid("t"), triage.id).await.unwrap().unwrap();
        let kept = stored.progress.unwrap();
        assert_eq!((kept.collectors_done, kept.package_bytes, kept.collector), (3, 1 << 33, Some("timeline".into())));
        // Progress is not a change of status: lastUpdateDateTimeUtc stays where the claim put it.
        assert_eq!(stored.last_update_date_time_utc, claimed.last_update_date_time_utc);
        assert_eq!(store.action(&tid("t"), standard.id).await.unwrap().unwrap().progress, None);
    }

    pub async fn actions_keep_their_external_id_and_title(store: &dyn Store) {
        use casefile_store::query::{CmpOp, Expr, Value};
        machine(store, "t", "m1").await;
        machine(store, "t", "m2").await;
        machine(store, "u", "m3").await;
        let base = Utc::now() - Duration::hours(1);
        let tagged = |machine_id: &str, i: i64, external_id: Option<&str>, title: Option<&str>| {
            let mut action = pending(machine_id, base + Duration::seconds(i));
            action.status = ActionStatus::Failed;
            action.external_id = external_id.map(str::to_owned);
            action.title = title.map(str::to_owned);
            action
        };
        let a = tagged("m1", 0, Some("CASE-1"), Some("Ransomware on m1"));
        let b = tagged("m2", 1, Some("CASE-1"), None);
        let c = tagged("m1", 2, Some("CASE-20"), Some("Phishing"));
        let d = tagged("m2", 3, None, None);
        let other_tenant = tagged("m3", 4, Some("CASE-1"), None);
        for action in [&a, &b, &c, &d] {
            store.create_action(&tid("t"), action, None).await.unwrap();
        }
        store.create_action(&tid("u"), &other_tenant, None).await.unwrap();
        let stored = store.action(&tid("t"), a.id).await.unwrap().unwrap();
        assert_eq!(
            (stored.external_id.as_deref(), stored.title.as_deref()),
            (Some("CASE-1"), Some("Ransomware on m1"))
        );

        let ids = |filter: Expr| async move {
            let listed =
                store.actions(&tid("t"), &ListQuery { filter: Some(filter), ..ListQuery::first(10) }).await.unwrap();
            listed.items.iter().map(|a| a.id).collect::<Vec<_>>()
        };
        let text = |s: &str| Value::String(s.into());
        let external = |op, value| Expr::Compare { property: "externalId", op, value };
        assert_eq!(ids(external(CmpOp::Eq, text("CASE-1"))).await, vec![b.id, a.id], "newest first, this tenant only");
        // A case number is an identifier: its case matters.
        assert!(ids(external(CmpOp::Eq, text("case-1"))).await.is_empty());
        assert_eq!(ids(external(CmpOp::Ne, text("CASE-1"))).await, vec![d.id, c.id], "null differs from any value");
        assert_eq!(ids(external(CmpOp::Eq, Value::Null)).await, vec![d.id]);
        assert_eq!(ids(external(CmpOp::Gt, text("CASE-1"))).await, vec![c.id]);
        let listed = Expr::In { property: "externalId", values: vec![text("CASE-20"), text("CASE-3")] };
        assert_eq!(ids(listed).await, vec![c.id]);
        let prefix = Expr::StartsWith { property: "externalId", prefix: "CASE-2".into() };
        assert_eq!(ids(prefix).await, vec![c.id]);
        // LIKE's own wildcards in a value are literal.
        let wildcard = Expr::StartsWith { property: "externalId", prefix: "CASE_".into() };
        assert!(ids(wildcard).await.is_empty());
        let title = Expr::Contains { property: "title", needle: "somware".into() };
        assert_eq!(ids(title).await, vec![a.id]);
        let both = Expr::And(
            Box::new(external(CmpOp::Eq, text("CASE-1"))),
            Box::new(Expr::Compare { property: "title", op: CmpOp::Eq, value: Value::Null }),
        );
        assert_eq!(ids(both).await, vec![b.id]);
    }
}

mod machines {
    use super::*;

    pub async fn reenrollment_keeps_first_seen_and_replaces_the_credential(store: &dyn Store) {
        let first = machine(store, "t", "m1").await;
        let again = store
            .enroll_machine(&MachineEnrollment {
                id: "m1".into(),
                tenant_id: tid("t"),
                facts: HostFacts {
                    computer_dns_name: "renamed".into(),
                    os_platform: "Linux".into(),
                    ..Default::default()
                },
                credential_hash: "new-hash".into(),
                agent_public_key: None,
                last_ip_address: None,
                at: Utc::now() + Duration::seconds(5),
            })
            .await
            .unwrap();
        assert_eq!(again.first_seen, first.first_seen);
        assert_eq!(again.facts.computer_dns_name, "renamed");
        assert!(store.machine_by_credential("hash-m1").await.unwrap().is_none());
        assert_eq!(store.machine_by_credential("new-hash").await.unwrap().unwrap().id, "m1");
    }

    /// Issue 9 item 1: a token creates machines, never re-keys one without proof of its key.
    pub async fn enrollment_tokens_never_rekey_a_machine_without_proof(store: &dyn Store) {
        store.insert_enrollment_token(&token("t", "tok", 3, Duration::hours(1))).await.unwrap();
        let created = store.enroll_with_token(&by_token("tok", "m1", Some("key-1"), None)).await.unwrap();
        assert!(matches!(created, EnrollOutcome::Created(ref m) if m.agent_public_key.as_deref() == Some("key-1")));
        assert_eq!(uses(store, "tok").await, 1);

        // The takeover: same machine id, token alone, or a proof by another key.
        let takeover = store.enroll_with_token(&by_token("tok", "m1", Some("evil"), None)).await.unwrap();
        assert!(matches!(takeover, EnrollOutcome::MachineEnrolled));
        let wrong_key = KeyProof { key: "evil".into(), nonce: "n".into() };
        let takeover = store.enroll_with_token(&by_token("tok", "m1", Some("evil"), Some(wrong_key))).await.unwrap();
        assert!(matches!(takeover, EnrollOutcome::MachineEnrolled));
        assert_eq!(uses(store, "tok").await, 1, "a refused enrollment takes no use");
        assert_eq!(entries_for(store, "m1").await, 1, "only the enrollment that happened is in the trail");
        let kept = store.machine(&tid("t"), "m1").await.unwrap().unwrap();
        assert_eq!(kept.agent_public_key.as_deref(), Some("key-1"));

        // The registered key with a challenge: once, before it expires, for that machine only.
        assert!(
            !store.create_enroll_challenge(&tid("t"), &challenge("nobody", "n0")).await.unwrap(),
            "no such machine"
        );
        assert!(!store.create_enroll_challenge(&tid("other"), &challenge("m1", "n0")).await.unwrap(), "other tenant");
        let mut stale = challenge("m1", "stale");
        stale.expires_at = Utc::now() - Duration::seconds(1);
        assert!(store.create_enroll_challenge(&tid("t"), &stale).await.unwrap());
        let proof = |nonce: &str| Some(KeyProof { key: "key-1".into(), nonce: nonce.into() });
        let late = store.enroll_with_token(&by_token("tok", "m1", Some("key-2"), proof("stale"))).await.unwrap();
        assert!(matches!(late, EnrollOutcome::ChallengeInvalid), "expired");
        assert!(store.create_enroll_challenge(&tid("t"), &challenge("m1", "fresh")).await.unwrap());
        let unknown = store.enroll_with_token(&by_token("tok", "m1", Some("key-2"), proof("guessed"))).await.unwrap();
        assert!(matches!(unknown, EnrollOutcome::ChallengeInvalid));
        let rekeyed = store.enroll_with_token(&by_token("tok", "m1", Some("key-2"), proof("fresh"))).await.unwrap();
        assert!(matches!(rekeyed, EnrollOutcome::Rekeyed(ref m) if m.agent_public_key.as_deref() == Some("key-2")));
        assert_eq!(rekeyed_first_seen(&rekeyed), kept.first_seen);
        let replayed = store.enroll_with_token(&by_token("tok", "m1", Some("key-3"), proof("fresh"))).await.unwrap();
        assert!(matches!(replayed, EnrollOutcome::MachineEnrolled), "the old key proves nothing any more");
        assert_eq!(uses(store, "tok").await, 2);
    }

    /// Issue 9 item 1: an administrator's reset voids the key and credential; the next
    /// enrollment by token makes the identity afresh, once.
    pub async fn identity_reset_voids_the_key_and_allows_one_fresh_enrollment(store: &dyn Store) {
        store.insert_enrollment_token(&token("t", "tok", 5, Duration::hours(1))).await.unwrap();
        let enrolled = by_token("tok", "m1", Some("key-1"), None);
        store.enroll_with_token(&enrolled).await.unwrap();
        assert!(store.machine_by_credential(&enrolled.machine.credential_hash).await.unwrap().is_some());
        let entry = AuditEntry {
            at: Utc::now(),
            tenant_id: Some("t".into()),
            actor_kind: "admin".into(),
            actor: "cli".into(),
            event: "machine.reset-identity".into(),
            target: Some("m1".into()),
            outcome: "ok".into(),
            http_status: None,
            source_ip: None,
            correlation_id: None,
            detail: None,
        };
        assert!(store.reset_machine_identity(&tid("other"), "m1", &entry).await.unwrap().is_none());
        let reset = store.reset_machine_identity(&tid("t"), "M1", &entry).await.unwrap().unwrap();
        assert_eq!(reset.agent_public_key, None);
        assert!(store.machine_by_credential(&enrolled.machine.credential_hash).await.unwrap().is_none());
        assert!(!store.create_enroll_challenge(&tid("t"), &challenge("m1", "n")).await.unwrap(), "no key to prove");
        let filter = AuditFilter { event: Some("machine.reset-identity".into()), limit: 10, ..Default::default() };
        assert_eq!(store.audit(&filter).await.unwrap().len(), 1, "the reset is on record");

        let fresh = store.enroll_with_token(&by_token("tok", "m1", Some("key-2"), None)).await.unwrap();
        assert!(matches!(fresh, EnrollOutcome::Recreated(ref m) if m.agent_public_key.as_deref() == Some("key-2")));
        let second = store.enroll_with_token(&by_token("tok", "m1", Some("key-3"), None)).await.unwrap();
        assert!(matches!(second, EnrollOutcome::MachineEnrolled), "a reset allows one enrollment");
    }

    /// Issue 9 item 2: a name several machines report identifies none of them.
    pub async fn shared_names_are_ambiguous_and_ids_win(store: &dyn Store) {
        machine(store, "t", "m1").await;
        machine(store, "t", "m2").await;
        store
            .update_host_facts(
                "m2",
                &HostFacts { computer_dns_name: "M1-host".into(), os_platform: "Linux".into(), ..Default::default() },
                Utc::now(),
                Some(&audit_entry("machine.rename", "m2")),
            )
            .await
            .unwrap();
        match store.machine(&tid("t"), "m1-host").await {
            Err(StoreError::AmbiguousName { candidates, .. }) => {
                let mut candidates = candidates;
                candidates.sort();
                assert_eq!(candidates, vec!["m1".to_owned(), "m2".to_owned()]);
            }
            other => panic!("expected an ambiguous name, got {other:?}"),
        }
        assert_eq!(store.machine(&tid("t"), "m2").await.unwrap().unwrap().id, "m2", "an id always wins");
        assert_eq!(store.machines_named(&tid("t"), "M1-HOST").await.unwrap().len(), 2);
        assert!(store.machines_named(&tid("u"), "m1-host").await.unwrap().is_empty());
        assert_eq!(store.machine(&tid("t"), "m2-host").await.unwrap().map(|m| m.id), None, "m2 no longer reports it");
    }
}

mod identity {
    use super::*;

    pub async fn applications_are_per_tenant_with_unique_names(store: &dyn Store) {
        let soar = application("t", "SOAR playbook");
        store.create_application(&soar).await.unwrap();
        let stored = store.application(&tid("t"), soar.client_id).await.unwrap().unwrap();
        assert_eq!(stored.name, "SOAR playbook");
        assert_eq!(stored.roles, soar.roles);
        assert_eq!(stored.created_at.timestamp_micros(), soar.created_at.timestamp_micros());
        assert_eq!((stored.secret_rotated_at, stored.disabled_at), (None, None));

        // Names are unique per tenant without letter case; other tenants may reuse them.
        let twin = application("t", "soar PLAYBOOK");
        assert!(matches!(store.create_application(&twin).await, Err(StoreError::Duplicate(_))));
        store.create_application(&application("other", "SOAR playbook")).await.unwrap();
        store.create_application(&application("t", "Another")).await.unwrap();

        assert!(store.application(&tid("other"), soar.client_id).await.unwrap().is_none(), "tenants are separate");
        assert_eq!(store.application_by_client_id(soar.client_id).await.unwrap().unwrap().tenant_id, "t");
        assert!(store.application_by_client_id(Uuid::new_v4()).await.unwrap().is_none());
        let names: Vec<_> = store.applications(&tid("t")).await.unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, vec!["Another", "SOAR playbook"], "by name");
        assert_eq!(store.applications(&tid("nobody")).await.unwrap().len(), 0);
    }

    pub async fn applications_change_roles_state_and_secret(store: &dyn Store) {
        let app = application("t", "playbook");
        store.create_application(&app).await.unwrap();
        let roles = vec!["Machine.CollectForensics".to_owned(), "Machine.Read.All".to_owned()];
        let changed = store.update_application_roles(&tid("t"), app.client_id, &roles).await.unwrap().unwrap();
        assert_eq!(changed.roles, roles);
        assert!(store.update_application_roles(&tid("other"), app.client_id, &roles).await.unwrap().is_none());

        let first = Utc::now();
        let disabled = store.set_application_disabled(&tid("t"), app.client_id, Some(first)).await.unwrap().unwrap();
        assert_eq!(disabled.disabled_at.map(|t| t.timestamp_micros()), Some(first.timestamp_micros()));
        let again = store
            .set_application_disabled(&tid("t"), app.client_id, Some(first + Duration::seconds(5)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.disabled_at, disabled.disabled_at, "disabling twice keeps the first time");
        let enabled = store.set_application_disabled(&tid("t"), app.client_id, None).await.unwrap().unwrap();
        assert_eq!(enabled.disabled_at, None);
        assert!(store.set_application_disabled(&tid("other"), app.client_id, None).await.unwrap().is_none());

        let rotated_at = Utc::now();
        let rotated =
            store.rotate_application_secret(&tid("t"), app.client_id, "new-hash", rotated_at).await.unwrap().unwrap();
        assert_eq!(rotated.secret_hash, "new-hash");
        assert_eq!(rotated.secret_rotated_at.map(|t| t.timestamp_micros()), Some(rotated_at.timestamp_micros()));
        assert_eq!(store.application(&tid("t"), app.client_id).await.unwrap().unwrap().secret_hash, "new-hash");
        assert!(store.rotate_application_secret(&tid("t"), Uuid::new_v4(), "x", rotated_at).await.unwrap().is_none());
    }

    pub async fn signing_keys_retire_once(store: &dyn Store) {
        let key = |kid: &str, age: i64| SigningKeyRecord {
            kid: kid.into(),
            purpose: "token".into(),
            algorithm: "EdDSA".into(),
            private_key: vec![1; 32],
            public_key: vec![2; 32],
            created_at: Utc::now() - Duration::seconds(age),
            retired_at: None,
        };
        store.insert_signing_key(&key("old", 60)).await.unwrap();
        store.insert_signing_key(&key("new", 0)).await.unwrap();
        assert!(store.retire_signing_key("old", Utc::now()).await.unwrap());
        assert!(!store.retire_signing_key("old", Utc::now()).await.unwrap(), "already retired");
        assert!(!store.retire_signing_key("missing", Utc::now()).await.unwrap());
        let keys = store.signing_keys("token").await.unwrap();
        assert_eq!(
            keys.iter().map(|k| (k.kid.as_str(), k.retired_at.is_some())).collect::<Vec<_>>(),
            vec![("new", false), ("old", true)]
        );
    }

    /// Issue 9 item 1: tokens are single-use by default, expire, can be revoked, and a use is
    /// taken atomically.
    pub async fn enrollment_tokens_are_counted_expire_and_revoke(store: &dyn Store) {
        store.insert_enrollment_token(&token("t", "once", 1, Duration::hours(1))).await.unwrap();
        let racers: Vec<_> = (1..=4).map(|i| by_token("once", &format!("r{i}"), None, None)).collect();
        let (a, b, c, d) = tokio::join!(
            store.enroll_with_token(&racers[0]),
            store.enroll_with_token(&racers[1]),
            store.enroll_with_token(&racers[2]),
            store.enroll_with_token(&racers[3]),
        );
        let won = [a, b, c, d].into_iter().filter(|o| matches!(o.as_ref().unwrap(), EnrollOutcome::Created(_))).count();
        assert_eq!(won, 1, "exactly one racing enrollment wins a single-use token");
        assert_eq!(uses(store, "once").await, 1);

        store.insert_enrollment_token(&token("t", "old", 5, Duration::seconds(-1))).await.unwrap();
        let expired = store.enroll_with_token(&by_token("old", "e1", None, None)).await.unwrap();
        assert!(matches!(expired, EnrollOutcome::TokenUnusable));
        let wrong_tenant = TokenEnrollment {
            machine: MachineEnrollment { tenant_id: tid("u"), ..by_token("once", "x", None, None).machine },
            ..by_token("once", "x", None, None)
        };
        assert!(matches!(store.enroll_with_token(&wrong_tenant).await.unwrap(), EnrollOutcome::TokenUnusable));

        let many = token("t", "many", 5, Duration::hours(1));
        store.insert_enrollment_token(&many).await.unwrap();
        assert!(store.revoke_enrollment_token(&tid("other"), many.id, Utc::now()).await.unwrap().is_none());
        let revoked = store.revoke_enrollment_token(&tid("t"), many.id, Utc::now()).await.unwrap().unwrap();
        assert!(revoked.revoked_at.is_some());
        let again =
            store.revoke_enrollment_token(&tid("t"), many.id, Utc::now() + Duration::hours(1)).await.unwrap().unwrap();
        assert_eq!(again.revoked_at, revoked.revoked_at, "the first revocation stands");
        let refused = store.enroll_with_token(&by_token("many", "v1", None, None)).await.unwrap();
        assert!(matches!(refused, EnrollOutcome::TokenUnusable));

        let listed = store.enrollment_tokens(&tid("t")).await.unwrap();
        assert_eq!(listed.len(), 3);
        assert!(listed.iter().all(|t| t.tenant_id == "t"));
        assert!(store.enrollment_tokens(&tid("other")).await.unwrap().is_empty());
    }
}

mod audit {
    use super::*;

    pub async fn the_audit_trail_keeps_entries_in_order_and_filters_them(store: &dyn Store) {
        let entry = |tenant: &str, event: &str, target: &str, at: chrono::DateTime<Utc>| AuditEntry {
            at,
            tenant_id: Some(tenant.into()),
            actor_kind: "application".into(),
            actor: "SOAR".into(),
            event: event.into(),
            target: Some(target.into()),
            outcome: "ok".into(),
            http_status: Some(201),
            source_ip: Some("10.0.0.9".into()),
            correlation_id: Some("c-1".into()),
            detail: Some(serde_json::json!({"comment": "x"})),
        };
        let t0 = Utc::now() - Duration::minutes(10);
        let first = store.append_audit(&entry("a", "collect", "act-1", t0)).await.unwrap();
        let second =
            store.append_audit(&entry("a", "package.download", "act-1", t0 + Duration::minutes(1))).await.unwrap();
        store.append_audit(&entry("b", "collect", "act-2", t0 + Duration::minutes(2))).await.unwrap();
        assert!(second > first);
        let all_a =
            store.audit(&AuditFilter { tenant_id: Some("a".into()), limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(all_a.iter().map(|r| r.entry.event.as_str()).collect::<Vec<_>>(), ["collect", "package.download"]);
        assert_eq!(all_a[0].entry, entry("a", "collect", "act-1", all_a[0].entry.at));
        let downloads = AuditFilter { event: Some("package.download".into()), limit: 10, ..Default::default() };
        assert_eq!(store.audit(&downloads).await.unwrap().len(), 1);
        let later = AuditFilter { since: Some(t0 + Duration::seconds(30)), limit: 10, ..Default::default() };
        assert_eq!(store.audit(&later).await.unwrap().len(), 2);
        let page = AuditFilter { after_seq: Some(first), limit: 1, ..Default::default() };
        assert_eq!(store.audit(&page).await.unwrap()[0].seq, second);
    }

    /// Issue 9 item 9: a change and its audit entry commit in one transaction, and a change
    /// that does not happen leaves no entry.
    pub async fn changes_and_their_audit_entries_commit_together(store: &dyn Store) {
        machine(store, "t", "m1").await;
        let first = pending("m1", Utc::now());
        let target = first.id.to_string();
        store.create_action(&tid("t"), &first, Some(&audit_entry("collect", &target))).await.unwrap();
        assert_eq!(entries_for(store, &target).await, 1);
        let refused = pending("m1", Utc::now());
        let refused_target = refused.id.to_string();
        let conflict = store.create_action(&tid("t"), &refused, Some(&audit_entry("collect", &refused_target))).await;
        assert!(matches!(conflict, Err(StoreError::ActiveRequestExists)));
        assert_eq!(entries_for(store, &refused_target).await, 0, "no entry for an action that was not created");

        let request = CancelRequest { requestor: "analyst".into(), comment: None, at: Utc::now() };
        let cancelled =
            store.request_cancel(&tid("t"), first.id, &request, Some(&audit_entry("cancel", &target))).await;
        assert!(matches!(cancelled, Ok(Some(CancelOutcome::Cancelled(_)))));
        assert_eq!(entries_for(store, &target).await, 2);
        let again = store.request_cancel(&tid("t"), first.id, &request, Some(&audit_entry("cancel", &target))).await;
        assert!(matches!(again, Ok(Some(CancelOutcome::AlreadyFinal(_)))));
        let failed = Transition::to(ActionStatus::Failed, Utc::now());
        let moved = store.transition(first.id, "m1", &failed, Some(&audit_entry("action.fail", &target))).await;
        assert!(moved.unwrap().is_none());
        assert!(
            store.confirm_cancel("m1", first.id, Utc::now(), Some(&audit_entry("x", &target))).await.unwrap().is_none()
        );
        assert!(
            store
                .complete_with_package("m1", &package(first.id, "t"), Utc::now(), Some(&audit_entry("x", &target)))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(entries_for(store, &target).await, 2, "refused changes leave no entry");

        let running = pending("m1", Utc::now());
        let running_target = running.id.to_string();
        store.create_action(&tid("t"), &running, None).await.unwrap();
        claim(store, "m1", Utc::now()).await.unwrap();
        let entry = audit_entry("package.upload", &running_target);
        store.complete_with_package("m1", &package(running.id, "t"), Utc::now(), Some(&entry)).await.unwrap().unwrap();
        assert_eq!(entries_for(store, &running_target).await, 1);
    }
}

mod maintenance {
    use super::*;

    pub async fn silent_machines_time_out_and_restarts_fail(store: &dyn Store) {
        machine(store, "t", "quiet").await;
        machine(store, "t", "chatty").await;
        let quiet = pending("quiet", Utc::now());
        let chatty = pending("chatty", Utc::now());
        store.create_action(&tid("t"), &quiet, None).await.unwrap();
        store.create_action(&tid("t"), &chatty, None).await.unwrap();
        claim(store, "quiet", Utc::now()).await.unwrap();
        claim(store, "chatty", Utc::now()).await.unwrap();
        store.touch_machine("chatty", Utc::now() + Duration::seconds(60), Some("10.0.0.1")).await.unwrap();

        let cutoff = Utc::now() + Duration::seconds(30);
        let timeout = Transition::failure(ActionStatus::TimeOut, Utc::now(), 2, "silent");
        assert_eq!(store.time_out_stalled(cutoff, Utc::now() - Duration::seconds(3600), &timeout).await.unwrap(), 1);
        assert_eq!(store.action(&tid("t"), quiet.id).await.unwrap().unwrap().status, ActionStatus::TimeOut);
        assert_eq!(store.action(&tid("t"), chatty.id).await.unwrap().unwrap().status, ActionStatus::InProgress);

        // A collection running for longer than allowed times out even if its agent still polls.
        let long = Transition::failure(ActionStatus::TimeOut, Utc::now(), 2, "too long");
        assert_eq!(
            store
                .time_out_stalled(Utc::now() - Duration::seconds(3600), Utc::now() - Duration::seconds(3600), &long)
                .await
                .unwrap(),
            0
        );

        let restart = Transition::failure(ActionStatus::Failed, Utc::now(), 3, "restarted");
        assert_eq!(store.fail_in_progress("chatty", &restart).await.unwrap(), vec![chatty.id]);
        assert_eq!(store.action(&tid("t"), chatty.id).await.unwrap().unwrap().status, ActionStatus::Failed);
        let seen = store.machine(&tid("t"), "chatty").await.unwrap().unwrap();
        assert_eq!(seen.last_ip_address.as_deref(), Some("10.0.0.1"));
    }

    pub async fn pending_actions_expire_and_packages_retire(store: &dyn Store) {
        machine(store, "t", "m1").await;
        machine(store, "t", "m2").await;
        let old = pending("m1", Utc::now() - Duration::days(4));
        let fresh = pending("m2", Utc::now());
        store.create_action(&tid("t"), &old, None).await.unwrap();
        store.create_action(&tid("t"), &fresh, None).await.unwrap();
        let timeout = Transition::failure(ActionStatus::TimeOut, Utc::now(), 2, "unclaimed");
        assert_eq!(store.time_out_pending(Utc::now() - Duration::days(3), &timeout).await.unwrap(), 1);
        assert_eq!(store.action(&tid("t"), old.id).await.unwrap().unwrap().status, ActionStatus::TimeOut);
        assert_eq!(store.action(&tid("t"), fresh.id).await.unwrap().unwrap().status, ActionStatus::Pending);

        claim(store, "m2", Utc::now()).await.unwrap();
        let mut stored = package(fresh.id, "t");
        stored.stored_at = Utc::now() - Duration::days(31);
        store.complete_with_package("m2", &stored, Utc::now(), None).await.unwrap().unwrap();
        let expired = store.expired_packages(Utc::now() - Duration::days(30), 10).await.unwrap();
        assert_eq!(expired.iter().map(|p| p.action_id).collect::<Vec<_>>(), vec![fresh.id]);
        assert!(store.mark_package_deleted(fresh.id, Utc::now()).await.unwrap());
        // A second sweeper (another replica) finds it done: it neither deletes nor audits again.
        assert!(!store.mark_package_deleted(fresh.id, Utc::now()).await.unwrap());
        assert!(store.expired_packages(Utc::now(), 10).await.unwrap().is_empty());
        assert!(store.package(&tid("t"), fresh.id).await.unwrap().unwrap().deleted_at.is_some());
    }
}

mod access {
    use super::*;
    use casefile_proto::rbac::{DeviceGroup, Role};

    pub async fn roles_and_groups_are_per_tenant(store: &dyn Store) {
        let (a, b) = (tid("a"), tid("b"));
        let role = Role { name: "Analysts".into(), permissions: vec![], users: vec!["u".into()], groups: vec![] };
        store.put_role(&a, &role).await.unwrap();
        assert_eq!(store.roles(&a).await.unwrap().len(), 1);
        assert!(store.roles(&b).await.unwrap().is_empty(), "tenants are separate");
        assert!(!store.delete_role(&b, "Analysts").await.unwrap(), "another tenant cannot delete it");
        assert_eq!(store.roles(&a).await.unwrap().len(), 1);

        let group = DeviceGroup { id: 0, name: "Servers".into(), rank: 1, rules: vec![], user_groups: vec![] };
        let created = store.create_device_group(&a, &group).await.unwrap();
        // Names are unique per tenant only.
        assert!(matches!(store.create_device_group(&a, &group).await, Err(StoreError::Duplicate(_))));
        store.create_device_group(&b, &group).await.unwrap();
        assert!(!store.delete_device_group(&b, created.id).await.unwrap(), "another tenant's group id");
        assert_eq!(store.device_groups(&a).await.unwrap().len(), 1);

        store.set_ungrouped_user_groups(&a, &["g1".into()]).await.unwrap();
        assert_eq!(store.ungrouped_user_groups(&a).await.unwrap(), vec!["g1".to_owned()]);
        assert!(store.ungrouped_user_groups(&b).await.unwrap().is_empty());
    }
}

mod users {
    use super::*;

    pub(crate) fn user(tenant: &str, name: &str) -> UserRecord {
        let now = Utc::now();
        UserRecord {
            id: Uuid::new_v4(),
            tenant_id: tid(tenant),
            name: name.into(),
            password_hash: "$argon2id$fake".into(),
            created_at: now,
            password_changed_at: now,
            disabled_at: None,
            failed_logins: 0,
            last_failed_at: None,
        }
    }

    fn session(user: &UserRecord, hash: &str, last_seen: chrono::DateTime<Utc>, expires_in: Duration) -> SessionRecord {
        SessionRecord {
            id_hash: hash.into(),
            tenant_id: user.tenant_id.clone(),
            local_user: Some(user.id),
            identity: SessionIdentity {
                issuer: "local".into(),
                subject: user.id.to_string(),
                upn: Some(user.name.clone()),
                oid: None,
                groups: vec!["g1".into()],
            },
            csrf: format!("csrf-{hash}"),
            created_at: last_seen,
            last_seen,
            expires_at: last_seen + expires_in,
        }
    }

    pub async fn users_are_per_tenant_with_names_unique_in_any_case(store: &dyn Store) {
        let alice = user("a", "Alice");
        store.create_user(&alice).await.unwrap();
        assert!(matches!(store.create_user(&user("a", "ALICE")).await, Err(StoreError::Duplicate(_))));
        store.create_user(&user("b", "alice")).await.unwrap();
        let found = store.user_by_name(&tid("a"), "aLiCe").await.unwrap().expect("found in any case");
        assert_eq!((found.id, found.name.as_str()), (alice.id, "Alice"));
        assert_eq!(store.users(&tid("a")).await.unwrap().len(), 1);
        assert!(store.user_by_name(&tid("c"), "alice").await.unwrap().is_none());
        assert!(store.change_user(&tid("c"), "alice", &UserChange::Enable).await.unwrap().is_none(), "another tenant");

        let at = Utc::now();
        let failed = store.change_user(&tid("a"), "alice", &UserChange::LoginFailed { at }).await.unwrap().unwrap();
        let failed = store
            .change_user(&tid("a"), "alice", &UserChange::LoginFailed { at: failed.last_failed_at.unwrap() })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(failed.failed_logins, 2);
        assert_eq!(store.user_by_name(&tid("b"), "alice").await.unwrap().unwrap().failed_logins, 0, "tenants apart");
        let ok = store.change_user(&tid("a"), "alice", &UserChange::LoginSucceeded).await.unwrap().unwrap();
        assert_eq!(ok.failed_logins, 0);
    }

    pub async fn disabling_or_a_new_password_ends_the_users_sessions(store: &dyn Store) {
        let alice = user("a", "alice");
        let bob = user("a", "bob");
        store.create_user(&alice).await.unwrap();
        store.create_user(&bob).await.unwrap();
        let now = Utc::now();
        store.create_session(&session(&alice, "s1", now, Duration::hours(8))).await.unwrap();
        store.create_session(&session(&bob, "s2", now, Duration::hours(8))).await.unwrap();
        let read = store.session("s1").await.unwrap().expect("stored");
        assert_eq!(read.identity.groups, vec!["g1".to_owned()]);
        assert_eq!(read.csrf, "csrf-s1");
        assert_eq!(read.local_user, Some(alice.id));

        let disabled = store.change_user(&tid("a"), "alice", &UserChange::Disable { at: now }).await.unwrap().unwrap();
        assert!(disabled.disabled_at.is_some());
        assert!(store.session("s1").await.unwrap().is_none(), "a disabled user's session ends");
        assert!(store.session("s2").await.unwrap().is_some(), "other users keep theirs");

        let hash = "$argon2id$new".to_owned();
        store.change_user(&tid("a"), "bob", &UserChange::Password { hash: hash.clone(), at: now }).await.unwrap();
        assert!(store.session("s2").await.unwrap().is_none(), "a new password ends the sessions");
        assert_eq!(store.user_by_name(&tid("a"), "bob").await.unwrap().unwrap().password_hash, hash);

        let enabled = store.change_user(&tid("a"), "alice", &UserChange::Enable).await.unwrap().unwrap();
        assert!(enabled.disabled_at.is_none());
    }

    pub async fn sessions_end_when_idle_or_past_their_end(store: &dyn Store) {
        let alice = user("a", "alice");
        store.create_user(&alice).await.unwrap();
        let now = Utc::now();
        store.create_session(&session(&alice, "fresh", now, Duration::hours(8))).await.unwrap();
        store.create_session(&session(&alice, "idle", now - Duration::hours(2), Duration::hours(8))).await.unwrap();
        store
            .create_session(&session(&alice, "over", now - Duration::minutes(1), Duration::seconds(30)))
            .await
            .unwrap();
        // Touching moves last_seen forward only.
        store.touch_session("idle", now - Duration::hours(3)).await.unwrap();
        assert_eq!(store.delete_ended_sessions(now, now - Duration::hours(1)).await.unwrap(), 2);
        assert!(store.session("fresh").await.unwrap().is_some());
        assert!(store.session("idle").await.unwrap().is_none());
        assert!(store.session("over").await.unwrap().is_none());
        store.touch_session("fresh", now + Duration::minutes(5)).await.unwrap();
        let touched = store.session("fresh").await.unwrap().unwrap();
        assert_eq!(touched.last_seen.timestamp_micros(), (now + Duration::minutes(5)).timestamp_micros());
        assert!(store.delete_session("fresh").await.unwrap());
        assert!(!store.delete_session("fresh").await.unwrap());
    }
}

/// A write that names a row by id changes it only within the tenant (or, for the agent's
/// calls, the machine) it is made for, whatever id it is handed.
mod tenancy {
    use super::*;
    use casefile_proto::rbac::DeviceGroup;

    pub async fn writes_by_id_do_not_cross_tenants(store: &dyn Store) {
        let (a, b) = (tid("a"), tid("b"));
        machine(store, "a", "ma").await;
        machine(store, "b", "mb").await;
        let group = DeviceGroup { id: 0, name: "G".into(), rank: 1, rules: vec![], user_groups: vec![] };
        let b_group = store.create_device_group(&b, &group).await.unwrap();

        // Machines: group and tags.
        store.set_machine_group(&b, "ma", Some(b_group.id)).await.unwrap();
        assert_eq!(store.machine(&a, "ma").await.unwrap().unwrap().rbac_group_id, None);
        assert!(store.change_machine_tag(&b, "ma", "pwned", true).await.unwrap().is_none());
        assert!(store.machine(&a, "ma").await.unwrap().unwrap().machine_tags.is_empty());
        let tagged = store.change_machine_tag(&a, "ma", "ok", true).await.unwrap().unwrap();
        assert_eq!(tagged.machine_tags, vec!["ok".to_owned()]);
        assert!(store.change_machine_tag(&b, "ma", "ok", false).await.unwrap().is_none());
        assert_eq!(store.machine(&a, "ma").await.unwrap().unwrap().machine_tags, vec!["ok".to_owned()]);
        assert!(store.machine(&b, "ma").await.unwrap().is_none());
        let entry = audit_entry("machine.reset-identity", "ma");
        assert!(store.reset_machine_identity(&b, "ma", &entry).await.unwrap().is_none());
        assert_eq!(entries_for(store, "ma").await, 0, "nothing audited for a refused reset");

        // Actions: read, cancel, and the agent's calls from another tenant's machine.
        let action = pending("ma", Utc::now());
        store.create_action(&a, &action, None).await.unwrap();
        assert!(store.action(&b, action.id).await.unwrap().is_none());
        let cancel = CancelRequest { requestor: "x".into(), comment: None, at: Utc::now() };
        assert!(store.request_cancel(&b, action.id, &cancel, None).await.unwrap().is_none());
        let failed = Transition::failure(ActionStatus::Failed, Utc::now(), 1, "x");
        assert!(store.transition(action.id, "mb", &failed, None).await.unwrap().is_none());
        assert!(!store.accept_action("mb", action.id, Utc::now(), None).await.unwrap());
        assert!(store.claim_leased("mb", Utc::now(), None, None).await.unwrap().is_none());
        assert_eq!(store.action(&a, action.id).await.unwrap().unwrap().status, ActionStatus::Pending);
        claim(store, "ma", Utc::now()).await.unwrap();
        assert!(store.confirm_cancel("mb", action.id, Utc::now(), None).await.unwrap().is_none());
        assert!(store.fail_in_progress("mb", &failed).await.unwrap().is_empty());
        let stolen = package(action.id, "b");
        assert!(store.complete_with_package("mb", &stolen, Utc::now(), None).await.unwrap().is_none());
        assert!(store.package(&b, action.id).await.unwrap().is_none());
        store.complete_with_package("ma", &package(action.id, "a"), Utc::now(), None).await.unwrap().unwrap();
        assert!(store.package(&b, action.id).await.unwrap().is_none(), "another tenant's package");
        assert!(store.package_by_sha256(&b, &"ab".repeat(32)).await.unwrap().is_none());
        assert!(store.package(&a, action.id).await.unwrap().is_some());

        // Applications and enrollment tokens.
        let app = application("a", "soar");
        store.create_application(&app).await.unwrap();
        assert!(store.update_application_roles(&b, app.client_id, &["x".into()]).await.unwrap().is_none());
        assert!(store.set_application_disabled(&b, app.client_id, Some(Utc::now())).await.unwrap().is_none());
        assert!(store.rotate_application_secret(&b, app.client_id, "h", Utc::now()).await.unwrap().is_none());
        let unchanged = store.application(&a, app.client_id).await.unwrap().unwrap();
        assert_eq!((unchanged.roles, unchanged.disabled_at, unchanged.secret_hash), (app.roles, None, app.secret_hash));
        let token = token("a", "tok", 1, Duration::minutes(5));
        store.insert_enrollment_token(&token).await.unwrap();
        assert!(store.revoke_enrollment_token(&b, token.id, Utc::now()).await.unwrap().is_none());
        assert!(store.enrollment_token_by_hash("tok").await.unwrap().unwrap().revoked_at.is_none());
    }

    pub async fn views_bind_their_tenant_and_machine(store: &dyn Store) {
        let (a, b) = (tid("a"), tid("b"));
        let ma = machine(store, "a", "ma").await;
        let ma2 = machine(store, "a", "ma2").await;
        let mb = machine(store, "b", "mb").await;
        let (in_a, in_b) = (store.tenant(&a), store.tenant(&b));
        assert_eq!(in_a.id(), &a);

        let action = pending("ma", Utc::now());
        in_a.create_action(&action, None).await.unwrap();
        assert!(in_b.action(action.id).await.unwrap().is_none());
        assert!(in_b.change_machine_tag("ma", "t", true).await.unwrap().is_none());
        assert!(in_a.change_machine_tag("ma", "t", true).await.unwrap().is_some());
        assert_eq!(in_a.machines(&ListQuery::first(10)).await.unwrap().items.len(), 2);
        assert_eq!(in_b.machines(&ListQuery::first(10)).await.unwrap().items.len(), 1);

        // An agent sees and moves its own actions only, even within its tenant.
        let (agent_a, agent_a2, agent_b) =
            (store.machine_scope(&ma), store.machine_scope(&ma2), store.machine_scope(&mb));
        assert_eq!(agent_a.machine().id, "ma");
        assert!(agent_a2.action(action.id).await.unwrap().is_none(), "another machine's action");
        assert!(agent_b.action(action.id).await.unwrap().is_none());
        assert!(agent_b.claim_leased(Utc::now(), None, None).await.unwrap().is_none());
        let claimed = agent_a.claim_leased(Utc::now(), None, None).await.unwrap().unwrap();
        assert_eq!(claimed.action.id, action.id);
        let failed = Transition::failure(ActionStatus::Failed, Utc::now(), 1, "x");
        assert!(agent_a2.transition(action.id, &failed, None).await.unwrap().is_none());
        assert!(agent_b.transition(action.id, &failed, None).await.unwrap().is_none());
        assert_eq!(agent_a.action(action.id).await.unwrap().unwrap().status, ActionStatus::InProgress);
        let done = agent_a.transition(action.id, &failed, None).await.unwrap().unwrap();
        assert_eq!(done.status, ActionStatus::Failed);
    }
}

/// The PostgreSQL backend: a database of its own in the test process's throwaway cluster
/// (`casefile_testkit::pg`); `None`, with the reason printed, when PostgreSQL is not
/// installed (a failure in CI).
pub async fn postgres_backend() -> Option<Backend> {
    let db = casefile_testkit::pg::database()?;
    let store = PgStore::open(&db.url).await.unwrap();
    Some(Backend { store: std::sync::Arc::new(store), _keep: Box::new(db) })
}

conformance!(postgres_suite, crate::postgres_backend);

/// PostgreSQL's own guarantees under concurrency, and what it refuses.
mod postgres {
    use super::*;
    use std::sync::Arc;

    async fn open() -> Option<(casefile_testkit::pg::PgDatabase, PgStore)> {
        let db = casefile_testkit::pg::database()?;
        let store = PgStore::open(&db.url).await.unwrap();
        Some((db, store))
    }

    /// The database itself refuses to change, remove or truncate audit rows.
    #[tokio::test]
    async fn audit_rows_cannot_be_changed_or_removed() {
        let Some((_db, store)) = open().await else { return };
        crate::audit::the_audit_trail_keeps_entries_in_order_and_filters_them(&store).await;
        for sql in ["UPDATE audit_log SET outcome = 'forged'", "DELETE FROM audit_log", "TRUNCATE audit_log"] {
            let error = sqlx::query(sql).execute(store.pool()).await.unwrap_err();
            assert!(error.to_string().contains("append-only"), "{sql}: {error}");
        }
    }

    /// Several servers (here: pools) polling for the same machine at once never hand out
    /// the same action twice, and every action is handed out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_never_hand_out_an_action_twice() {
        let Some((db, store)) = open().await else { return };
        machine(&store, "t", "m1").await;
        let kinds = [ActionType::CollectInvestigationPackage, ActionType::Isolate, ActionType::Unisolate];
        let mut created = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let mut a = pending("m1", Utc::now() - Duration::seconds(10 - i as i64));
            a.action_type = *kind;
            store.create_action(&tid("t"), &a, None).await.unwrap();
            created.push(a.id);
        }
        let mut replicas = Vec::new();
        for _ in 0..4 {
            replicas.push(Arc::new(PgStore::open(&db.url).await.unwrap()));
        }
        let mut tasks = Vec::new();
        for replica in &replicas {
            for _ in 0..4 {
                let replica = replica.clone();
                tasks.push(tokio::spawn(async move { claim(&*replica, "m1", Utc::now()).await.map(|a| a.id) }));
            }
        }
        let mut claimed = Vec::new();
        for t in tasks {
            claimed.extend(t.await.unwrap());
        }
        // Every claim that found nothing may have passed over a row another held: what is
        // left is handed out by the next poll.
        while let Some(a) = claim(&store, "m1", Utc::now()).await {
            claimed.push(a.id);
        }
        claimed.sort();
        created.sort();
        assert_eq!(claimed, created, "each action handed out exactly once");
    }

    /// Racing requests for the same machine: exactly one collection is created.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_collections_create_exactly_one() {
        let Some((_db, store)) = open().await else { return };
        let store = Arc::new(store);
        machine(&*store, "t", "m1").await;
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(
                async move { store.create_action(&tid("t"), &pending("m1", Utc::now()), None).await },
            ));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => won += 1,
                Err(StoreError::ActiveRequestExists) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(won, 1);
    }

    /// Enrollments racing on a token with two uses: exactly two machines are made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_enrollments_take_exactly_the_uses_of_the_token() {
        let Some((_db, store)) = open().await else { return };
        let store = Arc::new(store);
        let now = Utc::now();
        store
            .insert_enrollment_token(&EnrollmentTokenRecord {
                id: Uuid::new_v4(),
                tenant_id: tid("t"),
                token_hash: "race".into(),
                created_at: now,
                expires_at: now + Duration::hours(1),
                revoked_at: None,
                uses_allowed: 2,
                uses: 0,
                last_used_at: None,
            })
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..12 {
            let store = store.clone();
            // Half of them for one machine id: a second creation of it must not slip in.
            let id = if i % 2 == 0 { "same".to_owned() } else { format!("m{i}") };
            tasks.push(tokio::spawn(async move {
                store
                    .enroll_with_token(&TokenEnrollment {
                        token_hash: "race".into(),
                        machine: MachineEnrollment {
                            id: id.clone(),
                            tenant_id: tid("t"),
                            facts: HostFacts { computer_dns_name: id.clone(), ..Default::default() },
                            credential_hash: format!("cred-{i}"),
                            agent_public_key: Some(format!("key-{i}")),
                            last_ip_address: None,
                            at: now,
                        },
                        proof: None,
                        audit: None,
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut created = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), EnrollOutcome::Created(_)) {
                created += 1;
            }
        }
        assert_eq!(created, 2, "machines made from a token of two uses");
        assert_eq!(store.enrollment_token_by_hash("race").await.unwrap().unwrap().uses, created);
    }

    /// Servers starting together on an empty database: each migration is applied once
    /// (sqlx's migrator holds an advisory lock), and all of them open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_migrations_apply_once() {
        let Some(db) = casefile_testkit::pg::database() else { return };
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let url = db.url.clone();
            tasks.push(tokio::spawn(async move { PgStore::open_checked(&url).await.map(|_| ()) }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let store = PgStore::open_unmigrated(&db.url).await.unwrap();
        assert_eq!(store.schema().await.unwrap(), Schema::Current);
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(store.pool()).await.unwrap();
        let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count();
        assert_eq!(applied as usize, shipped, "every migration once");
    }

    /// A schema this binary does not know is refused, as on SQLite; a foreign database is
    /// not taken over.
    #[tokio::test]
    async fn newer_and_foreign_schemas_are_refused() {
        let Some((db, store)) = open().await else { return };
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'future', TRUE, '\\x00', 0)",
        )
        .execute(store.pool())
        .await
        .unwrap();
        assert!(matches!(PgStore::open_checked(&db.url).await, Err(StoreError::SchemaNewer { .. })));

        let Some(foreign) = casefile_testkit::pg::database() else { return };
        let other = PgStore::open_unmigrated(&foreign.url).await.unwrap();
        sqlx::query("CREATE TABLE somebody_elses (x int)").execute(other.pool()).await.unwrap();
        assert!(matches!(PgStore::open_checked(&foreign.url).await, Err(StoreError::Corrupt(_))));
    }

    /// Text SQLite keeps but PostgreSQL's `jsonb` would refuse (`\u0000`) in an audit
    /// detail is kept.
    #[tokio::test]
    async fn audit_details_keep_any_json() {
        let Some((_db, store)) = open().await else { return };
        let mut entry = audit_entry("probe", "nul");
        entry.detail = Some(serde_json::json!({ "name": "a\u{0}b", "n": 18446744073709551615u64 }));
        store.append_audit(&entry).await.unwrap();
        let back = store.audit(&AuditFilter { limit: 10, ..Default::default() }).await.unwrap();
        assert_eq!(back[0].entry.detail, entry.detail);
    }

    /// PostgreSQL has no file to copy: a backup says what to use instead.
    #[tokio::test]
    async fn backups_point_to_pg_dump() {
        let Some((_db, store)) = open().await else { return };
        let error = store.backup_into(std::path::Path::new("/nonexistent")).await.unwrap_err();
        assert!(error.to_string().contains("pg_dump"), "{error}");
        store.probe_write().await.unwrap();
    }
}
