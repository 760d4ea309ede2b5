//! The roles file (`pgops.roles_file`): roles and databases in JSON, with the fields of
//! `pgops.ensure_role()` and `pgops.ensure_database()`, passwords only by `password_file`.
//!
//! ```json
//! { "roles": [ { "name": "gitea", "password_file": "/run/secrets/gitea" } ],
//!   "databases": [ { "name": "gitea", "owner": "gitea" } ] }
//! ```
//!
//! A syntax error rejects the whole file (nothing is applied); an entry that cannot be read
//! fails alone and the others are still applied.

use super::{DatabaseSpec, Ensure, Flag, PasswordUpdate, RoleSpec, Timestamp};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Role,
    Database,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Role => "role",
            Kind::Database => "database",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Declared {
    Role { spec: RoleSpec, password_file: Option<PathBuf> },
    Database(DatabaseSpec),
}

/// One entry of the file, in the order to apply it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub kind: Kind,
    pub name: String,
    /// What it declares, or why it cannot be applied.
    pub declared: Result<Declared, EntryProblem>,
    /// Roles of this file that must be in place first (`in_roles` targets, the owner).
    pub after: Vec<String>,
}

/// Why one entry of the file cannot be applied (the others are).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryProblem {
    #[error("\"password\" is not accepted in the roles file: put the password in a file (a mounted secret) and give its path as \"password_file\"")]
    InlinePassword,
    /// Not of an entry's shape (serde's words: the field, the expected type).
    #[error("{0}")]
    Shape(String),
    #[error("{kind} \"{name}\" is declared twice; the first declaration is applied")]
    Twice { kind: Kind, name: String },
    #[error("membership cycle among roles {}: in_roles cannot be satisfied", .0.join(", "))]
    Cycle(Vec<String>),
}

/// Why the file as a whole cannot be read: nothing of it is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileProblem {
    /// Not JSON (serde's words, with line and column).
    #[error("{0}")]
    NotJson(String),
    #[error("the file holds {0}; {SHAPE}")]
    NotAnObject(&'static str),
    #[error("{0}; {SHAPE}")]
    Shape(String),
}

const SHAPE: &str = "expected {\"roles\": [{\"name\": …}, …], \"databases\": [{\"name\": …}, …]}";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    #[serde(default)]
    roles: Vec<Value>,
    #[serde(default)]
    databases: Vec<Value>,
}

fn yes() -> bool {
    true
}

fn unlimited() -> i32 {
    -1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleEntry {
    name: String,
    password_file: Option<PathBuf>,
    #[serde(default = "yes")]
    login: bool,
    superuser: Option<bool>,
    createdb: Option<bool>,
    createrole: Option<bool>,
    inherit: Option<bool>,
    replication: Option<bool>,
    bypassrls: Option<bool>,
    #[serde(default = "unlimited")]
    connection_limit: i32,
    valid_until: Option<String>,
    in_roles: Option<Vec<String>>,
    comment: Option<String>,
    #[serde(default)]
    ensure: Ensure,
    #[serde(default)]
    password_update: PasswordUpdate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseEntry {
    name: String,
    owner: Option<String>,
    template: Option<String>,
    encoding: Option<String>,
    locale: Option<String>,
    #[serde(default)]
    ensure: Ensure,
}

/// The entries of the file in dependency order: roles before the roles that are members
/// of them, all roles before databases. Err (with line and column) when the file is not
/// JSON of the expected shape.
pub fn parse(text: &str) -> Result<Vec<Entry>, FileProblem> {
    let value: Value = serde_json::from_str(text).map_err(|e| FileProblem::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(FileProblem::NotAnObject(kind_of(&value)));
    }
    let file = RolesFile::deserialize(&value).map_err(|e| FileProblem::Shape(e.to_string()))?;
    let mut seen = BTreeSet::new();
    let roles: Vec<Entry> =
        file.roles.iter().enumerate().map(|(i, value)| role_entry(i, value)).map(|e| no_twice(e, &mut seen)).collect();
    let databases: Vec<Entry> = file
        .databases
        .iter()
        .enumerate()
        .map(|(i, value)| database_entry(i, value))
        .map(|e| no_twice(e, &mut seen))
        .collect();
    // Failed entries count too: what depends on them waits instead of failing on its own.
    let declared_roles: BTreeSet<String> = roles.iter().map(|e| e.name.clone()).collect();
    let keep_declared = |mut entry: Entry| {
        let role_itself = |name: &String| entry.kind == Kind::Role && *name == entry.name;
        entry.after.retain(|name| declared_roles.contains(name) && !role_itself(name));
        entry
    };
    let mut ordered = in_dependency_order(roles.into_iter().map(keep_declared).collect());
    ordered.extend(databases.into_iter().map(keep_declared));
    Ok(ordered)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Object(_) => "an object",
    }
}

fn no_twice(mut entry: Entry, seen: &mut BTreeSet<(Kind, String)>) -> Entry {
    if entry.declared.is_ok() && !seen.insert((entry.kind, entry.name.clone())) {
        entry.declared = Err(EntryProblem::Twice { kind: entry.kind, name: entry.name.clone() });
    }
    entry
}

/// The entry's name, or its position when it has none.
fn entry_name(list: &str, index: usize, value: &Value) -> String {
    match value.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => format!("{list}[{index}]"),
    }
}

fn role_entry(index: usize, value: &Value) -> Entry {
    let name = entry_name("roles", index, value);
    let entry: Result<RoleEntry, EntryProblem> = if value.get("password").is_some() {
        Err(EntryProblem::InlinePassword)
    } else {
        RoleEntry::deserialize(value).map_err(|e| EntryProblem::Shape(e.to_string()))
    };
    let after = entry.as_ref().ok().and_then(|e| e.in_roles.clone()).unwrap_or_default();
    let declared = entry.and_then(|e| {
        let flags = [
            (Flag::Login, Some(e.login)),
            (Flag::Superuser, e.superuser),
            (Flag::Createdb, e.createdb),
            (Flag::Createrole, e.createrole),
            (Flag::Inherit, e.inherit),
            (Flag::Replication, e.replication),
            (Flag::Bypassrls, e.bypassrls),
        ];
        let valid_until = e
            .valid_until
            .as_deref()
            .map(Timestamp::parse)
            .transpose()
            .map_err(|r| EntryProblem::Shape(r.to_string()))?;
        Ok(Declared::Role {
            spec: RoleSpec {
                name: e.name,
                flags: flags.into_iter().filter_map(|(flag, on)| Some((flag, on?))).collect::<BTreeMap<_, _>>(),
                connection_limit: e.connection_limit,
                valid_until,
                in_roles: e.in_roles,
                comment: e.comment,
                ensure: e.ensure,
                password_update: e.password_update,
            },
            password_file: e.password_file,
        })
    });
    Entry { kind: Kind::Role, name, declared, after }
}

fn database_entry(index: usize, value: &Value) -> Entry {
    let name = entry_name("databases", index, value);
    let entry = DatabaseEntry::deserialize(value).map_err(|e| EntryProblem::Shape(e.to_string()));
    let after = entry.as_ref().ok().and_then(|e| e.owner.clone()).into_iter().collect();
    let declared = entry.map(|e| {
        Declared::Database(DatabaseSpec {
            name: e.name,
            owner: e.owner,
            template: e.template,
            encoding: e.encoding,
            locale: e.locale,
            ensure: e.ensure,
        })
    });
    Entry { kind: Kind::Database, name, declared, after }
}

/// Kahn's algorithm over the roles; roles left in a membership cycle fail, named.
fn in_dependency_order(mut pending: Vec<Entry>) -> Vec<Entry> {
    let mut ordered: Vec<Entry> = Vec::with_capacity(pending.len());
    loop {
        let placed: BTreeSet<String> = ordered.iter().map(|e| e.name.clone()).collect();
        let ready = pending.iter().position(|e| e.after.iter().all(|name| placed.contains(name)));
        match ready {
            Some(index) => ordered.push(pending.remove(index)),
            None => break,
        }
    }
    let cycle: Vec<String> = pending.iter().map(|e| e.name.clone()).collect();
    for mut entry in pending {
        entry.declared = Err(EntryProblem::Cycle(cycle.clone()));
        entry.after.clear();
        ordered.push(entry);
    }
    ordered
}
