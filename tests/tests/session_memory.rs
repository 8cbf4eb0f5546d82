//! Heap bytes per established server session, counted by a global allocator of this
//! test binary: the part of the per-session memory goal (≤ 16 KiB per idle session,
//! issue 7) the code controls. The server and its clients run in memory
//! (`gateway::serve::testing`); the clients are dropped before counting, so what stays
//! is the server's sessions, connection records and what it handed to the data plane.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::SocketAddr,
    sync::atomic::{AtomicIsize, Ordering},
};

use gateway::serve::testing::{Harness, established};

/// Bytes allocated and not yet freed.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is passed on to the system allocator unchanged (the counter is a
// side effect that neither allocates nor touches the memory), so this allocator keeps
// all of `System`'s guarantees.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: our caller upholds GlobalAlloc::alloc's contract (non-zero size), which
        // is System's too; the layout is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: our caller guarantees `ptr` came from this allocator with `layout`, and
        // every block this allocator hands out came from System with that same layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as for `dealloc`, `ptr` is System's with `layout`; `new_size` is the
        // caller's, who guarantees it is non-zero and fits `layout`'s alignment.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Sessions measured (the harness's reset limiter allows 100 per 10 s).
const SESSIONS: u32 = 90;
/// The goal for a whole idle session (resident memory and BPF maps); the heap
/// alone must stay well within it.
const GOAL: isize = 16 * 1024;

#[test]
fn an_established_server_session_takes_less_than_16_kib_of_heap() {
    // Every session is alice's: no per-identity limit here.
    let mut h = Harness::configured("session-memory", "10.200.0.0/16", |c| {
        c.max_sessions_per_identity(0)
    });
    let from = |i: u32| SocketAddr::from(([198, 51, 100, i as u8], 40_000));
    // One session first, so one-off allocations (caches, tables) are not counted.
    let mut first = h.client("alice");
    assert!(established(&h.pump(&mut first, from(1))).is_some());
    drop(first);
    let before = LIVE.load(Ordering::Relaxed);
    let mut clients = Vec::new();
    for i in 0..SESSIONS {
        let mut client = h.client("alice");
        let events = h.pump(&mut client, from(i + 2));
        assert!(established(&events).is_some(), "session {i}: {events:?}");
        clients.push(client);
    }
    drop(clients);
    let per_session = (LIVE.load(Ordering::Relaxed) - before) / SESSIONS as isize;
    eprintln!("heap per established server session: {per_session} B");
    assert_eq!(h.server.sessions(), SESSIONS as usize + 1);
    assert!(
        per_session < GOAL,
        "{per_session} B of heap per session, goal {GOAL} B"
    );
}
