//! pgops loaded from an extension directory of its own (`bash scripts/package MAJOR DIR`),
//! the layout CloudNativePG 1.27+ mounts image-volume extensions with, on a server that has
//! no pgops files of its own: PostgreSQL 18's `extension_control_path` and
//! `dynamic_library_path`. `scripts/test` builds the directory and names it in
//! `PGOPS_PACKAGE_DIR`.

use pgops_e2e::*;

#[test]
fn pgops_from_its_own_directory_archives_backs_up_and_restores() {
    let dir = scratch_dir();
    if server_major() < 18 {
        // Before 18 a server reads extensions from its own share directory only.
        let pg = PgCluster::init(dir.path(), "main");
        pg.start();
        assert_eq!(pg.query_text("SELECT count(*) FROM pg_settings WHERE name = 'extension_control_path'"), "0");
        return;
    }
    let package = std::env::var("PGOPS_PACKAGE_DIR").expect(
        "PGOPS_PACKAGE_DIR: an extension directory from `bash scripts/package 18 DIR` (scripts/test makes one)",
    );
    let bindir = server_without_pgops(dir.path());
    assert!(!bindir.join("../lib/pgops.so").exists());
    let s3 = S3Server::start(dir.path());
    let primary = PgCluster::init_using(dir.path(), "primary", &bindir);
    let extension_dir =
        format!("extension_control_path = '$system:{package}/share'\ndynamic_library_path = '$libdir:{package}/lib'\n");
    primary.configure(&extension_dir);
    primary.configure(ARCHIVING);
    primary.configure(&s3.pgops_settings("extdir"));
    primary.start();
    primary.execute("CREATE EXTENSION pgops");
    // The library a backend runs is the package's (preloaded by the postmaster, inherited).
    let mut client = primary.client();
    let pid: i32 = client.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let packaged = std::fs::canonicalize(format!("{package}/lib/pgops.so")).unwrap();
    let mapped: std::collections::BTreeSet<&str> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| path.ends_with("pgops.so"))
        .collect();
    assert_eq!(mapped, [packaged.to_str().unwrap()].into(), "{maps}");
    drop(client);

    primary.execute("CREATE TABLE orders(id int PRIMARY KEY); INSERT INTO orders SELECT generate_series(1, 1000)");
    let backup = primary.query_text("SELECT pgops.backup_now(fast => true)");
    assert_eq!(primary.query_text(&format!("SELECT status FROM pgops.backup_list WHERE id = '{backup}'")), "DONE");
    primary.execute("INSERT INTO orders SELECT generate_series(1001, 1500)");
    let expected = primary.query_text("SELECT count(*) || '/' || sum(id) FROM orders");
    primary.wait_archived(&primary.write_and_switch());
    primary.stop();

    // The restored data directory carries the same settings: it loads pgops from there too.
    let restored = PgCluster::at_using(dir.path(), "restored", &bindir);
    restore_clone(&s3, "extdir", &restored, &["--backup", &backup]);
    restored.recover();
    assert_eq!(restored.query_text("SELECT count(*) || '/' || sum(id) FROM orders"), expected);
    let log = restored.log() + &primary.log();
    assert!(!log.contains("could not access file") && !log.contains("could not load library"), "{log}");
}
