//! SCIM push forwarding in the binary: `forward = {...}` on a `[[directories]]` entry (applied
//! idempotently at start) and `idbridge directory forward set|show|delete|reconcile <id>`.
//!
//! ```toml
//! [[directories]]
//! key = "corp-ldap"
//! organization = "acme"
//! name = "Corp LDAP"
//! type = "ldap"
//! # Push every user and group into a WorkOS "Custom SCIM v2.0" directory.
//! forward = { endpoint = "https://api.workos.com/scim/v2.0/<key>", bearer_token_env = "WORKOS_SCIM_TOKEN" }
//! # Options (defaults shown): deprovision = "deactivate" | "delete", allow_insecure_http = false,
//! # concurrency = 8, connect_timeout_ms = 5000, request_timeout_ms = 15000,
//! # custom_attributes_schema = "urn:idbridge:params:scim:schemas:extension:custom_attributes:2.0:User"
//! # ("" sends no custom attributes beyond the enterprise extension).
//! ```
//!
//! The token comes from an environment variable or a file (first line), never from the file
//! itself, and is sealed with the server's secret key before it is stored. Options set here
//! replace what the admin API set, at each start; without `forward` the admin API's target
//! stays as it is.
//!
//! The CLI talks to the RUNNING server's admin API (the store is locked by the server, and a
//! reconcile is most useful while it runs): `--url` (default: the configured public URL) and
//! the API key from `IDBRIDGE_API_KEY`. The token is read from `--bearer-token-env VAR` or
//! `--bearer-token-file PATH`, never from the command line (shell history, `ps`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Subcommand;
use idbridge_directory::DirectoryEngine;
use idbridge_forward::scim_push::{Deprovision, ScimPush, TargetInput, TargetOptions};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Config;

/// `forward = {...}` on a `[[directories]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// The remote SCIM base URL (WorkOS shows it as "Endpoint").
    pub endpoint: String,
    /// The bearer token from this environment variable.
    pub bearer_token_env: Option<String>,
    /// The bearer token from this file (first line; mode 0600 advised).
    pub bearer_token_file: Option<PathBuf>,
    pub deprovision: Option<Deprovision>,
    pub allow_insecure_http: Option<bool>,
    pub concurrency: Option<u16>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    /// An extension URN; `""` sends no custom attributes beyond the enterprise extension.
    pub custom_attributes_schema: Option<String>,
}

impl ForwardConfig {
    /// Checks what can be checked without the environment.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.endpoint.trim().is_empty() {
            return Err(("forward.endpoint", "must not be empty".into()));
        }
        match (&self.bearer_token_env, &self.bearer_token_file) {
            (Some(_), Some(_)) => Err((
                "forward.bearer_token_env",
                "set bearer_token_env or bearer_token_file, not both".into(),
            )),
            (None, None) => Err((
                "forward.bearer_token_env",
                "required: bearer_token_env = \"VAR\" or bearer_token_file = \"/path\" (the \
                 token is never written in the config file)"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    fn options(&self) -> TargetOptions {
        let d = TargetOptions::default();
        TargetOptions {
            deprovision: self.deprovision.unwrap_or(d.deprovision),
            allow_insecure_http: self.allow_insecure_http.unwrap_or(d.allow_insecure_http),
            concurrency: self.concurrency.unwrap_or(d.concurrency),
            connect_timeout_ms: self.connect_timeout_ms.unwrap_or(d.connect_timeout_ms),
            request_timeout_ms: self.request_timeout_ms.unwrap_or(d.request_timeout_ms),
            custom_attributes_schema: match &self.custom_attributes_schema {
                None => d.custom_attributes_schema,
                Some(s) if s.trim().is_empty() => None,
                Some(s) => Some(s.clone()),
            },
        }
    }

    /// The service input, the token read now.
    pub fn input(&self) -> anyhow::Result<TargetInput> {
        Ok(TargetInput {
            endpoint: self.endpoint.clone(),
            bearer_token: read_token(
                self.bearer_token_env.as_deref(),
                self.bearer_token_file.as_ref(),
            )?,
            options: self.options(),
            source: "config".into(),
        })
    }
}

fn read_token(env: Option<&str>, file: Option<&PathBuf>) -> anyhow::Result<String> {
    if let Some(var) = env {
        let t =
            std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?;
        return Ok(t.trim().to_owned());
    }
    if let Some(path) = file {
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("reading the bearer token from {}", path.display()))?;
        return Ok(t.lines().next().unwrap_or_default().trim().to_owned());
    }
    bail!("give the bearer token with --bearer-token-env VAR or --bearer-token-file PATH")
}

/// Applies every `forward = {...}` of the config (blocking; at start, after the declared
/// directories exist).
pub fn apply_declared(
    push: &ScimPush,
    engine: &DirectoryEngine,
    config: &Config,
) -> anyhow::Result<()> {
    for d in &config.directories {
        let Some(f) = &d.forward else { continue };
        let id = engine
            .store()
            .get(crate::directories::DECLARED_TABLE, &d.key)?
            .and_then(|b| String::from_utf8(b).ok())
            .with_context(|| format!("declared directory {:?} was not created", d.key))?;
        let input = f
            .input()
            .with_context(|| format!("directories[{:?}].forward", d.key))?;
        let outcome = push
            .set_target(&id, input)
            .map_err(|e| anyhow::anyhow!("directories[{:?}].forward: {e}", d.key))?;
        tracing::info!(directory_id = %id, key = %d.key, ?outcome, "declared SCIM push target applied");
    }
    Ok(())
}

/// `idbridge directory forward ...`
#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// Set (or replace) the directory's forward target.
    Set {
        /// Directory id.
        id: String,
        /// The remote SCIM base URL.
        #[arg(long)]
        endpoint: String,
        /// Read the bearer token from this environment variable.
        #[arg(long, conflicts_with = "bearer_token_file")]
        bearer_token_env: Option<String>,
        /// Read the bearer token from this file (first line).
        #[arg(long)]
        bearer_token_file: Option<PathBuf>,
        /// `deactivate` (default) or `delete` remote users that leave the directory.
        #[arg(long)]
        deprovision: Option<String>,
        /// Allow `http://` to a non-loopback host.
        #[arg(long)]
        allow_insecure_http: bool,
        /// Objects forwarded at once (1-64).
        #[arg(long)]
        concurrency: Option<u16>,
        #[arg(long)]
        connect_timeout_ms: Option<u64>,
        #[arg(long)]
        request_timeout_ms: Option<u64>,
        /// Extension URN for custom attributes.
        #[arg(long, conflicts_with = "no_custom_attributes")]
        custom_attributes_schema: Option<String>,
        /// Send no custom attributes beyond the enterprise extension.
        #[arg(long)]
        no_custom_attributes: bool,
        /// Wait for the backfill, with a progress bar.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show the target (never the token) and the forwarder's progress.
    Show {
        id: String,
        /// The raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove the target (the remote objects stay).
    Delete {
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Compare the remote's Users and Groups with the directory, print the drift and repair
    /// it (unless --dry-run).
    Reconcile {
        id: String,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Where the running server is.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The server's base URL (default: the configured public URL).
    #[arg(long)]
    url: Option<String>,
    /// An API key of the server.
    #[arg(long, env = "IDBRIDGE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

struct Admin {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Admin {
    fn new(config: &Config, args: &ServerArgs) -> anyhow::Result<Admin> {
        let key = args
            .api_key
            .clone()
            .context("an API key is needed: set IDBRIDGE_API_KEY (or --api-key)")?;
        let base = args
            .url
            .clone()
            .unwrap_or_else(|| config.public_url())
            .trim_end_matches('/')
            .to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Admin { http, base, key })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the idbridge server at {} (is it running? --url)",
                self.base
            )
        })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.context("reading the answer")?;
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, v))
    }

    async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, v) = self.call(method, path, body).await?;
        if (200..300).contains(&status) {
            return Ok(v);
        }
        let errors = v["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|x| {
                        format!(
                            "{} ({})",
                            x["field"].as_str().unwrap_or("?"),
                            x["code"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        bail!(
            "the server answered HTTP {status}: {}{}",
            v["message"].as_str().unwrap_or(&v.to_string()),
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {errors}")
            }
        )
    }
}

fn bar(len: u64, template: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        b.set_style(style);
    }
    b
}

fn print_status(v: &Value) {
    println!("endpoint:     {}", v["endpoint"].as_str().unwrap_or(""));
    println!("state:        {}", v["state"].as_str().unwrap_or(""));
    println!(
        "lag:          {} events, {:.1} s",
        v["lag_events"],
        v["lag_seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "counts:       {} forwarded, {} requests sent, {} failed, {} parked",
        v["forwarded"], v["sent"], v["failed"], v["parked"]
    );
    if let Some(b) = v["backfill"].as_object() {
        println!(
            "backfill:     {} ({:.0}%: users {}/{}, groups {}/{})",
            b["state"].as_str().unwrap_or(""),
            b["percent"].as_f64().unwrap_or(0.0),
            b["users_done"],
            b["users_total"],
            b["groups_done"],
            b["groups_total"]
        );
    }
    println!(
        "options:      deprovision={} concurrency={} timeouts={}/{} ms custom_attributes_schema={}",
        v["deprovision"].as_str().unwrap_or(""),
        v["concurrency"],
        v["connect_timeout_ms"],
        v["request_timeout_ms"],
        v["custom_attributes_schema"].as_str().unwrap_or("(none)")
    );
    if let Some(e) = v["last_error"].as_str() {
        println!(
            "last error:   {e} (at {})",
            v["last_error_at"].as_str().unwrap_or("?")
        );
    }
    for p in v["parked_objects"].as_array().into_iter().flatten() {
        println!(
            "parked:       {} {} ({}): {}",
            p["kind"].as_str().unwrap_or(""),
            p["id"].as_str().unwrap_or(""),
            p["code"].as_str().unwrap_or(""),
            p["reason"].as_str().unwrap_or("")
        );
    }
}

fn print_report(r: &Value) {
    let drift = |d: &Value| {
        format!(
            "missing {}, extra {}, changed {}, unlinked {}, parked {}",
            d["missing"], d["extra"], d["changed"], d["unlinked"], d["parked"]
        )
    };
    println!(
        "compared:     {} local / {} remote users, {} local / {} remote groups",
        r["local_users"], r["remote_users"], r["local_groups"], r["remote_groups"]
    );
    println!("users:        {}", drift(&r["users"]));
    println!("groups:       {}", drift(&r["groups"]));
    println!(
        "memberships:  missing {}, extra {}",
        r["memberships"]["missing"], r["memberships"]["extra"]
    );
    for d in r["details"].as_array().into_iter().flatten() {
        println!("  {}", d.as_str().unwrap_or(""));
    }
    if r["dry_run"] == true {
        println!("dry run: nothing was changed");
    } else {
        println!(
            "repaired:     {} ({} failed)",
            r["repaired"], r["repair_failures"]
        );
    }
}

/// Runs `idbridge directory forward ...`.
pub fn run(config: &Config, command: ForwardCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(config, command))
}

async fn run_async(config: &Config, command: ForwardCommand) -> anyhow::Result<()> {
    match command {
        ForwardCommand::Set {
            id,
            endpoint,
            bearer_token_env,
            bearer_token_file,
            deprovision,
            allow_insecure_http,
            concurrency,
            connect_timeout_ms,
            request_timeout_ms,
            custom_attributes_schema,
            no_custom_attributes,
            wait,
            server,
        } => {
            let admin = Admin::new(config, &server)?;
            let token = read_token(bearer_token_env.as_deref(), bearer_token_file.as_ref())?;
            let mut body = json!({"endpoint": endpoint, "bearer_token": token,
                "allow_insecure_http": allow_insecure_http});
            let fields = [
                ("deprovision", deprovision.map(Value::from)),
                ("concurrency", concurrency.map(Value::from)),
                ("connect_timeout_ms", connect_timeout_ms.map(Value::from)),
                ("request_timeout_ms", request_timeout_ms.map(Value::from)),
                (
                    "custom_attributes_schema",
                    if no_custom_attributes {
                        Some(Value::Null)
                    } else {
                        custom_attributes_schema.map(Value::from)
                    },
                ),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            let path = format!("/admin/directories/{id}/forward");
            let v = admin.ok(reqwest::Method::PUT, &path, Some(body)).await?;
            print_status(&v);
            if wait {
                wait_backfill(&admin, &path).await?;
            }
            Ok(())
        }
        ForwardCommand::Show { id, json, server } => {
            let admin = Admin::new(config, &server)?;
            let v = admin
                .ok(
                    reqwest::Method::GET,
                    &format!("/admin/directories/{id}/forward"),
                    None,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
                if let Some(r) = v["reconcile"]["report"].as_object() {
                    println!("last reconcile:");
                    print_report(&Value::Object(r.clone()));
                }
            }
            Ok(())
        }
        ForwardCommand::Delete { id, server } => {
            let admin = Admin::new(config, &server)?;
            admin
                .ok(
                    reqwest::Method::DELETE,
                    &format!("/admin/directories/{id}/forward"),
                    None,
                )
                .await?;
            println!("deleted the forward target of {id} (the remote objects stay)");
            Ok(())
        }
        ForwardCommand::Reconcile {
            id,
            dry_run,
            server,
        } => {
            let admin = Admin::new(config, &server)?;
            let path = format!("/admin/directories/{id}/forward");
            admin
                .ok(
                    reqwest::Method::POST,
                    &format!("{path}/reconcile"),
                    Some(json!({"dry_run": dry_run})),
                )
                .await?;
            let pb = bar(
                0,
                "{spinner} {msg} [{elapsed_precise}] {wide_bar} {pos}/{len}",
            );
            let report = loop {
                let v = admin.ok(reqwest::Method::GET, &path, None).await?;
                let r = &v["reconcile"];
                match r["state"].as_str() {
                    Some("done") => break r["report"].clone(),
                    Some("running") => {
                        let p = &r["progress"];
                        pb.set_message(p["step"].as_str().unwrap_or("").to_owned());
                        pb.set_length(p["total"].as_u64().unwrap_or(0));
                        pb.set_position(p["done"].as_u64().unwrap_or(0));
                    }
                    Some(s) => pb.set_message(s.to_owned()),
                    None => bail!("the server lost the reconcile (did it restart?); run it again"),
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            };
            pb.finish_and_clear();
            if report["ok"] != true {
                bail!(
                    "reconcile stopped: {}",
                    report["error"].as_str().unwrap_or("unknown error")
                );
            }
            print_report(&report);
            Ok(())
        }
    }
}

async fn wait_backfill(admin: &Admin, path: &str) -> anyhow::Result<()> {
    let pb = bar(
        0,
        "{spinner} backfill [{elapsed_precise}] {wide_bar} {pos}/{len} objects ({per_sec}, {eta})",
    );
    loop {
        let v = admin.ok(reqwest::Method::GET, path, None).await?;
        let b = &v["backfill"];
        match b["state"].as_str() {
            Some("running") => {
                let total = b["users_total"].as_u64().unwrap_or(0)
                    + b["groups_total"].as_u64().unwrap_or(0);
                let done =
                    b["users_done"].as_u64().unwrap_or(0) + b["groups_done"].as_u64().unwrap_or(0);
                pb.set_length(total.max(done));
                pb.set_position(done);
            }
            _ => {
                pb.finish_and_clear();
                println!(
                    "backfill done; following the event log (lag {} events)",
                    v["lag_events"]
                );
                return Ok(());
            }
        }
        if let Some(state) = v["state"].as_str().filter(|s| s.starts_with("stopped")) {
            bail!("the forwarder {state}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(text, Path::new("t.toml"))
    }

    const DIR: &str =
        "[[directories]]\nkey = \"hr\"\norganization = \"acme\"\nname = \"HR\"\ntype = \"sftp\"\n";

    #[test]
    fn forward_parses_with_defaults_and_reads_the_token() {
        let c = parse(&format!(
            "{DIR}forward = {{ endpoint = \"https://scim.example.com/v2\", bearer_token_env = \"FWD_TEST_TOKEN_A\", deprovision = \"delete\", custom_attributes_schema = \"\" }}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let f = c.directories[0].forward.clone().expect("forward");
        let o = f.options();
        assert_eq!(o.deprovision, Deprovision::Delete);
        assert_eq!(o.concurrency, TargetOptions::default().concurrency);
        assert_eq!(o.custom_attributes_schema, None);
        std::env::set_var("FWD_TEST_TOKEN_A", " tok-123 \n");
        let input = f.input().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(input.bearer_token, "tok-123");
        assert_eq!(input.source, "config");
        // From a file: the first line.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("t");
        std::fs::write(&file, "file-token\nignored\n").unwrap_or_else(|e| panic!("{e}"));
        let f2 = ForwardConfig {
            bearer_token_env: None,
            bearer_token_file: Some(file),
            ..f
        };
        assert_eq!(
            f2.input().unwrap_or_else(|e| panic!("{e}")).bearer_token,
            "file-token"
        );
        let missing = ForwardConfig {
            bearer_token_env: Some("FWD_TEST_TOKEN_UNSET".into()),
            bearer_token_file: None,
            ..f2
        };
        let err = missing.input().expect_err("unset variable");
        assert!(
            format!("{err:#}").contains("FWD_TEST_TOKEN_UNSET"),
            "{err:#}"
        );
    }

    #[test]
    fn forward_config_errors_name_the_key() {
        for (body, key) in [
            ("forward = { endpoint = \"https://x/v2\" }", "directories[0].forward.bearer_token_env"),
            (
                "forward = { endpoint = \"https://x/v2\", bearer_token_env = \"A\", bearer_token_file = \"/f\" }",
                "directories[0].forward.bearer_token_env",
            ),
            ("forward = { endpoint = \"\", bearer_token_env = \"A\" }", "directories[0].forward.endpoint"),
            ("forward = { endpoint = \"https://x\", bearer_token_env = \"A\", bearer_token = \"inline\" }", "directories[0].forward"),
            ("forward = { endpoint = \"https://x\", bearer_token_env = \"A\", deprovision = \"nuke\" }", "directories[0].forward.deprovision"),
        ] {
            match parse(&format!("{DIR}{body}\n")) {
                Err(crate::config::ConfigError::Key { key: k, .. }) => {
                    assert!(k.starts_with(key), "{body}: {k}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
