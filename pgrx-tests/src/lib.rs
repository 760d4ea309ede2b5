//! Harness for pgops' end-to-end tests: real PostgreSQL clusters (run as an unprivileged
//! user) and a real S3 server process (`s3s-fs`) over HTTP.
//!
//! The server is the one whose `pg_config` `PGOPS_PG_CONFIG` names (default Debian's
//! PostgreSQL 15); `scripts/test` runs the suite once per major (15, 16, 17, 18).
//! Prerequisites (installed by `.ci/install`, the extension by `scripts/test`): that server
//! with pgops installed into it, `s3s-fs` on PATH, and the barman[cloud] venv.

use pgops_core::pipeline::Compression;
use pgops_core::repository::RepositoryUrl;
use pgops_core::store::{Repository, S3Options};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod cnpg;

pub use pgops_testkit::{free_port, wait_for, Fault, FaultProxy, S3sFs};

pub const ACCESS_KEY: &str = "pgops-test-key";
pub const SECRET_KEY: &str = "pgops-test-secret";
pub const BUCKET: &str = "backups";

fn pg_config(option: &str) -> String {
    let pg_config = std::env::var("PGOPS_PG_CONFIG").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into());
    let out =
        Command::new(&pg_config).arg(option).output().unwrap_or_else(|e| panic!("{pg_config}: {e}; run .ci/install"));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The bin directory of the PostgreSQL the tests run (`PGOPS_PG_CONFIG`'s).
pub fn pg_bindir() -> PathBuf {
    PathBuf::from(pg_config("--bindir"))
}

/// The major version of the server under test (15, 16, 17, 18): where PostgreSQL's
/// behaviour differs, tests assert each major's.
pub fn server_major() -> u32 {
    let version = pg_config("--version");
    let number = version.strip_prefix("PostgreSQL ").unwrap_or_else(|| panic!("pg_config --version: {version}"));
    number.split(['.', ' ']).next().and_then(|major| major.parse().ok()).unwrap_or_else(|| panic!("{version}"))
}

/// A copy of the server under test without pgops in it, in `dir/server`: binaries copied
/// (Postgres finds its libraries and share files relative to its own executable), every
/// other file linked, pgops' library and extension files left out. Returns its `bin`.
pub fn server_without_pgops(dir: &Path) -> PathBuf {
    fn link_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("pgops") {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                link_tree(&entry.path(), &to.join(&name));
            } else {
                std::os::unix::fs::symlink(entry.path(), to.join(&name)).unwrap();
            }
        }
    }
    let root = dir.join("server");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for entry in std::fs::read_dir(pg_bindir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), bin.join(entry.file_name())).unwrap();
    }
    link_tree(Path::new(&pg_config("--pkglibdir")), &root.join("lib"));
    link_tree(Path::new(&pg_config("--sharedir")), &root.join("share"));
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

pub fn barman_bin(tool: &str) -> PathBuf {
    let venv = std::env::var("PGOPS_BARMAN_VENV").unwrap_or_else(|_| "/opt/pgops/barman-venv".into());
    let path = Path::new(&venv).join("bin").join(tool);
    assert!(path.exists(), "{} is missing; run .ci/install", path.display());
    path
}

/// The workspace's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The `pgops` command-line tool of this workspace (`cargo build -p pgops-cli`).
pub fn pgops_cli() -> PathBuf {
    let path = target_dir().join("debug/pgops");
    assert!(path.exists(), "{} is missing: run cargo build -p pgops-cli (scripts/test does)", path.display());
    path
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the `postgres` user when the tests run as root (Postgres refuses root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A scratch directory the `postgres` user can write in; removed at drop.
pub fn scratch_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("pgops-e2e-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// An `s3s-fs` process serving `root` on a loopback port, with what the tests need of it.
pub struct S3Server {
    process: S3sFs,
    pub port: u16,
    pub root: PathBuf,
}

impl S3Server {
    /// Starts the server with one empty bucket, [`BUCKET`].
    pub fn start(dir: &Path) -> S3Server {
        let process = S3sFs::start(dir, BUCKET, ACCESS_KEY, SECRET_KEY);
        S3Server { port: process.port, root: process.root.clone(), process }
    }

    pub fn endpoint(&self) -> String {
        self.process.endpoint()
    }

    /// Stops the process (the data stays).
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Starts the process again on the same port and data.
    pub fn resume(&mut self) {
        self.process.resume();
    }

    /// Freezes the server process (SIGSTOP): connections are still accepted by the kernel
    /// and never answered, as with a hung store.
    pub fn freeze(&self) {
        self.process.freeze();
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.process.thaw();
    }

    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint()),
            region: "us-east-1".into(),
            credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
            sse: None,
        }
    }

    /// postgresql.conf lines pointing pgops at `s3://backups/<prefix>` on this server.
    pub fn pgops_settings(&self, prefix: &str) -> String {
        format!(
            "pgops.repository = 's3://{BUCKET}/{prefix}'\npgops.s3_endpoint = '{}'\npgops.s3_access_key_id = '{ACCESS_KEY}'\npgops.s3_secret_access_key = '{SECRET_KEY}'\n",
            self.endpoint()
        )
    }

    /// A client for `s3://backups/<prefix>`, over HTTP like any other.
    pub fn repository(&self, prefix: &str) -> Repository {
        let url: RepositoryUrl = format!("s3://{BUCKET}/{prefix}").parse().unwrap();
        block_on(Repository::open(&url, &self.options()))
    }

    /// The `pgops` CLI pointed at `repository` on this server, with its credentials.
    pub fn pgops(&self, repository: &str) -> Command {
        let mut pgops = Command::new(pgops_cli());
        pgops.args(["--repository", repository, "--s3-endpoint", &self.endpoint()]);
        pgops.env("AWS_ACCESS_KEY_ID", ACCESS_KEY).env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
        pgops
    }

    /// Environment for the Barman Cloud tools (boto3) to reach this server.
    pub fn barman_env(&self, cmd: &mut Command) {
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1");
    }
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// Reads a repository object and decompresses it by its suffix, as a restore would.
pub fn fetch_decompressed(repo: &Repository, relative: &str) -> Option<Vec<u8>> {
    let (_, codec) = Compression::split_file_name(relative);
    let content = block_on(repo.read_object(&repo.key(relative), codec, pgops_core::store::WHOLE_GET_LIMIT))
        .unwrap_or_else(|e| panic!("{relative} does not read back: {e}"))?;
    Some(content.to_vec())
}

pub const ARCHIVING: &str = "archive_mode = on\narchive_library = 'pgops'\n";

/// A cluster archiving with pgops to `s3://backups/<prefix>` on `s3`, started.
pub fn archiving_cluster(dir: &Path, name: &str, s3: &S3Server, prefix: &str) -> PgCluster {
    let pg = PgCluster::init(dir, name);
    pg.configure(ARCHIVING);
    pg.configure(&s3.pgops_settings(prefix));
    pg.start();
    pg
}

/// An archiving cluster named `primary` with the extension created and `conf` added, ready
/// for `pgops.backup_now()`.
pub fn backing_up_cluster(dir: &Path, s3: &S3Server, prefix: &str, conf: &str) -> PgCluster {
    backing_up_cluster_with(dir, &s3.pgops_settings(prefix), conf)
}

/// [`backing_up_cluster`], reaching `s3` through `proxy`.
pub fn proxied_backing_up_cluster(
    dir: &Path,
    s3: &S3Server,
    proxy: &FaultProxy,
    prefix: &str,
    conf: &str,
) -> PgCluster {
    backing_up_cluster_with(dir, &s3.pgops_settings(prefix).replace(&s3.endpoint(), &proxy.endpoint()), conf)
}

fn backing_up_cluster_with(dir: &Path, pgops_settings: &str, conf: &str) -> PgCluster {
    let pg = PgCluster::init(dir, "primary");
    pg.configure(ARCHIVING);
    pg.configure(pgops_settings);
    pg.configure(conf);
    pg.start();
    pg.execute("CREATE EXTENSION pgops");
    pg
}

/// A cluster named `main` with pgops' repository settings and the extension, not archiving.
pub fn pgops_cluster(dir: &Path, s3: &S3Server, prefix: &str) -> PgCluster {
    let pg = PgCluster::init(dir, "main");
    pg.configure(&s3.pgops_settings(prefix));
    pg.start();
    pg.execute("CREATE EXTENSION pgops");
    pg
}

/// Hands a directory a test wrote (as root) to the `postgres` user.
pub fn give_to_postgres(path: &Path) {
    let mut chown = Command::new("chown");
    chown.args(["-R", "postgres"]).arg(path);
    run(chown);
}

/// A PostgreSQL cluster in a scratch directory, run as `postgres`.
pub struct PgCluster {
    pub data: PathBuf,
    pub port: u16,
    socket_dir: PathBuf,
    bindir: PathBuf,
}

impl PgCluster {
    /// initdb a new cluster in `dir/name`, with pgops preloaded and WAL kept around so
    /// that tests can compare archived segments with the originals.
    pub fn init(dir: &Path, name: &str) -> PgCluster {
        PgCluster::init_using(dir, name, &pg_bindir())
    }

    /// As [`PgCluster::init`], with the server installed in `bindir`.
    pub fn init_using(dir: &Path, name: &str, bindir: &Path) -> PgCluster {
        PgCluster::init_with(dir, name, bindir, &[])
    }

    /// As [`PgCluster::init_using`], with `initdb_args` (`--wal-segsize=1024`) given to initdb.
    pub fn init_with(dir: &Path, name: &str, bindir: &Path, initdb_args: &[&str]) -> PgCluster {
        let cluster = PgCluster::at_using(dir, name, bindir);
        let mut initdb = as_postgres(&cluster.bindir.join("initdb"));
        initdb.args(initdb_args);
        initdb.args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"]).arg(&cluster.data);
        run(initdb);
        cluster.configure(&format!(
            "port = {}\nunix_socket_directories = '{}'\nlisten_addresses = ''\nshared_preload_libraries = 'pgops'\n\
             wal_keep_size = '1GB'\ncheckpoint_timeout = '1h'\nmax_wal_size = '4GB'\nfsync = off\n",
            cluster.port,
            cluster.socket_dir.display()
        ));
        cluster
    }

    /// A cluster whose data directory is (or will be) `dir/name`, not yet created.
    pub fn at(dir: &Path, name: &str) -> PgCluster {
        PgCluster::at_using(dir, name, &pg_bindir())
    }

    /// As [`PgCluster::at`], with the server installed in `bindir`.
    pub fn at_using(dir: &Path, name: &str, bindir: &Path) -> PgCluster {
        let socket_dir = dir.join(format!("{name}-socket"));
        std::fs::create_dir_all(&socket_dir).unwrap();
        std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        PgCluster { data: dir.join(name), port: free_port(), socket_dir, bindir: bindir.to_owned() }
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn bin(&self, tool: &str) -> PathBuf {
        self.bindir.join(tool)
    }

    /// A command running a Postgres tool as `postgres`.
    pub fn tool(&self, tool: &str) -> Command {
        as_postgres(&self.bin(tool))
    }

    /// Appends settings to postgresql.conf (later lines win).
    pub fn configure(&self, lines: &str) {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new().append(true).open(self.data.join("postgresql.conf")).unwrap();
        writeln!(conf, "{lines}").unwrap();
    }

    /// Points this cluster's port and socket at its own (after pg_basebackup copied another
    /// cluster's postgresql.conf).
    pub fn take_over_config(&self) {
        self.configure(&format!("port = {}\nunix_socket_directories = '{}'\n", self.port, self.socket_dir.display()));
    }

    pub fn log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn start(&self) {
        self.start_with_env(&[]);
    }

    /// Starts the server with extra environment variables (seen by archive_command and
    /// restore_command).
    pub fn start_with_env(&self, env: &[(&str, &str)]) {
        let mut pg_ctl = self.tool("pg_ctl");
        pg_ctl.envs(env.iter().copied());
        pg_ctl.args(["start", "-w", "-t", "60", "-D"]).arg(&self.data).arg("-l").arg(self.log_path());
        let out = pg_ctl.output().unwrap();
        assert!(out.status.success(), "pg_ctl start failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
    }

    /// Starts the server without waiting for it to accept connections (a recovery that
    /// cannot go on yet).
    pub fn start_in_background(&self) {
        let mut pg_ctl = self.tool("pg_ctl");
        pg_ctl.args(["start", "-W", "-D"]).arg(&self.data).arg("-l").arg(self.log_path());
        let out = pg_ctl.output().unwrap();
        assert!(out.status.success(), "pg_ctl start failed:\n{}\n{}", String::from_utf8_lossy(&out.stderr), self.log());
    }

    /// Starts a restored cluster with the S3 credentials its restore_command needs, and
    /// waits until recovery has ended.
    pub fn recover(&self) {
        self.start_with_env(&[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]);
        let start = Instant::now();
        while self.query_text("SELECT pg_is_in_recovery()") != "f" {
            assert!(start.elapsed() < Duration::from_secs(120), "recovery did not end within 120 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn stop(&self) {
        let mut pg_ctl = self.tool("pg_ctl");
        pg_ctl.args(["stop", "-w", "-m", "fast", "-D"]).arg(&self.data).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = pg_ctl.status();
    }

    pub fn connstr(&self) -> String {
        format!("host={} port={} user=postgres dbname=postgres", self.socket_dir.display(), self.port)
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.connstr(), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.log()))
    }

    /// The first column of the first row, as text.
    pub fn query_text(&self, sql: &str) -> String {
        let rows = self.client().simple_query(sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        rows.iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("").to_string()),
                _ => None,
            })
            .unwrap_or_default()
    }

    pub fn execute(&self, sql: &str) {
        self.client().batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// A session as `user` in `dbname` over the Unix socket (trusted).
    pub fn client_as(&self, user: &str, dbname: &str) -> postgres::Client {
        let mut config = postgres::Config::new();
        config.host_path(&self.socket_dir).port(self.port).user(user).dbname(dbname);
        config.connect(postgres::NoTls).unwrap_or_else(|e| panic!("connect as {user}: {e}\n{}", self.log()))
    }

    /// Accepts TCP connections on 127.0.0.1 that must prove a password with SCRAM-SHA-256
    /// (the Unix socket stays trusted); takes effect at the next start.
    pub fn require_scram_over_tcp(&self) {
        self.configure("listen_addresses = '127.0.0.1'\npassword_encryption = 'scram-sha-256'");
        let hba = self.data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(&hba, format!("host all all 127.0.0.1/32 scram-sha-256\n{rules}")).unwrap();
    }

    /// A TCP login with a password, as an application would make it.
    pub fn tcp_login(&self, user: &str, password: &str, dbname: &str) -> Result<postgres::Client, postgres::Error> {
        let mut config = postgres::Config::new();
        config.host("127.0.0.1").port(self.port).user(user).password(password).dbname(dbname);
        config.channel_binding(postgres::config::ChannelBinding::Disable);
        config.connect(postgres::NoTls)
    }

    pub fn system_identifier(&self) -> String {
        self.query_text("SELECT system_identifier FROM pg_control_system()")
    }

    /// `(archived_count, failed_count)` from pg_stat_archiver.
    pub fn archiver_counts(&self) -> (i64, i64) {
        let row = self.client().query_one("SELECT archived_count, failed_count FROM pg_stat_archiver", &[]).unwrap();
        (row.get(0), row.get(1))
    }

    /// Writes some rows and switches to a new WAL segment; returns the name of the segment
    /// that was completed.
    pub fn write_and_switch(&self) -> String {
        self.execute("CREATE TABLE IF NOT EXISTS e2e_data(id serial, payload text); INSERT INTO e2e_data(payload) SELECT md5(g::text) FROM generate_series(1, 20000) g;");
        self.query_text("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// Creates an empty file in the data directory, owned by `postgres`.
    pub fn touch(&self, name: &str) {
        let mut touch = as_postgres(Path::new("/usr/bin/touch"));
        touch.arg(self.data.join(name));
        run(touch);
    }

    pub fn pg_wal(&self) -> PathBuf {
        self.data.join("pg_wal")
    }

    /// WAL files with a `.ready` (waiting) or `.done` (archived) status file.
    pub fn wal_with_status(&self, status: &str) -> Vec<String> {
        let suffix = format!(".{status}");
        let mut names: Vec<String> = std::fs::read_dir(self.pg_wal().join("archive_status"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(&suffix).map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// Waits until Postgres has archived `name` (its status file says `.done`).
    pub fn wait_archived(&self, name: &str) {
        let done = self.pg_wal().join("archive_status").join(format!("{name}.done"));
        wait_for(&format!("{name} to be archived"), Duration::from_secs(120), || done.exists());
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let mut pg_ctl = self.tool("pg_ctl");
            pg_ctl.args(["stop", "-m", "immediate", "-D"]).arg(&self.data).stdout(Stdio::null()).stderr(Stdio::null());
            let _ = pg_ctl.status();
        }
    }
}

impl PgCluster {
    /// A cluster as `initdb --waldir=<waldir>` lays it out: its WAL in `waldir`, outside the
    /// data directory, and `pg_wal` a symbolic link to it. Made by moving the WAL directory
    /// of [`PgCluster::init`]'s cluster (so it has the same settings), as `postgres`.
    pub fn init_with_waldir(dir: &Path, name: &str, waldir: &Path) -> PgCluster {
        let cluster = PgCluster::init(dir, name);
        let mut mv = as_postgres(Path::new("/bin/mv"));
        mv.arg(cluster.pg_wal()).arg(waldir);
        run(mv);
        let mut ln = as_postgres(Path::new("/bin/ln"));
        ln.arg("-s").arg(waldir).arg(cluster.pg_wal());
        run(ln);
        cluster
    }
}

impl PgCluster {
    /// A tablespace `name` in a new directory `dir/<name>-disk` holding a table `table` of
    /// 1000 rows; returns the location, the tablespace's OID and the table's file path.
    pub fn tablespace_with_rows(&self, dir: &Path, name: &str, table: &str) -> (PathBuf, String, String) {
        let location = dir.join(format!("{name}-disk"));
        std::fs::create_dir(&location).unwrap();
        give_to_postgres(&location);
        self.execute(&format!("CREATE TABLESPACE {name} LOCATION '{}'", location.display()));
        self.execute(&format!(
            "CREATE TABLE {table}(id int) TABLESPACE {name}; INSERT INTO {table} SELECT generate_series(1, 1000)"
        ));
        let oid = self.query_text(&format!("SELECT oid FROM pg_tablespace WHERE spcname = '{name}'"));
        let file = self.query_text(&format!("SELECT pg_relation_filepath('{table}')"));
        (location, oid, file)
    }
}

/// Every file below `dir` (recursively, links not followed) with its size and modification
/// time: a listing to compare before and after something that must not touch `dir`.
pub fn tree_listing(dir: &Path) -> std::collections::BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut listing = std::collections::BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap_or_else(|e| panic!("{}: {e}", current.display())) {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            }
            listing.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
        }
    }
    listing
}

/// Notices (and warnings) a session received, in order.
pub type Notices = std::sync::Arc<std::sync::Mutex<Vec<postgres::error::DbError>>>;

/// A session to `pg` that keeps every NOTICE the server sends it, as they arrive.
pub fn client_keeping_notices(pg: &PgCluster) -> (postgres::Client, Notices) {
    let notices = Notices::default();
    let kept = notices.clone();
    let mut config: postgres::Config = pg.connstr().parse().unwrap();
    config.notice_callback(move |notice| kept.lock().unwrap().push(notice));
    let client = config.connect(postgres::NoTls).unwrap_or_else(|e| panic!("connect: {e}\n{}", pg.log()));
    (client, notices)
}

/// Runs `pgops restore --pgdata <clone> <args>` of `s3://backups/<prefix>` and prepares the
/// directory to run beside the original: owned by `postgres`, its own port and socket.
pub fn restore_clone(s3: &S3Server, prefix: &str, clone: &PgCluster, args: &[&str]) {
    let mut restore = s3.pgops(&format!("s3://{BUCKET}/{prefix}"));
    restore.args(["restore", "--pgdata"]).arg(&clone.data).args(args);
    run(restore);
    give_to_postgres(&clone.data);
    clone.take_over_config();
}
