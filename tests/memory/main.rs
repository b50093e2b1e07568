//! Memory taken by large request bodies, measured by counting every allocation of this process (the sidecar
//! runs in it). One test per binary: the count is process-wide.

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use helpers::*;

/// The system allocator, counting the bytes in use and the most in use since the last reset.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: usize = 1024 * 1024;

/// A chat request of about `size` bytes whose bulk is an array of millions of tiny values (an unknown member,
/// passed through): a parser that builds a tree of it needs many times its size.
fn many_tiny_values(size: usize) -> Bytes {
    let head = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"tags":[0"#;
    let mut body = String::with_capacity(size + 64);
    body.push_str(r#"{"api":"chat.completions","request":"#);
    body.push_str(head);
    while body.len() < size {
        body.push_str(",0");
    }
    body.push_str("]}}");
    Bytes::from(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_large_job_bodies_at_once_take_about_their_size_not_a_tree_each() {
    let app = spawn_app_with(&[("JOB_WORKERS", "0"), ("MAX_JOB_BODY_BYTES", "16777216")]).await;
    mount_flags(&app.directus, true, false, false).await;
    let user = new_user_id();
    mount_user(&app.directus, &user, FakeUser::default()).await;
    let token = token_for(&user);
    let submit = |body: Bytes| {
        app.http
            .post(app.url("/v1/jobs"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(submit(many_tiny_values(1024)).await.unwrap().status(), 202, "warm-up");

    let size = 8 * MIB;
    let bodies: Vec<Bytes> = (0..6).map(|_| many_tiny_values(size)).collect();
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let answers = futures_util::future::join_all(bodies.iter().cloned().map(submit)).await;
    for answer in answers {
        assert_eq!(answer.unwrap().status(), 202);
    }
    let added = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    let sent = 6 * size;
    println!("six {} MiB job bodies at once: peak +{} MiB", size / MIB, added / MIB);
    // The bodies as received, a copy each on its way to the store, and buffers: a few times the bytes, where a
    // parsed tree of them would take about thirty times.
    assert!(added < 4 * sent, "peak grew by {} MiB for {} MiB of bodies", added / MIB, sent / MIB);
}
