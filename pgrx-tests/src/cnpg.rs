//! CloudNativePG played by the tests: the pgops plugin's sidecar (`pgops cnpg instance`)
//! beside a real Postgres, and the `archive_command` / `restore_command` lines that call it
//! through `cnpg-manager` (this crate's stand-in for CNPG's `manager wal-archive` and
//! `manager wal-restore`).

use crate::{as_postgres, pgops_cli, target_dir, wait_for, PgCluster, ACCESS_KEY, BUCKET, SECRET_KEY};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

/// The test stand-in for CNPG's instance manager.
pub fn cnpg_manager() -> PathBuf {
    let path = target_dir().join("debug/cnpg-manager");
    assert!(path.exists(), "{} is missing: cargo test -p pgops-e2e builds it", path.display());
    path
}

/// A Cluster definition as CNPG sends it: `name`, its pgops.io plugin entry with
/// `parameters`, and `extra` merged over `spec` (bootstrap, externalClusters...).
pub fn cluster(
    name: &str,
    parameters: serde_json::Value,
    spec: serde_json::Value,
    status: serde_json::Value,
) -> serde_json::Value {
    let mut cluster = serde_json::json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"instances": 1, "plugins": [{"name": "pgops.io", "isWALArchiver": true, "parameters": parameters}]},
        "status": status,
    });
    for (key, value) in spec.as_object().cloned().unwrap_or_default() {
        cluster["spec"][key] = value;
    }
    cluster
}

/// The plugin parameters reaching `s3://backups/<prefix>` through `endpoint`, credentials
/// from a file written in `dir` (a mounted Secret).
pub fn parameters(dir: &Path, endpoint: &str, prefix: &str) -> serde_json::Value {
    let credentials = dir.join("cnpg-credentials");
    std::fs::write(
        &credentials,
        format!("[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
    )
    .unwrap();
    crate::give_to_postgres(&credentials);
    serde_json::json!({
        "repository": format!("s3://{BUCKET}/{prefix}"),
        "endpoint": endpoint,
        "credentialsFile": credentials.display().to_string(),
    })
}

/// A running `pgops cnpg instance` sidecar for the data directory of `pg`, with its
/// socket in its own plugin directory; stopped (SIGTERM) at drop.
pub struct Sidecar {
    role: &'static str,
    child: Option<Child>,
    pub plugin_path: PathBuf,
    pub log: PathBuf,
    /// The Cluster definition `cnpg-manager` sends, in a file Postgres' commands read.
    pub cluster_file: PathBuf,
    /// `--waldir`: where the recovery Job's restore puts pg_wal for a Cluster with
    /// walStorage (CNPG's WAL volume).
    pub waldir: PathBuf,
    pgdata: PathBuf,
    /// Where the sidecar's libpq session goes (CNPG's is `/controller/run`, port 5432).
    pghost: PathBuf,
    pgport: u16,
}

impl Sidecar {
    /// The sidecar of an instance pod (`pgops cnpg instance`).
    pub fn start(dir: &Path, name: &str, pg: &PgCluster, cluster: &serde_json::Value, pod_name: &str) -> Sidecar {
        Sidecar::start_as("instance", dir, name, pg, cluster, pod_name)
    }

    /// `role` is `instance`, or `restore` for the recovery Job's sidecar.
    pub fn start_as(
        role: &'static str,
        dir: &Path,
        name: &str,
        pg: &PgCluster,
        cluster: &serde_json::Value,
        pod_name: &str,
    ) -> Sidecar {
        let plugin_path = dir.join(format!("{name}-plugins"));
        std::fs::create_dir_all(&plugin_path).unwrap();
        crate::give_to_postgres(&plugin_path);
        let wal_volume = dir.join(format!("{name}-wal"));
        std::fs::create_dir_all(&wal_volume).unwrap();
        crate::give_to_postgres(&wal_volume);
        let cluster_file = dir.join(format!("{name}-cluster.json"));
        let mut sidecar = Sidecar {
            role,
            child: None,
            plugin_path,
            log: dir.join(format!("{name}-sidecar.log")),
            cluster_file,
            waldir: wal_volume.join("pg_wal"),
            pgdata: pg.data.clone(),
            pghost: pg.socket_dir().to_path_buf(),
            pgport: pg.port,
        };
        sidecar.set_cluster(cluster);
        sidecar.resume(pod_name);
        sidecar
    }

    /// Starts the sidecar process (again), as `postgres`, and waits for its socket.
    pub fn resume(&mut self, pod_name: &str) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut command = as_postgres(&pgops_cli());
        command
            .args(["cnpg", self.role, "--plugin-path"])
            .arg(&self.plugin_path)
            .arg("--waldir")
            .arg(&self.waldir)
            .env("PGDATA", &self.pgdata)
            .env("POD_NAME", pod_name)
            .env("PGHOST", &self.pghost)
            .env("PGPORT", self.pgport.to_string())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let socket = self.plugin_path.join("pgops.io");
        let _ = std::fs::remove_file(&socket);
        self.child = Some(command.spawn().unwrap());
        wait_for("the plugin's socket", Duration::from_secs(20), || socket.exists());
    }

    /// Replaces the Cluster definition the next calls carry.
    pub fn set_cluster(&self, cluster: &serde_json::Value) {
        std::fs::write(&self.cluster_file, serde_json::to_vec_pretty(cluster).unwrap()).unwrap();
        crate::give_to_postgres(&self.cluster_file);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `cnpg-manager <args>` as Postgres would run it for this data directory (the
    /// scratch paths hold no character the shell or postgresql.conf would read).
    fn manager_command(&self, args: &str) -> String {
        format!(
            "PGDATA={} PGOPS_CNPG_CLUSTER={} PLUGIN_SOCKET_DIR={} {} {args}",
            self.pgdata.display(),
            self.cluster_file.display(),
            self.plugin_path.display(),
            cnpg_manager().display()
        )
    }

    /// postgresql.conf lines archiving through this sidecar, as CNPG sets them.
    pub fn archive_settings(&self) -> String {
        format!("archive_mode = on\narchive_command = '{}'\n", self.manager_command("wal-archive %p"))
    }

    /// The restore_command line CNPG writes, through this sidecar.
    pub fn restore_settings(&self) -> String {
        format!("restore_command = '{}'\n", self.manager_command("wal-restore %f %p"))
    }

    /// `config` (a RestoreJobHooks answer) with CNPG's `/controller/manager` replaced by
    /// this test's stand-in, reaching this sidecar.
    pub fn localized(&self, config: &str) -> String {
        config.replace("/controller/manager", &self.manager_command(""))
    }

    /// Runs `cnpg-manager <args>` now, as `postgres`; returns (exit status, stdout, stderr).
    pub fn call(&self, args: &[&str]) -> (i32, String, String) {
        self.call_in_background(args).join().unwrap()
    }

    /// [`Sidecar::call`] on a thread of its own: the caller may stop this sidecar meanwhile.
    pub fn call_in_background(&self, args: &[&str]) -> std::thread::JoinHandle<(i32, String, String)> {
        let mut manager = as_postgres(&cnpg_manager());
        manager
            .args(args)
            .env("PGDATA", &self.pgdata)
            .env("PGOPS_CNPG_CLUSTER", &self.cluster_file)
            .env("PLUGIN_SOCKET_DIR", &self.plugin_path);
        std::thread::spawn(move || {
            let out = manager.output().unwrap();
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
        })
    }

    /// Stops the sidecar (SIGTERM, as Kubernetes does) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child this process started and has not waited for.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.stop();
    }
}
