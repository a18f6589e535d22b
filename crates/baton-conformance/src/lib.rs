//! The conformance suite's fixtures. The tests under `tests/` describe Baton's behaviour
//! against the storage trait; [`Env::new`] opens the backend under test, so a new backend
//! joins by being added to [`Backend`] and passes the same tests, none copied.

use baton_core::api::*;
use baton_core::model::Task;
use baton_core::time::ManualClock;
use baton_core::{Baton, Result};
use std::sync::Arc;

/// A store to run the suite against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite store, in a temporary directory.
    Sqlite,
    /// PostgreSQL: a fresh database per environment on the server of
    /// `BATON_TEST_DATABASE_URL`.
    Postgres,
}

/// The backends selected for this run (`BATON_TEST_BACKENDS`, default all available).
pub fn backends() -> Vec<Backend> {
    match std::env::var("BATON_TEST_BACKENDS").as_deref() {
        Ok("sqlite") => vec![Backend::Sqlite],
        Ok("postgres") => vec![Backend::Postgres],
        _ => {
            assert!(
                std::env::var_os("BATON_TEST_DATABASE_URL").is_some(),
                "BATON_TEST_DATABASE_URL is not set: run ./scripts/test (it starts a throwaway \
                 PostgreSQL), or set BATON_TEST_BACKENDS=sqlite to test the embedded store only"
            );
            vec![Backend::Sqlite, Backend::Postgres]
        }
    }
}

/// Whether this run tests `backend` (`BATON_TEST_BACKENDS`); says so when it does not.
pub fn selected(backend: Backend) -> bool {
    let yes = backends().contains(&backend);
    if !yes {
        eprintln!("skipped: {backend:?} is not selected by BATON_TEST_BACKENDS");
    }
    yes
}

/// Runs `test` on a fresh [`Env`] of `backend`, or skips it when this run does not test
/// that backend (`BATON_TEST_BACKENDS`).
pub async fn run_on<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if selected(backend) {
        test(Env::new(backend).await).await;
    }
}

/// Declares each named `async fn(Env)` of a test file as one test per backend:
/// `sqlite::name` and `postgres::name`, so the same test body covers every backend.
///
/// With `backend:` first, each function takes the [`Backend`] instead, for suites with a
/// fixture of their own (a server on a store from [`open_store`]).
#[macro_export]
macro_rules! on_every_backend {
    (backend: $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    if $crate::selected($crate::Backend::Sqlite) {
                        super::$name($crate::Backend::Sqlite).await
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if $crate::selected($crate::Backend::Postgres) {
                        super::$name($crate::Backend::Postgres).await
                    }
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    $crate::run_on($crate::Backend::Sqlite, super::$name).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    $crate::run_on($crate::Backend::Postgres, super::$name).await
                }
            )*
        }
    };
}

/// A fresh store with a manual clock and an actor in the default workspace.
pub struct Env {
    /// The engine under test.
    pub baton: Baton,
    /// The time the engine sees; tests move it.
    pub clock: ManualClock,
    /// A planner in the default workspace.
    pub actor: Actor,
    /// Which backend this is.
    pub backend: Backend,
    _dir: tempfile::TempDir,
}

/// 2026-01-01T00:00:00Z: tests start here so timestamps are readable.
pub const T0: i64 = 1_767_225_600_000;

/// An empty store of the given backend, and the directory that holds it.
pub fn open_store(backend: Backend) -> (Arc<dyn baton_core::store::Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn baton_core::store::Store> = match backend {
        Backend::Sqlite => {
            baton_store_sqlite::SqliteStore::open(&dir.path().join("baton.db"), Default::default())
                .expect("open sqlite store")
        }
        Backend::Postgres => {
            let admin = std::env::var("BATON_TEST_DATABASE_URL")
                .expect("BATON_TEST_DATABASE_URL for the PostgreSQL backend");
            let name = format!(
                "baton_test_{}",
                baton_core::id::new_id("db").trim_start_matches("db_")
            );
            let url = baton_store_postgres::PgStore::create_database(&admin, &name)
                .expect("create a test database");
            baton_store_postgres::PgStore::open(&url).expect("open postgres store")
        }
    };
    (store, dir)
}

/// `n` stores on one fresh PostgreSQL database, each with its own writer: replicas, in one
/// process. `None` when this run does not test PostgreSQL.
pub fn open_replicas(n: usize) -> Option<Vec<Arc<dyn baton_core::store::Store>>> {
    if !backends().contains(&Backend::Postgres) {
        eprintln!("skipped: PostgreSQL is not selected by BATON_TEST_BACKENDS");
        return None;
    }
    let admin = std::env::var("BATON_TEST_DATABASE_URL").expect("BATON_TEST_DATABASE_URL");
    let name = format!(
        "baton_test_{}",
        baton_core::id::new_id("db").trim_start_matches("db_")
    );
    let url = baton_store_postgres::PgStore::create_database(&admin, &name)
        .expect("create a test database");
    Some(
        (0..n)
            .map(|_| {
                let store: Arc<dyn baton_core::store::Store> =
                    baton_store_postgres::PgStore::open(&url).expect("open postgres store");
                store
            })
            .collect(),
    )
}

impl Env {
    /// Opens a fresh store of the given backend.
    pub async fn new(backend: Backend) -> Env {
        let (store, dir) = open_store(backend);
        let clock = ManualClock::new(T0);
        let blobs =
            baton_core::blobs::Blobs::local(&dir.path().join("objects")).expect("object store");
        let baton = Baton::new(store, Arc::new(clock.clone())).with_blobs(blobs);
        let actor = baton
            .actor("default", "planner")
            .await
            .expect("default workspace");
        Env {
            baton,
            clock,
            actor,
            backend,
            _dir: dir,
        }
    }

    /// Creates a task with a title and defaults.
    pub async fn task(&self, title: &str) -> Task {
        self.create(CreateTask {
            title: title.into(),
            ..Default::default()
        })
        .await
        .expect("create task")
    }

    /// Creates a task from a full request.
    pub async fn create(&self, req: CreateTask) -> Result<Task> {
        Ok(self.baton.create_task(&self.actor, None, req).await?.task)
    }

    /// Claims one task for `agent` with no capabilities.
    pub async fn claim(&self, agent: &str) -> Option<Claim> {
        self.claim_with(agent, &[]).await
    }

    /// Claims one task for `agent` with capabilities.
    pub async fn claim_with(&self, agent: &str, caps: &[&str]) -> Option<Claim> {
        let req = ClaimRequest {
            agent: agent.into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        };
        self.baton
            .claim(&self.actor, None, req)
            .await
            .expect("claim")
            .claims
            .into_iter()
            .next()
    }

    /// Reads a task.
    pub fn get(&self, id: &str) -> Task {
        self.baton.get_task(&self.actor, id).expect("get task").task
    }

    /// The number of events in the workspace's log.
    pub fn event_count(&self) -> u64 {
        self.all_events().len() as u64
    }

    /// Every event of the workspace, in order.
    pub fn all_events(&self) -> Vec<baton_core::model::Event> {
        let mut out = Vec::new();
        loop {
            let after = out
                .last()
                .map(|e: &baton_core::model::Event| e.seq)
                .unwrap_or(0);
            let page = self
                .baton
                .events(&self.actor, after, 1000)
                .expect("events")
                .events;
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// A plain heartbeat (no progress, no usage) on task `id` under `token`.
    pub async fn heartbeat(&self, id: &str, token: &str) -> Result<serde_json::Value> {
        let beat = baton_core::LeaseOp::Heartbeat(baton_core::api::Heartbeat::default());
        self.lease(id, token, beat).await
    }

    /// A lease operation.
    pub async fn lease(
        &self,
        id: &str,
        token: &str,
        op: baton_core::LeaseOp,
    ) -> Result<serde_json::Value> {
        let out = self
            .baton
            .lease_op(&self.actor, None, id, token, op)
            .await?;
        Ok(serde_json::to_value(out).expect("lease response serializes"))
    }

    /// Rebuilds the projections from this store's log in a scratch store and compares;
    /// `None` when they are equal.
    pub async fn replay_difference(&self) -> Option<String> {
        let (scratch, _dir) = open_store(self.backend);
        let verified = baton_core::replay::verify(self.baton.store().as_ref(), scratch).await;
        verified.expect("replay runs").difference
    }
}
