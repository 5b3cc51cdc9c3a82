//! The WAN link emulator: a user-space bridge between two Ethernet interfaces that shapes each
//! direction as a real path would.
//!
//! This kernel has no `sch_netem`, so the link is emulated here. The process runs inside the
//! link namespace, where the two interfaces are the far ends of the client's and the server's
//! veth pairs; it reads every frame one endpoint sends (AF_PACKET, through `pnet_datalink`)
//! and writes it out of the other interface, after, per direction:
//!
//! 1. **random loss**: each frame is dropped with the profile's probability, independently;
//! 2. **a bottleneck**: a FIFO drained at the profile's rate; a frame that would wait longer
//!    than the queue's length (in time at that rate) is dropped (tail drop), as a router's
//!    buffer overflows;
//! 3. **a fixed one-way delay**, plus optional **jitter**: a uniform extra delay that never
//!    lets a frame overtake the one before it (no reordering).
//!
//! A frame is forwarded only if it came *from* the endpoint on that side (its source MAC):
//! a packet socket also sees the frames the emulator itself sends out of an interface, and
//! those must not go round again.
//!
//! The emulator never changes a frame. Offloads must be off on every interface of the lab
//! (the lab does that with `ethtool`): with GSO/TSO a sender hands the link 64 KiB segments, so
//! "one frame lost" would lose 45 packets of TCP but one of QUIC, and with checksum offload the
//! frames arrive without a checksum.

use std::io::Read;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use pnet_datalink::{Channel, DataLinkReceiver, DataLinkSender, MacAddr};

/// Every protocol, for a packet socket (`ETH_P_ALL`).
const ETH_P_ALL: u16 = 0x0003;
/// Kernel buffer of each packet socket, each way.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// How one direction of the link treats frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Shape {
    /// The bottleneck's rate in bits per second; `None`: no bottleneck.
    pub(crate) rate_bit_s: Option<u64>,
    /// How long the bottleneck's queue is, as time to drain it at the rate.
    pub(crate) queue: Duration,
    /// The fixed one-way delay.
    pub(crate) delay: Duration,
    /// Up to this much extra delay, uniformly drawn per frame (never reordering).
    pub(crate) jitter: Duration,
    /// The probability that a frame is lost.
    pub(crate) loss: f64,
}

/// `sekisho-bench wan-link`: bridges `a` and `b` (the frames from `a_mac` go to `b`, those
/// from `b_mac` to `a`), each direction shaped by `shape`, until stdin closes.
pub(crate) fn run(
    a: &str,
    a_mac: MacAddr,
    b: &str,
    b_mac: MacAddr,
    shape: Shape,
    seed: u64,
) -> anyhow::Result<()> {
    let (a_tx, a_rx) = open(a)?;
    let (b_tx, b_rx) = open(b)?;
    let forward = |name: &'static str, rx, from, tx, seed| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || direction(rx, from, tx, shape, seed))
    };
    let towards_b = forward("a-to-b", a_rx, a_mac, b_tx, seed)?;
    let towards_a = forward("b-to-a", b_rx, b_mac, a_tx, seed ^ 0x9e37_79b9_7f4a_7c15)?;
    println!("LINK UP");
    // Until the lab closes stdin (or dies): the threads are stopped with the process.
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    for (name, thread) in [("a-to-b", towards_b), ("b-to-a", towards_a)] {
        if thread.is_finished() {
            match thread.join() {
                Ok(Err(e)) => return Err(e.context(format!("the {name} direction stopped"))),
                Ok(Ok(())) => {}
                Err(_) => return Err(anyhow!("the {name} direction panicked")),
            }
        }
    }
    Ok(())
}

fn open(name: &str) -> anyhow::Result<(Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>)> {
    let interface = pnet_datalink::interfaces()
        .into_iter()
        .find(|interface| interface.name == name)
        .ok_or_else(|| anyhow!("no interface {name} in the link namespace"))?;
    // The socket is made here to give it large kernel buffers: a burst the reading thread
    // has not caught up with yet must wait in the socket, not be dropped (which would be loss
    // the profile does not ask for). The kernel caps them at net.core.rmem_max/wmem_max.
    let all_protocols = i32::from(ETH_P_ALL.to_be());
    let socket = socket2::Socket::new(
        socket2::Domain::PACKET,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(all_protocols)),
    )
    .with_context(|| format!("cannot open a packet socket for {name} (run as root)"))?;
    socket.set_recv_buffer_size(SOCKET_BUFFER)?;
    socket.set_send_buffer_size(SOCKET_BUFFER)?;
    let config = pnet_datalink::Config {
        // A frame at a time; an MTU-1500 frame with its header fits.
        read_buffer_size: 2048,
        write_buffer_size: 2048,
        // The reader waits for frames however long the link is idle.
        read_timeout: None,
        socket_fd: Some(std::os::fd::IntoRawFd::into_raw_fd(socket)),
        ..pnet_datalink::Config::default()
    };
    match pnet_datalink::channel(&interface, config)
        .with_context(|| format!("cannot open a packet socket on {name} (run as root)"))?
    {
        Channel::Ethernet(tx, rx) => Ok((tx, rx)),
        _ => Err(anyhow!("{name} is not an Ethernet interface")),
    }
}

/// A frame that has passed loss and the bottleneck, and when it leaves the link.
struct InFlight {
    leaves_at: Instant,
    frame: Vec<u8>,
}

/// One direction: this thread reads and decides each frame's fate at once; a second one
/// holds the frames for their delay and sends them.
fn direction(
    mut rx: Box<dyn DataLinkReceiver>,
    from: MacAddr,
    mut tx: Box<dyn DataLinkSender>,
    shape: Shape,
    seed: u64,
) -> anyhow::Result<()> {
    let (queue, delayed) = mpsc::channel::<InFlight>();
    std::thread::Builder::new()
        .name("delay".into())
        .spawn(move || {
            while let Ok(InFlight { leaves_at, frame }) = delayed.recv() {
                let now = Instant::now();
                if leaves_at > now {
                    std::thread::sleep(leaves_at - now);
                }
                if let Some(Err(e)) = tx.send_to(&frame, None) {
                    eprintln!("wan-link: cannot send a frame: {e}");
                }
            }
        })?;
    let mut link = Link::new(shape, seed);
    loop {
        let frame = rx.next().context("cannot read a frame")?;
        // Destination (6 bytes), then source (6 bytes).
        if frame.get(6..12) != Some(&from.octets()[..]) {
            continue;
        }
        if let Some(leaves_at) = link.admit(Instant::now(), frame.len()) {
            let frame = frame.to_vec();
            if queue.send(InFlight { leaves_at, frame }).is_err() {
                return Err(anyhow!("the sending thread stopped"));
            }
        }
    }
}

/// The model of one direction, apart from any I/O so that it can be tested.
struct Link {
    shape: Shape,
    random: SplitMix64,
    /// When the bottleneck finishes sending what it holds.
    busy_until: Option<Instant>,
    /// When the last admitted frame leaves the link (frames never overtake it).
    last_leaves_at: Option<Instant>,
}

impl Link {
    fn new(shape: Shape, seed: u64) -> Link {
        Link {
            shape,
            random: SplitMix64(seed),
            busy_until: None,
            last_leaves_at: None,
        }
    }

    /// The fate of a frame of `len` bytes that reaches the link at `now`: when it leaves the
    /// far end, or `None` if it is lost or dropped.
    fn admit(&mut self, now: Instant, len: usize) -> Option<Instant> {
        if self.shape.loss > 0.0 && self.random.unit() < self.shape.loss {
            return None;
        }
        let sent = match self.shape.rate_bit_s {
            Some(rate) => {
                let starts = self.busy_until.filter(|busy| *busy > now).unwrap_or(now);
                if starts - now > self.shape.queue {
                    return None;
                }
                // On the wire: the frame plus preamble, start delimiter, FCS and gap.
                let bits = (len as u64 + 24) * 8;
                let done = starts + Duration::from_nanos(bits * 1_000_000_000 / rate);
                self.busy_until = Some(done);
                done
            }
            None => now,
        };
        let jitter = self.shape.jitter.mul_f64(self.random.unit());
        let mut leaves_at = sent + self.shape.delay + jitter;
        if let Some(last) = self.last_leaves_at {
            leaves_at = leaves_at.max(last);
        }
        self.last_leaves_at = Some(leaves_at);
        Some(leaves_at)
    }
}

/// A small, fast generator for the loss and jitter draws (SplitMix64); the lab seeds it, so a
/// run can be repeated.
struct SplitMix64(u64);

impl SplitMix64 {
    /// A number in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            rate_bit_s: None,
            queue: Duration::ZERO,
            delay: Duration::from_millis(20),
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }

    #[test]
    fn a_frame_leaves_after_the_delay() {
        let mut link = Link::new(shape(), 1);
        let now = Instant::now();
        assert_eq!(link.admit(now, 1514), Some(now + Duration::from_millis(20)));
    }

    #[test]
    fn the_bottleneck_spaces_frames_at_its_rate_and_drops_beyond_its_queue() {
        // 1 frame of 1500 + 24 bytes = 12,192 bits = 1.2192 ms at 10 Mbit/s; a queue of 5 ms
        // holds 4 frames' worth of waiting.
        let mut link = Link::new(
            Shape {
                rate_bit_s: Some(10_000_000),
                queue: Duration::from_millis(5),
                ..shape()
            },
            1,
        );
        let now = Instant::now();
        let per_frame = Duration::from_nanos(1_219_200);
        let mut admitted = Vec::new();
        for _ in 0..10 {
            admitted.push(link.admit(now, 1500));
        }
        let kept: Vec<_> = admitted.iter().flatten().collect();
        // Waits of 0, 1.2, 2.4, 3.7 and 4.9 ms are within 5 ms; the sixth would wait 6.1 ms.
        assert_eq!(kept.len(), 5, "{admitted:?}");
        for (i, leaves) in kept.iter().enumerate() {
            let expected = now + per_frame * (i as u32 + 1) + Duration::from_millis(20);
            assert_eq!(**leaves, expected);
        }
        // Once the queue has drained, frames pass again.
        let later = now + Duration::from_millis(50);
        assert_eq!(
            link.admit(later, 1500),
            Some(later + per_frame + Duration::from_millis(20))
        );
    }

    #[test]
    fn loss_drops_about_the_given_share() {
        let mut link = Link::new(
            Shape {
                loss: 0.01,
                ..shape()
            },
            7,
        );
        let now = Instant::now();
        let passed = (0..100_000)
            .filter(|_| link.admit(now, 100).is_some())
            .count();
        // 1 % of 100,000 is 1,000 ± 3 standard deviations (about 94).
        let lost = 100_000 - passed;
        assert!((900..=1100).contains(&lost), "{lost} lost");
    }

    #[test]
    fn jitter_never_reorders() {
        let mut link = Link::new(
            Shape {
                jitter: Duration::from_millis(10),
                ..shape()
            },
            3,
        );
        let start = Instant::now();
        let mut last = start;
        let mut spread = Duration::ZERO;
        for i in 0..1000 {
            let now = start + Duration::from_micros(100 * i);
            let leaves = link.admit(now, 100).unwrap_or(now);
            assert!(leaves >= last);
            spread = spread.max(leaves - now - Duration::from_millis(20));
            last = leaves;
        }
        assert!(
            spread > Duration::from_millis(5),
            "jitter was {spread:?} at most"
        );
    }
}
