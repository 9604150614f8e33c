//! Denial of service by a few sockets: frame headers that announce large bodies and never send
//! them, one address holding the request budget, connection floods and silent connections. Each
//! test starts the real binary, runs the attack, and proves a well-behaved client (a fresh
//! connection sending ApiVersions v0, from the attacking address or another one) is still served
//! within a bound far shorter than the attack's own timeouts.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::thread;
use std::time::{Duration, Instant};

use common::{API_KEY_API_VERSIONS, Broker, frame_v1, parse_api_versions_v0, read_frame};

/// A well-behaved client must be answered within this under attack; the attacks hold their
/// sockets far longer (the broker's request_read_ms_max of 30 s by default).
const SERVED_WITHIN: Duration = Duration::from_secs(5);
/// Time for the broker to read what the attackers sent before the client comes.
const SETTLE: Duration = Duration::from_millis(500);
/// A refused or silent connection must be closed within this.
const CLOSED_WITHIN: Duration = Duration::from_secs(3);
/// Attacker sockets announcing a whole frame and sending two bytes of it.
const HEADER_ATTACKERS: usize = 12;
/// Frames sent at once by `concurrent_large_frames_over_the_budget_all_finish`: the more, the
/// likelier their chunks interleave (which is what wedged the budget before the reserve).
const FRAMES_AT_ONCE: u8 = 8;
/// Bound on reading and answering eight 4 MiB frames (a debug build; far below the 60 s frame
/// deadline the test sets, which a deadlocked budget would run into).
const LARGE_FRAMES_WITHIN: Duration = Duration::from_secs(20);
const MIB: usize = 1024 * 1024;

/// A TCP connection to `addr` from the local address `from` (127.0.0.x: all of 127/8 is local).
fn connect_from(from: Ipv4Addr, addr: &str) -> TcpStream {
    let addr: SocketAddr = addr.parse().unwrap();
    let SocketAddr::V4(to) = addr else {
        panic!("IPv4 only")
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a fresh descriptor, with sockaddr_in structs that outlive them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let local = sockaddr(from, 0);
        let r = libc::bind(fd, (&raw const local).cast(), len);
        assert_eq!(r, 0, "bind {from}: {}", std::io::Error::last_os_error());
        let remote = sockaddr(*to.ip(), to.port());
        let r = libc::connect(fd, (&raw const remote).cast(), len);
        assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// ApiVersions v0 from `from`; Ok when answered correctly within [`SERVED_WITHIN`].
fn served_from(from: Ipv4Addr, addr: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s = connect_from(from, addr);
    s.set_read_timeout(Some(SERVED_WITHIN)).unwrap();
    s.set_write_timeout(Some(SERVED_WITHIN)).unwrap();
    let corr = 0x0d05;
    s.write_all(&frame_v1(API_KEY_API_VERSIONS, 0, corr, &[]))
        .map_err(|e| format!("send: {e}"))?;
    let body = read_frame(&mut s).map_err(|e| {
        format!(
            "not served within {SERVED_WITHIN:?} ({:?}): {e}",
            started.elapsed()
        )
    })?;
    let answer = parse_api_versions_v0(&body, corr);
    if answer.error_code != 0 {
        return Err(format!("error code {}", answer.error_code));
    }
    Ok(started.elapsed())
}

/// True when the peer closes `s` (EOF or reset) within [`CLOSED_WITHIN`].
fn closed_promptly(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(CLOSED_WITHIN)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A dozen sockets each announcing a frame of frame_bytes_max and sending two bytes of it: the
/// announced bodies add up to three times the node's request budget. Bytes are reserved as they
/// arrive, so a client from the same address is still served at once.
#[test]
fn announced_bodies_hold_no_budget() {
    let broker = Broker::start();
    let frame_bytes_max = 16 * MIB as i32; // the default
    let mut attackers = Vec::new();
    for _ in 0..HEADER_ATTACKERS {
        let mut s = connect_from(LOCAL, &broker.addr());
        let mut bytes = frame_bytes_max.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0, 18]);
        s.write_all(&bytes).unwrap();
        attackers.push(s);
    }
    thread::sleep(SETTLE);
    if let Err(e) = served_from(LOCAL, &broker.addr()) {
        panic!(
            "client stalled by {HEADER_ATTACKERS} frame headers: {e}\n{}",
            broker.log_tail()
        );
    }
    drop(attackers);
}

/// Connections from one address that really send most of their large frames cannot take more
/// than inflight_bytes_per_ip_max: a client from another address still finds budget.
#[test]
fn one_address_cannot_hold_the_whole_request_budget() {
    let broker = Broker::start_with_config(&format!(
        "frame_bytes_max = {f}\ninflight_bytes_max = {n}\ninflight_bytes_per_connection_max = {f}\n\
         inflight_bytes_per_ip_max = {ip}\nmessage_bytes_max = {m}\nrequest_read_ms_max = 60000\n",
        f = 4 * MIB,
        n = 16 * MIB,
        ip = 8 * MIB,
        m = MIB,
    ));
    let addr = broker.addr();
    // Six frames of 4 MiB, 3 MiB of each sent: 18 MiB, more than the node's 16 MiB budget.
    let senders: Vec<_> = (0..6)
        .map(|_| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut s = connect_from(LOCAL, &addr);
                s.set_write_timeout(Some(SERVED_WITHIN)).unwrap();
                let mut bytes = ((4 * MIB) as i32).to_be_bytes().to_vec();
                bytes.resize(4 + 3 * MIB, 0);
                // The broker stops reading once the address's budget is used: a write may time out.
                let _ = s.write_all(&bytes);
                s
            })
        })
        .collect();
    let held: Vec<TcpStream> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    thread::sleep(SETTLE);
    if let Err(e) = served_from(OTHER, &addr) {
        panic!(
            "one address held the request budget: {e}\n{}",
            broker.log_tail()
        );
    }
    drop(held);
}

/// Several whole frames at once, together over the node's budget, are all read and answered:
/// none waits for the node's budget while holding part of its body (frames that did could hold
/// the whole budget between them, and none would finish before request_read_ms_max).
#[test]
fn concurrent_large_frames_over_the_budget_all_finish() {
    let broker = Broker::start_with_config(&format!(
        "frame_bytes_max = {f}\ninflight_bytes_max = {n}\ninflight_bytes_per_ip_max = {n}\n\
         message_bytes_max = {m}\nrequest_read_ms_max = 60000\n",
        f = 4 * MIB,
        n = 8 * MIB,
        m = MIB,
    ));
    let addr = broker.addr();
    // Eight 4 MiB frames from eight addresses: 32 MiB against the node's 8 MiB.
    let senders: Vec<_> = (0..FRAMES_AT_ONCE)
        .map(|i| {
            let addr = addr.clone();
            thread::spawn(move || -> Result<(), String> {
                let mut s = connect_from(Ipv4Addr::new(127, 0, 1, 10 + i), &addr);
                s.set_write_timeout(Some(LARGE_FRAMES_WITHIN)).unwrap();
                s.set_read_timeout(Some(LARGE_FRAMES_WITHIN)).unwrap();
                // ApiVersions v0 padded to a whole 4 MiB frame: the broker must read all of it.
                let empty = frame_v1(API_KEY_API_VERSIONS, 0, 7, &[]).len();
                let frame = frame_v1(API_KEY_API_VERSIONS, 0, 7, &vec![0; 4 * MIB + 4 - empty]);
                s.write_all(&frame).map_err(|e| format!("send: {e}"))?;
                // An answer or a close both mean the whole frame was read.
                let mut byte = [0u8; 1];
                match s.read(&mut byte) {
                    // An answer's first byte (1) or the close (0).
                    Ok(0 | 1) => Ok(()),
                    Ok(n) => Err(format!("read {n} bytes into a 1-byte buffer")),
                    Err(e) => Err(format!("no reaction within {LARGE_FRAMES_WITHIN:?}: {e}")),
                }
            })
        })
        .collect();
    let outcomes: Vec<_> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let stuck: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        stuck.is_empty(),
        "frames stuck waiting for budget: {stuck:?}\n{}",
        broker.log_tail()
    );
}

/// Over connections_per_ip_max, a new connection from that address is closed at once; another
/// address still gets in and is served.
#[test]
fn connections_per_ip_max_refuses_at_once() {
    let broker = Broker::start_with_config("connections_per_ip_max = 4\n");
    let addr = broker.addr();
    // The start-up readiness probe's connection must be gone before the slots are counted.
    thread::sleep(SETTLE);
    let held: Vec<TcpStream> = (0..4).map(|_| connect_from(LOCAL, &addr)).collect();
    thread::sleep(SETTLE);
    let mut over = connect_from(LOCAL, &addr);
    assert!(
        closed_promptly(&mut over),
        "connection over the per-address limit not closed within {CLOSED_WITHIN:?}"
    );
    if let Err(e) = served_from(OTHER, &addr) {
        panic!("another address refused: {e}\n{}", broker.log_tail());
    }
    drop(held);
}

/// With connections_max reached, a new connection is closed at once instead of waiting in the
/// listen backlog.
#[test]
fn connections_max_refuses_at_once() {
    let broker = Broker::start_with_config("connections_max = 3\n");
    let addr = broker.addr();
    thread::sleep(SETTLE);
    let held: Vec<TcpStream> = (0..3).map(|_| connect_from(LOCAL, &addr)).collect();
    thread::sleep(SETTLE);
    let mut over = connect_from(OTHER, &addr);
    assert!(
        closed_promptly(&mut over),
        "connection over connections_max not closed within {CLOSED_WITHIN:?}"
    );
    drop(held);
    thread::sleep(SETTLE);
    if let Err(e) = served_from(OTHER, &addr) {
        panic!(
            "not served once slots were free: {e}\n{}",
            broker.log_tail()
        );
    }
}

/// A connection that never sends a request is closed after connection_first_request_ms_max, long
/// before connection_idle_ms_max.
#[test]
fn silent_connection_is_closed_after_first_request_timeout() {
    let broker = Broker::start_with_config(
        "connection_first_request_ms_max = 300\nconnection_idle_ms_max = 600000\n",
    );
    let mut silent = connect_from(LOCAL, &broker.addr());
    assert!(
        closed_promptly(&mut silent),
        "silent connection not closed within {CLOSED_WITHIN:?}"
    );
    // A client that did send a request keeps its connection past that time.
    let mut talker = connect_from(LOCAL, &broker.addr());
    talker
        .write_all(&frame_v1(API_KEY_API_VERSIONS, 0, 1, &[]))
        .unwrap();
    read_frame(&mut talker).expect("answer");
    thread::sleep(Duration::from_millis(800));
    talker
        .write_all(&frame_v1(API_KEY_API_VERSIONS, 0, 2, &[]))
        .unwrap();
    read_frame(&mut talker).expect("second answer on a connection past the first-request time");
}
