//! `pgops.ensure_role()`: a role made as declared, in the caller's session and transaction
//! (so it commits or rolls back with the caller), by statements the core plans. Also used
//! by the pgops worker for the roles file.

use crate::sqlstate;
use crate::transaction::Failure;
use pgops_core::roles::{self, Flag, Outcome, Refusal, RoleSpec, RoleState, Timestamp};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::{PgTryBuilder, Spi};
use std::ffi::{CStr, CString};
use std::path::Path;

/// Where the declared password comes from.
pub enum Password<'a> {
    /// Not managed: the role's password is left as it is.
    Unmanaged,
    Given(&'a str),
    File(&'a Path),
}

pub fn refuse(refusal: Refusal) -> ! {
    Failure::new(sqlstate::of_refusal(refusal.kind), refusal.message, refusal.hint).raise()
}

fn permission_denied(message: String, hint: &str) -> ! {
    Failure::new(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, message, hint).raise()
}

fn role_name(oid: pg_sys::Oid) -> String {
    // SAFETY: with noerr = false GetUserNameFromId raises an ERROR rather than return NULL;
    // it returns a palloc'd NUL-terminated copy of the name, copied into a String at once.
    // It reads the syscache: called on the main thread in a transaction
    // (pgops.ensure_role()'s, or the pgops worker's in_transaction).
    unsafe { CStr::from_ptr(pg_sys::GetUserNameFromId(oid, false)) }.to_string_lossy().into_owned()
}

/// Names pgops refuses to manage besides Postgres' reserved ones: the bootstrap superuser
/// and the roles running the call.
fn reserved_names() -> Vec<String> {
    // SAFETY: GetUserId and GetSessionUserId read this backend's globals, set when it
    // connected (before any pgops code runs); BOOTSTRAP_SUPERUSERID is a constant.
    let ids =
        unsafe { [pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID), pg_sys::GetUserId(), pg_sys::GetSessionUserId()] };
    ids.into_iter().map(role_name).collect()
}

/// Makes role `spec.name` what `spec` declares; raises an ERROR when it cannot.
pub fn ensure_role(spec: &RoleSpec, password: Password) -> roles::RolePlan {
    // SAFETY: superuser() looks the current user up in the syscache (cached per user): we
    // are on the main thread in a transaction (pgops.ensure_role()'s, or the pgops worker's
    // in_transaction).
    let is_superuser = unsafe { pg_sys::superuser() };
    // SAFETY: as above, a syscache lookup of the current user's rolcreaterole.
    if !is_superuser && !unsafe { pg_sys::has_createrole_privilege(pg_sys::GetUserId()) } {
        permission_denied(
            format!("permission denied to manage role \"{}\"", spec.name),
            "pgops.ensure_role() runs CREATE, ALTER and DROP ROLE as you: it needs CREATEROLE or superuser.",
        );
    }
    let reserved = reserved_names();
    roles::check_role_name(&spec.name, &reserved).unwrap_or_else(|r| refuse(r));
    let current = role_state(&spec.name);
    if !is_superuser {
        check_may_manage(spec, current.as_ref());
    }
    let password = match (spec.ensure, password) {
        (roles::Ensure::Absent, _) | (_, Password::Unmanaged) => None,
        (_, Password::Given(text)) => Some(text.to_string()),
        (_, Password::File(path)) => Some(read_password_file(path, &spec.name)),
    };
    let plan =
        roles::plan_role(spec, password.as_deref(), current.as_ref(), &reserved_names()).unwrap_or_else(|r| refuse(r));
    for statement in &plan.statements {
        run(statement, &spec.name);
    }
    if plan.outcome != Outcome::Unchanged {
        log!("pgops: role \"{}\" {}", spec.name, plan.summary());
    }
    plan
}

/// Raises Postgres' own privilege error (42501) unless a non-superuser caller may manage
/// the role as declared. Checked before the stored password is compared: "unchanged" for a
/// role the caller may not alter would tell whether a guessed password is right.
fn check_may_manage(spec: &RoleSpec, current: Option<&RoleState>) {
    let has = |flag: Flag| {
        spec.flags.get(&flag) == Some(&true) || current.is_some_and(|state| state.flags.get(&flag) == Some(&true))
    };
    if has(Flag::Superuser) {
        permission_denied(
            format!("permission denied to manage superuser role \"{}\"", spec.name),
            "Only superusers create, change or drop superuser roles.",
        );
    }
    // PostgreSQL 15 lets only superusers alter replication roles or grant BYPASSRLS.
    if has(Flag::Replication) || spec.flags.get(&Flag::Bypassrls) == Some(&true) {
        permission_denied(
            format!("permission denied to manage role \"{}\": it has or would get REPLICATION or BYPASSRLS", spec.name),
            "Only superusers create, change or drop replication roles and grant BYPASSRLS.",
        );
    }
    #[cfg(not(feature = "pg15"))]
    if current.is_some() {
        // PostgreSQL 16+: CREATEROLE manages only roles it has ADMIN OPTION on.
        let name = CString::new(spec.name.as_str()).unwrap_or_default();
        // SAFETY: syscache lookups on the main thread in the caller's transaction; the name
        // is NUL-terminated and outlives the calls, and get_role_oid with missing_ok = true
        // returns InvalidOid for a missing role instead of raising.
        let admin = unsafe {
            let role = pg_sys::get_role_oid(name.as_ptr(), true);
            role != pg_sys::InvalidOid && pg_sys::is_admin_of_role(pg_sys::GetUserId(), role)
        };
        if !admin {
            permission_denied(
                format!("permission denied to manage role \"{}\"", spec.name),
                "A CREATEROLE role manages only roles it has ADMIN OPTION on: GRANT the role to you WITH ADMIN OPTION, or call as its creator or a superuser.",
            );
        }
    }
}

/// Runs one planned statement; a DROP that fails on owned objects gets a HINT.
fn run(statement: &str, role: &str) {
    PgTryBuilder::new(|| Spi::run(statement).unwrap_or_else(|e| panic!("{e}")))
        .catch_when(PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST, |caught| {
            let CaughtError::PostgresError(report) = caught else { caught.rethrow() };
            let quoted = roles::quote::ident(role);
            let hint = format!(
                "In each database named, move or drop what the role owns (REASSIGN OWNED BY {quoted} TO …; DROP OWNED BY {quoted};), then call again."
            );
            Failure { hint: Some(hint), ..Failure::caught(&report) }.raise()
        })
        .execute()
}

/// The password in `path`, without its trailing line break; the caller's role must be
/// allowed to read server files. A missing or empty file is an ERROR: the role's current
/// password stays.
fn read_password_file(path: &Path, role: &str) -> String {
    // SAFETY: superuser() and has_privs_of_role() are syscache lookups of the current user
    // and its memberships, on the main thread in a transaction (pgops.ensure_role()'s, or
    // the pgops worker's in_transaction).
    let allowed = unsafe {
        pg_sys::superuser()
            || pg_sys::has_privs_of_role(pg_sys::GetUserId(), pg_sys::Oid::from(pg_sys::ROLE_PG_READ_SERVER_FILES))
    };
    if !allowed {
        permission_denied(
            format!("permission denied to read password file \"{}\"", path.display()),
            "Reading a file on the server needs superuser or membership in pg_read_server_files.",
        );
    }
    let kept = format!("The password of role \"{role}\" was left as it is.");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        Failure {
            code: PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
            message: format!("could not read password file \"{}\" for role \"{role}\": {e}", path.display()),
            detail: Some(kept.clone()),
            hint: Some("Check that the secret is mounted at that path and readable by the server's OS user.".into()),
        }
        .raise()
    });
    let password = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if password.is_empty() {
        Failure {
            code: PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            message: format!("password file \"{}\" for role \"{role}\" is empty", path.display()),
            detail: Some(kept),
            hint: Some("Write the password into the file (a trailing line break is ignored).".into()),
        }
        .raise();
    }
    password.to_string()
}

/// The role as the catalog has it, None when there is no such role.
fn role_state(name: &str) -> Option<RoleState> {
    let row = Spi::connect(|client| {
        let table = client.select(
            "SELECT json_build_object(
                'flags', json_build_object('login', r.rolcanlogin, 'superuser', r.rolsuper,
                    'createdb', r.rolcreatedb, 'createrole', r.rolcreaterole, 'inherit', r.rolinherit,
                    'replication', r.rolreplication, 'bypassrls', r.rolbypassrls),
                'connection_limit', r.rolconnlimit,
                'member_of', ARRAY(SELECT g.rolname FROM pg_catalog.pg_auth_members m
                                     JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
                                    WHERE m.member = r.oid ORDER BY 1),
                'comment', pg_catalog.shobj_description(r.oid, 'pg_authid'))::text,
                r.rolvaliduntil
               FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
            Some(1),
            &[name.into()],
        )?;
        if table.is_empty() {
            return Ok(None);
        }
        let row = table.first();
        Ok::<_, pgrx::spi::Error>(Some((row.get::<String>(1)?, row.get::<TimestampWithTimeZone>(2)?)))
    })
    .unwrap_or_else(|e| panic!("reading role \"{name}\": {e}"))?;
    let (json, valid_until) = row;
    let mut state: RoleState = serde_json::from_str(&json?).unwrap_or_else(|e| panic!("role \"{name}\": {e}"));
    state.valid_until = valid_until.map(|t| Timestamp(pg_sys::TimestampTz::from(t)));
    state.password = stored_password(name);
    Some(state)
}

/// `rolpassword`, from the catalog cache: pg_authid itself is readable by superusers only,
/// and a CREATEROLE role may set this password anyway.
fn stored_password(name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    // SAFETY: on the main thread in a transaction, as the syscache requires. AUTHNAME is
    // keyed by a role name passed as a pointer to a NUL-terminated string, as Postgres'
    // own get_role_oid passes it; `name` outlives the lookup. The tuple is checked for
    // NULL, read (String::from_datum detoasts and copies the text) while the cache entry is
    // still pinned, and released exactly once.
    unsafe {
        let cache = pg_sys::SysCacheIdentifier::AUTHNAME as i32;
        let tuple = pg_sys::SearchSysCache1(cache, pg_sys::Datum::from(name.as_ptr()));
        if tuple.is_null() {
            return None;
        }
        let mut is_null = false;
        let datum = pg_sys::SysCacheGetAttr(
            cache,
            tuple,
            pg_sys::Anum_pg_authid_rolpassword as pg_sys::AttrNumber,
            &mut is_null,
        );
        let password = if is_null { None } else { String::from_datum(datum, false) };
        pg_sys::ReleaseSysCache(tuple);
        password
    }
}
