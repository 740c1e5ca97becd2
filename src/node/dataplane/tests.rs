//! The workers on loopback: both directions forwarded from the same buffer,
//! counters, removal, refusals.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use super::*;

fn settings(workers: usize) -> DataPlaneSettings {
    DataPlaneSettings {
        workers,
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        socket_buffer: 1 << 20,
        ..DataPlaneSettings::default()
    }
}

fn endpoint() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    s
}

/// Sends `payload` from `from` to `via` until `to` receives it (the worker
/// applies an install asynchronously), within two seconds.
fn deliver(from: &UdpSocket, via: SocketAddr, to: &UdpSocket, payload: &[u8]) -> Option<SocketAddr> {
    let end = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        from.send_to(payload, via).unwrap();
        if let Ok((n, src)) = to.recv_from(&mut buf)
            && buf[..n] == *payload
        {
            return Some(src);
        }
    }
    None
}

#[test]
fn forwards_both_directions_and_counts() {
    let mut dp = DataPlane::start(&settings(2)).unwrap();
    assert_eq!(dp.sockets().len(), 2);
    let (a, b) = (endpoint(), endpoint());
    let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let info = dp.install(aa, ba, Action::Forward).unwrap().clone();
    let payload = [0x80u8; 172];
    assert_eq!(deliver(&a, info.via, &b, &payload), Some(info.via), "A to B, sent from the worker socket");
    assert_eq!(deliver(&b, info.via, &a, &payload[..100]), Some(info.via), "B to A");
    // The worker counts a datagram once `sendmmsg` returns, which may be
    // just after the receiver has it.
    let counters = || dp.entries().next().unwrap().counters();
    let end = Instant::now() + Duration::from_secs(2);
    while (counters().a_to_b.packets == 0 || counters().b_to_a.packets == 0) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    let c = counters();
    assert!(c.a_to_b.packets >= 1 && c.b_to_a.packets >= 1, "{c:?}");
    assert_eq!(c.a_to_b.bytes, 172 * c.a_to_b.packets);
    assert_eq!(c.b_to_a.bytes, 100 * c.b_to_a.packets);
    assert_eq!(c.drops, 0);
    assert_eq!(dp.totals().forwarded, c.a_to_b.packets + c.b_to_a.packets);

    // A stranger's datagrams are counted and not forwarded.
    let stranger = endpoint();
    stranger.send_to(b"hello", info.via).unwrap();
    let end = Instant::now() + Duration::from_secs(2);
    while dp.totals().unmatched == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(dp.totals().unmatched, 1);

    // Removed: nothing more arrives.
    let removed = dp.remove(info.id).unwrap();
    assert_eq!(removed.id, info.id);
    assert!(dp.is_empty());
    let unmatched = dp.totals().unmatched;
    let end = Instant::now() + Duration::from_secs(2);
    while dp.totals().unmatched == unmatched && Instant::now() < end {
        a.send_to(&payload, info.via).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(dp.totals().unmatched > unmatched, "datagrams of a removed entry are unmatched");
    let mut buf = [0u8; 512];
    while b.recv_from(&mut buf).is_ok() {} // what was forwarded before the removal took effect
    a.send_to(&payload, info.via).unwrap();
    assert!(b.recv_from(&mut buf).is_err(), "forwarded after removal");
    assert_eq!(dp.remove(info.id).unwrap_err(), DataPlaneError::NoEntry(info.id));
}

#[test]
fn entries_spread_over_workers() {
    let mut dp = DataPlane::start(&settings(2)).unwrap();
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let w1 = dp.install(addr(10_001), addr(10_002), Action::Forward).unwrap().worker;
    let w2 = dp.install(addr(10_003), addr(10_004), Action::Forward).unwrap().worker;
    assert_ne!(w1, w2);
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let mut dp = DataPlane::start(&DataPlaneSettings { max_entries: 2, ..settings(1) }).unwrap();
    let own = dp.sockets()[0];
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let (x, y, z, w) = (addr(20_001), addr(20_002), addr(20_003), addr(20_004));
    let err = |dp: &mut DataPlane, a, b| dp.install(a, b, Action::Forward).unwrap_err();
    assert_eq!(err(&mut dp, x, own), DataPlaneError::Loop(own));
    assert_eq!(err(&mut dp, own, x), DataPlaneError::Loop(own));
    assert_eq!(err(&mut dp, x, x), DataPlaneError::SameAddress(x));
    let zero: SocketAddr = "0.0.0.0:5".parse().unwrap();
    assert_eq!(err(&mut dp, x, zero), DataPlaneError::BadAddress(zero));
    assert_eq!(err(&mut dp, addr(0), x), DataPlaneError::BadAddress(addr(0)));
    let v6: SocketAddr = "[::1]:5".parse().unwrap();
    assert_eq!(err(&mut dp, x, v6), DataPlaneError::Family(v6));
    let id = dp.install(x, y, Action::Forward).unwrap().id;
    assert_eq!(err(&mut dp, z, y), DataPlaneError::InUse { addr: y, id });
    dp.install(z, w, Action::Forward).unwrap();
    assert_eq!(err(&mut dp, addr(20_005), addr(20_006)), DataPlaneError::Full(2));
    assert_eq!(
        DataPlaneError::Loop(own).to_string(),
        format!("{own} is this node's data-plane socket: forwarding there would loop")
    );
    dp.remove(id).unwrap();
    dp.install(y, addr(20_005), Action::Forward).unwrap();
}

#[test]
fn a_disabled_data_plane_refuses_installs() {
    let mut dp = DataPlane::start(&DataPlaneSettings { enabled: false, ..settings(1) }).unwrap();
    let x: SocketAddr = "127.0.0.1:20001".parse().unwrap();
    let y: SocketAddr = "127.0.0.1:20002".parse().unwrap();
    assert_eq!(dp.install(x, y, Action::Forward).unwrap_err(), DataPlaneError::Disabled);
    assert!(dp.sockets().is_empty());
}

#[test]
fn requests_round_trip_as_json() {
    let r = ForwardRequest::Add { from: "127.0.0.1:1".parse().unwrap(), to: "127.0.0.1:2".parse().unwrap() };
    let text = serde_json::to_string(&r).unwrap();
    assert_eq!(text, r#"{"forward":"add","from":"127.0.0.1:1","to":"127.0.0.1:2"}"#);
    assert_eq!(serde_json::from_str::<ForwardRequest>(&text).unwrap(), r);
}

#[test]
fn a_wildcard_socket_is_reached_through_any_local_address() {
    let settings = DataPlaneSettings { workers: 1, socket_buffer: 1 << 16, ..DataPlaneSettings::default() };
    let mut dp = DataPlane::start(&settings).unwrap();
    let port = dp.sockets()[0].port();
    let own = SocketAddr::from(([127, 0, 0, 1], port));
    let x: SocketAddr = "127.0.0.1:20001".parse().unwrap();
    assert_eq!(dp.install(x, own, Action::Forward).unwrap_err(), DataPlaneError::Loop(own));
    // The same port on another host is not us.
    let remote = SocketAddr::from(([192, 0, 2, 1], port));
    assert!(dp.install(x, remote, Action::Forward).is_ok());
}

#[test]
fn a_full_command_queue_refuses_and_a_stopped_worker_is_reported() {
    let (commands, rx) = std::sync::mpsc::sync_channel(1);
    let handle = WorkerHandle {
        local: "127.0.0.1:9".parse().unwrap(),
        commands,
        wake: Arc::new(Wake::new().unwrap()),
        stats: Arc::default(),
        thread: None,
        entries: 0,
    };
    send(&handle, 3, Command::Remove { id: 1 }).unwrap();
    assert_eq!(send(&handle, 3, Command::Remove { id: 2 }).unwrap_err(), DataPlaneError::QueueFull(3));
    assert_eq!(
        DataPlaneError::QueueFull(3).to_string(),
        "worker 3's command queue is full ([dataplane] queue_depth); retry"
    );
    drop(rx);
    assert_eq!(send(&handle, 3, Command::Remove { id: 3 }).unwrap_err(), DataPlaneError::WorkerGone(3));
}
