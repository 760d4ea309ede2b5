//! The `pgops` binary's exit statuses and messages for bad usage and failed restores, on a
//! local-directory repository (no object store needed).

use std::process::{Command, Output};

fn pgops(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgops")).args(args).env_remove("PGOPS_REPOSITORY").output().unwrap()
}

#[test]
fn arguments_that_do_not_read_exit_3_with_clap_naming_the_form() {
    let restore = ["--repository", "file:///nonexistent", "restore", "--pgdata", "/nonexistent/restored"];
    for (flags, form) in [
        (&["--target-lsn", "3000060"][..], "X/Y in hexadecimal"),
        (&["--target-time", "tomorrow"], "YYYY-MM-DD HH:MM:SS"),
        (&["--target-xid", "x1"], "--target-xid"),
        (&["--target-lsn", "0/1", "--target-xid", "7"], "cannot be used with"),
        (&["--tablespace-map", "16385=relative/dir"], "OID=/absolute/dir"),
        (&["--tablespace-map", "16385"], "OID=/absolute/dir"),
    ] {
        let out = pgops(&[&restore[..], flags].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{flags:?}: {stderr}");
        assert!(stderr.contains(form), "{flags:?}: {stderr}");
    }
}

#[test]
fn a_refused_restore_exits_4_with_the_hint() {
    let repository = tempfile::tempdir().unwrap();
    let pgdata = tempfile::tempdir().unwrap();
    std::fs::write(pgdata.path().join("PG_VERSION"), "15\n").unwrap();
    let url = format!("file://{}", repository.path().display());
    let out = pgops(&["--repository", &url, "restore", "--pgdata", pgdata.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("is not empty") && stderr.contains("\nhint: Give a new or empty directory"), "{stderr}");

    let empty = pgdata.path().join("new");
    let out = pgops(&["--repository", &url, "restore", "--pgdata", empty.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("the repository has no DONE backup") && stderr.contains("\nhint: "), "{stderr}");
    assert!(!empty.exists(), "nothing written");
}
