//! XDP programs of the gateway (architecture §3). Built for `bpfel-unknown-none`; on the
//! host this binary is an empty `main` so that `cargo clippy --workspace` checks it.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod checksum;
mod edge;
mod forward;
mod inner;
mod nat;
mod packet;
mod redirects;
mod target;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // BPF code cannot unwind; the verifier rejects any program that could reach here.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
