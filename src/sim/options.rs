//! The options of `chordphone sim` (clap-derivable, so the CLI flattens
//! them into its `sim` subcommand; their doc comments are `--help`).

use super::SimError;

/// Options of `chordphone sim`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct SimOptions {
    /// Peers in the ring (kept roughly constant under churn).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub nodes: usize,
    /// Seed of every random choice; the same seed gives the same report.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Simulated seconds of workload and churn, after the ring is built.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub duration: f64,
    /// Joins per simulated second while building the ring.
    #[arg(long, value_name = "PER_S", default_value_t = 50.0)]
    pub join_rate: f64,
    /// Median session length in simulated seconds (exponential sessions);
    /// each departed peer is replaced by a fresh one. No churn if absent.
    #[arg(long, value_name = "SECONDS")]
    pub session_median: Option<f64>,
    /// Fraction of churn departures that Leave gracefully; the rest crash.
    #[arg(long, value_name = "F", default_value_t = 0.5)]
    pub graceful_fraction: f64,
    /// Fraction of live peers crashed at once at `--kill-at` (no Leave).
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub kill_fraction: f64,
    /// Seconds into the workload of the mass failure (default: half of
    /// `--duration`).
    #[arg(long, value_name = "SECONDS")]
    pub kill_at: Option<f64>,
    /// One-way latency per message in milliseconds (±20 % seeded jitter).
    #[arg(long, value_name = "MS", default_value_t = 50.0)]
    pub latency_ms: f64,
    /// Probability that a message is dropped.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub loss: f64,
    /// How long a peer takes to notice a crashed or unreachable neighbor
    /// (link keepalive / retransmission timeout), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub detect_ms: u64,
    /// Records stored during the first quarter of the workload, each by a
    /// different peer under its own user name (CHORDPHONE_TEST kind).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub stores: usize,
    /// Requests per simulated second from random peers: half Lookups of
    /// random Resource-IDs, half Fetches of stored records.
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub lookups_per_s: f64,
    /// Simulated seconds after the workload (no churn, no requests) before
    /// the final checks.
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
    pub quiesce: f64,
    /// Scripted SIP phones, each registered (with digest) at a random ring
    /// member at the start of the workload; 0 runs the overlay without SIP.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub phones: usize,
    /// Calls per simulated second between random registered phones
    /// (INVITE/180/200/ACK, BYE after 5 s).
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub calls_per_s: f64,
    /// MESSAGEs per simulated second between random registered phones.
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub messages_per_s: f64,
    /// Signatures: `real` (Ed25519 certificates from a simulated overlay
    /// CA) or `fast` (a cheap insecure stand-in for very large N).
    #[arg(long, value_enum, default_value_t = CryptoMode::Real)]
    pub crypto: CryptoMode,
    /// Print the report as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: 100,
            seed: 1,
            duration: 60.0,
            join_rate: 50.0,
            session_median: None,
            graceful_fraction: 0.5,
            kill_fraction: 0.0,
            kill_at: None,
            latency_ms: 50.0,
            loss: 0.0,
            detect_ms: 2000,
            stores: 0,
            lookups_per_s: 0.0,
            quiesce: 120.0,
            phones: 0,
            calls_per_s: 0.0,
            messages_per_s: 0.0,
            crypto: CryptoMode::Real,
            json: false,
        }
    }
}

impl SimOptions {
    pub(super) fn validate(&self) -> Result<(), SimError> {
        let bad = |what: &str| Err(SimError::InvalidOption(what.to_owned()));
        let fraction = |v: f64| (0.0..=1.0).contains(&v);
        let nonneg = |v: f64| v.is_finite() && v >= 0.0;
        if self.nodes == 0 || self.nodes > u32::MAX as usize / 2 {
            return bad("--nodes must be at least 1");
        }
        if !(self.join_rate.is_finite() && self.join_rate > 0.0) {
            return bad("--join-rate must be positive");
        }
        if !fraction(self.loss) || !fraction(self.kill_fraction) || !fraction(self.graceful_fraction) {
            return bad("--loss, --kill-fraction and --graceful-fraction must be within [0, 1]");
        }
        if self.session_median.is_some_and(|m| !(m.is_finite() && m > 0.0)) {
            return bad("--session-median must be positive");
        }
        if self.phones > 4_000_000 {
            return bad("--phones must be at most 4,000,000");
        }
        let times = [
            self.duration,
            self.latency_ms,
            self.lookups_per_s,
            self.quiesce,
            self.kill_at.unwrap_or(0.0),
            self.calls_per_s,
            self.messages_per_s,
        ];
        if !times.into_iter().all(nonneg) {
            return bad("times and rates must be non-negative");
        }
        Ok(())
    }
}

/// Where signatures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CryptoMode {
    #[default]
    Real,
    Fast,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: SimOptions,
    }

    #[test]
    fn clap_defaults_match_default() {
        let cli = Cli::try_parse_from(["sim"]).unwrap();
        assert_eq!(cli.opts, SimOptions::default());
        let cli = Cli::try_parse_from([
            "sim",
            "--nodes",
            "7",
            "--crypto",
            "fast",
            "--session-median",
            "300",
            "--kill-fraction",
            "0.5",
            "--kill-at",
            "10",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.opts.nodes, 7);
        assert_eq!(cli.opts.crypto, CryptoMode::Fast);
        assert_eq!(cli.opts.session_median, Some(300.0));
        assert_eq!(cli.opts.kill_at, Some(10.0));
        assert!(cli.opts.json);
    }

    #[test]
    fn invalid_options_are_refused() {
        for o in [
            SimOptions { nodes: 0, ..SimOptions::default() },
            SimOptions { loss: 1.5, ..SimOptions::default() },
            SimOptions { join_rate: 0.0, ..SimOptions::default() },
            SimOptions { session_median: Some(-1.0), ..SimOptions::default() },
            SimOptions { duration: f64::NAN, ..SimOptions::default() },
        ] {
            assert!(matches!(o.validate(), Err(SimError::InvalidOption(_))), "{o:?}");
            assert!(super::super::run(&o).error.is_some());
        }
    }
}
