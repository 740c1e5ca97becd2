use chordphone::sim::{CryptoMode, SimOptions, Simulation};
#[test]
fn dbg() {
    let _ = tracing_subscriber::fmt().with_env_filter("chordphone=debug").with_test_writer().try_init();
    let o = SimOptions { nodes: 2, crypto: CryptoMode::Fast, join_rate: 5.0, ..SimOptions::default() };
    let mut sim = Simulation::new(&o).unwrap();
    let ok = sim.build();
    println!("ok={ok} {:?}\n{:?}", sim.check_ring(), sim.metrics());
    for id in sim.live_ids() { let n = sim.node(id).unwrap(); println!("{id} joined={} succ={:?} links={:?} {:?}", n.is_joined(), n.successors(), n.links(), n.counters()); }
}
