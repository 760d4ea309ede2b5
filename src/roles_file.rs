//! The pgops worker's side of `pgops.roles_file`: the file's roles and databases are
//! reconciled when the worker starts, after every reload of the configuration, and, while
//! some entry is not reconciled, every 30 seconds (a secret mounted late, an owner created
//! by someone else). Each entry runs in a transaction of its own, so a bad one fails alone.

use crate::role_status::{self, Status};
use crate::transaction::in_transaction;
use crate::{databases, guc, roles, top_level};
use pgops_core::roles::file::{self, Declared, Entry};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::time::{Duration, Instant};

const RETRY: Duration = Duration::from_secs(30);

pub struct Reconciler {
    due: bool,
    retry_at: Option<Instant>,
    /// The file's row first, then one per entry.
    statuses: Vec<Status>,
}

impl Reconciler {
    /// Due at once: the worker has just started.
    pub fn new() -> Self {
        Reconciler { due: true, retry_at: None, statuses: Vec::new() }
    }

    /// The configuration was reloaded: reconcile again.
    pub fn reloaded(&mut self) {
        self.due = true;
    }

    pub fn reconcile_if_due(&mut self) {
        let retry = self.retry_at.is_some_and(|at| Instant::now() >= at);
        if !self.due && !retry {
            return;
        }
        self.due = false;
        self.retry_at = None;
        let Some(path) = guc::roles_file() else {
            self.statuses.clear();
            role_status::publish(&self.statuses);
            return;
        };
        let entries =
            std::fs::read_to_string(&path).map_err(|e| format!("could not read {path}: {e}")).and_then(|text| {
                file::parse(&text).map_err(|e| format!("{path} is not a valid roles file, nothing was applied: {e}"))
            });
        let entries = match entries {
            Ok(entries) => entries,
            Err(error) => {
                // Everything stays as it was; the file's row says why. Retries repeat the
                // WARNING only when the error changes.
                if self.statuses.first().is_none_or(|file| file.message != error) {
                    warning!("pgops: roles file: {error}");
                }
                self.set_file_row(&path, "error", error);
                role_status::publish(&self.statuses);
                self.retry_at = Some(Instant::now() + RETRY);
                return;
            }
        };
        // An entry keeps its last state until it is attempted again: the view does not
        // flicker to pending on every reload.
        let previous = std::mem::take(&mut self.statuses);
        self.set_file_row(&path, "reconciled", format!("{} entries", entries.len()));
        self.statuses.extend(entries.iter().map(|entry| {
            let kind = entry.kind.to_string();
            let earlier = previous.iter().find(|s| s.kind == kind && s.name == entry.name).cloned();
            earlier.unwrap_or(Status {
                kind,
                name: entry.name.clone(),
                state: "pending",
                message: String::new(),
                last_attempt: 0,
            })
        }));
        role_status::publish(&self.statuses);
        for (index, entry) in entries.iter().enumerate() {
            let (state, message) = self.apply(entry);
            let status = &mut self.statuses[index + 1];
            if state != "reconciled" && (status.state, status.message.as_str()) != (state, message.as_str()) {
                warning!("pgops: roles file: {} \"{}\": {message}", entry.kind, entry.name);
            }
            (status.state, status.message, status.last_attempt) = (state, message, now());
            role_status::publish(&self.statuses);
        }
        if self.statuses.iter().any(|s| s.state != "reconciled") {
            self.retry_at = Some(Instant::now() + RETRY);
        }
    }

    fn set_file_row(&mut self, path: &str, state: &'static str, message: String) {
        let row = Status { kind: "file".into(), name: path.into(), state, message, last_attempt: now() };
        match self.statuses.first_mut() {
            Some(first) if first.kind == "file" => *first = row,
            _ => self.statuses.insert(0, row),
        }
    }

    /// The entry's state and message.
    fn apply(&self, entry: &Entry) -> (&'static str, String) {
        let waiting_for = entry.after.iter().find(|role| {
            !self.statuses.iter().any(|s| s.kind == "role" && s.name == **role && s.state == "reconciled")
        });
        if let Some(role) = waiting_for {
            return ("pending", format!("waits for role \"{role}\" of this file, which is not reconciled"));
        }
        let outcome = match &entry.declared {
            Err(problem) => return ("error", problem.to_string()),
            Ok(Declared::Role { spec, password_file }) => in_transaction(|| {
                let password = match password_file {
                    Some(path) => roles::Password::File(path),
                    None => roles::Password::Unmanaged,
                };
                roles::ensure_role(spec, password).summary()
            }),
            Ok(Declared::Database(spec)) => in_transaction(|| {
                databases::ensure_database(spec, |sql| {
                    top_level::execute_here(sql);
                    Ok(())
                })
                .to_string()
            }),
        };
        match outcome {
            Ok(message) => ("reconciled", message),
            Err(failure) => ("error", failure.to_string()),
        }
    }
}

fn now() -> pg_sys::TimestampTz {
    // SAFETY: GetCurrentTimestamp only reads the clock (gettimeofday) and converts it; it
    // needs no backend state.
    unsafe { pg_sys::GetCurrentTimestamp() }
}
