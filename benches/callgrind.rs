//! `opskit-callgrind <variant> <requests>` (or `serve <variant> [addr]`):
//! see `variants.rs`. Run under `valgrind --tool=callgrind` by
//! `scripts/callgrind`; the system allocator, uncounted, so that counting
//! does not add to the instructions measured.

#[allow(unreachable_pub)]
mod outbound;
#[allow(unreachable_pub)]
mod tonic_call;
#[allow(unreachable_pub)]
mod variants;

fn main() {
    variants::run();
}
