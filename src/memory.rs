//! Handing freed heap back to the system. glibc's allocator keeps memory
//! that was freed in the middle of its heaps; after a burst of writes a node
//! held twice the memory it used (215 MiB resident against 123 MiB after
//! one trim, at 110,000 tags). A trim every few seconds returns it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often freed memory is handed back.
const EVERY: Duration = Duration::from_secs(10);

/// Trims the heap every [`EVERY`] until `stop` is cancelled.
pub async fn return_freed(stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        // The trim walks the heap, so it runs off the async workers.
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks glibc's own heap; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
