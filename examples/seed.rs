//! Fills a data directory with users and documents for load tests (`bench/load.sh scale`).
//!
//! ```sh
//! cargo run --release --example seed -- --data-dir /tmp/big --users 100000 --docs 1000000
//! ```
//!
//! Creates `admin` (role `admin`), `alice` and `bob` (role `user`) and `users - 3` more users
//! (`u0000001`, ... role `user`), all with the password `--password`. The first document of
//! `--kind` is alice's; the others belong to the users in turn. Prints a JSON summary: alice's
//! document id and the `after` cursors that start pages 2, 10, 100 and 1,000 of a listing with
//! `limit=100`. The directory must not hold a database yet, and no server may be running on it.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use clap::Parser;
use gatehouse::{
    auth::Hasher,
    config::Secret,
    model::{DocId, Kind, Role, Username},
    store::{Document, SledStore, Store, UserRecord},
};

#[derive(Parser)]
#[command(about = "Fill a gatehouse data directory with users and documents")]
struct Args {
    /// The data directory (its `db` must not exist yet).
    #[arg(long)]
    data_dir: PathBuf,
    /// Users in all, including admin, alice and bob (at least 3).
    #[arg(long, default_value_t = 3)]
    users: usize,
    /// Documents of `kind` in all (at least 1).
    #[arg(long, default_value_t = 1)]
    docs: usize,
    /// The resource kind of the documents.
    #[arg(long, default_value = "notes")]
    kind: String,
    /// Every user's password.
    #[arg(long, default_value = "seed-password")]
    password: String,
}

const BATCH: usize = 10_000;
const PAGE: usize = 100;

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("seed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(seed(&args)) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("seed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn seed(args: &Args) -> Result<serde_json::Value, String> {
    if args.data_dir.join("db").exists() {
        return Err(format!("{} already holds a database", args.data_dir.display()));
    }
    let users = args.users.max(3);
    let docs = args.docs.max(1);
    let kind = Kind::parse(&args.kind).map_err(|e| e.to_string())?;
    let store = SledStore::open(&args.data_dir).map_err(|e| e.to_string())?;
    let started = Instant::now();

    // One argon2 hash for everyone: hashing 100,000 passwords would take an hour.
    let hasher = Hasher::new(1).map_err(|e| e.to_string())?;
    let hash = hasher
        .hash(&Secret::new(args.password.clone()))
        .await
        .map_err(|e| e.to_string())?;
    let now = "2026-12-04T00:00:00Z".to_owned();
    let role = |r: &str| Role::parse(r).map_err(|e| e.to_string());
    let mut names = vec!["admin".to_owned(), "alice".to_owned(), "bob".to_owned()];
    names.extend((1..=users - 3).map(|i| format!("u{i:07}")));
    for name in &names {
        let roles = vec![role(if name == "admin" { "admin" } else { "user" })?];
        let username = Username::parse(name).map_err(|e| e.to_string())?;
        let user = UserRecord::new(username, hash.clone(), roles, now.clone());
        store.create_user(&user).await.map_err(|e| e.to_string())?;
    }
    let users_done = started.elapsed();

    let mut first = None;
    let mut cursors = serde_json::Map::new();
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..docs {
        let owner = if i == 0 {
            "alice"
        } else {
            &names[1 + i % (names.len() - 1)]
        };
        let doc = Document {
            id: DocId::generate(),
            kind: kind.clone(),
            owner: Username::parse(owner).map_err(|e| e.to_string())?,
            data: serde_json::json!({"title": format!("note {i}"), "body": "milk, eggs, bread", "n": i})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            created_at: now.clone(),
            updated_at: now.clone(),
        };
        if i == 0 {
            first = Some(doc.id.to_string());
        }
        // The last document of page p is the cursor that starts page p + 1.
        for page in [2usize, 10, 100, 1000] {
            if i + 1 == (page - 1) * PAGE {
                cursors.insert(format!("page_{page}"), doc.id.to_string().into());
            }
        }
        batch.push(doc);
        if batch.len() == BATCH {
            store.insert_docs(&batch).await.map_err(|e| e.to_string())?;
            batch.clear();
        }
    }
    store.insert_docs(&batch).await.map_err(|e| e.to_string())?;
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "users": users,
        "docs": docs,
        "kind": kind.as_str(),
        "alice_doc": first,
        "cursors": cursors,
        "seconds": {"users": users_done.as_secs_f64(), "total": started.elapsed().as_secs_f64()},
    }))
}
