//! Roles and databases as declared (by `pgops.ensure_role()`, `pgops.ensure_database()` or
//! the roles file) against what the cluster has: which statements bring one to the other.
//! Postgres-free: the extension reads the catalog into [`RoleState`]/[`DatabaseState`] and
//! runs the statements planned here.

pub mod file;
pub mod quote;
pub mod scram;

use chrono::{DateTime, NaiveDate, Utc};
use quote::{ident, literal};
use scram::Comparison;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// Postgres truncates longer names (NAMEDATALEN - 1): refused rather than silently renamed.
pub const MAX_NAME_BYTES: usize = 63;

/// Why a declaration cannot be applied, shaped for an ERROR with a HINT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    pub message: String,
    pub hint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// A name pgops must not manage.
    Reserved,
    InvalidValue,
    /// The object exists in a form pgops does not change.
    Conflict,
}

impl Refusal {
    fn new(kind: RefusalKind, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Refusal { kind, message: message.into(), hint: hint.into() }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.hint)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ensure {
    #[default]
    Present,
    Absent,
}

impl std::str::FromStr for Ensure {
    type Err = Refusal;
    fn from_str(text: &str) -> Result<Self, Refusal> {
        match text {
            "present" => Ok(Ensure::Present),
            "absent" => Ok(Ensure::Absent),
            _ => Err(Refusal::new(
                RefusalKind::InvalidValue,
                format!("invalid ensure \"{text}\""),
                "Use 'present' (create or update) or 'absent' (drop).",
            )),
        }
    }
}

/// When a declared password is applied to an existing role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordUpdate {
    /// Whenever it differs from the stored one.
    #[default]
    Always,
    /// Only when the role is created, so that a password rotated since is kept.
    OnCreate,
}

impl std::str::FromStr for PasswordUpdate {
    type Err = Refusal;
    fn from_str(text: &str) -> Result<Self, Refusal> {
        match text {
            "always" => Ok(PasswordUpdate::Always),
            "on_create" => Ok(PasswordUpdate::OnCreate),
            _ => Err(Refusal::new(
                RefusalKind::InvalidValue,
                format!("invalid password_update \"{text}\""),
                "Use 'always' (keep the role's password equal to the declared one) or 'on_create' (set it only when the role is created).",
            )),
        }
    }
}

/// A role attribute that is on or off (`LOGIN`/`NOLOGIN`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flag {
    Login,
    Superuser,
    Createdb,
    Createrole,
    Inherit,
    Replication,
    Bypassrls,
}

impl Flag {
    pub const ALL: [Flag; 7] = [
        Flag::Login,
        Flag::Superuser,
        Flag::Createdb,
        Flag::Createrole,
        Flag::Inherit,
        Flag::Replication,
        Flag::Bypassrls,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Flag::Login => "login",
            Flag::Superuser => "superuser",
            Flag::Createdb => "createdb",
            Flag::Createrole => "createrole",
            Flag::Inherit => "inherit",
            Flag::Replication => "replication",
            Flag::Bypassrls => "bypassrls",
        }
    }

    fn keyword(self, on: bool) -> String {
        let word = self.name().to_uppercase();
        if on {
            word
        } else {
            format!("NO{word}")
        }
    }
}

/// A `timestamptz` as Postgres stores it: microseconds since 2000-01-01 00:00 UTC, with
/// i64::MAX for `infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub const INFINITY: Timestamp = Timestamp(i64::MAX);

    fn epoch() -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).expect("a valid date").and_utc()
    }

    /// RFC 3339 (`2027-01-31T00:00:00Z`) or `infinity`.
    pub fn parse(text: &str) -> Result<Timestamp, Refusal> {
        if text == "infinity" {
            return Ok(Timestamp::INFINITY);
        }
        let time = DateTime::parse_from_rfc3339(text).map_err(|e| {
            Refusal::new(
                RefusalKind::InvalidValue,
                format!("invalid valid_until \"{text}\": {e}"),
                "Use an RFC 3339 time such as 2027-01-31T00:00:00Z, or infinity.",
            )
        })?;
        let micros = (time.with_timezone(&Utc) - Self::epoch()).num_microseconds().unwrap_or(i64::MAX);
        Ok(Timestamp(micros))
    }

    /// A literal Postgres reads back to the same value whatever DateStyle and TimeZone are.
    fn literal(self) -> String {
        if self == Timestamp::INFINITY {
            return "'infinity'".into();
        }
        let time = Self::epoch() + chrono::Duration::microseconds(self.0);
        format!("'{}'", time.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
    }
}

/// A role as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleSpec {
    pub name: String,
    /// The attributes managed; one left out keeps Postgres' default on CREATE and the
    /// role's current value on ALTER.
    pub flags: BTreeMap<Flag, bool>,
    pub connection_limit: i32,
    /// Not managed when `None`.
    pub valid_until: Option<Timestamp>,
    /// The roles it is a direct member of, exactly (grants added, others revoked); not
    /// managed when `None`.
    pub in_roles: Option<Vec<String>>,
    /// Not managed when `None`; empty removes the comment.
    pub comment: Option<String>,
    pub ensure: Ensure,
    pub password_update: PasswordUpdate,
}

impl RoleSpec {
    /// A login role with nothing else declared.
    pub fn new(name: impl Into<String>) -> Self {
        RoleSpec {
            name: name.into(),
            flags: BTreeMap::from([(Flag::Login, true)]),
            connection_limit: -1,
            valid_until: None,
            in_roles: None,
            comment: None,
            ensure: Ensure::Present,
            password_update: PasswordUpdate::Always,
        }
    }
}

/// A role as the catalog has it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RoleState {
    pub flags: BTreeMap<Flag, bool>,
    pub connection_limit: i32,
    #[serde(skip)]
    pub valid_until: Option<Timestamp>,
    /// `rolpassword`: a SCRAM secret, an MD5 hash or nothing.
    #[serde(skip)]
    pub password: Option<String>,
    pub member_of: Vec<String>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Dropped,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Dropped => "dropped",
        })
    }
}

/// What to run, in order, and what it changes (for the log: names, never values).
#[derive(Debug, Clone, PartialEq)]
pub struct RolePlan {
    pub outcome: Outcome,
    pub statements: Vec<String>,
    pub changes: Vec<String>,
}

impl RolePlan {
    /// The outcome and what changed: `updated: createdb, password`.
    pub fn summary(&self) -> String {
        if self.changes.is_empty() {
            self.outcome.to_string()
        } else {
            format!("{}: {}", self.outcome, self.changes.join(", "))
        }
    }
}

/// Refuses names pgops must not create, alter or drop: empty or too long ones, Postgres'
/// reserved `pg_` prefix, `public`/`none`, and `reserved` (the bootstrap superuser and the
/// roles running the call).
pub fn check_role_name(name: &str, reserved: &[String]) -> Result<(), Refusal> {
    check_length("role", name)?;
    let why = if name.starts_with("pg_") {
        Some("the pg_ prefix is reserved for Postgres' own roles")
    } else if name == "public" || name == "none" {
        Some("Postgres reserves it")
    } else if reserved.iter().any(|r| r == name) {
        Some("it is the bootstrap superuser or the role running this call")
    } else {
        None
    };
    match why {
        Some(why) => Err(Refusal::new(
            RefusalKind::Reserved,
            format!("role name \"{name}\" is reserved: {why}"),
            "pgops manages application roles only; change this role with ALTER ROLE yourself.",
        )),
        None => Ok(()),
    }
}

fn check_length(kind: &str, name: &str) -> Result<(), Refusal> {
    if name.is_empty() {
        return Err(Refusal::new(RefusalKind::InvalidValue, format!("empty {kind} name"), "Give the name."));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Refusal::new(
            RefusalKind::InvalidValue,
            format!("{kind} name \"{name}\" is {} bytes long; Postgres keeps {MAX_NAME_BYTES}", name.len()),
            "Use a shorter name: Postgres would truncate this one.",
        ));
    }
    Ok(())
}

/// The statements that make role `spec.name` what `spec` declares, given `current` (None:
/// it does not exist) and the declared plaintext `password` (None: not managed). The
/// password only ever appears in them as a SCRAM secret.
pub fn plan_role(
    spec: &RoleSpec,
    password: Option<&str>,
    current: Option<&RoleState>,
    reserved: &[String],
) -> Result<RolePlan, Refusal> {
    check_role_name(&spec.name, reserved)?;
    if password == Some("") {
        return Err(Refusal::new(
            RefusalKind::InvalidValue,
            format!("empty password for role \"{}\"", spec.name),
            "Give a password, or none to leave the role's password as it is.",
        ));
    }
    let role = ident(&spec.name);
    let (outcome, mut statements, mut changes) = match (spec.ensure, current) {
        (Ensure::Absent, None) => (Outcome::Unchanged, vec![], vec![]),
        (Ensure::Absent, Some(_)) => (Outcome::Dropped, vec![format!("DROP ROLE {role}")], vec![]),
        (Ensure::Present, None) => {
            let mut options: Vec<String> = spec.flags.iter().map(|(flag, on)| flag.keyword(*on)).collect();
            options.push(format!("CONNECTION LIMIT {}", spec.connection_limit));
            if let Some(until) = spec.valid_until {
                options.push(format!("VALID UNTIL {}", until.literal()));
            }
            if let Some(password) = password {
                options.push(format!("PASSWORD {}", literal(&scram::secret(password))));
            }
            (Outcome::Created, vec![format!("CREATE ROLE {role} WITH {}", options.join(" "))], vec![])
        }
        (Ensure::Present, Some(state)) => {
            let (options, changes) = attribute_changes(spec, password, state);
            let statements =
                if options.is_empty() { vec![] } else { vec![format!("ALTER ROLE {role} WITH {}", options.join(" "))] };
            (Outcome::Updated, statements, changes)
        }
    };
    if spec.ensure == Ensure::Present {
        let member_of = current.map(|state| state.member_of.as_slice()).unwrap_or_default();
        if let Some(wanted) = &spec.in_roles {
            for group in wanted.iter().filter(|group| !member_of.contains(group)) {
                statements.push(format!("GRANT {} TO {role}", ident(group)));
                changes.push(format!("member of {group}"));
            }
            for group in member_of.iter().filter(|group| !wanted.contains(group)) {
                statements.push(format!("REVOKE {} FROM {role}", ident(group)));
                changes.push(format!("not member of {group}"));
            }
        }
        let current_comment = current.and_then(|state| state.comment.as_deref()).unwrap_or_default();
        if let Some(comment) = spec.comment.as_deref().filter(|comment| *comment != current_comment) {
            let text = if comment.is_empty() { "NULL".to_string() } else { literal(comment) };
            statements.push(format!("COMMENT ON ROLE {role} IS {text}"));
            changes.push("comment".into());
        }
    }
    let outcome = if outcome == Outcome::Updated && statements.is_empty() { Outcome::Unchanged } else { outcome };
    Ok(RolePlan { outcome, statements, changes })
}

/// ALTER ROLE options for an existing role, and the names of what they change.
fn attribute_changes(spec: &RoleSpec, password: Option<&str>, state: &RoleState) -> (Vec<String>, Vec<String>) {
    let mut options = Vec::new();
    let mut changes = Vec::new();
    for (flag, on) in &spec.flags {
        if state.flags.get(flag) != Some(on) {
            options.push(flag.keyword(*on));
            changes.push(flag.name().to_string());
        }
    }
    if spec.connection_limit != state.connection_limit {
        options.push(format!("CONNECTION LIMIT {}", spec.connection_limit));
        changes.push("connection_limit".into());
    }
    if let Some(until) = spec.valid_until.filter(|until| Some(*until) != state.valid_until) {
        options.push(format!("VALID UNTIL {}", until.literal()));
        changes.push("valid_until".into());
    }
    if let Some(password) = password {
        let comparison = match &state.password {
            Some(stored) => scram::compare(password, stored, &spec.name),
            None => Comparison::Different,
        };
        // An MD5 hash of the same password is upgraded even with on_create: the password
        // stays the one the role has.
        let change = match (comparison, spec.password_update) {
            (Comparison::Same, _) => None,
            (Comparison::SameInMd5, _) => Some("password (MD5 hash upgraded to SCRAM-SHA-256)"),
            (Comparison::Different, PasswordUpdate::Always) => Some("password"),
            (Comparison::Different, PasswordUpdate::OnCreate) => None,
        };
        if let Some(change) = change {
            options.push(format!("PASSWORD {}", literal(&scram::secret(password))));
            changes.push(change.into());
        }
    }
    (options, changes)
}

/// A database as declared.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatabaseSpec {
    pub name: String,
    pub owner: Option<String>,
    pub template: Option<String>,
    /// Canonical encoding name (as `pg_encoding_to_char` spells it).
    pub encoding: Option<String>,
    pub locale: Option<String>,
    pub ensure: Ensure,
}

/// A database as the catalog has it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DatabaseState {
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
}

/// One statement, and whether it must run as a top-level statement (outside any
/// transaction block: CREATE and DROP DATABASE).
#[derive(Debug, Clone, PartialEq)]
pub struct DatabasePlan {
    pub outcome: Outcome,
    pub statement: Option<String>,
    pub top_level: bool,
}

/// The statement that makes database `spec.name` what `spec` declares. `protected` are
/// databases never dropped (the one the caller is connected to).
pub fn plan_database(
    spec: &DatabaseSpec,
    current: Option<&DatabaseState>,
    protected: &[String],
) -> Result<DatabasePlan, Refusal> {
    check_length("database", &spec.name)?;
    let database = ident(&spec.name);
    let plan = |outcome, statement: Option<String>, top_level| Ok(DatabasePlan { outcome, statement, top_level });
    match (spec.ensure, current) {
        (Ensure::Absent, None) => plan(Outcome::Unchanged, None, false),
        (Ensure::Absent, Some(_)) => {
            if ["template0", "template1"].contains(&spec.name.as_str()) || protected.contains(&spec.name) {
                return Err(Refusal::new(
                    RefusalKind::Reserved,
                    format!("database \"{}\" is not dropped by pgops", spec.name),
                    "Template databases and the database this session (or the pgops worker) is connected to stay; drop it yourself from another database.",
                ));
            }
            plan(Outcome::Dropped, Some(format!("DROP DATABASE {database}")), true)
        }
        (Ensure::Present, None) => {
            let mut statement = format!("CREATE DATABASE {database}");
            for (keyword, value) in [("OWNER", &spec.owner), ("TEMPLATE", &spec.template)] {
                if let Some(value) = value {
                    statement.push_str(&format!(" {keyword} {}", ident(value)));
                }
            }
            for (keyword, value) in [("ENCODING", &spec.encoding), ("LOCALE", &spec.locale)] {
                if let Some(value) = value {
                    statement.push_str(&format!(" {keyword} {}", literal(value)));
                }
            }
            plan(Outcome::Created, Some(statement), true)
        }
        (Ensure::Present, Some(state)) => {
            let locale_differs = spec.locale.as_ref().is_some_and(|l| *l != state.collate || *l != state.ctype);
            let encoding_differs = spec.encoding.as_ref().is_some_and(|e| *e != state.encoding);
            if encoding_differs || locale_differs {
                return Err(Refusal::new(
                    RefusalKind::Conflict,
                    format!(
                        "database \"{}\" exists with encoding {}, LC_COLLATE {}, LC_CTYPE {}, not the declared {}",
                        spec.name,
                        state.encoding,
                        state.collate,
                        state.ctype,
                        [spec.encoding.as_deref(), spec.locale.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(", ")
                    ),
                    "A database's encoding and locale are fixed when it is created: dump and restore it into a new database, or declare what it has.",
                ));
            }
            match spec.owner.as_ref().filter(|owner| **owner != state.owner) {
                Some(owner) => {
                    plan(Outcome::Updated, Some(format!("ALTER DATABASE {database} OWNER TO {}", ident(owner))), false)
                }
                None => plan(Outcome::Unchanged, None, false),
            }
        }
    }
}

#[cfg(test)]
mod tests;
