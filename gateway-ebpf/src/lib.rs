//! The XDP programs live in the `gateway-xdp` binary of this crate, built for the BPF
//! target by `gateway`'s build script. This library is empty on purpose: it makes the
//! crate a build-dependency of `gateway`, so edits here or in `gateway-ebpf-common`
//! rebuild the BPF object (aya-build alone watches only this directory).
#![no_std]
#![deny(clippy::undocumented_unsafe_blocks)]
