//! `cairn cert`: the cluster's CA and the certificates of its nodes and
//! operators, made with rcgen (see `cairn_runtime::tls::certs`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use cairn_runtime::tls::Identity;
use cairn_runtime::tls::certs::{self, CA_DAYS, LEAF_DAYS, Validity};
use clap::Subcommand;

/// What `cairn cert` does.
#[derive(Debug, Subcommand)]
pub enum CertAction {
    /// Make the cluster's CA: ca.crt and ca.key (keep ca.key safe; it signs members).
    CreateCa {
        /// The folder for the certificates (created if missing).
        #[arg(long)]
        certs_dir: PathBuf,
    },
    /// Make a node's certificate, node.ID.crt and node.ID.key, whose identity is the node id ID.
    CreateNode {
        /// The node id, as in the config's list of nodes.
        id: String,
        /// The folder holding ca.crt and ca.key.
        #[arg(long)]
        certs_dir: PathBuf,
        /// Host names or IP addresses the node's admin API is reached at,
        /// for tools such as curl (localhost, 127.0.0.1 and ::1 are always in).
        #[arg(long = "host", value_name = "NAME_OR_IP")]
        hosts: Vec<String>,
    },
    /// Make an operator's or tool's certificate, client.NAME.crt and client.NAME.key
    /// (`root` is what the CLI presents by default).
    CreateClient {
        /// The user name.
        name: String,
        /// The folder holding ca.crt and ca.key.
        #[arg(long)]
        certs_dir: PathBuf,
    },
    /// List the certificates in a folder, with what each is and when it expires.
    List {
        /// The folder.
        #[arg(long)]
        certs_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `cairn cert` action.
///
/// # Errors
/// A file exists already, the CA is missing, or a file cannot be written.
pub fn run(action: &CertAction) -> Result<ExitCode> {
    let made = match action {
        CertAction::CreateCa { certs_dir } => certs::create_ca(certs_dir, Validity::days(CA_DAYS))?,
        CertAction::CreateNode {
            id,
            certs_dir,
            hosts,
        } => certs::create_leaf(
            certs_dir,
            &Identity::node(id),
            hosts,
            Validity::days(LEAF_DAYS),
        )?,
        CertAction::CreateClient { name, certs_dir } => certs::create_leaf(
            certs_dir,
            &Identity::client(name),
            &[],
            Validity::days(LEAF_DAYS),
        )?,
        CertAction::List { certs_dir, json } => return list(certs_dir, *json),
    };
    eprintln!("wrote {} and its key (mode 0600)", made.display());
    Ok(ExitCode::SUCCESS)
}

fn list(dir: &std::path::Path, json: bool) -> Result<ExitCode> {
    let all = certs::list(dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        if all.is_empty() {
            bail!(
                "{}: no certificates (make them with `cairn cert create-ca`)",
                dir.display()
            );
        }
        println!(
            "{:<24} {:<7} {:<16} {:<26} key",
            "file", "kind", "name", "expires"
        );
        for c in &all {
            println!(
                "{:<24} {:<7} {:<16} {:<26} {}",
                c.file,
                c.kind,
                c.name,
                if c.expired {
                    format!("{} EXPIRED", c.expires)
                } else {
                    c.expires.clone()
                },
                if c.has_key { "yes" } else { "no" }
            );
        }
    }
    Ok(if all.iter().any(|c| c.expired) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
