//! `pgops.ensure_database()`: a database made as declared. CREATE and DROP DATABASE cannot
//! run in a transaction block, so they run top-level: in a statement worker for SQL callers
//! (`top_level::run_in_worker`), directly in the pgops worker for the roles file.

use crate::guc;
use crate::roles::refuse;
use crate::transaction::Failure;
use pgops_core::roles::{self, DatabaseSpec, DatabaseState, Outcome};
use pgrx::prelude::*;
use pgrx::Spi;

/// How a top-level statement gets run.
pub type TopLevelRunner = fn(&str) -> Result<(), Failure>;

/// Makes database `spec.name` what `spec` declares; raises an ERROR when it cannot.
pub fn ensure_database(spec: &DatabaseSpec, run_top_level: TopLevelRunner) -> Outcome {
    let mut spec = spec.clone();
    if let Some(encoding) = &spec.encoding {
        spec.encoding = Some(canonical_encoding(encoding));
    }
    let current = database_state(&spec.name);
    let protected = [current_database(), guc::database()];
    let plan = roles::plan_database(&spec, current.as_ref(), &protected).unwrap_or_else(|r| refuse(r));
    if let Some(statement) = &plan.statement {
        check_privileges(&spec.name, plan.outcome);
        if plan.top_level {
            run_top_level(statement).unwrap_or_else(|failure| explain_invisible_owner(failure, &spec).raise());
        } else {
            Spi::run(statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        log!("pgops: database \"{}\" {}", spec.name, plan.outcome);
    }
    plan.outcome
}

/// Postgres' own privilege checks for what the plan does, with its SQLSTATE (42501), made
/// before anything runs: no statement worker is started for a caller who may not.
fn check_privileges(name: &str, outcome: Outcome) {
    let (allowed, message, hint) = match outcome {
        Outcome::Created => (
            "SELECT rolsuper OR rolcreatedb FROM pg_catalog.pg_roles WHERE rolname = current_user",
            format!("permission denied to create database \"{name}\""),
            "pgops.ensure_database() creates databases as you: it needs the CREATEDB attribute (ALTER ROLE … CREATEDB) or superuser.",
        ),
        Outcome::Dropped | Outcome::Updated => (
            "SELECT pg_catalog.pg_has_role(datdba, 'USAGE') FROM pg_catalog.pg_database WHERE datname = $1",
            format!("must be owner of database \"{name}\""),
            "Only the database's owner (or a member of the owning role) or a superuser may drop it or change its owner.",
        ),
        Outcome::Unchanged => return,
    };
    let args = if outcome == Outcome::Created { vec![] } else { vec![name.into()] };
    if Spi::get_one_with_args::<bool>(allowed, &args).unwrap_or_else(|e| panic!("{allowed}: {e}")) != Some(true) {
        Failure::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, message, hint).raise();
    }
}

/// The statement worker sees committed roles only: an owner created earlier in the
/// caller's still-open transaction is "missing" there. Say so.
fn explain_invisible_owner(mut failure: Failure, spec: &DatabaseSpec) -> Failure {
    let Some(owner) = &spec.owner else { return failure };
    let visible_here = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1)",
        &[owner.as_str().into()],
    );
    if failure.code == PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT && matches!(visible_here, Ok(Some(true))) {
        failure.hint = Some(format!(
            "Role \"{owner}\" exists in this session but is not committed yet, and CREATE DATABASE runs in a session of its own: commit the transaction that creates the role first."
        ));
    }
    failure
}

fn current_database() -> String {
    Spi::get_one::<String>("SELECT pg_catalog.current_database()::text").ok().flatten().unwrap_or_default()
}

/// The encoding's name as Postgres spells it (`utf-8` → `UTF8`); an ERROR when unknown.
fn canonical_encoding(name: &str) -> String {
    let canonical = Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.pg_encoding_to_char(pg_catalog.pg_char_to_encoding($1))::text",
        &[name.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    if canonical.is_empty() {
        Failure::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("\"{name}\" is not a valid encoding name"),
            "Use a server encoding such as UTF8 (see SELECT pg_encoding_to_char(encoding) FROM pg_database).",
        )
        .raise();
    }
    canonical
}

fn database_state(name: &str) -> Option<DatabaseState> {
    let json = Spi::get_one_with_args::<String>(
        "SELECT (SELECT json_build_object('owner', pg_catalog.pg_get_userbyid(datdba), 'encoding',
                        pg_catalog.pg_encoding_to_char(encoding), 'collate', datcollate, 'ctype', datctype)::text
                   FROM pg_catalog.pg_database WHERE datname = $1)",
        &[name.into()],
    )
    .unwrap_or_else(|e| panic!("reading database \"{name}\": {e}"))?;
    Some(serde_json::from_str(&json).unwrap_or_else(|e| panic!("database \"{name}\": {e}")))
}
