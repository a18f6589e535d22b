//! `baton`: the command-line surface. It parses arguments, opens the embedded store, calls
//! the operation layer, and prints the response: human-readable, or exactly one JSON object
//! with `--json`. It holds no rules of its own.

/// `println!` that leaves a closed stdout alone: a reader that went away (`baton task list
/// | head`) is not an error, where `println!` would panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod args;
mod demo;
mod remote;
mod render;
mod requests;

use args::*;
use baton_core::api::*;
use baton_core::blobs::Blobs;
use baton_core::ops::plan;
use baton_core::state::{Op, Status};
use baton_core::store::TaskFilter;
use baton_core::time::SystemClock;
use baton_core::{Baton, Code, Error, LeaseOp};
use baton_store_sqlite::{Durability, Options, SqliteStore};
use clap::Parser;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

/// mimalloc rather than glibc's malloc: the server's writers build and drop large buffers
/// (batched statements, event payloads) among many small ones from several threads, and
/// glibc spends a large share of their CPU consolidating its free lists (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| usage_error(e));
    let json_mode = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(run(cli));
    match result {
        Ok(Outcome::Value(value)) => {
            if json_mode {
                print_line(&value);
            } else {
                render::human(&value);
            }
        }
        Ok(Outcome::Printed) => {}
        Ok(Outcome::Exit(code, value)) => {
            if json_mode {
                print_line(&value);
            } else {
                render::human(&value);
            }
            std::process::exit(code);
        }
        Err(e) => {
            if json_mode {
                print_line(&e.to_json());
            } else {
                eprintln!("error: {}: {}", e.code.as_str(), e.message);
                if !e.hint.is_empty() {
                    eprintln!("hint: {}", e.hint);
                }
            }
            std::process::exit(1);
        }
    }
}

/// Ends on a command line clap refuses (exit status 2): with `--json`, as an `INVALID_INPUT`
/// error on stdout like every other failure, so an agent parsing stdout reads it; otherwise
/// clap's own message. Help and version are printed as asked.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if !json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let rendered = e.to_string();
    // A command given without its subcommand or arguments: clap renders its help, whose
    // first line is the command's description, not what went wrong.
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let usage = rendered
            .lines()
            .find_map(|l| l.trim().strip_prefix("Usage: "))
            .unwrap_or("baton COMMAND");
        let error = Error::invalid(
            format!("a subcommand or arguments are required: {usage}"),
            "see `baton --help` and `baton COMMAND --help`",
        );
        print_line(&error.to_json());
        std::process::exit(2);
    }
    // The message's lines up to the usage, on one line.
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
        .collect();
    let message = message.join(" ");
    let message = message.trim_start_matches("error: ");
    // clap's tips (a similar subcommand or flag, how to pass a value that looks like a
    // flag) are what to do: they lead the hint.
    let mut hint: Vec<&str> = rendered
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tip: "))
        .collect();
    hint.push("see `baton --help` and `baton COMMAND --help`");
    let error = Error::invalid(message, hint.join("; "));
    print_line(&error.to_json());
    std::process::exit(2);
}

/// Reads and parses a plan file (YAML or JSON); `-` reads standard input.
pub(crate) fn read_plan(file: &std::path::Path) -> Result<plan::PlanDoc, Error> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    };
    let text = text.map_err(|e| {
        Error::new(
            Code::InvalidPlan,
            format!("cannot read plan file {}: {e}", file.display()),
            "check the path (`-` reads the plan from standard input)",
        )
    })?;
    plan::parse(&text)
}

/// Prints one line of JSON.
fn print_line(value: &Value) {
    say!("{value}");
}

/// What a command produced.
pub(crate) enum Outcome {
    /// A response to print.
    Value(Value),
    /// The command printed as it went.
    Printed,
    /// A response to print, then exit with this status.
    Exit(i32, Value),
}

fn data_dir(cli: &Cli) -> PathBuf {
    cli.data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".baton"))
}

fn durability(text: &str) -> Result<Durability, Error> {
    match text {
        "full" => Ok(Durability::Full),
        "normal" => Ok(Durability::Normal),
        other => Err(Error::invalid(
            format!("unknown durability '{other}'"),
            "use full (default) or normal",
        )),
    }
}

/// Opens the embedded store in `dir`, with its artifacts' bytes in `dir/objects`.
pub(crate) fn open(dir: &std::path::Path, durability: Durability) -> Result<Baton, Error> {
    let store = SqliteStore::open(&dir.join("baton.db"), Options { durability })?;
    let blobs = Blobs::local(&dir.join("objects"))?;
    Ok(Baton::new(store, Arc::new(SystemClock)).with_blobs(blobs))
}

/// The object store the command line names: `--objects`, else the data directory's.
fn blobs(cli: &Cli) -> Result<Blobs, Error> {
    match &cli.objects {
        Some(location) => Blobs::open(location),
        None => Blobs::local(&data_dir(cli).join("objects")),
    }
}

/// `baton` on PostgreSQL keeps artifacts' bytes only where `--objects` says: a default
/// directory on each replica's own disk would lose them on a redeploy and hide them from
/// the other replicas. Without it, artifact calls answer `INTERNAL` and say so.
fn with_shared_blobs(baton: Baton, cli: &Cli) -> Result<Baton, Error> {
    Ok(match &cli.objects {
        Some(location) => baton.with_blobs(Blobs::open(location)?),
        None => baton,
    })
}

/// The PostgreSQL URL of `--database`, checked.
fn database(cli: &Cli) -> Result<Option<&str>, Error> {
    match cli.database.as_deref() {
        None | Some("") => Ok(None),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Some(url))
        }
        Some(_) => Err(Error::invalid(
            "--database must be a postgres:// URL",
            "e.g. postgres://baton@db.internal/baton; leave it out for the embedded store",
        )),
    }
}

/// Where the store is, for people: the database's URL without its credentials or
/// parameters, or the data directory.
fn store_location(cli: &Cli, dir: &std::path::Path) -> Result<(&'static str, String), Error> {
    Ok(match database(cli)? {
        Some(url) => {
            let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            let rest = rest.split('?').next().unwrap_or_default();
            ("database", format!("{scheme}://{rest}"))
        }
        None => ("data_dir", dir.display().to_string()),
    })
}

/// Opens the store the command line names: PostgreSQL with `--database`, else the
/// embedded store in the data directory.
pub(crate) fn open_cli(cli: &Cli) -> Result<Baton, Error> {
    match database(cli)? {
        Some(url) => {
            let options = baton_store_postgres::Options {
                synchronous_commit: durability(&cli.durability)? == Durability::Full,
                ..Default::default()
            };
            let store = baton_store_postgres::PgStore::open_with(url, options)?;
            // Every replica reads time as the database does (leases mean the same moment
            // to all of them); a host far off is worth a word.
            let clock = store.clock();
            if clock.offset_ms().abs() >= 1000 {
                eprintln!(
                    "baton: this host's clock is {:.1} s off PostgreSQL's; baton runs by the database's",
                    clock.offset_ms() as f64 / 1000.0
                );
            }
            with_shared_blobs(Baton::new(store, Arc::new(clock)), cli)
        }
        None => {
            let store = SqliteStore::open(
                &data_dir(cli).join("baton.db"),
                Options {
                    durability: durability(&cli.durability)?,
                },
            )?;
            Ok(Baton::new(store, Arc::new(SystemClock)).with_blobs(blobs(cli)?))
        }
    }
}

/// What `artifact get` prints: with `--output`, the bytes go to that file and the
/// description is printed; else, with `--json`, the description with the bytes in it; else
/// the bytes alone, as they are, for a pipe.
pub(crate) fn artifact_output(
    out: ArtifactOut,
    output: Option<&std::path::Path>,
    json: bool,
) -> Result<Outcome, Error> {
    if output.is_none() && json {
        return to_value(out);
    }
    let bytes = match (out.content, out.content_base64) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(encoded)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| Error::storage(format!("the artifact's bytes came garbled: {e}")))?
        }
        (None, None) => Vec::new(),
    };
    match output {
        Some(path) => {
            std::fs::write(path, &bytes).map_err(|e| {
                Error::invalid(
                    format!("cannot write {}: {e}", path.display()),
                    "give a path in a writable directory",
                )
            })?;
            to_value(json!({ "artifact": out.artifact, "written": path.display().to_string() }))
        }
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .and_then(|()| stdout.flush())
                .map_err(|e| Error::storage(format!("cannot write to standard output: {e}")))?;
            Ok(Outcome::Printed)
        }
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Outcome, Error> {
    serde_json::to_value(v)
        .map(Outcome::Value)
        .map_err(|e| Error::new(Code::Internal, e.to_string(), ""))
}

async fn run(cli: Cli) -> Result<Outcome, Error> {
    if let Command::Mcp { agent } = &cli.command {
        return mcp(&cli, agent.clone()).await;
    }
    if let Some(server) = cli.server.clone() {
        return remote::run(&cli, &server).await;
    }
    let dir = data_dir(&cli);
    let durability = durability(&cli.durability)?;
    if let Command::Demo(args) = &cli.command {
        return demo::run(args, cli.json).await.map(|v| {
            if cli.json {
                Outcome::Value(v)
            } else {
                Outcome::Printed
            }
        });
    }
    if let Command::Migrate = &cli.command {
        return match database(&cli)? {
            Some(url) => {
                baton_store_postgres::PgStore::migrate(url)?;
                Ok(Outcome::Value(json!({ "migrated": "postgres" })))
            }
            None => {
                open(&dir, durability)?;
                Ok(Outcome::Value(
                    json!({ "migrated": dir.display().to_string() }),
                ))
            }
        };
    }
    if let (Command::Replay { verify }, Some(url)) = (&cli.command, database(&cli)?) {
        let live = baton_store_postgres::PgStore::open(url)?;
        return replay_report(replay_store(live.as_ref()).await?, *verify);
    }
    let baton = open_cli(&cli)?;
    // A claim is the agent acting: unless `--as` says otherwise, record it under its name.
    let actor_name = match &cli.command {
        Command::Claim(a) if cli.actor == "cli" => {
            // Told as the agent it is, not as the actor it would become.
            baton_core::ops::check_name("agent", &a.agent, 200)?;
            a.agent.clone()
        }
        _ => cli.actor.clone(),
    };
    if let Command::Init = cli.command {
        // `init` makes the workspace it is told to, not only the default one.
        baton.create_workspace(&cli.workspace).await?;
    }
    let actor = baton.actor(&cli.workspace, &actor_name).await?;
    let key = cli.idempotency_key.as_deref();
    let (field, location) = store_location(&cli, &dir)?;
    // Without a server's reaper, a lease that lapsed would still read as held until the
    // next claim: what a read shows must not depend on who looked when (DESIGN §4).
    let reads_tasks = matches!(
        &cli.command,
        Command::Ready { .. }
            | Command::Brief { .. }
            | Command::Task(TaskCmd::Get { .. } | TaskCmd::List { .. })
    );
    if reads_tasks {
        // Best effort: the read answers either way (a failure here shows in the read).
        let _ = baton.reap(&actor).await;
    }
    match cli.command {
        Command::Init => Ok(Outcome::Value(json!({
            "workspace": { "id": actor.workspace_id, "name": cli.workspace },
            field: location,
        }))),
        Command::Task(cmd) => task_command(&baton, &actor, key, cmd).await,
        Command::Ready { limit } => to_value(baton.ready(&actor, limit)?),
        Command::Claim(a) => {
            let req = requests::claim(&a)?;
            to_value(baton.claim(&actor, key, req).await?)
        }
        Command::Start(a) => lease(&baton, &actor, key, &a.id, &a.lease, LeaseOp::Start).await,
        Command::Release(a) => lease(&baton, &actor, key, &a.id, &a.lease, LeaseOp::Release).await,
        Command::Resume(a) => lease(&baton, &actor, key, &a.id, &a.lease, LeaseOp::Resume).await,
        Command::Heartbeat(a) => {
            let hb = requests::heartbeat(&a)?;
            lease(&baton, &actor, key, &a.id, &a.lease, LeaseOp::Heartbeat(hb)).await
        }
        Command::Complete(a) => {
            let c = requests::complete(&a)?;
            lease(&baton, &actor, key, &a.id, &a.lease, LeaseOp::Complete(c)).await
        }
        Command::Fail(a) => {
            let f = requests::fail(&a);
            lease(&baton, &actor, key, &a.id, &a.lease, LeaseOp::Fail(f)).await
        }
        Command::Block(a) => {
            lease(
                &baton,
                &actor,
                key,
                &a.id,
                &a.lease,
                LeaseOp::Block { reason: a.reason },
            )
            .await
        }
        Command::Wait(a) => {
            lease(
                &baton,
                &actor,
                key,
                &a.id,
                &a.lease,
                LeaseOp::Wait { reason: a.reason },
            )
            .await
        }
        Command::Approve {
            id,
            comment,
            if_version,
        } => to_value(
            baton
                .transition_at(&actor, key, Op::Approve, &id, comment, if_version)
                .await?,
        ),
        Command::Reject {
            id,
            reason,
            if_version,
        } => to_value(
            baton
                .transition_at(&actor, key, Op::Reject, &id, Some(reason), if_version)
                .await?,
        ),
        Command::Note(a) => {
            let req = requests::note(&a);
            to_value(baton.add_context(&actor, key, &a.id, req).await?)
        }
        Command::Step(StepCmd::Add {
            id,
            title,
            details,
            lease,
        }) => to_value(
            baton
                .add_step(&actor, key, &id, title, details, lease)
                .await?,
        ),
        Command::Step(StepCmd::Done {
            id,
            step_id,
            notes,
            lease,
        }) => to_value(
            baton
                .done_step(&actor, key, &id, &step_id, notes, lease)
                .await?,
        ),
        Command::Dep(DepCmd::Add {
            blocker,
            blocked,
            kind,
        }) => {
            let kind = baton_core::model::DepKind::parse(&kind)?;
            to_value(
                baton
                    .dependency(&actor, key, &blocker, &blocked, kind, true)
                    .await?,
            )
        }
        Command::Dep(DepCmd::Rm {
            blocker,
            blocked,
            kind,
        }) => {
            let kind = baton_core::model::DepKind::parse(&kind)?;
            to_value(
                baton
                    .dependency(&actor, key, &blocker, &blocked, kind, false)
                    .await?,
            )
        }
        Command::Artifact(ArtifactCmd::Add {
            id,
            file,
            name,
            media_type,
            lease,
        }) => {
            let req = requests::artifact(
                &file,
                name.as_deref(),
                media_type.as_deref(),
                lease.as_deref(),
            )?;
            to_value(baton.attach_artifact(&actor, key, &id, req).await?)
        }
        Command::Artifact(ArtifactCmd::List { id }) => to_value(baton.artifacts(&actor, &id)?),
        Command::Artifact(ArtifactCmd::Get { id, output }) => {
            let out = baton.artifact(&actor, &id, true).await?;
            artifact_output(out, output.as_deref(), cli.json)
        }
        Command::Brief { id, max_bytes } => to_value(baton.brief(&actor, &id, max_bytes)?),
        Command::Plan(PlanCmd::Apply { file }) => {
            let doc = read_plan(&file)?;
            to_value(baton.apply_plan(&actor, key, doc).await?)
        }
        Command::Events { after, limit } => {
            let after = baton.check_resume(&actor, after)?;
            to_value(baton.events(&actor, after, limit)?)
        }
        Command::Replay { verify } => replay(&dir, verify).await,
        Command::Reap => Ok(Outcome::Value(
            json!({ "expired": baton.reap(&actor).await? }),
        )),
        Command::Stress { count } => {
            for i in 0..count {
                let req = CreateTask {
                    title: format!("stress {i}"),
                    ..Default::default()
                };
                let out = baton.create_task(&actor, None, req).await?;
                say!("{}", out.task.id);
            }
            Ok(Outcome::Printed)
        }
        Command::Key(KeyCmd::Create { role, agent }) => {
            if key.is_some() {
                // As over HTTP: a secret is shown once, never stored to be replayed.
                return Err(Error::invalid(
                    "key create cannot be replayed: its secret is shown once",
                    "leave out --idempotency-key; an unused key can simply be left unused",
                ));
            }
            to_value(baton.create_key(&actor, &role, agent).await?)
        }
        Command::Project(cmd) => match cmd {
            ProjectCmd::Create { name, settings } => {
                let s = requests::project_settings(&settings, None)?;
                let req = CreateProject {
                    name,
                    lease_ttl: s.lease_ttl,
                    retry_policy: s.retry_policy,
                    review_required: s.review_required,
                    exclusive_scopes: s.exclusive_scopes,
                    max_concurrency: s.max_concurrency.flatten(),
                };
                to_value(baton.create_project(&actor, key, req).await?)
            }
            ProjectCmd::List => to_value(baton.projects(&actor)?),
            ProjectCmd::Get { id } => to_value(baton.project(&actor, &id)?),
            ProjectCmd::Update {
                id,
                settings,
                kill,
                revive,
            } => {
                let s = requests::project_settings(&settings, requests::killed(kill, revive))?;
                to_value(baton.update_project(&actor, key, &id, s).await?)
            }
        },
        Command::Agent(cmd) => match cmd {
            AgentCmd::Register {
                name,
                capabilities,
                max_concurrency,
            } => {
                let req = RegisterAgent {
                    agent: name,
                    capabilities,
                    max_concurrency,
                };
                to_value(baton.register_agent(&actor, key, req).await?)
            }
            AgentCmd::Heartbeat { name } => {
                to_value(baton.agent_heartbeat(&actor, key, &name).await?)
            }
            AgentCmd::List => to_value(baton.agents(&actor)?),
            AgentCmd::Get { name } => to_value(baton.agent(&actor, &name)?),
            AgentCmd::Update {
                name,
                kill,
                disable,
                revive,
                max_concurrency,
                unlimited,
            } => {
                let req =
                    requests::agent_settings(kill, disable, revive, max_concurrency, unlimited);
                to_value(baton.update_agent(&actor, key, &name, req).await?)
            }
        },
        Command::Workspace(cmd) => match cmd {
            WorkspaceCmd::Get => to_value(baton.workspace(&actor)?),
            WorkspaceCmd::Update { kill, revive } => {
                let req = WorkspaceSettings {
                    killed: requests::killed(kill, revive),
                };
                to_value(baton.update_workspace(&actor, key, req).await?)
            }
        },
        Command::Serve {
            listen,
            log_level,
            log_format,
        } => {
            start_logs(&log_level, &log_format);
            let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
                Error::invalid(
                    format!("cannot listen on {listen}: {e}"),
                    "choose a free address with --listen",
                )
            })?;
            // A store that cannot take bytes (a bucket out of reach, a wrong key, a
            // read-only directory) stops the server now, not its first artifact call.
            if let Some(objects) = baton.objects().filter(|_| cli.objects.is_some()) {
                objects.check().await?;
            }
            tracing::info!("serving {location} on http://{listen}");
            let app = baton_server::router(baton_server::AppState::new(baton.clone()))
                .merge(baton_mcp::http_service(baton.clone()));
            baton_server::serve_app(listener, baton, app, &cli.workspace, shutdown_signal())
                .await?;
            Ok(Outcome::Printed)
        }
        Command::Demo(_) | Command::Mcp { .. } | Command::Migrate => {
            unreachable!("handled above")
        }
    }
}

/// `baton mcp`: MCP over stdio, on the embedded store or proxying to a server. Stdout is
/// the protocol's channel: nothing else is printed there.
async fn mcp(cli: &Cli, agent: Option<String>) -> Result<Outcome, Error> {
    // A name no claim would take is refused now, not at the agent's first claim.
    if let Some(name) = &agent {
        baton_core::ops::check_new_name("agent", name, 200)?;
    }
    let gateway = match &cli.server {
        Some(server) => baton_mcp::Gateway::Remote {
            http: remote::http_client()?,
            base: remote::check_server(server)?
                .trim_end_matches('/')
                .to_string(),
            token: cli.token.clone().ok_or_else(|| {
                Error::invalid("--server needs a key", "pass --token or set BATON_TOKEN")
            })?,
        },
        None => {
            let baton = open_cli(cli)?;
            baton_mcp::local_gateway(baton, &cli.workspace, agent.as_deref()).await?
        }
    };
    baton_mcp::check_gateway(&gateway, agent.as_deref()).await?;
    baton_mcp::serve_stdio(baton_mcp::BatonMcp::new(gateway, agent))
        .await
        .map_err(|e| Error::new(Code::Internal, e, "check the MCP client's configuration"))?;
    Ok(Outcome::Printed)
}

/// Sends the server's log lines (DESIGN §7) to stderr, as text or one JSON object a line,
/// from `level` up. Their fields name the request (`request_id`) and the task it concerned.
fn start_logs(level: &str, format: &str) {
    let level: tracing_subscriber::filter::LevelFilter = level
        .parse()
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // Baton's own lines only: the libraries' (rmcp logs whole tool calls, leases included,
    // at debug; h2 its frames) only from warnings up.
    let libraries = level.min(tracing_subscriber::filter::LevelFilter::WARN);
    let ours = [
        "baton",
        "baton_server",
        "baton_core",
        "baton_mcp",
        "baton_cli",
    ];
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(libraries)
        .with_targets(ours.map(|target| (target, level)));
    let logs = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        "json" => registry
            .with(logs.json().flatten_event(true).with_current_span(false))
            .try_init(),
        _ => registry.with(logs).try_init(),
    };
}

/// Resolves on SIGTERM or Ctrl-C: the server stops accepting and drains in-flight requests.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn lease(
    baton: &Baton,
    actor: &Actor,
    key: Option<&str>,
    id: &str,
    token: &str,
    op: LeaseOp,
) -> Result<Outcome, Error> {
    to_value(baton.lease_op(actor, key, id, token, op).await?)
}

async fn task_command(
    baton: &Baton,
    actor: &Actor,
    key: Option<&str>,
    cmd: TaskCmd,
) -> Result<Outcome, Error> {
    match cmd {
        TaskCmd::Create(a) => {
            let req = requests::create(&a)?;
            to_value(baton.create_task(actor, key, req).await?)
        }
        TaskCmd::Get { id, as_of: None } => to_value(baton.get_task(actor, &id)?),
        TaskCmd::Get {
            id,
            as_of: Some(seq),
        } => to_value(baton.get_task_as_of(actor, &id, seq)?),
        TaskCmd::List {
            status,
            parent,
            label,
            limit,
            after,
        } => {
            let filter = TaskFilter {
                status: status.as_deref().map(Status::parse).transpose()?,
                parent_id: parent,
                label,
                after_id: after,
                limit,
                ..Default::default()
            };
            to_value(baton.list_tasks(actor, filter)?)
        }
        TaskCmd::Update(a) => {
            let req = requests::update(&a)?;
            to_value(baton.update_task(actor, key, &a.id, req).await?)
        }
        TaskCmd::Cancel {
            id,
            reason,
            if_version,
        } => to_value(
            baton
                .transition_at(actor, key, Op::Cancel, &id, reason, if_version)
                .await?,
        ),
        TaskCmd::Publish { id, if_version } => to_value(
            baton
                .transition_at(actor, key, Op::Publish, &id, None, if_version)
                .await?,
        ),
        TaskCmd::Retry { id, if_version } => to_value(
            baton
                .transition_at(actor, key, Op::Retry, &id, None, if_version)
                .await?,
        ),
        TaskCmd::Unblock { id, if_version } => to_value(
            baton
                .transition_at(actor, key, Op::Unblock, &id, None, if_version)
                .await?,
        ),
    }
}

/// Rebuilds every projection of the store in `dir` from its log, in a scratch store, and
/// compares: (events replayed, rows compared, first difference).
pub(crate) async fn replay_check(
    dir: &std::path::Path,
) -> Result<(usize, usize, Option<String>), Error> {
    let scratch_dir =
        std::env::temp_dir().join(format!("baton-replay-{}", baton_core::id::new_id("tmp")));
    let result = replay_into(dir, &scratch_dir).await;
    let _ = std::fs::remove_dir_all(&scratch_dir);
    result.map_err(|e| Error::storage(format!("{e:#}")))
}

/// `baton replay [--verify]`.
async fn replay(dir: &std::path::Path, verify: bool) -> Result<Outcome, Error> {
    replay_report(replay_check(dir).await?, verify)
}

/// Replays any live store into a scratch embedded store (the projections are the same JSON
/// on every backend, so they compare row for row).
async fn replay_store(
    live: &dyn baton_core::store::Store,
) -> Result<(usize, usize, Option<String>), Error> {
    let scratch_dir =
        std::env::temp_dir().join(format!("baton-replay-{}", baton_core::id::new_id("tmp")));
    let scratch = SqliteStore::open(
        &scratch_dir.join("baton.db"),
        Options {
            durability: Durability::Normal,
        },
    );
    let result = match scratch {
        Ok(scratch) => baton_core::replay::verify(live, scratch)
            .await
            .map(|v| (v.events, v.rows, v.difference)),
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&scratch_dir);
    result
}

fn replay_report(
    (events, rows, difference): (usize, usize, Option<String>),
    verify: bool,
) -> Result<Outcome, Error> {
    let report = json!({ "events": events, "rows": rows, "equal": difference.is_none(), "difference": difference });
    match (verify, &difference) {
        (true, Some(_)) => Ok(Outcome::Exit(1, json!({ "replay": report }))),
        _ => Ok(Outcome::Value(json!({ "replay": report }))),
    }
}

async fn replay_into(
    dir: &std::path::Path,
    scratch_dir: &std::path::Path,
) -> anyhow::Result<(usize, usize, Option<String>)> {
    let live = SqliteStore::open(&dir.join("baton.db"), Options::default())?;
    let scratch = SqliteStore::open(
        &scratch_dir.join("baton.db"),
        Options {
            durability: Durability::Normal,
        },
    )?;
    let v = baton_core::replay::verify(live.as_ref(), scratch).await?;
    Ok((v.events, v.rows, v.difference))
}
