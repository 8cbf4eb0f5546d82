//! The reliability layer fed arbitrary control packets (parsed from the input) with
//! queued data of its own in flight: `on_packet`, reading, transmitting and timeouts
//! never panic, the readable stream never exceeds the receive cap, and in-flight
//! packets never exceed the window.
#![no_main]

use std::time::{Duration, Instant};

use gateway_proto::packet::{ControlPacket, ControlRepr};
use gateway_proto::reliable::{Reliable, ReliableConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = ReliableConfig::default();
    let Ok(mut reliable) = Reliable::new(config) else {
        return;
    };
    let mut now = Instant::now();
    let _ = reliable.queue(&[0x5a; 3000]);
    while reliable.poll_transmit(now).is_some() {}
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (packet, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        if let Ok(checked) = ControlPacket::new_checked(packet) {
            let repr = ControlRepr::parse(&checked);
            let _ = reliable.on_packet(&repr, now);
        }
        let mut buf = [0u8; 2048];
        while reliable.read(&mut buf) > 0 {}
        assert!(reliable.readable_len() <= config.max_recv_buffer);
        now += Duration::from_millis(u64::from(len) * 7);
        while reliable.poll_transmit(now).is_some() {}
        let _ = reliable.poll_timeout();
    }
});
