//! The `chordphone` command: a thin CLI over the library.

// The binary does I/O (clock, files, stdin); clippy.toml's lists are for the cores.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::Read;
use std::process::ExitCode;
use std::time::Instant;

use chordphone::cli as nodecli;
use chordphone::sim::{self, SimOptions};
use chordphone::wire::{Message, RawMessage};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chordphone", version, about = "A standards-based peer-to-peer SIP stack (RELOAD / CHORD-RELOAD)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run N overlay peers of the real node machine in virtual time, deterministically.
    Sim(SimOptions),
    /// Decode a RELOAD message (hex on the command line, or raw bytes on stdin) and print it.
    Decode {
        /// The message as hex; read raw bytes from standard input when absent.
        hex: Option<String>,
    },
    /// Create and run an overlay: its CA, configuration document, enrollment server.
    #[command(subcommand)]
    Overlay(nodecli::OverlayCmd),
    /// Issue a node certificate (locally with the overlay CA, or from an enrollment server).
    Enroll(nodecli::EnrollArgs),
    /// Run an overlay peer (or, with --client, a non-routing client).
    Node(nodecli::NodeArgs),
    /// Show a running node's ring, links and records.
    Status(nodecli::StatusArgs),
    /// Store VALUE under NAME (the test kind: NAME must be the node certificate's user name).
    Store(nodecli::StoreArgs),
    /// Fetch the value stored under NAME.
    Fetch(nodecli::FetchArgs),
    /// Which peer is responsible for NAME, and the route a request takes there.
    Lookup(nodecli::LookupArgs),
    /// SIP accounts of a node (registrar users).
    #[command(subcommand)]
    User(nodecli::UserCmd),
    /// Data-plane forwarding entries of a running node (UDP relayed between two addresses).
    #[command(subcommand)]
    Forward(chordphone::cli::forward::ForwardCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `node` logs at info unless RUST_LOG says otherwise; tools stay quiet.
    let default_level = match &cli.command {
        Cmd::Node(_) => "info",
        Cmd::Overlay(nodecli::OverlayCmd::Serve(_)) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Cmd::Sim(opts) => return run_sim(&opts),
        Cmd::Decode { hex } => return decode(hex),
        Cmd::Overlay(cmd) => nodecli::overlay(cmd),
        Cmd::Enroll(args) => nodecli::enroll(args),
        Cmd::Node(args) => nodecli::node(args),
        Cmd::Status(args) => nodecli::status(args),
        Cmd::Store(args) => nodecli::store(args),
        Cmd::Fetch(args) => nodecli::fetch(args),
        Cmd::Lookup(args) => nodecli::lookup(args),
        Cmd::User(cmd) => nodecli::user(cmd),
        Cmd::Forward(cmd) => chordphone::cli::forward::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chordphone: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_sim(opts: &SimOptions) -> ExitCode {
    let started = Instant::now();
    let mut report = sim::run(opts);
    report.wall_s = Some(started.elapsed().as_secs_f64());
    report.peak_rss_mb = peak_rss_mb();
    if opts.json {
        println!("{}", report.summary());
        println!("{}", report.to_json());
    } else {
        println!("{}", report.summary());
    }
    match &report.error {
        Some(e) => {
            eprintln!("chordphone sim: {e}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

fn decode(hex_arg: Option<String>) -> ExitCode {
    let bytes = match hex_arg {
        Some(h) => match hex::decode(h.trim()) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("chordphone decode: the argument is not hex: {e}");
                return ExitCode::from(2);
            }
        },
        None => {
            let mut b = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut b) {
                eprintln!("chordphone decode: cannot read standard input: {e}");
                return ExitCode::from(2);
            }
            b
        }
    };
    match Message::decode(&bytes) {
        Ok(m) => {
            println!("{m:#?}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Say how far we got: a header that parses is still useful.
            match RawMessage::parse(&bytes) {
                Ok(raw) => eprintln!("chordphone decode: header {:#?}\nbody: {e}", raw.header),
                Err(_) => eprintln!("chordphone decode: not a RELOAD message: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Peak resident set size of this process (Linux `VmHWM`).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
