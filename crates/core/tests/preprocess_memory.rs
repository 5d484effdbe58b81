//! Preprocessing costs memory in proportion to the crop, never to the image: an 8192×2 strip
//! on an ImageNet net (resize 256) once allocated a 1,048,576×256 resized copy (3.2 GB).
//! A counting allocator measures the peak of what one preprocessing call allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(live, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `f`, above what was live before it.
fn peak_of(f: impl FnOnce()) -> usize {
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst) - before
}

#[test]
fn extreme_aspect_images_cost_memory_of_the_crop() {
    let pre = resnet_core::find_arch("resnet50").unwrap().preprocess();
    // The crop's view and values: 224·224·(3 + 3·4) bytes ≈ 0.75 MB; allow a few times that.
    let budget = 8 << 20;
    for (w, h) in [(8192, 2), (2, 8192), (16_384, 3)] {
        let data = vec![128u8; w * h * 3];
        let img = resnet_core::Image { width: w, height: h, channels: 3, data: &data };
        let mut side = 0;
        let peak = peak_of(|| side = pre.prepare(&img).unwrap().side);
        assert_eq!(side, 224);
        assert!(peak < budget, "{w}×{h}: preprocessing allocated {peak} bytes at its peak");
    }
}
