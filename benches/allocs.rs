//! `opskit-allocs <variant> <requests>`: the variants of `opskit-callgrind`
//! under a counting allocator (every thread); prints `allocations <count>`
//! for `scripts/callgrind` (allocations/request = A(2N) − A(N) over N).

#[allow(unreachable_pub)]
mod outbound;
#[allow(unreachable_pub)]
mod tonic_call;
#[allow(unreachable_pub)]
#[path = "variants.rs"]
mod variants;

/// `stats_alloc`: the workspace forbids `unsafe`, which a counting
/// allocator of our own would need.
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn main() {
    variants::run();
    let stats = GLOBAL.stats();
    println!("allocations {}", stats.allocations + stats.reallocations);
}
