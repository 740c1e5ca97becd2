//! `chordphone forward add/remove/list`: data-plane forwarding entries of
//! a running node, over its local control socket (an operator and
//! benchmark facility; media legs and TURN allocations will install
//! entries themselves).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::node::config::NodePaths;
use crate::node::control::{self, ControlRequest};
use crate::node::dataplane::ForwardRequest;

const DEFAULT_DATA_DIR: &str = "/var/lib/chordphone";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Subcommand, Debug)]
pub enum ForwardCmd {
    /// Forward UDP datagrams between two addresses through the node (both directions).
    Add(AddArgs),
    /// Stop forwarding for entry ID.
    Remove(RemoveArgs),
    /// The entries with their counters, and each worker's totals.
    List(ListArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    #[arg(long, env = "CHORDPHONE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// One side: datagrams from here go to --to.
    #[arg(long)]
    pub from: SocketAddr,
    /// The other side: datagrams from here go to --from.
    #[arg(long)]
    pub to: SocketAddr,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    #[arg(long, env = "CHORDPHONE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    pub id: u64,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(long, env = "CHORDPHONE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub json: bool,
}

/// Runs one `forward` command.
pub fn run(cmd: ForwardCmd) -> anyhow::Result<()> {
    match cmd {
        ForwardCmd::Add(a) => {
            let e = call(&a.data_dir, ForwardRequest::Add { from: a.from, to: a.to })?;
            if a.json {
                println!("{e}");
            } else {
                // "ID via ADDR": both sides send to ADDR.
                println!("{} via {}", at(&e, &["id"]), str_of(at(&e, &["via"])));
            }
        }
        ForwardCmd::Remove(r) => {
            let e = call(&r.data_dir, ForwardRequest::Remove { id: r.id })?;
            println!("removed {}", line(&e));
        }
        ForwardCmd::List(l) => {
            let v = call(&l.data_dir, ForwardRequest::List)?;
            if l.json {
                println!("{v}");
                return Ok(());
            }
            for e in at(&v, &["entries"]).as_array().into_iter().flatten() {
                println!("{}", line(e));
            }
            let t = at(&v, &["totals"]);
            println!(
                "total forwarded {} packets {} bytes, dropped {}, unmatched {}",
                at(t, &["forwarded"]),
                at(t, &["forwarded_bytes"]),
                at(t, &["dropped"]),
                at(t, &["unmatched"])
            );
        }
    }
    Ok(())
}

fn call(data_dir: &Path, req: ForwardRequest) -> anyhow::Result<Value> {
    let socket = NodePaths::new(data_dir).control_socket();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start tokio")?;
    let answer = rt.block_on(control::call(&socket, &ControlRequest::Forward(req), CALL_TIMEOUT))?;
    if answer.ok {
        Ok(answer.result.unwrap_or(Value::Null))
    } else {
        Err(anyhow!(answer.error.unwrap_or_else(|| "the node refused the request".into())))
    }
}

/// `v[k0][k1]…` without indexing (absent keys read as null).
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

fn str_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// `ID FROM <-> TO via ADDR  a->b P pkts B bytes  b->a ...  drops D`.
fn line(e: &Value) -> String {
    let c = at(e, &["counters"]);
    format!(
        "{} {} <-> {} via {}  a->b {} pkts {} bytes  b->a {} pkts {} bytes  drops {}",
        at(e, &["id"]),
        str_of(at(e, &["from"])),
        str_of(at(e, &["to"])),
        str_of(at(e, &["via"])),
        at(c, &["a_to_b", "packets"]),
        at(c, &["a_to_b", "bytes"]),
        at(c, &["b_to_a", "packets"]),
        at(c, &["b_to_a", "bytes"]),
        at(c, &["drops"])
    )
}
